#!/usr/bin/env python3
"""
What one more index on the messages table costs every stored message, in
SQLite alone: 100,000 private messages between 200 users inserted 1,600 a
transaction (as a loaded realm's group commit), with each candidate index
and without, alternating in one process; thread CPU time per row.  It is
why `history` reads a private conversation from the user's timeline in
steps rather than by an index on its two parties (benchmarks/README.md,
"Metrics").

    python3 benchmarks/index_cost.py [--rounds 3]
"""

import argparse
import os
import sqlite3
import tempfile
import time

VARIANTS = {
    "none": None,
    "parties, nocase": "CREATE INDEX x ON messages (sender COLLATE NOCASE, recipient COLLATE NOCASE,"
                       " seq) WHERE kind IN ('private', 'failure')",
    "parties": "CREATE INDEX x ON messages (sender, recipient, seq)",
    "integer pair": "CREATE INDEX x ON messages (pair, seq)",
}


def run(index, n=100_000, batch=1600):
    path = tempfile.mktemp(suffix=".sqlite3")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # the rows' cost, not the disk's
    db.execute(
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY, origin TEXT NOT NULL, id TEXT NOT NULL,"
        " kind TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL, body TEXT NOT NULL,"
        " timestamp TEXT NOT NULL, pair INTEGER, UNIQUE (id, origin))"
    )
    if index:
        db.execute(index)
    users = [f"user{i}@1" for i in range(200)]
    # Ids in time order, as the realm mints them: the (id, origin) key appends.
    batches = [[(f"{i:032x}", users[i % 200], users[(i + 1) % 200], i % 200)
                for i in range(start, start + batch)] for start in range(0, n, batch)]
    started = time.thread_time()
    for rows in batches:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO messages (origin, id, kind, sender, recipient, body, timestamp, pair)"
            " VALUES ('1', ?, 'private', ?, ?, 'hello there', '2026-12-06', ?)", rows,
        )
        db.execute("COMMIT")
    spent = time.thread_time() - started
    db.close()
    os.remove(path)
    return spent / n * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.rounds):
        print("   ".join(f"{name}: {run(sql):.2f} µs" for name, sql in VARIANTS.items()))


if __name__ == "__main__":
    main()
