"""
The durable store: L{IStore} and its SQLite implementation.

The SQL itself lives in L{multirealm.sql}; this module runs it.  Every
operation runs on one database
thread owned by the store, never on the reactor thread, and returns a
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

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from multirealm import errors, sql

class IStore(Interface):
    """
    Durable state of one realm.  Every method returns a Deferred that fires
    once the effect is committed; refusals fail with a L{errors.ChatError}.
    Addresses are L{Address} values; stored qualified (C{user@realm}).
    """

    def start():
        """Start serving operations."""

    def stop():
        """Finish queued operations, close; Deferred fires when done."""

    def create_user(name, password_hash, created):
        """Add a local user; L{errors.UserExists} if taken."""

    def password_hash(name):
        """The stored hash of a local user, or None."""

    def list_users():
        """Sorted names of this realm's users."""

    def create_session(token_hash, user, expires):
        """Record a session of C{user} valid until C{expires} (epoch s)."""

    def session_user(token_hash, now):
        """The user of a live session, or None (expired ones are removed)."""

    def delete_session(token_hash):
        """End a session; True if it existed."""

    def purge_sessions(now):
        """Remove every session expired by C{now}; fires with how many."""

    def add_private_message(message):
        """
        Store a private message in the history of each party of this realm,
        and queue it for the recipient's realm if that is another; fires
        with the message.  A recipient of this realm must exist
        (L{errors.NoSuchUser}).
        """

    def add_group_message(message):
        """
        Store a group message; fires with the message.  For a group of this
        realm: the group must exist (L{errors.NoSuchGroup}) and have the
        sender as a member (L{errors.NotAMember}); the message goes into its
        history and is queued once for every other realm with members.  For
        a group of another realm: it goes into this realm's copy of that
        group's history and is queued for the group's realm.
        """

    def history(mailbox, after_id, limit):
        """
        A L{History} page of C{mailbox} (named by L{sql.user_mailbox} or
        L{sql.group_mailbox}): without C{after_id} its newest C{limit}
        messages, with it the oldest C{limit} after that id;
        L{errors.BadRequest} for an unknown id.
        """

    def create_group(name, creator, members, created):
        """
        Create local group C{name}; C{members} (addresses, the creator among
        them) whose realm is C{creator.realm} must be users here.
        """

    def group_history(name, reader, after_id, limit):
        """
        L{history} of local group C{name}, if C{reader} (an address) is a
        member: L{errors.NoSuchGroup} / L{errors.NotAMember} otherwise.
        """

    def leave_group(name, member):
        """Remove C{member} from local group C{name}."""

    def list_groups():
        """Sorted names of this realm's groups."""

    def pending_counts():
        """{realm: number of messages waiting in its outbox}."""


class _Operation:
    __slots__ = ("function", "args", "deferred", "writes")

    def __init__(self, function, args, writes):
        self.function = function
        self.args = args
        self.writes = writes
        self.deferred = defer.Deferred()


_STOP = object()


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
        self._migrate()
        self._inline = inline
        self._cache = sql.ThreadCache()
        self._queue = queue.SimpleQueue()  # lists of operations, then _STOP
        self._pending = []  # operations of this reactor turn
        self._thread = None
        self._stop_waiters = []
        # Operations queued before start() wait for it; after stop() they fail.
        self._accepting = True

    def _migrate(self):
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == sql.SCHEMA_VERSION:
            return
        if version != 0:
            raise RuntimeError(
                f"{self.path}: schema version {version}, this code knows {sql.SCHEMA_VERSION}"
            )
        # executescript runs the whole schema as one transaction.
        self._db.executescript(
            f"BEGIN; {sql.SCHEMA}; PRAGMA user_version = {sql.SCHEMA_VERSION}; COMMIT;"
        )

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

    def _submit(self, function, *args, writes=True):
        if not self._accepting:
            return defer.fail(errors.ChatError("the realm is shutting down; try again"))
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
        try:
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                savepoint = isolated and op.writes
                if savepoint:
                    db.execute("SAVEPOINT op")
                changes = db.total_changes
                try:
                    result = op.function(db, *op.args)
                except Exception as e:
                    if savepoint:
                        db.execute("ROLLBACK TO op")
                        db.execute("RELEASE op")
                        self._cache.clear()  # it may name rows just undone
                    elif not isolated and not (
                        isinstance(e, errors.ChatError) and db.total_changes == changes
                    ):
                        raise _NeedsIsolation() from e
                    results.append((op, Failure()))
                else:
                    if savepoint:
                        db.execute("RELEASE op")
                    results.append((op, result))
            db.execute("COMMIT")
        except BaseException as e:
            self._cache.clear()
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, _NeedsIsolation):
                raise
            failure = Failure()
            return [(op, failure) for op in batch]
        return results

    @staticmethod
    def _answer(results):
        for op, result in results:
            if isinstance(result, Failure):
                op.deferred.errback(result)
            else:
                op.deferred.callback(result)

    # -- accounts and sessions ----------------------------------------------

    def create_user(self, name, password_hash, created):
        return self._submit(sql.create_user, name, password_hash, created)

    def password_hash(self, name):
        return self._submit(sql.password_hash, name, writes=False)

    def list_users(self):
        return self._submit(sql.list_users, writes=False)

    def create_session(self, token_hash, user, expires):
        return self._submit(sql.create_session, token_hash, user, expires)

    def session_user(self, token_hash, now):
        return self._submit(sql.session_user, token_hash, now)

    def delete_session(self, token_hash):
        return self._submit(sql.delete_session, token_hash)

    def purge_sessions(self, now):
        return self._submit(sql.purge_sessions, now)

    # -- messages -----------------------------------------------------------

    def add_private_message(self, message):
        return self._submit(sql.add_private_message, self._cache, self.realm, message)

    def add_group_message(self, message):
        return self._submit(sql.add_group_message, self._cache, self.realm, message)

    def history(self, mailbox, after_id, limit):
        return self._submit(sql.history, self._cache, mailbox, after_id, limit, writes=False)

    # -- groups -------------------------------------------------------------

    def create_group(self, name, creator, members, created):
        return self._submit(sql.create_group, self._cache, name, creator, members, created)

    def group_history(self, name, reader, after_id, limit):
        return self._submit(
            sql.group_history, self._cache, self.realm, name, reader, after_id, limit, writes=False
        )

    def leave_group(self, name, member):
        return self._submit(sql.leave_group, name, member)

    def list_groups(self):
        return self._submit(sql.list_groups, writes=False)

    def pending_counts(self):
        return self._submit(sql.pending_counts, writes=False)
