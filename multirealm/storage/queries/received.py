"""
What a peer realm hands over: stored at most once per (origin, id), then
as its kind says (a message, a membership its home announced, a leave).
"""

from multirealm.model import GROUP, JOINED, LEFT, MEMBER, Delivery
from multirealm.storage.queries import groups, messages, remote_groups


_NOT_GATHERED = frozenset((GROUP, JOINED, LEFT, MEMBER))


def receive_message(db, cache, realm, origin, message, most, notice=None):
    """
    Store a message handed over by peer realm C{origin}: at most once per
    (C{origin}, id).  The core has checked that C{origin} may speak for its
    sender.  C{most}: the rows of memberships one peer may fill.  C{notice}:
    for a L{LEFT}, the MEMBER message this realm sends on.
    """
    # Checked in the transaction that stores it (and backed by the UNIQUE
    # key): a frame resent while its first copy waits in the same batch is
    # a duplicate all the same, whether its row is written or only gathered.
    known = messages.gathered(cache, origin, message.id) or db.execute(
        "SELECT 1 FROM messages WHERE id = ? AND origin = ?", (message.id, origin)
    ).fetchone()
    if known:
        return Delivery(message, origin, duplicate=True)
    kind = message.kind
    if kind in _NOT_GATHERED:
        # What follows reads the rows of the batch's messages so far.
        messages.write_gathered(db, cache)
    if kind == GROUP:
        return groups.add_group_message(db, cache, realm, origin, message)
    if kind == JOINED:
        return remote_groups.receive_joined(db, cache, origin, message, most)
    if kind == LEFT:
        return groups.receive_left(db, cache, realm, origin, message, notice)
    if kind == MEMBER:
        return remote_groups.receive_member(db, cache, realm, origin, message, most)
    return messages.add_private_message(db, cache, realm, origin, message)
