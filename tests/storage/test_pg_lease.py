"""
L{PostgresLeases} against the test cluster: two lease objects stand for
two processes of one realm (each its own connection).  Skipped without
MULTIREALM_TEST_POSTGRES.
"""

import secrets
import threading

from twisted.application.service import Service
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from multirealm.core.leases import LeasedService
from multirealm.storage.pg_lease import PostgresLeases, lease_key
from multirealm.storage.pg_timeouts import SERVER_KEEPALIVES
from tests.helpers import wait_until
from tests.postgres import server


def terminate_holder(conninfo, name):
    """End the session that holds lease C{name} (as a crash or a cut network would)."""
    import psycopg

    key = lease_key(name)
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with psycopg.connect(conninfo, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND classid = %s AND objid = %s AND objsubid = 1", (high, low),
        ).fetchall()
    assert ended == [(True,)], ended


class PostgresLeasesTests(unittest.TestCase):
    def setUp(self):
        self.conninfo = server()
        self.name = f"outbox test-{secrets.token_hex(4)} 2"  # no other test's lease

    def leases(self):
        leases = PostgresLeases(self.conninfo, "1", reactor)
        leases.CHECK_SECONDS = 0.2
        leases.start()
        self.addCleanup(leases.stop)
        return leases

    @defer.inlineCallbacks
    def test_one_process_holds_a_lease_at_a_time(self):
        first, second = self.leases(), self.leases()
        self.assertTrue((yield first.acquire(self.name, lambda why: None)))
        self.assertTrue((yield first.acquire(self.name, lambda why: None)))  # still held
        self.assertFalse((yield second.acquire(self.name, lambda why: None)))
        yield first.release(self.name)
        self.assertTrue((yield second.acquire(self.name, lambda why: None)))
        self.assertFalse((yield first.acquire(self.name, lambda why: None)))

    @defer.inlineCallbacks
    def test_a_broken_connection_loses_every_lease_and_the_next_attempt_reconnects(self):
        first, second = self.leases(), self.leases()
        lost = []
        other = self.name + "b"
        self.assertTrue((yield first.acquire(self.name, lost.append)))
        self.assertTrue((yield first.acquire(other, lost.append)))
        terminate_holder(self.conninfo, self.name)
        yield wait_until(lambda: len(lost) == 2)  # noticed by the check, both at once
        self.assertIn("connection", lost[0])
        self.assertTrue((yield second.acquire(self.name, lambda why: None)))
        # The first reconnects: the lease the second took is not its own again.
        self.assertFalse((yield first.acquire(self.name, lambda why: None)))
        self.assertTrue((yield first.acquire(other, lambda why: None)))

    @defer.inlineCallbacks
    def test_the_holders_crash_hands_its_work_to_another_process_within_a_retry(self):
        self.patch(LeasedService, "RETRY_SECONDS", 0.2)
        work = {}
        services = []
        for process in ("a", "b"):
            runs = Service()
            work[process] = runs
            service = LeasedService(self.leases(), self.name, runs, reactor, "1", "a test")
            service.startService()
            self.addCleanup(service.stopService)
            services.append(service)
        yield wait_until(lambda: any(runs.running for runs in work.values()))
        ((holder, _),) = [(p, r) for p, r in work.items() if r.running]
        other = "b" if holder == "a" else "a"
        self.assertFalse(work[other].running)
        terminate_holder(self.conninfo, self.name)
        yield wait_until(lambda: work[other].running and not work[holder].running)

    @defer.inlineCallbacks
    def test_a_call_that_does_not_answer_loses_every_lease_and_its_connection(self):
        first, second = self.leases(), self.leases()
        lost = []
        self.assertTrue((yield first.acquire(self.name, lost.append)))
        first.ANSWER_SECONDS = 0.3
        self.patch(first, "_ping_now", lambda connection: connection.execute(
            "SELECT pg_sleep(1)").fetchone())  # a network that stopped answering
        yield wait_until(lambda: lost)
        self.assertIn("no answer from PostgreSQL within 0.3 s", lost[0])
        first.ANSWER_SECONDS = 15  # the call behind the stuck one waits for it
        # Its next call is on a new connection: the one that held the lock is closed.
        self.assertTrue((yield first.acquire(self.name + "-next", lambda why: None)))
        self.assertTrue((yield second.acquire(self.name, lambda why: None)))


class LeaseTimingTests(unittest.TestCase):
    """When a holder cut off from PostgreSQL gives up, against when the server frees its locks."""

    @defer.inlineCallbacks
    def test_a_holder_cut_off_loses_its_leases_before_the_server_can_free_them(self):
        clock = task.Clock()
        leases = PostgresLeases("postgresql://unused@127.0.0.1/none", "1", reactor, clock)
        silent = threading.Event()  # the network: cut after the lock's answer

        def in_thread(function, *args):
            if function is leases._ping_now:
                silent.wait()
            return leases._generation, True

        leases._in_thread = in_thread
        leases.start()
        self.addCleanup(leases.stop)
        self.addCleanup(silent.set)  # first: the stuck thread ends, then the pool stops
        lost = []
        self.assertTrue((yield leases.acquire("outbox 1 2", lost.append)))
        # The server last heard this session now: its keepalives give up,
        # and free the lock for another process, this much later.
        freed = (SERVER_KEEPALIVES["tcp_keepalives_idle"]
                 + SERVER_KEEPALIVES["tcp_keepalives_interval"]
                 * SERVER_KEEPALIVES["tcp_keepalives_count"])
        while not lost and clock.seconds() < freed:
            clock.advance(0.5)
        self.assertTrue(lost, f"still holding when the server may free the lock ({freed} s)")
        self.assertIn("no answer from PostgreSQL", lost[0])
