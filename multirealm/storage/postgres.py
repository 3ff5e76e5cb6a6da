"""
The durable store on PostgreSQL: L{PostgresStore}, for a realm whose
realms.ini says C{database = postgresql://...}, shared by every process of
the realm.

The same batching store and query modules as SQLite
(L{multirealm.storage.batching}, L{multirealm.storage.queries}); what
differs is here:

  - OK means committed: the connection runs C{synchronous_commit = on},
    and a batch commits once (group commit).
  - The queries were written for one writer (counters read and written
    back, the thread's cache of users and mailboxes, seqs in commit
    order).  Several processes keep that true because every batch that
    writes first takes the realm's transaction-level advisory lock,
    released by its commit: writing batches of all processes run one at
    a time, so a message's seq (given by the database thread, counting
    on from the last one read under the lock) commits in increasing order
    and a row read in a batch is not changed by another until it ends.
    Batches that only read take no lock: they read one snapshot
    (REPEATABLE READ, which never fails a transaction that only reads).
  - A connection lost while idle (PostgreSQL restarted, the backend
    terminated) is made again by the next batch; one lost in the middle of
    a batch fails that batch with L{errors.Unavailable}, and the next
    connects again.  A full disk is L{errors.StorageFull}.

The password comes from libpq (C{PGPASSWORD}, C{PGPASSFILE}, C{~/.pgpass}),
never from realms.ini.
"""

import psycopg
from psycopg import errors as pg_errors
from twisted.python.failure import Failure
from zope.interface import implementer

from multirealm import errors
from multirealm.config import without_password
from multirealm.core.interfaces import IStore
from multirealm.logs import RealmLogger
from multirealm.storage import pg_schema
from multirealm.storage.batching import BatchingStore, _NeedsIsolation
from multirealm.storage.operations import StoreOperations
from multirealm.storage.pg_sql import Connection, Cursor, TransactionLost
from multirealm.storage.pg_timeouts import CLIENT_TIMEOUTS, SERVER_TIMEOUTS

log = RealmLogger()


