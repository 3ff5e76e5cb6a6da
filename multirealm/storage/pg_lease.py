"""
The leases of a realm on PostgreSQL (L{PostgresLeases}, an L{ILeases}):
each is a session-level advisory lock, taken with C{pg_try_advisory_lock}
on one connection of this process's own.  The server frees a lock when
its session ends, so a process that dies (kill -9 included) lets go of
its leases at once, or, if its machine vanishes, once the server's TCP
keepalives give up (set to about 11 s here).

The lock key of lease NAME is the first 8 bytes of
SHA-256("multirealm lease " + NAME), as a signed big-endian bigint
(NAME is L{multirealm.core.leases.outbox_lease}'s "outbox REALM PEER").

The connection's calls block, so they run in a thread of their own, one
at a time.  If the connection breaks (or a call does not answer within
L{PostgresLeases.ANSWER_SECONDS}) every lease is lost at once: each
holder is told, the connection is closed (which frees any lock it still
had) and the next attempt opens a new one.  While it holds a lease this
process checks the connection every L{PostgresLeases.CHECK_SECONDS}
(C{SELECT 1}), so a broken network is noticed even when nothing else
happens.
"""

import hashlib
import struct

from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from multirealm.core.interfaces import ILeases

from multirealm.storage.pg_timeouts import (
    CLIENT_TIMEOUTS, SERVER_TIMEOUTS,
)


def lease_key(name):
    """The advisory lock key of lease C{name}."""
    digest = hashlib.sha256(f"multirealm lease {name}".encode("utf-8")).digest()
    return struct.unpack(">q", digest[:8])[0]


class LeaseConnectionLost(Exception):
    """The connection that holds the leases broke or stopped answering."""


@implementer(ILeases)
class PostgresLeases:
    """
    @param conninfo: the realm's C{database} (a libpq URL).
    @param realm: the realm's name (the connection's application_name).
    """

    shared = True
    CHECK_SECONDS = 2.0
    # Less than the server's keepalives minus a check: a holder cut off
    # gives its leases up before the server can free them for another.
    ANSWER_SECONDS = 5.0

    def __init__(self, conninfo, realm, reactor, clock=None):
        self._conninfo = conninfo
        self._realm = realm
        self._reactor = reactor
        self._clock = clock or reactor
        self._held = {}  # name -> (key, lost)
        self._pool = ThreadPool(1, 1, name=f"realm {realm} leases")
        self._check = None
        # Bumped when every lease is lost: the thread closes a connection
        # opened before (it may still hold locks) before its next call.
        self._generation = 0
        self._connection = None  # (generation, psycopg connection): the thread's only
        self._closing = False

    # -- the reactor thread ----------------------------------------------------

    def start(self):
        self._pool.start()
        self._check = task.LoopingCall(self._check_alive)
        self._check.clock = self._clock
        self._check.start(self.CHECK_SECONDS, now=False)

    def stop(self):
        if self._check is not None and self._check.running:
            self._check.stop()
        self._held = {}
        self._closing = True
        closed = deferToThreadPool(self._reactor, self._pool, self._close_now)
        closed.addErrback(lambda _: None)
        return closed.addCallback(lambda _: self._pool.stop())

    def acquire(self, name, lost):
        if name in self._held:
            return defer.succeed(True)  # locked once: a second lock would need two unlocks
        key = lease_key(name)

        def answered(held):
            if held:
                self._held[name] = (key, lost)
            return held

        return self._call(self._try_now, key).addCallback(answered)

    def release(self, name):
        held = self._held.pop(name, None)
        if held is None:
            return defer.succeed(None)
        return self._call(self._unlock_now, held[0])

    def _check_alive(self):
        if self._held:
            self._call(self._ping_now).addErrback(lambda _: None)  # a failure is lost()

    def _call(self, function, *args):
        """
        C{function(*args)} in the thread: its answer, or a failure once
        every lease is lost.  An answer from a connection of before the
        last loss is no answer (that connection is closed before the next
        call, and whatever it locked with it).
        """
        generation = self._generation
        d = deferToThreadPool(self._reactor, self._pool, self._in_thread, function, *args)
        d.addTimeout(self.ANSWER_SECONDS, self._clock)

        def answered(result):
            used, value = result
            if used != self._generation:
                raise LeaseConnectionLost("the leases' connection was replaced meanwhile")
            return value

        return d.addCallbacks(answered, self._failed, errbackArgs=(generation,))

    def _failed(self, failure, generation):
        if failure.check(defer.TimeoutError):
            failure = Failure(LeaseConnectionLost(
                f"no answer from PostgreSQL within {self.ANSWER_SECONDS:g} s"
            ))
        if generation == self._generation and not self._closing:
            self._generation += 1
            held, self._held = self._held, {}
            for _, lost in held.values():
                lost(failure.getErrorMessage())
        return failure

    # -- the thread ------------------------------------------------------------

    def _in_thread(self, function, *args):
        """(the generation of the connection used, C{function(connection, *args)})."""
        import psycopg

        generation = self._generation
        connection = self._connect_now(generation)
        try:
            return generation, function(connection, *args)
        except psycopg.Error as e:
            self._connection = None
            connection.close()
            raise LeaseConnectionLost(f"the leases' connection broke: {e}") from None

    def _connect_now(self, generation):
        import psycopg

        if self._connection is not None:
            opened, connection = self._connection
            if opened == generation and not connection.closed:
                return connection
            self._connection = None
            connection.close()  # frees whatever it still locked
        try:
            connection = psycopg.connect(
                self._conninfo, autocommit=True,
                application_name=f"multirealm realm {self._realm} leases", **CLIENT_TIMEOUTS,
            )
            connection.execute(SERVER_TIMEOUTS)
        except psycopg.Error as e:
            raise LeaseConnectionLost(f"cannot connect to PostgreSQL: {e}") from None
        self._connection = (generation, connection)
        return connection

    @staticmethod
    def _try_now(connection, key):
        return connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]

    @staticmethod
    def _unlock_now(connection, key):
        return connection.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone()[0]

    @staticmethod
    def _ping_now(connection):
        return connection.execute("SELECT 1").fetchone()[0]

    def _close_now(self):
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None
