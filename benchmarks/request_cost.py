#!/usr/bin/env python3
"""
The reactor-side cost of one `send` in process: the chat protocol's
framing, parsing, the session check, the core minting the message, the
store's hand-over and answering loop, the notifier's subscribers and the
reply, with no SQL, no thread and no socket.

It runs as a loaded realm does (issue 18): 200 logged-in connections each
read 8 pipelined `send` lines in one chunk, the reactor turn hands the
1,600 operations to the store, and the store answers them in one batch,
as after a commit, through its real answering loop (each message its
Delivery, made here instead of by SQL).  Sockets are StringTransports
whose write only counts.

Two figures per checkout:
  - CPU time (process_time) per send, median of the rounds, each round's
    best of --repeat runs: noisy on a shared machine;
  - Python opcodes executed per send (sys.settrace, opcode events, over a
    few turns): deterministic, the same on a busy machine as on a quiet
    one, so it shows what a change removes even when the CPU figure cannot
    (C work, SQLite and syscalls are not in it).

--code names the checkout whose multirealm is measured, so two versions
are compared from one script, alternating rounds (fresh interpreters):

    /path/to/venv/bin/python benchmarks/request_cost.py --code /tmp/before --code . [--rounds 7]

--with-bus measures each checkout a second time as a realm of several
processes runs (issue 17): an in-memory bus to one other process, each
commit through the cluster's ordering gate and one "m" payload a turn.
The other process's reads are its own CPU, not counted here.
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter

CONNECTIONS = 200
IN_FLIGHT = 8  # lines of one chunk, as a pipelining client sends them
TRACED_TURNS = 3


def measure(code, turns, repeat, bus=False, in_flight=IN_FLIGHT):
    """
    In a fresh interpreter: (µs of CPU per send, best of C{repeat} runs of
    C{turns} turns; opcodes per send; {function: opcodes per send}).
    """
    sys.path.insert(0, os.path.abspath(code))
    import tempfile

    from twisted.internet import defer, task
    from twisted.internet.testing import StringTransport

    from multirealm.chat.protocol import ChatFactory
    from multirealm.config import Limits
    from multirealm.core.passwords import hash_password, verify_password
    from multirealm.core.realm import Realm
    from multirealm.model import Delivery

    try:
        from multirealm.model import Sent
    except ImportError:  # a checkout from before runs of private messages
        Sent = None
    from multirealm.storage.files import FileStore
    from multirealm.storage.store import SQLiteStore

    try:
        from multirealm.collector import THRESHOLDS
    except ImportError:  # a checkout from before the collector's tuning: as the realm ran then
        THRESHOLDS = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)

    class Hasher:
        def hash(self, password, peer=None, suspect=False):
            return defer.execute(hash_password, password, (2**4, 1, 1))

        def verify(self, password, stored, peer=None, suspect=False):
            return defer.execute(verify_password, password, stored, (2**4, 1, 1))

    class Transport(StringTransport):
        replies = 0

        def write(self, data):
            self.replies += data.count(b"\r\n\r\n")  # a run's replies come in one write

    class Reactor:
        """What the protocols and the store ask of the reactor, doing nothing later."""

        def __init__(self, clock):
            self.seconds = clock.seconds

        def callLater(self, delay, function, *args, **kwargs):
            return task.Clock().callLater(delay, function, *args, **kwargs)

    folder = tempfile.mkdtemp()
    clock = task.Clock()
    clock.advance(1_700_000_000)
    store = SQLiteStore(os.path.join(folder, "realm.sqlite3"), "1", clock, inline=True)
    store.start()
    limits = Limits(rate_limit_burst=10**9, rate_limit_per_second=10**9,
                    registration_burst=10**6, registrations_per_hour=10**9,
                    connections_per_address=10**6, max_connections=10**6)
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
    # The protocols' timers on a reactor that never runs them (task.Clock
    # would sort its calls at every reset, which no real reactor does).
    factory = ChatFactory(realm, limits, Reactor(clock))
    connections = []
    for i in range(CONNECTIONS):
        realm.register(f"u{i}", "pw")
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(f"auth u{i} pw\r\n".encode())
        lines = f"send - u{(i + 1) % CONNECTIONS} 0123456789abcdef0123456789abcdef\r\n"
        connections.append((protocol, transport, lines.encode() * in_flight))
        clock.advance(0)

    def turn():
        for protocol, _, lines in connections:
            protocol.dataReceived(lines)
        clock.advance(0)

    turn()  # sessions looked up and cached, by the real store
    # From here the store hands each turn's operations over as its thread
    # would be given them, and answers them as after the commit.
    handed = []

    class Queue:
        put = handed.append

    store._queue = Queue()
    store._inline = False
    seq = [0]

    def delivery(message):
        seq[0] += 1
        users = frozenset((message.sender.name, message.recipient.name))
        return Delivery(message, "1", users, frozenset(), False, seq[0])

    def commit():
        for batch in handed:
            if type(batch) is tuple:  # (operations, weight): a checkout with runs
                batch = batch[0]
            results = []
            for op in batch:
                message = op.args[-1]
                if type(message) is list:  # a run of private messages (add_private_messages)
                    results.append((op, Sent([delivery(m) for m in message])))
                else:
                    results.append((op, delivery(message)))
            store._answer(results)
        handed.clear()

    def loaded_turn():
        turn()
        commit()

    for _ in range(5):
        loaded_turn()
    before = sum(t.replies for _, t, _ in connections)
    loaded_turn()
    replies = sum(t.replies for _, t, _ in connections) - before
    assert replies == CONNECTIONS * in_flight, replies
    sends = turns * CONNECTIONS * in_flight
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.process_time()
        for _ in range(turns):
            loaded_turn()
        best = min(best, time.process_time() - started)
    if bus:
        assert other.payloads >= turns, other.payloads
    opcodes = Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            opcodes[code.co_filename, code.co_name] += 1
        return tracer

    traced_turns = TRACED_TURNS * IN_FLIGHT // in_flight
    sys.settrace(tracer)
    for _ in range(traced_turns):
        loaded_turn()
    sys.settrace(None)
    traced = traced_turns * CONNECTIONS * in_flight
    by_function = {
        f"{os.path.relpath(path, code) if path.startswith(os.path.abspath(code)) else os.path.basename(path)}"
        f":{name}": count / traced for (path, name), count in opcodes.items()
    }
    return best / sends * 1e6, sum(opcodes.values()) / traced, by_function


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", action="append", required=True,
                        help="a checkout to measure (give two to compare)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--turns", type=int, default=30, help="turns of 1,600 sends a run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--with-bus", action="store_true",
                        help="also measure each checkout with a bus to another process")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT,
                        help="lines a connection sends in one chunk (1: as a closed loop)")
    parser.add_argument("--functions", type=int, default=0,
                        help="also list this many functions by opcodes a send, per checkout")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child's job
    parser.add_argument("--bus", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.turns, args.repeat, args.bus, args.in_flight)))
        return
    kinds = [(code, False) for code in args.code]
    if args.with_bus:
        kinds += [(code, True) for code in args.code]
    label = {kind: kind[0] + (" with a bus" if kind[1] else "") for kind in kinds}
    cpu = {kind: [] for kind in kinds}
    opcodes, functions = {}, {}
    for round_ in range(args.rounds):
        for kind in kinds:
            code, bus = kind
            out = subprocess.run(
                [sys.executable, __file__, "--code", code, "--one", code,
                 "--turns", str(args.turns), "--repeat", str(args.repeat),
                 "--in-flight", str(args.in_flight)]
                + (["--bus"] if bus else []),
                check=True, capture_output=True, text=True,
            ).stdout
            microseconds, opcodes[kind], functions[kind] = json.loads(out)
            cpu[kind].append(microseconds)
        print(f"round {round_ + 1}: " + "  ".join(
            f"{label[kind]}: {cpu[kind][-1]:.2f} µs" for kind in kinds), flush=True)
    base = statistics.median(cpu[kinds[0]])
    for kind in kinds:
        median = statistics.median(cpu[kind])
        print(f"{label[kind]}: median {median:.2f} µs of CPU a send"
              f" ({(median / base - 1) * 100:+.1f} % against {label[kinds[0]]}),"
              f" {opcodes[kind]:.0f} opcodes a send"
              f" ({(opcodes[kind] / opcodes[kinds[0]] - 1) * 100:+.1f} %)")
        top = sorted(functions[kind].items(), key=lambda item: -item[1])[:args.functions]
        for name, count in top:
            print(f"    {count:7.1f}  {name}")


if __name__ == "__main__":
    main()
