"""
Conversations: each local user's row per private peer and per group (the
last message, the read marker, the unread count, the order of activity),
kept up to date where messages and memberships are written, so that
listing them and moving a marker never read the history.

L{message_added} runs in L{messages.insert_message}, in the message's
transaction; L{joined} and L{left} in the membership functions of
L{groups}.  What counts:
  - a private message: for each local party, the conversation with the
    other (one's own note: with oneself);
  - a group message: every local member's row of the group;
  - a delivery failure: the conversation its failed message was in (the
    peer, or the group while the user is still in it), as unread;
  - joined / left frames are no one's message: a join makes the group's
    row (no last message, its activity the join), a leave removes it.
A user's own message is never unread and moves their marker to it.
"""

from multirealm import errors, wire
from multirealm.core.policy import conversation_key
from multirealm.model import FAILURE, GROUP, PRIVATE, Conversation, user_mailbox
from multirealm.storage.queries.common import MESSAGE_COLUMNS, address, message_of

# Numbered: ?4 the seq, ?5 the marker (the seq if one's own, else 0), ?6
# unread (0 or 1), ?7 whether the peer wrote it.  A peer is shown as it
# writes its own name (its realm spells it as registered) once it has
# written, and its messages are counted by that spelling.
_TOUCH_PRIVATE = (
    "INSERT INTO conversations"
    " (user, kind, with_key, with_address, last_seq, activity, read_seq, unread)"
    " VALUES (?1, 'private', ?2, ?3, ?4, ?4, ?5, ?6)"
    " ON CONFLICT (user, kind, with_key) DO UPDATE SET last_seq = ?4, activity = ?4,"
    " with_address = CASE WHEN ?7 THEN ?3 ELSE with_address END,"
    " read_seq = CASE WHEN ?6 THEN read_seq ELSE ?4 END,"
    " unread = CASE WHEN ?6 THEN unread + 1 ELSE 0 END"
)
# ?1 the seq, ?2 the local sender's name ('' if of another realm), ?3 the group's key.
_TOUCH_GROUP = (
    "UPDATE conversations SET last_seq = ?1, activity = ?1,"
    " read_seq = CASE WHEN user = ?2 THEN ?1 ELSE read_seq END,"
    " unread = CASE WHEN user = ?2 THEN 0 ELSE unread + 1 END"
    " WHERE kind = 'group' AND with_key = ?3"
)


# The keys and separators of one entry around its last message.
_ENTRY_OVERHEAD = 70


def _touch_private(db, realm, user, other, seq, own, from_peer):
    db.execute(
        _TOUCH_PRIVATE,
        (user, conversation_key(realm, other), str(other), seq, seq if own else 0,
         0 if own else 1, from_peer),
    )


def message_added(db, realm, message, seq, local_users, about=None):
    """
    Message C{message}, stored as C{seq}, reached C{local_users} (names;
    for a private message or a failure); C{about}: for a L{FAILURE}, the
    (kind, recipient L{Address}) of the message that failed.
    """
    kind = message.kind
    if kind == PRIVATE:
        sender = message.sender
        for user in local_users:
            own = sender.realm == realm and sender.name == user
            other = message.recipient if own else sender
            _touch_private(db, realm, user, other, seq, own, not own)
    elif kind == GROUP:
        sender = message.sender
        db.execute(
            _TOUCH_GROUP,
            (seq, sender.name if sender.realm == realm else "",
             conversation_key(realm, message.recipient)),
        )
    elif kind == FAILURE and about is not None:
        failed_kind, other = about
        for user in local_users:
            if failed_kind == PRIVATE:
                _touch_private(db, realm, user, other, seq, False, False)
            else:
                db.execute(
                    "UPDATE conversations SET last_seq = ?1, activity = ?1, unread = unread + 1"
                    " WHERE user = ?2 AND kind = 'group' AND with_key = ?3",
                    (seq, user, conversation_key(realm, other)),
                )


def joined(db, realm, users, group, activity=None):
    """
    Local C{users} (names) joined C{group} (an L{Address}): each gets the
    group's row, if not there already, ordered at C{activity} (default:
    just after the last message stored).
    """
    if activity is None:
        activity = db.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0] + 0.5
    key = conversation_key(realm, group)
    db.executemany(
        "INSERT INTO conversations (user, kind, with_key, with_address, last_seq, activity)"
        " VALUES (?, 'group', ?, ?, NULL, ?) ON CONFLICT DO NOTHING",
        [(user, key, str(group), activity) for user in users],
    )


def left(db, realm, user, group):
    """Local C{user} left C{group}: it is no longer one of their conversations."""
    db.execute(
        "DELETE FROM conversations WHERE user = ? AND kind = 'group' AND with_key = ?",
        (user, conversation_key(realm, group)),
    )


