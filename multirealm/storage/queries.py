"""
The SQL of the store: the operations that run on the store's database
thread inside a transaction (L{multirealm.storage.store} runs them, batches
them and answers them).  The tables are made by the numbered steps of
L{multirealm.storage.schema}.

Every operation takes the sqlite3 connection first.  An operation refuses
with a L{errors.ChatError} only before it changes any row; the store
relies on that to run batches without savepoints.
"""

import attrs

from multirealm import errors, wire
from multirealm.model import GROUP as GROUP_KIND
from multirealm.model import JOINED, LEFT
from multirealm.model import (
    Deliveries,
    Delivery,
    Failed,
    FileRef,
    History,
    Message,
    group_mailbox,
    user_mailbox,
)
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
        self.users = {}  # a name as asked -> the name as registered
        self.mailboxes = {}

    def clear(self):
        self.users.clear()
        self.mailboxes.clear()


def _names(db, sql, *args):
    """The first column of every row of C{sql}."""
    return [row[0] for row in db.execute(sql, args)]


def list_users(db, after, limit):
    return _names(db, "SELECT name FROM users WHERE name > ? ORDER BY name LIMIT ?", after, limit)


def list_remote_users(db, realm, after, limit):
    """The users of peer C{realm} as it announced them: as L{list_users}."""
    return _names(
        db, "SELECT name FROM remote_users WHERE realm = ? AND name > ? ORDER BY name LIMIT ?",
        realm, after, limit,
    )


def users_to_announce(db, peer, limit):
    """
    (rowid, name) of up to C{limit} users C{peer} has not acknowledged
    yet, in the order they registered.
    """
    row = db.execute("SELECT up_to FROM announced_users WHERE realm = ?", (peer,)).fetchone()
    return db.execute(
        "SELECT rowid, name FROM users WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (row[0] if row else 0, limit),
    ).fetchall()


def users_announced(db, peer, up_to):
    """C{peer} acknowledged every user up to rowid C{up_to}."""
    db.execute(
        "INSERT INTO announced_users (realm, up_to) VALUES (?, ?)"
        " ON CONFLICT (realm) DO UPDATE SET up_to = max(up_to, excluded.up_to)",
        (peer, up_to),
    )


def _remote_room(db, origin, column, wanted, most):
    """
    Refuse (L{errors.QuotaExceeded}) before anything changes if peer
    C{origin} would fill more than C{most} rows of C{column}'s table.
    """
    row = db.execute(f"SELECT {column} FROM remote_counts WHERE realm = ?", (origin,)).fetchone()
    if (row[0] if row else 0) + wanted > most:
        raise errors.QuotaExceeded(f"this realm keeps at most {most} {column} of realm {origin}")


def _count_remote(db, origin, column, added):
    if added:
        db.execute(
            f"INSERT INTO remote_counts (realm, {column}) VALUES (?, ?)"
            f" ON CONFLICT (realm) DO UPDATE SET {column} = {column} + excluded.{column}",
            (origin, added),
        )


def receive_users(db, origin, names, most):
    """Peer C{origin} announced its users C{names} (it fills at most C{most} rows)."""
    names = set(names)
    known = db.execute(
        "SELECT count(*) FROM remote_users WHERE realm = ? AND name IN"
        f" ({', '.join('?' * len(names))})",
        (origin, *names),
    ).fetchone()[0] if names else 0
    _remote_room(db, origin, "users", len(names) - known, most)
    before = db.total_changes
    db.executemany(
        "INSERT OR IGNORE INTO remote_users (realm, name) VALUES (?, ?)",
        [(origin, name) for name in names],
    )
    _count_remote(db, origin, "users", db.total_changes - before)


def list_groups(db, after, limit):
    return _names(db, "SELECT name FROM groups WHERE name > ? ORDER BY name LIMIT ?", after, limit)


