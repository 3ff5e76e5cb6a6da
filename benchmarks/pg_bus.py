#!/usr/bin/env python3
"""
The PostgreSQL bus between a realm's processes (multirealm.storage.pg_bus),
against a real server: how long a payload takes from one process to
another, and how many a second one process can publish.

    MULTIREALM_TEST_POSTGRES=postgresql://USER@HOST:PORT/postgres \\
        python3 benchmarks/pg_bus.py [--pings 500] [--payloads 20000]

Two buses in this one process (their threads, their connections), on a
database of its own (bus_bench, made and dropped here):
  - latency: A publishes, B answers, one at a time: half the round trip,
    median and 99th percentile;
  - throughput: A publishes --payloads payloads ("m <seq>", what a busy
    process says a reactor turn), 100 a reactor turn, as fast as they
    go; B counts them: payloads a second, and this process's CPU a
    payload (both sides, threads included).
"""

import argparse
import os
import statistics
import sys
import time
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psycopg  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

from multirealm.storage.pg_bus import PostgresBus  # noqa: E402

DATABASE = "bus_bench"


class Receiver:
    def __init__(self, on_payload):
        self.on_payload = on_payload

    def received(self, process, text):
        self.on_payload(text)

    def missed(self):
        print("missed! (payloads were dropped)", flush=True)


@defer.inlineCallbacks
def run(server, pings, payloads):
    url = urlsplit(server)._replace(path=f"/{DATABASE}").geturl()
    a_heard, b_heard = [], []
    a = PostgresBus(url, "bench", reactor)
    b = PostgresBus(url, "bench", reactor)
    waiting = {}

    def a_got(text):
        a_heard.append(text)
        d = waiting.pop(text, None)
        if d is not None:
            d.callback(None)

    def b_got(text):
        b_heard.append(text)
        if text.startswith("ping"):
            b.publish("pong" + text[4:])

    a.start(Receiver(a_got))
    b.start(Receiver(b_got))
    while a.listener_pid is None or b.listener_pid is None:
        yield task.deferLater(reactor, 0.05)

    trips = []
    for n in range(pings):
        d = waiting[f"pong {n}"] = defer.Deferred()
        started = time.perf_counter()
        a.publish(f"ping {n}")
        yield d
        trips.append(time.perf_counter() - started)
    trips.sort()
    print(f"latency, one way (half a round trip) of {pings}: median"
          f" {statistics.median(trips) / 2 * 1000:.2f} ms, p99"
          f" {trips[int(len(trips) * 0.99) - 1] / 2 * 1000:.2f} ms", flush=True)

    del b_heard[:]
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(0, payloads, 100):
        for k in range(n, min(n + 100, payloads)):
            a.publish(f"m {k}")
        yield task.deferLater(reactor, 0)  # a reactor turn
        while len(a._waiting) > a.MAX_WAITING // 2:  # no further ahead than the bus keeps
            yield task.deferLater(reactor, 0.001)
    while len(b_heard) < payloads:
        yield task.deferLater(reactor, 0.01)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert b_heard == [f"m {k}" for k in range(payloads)], "out of order or lost"
    print(f"throughput: {payloads} payloads in {wall:.2f} s: {payloads / wall:,.0f} a second,"
          f" {cpu / payloads * 1e6:.1f} µs of this process's CPU a payload (both buses)",
          flush=True)
    yield a.stop()
    yield b.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--payloads", type=int, default=20000)
    args = parser.parse_args()
    server = os.environ["MULTIREALM_TEST_POSTGRES"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    try:
        task.react(lambda _: run(server, args.pings, args.payloads))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