def conversations_of(db, realm, user, after, limit, max_bytes):
    """
    A page of local C{user}'s conversations, newest activity first, after
    the one with C{after}: ([L{Conversation}], more), at most C{limit}
    whose reply takes at most C{max_bytes} (as a history page: one entry is
    always given; C{more} if the page was cut) (an L{Address} or None; if it is
    both a peer and a group, after the first of the two, so a page may
    repeat one entry but never skips one).  L{errors.BadRequest} if the
    user has no conversation with C{after}.
    """
    select = (
        "SELECT c.kind, c.with_address, c.unread, m.seq, " + MESSAGE_COLUMNS +
        " FROM conversations c LEFT JOIN messages m ON m.seq = c.last_seq WHERE c.user = ?"
    )
    order = " ORDER BY c.activity DESC, c.kind DESC, c.with_key DESC LIMIT ?"
    if after is None:
        rows = db.execute(select + order, (user, limit + 1))
    else:
        start = db.execute(
            "SELECT activity, kind, with_key FROM conversations"
            " WHERE user = ? AND with_key = ? ORDER BY activity DESC, kind DESC LIMIT 1",
            (user, conversation_key(realm, after)),
        ).fetchone()
        if start is None:
            raise errors.BadRequest(f"you have no conversation with {after.relative_to(realm)}")
        rows = db.execute(
            select + " AND (c.activity, c.kind, c.with_key) < (?, ?, ?)" + order,
            (user, *start, limit + 1),
        )
    found = []
    budget = max_bytes - wire.HISTORY_REPLY_OVERHEAD
    more = False
    parsed = {}  # most rows name the same few addresses (the user's, above all)

    def parse(text):
        known = parsed.get(text)
        if known is None:
            known = parsed[text] = address(text)
        return known

    for row in rows:
        kind, with_address, unread, seq = row[:4]
        last = None if seq is None else message_of(row, 4, parse)
        budget -= _ENTRY_OVERHEAD + len(with_address)
        if last is not None:
            budget -= wire.message_bytes(last)
        if found and (len(found) == limit or budget < 0):
            more = True
            break
        found.append(Conversation(parse(with_address), kind, last, unread))
    rows.close()
    return found, more


def _place(db, realm, user, seq, kind, sender, recipient, failed_id):
    """
    The conversation (kind, key) of local C{user} that stored message
    C{seq} is in, or None: a private message or a failure only if it is in
    the user's private history.
    """
    if kind == GROUP:
        return GROUP, conversation_key(realm, address(recipient))
    me = f"{user}@{realm}"
    in_history = db.execute(
        "SELECT 1 FROM timeline t JOIN mailboxes b ON b.id = t.mailbox"
        " WHERE b.owner = ? AND t.seq = ?",
        (user_mailbox(me), seq),
    ).fetchone()
    if in_history is None:
        return None
    if kind == PRIVATE:
        return PRIVATE, conversation_key(realm, address(recipient if sender == me else sender))
    if kind == FAILURE:
        failed = db.execute(
            "SELECT kind, recipient FROM messages WHERE id = ? AND origin = ? ORDER BY seq LIMIT 1",
            (failed_id, realm),
        ).fetchone()
        if failed is not None:
            return (PRIVATE if failed[0] == PRIVATE else GROUP), conversation_key(
                realm, address(failed[1])
            )
    return None


def _unread_after(db, realm, user, kind, with_address, after, last):
    """
    Messages from others in C{user}'s conversation after seq C{after} (up
    to C{last}), counted by an index from the marker on: the group's own
    history, or the peer's messages to the user (C{messages_by_pair}).
    A delivery failure is not recounted: it is unread until a marker
    passes it.
    """
    me = f"{user}@{realm}"
    if kind == GROUP:
        return db.execute(
            "SELECT count(*) FROM mailboxes b JOIN timeline t ON t.mailbox = b.id"
            " JOIN messages m ON m.seq = t.seq"
            " WHERE b.owner = ? AND t.seq > ? AND t.seq <= ? AND m.sender != ?",
            ("group:" + with_address, after, last, me),
        ).fetchone()[0]
    if with_address == me:
        return 0  # notes to oneself
    return db.execute(
        "SELECT count(*) FROM messages WHERE kind = 'private' AND recipient = ? AND sender = ?"
        " AND seq > ? AND seq <= ?",
        (me, with_address, after, last),
    ).fetchone()[0]


def mark_read(db, realm, user, other, message_id):
    """
    Local C{user} has read their conversation with C{other} (an
    L{Address}) up to and including message C{message_id}.  The marker
    only moves forward: returns the kind of the conversation whose marker
    moved, or None if it was there or further already.
    L{errors.BadRequest} if no such message is in that conversation.
    """
    key = conversation_key(realm, other)
    rows = {
        kind: (read_seq, last_seq, with_address)
        for kind, read_seq, last_seq, with_address in db.execute(
            "SELECT kind, read_seq, last_seq, with_address FROM conversations"
            " WHERE user = ? AND with_key = ?",
            (user, key),
        )
    }
    found = None
    if rows:
        for seq, *facts in db.execute(
            "SELECT seq, kind, sender, recipient, failed_id FROM messages WHERE id = ?",
            (message_id,),
        ).fetchall():
            place = _place(db, realm, user, seq, *facts)
            if place is not None and place[1] == key and place[0] in rows:
                found = place[0], seq
                break
    if found is None:
        raise errors.BadRequest(
            f"no message {message_id!r} in your conversation with {other.relative_to(realm)}"
        )
    kind, seq = found
    read_seq, last_seq, with_address = rows[kind]
    if seq <= read_seq:
        return None
    if last_seq is None or seq >= last_seq:
        unread = 0  # (None: a group joined after the message, with nothing since)
    else:
        unread = _unread_after(db, realm, user, kind, with_address, seq, last_seq)
    db.execute(
        "UPDATE conversations SET read_seq = ?, unread = ?"
        " WHERE user = ? AND kind = ? AND with_key = ?",
        (seq, unread, user, kind, key),
    )
    return kind
