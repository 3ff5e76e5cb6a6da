#!/usr/bin/env python3
"""
The store's cost of one message on each engine: batches of private
messages (alice <-> heru) or group posts (to a group of both), run as the
database thread runs them (one transaction a batch, group commit), with
no reactor, no protocol and no socket.

With --users N (private messages), N users write in a --shape: "next"
(user i to user i+1, the shape of run.py's closed loop: a batch's
messages fall in distinct conversations), "runs" (eight messages a
sender in a row, as run.py's pipelined load), or "random" (seeded random
pairs).  With --run K, the messages go K at a time in one operation
(add_private_messages: a connection's send run, as the realm stores a
pipelined read's sends); "runs" with --run 8 is the realm's pipelined
load.  The figures then show what a batch's distinct mailboxes cost:
on SQLite also the bytes written a message (WAL and checkpoints,
written_kib, from /proc/self/io).

Figures per message: CPU of this process (the store's thread: the query
modules, the driver; and the making of the messages), the CPU of the
batches alone (what the realm's database thread spends: batch_us), wall
time, and on PostgreSQL the CPU of its backend (read from /proc: the
server must run on this machine).

--code names the checkout whose multirealm is measured, so two versions
are compared from one script, alternating rounds (SQLite only):

    python benchmarks/store_cost.py --code /tmp/before --code . [--rounds 5]
    python benchmarks/store_cost.py --users 200 --shape next --batch 100 --messages 40000
    python benchmarks/store_cost.py --users 200 --shape runs --run 8 --batch 512 --messages 60000
    python benchmarks/store_cost.py --postgres postgresql://USER@HOST:PORT/DB

The PostgreSQL database given is emptied (every table) first.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def backend_cpu(pid):
    """Seconds of CPU of process C{pid} (user + system), or None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written_bytes():
    """Bytes this process has written (its I/O counters), or None where unreadable."""
    try:
        with open("/proc/self/io") as io:
            return int(next(line for line in io if line.startswith("wchar")).split()[1])
    except (OSError, StopIteration):
        return None


def pairs(users, shape):
    """(sender index, recipient index) of message n, for C{users} users in C{shape}."""
    import random

    def pair(n):
        if shape == "next":
            i = n % users
        elif shape == "runs":
            i = n // 8 % users
        else:
            draw = random.Random(n)
            i, j = draw.randrange(users), draw.randrange(users - 1)
            return i, j if j < i else j + 1
        return i, (i + 1) % users

    return pair


