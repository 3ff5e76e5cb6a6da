"""
The durable store: L{SQLiteStore}, the SQLite implementation of
L{multirealm.core.interfaces.IStore}.

The SQL itself lives in L{multirealm.storage.queries}, one module per
aggregate, and the tables in L{multirealm.storage.schema}; this module
runs them.  Every operation runs
on one database thread owned by the store, never on the reactor thread,
and returns a
Deferred that fires on the reactor thread once the operation's transaction
has committed (group commit): the thread takes every operation queued while
it was busy, runs them in one transaction, commits once, and then answers
them all.  Under load many messages share one fsync; when idle an operation
commits at once.

Because one thread runs every operation in the order it was queued, a read
sees every write queued before it, and no result is revealed before the
write it depends on is durable.
"""

import os
import queue
import sqlite3
import threading
from time import perf_counter

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from multirealm import errors
from multirealm.core import policy
from multirealm.core.interfaces import IStore
from multirealm.core.metrics import COMMIT_OPERATIONS, COMMIT_SECONDS, Histogram
from multirealm.model import Deliveries, Delivery
from multirealm.storage import schema
from multirealm.storage.queries import (
    accounts, conversations, file_access, groups, messages, operator, outbox, presence,
    private_history, received, remote_groups, replication,
)
from multirealm.storage.queries.common import Later, ThreadCache
from multirealm.logs import RealmLogger

log = RealmLogger()

class _Operation:
    __slots__ = ("function", "args", "deferred", "writes")

    def __init__(self, function, args, writes):
        self.function = function
        self.args = args
        self.writes = writes
        self.deferred = defer.Deferred()


_STOP = object()


# Operations that may leave their private conversations' counts for the
# batch's end (messages.private_added): they read no private_conversations
# row.  Before any other operation, and before the commit, the counts are
# written, so every reader sees them; in a batch run again in isolation,
# before every operation (a savepoint rolled back forgets the thread's
# cache, and the counts with it).
_ONLY_COUNT_PRIVATE = frozenset((messages.add_private_message, received.receive_message))


class _NeedsIsolation(Exception):
    """A batch must run again with a savepoint around each operation."""


