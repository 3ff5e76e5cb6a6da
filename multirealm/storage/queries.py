"""
The SQL of the store: the operations that run on the store's database
thread inside a transaction (L{multirealm.storage.store} runs them, batches
them and answers them).  The tables are made by the numbered steps of
L{multirealm.storage.schema}.

Every operation takes the sqlite3 connection first.  An operation refuses
with a L{errors.ChatError} only before it changes any row; the store
relies on that to run batches without savepoints.
"""

from multirealm import errors, wire
from multirealm.model import GROUP as GROUP_KIND
from multirealm.model import Delivery, FileRef, History, Message, group_mailbox, user_mailbox
from multirealm.names import Address

class ThreadCache:
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


def list_users(db, after, limit):
    return [
        row[0]
        for row in db.execute(
            "SELECT name FROM users WHERE name > ? ORDER BY name LIMIT ?", (after, limit)
        )
    ]


def list_groups(db, after, limit):
    return [
        row[0]
        for row in db.execute(
            "SELECT name FROM groups WHERE name > ? ORDER BY name LIMIT ?", (after, limit)
        )
    ]


def create_user(db, name, password_hash, created):
    cursor = db.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, created) VALUES (?, ?, ?)",
        (name, password_hash, created),
    )
    if cursor.rowcount == 0:
        raise errors.UserExists(f"user {name!r} already exists")


def password_hash(db, name):
    row = db.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def create_session(db, token_hash, user, expires):
    db.execute(
        "INSERT INTO sessions (token_hash, user, expires) VALUES (?, ?, ?)",
        (token_hash, user, expires),
    )


def session_user(db, token_hash, now):
    row = db.execute(
        "SELECT user, expires FROM sessions WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    if row is None:
        return None
    if row[1] <= now:
        db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
        return None
    return row[0], row[1]


def delete_session(db, token_hash):
    return db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)).rowcount > 0


def purge_sessions(db, now):
    return db.execute("DELETE FROM sessions WHERE expires <= ?", (now,)).rowcount


def require_member(db, group, address):
    exists = db.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone()
    if exists is None:
        raise errors.NoSuchGroup(f"no group {group!r}")
    member = db.execute(
        "SELECT 1 FROM members WHERE group_name = ? AND member = ?", (group, str(address))
    ).fetchone()
    if member is None:
        raise errors.NotAMember(f"{address} is not a member of group {group!r}")


def user_exists(db, cache, name):
    if name in cache.users:
        return True
    if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
        return False
    if len(cache.users) >= cache.MAX:
        cache.users.clear()
    cache.users.add(name)
    return True


def mailbox_number(db, cache, owner, create):
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


NOBODY = frozenset()  # no local users
NOWHERE = frozenset()  # no peer realms