def measure(code, postgres, kind, messages, batch, users=2, shape="next", run_size=1):
    """In a fresh interpreter: {cpu_us, wall_us, server_us} per message."""
    sys.path.insert(0, os.path.abspath(code))
    import time

    from twisted.internet import reactor

    from multirealm.model import GROUP, PRIVATE, Message
    from multirealm.names import Address
    from multirealm.storage.queries import groups
    from multirealm.storage.queries import messages as queries

    import gc

    try:
        from multirealm.collector import THRESHOLDS
    except ImportError:  # a checkout from before the collector's tuning: as the realm ran then
        THRESHOLDS = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)  # as in the realm's process
    try:
        from multirealm.storage.batching import _Operation
    except ImportError:  # before the engines were split
        from multirealm.storage.store import _Operation

    if postgres:
        import psycopg

        from multirealm.storage.postgres import PostgresStore

        with psycopg.connect(postgres, autocommit=True) as db:
            tables = [r[0] for r in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename != 'schema_version'")]
            if tables:
                db.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        store = PostgresStore(postgres, "1", reactor, inline=True)
    else:
        from multirealm.storage.store import SQLiteStore

        folder = tempfile.mkdtemp()
        store = SQLiteStore(os.path.join(folder, "realm.sqlite3"), "1", reactor, inline=True)
    names = ("alice", "heru") if users == 2 else [f"u{i}" for i in range(users)]
    for name in names:
        store.create_user(name, "h", "t")
    people = [Address(name, "1") for name in names]
    alice, heru = people[:2]
    pair = pairs(users, shape)
    if kind == "group":
        store.create_group("team", alice, [alice, heru], "t")
        function = groups.add_group_message
    else:
        function = queries.add_private_message
    pid = None
    if postgres:
        pid = store.submit(lambda db: db.execute("SELECT pg_backend_pid()").fetchone()[0],
                           writes=False).result

    spent = [0.0]  # CPU of the batches alone

    def run(first, count):
        for start in range(first, first + count, batch):
            ops = []
            for n in range(start, min(start + batch, first + count)):
                if users == 2:
                    sender, recipient = (alice, heru) if n % 2 else (heru, alice)
                else:
                    i, j = pair(n)
                    sender, recipient = people[i], people[j]
                message = Message(
                    id=f"ID{n:08d}", kind=GROUP if kind == "group" else PRIVATE,
                    sender=sender,
                    recipient=Address("team", "1") if kind == "group" else recipient,
                    text=f"text {n}", timestamp="2026-01-01T00:00:00.000+00:00",
                )
                if run_size == 1:
                    ops.append(_Operation(function, (store.thread_cache, "1", "1", message), True))
                elif ops and len(ops[-1].args[3]) < run_size:
                    ops[-1].args[3].append(message)
                else:
                    args = (store.thread_cache, "1", "1", [message])
                    ops.append(_Operation(queries.add_private_messages, args, True))
            started = time.thread_time()
            results = store._run_batch(ops)
            spent[0] += time.thread_time() - started
            for _, result in results:
                for one in result if run_size > 1 else [result]:
                    assert not hasattr(one, "raiseException") and hasattr(one, "seq"), one

    # Warm: prepared statements, caches, and with many users every
    # conversation begun (its first rows are not what a message costs).
    warm = batch * 4 if users == 2 else max(batch * 4, messages // 2)
    run(0, warm)
    server = backend_cpu(pid) if pid else None
    written = written_bytes()
    cpu, wall = time.process_time(), time.perf_counter()
    spent[0] = 0.0
    run(warm, messages)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    figures = {"cpu_us": cpu / messages * 1e6, "batch_us": spent[0] / messages * 1e6,
               "wall_us": wall / messages * 1e6}
    if written is not None and not postgres:
        figures["written_kib"] = (written_bytes() - written) / messages / 1024
    if server is not None:
        figures["server_us"] = (backend_cpu(pid) - server) / messages * 1e6
    store.stop()
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", action="append", help="a checkout to measure (default: .)")
    parser.add_argument("--postgres", help="a PostgreSQL URL (emptied!) instead of SQLite")
    parser.add_argument("--kind", choices=("private", "group"), default="private")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=200, help="messages a transaction")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=2,
                        help="private messages between this many users (default: alice and heru)")
    parser.add_argument("--shape", choices=("next", "runs", "random"), default="next",
                        help="with --users: who writes to whom (see above)")
    parser.add_argument("--run", type=int, default=1,
                        help="private messages an operation (a send run: one sender's, so with"
                             " --shape runs and a --batch that is a multiple of 8; see above)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the subprocess's own call
    args = parser.parse_args()
    if args.users < 2 or (args.users > 2 and args.kind != "private"):
        parser.error("--users: at least 2, and more only for private messages")
    if args.run < 1 or (args.run > 1 and args.kind != "private"):
        parser.error("--run: at least 1, and more only for private messages")
    if args.measure:
        print(json.dumps(measure(args.measure, args.postgres, args.kind, args.messages,
                                 args.batch, args.users, args.shape, args.run)))
        return
    codes = args.code or ["."]
    rounds = {code: [] for code in codes}
    for _ in range(args.rounds):
        for code in codes:
            command = [sys.executable, __file__, "--measure", code, "--kind", args.kind,
                       "--messages", str(args.messages), "--batch", str(args.batch),
                       "--users", str(args.users), "--shape", args.shape,
                       "--run", str(args.run)]
            if args.postgres:
                command += ["--postgres", args.postgres]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rounds[code].append(json.loads(out))
    engine = "PostgreSQL" if args.postgres else "SQLite"
    among = "" if args.users == 2 else f" among {args.users} users ({args.shape})"
    among += f", {args.run} an operation" if args.run > 1 else ""
    print(f"{engine}, {args.kind} messages{among}, {args.messages} in batches of {args.batch},"
          f" median of {args.rounds} rounds, per message:")
    for code, figures in rounds.items():
        line = "  ".join(
            f"{key} {statistics.median(f[key] for f in figures):7.1f}" for key in figures[0]
        )
        print(f"  {code:30} {line}")


if __name__ == "__main__":
    main()
