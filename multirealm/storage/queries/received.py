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
    Delivery (C{duplicate} if stored before) or refusal.  One statement
    finds the ones stored before; the others are stored as a run of
    L{messages.add_private_messages} (its refusals, its isolation when the
    run fails).  A second copy of an id in the run is not stored: it gets
    the first copy's answer (a duplicate, or the same refusal).
    """
    known = _stored_ids(db, origin, run)
    gathered = cache.gathered_keys
    fresh, first_of, places = [], {}, []  # places: None (stored before), or (index in fresh, a copy)
    for message in run:
        message_id = message.id
        if message_id in known or (message_id, origin) in gathered:
            places.append(None)
            continue
        first = first_of.get(message_id)
        if first is None:
            first_of[message_id] = len(fresh)
            places.append((len(fresh), False))
            fresh.append(message)
        else:
            places.append((first, True))
    added = messages.add_private_messages(db, cache, realm, origin, fresh) if fresh else ()
    results = []
    for message, place in zip(run, places):
        if place is None:
            results.append(Delivery(message, origin, duplicate=True))
            continue
        result = added[place[0]]
        if place[1] and type(result) is Delivery:
            result = Delivery(message, origin, duplicate=True)
        results.append(result)
    return Sent(results)


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


# Ids looked up in one statement, at most.
_MOST_IDS = 256


def _stored_ids(db, origin, run):
    """
    The set of the ids of C{run}'s messages that C{origin} handed over
    before (written rows): one statement for up to L{_MOST_IDS} ids, its
    list padded to a power of two with the last id (a few statements to
    prepare; and on PostgreSQL one round trip, not one per power).
    """
    ids = [message.id for message in run]
    stored = set()
    for start in range(0, len(ids), _MOST_IDS):
        chunk = ids[start:start + _MOST_IDS]
        count = 1 << (len(chunk) - 1).bit_length()
        chunk += chunk[-1:] * (count - len(chunk))
        stored.update(row[0] for row in db.execute(_stored_statement(count), [origin, *chunk]))
    return stored


@functools.lru_cache(maxsize=None)
def _stored_statement(count):
    return ("SELECT id FROM messages WHERE origin = ? AND id IN ("
            + ", ".join("?" * count) + ")")
