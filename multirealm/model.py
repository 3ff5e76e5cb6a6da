"""
Value classes shared by the core, the store and the protocols.
"""

import os
from datetime import datetime, timezone
from typing import NamedTuple

import attrs

from multirealm.names import Address

PRIVATE = "private"
GROUP = "group"
# A message's delivery to another realm failed for good: an entry in its
# sender's history, from the realm that refused it.
FAILURE = "failure"
# Group membership across realms (federation): never shown in a history.
# JOINED: a group's home realm tells a member's realm that one of its users
# was added (sender: the group's creator; text: the member's name; one
# message per member).  LEFT: a member's realm tells the home realm that one
# of its users left (sender: that user; text empty).
JOINED = "joined"
LEFT = "left"
# MEMBER: a group's home realm tells every realm with members (and one
# that just lost its last) that membership changed; never shown in a
# history.  Sender: the owner, or for "left" the member who left; text:
# "<change> <member>" (added, removed, left: a member event), or "known
# <member> <member> ..." (the members a realm learns without an event: the
# roster when it gets its first member).  Members are always user@realm.
MEMBER = "member"
ADDED, REMOVED, LEFT_GROUP, KNOWN = "added", "removed", "left", "known"
MEMBER_CHANGES = (ADDED, REMOVED, LEFT_GROUP, KNOWN)


def rereads_outbox(message):
    """
    Whether a link reads its outbox again from the start once C{message}
    is queued: a L{KNOWN} roster goes to a realm with its first member of
    a group, after the group's history, which is queued for it at the
    messages' own (older) places.
    """
    return message.kind == MEMBER and message.text.startswith(KNOWN)


class MessageIds:
    """
    Mints message ids: 32 hex digits, the first 12 the epoch milliseconds,
    the other 20 random (80 bits): the layout of a ULID, written in hex
    because Python formats hex in C.  Honest realms do not mint the same id
    (80 random bits), but nothing relies on it: a peer may hand over any
    id, so a realm keys what it stores by (origin realm, id).  Like a
    monotonic ULID, the ids one realm mints sort in the order they were
    minted: within one millisecond (or if the clock steps back) an id is
    the one before plus one, and past the last random part, the next
    millisecond's.

    Randomness is read from C{os.urandom} 4 KiB at a time: one system call
    per 409 ids.  A call per id would release the GIL each time, and on a
    busy realm taking it back from the database thread costs far more
    than the call itself.
    """

    _POOL_BYTES = 4090  # 409 ids of 10 bytes

    def __init__(self):
        self._pool = b""
        self._used = 0
        self._last_ms = -1  # the milliseconds of the last id
        self._prefix = ""  # and their 12 hex digits, formatted once a millisecond
        self._last_random = 0  # the random part of the last id

    def new(self, milliseconds):
        # %-formatting: a third of what an f-string with widths costs here.
        random = self._last_random
        if milliseconds <= self._last_ms:
            if random < 2**80 - 1:
                self._last_random = random = random + 1
                return self._prefix + "%020x" % random
            # The random part is spent: the next millisecond's ids sort after.
            milliseconds = self._last_ms + 1
        if self._used >= len(self._pool):
            self._pool, self._used = os.urandom(self._POOL_BYTES), 0
        random = int.from_bytes(self._pool[self._used : self._used + 10], "big")
        self._used += 10
        self._last_ms = milliseconds
        self._prefix = "%012x" % milliseconds
        self._last_random = random
        return self._prefix + "%020x" % random


def format_timestamp(seconds):
    """ISO 8601 in UTC with an explicit offset, millisecond precision."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


@attrs.frozen
class FileRef:
    """
    A file carried by a message: C{name} is the sender's label (never a
    path), C{id} names the stored bytes, C{size} is in bytes (64-bit).
    """

    name: str
    id: str
    size: int


@attrs.frozen
class Failed:
    """What a L{FAILURE} entry reports: the message C{id} and the peer's C{code}."""

    id: str
    code: str


