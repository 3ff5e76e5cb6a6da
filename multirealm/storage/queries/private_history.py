"""
One private conversation's history, paged backwards from its newest
message (the C{history} command).  A user's private mailbox holds every
peer's messages together, and no index is kept per conversation (one
would cost every private message a B-tree insert, measured at a tenth of
the send path): a page is read from the user's timeline, newest first,
keeping the conversation's messages, from its last message
(C{private_conversations.last_seq}) down.  At most L{SCAN_ROWS} rows are
read a step, each step in a batch of its own (L{Later}), so a
conversation whose messages are far apart costs its reader more steps,
never anyone else a long wait.
"""

from multirealm import errors, wire
from multirealm.model import History, user_mailbox
from multirealm.names import Address
from multirealm.storage.queries.common import MESSAGE_COLUMNS, Later, address, message_of
from multirealm.storage.queries.conversations import COUNT_ROWS, peer_of
from multirealm.storage.queries.messages import mailbox_number, peer_key

# Rows of a user's private history one step reads (as a markread's count).
SCAN_ROWS = COUNT_ROWS

# The other party of a row of the user's private history: the sender,
# or the recipient of the user's own messages; its parameter is the user
# (user@realm).
_PARTY = "CASE WHEN m.sender = ? THEN m.recipient ELSE m.sender END"


def private_history(db, cache, realm, user, other, before_id, limit, max_bytes):
    """
    A L{History} page of local C{user}'s private conversation with
    C{other} (an Address: a user of any realm, or C{@realm} for the
    delivery failures that realm reported), oldest first: the newest page,
    or with C{before_id} the newest page before that message
    (L{errors.BadRequest} if the conversation does not hold it).
    C{more}: older messages exist.  Or the L{Later} that reads on.
    """
    me = str(Address(user, realm))
    peer = peer_of(db, realm, other)
    mailbox = mailbox_number(db, cache, user_mailbox(Address(user, realm)), create=False)
    row = db.execute(
        'SELECT last_seq FROM private_conversations WHERE "user" = ? AND peer = ?', (user, peer)
    ).fetchone()
    below = None if row is None else row[0] + 1
    if before_id is not None:
        below = None if row is None else _seq_of(db, realm, mailbox, me, peer, before_id)
        if below is None:
            raise errors.BadRequest(
                f"no message {before_id!r} in your conversation with {other.relative_to(realm)}"
            )
    if below is None:
        return History((), False)
    budget = max_bytes - wire.HISTORY_REPLY_OVERHEAD
    return _read_back(db, realm, mailbox, me, peer, below, limit, budget, [])


def _read_back(db, realm, mailbox, me, peer, below, limit, budget, page):
    """
    Read on, newest first, from seq C{below} down: C{page} holds the
    messages so far (newest first) and C{budget} the bytes left.
    """
    low, scanned = db.execute(
        "SELECT min(seq), count(*) FROM (SELECT seq FROM timeline WHERE mailbox = ? AND seq < ?"
        " ORDER BY seq DESC LIMIT ?) AS step",
        (mailbox, below, SCAN_ROWS),
    ).fetchone()
    if scanned:
        rows = db.execute(
            _step_of(peer.rpartition("@")[2] == realm), (mailbox, below, low, me, peer)
        )
        for row in rows:
            message = message_of(row)
            budget -= wire.message_bytes(message)
            if page and (len(page) == limit or budget < 0):
                rows.close()
                return History(tuple(reversed(page)), True)
            page.append(message)
    if scanned < SCAN_ROWS:  # the start of the user's history
        return History(tuple(reversed(page)), False)
    return Later(_read_back, realm, mailbox, me, peer, low, limit, budget, page)


def _step_of(local):
    """
    The SQL of a step's messages of one conversation, newest first: a
    C{local} peer as registered, another realm's in any case (keyed in
    lower case); a first-release database may hold 'Bob' and 'bob', two
    people.  IN, not a join: read in the seqs' order, where a join's
    rows would be sorted whole, bodies and all (a step reads up to
    SCAN_ROWS of them), before the page takes the first.
    """
    party = _PARTY if local else f"lower({_PARTY})"
    return (
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.seq IN (SELECT seq FROM timeline"
        f" WHERE mailbox = ? AND seq < ? AND seq >= ?) AND {party} = ? ORDER BY m.seq DESC"
    )


def _seq_of(db, realm, mailbox, me, peer, message_id):
    """The seq of message C{message_id} in C{me}'s conversation with C{peer}, or None."""
    for seq, sender, recipient in db.execute(
        "SELECT m.seq, m.sender, m.recipient FROM messages m WHERE m.id = ?"
        " AND EXISTS (SELECT 1 FROM timeline t WHERE t.mailbox = ? AND t.seq = m.seq)",
        (message_id, mailbox),
    ):
        if peer_key(realm, address(recipient if sender == me else sender)) == peer:
            return seq
    return None
