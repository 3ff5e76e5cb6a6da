#!/usr/bin/env python3
"""
How long a peer's outbox goes undrained when the process holding its lease
is killed (-9): two processes contend for one lease (PostgresLeases and
LeasedService, as a realm's processes do); the holder is killed, and the
time until the other holds it is measured; a fresh process replaces the
one killed, and again, ROUNDS times.  The kill comes at a random moment
of the other's retry period, so the takeover is expected within
LeasedService.RETRY_SECONDS (2 s), about 1 s on average: the server frees
the lock as soon as the killed process's connection closes.

    MULTIREALM_TEST_POSTGRES=postgresql://... /path/to/venv/bin/python \\
        benchmarks/lease_takeover.py [--rounds 10]

Every process started is killed at exit.
"""

import argparse
import atexit
import os
import random
import select
import statistics
import subprocess
import sys
import time


def contend(conninfo, name):
    """One contending process: prints "held TIME" when it takes the lease."""
    from twisted.application.service import Service
    from twisted.internet import reactor

    from multirealm.core.leases import LeasedService
    from multirealm.storage.pg_lease import PostgresLeases

    class Says(Service):
        def startService(self):
            Service.startService(self)
            print(f"held {time.time()}", flush=True)

    leases = PostgresLeases(conninfo, "bench", reactor)
    leases.start()
    LeasedService(leases, name, Says(), reactor, "bench", "the benchmark").startService()
    print("ready", flush=True)
    reactor.run()


class Contender:
    def __init__(self, conninfo, name):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--contend", name], stdout=subprocess.PIPE,
            env=dict(os.environ, MULTIREALM_TEST_POSTGRES=conninfo), text=True,
        )
        atexit.register(self.process.kill)
        self.held_at = None
        assert self.process.stdout.readline().strip() == "ready"

    def poll(self):
        if select.select([self.process.stdout], [], [], 0)[0]:
            line = self.process.stdout.readline().split()
            if line and line[0] == "held":
                self.held_at = float(line[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--contend")
    options = parser.parse_args()
    conninfo = os.environ.get("MULTIREALM_TEST_POSTGRES")
    if not conninfo:
        sys.exit("set MULTIREALM_TEST_POSTGRES to a PostgreSQL conninfo")
    if options.contend:
        return contend(conninfo, options.contend)
    name = f"outbox bench-{os.getpid()} 2"
    contenders = [Contender(conninfo, name), Contender(conninfo, name)]
    takeovers = []
    for _ in range(options.rounds):
        deadline = time.time() + 10
        while not any(c.held_at for c in contenders):
            assert time.time() < deadline, "nobody took the lease"
            for c in contenders:
                c.poll()
            time.sleep(0.005)
        (holder,) = [c for c in contenders if c.held_at]
        (other,) = [c for c in contenders if c is not holder]
        # Killed at a random moment of the other's retry period, after its first try.
        time.sleep(random.uniform(1.0, 3.0))
        killed = time.time()
        holder.process.kill()
        holder.process.wait()
        while not other.held_at:
            assert time.time() < killed + 10, "no takeover within 10 s"
            other.poll()
            time.sleep(0.005)
        takeovers.append(other.held_at - killed)
        contenders = [other, Contender(conninfo, name)]
    print(f"takeover after kill -9 of the holder, {len(takeovers)} rounds: min"
          f" {min(takeovers):.2f} s, median {statistics.median(takeovers):.2f} s,"
          f" max {max(takeovers):.2f} s")


if __name__ == "__main__":
    main()
