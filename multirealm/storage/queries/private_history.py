"""
One private conversation's history, paged backwards from its newest
message (the C{history} command): a user's private mailbox holds every
peer's messages together, so a conversation is read from the messages
between its two parties instead, by the index of step 013 on (sender,
recipient, seq), one range a direction, merged newest first.  Each row
is checked against the user's own timeline, so a conversation shows
nothing the user's C{inbox} would not.
"""

import heapq

from multirealm import errors
from multirealm.model import FAILURE, PRIVATE, History, user_mailbox
from multirealm.names import Address
from multirealm.storage.queries.common import MESSAGE_COLUMNS, address, message_of
from multirealm.storage.queries.conversations import peer_of
from multirealm.storage.queries.messages import mailbox_number, peer_key, take_page

# CROSS JOIN keeps messages (by the parties' index) as the outer loop:
# the timeline is only probed, never scanned.
_DIRECTION = (
    "SELECT m.seq, " + MESSAGE_COLUMNS + " FROM messages m CROSS JOIN timeline t"
    " ON t.mailbox = ? AND t.seq = m.seq"
    " WHERE m.sender = ? COLLATE NOCASE AND m.recipient = ? COLLATE NOCASE"
    f" AND m.kind IN ('{PRIVATE}', '{FAILURE}') AND m.seq < ? ORDER BY m.seq DESC"
)
# In a row of _DIRECTION: seq, then MESSAGE_COLUMNS (id, kind, sender, recipient, ...).
_SENDER, _RECIPIENT = 3, 4


def private_history(db, cache, realm, user, other, before_id, limit, max_bytes):
    """
    A L{History} page of local C{user}'s private conversation with
    C{other} (an Address: a user of any realm, or C{@realm} for the
    delivery failures that realm reported), oldest first: the newest page,
    or with C{before_id} the newest page before that message
    (L{errors.BadRequest} if the conversation does not hold it).
    C{more}: older messages exist.
    """
    me = str(Address(user, realm))
    peer = peer_of(db, realm, other)
    mailbox = mailbox_number(db, cache, user_mailbox(Address(user, realm)), create=False)
    below = 2**62
    if before_id is not None:
        below = _seq_of(db, realm, mailbox, me, peer, before_id)
        if below is None:
            raise errors.BadRequest(
                f"no message {before_id!r} in your conversation with {other.relative_to(realm)}"
            )
    if mailbox is None:
        return History((), False)

    def direction(sender, recipient, column):
        rows = db.execute(_DIRECTION, (mailbox, sender, recipient, below))
        # NOCASE finds another realm's user in any case; this realm's users
        # are one name as registered (a first-release database may hold
        # 'Bob' and 'bob', two people).
        return (row for row in rows if peer_key(realm, address(row[column])) == peer)

    if peer == me:  # notes to oneself: each message is both directions
        newest_first = direction(me, me, _RECIPIENT)
    else:
        newest_first = heapq.merge(
            direction(me, peer, _RECIPIENT), direction(peer, me, _SENDER),
            key=lambda row: -row[0],
        )
    page = take_page((message_of(row, 1) for row in newest_first), limit, max_bytes)
    return History(tuple(reversed(page.messages)), page.more)


def _seq_of(db, realm, mailbox, me, peer, message_id):
    """The seq of message C{message_id} in C{me}'s conversation with C{peer}, or None."""
    for seq, kind, sender, recipient in db.execute(
        "SELECT m.seq, m.kind, m.sender, m.recipient FROM messages m"
        " JOIN timeline t ON t.mailbox = ? AND t.seq = m.seq WHERE m.id = ?",
        (mailbox, message_id),
    ):
        party = address(recipient if sender == me else sender)
        if kind in (PRIVATE, FAILURE) and peer_key(realm, party) == peer:
            return seq
    return None
