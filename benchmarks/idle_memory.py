#!/usr/bin/env python3
"""
Memory per idle chat connection (issue 18): a realm under twistd on
SQLite, pinned to CPU 0; a client process pinned to CPU 1 opens N
connections to its chat port, each sends one `ping` and reads its reply
(so every connection has its protocol state; --request listrealms for
one the database answers), then all stay idle.  The
realm's RSS (/proc) before the connections and once they have been idle
a few seconds gives KiB per connection, and the extrapolation to 100,000:

    /path/to/venv/bin/python benchmarks/idle_memory.py [--connections 15000]

The realm measured is the one the running Python imports (its venv's
editable checkout), so the same script measures another checkout with
that checkout's venv.  N is capped at what the realm admits: it keeps a
quarter of its descriptors in reserve (docs/operating.md), so a hard
open-files limit of 20,000 admits 15,000.

--account says where the bytes are instead: the realm runs in this
process (same code, real TCP, the client in a subprocess as above) under
tracemalloc, and the allocations that the connections added are printed
by source line, in bytes per connection.  tracemalloc sees Python's
allocations only, without malloc's own overhead: its total is below the
RSS figure.

--cpu times (timeit, best of --rounds) what a request spends on the idle
timer (TimeoutMixin.resetTimeout before issue 18, storing the time after)
among a thousand connections, and an outbound queue's reserve and fill of
a lone reply.
"""

import argparse
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402  (benchmarks/run.py: realms.ini, twistd, /proc)

EXTRAPOLATE_TO = 100_000
SETTLE_SECONDS = 3.0
BATCH = 500  # connections opened, then pinged, at a time by the client


# -- the client process -----------------------------------------------------------


