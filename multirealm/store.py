"""
The durable store: L{IStore} and its SQLite implementation.

All SQL of the project lives here.  Every operation runs on one database
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
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from multirealm import errors
from multirealm.model import History, Message
from multirealm.names import Address

log = Logger()

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,   -- sha256 of the token: a stolen file holds no usable token
    user TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    creator TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE members (
    group_name TEXT NOT NULL,
    member TEXT NOT NULL,          -- qualified address, user@realm
    PRIMARY KEY (group_name, member)
) WITHOUT ROWID;
-- seq is the realm's own arrival order; messages are never deleted, so an
-- INTEGER PRIMARY KEY never reuses a value.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
-- One mailbox per conversation: 'user:alice@1' for a user's private
-- history, 'group:team@1' for a group's.
CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE
);
-- Which mailboxes a message appears in.  Keyed by the mailbox's number, not
-- its name: smaller index pages, fewer of them written per commit.
CREATE TABLE timeline (
    mailbox INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;
-- Messages waiting to be handed to another realm (PROTOCOL.md §2),
-- written in the same transaction as the message.
CREATE TABLE outbox (
    realm TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (realm, seq)
) WITHOUT ROWID;
"""


def user_mailbox(address):
    """The mailbox of a user's private history."""
    return f"user:{address}"


def group_mailbox(address):
    """The mailbox of a group's history."""
    return f"group:{address}"


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
        A L{History} page of C{mailbox} (L{user_mailbox}, L{group_mailbox}):
        without C{after_id} its newest
        C{limit} messages, with it the oldest C{limit} after that id;
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


class _ThreadCache:
    """
    What the database thread remembers between operations so that most
    messages skip a SELECT: local users seen to exist, and mailbox numbers.
    Users and mailboxes are never deleted, so an entry stays true; all is
    forgotten when a transaction or savepoint rolls back (an entry made
    inside it may be gone), and a part when it grows past C{MAX}.  Only the
    database thread touches it.
    """

    MAX = 100_000

    def __init__(self):
        self.users = set()
        self.mailboxes = {}

    def clear(self):
        self.users.clear()
        self.mailboxes.clear()


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
        self._cache = _ThreadCache()
        self._queue = queue.SimpleQueue()  # lists of operations, then _STOP
        self._pending = []  # operations of this reactor turn
        self._thread = None
        self._stop_waiters = []
        # Operations queued before start() wait for it; after stop() they fail.
        self._accepting = True

    def _migrate(self):
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise RuntimeError(
                f"{self.path}: schema version {version}, this code knows {SCHEMA_VERSION}"
            )
        # executescript runs the whole schema as one transaction.
        self._db.executescript(
            f"BEGIN; {_SCHEMA}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
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
        return self._submit(_create_user, name, password_hash, created)

    def password_hash(self, name):
        return self._submit(_password_hash, name, writes=False)

    def list_users(self):
        return self._submit(_column_list, "SELECT name FROM users ORDER BY name", writes=False)

    def create_session(self, token_hash, user, expires):
        return self._submit(_create_session, token_hash, user, expires)

    def session_user(self, token_hash, now):
        return self._submit(_session_user, token_hash, now)

    def delete_session(self, token_hash):
        return self._submit(_delete_session, token_hash)

    def purge_sessions(self, now):
        return self._submit(_purge_sessions, now)

    # -- messages -----------------------------------------------------------

    def add_private_message(self, message):
        return self._submit(_add_private_message, self._cache, self.realm, message)

    def add_group_message(self, message):
        return self._submit(_add_group_message, self._cache, self.realm, message)

    def history(self, mailbox, after_id, limit):
        return self._submit(_history, self._cache, mailbox, after_id, limit, writes=False)

    # -- groups -------------------------------------------------------------

    def create_group(self, name, creator, members, created):
        return self._submit(_create_group, self._cache, name, creator, members, created)

    def group_history(self, name, reader, after_id, limit):
        return self._submit(
            _group_history, self._cache, self.realm, name, reader, after_id, limit, writes=False
        )

    def leave_group(self, name, member):
        return self._submit(_leave_group, name, member)

    def list_groups(self):
        return self._submit(_column_list, "SELECT name FROM groups ORDER BY name", writes=False)

    def pending_counts(self):
        return self._submit(_pending_counts, writes=False)


# The operations below run on the database thread, inside a transaction.


def _column_list(db, sql):
    return [row[0] for row in db.execute(sql)]


def _create_user(db, name, password_hash, created):
    cursor = db.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, created) VALUES (?, ?, ?)",
        (name, password_hash, created),
    )
    if cursor.rowcount == 0:
        raise errors.UserExists(f"user {name!r} already exists")


def _password_hash(db, name):
    row = db.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def _create_session(db, token_hash, user, expires):
    db.execute(
        "INSERT INTO sessions (token_hash, user, expires) VALUES (?, ?, ?)",
        (token_hash, user, expires),
    )


def _session_user(db, token_hash, now):
    row = db.execute(
        "SELECT user, expires FROM sessions WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    if row is None:
        return None
    if row[1] <= now:
        db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
        return None
    return row[0], row[1]


def _delete_session(db, token_hash):
    return db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)).rowcount > 0