@implementer(IStore)
class SQLiteStore:
    """
    L{IStore} on one SQLite file in WAL mode with C{synchronous=FULL}: a
    commit survives a power loss, and group commit keeps that affordable.
    """

    # Upper bound of operations in one transaction, so one huge burst does
    # not hold every reply back behind a single giant commit.
    MAX_BATCH = 2000

    def __init__(self, path, realm, reactor, inline=False):
        """
        Open (creating if need be) the database at C{path}.  This runs on
        the calling thread: it is start-up work, done before the realm
        accepts any connection, so that a bad data directory fails start-up
        at once.

        With C{inline}, every operation runs at once on the calling thread in
        a transaction of its own, and its Deferred has fired on return: for
        deterministic tests only (it blocks the caller).
        """
        self._reactor = reactor
        self.path = path
        self.realm = realm
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self.migrated = schema.migrate(self._db, path, realm=realm)  # (from, to) versions
        self._inline = inline
        # What the database thread remembers between operations; only that
        # thread touches it (tests reach it through operations they submit).
        self.thread_cache = ThreadCache()
        self.commits = 0  # transactions committed: a figure for tests and tuning
        # Of each committed batch (metrics; written by the database thread only):
        self.commit_operations = Histogram(COMMIT_OPERATIONS)  # operations in it
        self.commit_seconds = Histogram(COMMIT_SECONDS)  # from BEGIN to COMMIT done
        self._report = None  # called with each committed Delivery
        self._full = False  # the disk was full at the last failure, and said so
        self._queue = queue.SimpleQueue()  # lists of operations, then _STOP
        self._pending = []  # operations of this reactor turn
        self._thread = None
        self._stop_waiters = []
        # Operations queued before start() wait for it; after stop() they fail.
        self._accepting = True

    # -- the database thread ------------------------------------------------

    def start(self):
        self._accepting = True
        if not self._inline:
            self._thread = threading.Thread(
                target=self._run, name=f"multirealm-store {self.path}", daemon=True
            )
            self._thread.start()

    def stop(self):
        """
        Let the database thread finish every queued operation, then close.
        The returned Deferred fires once the database is closed; operations
        submitted from now on fail at once.
        """
        self._accepting = False
        if self._thread is None:  # inline, never started, or stopped
            self._db.close()
            return defer.succeed(None)
        waiter = defer.Deferred()
        if not self._stop_waiters:
            self._hand_over()
            self._queue.put(_STOP)
        self._stop_waiters.append(waiter)
        return waiter

    def _stopped(self):
        self._thread = None
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def durability(self):
        """
        Fires with C{{"journal_mode": ..., "synchronous": ...}} as the
        store's own connection runs them (C{"wal"} and 2, FULL).
        """

        def read(db):
            return {
                "journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": db.execute("PRAGMA synchronous").fetchone()[0],
            }

        return self.submit(read, writes=False)

    def submit(self, function, *args, writes=True):
        """
        Run C{function(db, *args)} on the database thread inside the next
        batch's transaction; the Deferred fires with its result once
        committed.  C{writes=False} declares that it changes no row.  The
        L{multirealm.storage.queries} contract holds: refuse with a
        L{errors.ChatError} only before changing a row.
        """
        if not self._accepting:
            return defer.fail(errors.Unavailable("the realm is shutting down; try again"))
        operation = _Operation(function, args, writes)
        if self._inline:
            self._answer(self._run_batch([operation]))
            return operation.deferred
        # Operations of one reactor turn go to the database thread together,
        # at the start of the next turn: one hand-over, not one per request.
        self._pending.append(operation)
        if len(self._pending) == 1:
            self._reactor.callLater(0, self._hand_over)
        return operation.deferred

    def _hand_over(self):
        if self._pending:
            pending, self._pending = self._pending, []
            self._queue.put(pending)

    def _run(self):
        stopping = False
        try:
            while not stopping:
                # Everything handed over while the last batch ran becomes
                # the next batch (group commit), up to about MAX_BATCH.
                batch = []
                handed = self._queue.get()
                while True:
                    if handed is _STOP:
                        stopping = True
                        break
                    batch.extend(handed)
                    if len(batch) >= self.MAX_BATCH:
                        break
                    try:
                        handed = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._reactor.callFromThread(self._answer, self._run_batch(batch))
        finally:
            self._db.close()
            self._reactor.callFromThread(self._stopped)

    def _run_batch(self, batch):
        """
        Run operations in one transaction; return (operation, result) pairs.

        The batch first runs without savepoints: an operation refused with a
        L{errors.ChatError} before it changed any row leaves nothing to
        undo, which is how every operation here refuses.  Anything else (a
        refusal after a change, a bug, a disk error) rolls the transaction
        back and runs the batch again with each writing operation in a
        savepoint of its own, so one failure never undoes its neighbours.
        """
        try:
            return self._transaction(batch, isolated=False)
        except _NeedsIsolation:
            return self._transaction(batch, isolated=True)

    def _transaction(self, batch, isolated):
        db = self._db
        results = []
        started = perf_counter()
        try:
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                savepoint = isolated and op.writes
                if isolated or op.function not in _ONLY_COUNT_PRIVATE:
                    messages.write_private_counts(db, self.thread_cache)
                if savepoint:
                    db.execute("SAVEPOINT op")
                changes = db.total_changes
                try:
                    result = op.function(db, *op.args)
                except Exception as e:
                    if not db.in_transaction:
                        # SQLite rolled the whole transaction back by itself
                        # (I/O error, disk full, out of memory): what ran
                        # before is gone, and what follows must not run in
                        # autocommit.  The whole batch fails.
                        raise
                    if savepoint:
                        db.execute("ROLLBACK TO op")
                        db.execute("RELEASE op")
                        self.thread_cache.clear()  # it may name rows just undone
                    elif not isolated and not (
                        isinstance(e, errors.ChatError) and db.total_changes == changes
                    ):
                        raise _NeedsIsolation() from e
                    results.append((op, Failure()))
                else:
                    if savepoint:
                        db.execute("RELEASE op")
                    results.append((op, result))
            messages.write_private_counts(db, self.thread_cache)
            db.execute("COMMIT")
            self.commits += 1
            self.commit_operations.observe(len(batch))
            self.commit_seconds.observe(perf_counter() - started)
        except BaseException as e:
            self.thread_cache.clear()
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, _NeedsIsolation):
                raise
            failure = Failure()
            return [(op, failure) for op in batch]
        return results

    def _disk_full(self, failure):
        """
        L{errors.StorageFull} for a failure that is a full disk, logged once
        until a commit succeeds again (a full disk is not a bug: no
        traceback per request); None for anything else.
        """
        error = failure.value
        if not (isinstance(error, sqlite3.OperationalError) and "full" in str(error)):
            return None
        if not self._full:
            self._full = True
            log.error("realm {realm}: the disk of {path} is full; nothing is stored until"
                      " there is room again", realm=self.realm, path=self.path)
        return Failure(errors.StorageFull("the realm's disk is full: nothing was stored; try later"))

    def report_deliveries_to(self, listener):
        self._report = listener

    def _answer(self, results):
        """On the reactor thread, after the commit: report, then answer."""
        report = self._report
        for op, result in results:
            if isinstance(result, Failure):
                op.deferred.errback(self._disk_full(result) or result)
                continue
            self._full = False
            if report is not None:
                if type(result) is Delivery:
                    if not result.duplicate:
                        report(result)
                elif type(result) is Deliveries:
                    for delivery in result:
                        if not delivery.duplicate:
                            report(delivery)
            op.deferred.callback(result)

    # -- accounts and sessions ----------------------------------------------

    def create_user(self, name, password_hash, created):
        return self.submit(accounts.create_user, name, password_hash, created)

    def password_hash(self, name):
        return self.submit(accounts.password_hash, name, writes=False)

    def list_users(self, after="", limit=-1):
        return self.submit(accounts.list_users, after, limit, writes=False)

    def list_remote_users(self, realm, after="", limit=-1):
        return self.submit(accounts.list_remote_users, realm, after, limit, writes=False)

    def users_to_announce(self, peer, limit):
        return self.submit(accounts.users_to_announce, peer, limit, writes=False)

    def users_announced(self, peer, up_to):
        return self.submit(accounts.users_announced, peer, up_to)

    def receive_users(self, origin, names, most=policy.REMOTE_ROWS_PER_PEER):
        return self.submit(accounts.receive_users, origin, tuple(names), most)

    def create_session(self, token_hash, user, expires, checked_hash=None):
        return self.submit(accounts.create_session, token_hash, user, expires, checked_hash)

    def session_user(self, token_hash, now):
        return self.submit(accounts.session_user, token_hash, now)

    def delete_session(self, token_hash):
        return self.submit(accounts.delete_session, token_hash)

    def change_password(self, name, password_hash, keep_hash):
        return self.submit(accounts.change_password, name, password_hash, keep_hash)

    def purge_sessions(self, now):
        return self.submit(accounts.purge_sessions, now)

    # -- presence -----------------------------------------------------------

    def set_last_seen(self, stamps):
        return self.submit(presence.set_last_seen, tuple(stamps))

    def last_seen(self, names):
        return self.submit(presence.last_seen, tuple(names), writes=False)

    def local_contacts(self, person):
        return self.submit(presence.local_contacts, self.realm, str(person), writes=False)

    # -- messages -----------------------------------------------------------

    def add_private_message(self, message):
        return self.submit(
            messages.add_private_message, self.thread_cache, self.realm, self.realm, message
        )

    def add_group_message(self, message):
        return self.submit(
            groups.add_group_message, self.thread_cache, self.realm, self.realm, message
        )

    def receive_message(self, origin, message, most=policy.REMOTE_ROWS_PER_PEER, notice=None):
        return self.submit(
            received.receive_message, self.thread_cache, self.realm, origin, message, most,
            notice,
        )

    def history(self, mailbox, after_id, limit, max_bytes=2**62, before_id=None):
        return self.submit(
            messages.history, self.thread_cache, mailbox, after_id, limit, max_bytes, before_id,
            writes=False,
        )

    def private_history(self, user, other, before_id, limit, max_bytes=2**62):
        return self._in_steps(
            private_history.private_history, self.thread_cache, self.realm, user, other,
            before_id, limit, max_bytes, writes=False,
        )

    # -- groups -------------------------------------------------------------

    def create_group(self, name, creator, members, created, max_created=2**62, joined=(),
                     roster=None):
        return self.submit(
            groups.create_group, self.thread_cache, name, creator, members, created, max_created,
            tuple(joined), roster,
        )

    def add_members(self, name, owner, members, notices, roster, most=2**62):
        return self.submit(
            groups.add_members, self.thread_cache, self.realm, name, owner, tuple(members),
            tuple(notices), roster, most,
        )

    def remove_members(self, name, owner, members, notices):
        return self.submit(
            groups.remove_members, self.thread_cache, self.realm, name, owner, tuple(members),
            tuple(notices),
        )

    def group_info(self, name, reader):
        return self.submit(groups.group_info, self.realm, name, reader, writes=False)

    def remote_group_info(self, group, reader):
        return self.submit(remote_groups.remote_group_info, self.realm, group, reader, writes=False)

    def groups_of(self, user, limit):
        return self.submit(groups.groups_of, self.realm, user, limit, writes=False)

    def group_readers(self, group, among=None, sent=None):
        return self.submit(groups.group_readers, self.realm, group, among, sent, writes=False)

    def remote_group_history(self, group, reader, after_id, limit, max_bytes=2**62,
                             before_id=None):
        return self.submit(
            remote_groups.group_history_remote, self.thread_cache, group, reader, after_id, limit,
            max_bytes, before_id, writes=False,
        )

    def leave_remote_group(self, group, left):
        return self.submit(
            remote_groups.leave_remote_group, self.thread_cache, self.realm, group, left
        )

    def group_history(self, name, reader, after_id, limit, max_bytes=2**62, before_id=None):
        return self.submit(
            groups.group_history, self.thread_cache, self.realm, name, reader, after_id, limit,
            max_bytes, before_id, writes=False,
        )

    def leave_group(self, name, member, notice=None):
        return self.submit(
            groups.leave_group, self.realm, name, member, self.thread_cache, notice
        )

    def list_groups(self, after="", limit=-1):
        return self.submit(groups.list_groups, after, limit, writes=False)

    # -- conversations --------------------------------------------------------

    def conversations(self, user, after, limit, max_bytes=2**62):
        return self.submit(
            conversations.conversations_of, self.realm, user, after, limit, max_bytes,
            writes=False,
        )

    def mark_read(self, user, other, message_id):
        return self._in_steps(
            conversations.mark_read, self.thread_cache, self.realm, user, other, message_id
        )

    def _in_steps(self, function, *args, writes=True):
        """L{submit}, and again each L{Later} it answers, in later batches."""
        def step(result):
            if isinstance(result, Later):
                return self.submit(result.function, *result.args, writes=writes).addCallback(step)
            return result

        return self.submit(function, *args, writes=writes).addCallback(step)

    # -- replication between the processes of one realm ----------------------

    def last_seq(self):
        return self.submit(replication.last_seq, writes=False)

    def deliveries_after(self, peers, after_seq, up_to, limit):
        return self.submit(
            replication.deliveries_after, self.thread_cache, self.realm, tuple(peers),
            after_seq, up_to, limit, writes=False,
        )

    # -- files --------------------------------------------------------------

    def file_ids(self):
        """Every file id that a stored message carries (for the sweep at start)."""
        return self.submit(file_access.file_ids, writes=False)

    def file_entry(self, file_id, reader):
        return self.submit(file_access.file_entry, file_id, reader, writes=False)

    # -- the outbox ---------------------------------------------------------

    def outbox_batch(self, peer, after_seq, limit, max_bytes=2**62):
        return self.submit(outbox.outbox_batch, peer, after_seq, limit, max_bytes, writes=False)

    def outbox_done(self, peer, seqs):
        return self.submit(outbox.outbox_done, peer, tuple(seqs))

    def pending_counts(self):
        return self.submit(outbox.pending_counts, writes=False)

    def record_failure(self, peer, seq, failure, removed=None, notice=None):
        return self.submit(
            outbox.record_failure, self.thread_cache, self.realm, peer, seq, failure, removed,
            notice,
        )

    # -- the operator (multirealm-admin) ------------------------------------

    def operator_users(self, now, after, limit):
        return self.submit(operator.users, now, after, limit, writes=False)

    def registered_name(self, name):
        return self.submit(operator.registered_name, name, writes=False)

    def set_locked(self, name, locked):
        return self.submit(operator.set_locked, name, locked)

    def reset_password(self, name, password_hash):
        return self.submit(operator.reset_password, name, password_hash)

    def group_roster(self, name):
        return self.submit(operator.group_roster, name, writes=False)

    def delete_group(self, name, creator, members, notices, deleted):
        return self.submit(
            operator.delete_group, self.thread_cache, self.realm, name, creator, tuple(members),
            tuple(notices), deleted,
        )