class Message(NamedTuple):
    """
    One accepted message.  C{kind} is L{PRIVATE} (C{recipient} is a user) or
    L{GROUP} (C{recipient} is a group).  Addresses are always qualified with
    their realm; L{to_wire} renders them relative to the reading realm.  A
    file message has a L{FileRef} in C{file} and an empty C{text}.  A
    L{FAILURE} has a L{Failed} in C{failed}; its sender is the refusing
    realm itself (C{Address("", realm)}, shown C{@realm}).

    A named tuple, as L{Delivery} is: one is made for every message sent
    or read, and made with C{tuple.__new__} (L{new_message}) it costs a
    fifth of a frozen attrs class's C{__init__} (issue 18).  A copy with
    other fields: C{message._replace(text=...)}.
    """

    id: str
    kind: str
    sender: Address
    recipient: Address
    text: str
    timestamp: str
    file: FileRef | None = None
    failed: Failed | None = None

    def to_wire(self, realm):
        if self.failed is not None:
            return {
                "id": self.id,
                "msg_from": self.sender.relative_to(realm),
                "msg_to": self.recipient.relative_to(realm),
                "msg": self.text,
                "failed": {"id": self.failed.id, "code": self.failed.code},
                "timestamp": self.timestamp,
            }
        if self.file is None:
            return {
                "id": self.id,
                "msg_from": self.sender.relative_to(realm),
                "msg_to": self.recipient.relative_to(realm),
                "msg": self.text,
                "timestamp": self.timestamp,
            }
        return {
            "id": self.id,
            "msg_from": self.sender.relative_to(realm),
            "msg_to": self.recipient.relative_to(realm),
            "file": self.file.name,
            "file_id": self.file.id,
            "size": self.file.size,
            "timestamp": self.timestamp,
        }


class Delivery(NamedTuple):
    """
    What storing one message did, reported by the store once committed and
    announced by the core's notifier (L{multirealm.core.notifier}).

    A named tuple rather than an attrs class: one is made for every
    message on the database thread, and a tuple is the cheapest immutable
    value Python makes.

    @ivar message: the L{Message} as stored.
    @ivar origin: the realm that minted or handed over the message: this
        realm for a message sent here, the peer for one received.
    @ivar local_users: frozenset of the names of this realm's users whose
        history received it: the local sender and recipient of a private
        message, every local member of a group of this realm.
    @ivar queued_for: frozenset of the peer realms it was queued for, in
        the same transaction.
    @ivar duplicate: True if (origin, id) was stored before: nothing was
        written and nothing is announced.
    @ivar seq: the message's place in this realm's arrival order (its
        outbox entries are keyed by it); 0 for a duplicate.
    """

    message: Message
    origin: str
    local_users: frozenset = frozenset()
    queued_for: frozenset = frozenset()
    duplicate: bool = False
    seq: int = 0


class Sent(tuple):
    """
    What storing a run of private messages did (L{IStore.add_private_messages},
    L{IStore.receive_private_messages}): for each message, in order, its
    L{Delivery}, the L{errors.ChatError} that refused it, or the Failure of
    a message that failed alone (a bug, a text the engine refused, a full
    disk).  The store reports each Delivery that is not C{duplicate}.
    C{failed}: some message failed alone (only the store sets it).
    """

    failed = False


class Deliveries(tuple):
    """
    The L{Delivery} of each message one store operation added, when it
    added several (a group created with members on other realms): the
    store reports each.
    """


@attrs.frozen
class History:
    """A page of a conversation, oldest first; C{more} if the page was cut."""

    messages: tuple
    more: bool


def user_mailbox(address):
    """The mailbox of a user's private history, named by the user's L{Address}."""
    return f"user:{address}"


def group_mailbox(address):
    """The mailbox of a group's history, named by the group's L{Address}."""
    return f"group:{address}"