def create_user(db, name, password_hash, created):
    taken = db.execute(
        "SELECT name FROM users WHERE name = ? COLLATE NOCASE LIMIT 1", (name,)
    ).fetchone()
    if taken is not None:
        raise errors.UserExists(f"user {taken[0]!r} already exists")
    db.execute(
        "INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?)",
        (name, password_hash, created),
    )


def password_hash(db, name):
    """(the user's name as registered, stored hash) of C{name} in any case, or None."""
    return db.execute(
        "SELECT name, password_hash FROM users WHERE name = ? COLLATE NOCASE"
        " ORDER BY name = ? DESC LIMIT 1",
        (name, name),
    ).fetchone()


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


def local_group(db, group):
    """The name of local group C{group} (any case) as created; L{errors.NoSuchGroup}."""
    row = db.execute(
        "SELECT name FROM groups WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
        (group, group),
    ).fetchone()
    if row is None:
        raise errors.NoSuchGroup(f"no group {group!r}")
    return row[0]


def require_member(db, group, address, any_case=False):
    """The name of local group C{group} as created, if C{address} is a member."""
    group = local_group(db, group)
    _member_as_stored(db, group, address, any_case)
    return group


def _member_as_stored(db, group, address, any_case=False):
    """
    C{address} as local group C{group} lists it, or L{errors.NotAMember}.
    A member of another realm is listed as the group's creator wrote it
    (C{Heru@2}), while that realm names its user as registered
    (C{heru@2}): for one (C{any_case}), when the exact spelling is not
    listed, any case is.  Local members are listed as registered, and
    old local names that differ only in case stay apart.
    """
    member = str(address)
    found = db.execute(
        "SELECT member FROM members WHERE group_name = ? AND member = ?", (group, member)
    ).fetchone()
    if found is None and any_case:
        found = db.execute(
            "SELECT member FROM members WHERE group_name = ? AND member = ? COLLATE NOCASE"
            " LIMIT 1",
            (group, member),
        ).fetchone()
    if found is None:
        raise errors.NotAMember(f"{address} is not a member of group {group!r}")
    return found[0]


def remote_group(db, group, member):
    """
    Group C{group} of another realm (an L{Address}) as its home spells it,
    if local user C{member} belongs to it (as that realm announced);
    L{errors.NotAMember} otherwise.
    """
    row = db.execute(
        "SELECT group_address FROM remote_members WHERE group_key = ? AND member = ?",
        (str(group).lower(), member),
    ).fetchone()
    if row is None:
        raise errors.NotAMember(f"you are not a member of group {group}")
    return address(row[0])


