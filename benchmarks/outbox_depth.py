"""
What the log's outbox depth costs: the count a link's up, down and
failing lines make (outbox.pending_counts, on the database thread), over
an outbox of N waiting messages.

    python benchmarks/outbox_depth.py 100000 1000000
"""

import os
import sys
import tempfile
import time

from twisted.internet import reactor

from multirealm.storage.queries import outbox
from multirealm.storage.store import SQLiteStore


def timed_count(waiting):
    folder = tempfile.mkdtemp()
    store = SQLiteStore(os.path.join(folder, "realm.sqlite3"), "1", reactor, inline=True)
    db = store._db
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO messages (seq, origin, id, kind, sender, recipient, body, timestamp)"
        " VALUES (?, '1', ?, 'private', 'alice@1', 'heru@2', 'a note', '2026-12-06T07:00:00Z')",
        ((seq, f"m{seq}") for seq in range(1, waiting + 1)),
    )
    db.executemany("INSERT INTO outbox (realm, seq) VALUES ('2', ?)",
                   ((seq,) for seq in range(1, waiting + 1)))
    db.execute("COMMIT")
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        counts = outbox.pending_counts(db)
        best = min(best, time.perf_counter() - started)
    assert counts["2"][0] == waiting
    return best


for waiting in map(int, sys.argv[1:] or ["100000"]):
    print(f"{waiting:>9} messages waiting: the count takes {timed_count(waiting) * 1000:.1f} ms"
          " (best of 5)")
