"""
Value classes shared by the core, the store and the protocols.
"""

import os
import time
from datetime import datetime, timezone

import attrs

from multirealm.names import Address

PRIVATE = "private"
GROUP = "group"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(now=time.time):
    """
    A network-unique message id: a ULID (48 bits of milliseconds, then 80
    random bits, in Crockford base32), so ids sort roughly by creation time
    and two realms never mint the same one.
    """
    value = (int(now() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def format_timestamp(seconds):
    """ISO 8601 in UTC with an explicit offset, millisecond precision."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


@attrs.frozen
class Message:
    """
    One accepted message.  C{kind} is L{PRIVATE} (C{recipient} is a user) or
    L{GROUP} (C{recipient} is a group).  Addresses are always qualified with
    their realm; L{to_wire} renders them relative to the reading realm.
    """

    id: str
    kind: str
    sender: Address
    recipient: Address
    text: str
    timestamp: str

    def to_wire(self, realm):
        return {
            "id": self.id,
            "msg_from": self.sender.relative_to(realm),
            "msg_to": self.recipient.relative_to(realm),
            "msg": self.text,
            "timestamp": self.timestamp,
        }


@attrs.frozen
class History:
    """A page of a conversation, oldest first; C{more} if the page was cut."""

    messages: tuple
    more: bool
