"""
Messages: the message rows, the mailboxes (one per conversation) whose
timeline lists them, private messages, and history pages.

L{insert_message} is the one place a message is written; whatever must
change with every message (its outbox entries, each reader's
conversation and unread count) changes there or right after it, in the
same transaction.
"""

import attrs

from multirealm import errors, wire
from multirealm.core.policy import private_route
from multirealm.model import Delivery, History
from multirealm.names import Address
from multirealm.storage.queries.accounts import local_user
from multirealm.storage.queries.common import MESSAGE_COLUMNS, message_of


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


# A conversation's counts of one batch: user, peer, the last seq, the
# user's own last seq (0: none; no message has seq 0), messages from the
# peer, messages from the peer before the user's own last one.  SET reads
# the row as it was: read = received + those before counts up to read_seq.
_PRIVATE_COUNTS = (
    'INSERT INTO private_conversations ("user", peer, last_seq, read_seq, received, read)'
    " VALUES (?, ?, ?, ?, ?, ?)"
    ' ON CONFLICT ("user", peer) DO UPDATE SET last_seq = excluded.last_seq,'
    " received = private_conversations.received + excluded.received,"
    " read_seq = CASE WHEN excluded.read_seq = 0 THEN private_conversations.read_seq"
    " ELSE excluded.read_seq END,"
    " read = CASE WHEN excluded.read_seq = 0 THEN private_conversations.read"
    " ELSE private_conversations.received + excluded.read END"
)


def peer_key(realm, other):
    """
    How a private conversation with C{other} (an Address) is keyed: as
    registered for this realm's users, lower case for another realm's
    (names are one identity in any case there, as C{remote_members.group_key}).
    """
    text = str(other)
    return text if other.realm == realm else text.lower()


def private_added(cache, realm, delivery):
    """
    Private message or failure C{delivery} (a L{Delivery}) is in the
    history of its C{local_users}: each one's conversation with the other
    party (L{multirealm.storage.queries.conversations}) counts it, and the
    sender's marker moves to it.  Counted in C{cache.private_counts}, and
    written by L{write_private_counts} before the transaction's next
    reader and its commit: one row per conversation per batch, however
    many of the batch's messages it holds.
    """
    message = delivery.message
    sender = message.sender
    own = sender.name if sender.realm == realm else None
    seq = delivery.seq
    counts = cache.private_counts
    for user in delivery.local_users:
        other = message.recipient if user == own else sender
        key = f"{other.name}@{other.realm}"  # peer_key inlined: this runs for every message
        row = (user, key if other.realm == realm else key.lower())
        # [last seq, own last seq, from the peer, from the peer before it]
        count = counts.get(row)
        if count is None:
            count = counts[row] = [seq, 0, 0, 0]
        count[0] = seq
        if user == own:
            count[1] = seq
            count[3] = count[2]
        else:
            count[2] += 1
    return delivery


def write_private_counts(db, cache):
    """Write what L{private_added} counted since the last call."""
    counts = cache.private_counts
    if counts:
        db.executemany(_PRIVATE_COUNTS, [key + tuple(count) for key, count in counts.items()])
        counts.clear()


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
        # A statement of its own: binding NULLs costs a measurable 1 us.  Its
        # seq is the lastrowid: SQLite's RETURNING costs 2 us more (measured).
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


def to_local_user(db, cache, message):
    """C{message} with its local recipient spelled as registered; L{errors.NoSuchUser}."""
    recipient = message.recipient
    name = local_user(db, cache, recipient.name)
    if name is None:
        raise errors.NoSuchUser(f"no user {recipient.name!r}")
    if name != recipient.name:
        message = attrs.evolve(message, recipient=Address(name, recipient.realm))
    return message


def add_private_message(db, cache, realm, origin, message):
    """
    Store private message C{message}, minted here (C{origin} is C{realm})
    or handed over by peer C{origin}, where L{private_route} sends it.
    """
    if message.recipient.realm == realm:
        message = to_local_user(db, cache, message)
    mailboxes, outbox, local = private_route(realm, origin, message)
    return private_added(
        cache, realm, insert_message(db, cache, origin, message, mailboxes, outbox, local)
    )


def history(db, cache, owner, after_id, limit, max_bytes, before_id=None):
    """
    A L{History} page of mailbox C{owner}: at most C{limit} messages whose
    reply takes at most C{max_bytes} (L{wire.message_bytes}; one message
    is always given, however long, so a client can always page on).  The
    newest page; with C{after_id}, the oldest page after it; with
    C{before_id}, the newest page before it.  Rows are read one at a
    time, at most C{limit} + 1 of them, so the page, not the mailbox, is
    what is held in memory.
    """
    mailbox = mailbox_number(db, cache, owner, create=False)
    select = (
        "SELECT " + MESSAGE_COLUMNS +
        " FROM timeline t JOIN messages m ON m.seq = t.seq WHERE t.mailbox = ?"
    )
    if after_id is None and before_id is None:
        rows = db.execute(select + " ORDER BY t.seq DESC LIMIT ?", (mailbox, limit + 1))
    elif after_id is not None:
        rows = db.execute(
            select + " AND t.seq > ? ORDER BY t.seq LIMIT ?",
            (mailbox, _seq_in(db, mailbox, after_id), limit + 1),
        )
    else:
        rows = db.execute(
            select + " AND t.seq < ? ORDER BY t.seq DESC LIMIT ?",
            (mailbox, _seq_in(db, mailbox, before_id), limit + 1),
        )
    page = take_page(map(message_of, rows), limit, max_bytes)
    rows.close()
    if after_id is None:
        return History(tuple(reversed(page.messages)), page.more)
    return page


def _seq_in(db, mailbox, message_id):
    """
    Where message C{message_id} is in C{mailbox}: the first row of that id
    there (the store keys a message by (origin, id), so a peer that reuses
    another realm's id stores a second row with it, and a message of
    another conversation is no place to page from); L{errors.BadRequest}.
    """
    row = db.execute(
        "SELECT min(t.seq) FROM messages m JOIN timeline t ON t.seq = m.seq"
        " WHERE m.id = ? AND t.mailbox = ?",
        (message_id, mailbox),
    ).fetchone()
    if row[0] is None:
        raise errors.BadRequest(f"no message with id {message_id!r} here")
    return row[0]


def take_page(messages, limit, max_bytes):
    """
    A L{History} of the first of C{messages} (an iterable of L{Message}s,
    read only as far as needed) that fit C{limit} and C{max_bytes}; the
    first always fits.  C{more}: some were left.
    """
    page = []
    budget = max_bytes - wire.HISTORY_REPLY_OVERHEAD
    for message in messages:
        budget -= wire.message_bytes(message)
        if page and (len(page) == limit or budget < 0):
            return History(tuple(page), True)
        page.append(message)
    return History(tuple(page), False)
