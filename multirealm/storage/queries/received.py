"""
What a peer realm hands over: stored at most once per (origin, id), then
as its kind says (a message, a membership its home announced, a leave).
The private messages of one read of a link are received as a run
(L{receive_private_messages}): one operation, one duplicate check.
"""

import functools

from multirealm.model import GROUP, JOINED, LEFT, MEMBER, Delivery, Sent
from multirealm.storage.queries import groups, messages, remote_groups


_NOT_GATHERED = frozenset((GROUP, JOINED, LEFT, MEMBER))


def receive_message(db, cache, realm, origin, message, most, notice=None):
    """
    Store a message handed over by peer realm C{origin}: at most once per
    (C{origin}, id).  The core has checked that C{origin} may speak for its
    sender.  C{most}: the rows of memberships one peer may fill.  C{notice}:
    for a L{LEFT}, the MEMBER message this realm sends on.
    """
    if _known(db, cache, origin, message.id):
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


def receive_private_message(db, cache, realm, origin, message):
    """L{receive_message} of a private message: a run's part run alone (batching)."""
    if _known(db, cache, origin, message.id):
        return Delivery(message, origin, duplicate=True)
    return messages.add_private_message(db, cache, realm, origin, message)


def receive_private_messages(db, cache, realm, origin, run):
    """
    L{receive_private_message} for each of C{run}, the private messages of
    one read of C{origin}'s link, in order: a L{Sent} of each one's
    Delivery (C{duplicate} if stored before, or earlier in the run) or
    refusal.  One statement finds the ones stored before; the others are
    stored as a run of L{messages.add_private_messages} (its refusals, its
    isolation when the run fails).
    """
    known = _stored_ids(db, origin, run)
    gathered = cache.gathered_keys
    fresh, duplicate = [], []
    for message in run:
        message_id = message.id
        if message_id in known or (message_id, origin) in gathered:
            duplicate.append(True)
        else:
            known.add(message_id)  # a second copy in the run is a duplicate
            fresh.append(message)
            duplicate.append(False)
    added = iter(messages.add_private_messages(db, cache, realm, origin, fresh) if fresh else ())
    return Sent([
        Delivery(message, origin, duplicate=True) if seen else next(added)
        for message, seen in zip(run, duplicate)
    ])


def _known(db, cache, origin, message_id):
    """
    Whether message (C{origin}, C{message_id}) is stored.  Checked in the
    transaction that stores it (and backed by the UNIQUE key): a frame
    resent while its first copy waits in the same batch is a duplicate
    all the same, whether its row is written or only gathered.
    """
    return messages.gathered(cache, origin, message_id) or db.execute(
        "SELECT 1 FROM messages WHERE id = ? AND origin = ?", (message_id, origin)
    ).fetchone() is not None


# Ids looked up in one statement, at most (a power of two: a few statements to prepare).
_MOST_IDS = 256


def _stored_ids(db, origin, run):
    """The set of the ids of C{run}'s messages that C{origin} handed over before (written rows)."""
    ids = [message.id for message in run]
    stored = set()
    start, left = 0, len(ids)
    while left:
        count = min(_MOST_IDS, 1 << (left.bit_length() - 1))
        rows = db.execute(_stored_statement(count), [origin, *ids[start:start + count]])
        stored.update(row[0] for row in rows)
        start += count
        left -= count
    return stored


@functools.lru_cache(maxsize=None)
def _stored_statement(count):
    return ("SELECT id FROM messages WHERE origin = ? AND id IN ("
            + ", ".join("?" * count) + ")")