@implementer(IStore)
class PostgresStore(StoreOperations, BatchingStore):
    """L{IStore} on a PostgreSQL database shared by the processes of one realm."""

    IDLE_IN_TRANSACTION = "10s"
    LOCK_WAIT = "30s"

    def __init__(self, url, realm, reactor, inline=False):
        """
        Connect to C{url} and bring its schema up to date, on the calling
        thread (start-up work: an unreachable database fails start-up at
        once, with a L{ConnectionError} of one line).  C{inline}: see
        L{BatchingStore.__init__}.
        """
        BatchingStore.__init__(self, realm, reactor, inline)
        self.url = url
        self._write_lock = pg_schema.lock_key("write", realm)
        self._lost = False  # the connection was lost, and the log said so
        self._first_seq = None  # the last seq when the batch began (read under the lock)
        try:
            self._db = self._connect()
            self.migrated = pg_schema.migrate(self._db.connection, without_password(url), realm)
        except psycopg.Error as e:
            said = " ".join(str(e).split())
            raise ConnectionError(f"cannot use PostgreSQL at {without_password(url)}: {said}")

    def _connect(self):
        connection = psycopg.connect(
            self.url, autocommit=True, cursor_factory=Cursor,
            application_name=f"multirealm realm {self.realm}", **CLIENT_TIMEOUTS,
        )
        connection.execute("SET synchronous_commit = on")
        # A process that stalls inside a batch (stopped, its machine cut off)
        # holds the realm's write lock.  A batch waits for the lock
        # LOCK_WAIT at most, then answers `unavailable`: no process waits
        # for ever.  A machine cut off is ended by the server's keepalives
        # (SERVER_TIMEOUTS); a stalled transaction that had synced is
        # ended after IDLE_IN_TRANSACTION (one stopped in mid-pipeline is
        # "active" to the server: it holds the lock until it runs or dies).
        connection.execute(
            f"SET idle_in_transaction_session_timeout = '{self.IDLE_IN_TRANSACTION}';"
            f" SET lock_timeout = '{self.LOCK_WAIT}'; {SERVER_TIMEOUTS}"
        )
        return Connection(connection)

    def _begin(self, writes, isolated):
        if self._db.broken:
            self._reconnect()
        self._db.abandon_pipeline()  # (none is left, unless a batch failed oddly)
        # A batch that only reads sees one snapshot, as if no other process
        # wrote meanwhile; one that writes sees each commit before its lock.
        begin = "BEGIN" if writes else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        try:
            self._db.execute(begin)
        except psycopg.OperationalError:
            if not self._db.broken:
                raise
            # Lost while idle (PostgreSQL restarted, the backend ended):
            # nothing of this batch ran yet, so it may begin on a new one.
            self._reconnect()
            self._db.execute(begin)
        # The thread numbers messages (queries.messages.next_seq) from the
        # last seq read under the lock: other processes write between batches.
        last_seq = None
        if writes:
            if not isolated:
                self._db.start_pipeline()  # (pg_sql.Connection: a few round trips a batch)
            self._db.execute("SELECT pg_advisory_xact_lock(?)", (self._write_lock,))
            if isolated:
                last_seq = self._db.execute(
                    "SELECT coalesce(max(seq), 0) FROM messages"
                ).fetchone()[0]
            else:
                last_seq = self._db.read_numbers()
        self._first_seq = self.thread_cache.last_seq = last_seq

    def _commit(self):
        db = self._db
        if db.pipeline is None:
            self._follow_seqs(db)
            return db.execute("COMMIT")
        try:
            self._follow_seqs(db)
            db.commit_pipeline()
        except (psycopg.OperationalError, TransactionLost):
            raise
        except psycopg.Error as e:
            # A statement of the pipeline failed; which operation's is not
            # known here: the batch runs again, each operation on its own.
            raise _NeedsIsolation() from e

    def _follow_seqs(self, db):
        """
        Move the identity of messages.seq past the seqs the thread gave, so
        that an insert that lets PostgreSQL number its row takes a new one.
        """
        last_seq = self.thread_cache.last_seq
        if last_seq is None:  # forgotten by a savepoint rolled back
            if self._first_seq is not None:
                db.execute(
                    "SELECT setval(pg_get_serial_sequence('messages', 'seq'), max(seq))"
                    " FROM messages HAVING max(seq) IS NOT NULL"
                )
        elif last_seq != self._first_seq:
            db.execute("SELECT setval(pg_get_serial_sequence('messages', 'seq'), ?)", (last_seq,))

    def _reconnect(self):
        self._db = self._connect()
        if self._lost:
            self._lost = False
            log.info("realm {realm}: connected to PostgreSQL again", realm=self.realm)

    def _close(self):
        if not self._db.broken:
            self._db.close()

    def durability(self):
        """Fires with C{{"synchronous_commit": "on"}} as the store's connection runs it."""

        def read(db):
            return {"synchronous_commit": db.execute("SHOW synchronous_commit").fetchone()[0]}

        return self.submit(read, writes=False)

    def _clean_error(self, failure):
        """
        L{errors.StorageFull} for a full disk, L{errors.Unavailable} for a
        lost connection, each logged once until a commit succeeds again;
        None for anything else.
        """
        error = failure.value
        if isinstance(error, pg_errors.DiskFull):
            if not self._full:
                self._full = True
                log.error("realm {realm}: PostgreSQL's disk is full; nothing is stored until"
                          " there is room again", realm=self.realm)
            return Failure(
                errors.StorageFull("the realm's disk is full: nothing was stored; try later")
            )
        if isinstance(error, (psycopg.OperationalError, TransactionLost,
                              pg_errors.InFailedSqlTransaction)):
            if not self._lost:
                self._lost = True
                log.error("realm {realm}: lost PostgreSQL ({error}); connecting again for the"
                          " next request", realm=self.realm, error=error)
            return Failure(errors.Unavailable("the realm's database is unavailable; try again"))
        return None