def client(port, count, request):
    """Open C{count} connections, send C{request} on each once, say "ready", hold them until stdin closes."""
    run.raise_nofile()
    held = []
    for start in range(0, count, BATCH):
        batch = [socket.create_connection(("127.0.0.1", port)) for _ in range(start, min(count, start + BATCH))]
        for sock in batch:
            sock.sendall(request.encode() + b"\r\n")
        for sock in batch:
            data = b""
            while not data.endswith(b"\r\n\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit(f"connection {len(held)} closed: {data!r}")
                data += chunk
            if b'"OK"' not in data:
                raise SystemExit(f"connection {len(held)} answered {data!r}")
            held.append(sock)
    print("ready", len(held), flush=True)
    sys.stdin.read()
    for sock in held:
        sock.close()


def start_client(port, count, request):
    return run.start(
        ["taskset", "-c", run.LOADGEN_CPU, sys.executable, os.path.abspath(__file__),
         "--client", str(port), "--connections", str(count), "--request", request],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def wait_ready(proc, timeout=300.0, poll=None):
    """Wait for the client's "ready" line (calling C{poll()} meanwhile); the count it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        readable, _, _ = select.select([proc.stdout], [], [], 0 if poll else 1.0)
        if readable:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"client exited with {proc.wait()}")
            return int(line.split()[1])
    raise RuntimeError("client not ready in time")


# -- RSS of a realm under twistd --------------------------------------------------------


def budget():
    from multirealm.connections import connection_budget

    return connection_budget(resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def measure_rss(count, request):
    run.raise_nofile()
    work = tempfile.mkdtemp(prefix="idle_memory.")
    data = os.path.join(work, "data")
    os.mkdir(data)
    # The per-address cap is lifted (one_address_setup); the per-process cap
    # is the default, which is the most the descriptor limit allows.
    realm, port, log_path = run.start_realm(work, data, run.SERVER_CPU)
    try:
        time.sleep(SETTLE_SECONDS)
        before = run.proc_status(realm.pid)["VmRSS"]
        started = time.monotonic()
        client_proc = start_client(port, count, request)
        held = wait_ready(client_proc)
        opened = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        after = run.proc_status(realm.pid)["VmRSS"]
        client_proc.stdin.close()
        client_proc.wait(60)
    finally:
        run.stop(realm)
        run.kill_all()
        shutil.rmtree(work, ignore_errors=True)
    per = (after - before) * 1024 / held
    print(f"code: {os.path.dirname(os.path.dirname(__import__('multirealm').__file__))}")
    print(f"{held} idle connections (opened, each sent {request!r} once, in {opened:.1f} s)")
    print(f"realm RSS: {before:.1f} MiB before, {after:.1f} MiB with them idle")
    print(f"per connection: {per:.2f} KiB")
    total = before + per * EXTRAPOLATE_TO / 1024
    print(f"extrapolated to {EXTRAPOLATE_TO:,}: {before:.1f} + {EXTRAPOLATE_TO:,} x {per:.2f} KiB"
          f" = {total:.0f} MiB")


# -- where the bytes are: tracemalloc, in process ---------------------------------------------


def account(count, top, request):
    import tracemalloc

    run.raise_nofile()
    from twisted.internet import defer, reactor

    from multirealm.chat.protocol import ChatFactory
    from multirealm.config import Limits
    from multirealm.core.realm import Realm
    from multirealm.storage.files import FileStore
    from multirealm.storage.store import SQLiteStore

    class Hasher:  # no password is hashed: the connections only ping
        def hash(self, password, peer=None, suspect=False):
            return defer.fail(NotImplementedError())

        verify = hash

    folder = tempfile.mkdtemp(prefix="idle_memory.")
    store = SQLiteStore(os.path.join(folder, "realm.sqlite3"), "1", reactor, inline=True)
    store.start()
    limits = Limits(connections_per_address=10**6)
    realm = Realm("1", ("2",), limits, store, Hasher(), reactor, FileStore(folder))
    factory = ChatFactory(realm, limits, reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1").getHost().port
    outcome = {}

    def measure():
        # A few connections first, so that what is made once (caches,
        # interned strings, the first timer's heap) is not counted.
        warm = start_client(port, 50, request)
        wait_ready(warm, poll=lambda: reactor.iterate(0.01))
        warm.stdin.close()
        while warm.poll() is None or realm.metrics.connections.get("chat"):
            reactor.iterate(0.01)
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        proc = start_client(port, count, request)
        held = wait_ready(proc, poll=lambda: reactor.iterate(0.01))
        for _ in range(50):
            reactor.iterate(0.01)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        outcome.update(held=held, stats=after.compare_to(before, "lineno"))
        proc.stdin.close()
        while proc.poll() is None or realm.metrics.connections.get("chat"):
            reactor.iterate(0.01)
        reactor.stop()

    reactor.callWhenRunning(measure)
    reactor.run()
    store.stop()
    shutil.rmtree(folder, ignore_errors=True)
    held, stats = outcome["held"], outcome["stats"]
    total = sum(s.size_diff for s in stats)
    print(f"{held} connections, tracemalloc: {total / held:.0f} bytes per connection"
          f" ({sum(s.count_diff for s in stats) / held:.1f} blocks)")
    print("bytes/conn  blocks/conn  where")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        name = frame.filename
        for marker in ("/site-packages/", "/multirealm/"):
            if marker in name:
                name = name.split(marker, 1)[1] if marker == "/site-packages/" else "multirealm/" + name.split(marker, 1)[1]
        print(f"{stat.size_diff / held:10.0f}  {stat.count_diff / held:11.2f}  {name}:{frame.lineno}")


def cpu(rounds):
    import timeit

    from twisted.internet import reactor
    from twisted.internet.testing import StringTransport

    from multirealm.chat.outbound import OutboundQueue
    from multirealm.chat.protocol import ChatFactory
    from multirealm.config import Limits
    from multirealm.core.realm import Realm
    from multirealm.storage.files import FileStore
    from multirealm.storage.store import SQLiteStore

    folder = tempfile.mkdtemp(prefix="idle_memory.")
    store = SQLiteStore(os.path.join(folder, "realm.sqlite3"), "1", reactor, inline=True)
    store.start()
    limits = Limits(connections_per_address=10**6)
    realm = Realm("1", ("2",), limits, store, None, reactor, FileStore(folder))
    factory = ChatFactory(realm, limits, reactor)
    protocols = []
    for _ in range(1000):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocols.append(protocol)
    protocol = protocols[500]
    if hasattr(protocol, "resetTimeout"):
        timer = "protocol.resetTimeout()"
    else:
        timer = "protocol.idle_since = protocol.factory.clock.seconds()"

    class Transport:
        def registerProducer(self, producer, streaming):
            pass

        def write(self, data):
            pass

    queue = OutboundQueue(Transport(), lambda: None, lambda: None, lambda: None)
    print(f"code: {os.path.dirname(os.path.dirname(__import__('multirealm').__file__))}")
    for label, statement, number in (
        (f"idle timer, {timer}", timer, 1_000_000),
        ("outbound queue, reserve + fill of a lone reply", "queue.fill(queue.reserve(), b'x')", 200_000),
    ):
        took = timeit.repeat(statement, globals=locals(), number=number, repeat=rounds)
        print(f"{label}: {min(took) / number * 1e9:.0f} ns (best of {rounds})")
    store.stop()
    shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=18_000,
                        help="idle connections to open (capped at what the realm admits)")
    parser.add_argument("--account", action="store_true",
                        help="in process under tracemalloc: bytes per connection by source line")
    parser.add_argument("--request", default="ping",
                        help="the one request each connection sends (listrealms: one answered"
                        " by the database, as most are)")
    parser.add_argument("--cpu", action="store_true",
                        help="in process: ns a request spends on the idle timer and the queue")
    parser.add_argument("--rounds", type=int, default=15, help="with --cpu: timeit rounds")
    parser.add_argument("--top", type=int, default=25, help="with --account: lines shown")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client(args.client, args.connections, args.request)
    if args.cpu:
        return cpu(args.rounds)
    count = min(args.connections, budget() - 16)  # room for the realm's own descriptors
    if count < args.connections:
        print(f"(--connections {args.connections} lowered to {count}: the realm admits"
              f" {budget()} with this open-files limit)", file=sys.stderr)
    if args.account:
        account(min(count, 5000), args.top, args.request)
    else:
        measure_rss(count, args.request)


if __name__ == "__main__":
    main()