def _purge_sessions(db, now):
    return db.execute("DELETE FROM sessions WHERE expires <= ?", (now,)).rowcount


def _require_member(db, group, address):
    exists = db.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone()
    if exists is None:
        raise errors.NoSuchGroup(f"no group {group!r}")
    member = db.execute(
        "SELECT 1 FROM members WHERE group_name = ? AND member = ?", (group, str(address))
    ).fetchone()
    if member is None:
        raise errors.NotAMember(f"{address} is not a member of group {group!r}")


def _user_exists(db, cache, name):
    if name in cache.users:
        return True
    if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
        return False
    if len(cache.users) >= cache.MAX:
        cache.users.clear()
    cache.users.add(name)
    return True


def _mailbox(db, cache, owner, create):
    """The number of C{owner}'s mailbox; with C{create}, made if missing."""
    number = cache.mailboxes.get(owner)
    if number is None:
        row = db.execute("SELECT id FROM mailboxes WHERE owner = ?", (owner,)).fetchone()
        if row is not None:
            number = row[0]
        elif create:
            number = db.execute("INSERT INTO mailboxes (owner) VALUES (?)", (owner,)).lastrowid
        else:
            return None
        if len(cache.mailboxes) >= cache.MAX:
            cache.mailboxes.clear()
        cache.mailboxes[owner] = number
    return number


def _insert_message(db, cache, message, mailboxes, outbox_realms):
    seq = db.execute(
        "INSERT INTO messages (id, kind, sender, recipient, body, timestamp)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            message.id,
            message.kind,
            str(message.sender),
            str(message.recipient),
            message.text,
            message.timestamp,
        ),
    ).lastrowid
    db.executemany(
        "INSERT INTO timeline (mailbox, seq) VALUES (?, ?)",
        [(_mailbox(db, cache, owner, create=True), seq) for owner in mailboxes],
    )
    if outbox_realms:
        db.executemany(
            "INSERT INTO outbox (realm, seq) VALUES (?, ?)", [(r, seq) for r in outbox_realms]
        )
    return message


def _add_private_message(db, cache, realm, message):
    sender, recipient = message.sender, message.recipient
    mailboxes = {user_mailbox(a) for a in (sender, recipient) if a.realm == realm}
    if recipient.realm == realm:
        if not _user_exists(db, cache, recipient.name):
            raise errors.NoSuchUser(f"no user {recipient.name!r}")
        outbox = ()
    else:
        outbox = (recipient.realm,)
    return _insert_message(db, cache, message, mailboxes, outbox)


def _add_group_message(db, cache, realm, message):
    group = message.recipient
    if group.realm == realm:
        _require_member(db, group.name, message.sender)
        outbox = {
            _address(row[0]).realm
            for row in db.execute("SELECT member FROM members WHERE group_name = ?", (group.name,))
        }
        outbox.discard(realm)
    else:
        outbox = (group.realm,)
    return _insert_message(db, cache, message, (group_mailbox(group),), outbox)


def _address(text):
    name, _, realm = text.rpartition("@")
    return Address(name, realm)


def _history(db, cache, owner, after_id, limit):
    mailbox = _mailbox(db, cache, owner, create=False)
    select = (
        "SELECT m.id, m.kind, m.sender, m.recipient, m.body, m.timestamp"
        " FROM timeline t JOIN messages m ON m.seq = t.seq WHERE t.mailbox = ?"
    )
    if after_id is None:
        rows = db.execute(select + " ORDER BY t.seq DESC LIMIT ?", (mailbox, limit + 1)).fetchall()
        rows.reverse()
        more = len(rows) > limit
        rows = rows[1:] if more else rows
    else:
        after = db.execute("SELECT seq FROM messages WHERE id = ?", (after_id,)).fetchone()
        if after is None:
            raise errors.BadRequest(f"no message with id {after_id!r}")
        rows = db.execute(
            select + " AND t.seq > ? ORDER BY t.seq LIMIT ?", (mailbox, after[0], limit + 1)
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
    messages = tuple(
        Message(
            id=row[0],
            kind=row[1],
            sender=_address(row[2]),
            recipient=_address(row[3]),
            text=row[4],
            timestamp=row[5],
        )
        for row in rows
    )
    return History(messages, more)


def _create_group(db, cache, name, creator, members, created):
    if db.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone() is not None:
        raise errors.GroupExists(f"group {name!r} already exists")
    for member in members:
        if member.realm == creator.realm and not _user_exists(db, cache, member.name):
            raise errors.NoSuchUser(f"no user {member.name!r}")
    db.execute(
        "INSERT INTO groups (name, creator, created) VALUES (?, ?, ?)",
        (name, str(creator), created),
    )
    db.executemany(
        "INSERT OR IGNORE INTO members (group_name, member) VALUES (?, ?)",
        [(name, str(m)) for m in members],
    )


def _group_history(db, cache, realm, name, reader, after_id, limit):
    _require_member(db, name, reader)
    return _history(db, cache, group_mailbox(Address(name, realm)), after_id, limit)


def _leave_group(db, name, member):
    _require_member(db, name, member)
    db.execute(
        "DELETE FROM members WHERE group_name = ? AND member = ?", (name, str(member))
    )


def _pending_counts(db):
    return dict(db.execute("SELECT realm, count(*) FROM outbox GROUP BY realm"))