_INSERT_TEXT = (
    "INSERT INTO messages (origin, id, kind, sender, recipient, body, timestamp)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_FILE = (
    "INSERT INTO messages (origin, id, kind, sender, recipient, body, timestamp,"
    " file_name, file_id, file_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_message(db, cache, origin, message, mailboxes, outbox_realms, local_users):
    """
    Add C{message} to the C{mailboxes} named and to the outbox of each of
    C{outbox_realms} (a frozenset); return the L{Delivery}, whose
    C{local_users} (a frozenset of names) are the users of those mailboxes.
    """
    values = (
        origin,
        message.id,
        message.kind,
        str(message.sender),
        str(message.recipient),
        message.text,
        message.timestamp,
    )
    file = message.file
    if file is None:
        # A statement of its own: binding three NULLs costs a measurable 1 us.
        seq = db.execute(_INSERT_TEXT, values).lastrowid
    else:
        seq = db.execute(_INSERT_FILE, values + (file.name, file.id, file.size)).lastrowid
    db.executemany(
        "INSERT INTO timeline (mailbox, seq) VALUES (?, ?)",
        [(mailbox_number(db, cache, owner, create=True), seq) for owner in mailboxes],
    )
    if outbox_realms:
        db.executemany(
            "INSERT INTO outbox (realm, seq) VALUES (?, ?)", [(r, seq) for r in outbox_realms]
        )
    return Delivery(message, origin, local_users, outbox_realms)


def add_private_message(db, cache, realm, message):
    sender, recipient = message.sender, message.recipient  # the sender is local
    if recipient.realm == realm:
        if not user_exists(db, cache, recipient.name):
            raise errors.NoSuchUser(f"no user {recipient.name!r}")
        local = frozenset((sender.name, recipient.name))
        mailboxes = {user_mailbox(sender), user_mailbox(recipient)}
        outbox = NOWHERE
    else:
        local = frozenset((sender.name,))
        mailboxes = (user_mailbox(sender),)
        outbox = frozenset((recipient.realm,))
    return insert_message(db, cache, realm, message, mailboxes, outbox, local)


def group_members(db, realm, group, but=None):
    """
    (local member names, other realms with members, except C{but}) of
    local group C{group}, as frozensets.
    """
    local, realms = set(), set()
    for (member,) in db.execute("SELECT member FROM members WHERE group_name = ?", (group,)):
        member = address(member)
        if member.realm == realm:
            local.add(member.name)
        else:
            realms.add(member.realm)
    realms.discard(but)
    return frozenset(local), frozenset(realms)


def add_group_message(db, cache, realm, message):
    group = message.recipient
    if group.realm == realm:
        require_member(db, group.name, message.sender)
        local, outbox = group_members(db, realm, group.name)
    else:
        # A copy of another realm's group: this realm does not know its
        # members yet (federation replicates them).
        local, outbox = NOBODY, frozenset((group.realm,))
    return insert_message(db, cache, realm, message, (group_mailbox(group),), outbox, local)


def receive_message(db, cache, realm, origin, message):
    """
    Store a message handed over by peer realm C{origin}: at most once per
    (C{origin}, id).  The core has checked that C{origin} may speak for its
    sender.
    """
    known = db.execute(
        "SELECT 1 FROM messages WHERE id = ? AND origin = ?", (message.id, origin)
    ).fetchone()
    if known is not None:
        return Delivery(message, origin, duplicate=True)
    recipient = message.recipient
    if message.kind == GROUP_KIND:
        if recipient.realm == realm:
            require_member(db, recipient.name, message.sender)
            # Never queued back to the realm it came from.
            local, outbox = group_members(db, realm, recipient.name, but=origin)
        else:
            local, outbox = NOBODY, NOWHERE
        mailboxes = (group_mailbox(recipient),)
    else:
        if not user_exists(db, cache, recipient.name):
            raise errors.NoSuchUser(f"no user {recipient.name!r}")
        local, outbox = frozenset((recipient.name,)), NOWHERE
        mailboxes = (user_mailbox(recipient),)
    return insert_message(db, cache, origin, message, mailboxes, outbox, local)


def address(text):
    name, _, realm = text.rpartition("@")
    return Address(name, realm)


def history(db, cache, owner, after_id, limit, max_bytes):
    """
    A L{History} page of mailbox C{owner}: at most C{limit} messages whose
    reply takes at most C{max_bytes} (L{wire.message_bytes}; one message
    is always given, however long, so a client can always page on).  Rows
    are read one at a time, so the page, not the mailbox, is what is held
    in memory.
    """
    mailbox = mailbox_number(db, cache, owner, create=False)
    select = (
        "SELECT m.id, m.kind, m.sender, m.recipient, m.body, m.timestamp,"
        " m.file_name, m.file_id, m.file_size"
        " FROM timeline t JOIN messages m ON m.seq = t.seq WHERE t.mailbox = ?"
    )
    if after_id is None:
        rows = db.execute(select + " ORDER BY t.seq DESC", (mailbox,))
    else:
        # Looked up in this mailbox: ids are unique per origin only, and a
        # message of another conversation is no place to page from.
        after = db.execute(
            "SELECT min(t.seq) FROM messages m JOIN timeline t ON t.seq = m.seq"
            " WHERE m.id = ? AND t.mailbox = ?",
            (after_id, mailbox),
        ).fetchone()
        if after[0] is None:
            raise errors.BadRequest(f"no message with id {after_id!r} here")
        rows = db.execute(select + " AND t.seq > ? ORDER BY t.seq", (mailbox, after[0]))
    messages = []
    budget = max_bytes - wire.HISTORY_REPLY_OVERHEAD
    for row in rows:
        message = Message(
            id=row[0],
            kind=row[1],
            sender=address(row[2]),
            recipient=address(row[3]),
            text=row[4],
            timestamp=row[5],
            file=None if row[7] is None else FileRef(row[6], row[7], row[8]),
        )
        budget -= wire.message_bytes(message)
        if messages and (len(messages) == limit or budget < 0):
            more = True
            break
        messages.append(message)
    else:
        more = False
    rows.close()
    if after_id is None:
        messages.reverse()
    return History(tuple(messages), more)


def create_group(db, cache, name, creator, members, created):
    if db.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone() is not None:
        raise errors.GroupExists(f"group {name!r} already exists")
    for member in members:
        if member.realm == creator.realm and not user_exists(db, cache, member.name):
            raise errors.NoSuchUser(f"no user {member.name!r}")
    db.execute(
        "INSERT INTO groups (name, creator, created) VALUES (?, ?, ?)",
        (name, str(creator), created),
    )
    db.executemany(
        "INSERT OR IGNORE INTO members (group_name, member) VALUES (?, ?)",
        [(name, str(m)) for m in members],
    )


def group_history(db, cache, realm, name, reader, after_id, limit, max_bytes):
    require_member(db, name, reader)
    return history(db, cache, group_mailbox(Address(name, realm)), after_id, limit, max_bytes)


def leave_group(db, name, member):
    require_member(db, name, member)
    db.execute(
        "DELETE FROM members WHERE group_name = ? AND member = ?", (name, str(member))
    )


def pending_counts(db):
    return dict(db.execute("SELECT realm, count(*) FROM outbox GROUP BY realm"))
