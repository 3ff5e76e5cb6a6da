"""
Replication between the processes of one realm (L{multirealm.core.cluster}):
where the message stream stands, and the L{Delivery} of each message
after a place in it, as its own process reported it.

The SQL is what both engines accept (C{?} placeholders, no engine's
dialect), and every read is by primary key: a page of messages by seq,
each peer's outbox entries by (realm, seq).  The local users a message
reached are worked out from the message itself (as the operation that
stored it did), not from the timeline, which has no index by seq.
"""

from multirealm.core.policy import NOWHERE, private_route
from multirealm.model import FAILURE, JOINED, KNOWN, MEMBER, PRIVATE, Delivery
from multirealm.names import Address
from multirealm.storage.queries.accounts import local_user
from multirealm.storage.queries.common import MESSAGE_COLUMNS, message_of

NOBODY = frozenset()


def last_seq(db):
    """The seq of the newest message stored (0: none)."""
    return db.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]


def deliveries_after(db, cache, realm, peers, after_seq, up_to, limit):
    """
    The L{Delivery} of each message with C{after_seq} < seq <= C{up_to}
    (None: no upper bound), oldest first, at most C{limit} of them:
    C{queued_for} the C{peers} whose outbox still holds it.
    """
    if up_to is None:
        up_to = 2**62
    rows = db.execute(
        "SELECT m.seq, m.origin, " + MESSAGE_COLUMNS + " FROM messages m"
        " WHERE m.seq > ? AND m.seq <= ? ORDER BY m.seq LIMIT ?",
        (after_seq, up_to, limit),
    ).fetchall()
    if not rows:
        return []
    last = rows[-1][0]
    queued = {}  # seq -> peers
    for peer in peers:
        for (seq,) in db.execute(
            "SELECT seq FROM outbox WHERE realm = ? AND seq > ? AND seq <= ?",
            (peer, after_seq, last),
        ):
            queued.setdefault(seq, set()).add(peer)
    deliveries = []
    for row in rows:
        seq, origin = row[0], row[1]
        message = message_of(row, 2)
        deliveries.append(Delivery(
            message, origin, _local_users(db, cache, realm, origin, message),
            frozenset(queued.get(seq, NOWHERE)), False, seq,
        ))
    return deliveries


def _local_users(db, cache, realm, origin, message):
    """The users of C{realm} its storing operation named in its Delivery."""
    kind = message.kind
    if kind == PRIVATE:
        return private_route(realm, origin, message)[2]
    if kind == FAILURE:
        return frozenset((message.recipient.name,))
    if kind == JOINED:
        if origin == realm:
            return NOBODY  # one this realm queued for a peer
        name = local_user(db, cache, message.text)
        return NOBODY if name is None else frozenset((name,))
    if kind == MEMBER:
        change, _, member = message.text.partition(" ")
        if change == KNOWN or not member:
            return NOBODY
        member = Address.parse(member.split(" ", 1)[0], realm)
        if member.realm != realm:
            return NOBODY
        name = local_user(db, cache, member.name)
        return frozenset((name or member.name,))
    return NOBODY  # a group post (its readers are asked for), a LEFT
