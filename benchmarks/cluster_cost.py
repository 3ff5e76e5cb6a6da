#!/usr/bin/env python3
"""
What a realm of several processes (issue 17, multirealm.core.cluster)
adds to the reactor's cost of one `send`: the same in-process loop as
request_cost.py (the store answering at once, no SQL, no socket), once
without a bus (a realm on SQLite: no cluster at all) and once with an
in-memory bus to one other process (what a realm on PostgreSQL runs:
each commit through the cluster's ordering gate, one "m" payload a
reactor turn, here a batch of 2000 pipelined sends).  The other side's
reads are not counted: that process is another CPU.

    /path/to/venv/bin/python benchmarks/cluster_cost.py [--rounds 7]

Figures: CPU time (process_time) per request, median of the rounds, each
round's best of --repeat batches, the two kinds alternating in fresh
interpreters.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

BATCH = 2000


def measure(bus, requests, repeat):
    import tempfile
    import time

    from twisted.internet import defer, reactor, task
    from twisted.internet.testing import StringTransport

    from multirealm.chat.protocol import ChatFactory
    from multirealm.config import Limits
    from multirealm.core.memory_bus import MemoryHub
    from multirealm.core.passwords import hash_password, verify_password
    from multirealm.core.realm import Realm
    from multirealm.model import Delivery
    from multirealm.storage.files import FileStore
    from multirealm.storage.store import SQLiteStore

    class Hasher:
        def hash(self, password, peer=None, suspect=False):
            return defer.execute(hash_password, password, (2**4, 1, 1))

        def verify(self, password, stored, peer=None, suspect=False):
            return defer.execute(verify_password, password, stored, (2**4, 1, 1))

    class Other:
        payloads = 0

        def received(self, process, text):
            self.payloads += 1

        def missed(self):
            pass

    folder = tempfile.mkdtemp()
    store = SQLiteStore(os.path.join(folder, "realm.sqlite3"), "1", reactor, inline=True)
    store.start()
    clock = task.Clock()
    clock.advance(1_700_000_000)
    limits = Limits(rate_limit_burst=10**9, rate_limit_per_second=10**9)
    other = Other()
    if bus:
        hub = MemoryHub()
        hub.bus("B").start(other)
        realm = Realm("1", ("2",), limits, store, Hasher(), clock, FileStore(folder),
                      bus=hub.bus("A"))
        realm.cluster.start()
    else:
        realm = Realm("1", ("2",), limits, store, Hasher(), clock, FileStore(folder))
    for user in ("alice", "bob"):
        realm.register(user, "pw")
    factory = ChatFactory(realm, limits, clock)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"auth alice pw\r\n")
    clock.advance(0)

    report = store._report
    users = frozenset(("alice", "bob"))
    seq = [1000]

    def add_private_message(message):
        seq[0] += 1  # the seqs a store gives, one after the other
        delivery = Delivery(message, "1", users, frozenset(), False, seq[0])
        report(delivery)
        return defer.succeed(delivery)

    store.add_private_message = add_private_message
    line = b"send - bob 0123456789abcdef0123456789abcdef\r\n" * BATCH
    protocol.dataReceived(line)
    clock.advance(0)
    assert transport.value().count(b"Message Sent") == BATCH
    transport.clear()
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(requests // BATCH):
            protocol.dataReceived(line)
            clock.advance(0)  # the turn ends: "m" is published
            transport.clear()
        best = min(best, time.process_time() - started)
    if bus:
        assert other.payloads >= requests // BATCH, other.payloads
    return best / requests * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one == "bus", args.requests, args.repeat)))
        return
    kinds = ("no bus", "bus")
    figures = {kind: [] for kind in kinds}
    for round_ in range(args.rounds):
        for kind in kinds:
            out = subprocess.run(
                [sys.executable, __file__, "--one", kind.replace(" ", "-"),
                 "--requests", str(args.requests), "--repeat", str(args.repeat)],
                check=True, capture_output=True, text=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            ).stdout
            figures[kind].append(json.loads(out))
        print(f"round {round_ + 1}: " + "  ".join(
            f"{kind}: {figures[kind][-1]:.2f} µs" for kind in kinds), flush=True)
    base = statistics.median(figures["no bus"])
    for kind in kinds:
        median = statistics.median(figures[kind])
        print(f"{kind}: median {median:.2f} µs of CPU a send ({median - base:+.2f} µs,"
              f" {(median / base - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
