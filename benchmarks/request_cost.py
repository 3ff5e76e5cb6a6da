#!/usr/bin/env python3
"""
The reactor-side cost of one `send` in process: the chat protocol's
framing, parsing, the session check, the core minting the message, the
notifier's subscribers and the reply, with the store answering at once
(no SQL, no thread, no socket).  What a change to the hot path (issue 16's
metrics, say) adds shows here without the noise of the database and the
network; benchmarks/run.py gives the whole picture on a quiet machine.

--code names the checkout whose multirealm is measured, so two versions
are compared from one script, alternating rounds:

    /path/to/venv/bin/python benchmarks/request_cost.py --code /tmp/before --code . [--rounds 7]

--with-bus measures each checkout a second time as a realm of several
processes runs (issue 17): an in-memory bus to one other process, each
commit through the cluster's ordering gate and one "m" payload a reactor
turn.  The other process's reads are its own CPU, not counted here.

    /path/to/venv/bin/python benchmarks/request_cost.py --code . --with-bus

Each round is one subprocess per checkout (fresh interpreter, same
order of work); the figure is CPU time (process_time) per request,
median of the rounds, and each round's best of --repeat batches.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

BATCH = 2000  # requests written in one dataReceived, as a pipelining client would


def measure(code, requests, repeat, bus=False):
    """
    In a fresh interpreter: µs of CPU per `send`, best of C{repeat} runs of
    C{requests}; with C{bus}, the realm has an in-memory bus to another process.
    """
    sys.path.insert(0, os.path.abspath(code))
    import tempfile
    import time

    from twisted.internet import defer, reactor, task
    from twisted.internet.testing import StringTransport

    from multirealm.chat.protocol import ChatFactory
    from multirealm.config import Limits
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

    folder = tempfile.mkdtemp()
    store = SQLiteStore(os.path.join(folder, "realm.sqlite3"), "1", reactor, inline=True)
    store.start()
    clock = task.Clock()
    clock.advance(1_700_000_000)
    limits = Limits(rate_limit_burst=10**9, rate_limit_per_second=10**9)
    if bus:
        from multirealm.core.memory_bus import MemoryHub

        class Other:
            payloads = 0

            def received(self, process, text):
                self.payloads += 1

            def lost(self):
                pass

            def missed(self):
                pass

        hub, other = MemoryHub(), Other()
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

    # From here the store answers at once, as after its commit: the
    # Delivery goes to the notifier first, then the Deferred fires.
    report = store._report
    users = frozenset(("alice", "bob"))

    seq = [1000]

    def add_private_message(message):
        seq[0] += 1  # the seqs a store gives, one after the other (the bus's gate needs them)
        delivery = Delivery(message, "1", users, frozenset(), False, seq[0])
        report(delivery)
        return defer.succeed(delivery)

    store.add_private_message = add_private_message
    line = b"send - bob 0123456789abcdef0123456789abcdef\r\n" * BATCH
    protocol.dataReceived(line)  # warm up, and check that it sends
    clock.advance(0)
    replies = transport.value()
    assert replies.count(b"Message Sent") == BATCH, replies[-300:]
    transport.clear()
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(requests // BATCH):
            protocol.dataReceived(line)
            clock.advance(0)  # the turn ends (with a bus: "m" is published)
            transport.clear()
        best = min(best, time.process_time() - started)
    if bus:
        assert other.payloads >= requests // BATCH, other.payloads
    return best / requests * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", action="append", required=True,
                        help="a checkout to measure (give two to compare)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--with-bus", action="store_true",
                        help="also measure each checkout with a bus to another process")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child's job
    parser.add_argument("--bus", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.requests, args.repeat, args.bus)))
        return
    kinds = [(code, False) for code in args.code]
    if args.with_bus:
        kinds += [(code, True) for code in args.code]
    label = {kind: kind[0] + (" with a bus" if kind[1] else "") for kind in kinds}
    figures = {kind: [] for kind in kinds}
    for round_ in range(args.rounds):
        for kind in kinds:
            code, bus = kind
            out = subprocess.run(
                [sys.executable, __file__, "--code", code, "--one", code,
                 "--requests", str(args.requests), "--repeat", str(args.repeat)]
                + (["--bus"] if bus else []),
                check=True, capture_output=True, text=True,
            ).stdout
            figures[kind].append(json.loads(out))
        print(f"round {round_ + 1}: " + "  ".join(
            f"{label[kind]}: {figures[kind][-1]:.2f} µs" for kind in kinds), flush=True)
    base = statistics.median(figures[kinds[0]])
    for kind in kinds:
        median = statistics.median(figures[kind])
        print(f"{label[kind]}: median {median:.2f} µs of CPU a send"
              f" ({(median / base - 1) * 100:+.1f} % against {label[kinds[0]]})")


if __name__ == "__main__":
    main()