def local_user(db, cache, name):
    """The name of local user C{name} (any case) as registered, or None."""
    known = cache.users.get(name)
    if known is not None:
        return known
    row = db.execute(
        "SELECT name FROM users WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
        (name, name),
    ).fetchone()
    if row is None:
        return None
    if len(cache.users) >= cache.MAX:
        cache.users.clear()
    cache.users[name] = row[0]
    return row[0]


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
_INSERT_FAILURE = (
    "INSERT INTO messages (origin, id, kind, sender, recipient, body, timestamp,"
    " failed_id, failed_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
    if file is not None:
        seq = db.execute(_INSERT_FILE, values + (file.name, file.id, file.size)).lastrowid
    elif message.failed is not None:
        failed = message.failed
        seq = db.execute(_INSERT_FAILURE, values + (failed.id, failed.code)).lastrowid
    else:
        # A statement of its own: binding NULLs costs a measurable 1 us.
        seq = db.execute(_INSERT_TEXT, values).lastrowid
    db.executemany(
        "INSERT INTO timeline (mailbox, seq) VALUES (?, ?)",
        [(mailbox_number(db, cache, owner, create=True), seq) for owner in mailboxes],
    )
    if outbox_realms:
        db.executemany(
            "INSERT INTO outbox (realm, seq) VALUES (?, ?)", [(r, seq) for r in outbox_realms]
        )
    return Delivery(message, origin, local_users, outbox_realms, False, seq)


def _to_local_user(db, cache, message):
    """C{message} with its local recipient spelled as registered; L{errors.NoSuchUser}."""
    recipient = message.recipient
    name = local_user(db, cache, recipient.name)
    if name is None:
        raise errors.NoSuchUser(f"no user {recipient.name!r}")
    if name != recipient.name:
        message = attrs.evolve(message, recipient=Address(name, recipient.realm))
    return message


def _to_local_group(db, realm, message):
    """
    C{message} to local group: the sender must be a member; the group is
    spelled as created.  Returns (message, realms to queue it for).
    """
    group = message.recipient
    name = require_member(db, group.name, message.sender, message.sender.realm != realm)
    if name != group.name:
        message = attrs.evolve(message, recipient=Address(name, realm))
    realms = frozenset(
        row[0]
        for row in db.execute(
            "SELECT realm FROM group_realms WHERE group_name = ? AND realm != ?", (name, realm)
        )
    )
    return message, realms


def _group_file_readers(db, message):
    """A file sent to a local group is for the members of now, not of later."""
    db.execute(
        "INSERT OR IGNORE INTO file_readers (file_id, reader)"
        " SELECT ?, member FROM members WHERE group_name = ?",
        (message.file.id, message.recipient.name),
    )


def _remote_group_file_readers(db, realm, message):
    """
    A file to another realm's group, stored here: for this realm's members
    of it (as its home announced) of now.
    """
    group = message.recipient
    db.execute(
        "INSERT OR IGNORE INTO file_readers (file_id, reader)"
        " SELECT ?, member || '@' || ? FROM remote_members WHERE group_key = ?",
        (message.file.id, realm, str(group).lower()),
    )


def add_private_message(db, cache, realm, message):
    sender = message.sender  # always local: the message was minted here
    if message.recipient.realm == realm:
        message = _to_local_user(db, cache, message)
        recipient = message.recipient
        local = frozenset((sender.name, recipient.name))
        mailboxes = {user_mailbox(sender), user_mailbox(recipient)}
        outbox = NOWHERE
    else:
        local = frozenset((sender.name,))
        mailboxes = (user_mailbox(sender),)
        outbox = frozenset((message.recipient.realm,))
    return insert_message(db, cache, realm, message, mailboxes, outbox, local)


def add_group_message(db, cache, realm, message):
    """
    A group message reaches the group's history, and one outbox per other
    realm with members: its cost does not grow with the group's members.
    Its Delivery names no local users (live delivery asks who is in the
    group).
    """
    if message.recipient.realm == realm:
        message, outbox = _to_local_group(db, realm, message)
        if message.file is not None:
            _group_file_readers(db, message)
    else:
        # A post to another realm's group: its local copy, and one for the
        # home realm, which checks membership again and forwards it.
        group = remote_group(db, message.recipient, message.sender.name)
        if group != message.recipient:
            message = attrs.evolve(message, recipient=group)
        outbox = frozenset((group.realm,))
        if message.file is not None:
            _remote_group_file_readers(db, realm, message)
    return insert_message(
        db, cache, realm, message, (group_mailbox(message.recipient),), outbox, NOBODY
    )


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
    if message.kind == JOINED:
        return _joined(db, cache, origin, message, REMOTE_ROWS_PER_PEER)
    if message.kind == LEFT:
        return _left(db, cache, realm, origin, message)
    if message.kind == GROUP_KIND:
        if message.recipient.realm == realm:
            message, outbox = _to_local_group(db, realm, message)
            outbox = outbox - {origin}  # never queued back to the realm it came from
            if message.file is not None:
                _group_file_readers(db, message)
        else:
            outbox = NOWHERE
            if message.file is not None:
                _remote_group_file_readers(db, realm, message)
        local, mailboxes = NOBODY, (group_mailbox(message.recipient),)
    else:
        message = _to_local_user(db, cache, message)
        local, outbox = frozenset((message.recipient.name,)), NOWHERE
        mailboxes = (user_mailbox(message.recipient),)
    return insert_message(db, cache, origin, message, mailboxes, outbox, local)


def _joined(db, cache, origin, message, most):
    """
    Home realm C{origin} added local user C{message.text} to its group
    C{message.recipient}: remember it (the message row keeps the frame
    from being applied twice).  L{errors.NoSuchUser} if there is no such
    user: the home realm then takes them out again.
    """
    name = local_user(db, cache, message.text)
    if name is None:
        raise errors.NoSuchUser(f"no user {message.text!r}")
    _remote_room(db, origin, "memberships", 1, most)
    group = str(message.recipient)
    before = db.total_changes
    db.execute(
        "INSERT OR IGNORE INTO remote_members (group_key, group_address, member)"
        " VALUES (?, ?, ?)",
        (group.lower(), group, name),
    )
    _count_remote(db, origin, "memberships", db.total_changes - before)
    return insert_message(db, cache, origin, message, (), NOWHERE, NOBODY)


def _left(db, cache, realm, origin, message):
    """User C{message.sender} of realm C{origin} left local group C{message.recipient}."""
    leave_group(db, message.recipient.name, message.sender, any_case=True)
    return insert_message(db, cache, origin, message, (), NOWHERE, NOBODY)


def failure_group(db, seq):
    """The group name of the message stored as C{seq}."""
    return address(db.execute("SELECT recipient FROM messages WHERE seq = ?", (seq,))
                   .fetchone()[0]).name


def address(text):
    name, _, realm = text.rpartition("@")
    return Address(name, realm)


# The columns L{_message} reads, in its order.
_MESSAGE_COLUMNS = (
    "m.id, m.kind, m.sender, m.recipient, m.body, m.timestamp,"
    " m.file_name, m.file_id, m.file_size, m.failed_id, m.failed_code"
)


def _message(row, offset=0):
    """The L{Message} of a row of L{_MESSAGE_COLUMNS}, starting at C{offset}."""
    (id, kind, sender, recipient, body, timestamp,
     file_name, file_id, file_size, failed_id, failed_code) = row[offset:offset + 11]
    return Message(
        id=id, kind=kind, sender=address(sender), recipient=address(recipient), text=body,
        timestamp=timestamp,
        file=None if file_id is None else FileRef(file_name, file_id, file_size),
        failed=None if failed_id is None else Failed(failed_id, failed_code),
    )


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
        "SELECT " + _MESSAGE_COLUMNS +
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
        message = _message(row)
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


def create_group(db, cache, name, creator, members, created, max_created, joined=()):
    """
    Create local group C{name} (its members' local users must exist, in
    any case), unless C{creator} has created C{max_created} already.
    C{joined} are (realm, L{JOINED} message) that tell each other realm
    which of its users were added: queued with the group, they make the
    L{Deliveries} returned.
    """
    taken = db.execute(
        "SELECT name FROM groups WHERE name = ? COLLATE NOCASE LIMIT 1", (name,)
    ).fetchone()
    if taken is not None:
        raise errors.GroupExists(f"group {taken[0]!r} already exists")
    created_before = db.execute(
        "SELECT count(*) FROM groups WHERE creator = ?", (str(creator),)
    ).fetchone()[0]
    if created_before >= max_created:
        raise errors.QuotaExceeded(
            f"you have created {created_before} groups, the most one user may create"
        )
    spelled = {}  # address -> itself, local users spelled as registered, once each
    for member in members:
        if member.realm == creator.realm:
            registered = local_user(db, cache, member.name)
            if registered is None:
                raise errors.NoSuchUser(f"no user {member.name!r}")
            member = Address(registered, member.realm)
        spelled.setdefault(member, member)
    db.execute(
        "INSERT INTO groups (name, creator, created) VALUES (?, ?, ?)",
        (name, str(creator), created),
    )
    db.executemany(
        "INSERT INTO members (group_name, member) VALUES (?, ?)",
        [(name, str(m)) for m in spelled.values()],
    )
    realms = {}
    for member in spelled.values():
        realms[member.realm] = realms.get(member.realm, 0) + 1
    db.executemany(
        "INSERT INTO group_realms (group_name, realm, members) VALUES (?, ?, ?)",
        [(name, realm, count) for realm, count in realms.items()],
    )
    return Deliveries(
        insert_message(db, cache, creator.realm, message, (), frozenset((realm,)), NOBODY)
        for realm, message in joined
    )


def group_history(db, cache, realm, name, reader, after_id, limit, max_bytes):
    name = require_member(db, name, reader)
    return history(db, cache, group_mailbox(Address(name, realm)), after_id, limit, max_bytes)


def groups_of(db, realm, user, limit):
    """
    The groups local user C{user} is in, at most C{limit}: names of this
    realm's groups, C{group@home} for the others (as their homes announced).
    """
    here = _names(
        db, "SELECT group_name FROM members WHERE member = ? ORDER BY group_name LIMIT ?",
        f"{user}@{realm}", limit,
    )
    there = _names(
        db, "SELECT group_address FROM remote_members WHERE member = ? ORDER BY group_key LIMIT ?",
        user, limit,
    )
    return here + there


def group_readers(db, realm, group, among=None):
    """
    The names of this realm's users who read group C{group} (an Address):
    its local members if the group is of this realm, else those its home
    announced.  C{among}: only these names are wanted (point lookups, not
    the whole member list, when they are few).
    """
    local = group.realm == realm
    if among is not None and len(among) <= 500:
        wanted = [f"{name}@{realm}" if local else name for name in among]
        marks = ", ".join("?" * len(wanted))
        if local:
            rows = db.execute(
                f"SELECT member FROM members WHERE group_name = ? AND member IN ({marks})",
                (group.name, *wanted),
            )
        else:
            rows = db.execute(
                f"SELECT member FROM remote_members WHERE group_key = ? AND member IN ({marks})",
                (str(group).lower(), *wanted),
            )
    elif local:
        rows = db.execute("SELECT member FROM members WHERE group_name = ?", (group.name,))
    else:
        rows = db.execute(
            "SELECT member FROM remote_members WHERE group_key = ?", (str(group).lower(),)
        )
    if not local:
        return [member for (member,) in rows]
    suffix = "@" + realm
    return [member[:-len(suffix)] for (member,) in rows if member.endswith(suffix)]


def group_history_remote(db, cache, group, reader, after_id, limit, max_bytes):
    """The history of another realm's group as stored here, for a local member."""
    group = remote_group(db, group, reader)
    return history(db, cache, group_mailbox(group), after_id, limit, max_bytes)


# The most rows of remote_users, and of remote_members, one peer fills.
REMOTE_ROWS_PER_PEER = 1_000_000


def leave_remote_group(db, cache, realm, group, left):
    """
    Local user C{left.sender} leaves group C{group} of another realm: at
    once here, and the L{LEFT} message C{left} tells the group's home.
    """
    user = left.sender.name
    group = remote_group(db, group, user)
    db.execute(
        "DELETE FROM remote_members WHERE group_key = ? AND member = ?",
        (str(group).lower(), user),
    )
    _count_remote(db, group.realm, "memberships", -1)
    left = attrs.evolve(left, recipient=group)
    return insert_message(db, cache, realm, left, (), frozenset((group.realm,)), NOBODY)


def leave_group(db, name, member, any_case=False):
    name = local_group(db, name)
    stored = _member_as_stored(db, name, member, any_case)
    db.execute(
        "DELETE FROM members WHERE group_name = ? AND member = ?", (name, stored)
    )
    db.execute(
        "UPDATE group_realms SET members = members - 1 WHERE group_name = ? AND realm = ?",
        (name, member.realm),
    )
    db.execute("DELETE FROM group_realms WHERE group_name = ? AND members <= 0", (name,))


def file_for(db, realm, file_id, reader):
    """
    The L{FileRef} of file C{file_id} if C{reader} (an address) sent or
    received it: its sender, its private recipient, or one of the members
    its group had when it was sent.  L{errors.NoSuchFile} / L{errors.Forbidden} otherwise.
    """
    row = db.execute(
        "SELECT kind, sender, recipient, file_name, file_id, file_size FROM messages"
        " WHERE file_id = ? ORDER BY seq LIMIT 1",
        (file_id,),
    ).fetchone()
    if row is None:
        raise errors.NoSuchFile(f"no file {file_id!r}")
    kind, sender, recipient, name, stored_id, size = row
    reader = str(reader)
    allowed = reader in (sender, recipient) if kind != GROUP_KIND else reader == sender or (
        db.execute(
            "SELECT 1 FROM file_readers WHERE file_id = ? AND reader = ?", (stored_id, reader)
        ).fetchone() is not None
    )
    if not allowed:
        raise errors.Forbidden("only the sender and the recipients may fetch this file")
    return FileRef(name, stored_id, size)


def file_ids(db):
    """Every file id that a message carries."""
    return {row[0] for row in db.execute("SELECT file_id FROM messages WHERE file_id IS NOT NULL")}


def outbox_batch(db, peer, after_seq, limit, max_bytes=2**62):
    """
    (entries, complete): up to C{limit} (seq, L{Message}) waiting for realm
    C{peer}, after C{after_seq}, oldest first; the read stops after the
    message whose text reaches C{max_bytes} in all (rows are read one at a
    time: a batch, not the outbox, is held).  C{complete}: nothing more waits.
    """
    rows = db.execute(
        "SELECT o.seq, " + _MESSAGE_COLUMNS + " FROM outbox o JOIN messages m ON m.seq = o.seq"
        " WHERE o.realm = ? AND o.seq > ? ORDER BY o.seq LIMIT ?",
        (peer, after_seq, limit + 1),
    )
    entries = []
    complete = True
    for row in rows:
        if len(entries) == limit or max_bytes <= 0:
            complete = False
            break
        message = _message(row, 1)
        max_bytes -= len(message.text)
        entries.append((row[0], message))
    rows.close()
    return entries, complete


def outbox_done(db, peer, seqs):
    """Forget the entries of C{peer}'s outbox that it answered."""
    db.executemany("DELETE FROM outbox WHERE realm = ? AND seq = ?", [(peer, s) for s in seqs])


def pending_counts(db):
    """{realm: (messages waiting, timestamp of the oldest)} of every realm with some."""
    return {
        realm: (count, db.execute("SELECT timestamp FROM messages WHERE seq = ?", (oldest,))
                .fetchone()[0])
        for realm, count, oldest in db.execute(
            "SELECT realm, count(*), min(seq) FROM outbox GROUP BY realm"
        ).fetchall()
    }


def record_failure(db, cache, realm, peer, seq, failure, removed=None):
    """
    C{peer} refused outbox entry C{seq} for good: forget the entry and add
    the L{FAILURE} message C{failure} to its sender's history, in one
    transaction (a crash never loses the failure nor reports it twice).
    C{removed}: the member of group C{failure}'s subject that C{peer}
    refused to add, taken out of the group.
    """
    if removed is not None:
        group = failure_group(db, seq)
        try:
            leave_group(db, group, removed, any_case=True)
        except (errors.NotAMember, errors.NoSuchGroup):
            pass  # already gone: nothing was changed
    db.execute("DELETE FROM outbox WHERE realm = ? AND seq = ?", (peer, seq))
    return insert_message(
        db, cache, realm, failure, (user_mailbox(failure.recipient),), NOWHERE,
        frozenset((failure.recipient.name,)),
    )
