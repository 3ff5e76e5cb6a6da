"""
What a peer realm may hand over (L{check}): every value checked before it
reaches the store, and a link speaks only for its own realm's users and
groups.
"""

import functools
import re
from datetime import datetime, timezone

from multirealm import errors
from multirealm.model import (
    GROUP, JOINED, KNOWN, LEFT, LEFT_GROUP, MEMBER, MEMBER_CHANGES, PRIVATE,
)
from multirealm.names import Address, check_name

_MESSAGE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


# Messages of one millisecond share a timestamp (a run of a link's read
# has a few): the answers for the last ones are kept.
@functools.lru_cache(maxsize=256)
def _is_valid_timestamp(text):
    """
    An ISO 8601 time with its offset, within years any reader can show
    (1970-9998: far dates overflow when moved to another time zone).
    """
    try:
        stamp = datetime.fromisoformat(text)
        if stamp.tzinfo is None or not 1970 <= stamp.year <= 9998:
            return False
        stamp.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return False
    return True


def check_values(message, max_text_bytes):
    """
    A message from a peer is input like any other: every value is checked
    before it reaches the store (L{errors.BadRequest}, never C{internal}).
    """
    for address in (message.sender, message.recipient):
        if not (isinstance(address, Address) and isinstance(address.name, str)
                and isinstance(address.realm, str)):
            raise errors.BadRequest("a message names its sender and recipient as name@realm")
        check_name(address.name)
        check_name(address.realm, "realm name")
    if not (isinstance(message.id, str) and _MESSAGE_ID.fullmatch(message.id)):
        raise errors.BadRequest("a message id is 1-64 characters of 0-9 A-Z a-z _ -")
    if not (isinstance(message.timestamp, str) and len(message.timestamp) <= 40):
        raise errors.BadRequest("a message timestamp is an ISO 8601 string")
    if not _is_valid_timestamp(message.timestamp):
        raise errors.BadRequest(
            "a message timestamp is an ISO 8601 time with its offset, years 1970-9998"
        )
    if not isinstance(message.text, str) or len(message.text.encode("utf-8")) > max_text_bytes:
        raise errors.BadRequest(f"a message text is a string of at most {max_text_bytes} bytes")
    file = message.file
    if file is not None and not (
        isinstance(file.name, str) and 0 < len(file.name.encode("utf-8")) <= 255
        and isinstance(file.id, str) and _MESSAGE_ID.fullmatch(file.id)
        and isinstance(file.size, int) and 0 <= file.size < 2**63
    ):
        raise errors.BadRequest("a file is a name of 1-255 bytes, an id and a 64-bit size")


def check(realm, peers, max_text_bytes, origin, message):
    """
    May peer C{origin} hand realm C{realm} (linked to C{peers}) this
    message?  A link speaks only for its own realm: the sender must be of
    C{origin}, except in a message to a group of C{origin}, which the
    group's home forwards on behalf of members of any realm.
    """
    if origin not in peers:
        raise errors.NoSuchRealm(f"realm {origin!r} is not linked to this realm")
    check_values(message, max_text_bytes)
    if message.kind == PRIVATE:
        if message.sender.realm != origin:
            raise errors.Forbidden(
                f"realm {origin} cannot send for {message.sender}: not one of its users"
            )
        if message.recipient.realm != realm:
            raise errors.BadRequest(f"{message.recipient} is not a user of realm {realm}")
    elif message.kind == GROUP:
        group = message.recipient
        if group.realm == realm:
            if message.sender.realm != origin:
                raise errors.Forbidden(
                    f"realm {origin} cannot send for {message.sender}: not one of its users"
                )
        elif group.realm != origin:
            raise errors.Forbidden(
                f"realm {origin} cannot forward to {group}: the group lives on {group.realm}"
            )
        elif message.sender.realm == realm:
            # A post by a user of this realm is stored here when sent,
            # never forwarded back: this one would be forged (or an echo).
            raise errors.Forbidden(
                f"realm {origin} cannot forward a post by {message.sender}, a user of"
                f" realm {realm}"
            )
    elif message.kind == JOINED:
        # The home of a group tells which of this realm's users it added.
        if message.recipient.realm != origin or message.sender.realm != origin:
            raise errors.Forbidden(f"realm {origin} speaks only for its own groups")
        check_name(message.text, "username")
    elif message.kind == LEFT:
        if message.recipient.realm != realm:
            raise errors.BadRequest(f"{message.recipient} is not a group of realm {realm}")
        if message.sender.realm != origin:
            raise errors.Forbidden(
                f"realm {origin} cannot send for {message.sender}: not one of its users"
            )
    elif message.kind == MEMBER:
        check_member_notice(origin, message)
    else:
        raise errors.BadRequest(f"unknown kind of message {message.kind!r}")


def check_member_notice(origin, message):
    """
    A MEMBER change comes from its group's home, by the group's owner (a
    user there) or, for C{left}, by the member who left; it names
    C{user@realm} members, one unless it lists C{known} ones.
    """
    if message.recipient.realm != origin:
        raise errors.Forbidden(f"realm {origin} speaks only for its own groups")
    change, *members = message.text.split(" ")
    if change not in MEMBER_CHANGES or not members or (change != KNOWN and len(members) != 1):
        raise errors.BadRequest("a membership change is: added|removed|left|known user@realm ...")
    if message.sender.realm != origin and change != LEFT_GROUP:
        raise errors.Forbidden(f"realm {origin} cannot change a group for {message.sender}")
    for member in members:
        name, at, realm = member.partition("@")
        if not at:
            raise errors.InvalidName(f"a member is named user@realm, not {member!r}")
        check_name(name, "username")
        check_name(realm, "realm name")

