"""
Frames of the realm port: each a small class that parses and formats
itself (the shape of Synapse's replication commands), tested as pure
parsing.

A message frame is the original one with IRCv3-style tags in front:

    @id=<id>;ts=<timestamp> sendrealm <from> <to> <message>
    @id=<id>;ts=<timestamp> sendgrouprealm <from> <group> <message>

C{<from>} is bare for a user of the sending realm; a group's home realm
forwarding a member's post names the member as C{user@realm}.  C{<to>} is
bare for a user of the receiving realm; C{<group>} is bare for a group of
the receiving realm, C{group@home} for a copy the home realm forwards.

The receiver answers every message frame with one JSON line:
C{{"status": "OK", "id": ...}} once stored (or already there), or
C{{"status": "ERROR", "id": ..., "code": ..., "message": ...}}.
"""

import json
import re

import attrs

from multirealm.model import GROUP, PRIVATE, Message
from multirealm.names import Address

_TAGS = re.compile(r"@id=([0-9A-Za-z_-]{1,64});ts=([0-9T:.+\-Z]{1,40}) ")


class FrameError(ValueError):
    """A line that is no frame of this protocol."""


@attrs.frozen
class MessageFrame:
    """C{sendrealm} / C{sendgrouprealm}: one message for the receiving realm."""

    VERBS = {"sendrealm": PRIVATE, "sendgrouprealm": GROUP}

    id: str
    timestamp: str
    kind: str
    sender: str  # as on the wire: bare, or user@realm
    recipient: str
    text: str

    @classmethod
    def from_line(cls, line):
        tags = _TAGS.match(line)
        if tags is None:
            raise FrameError("a message frame starts with @id=<id>;ts=<timestamp>")
        words = line[tags.end():].split(" ", 3)
        if len(words) != 4 or words[0] not in cls.VERBS or not words[3]:
            raise FrameError("expected: sendrealm|sendgrouprealm <from> <to> <message>")
        verb, sender, recipient, text = words
        return cls(tags.group(1), tags.group(2), cls.VERBS[verb], sender, recipient, text)

    def to_line(self):
        verb = "sendrealm" if self.kind == PRIVATE else "sendgrouprealm"
        return f"@id={self.id};ts={self.timestamp} {verb} {self.sender} {self.recipient} {self.text}"

    @classmethod
    def of(cls, message, sender_realm, receiver_realm):
        """The frame that carries L{Message} C{message} from one realm to another."""
        return cls(
            message.id, message.timestamp, message.kind,
            message.sender.relative_to(sender_realm),
            message.recipient.relative_to(receiver_realm),
            message.text,
        )

    def message(self, sender_realm, receiver_realm):
        """
        The L{Message}, its addresses qualified: a bare sender is of the
        sending realm, a bare recipient of the receiving one.
        L{multirealm.errors.InvalidName} for a malformed name.
        """
        sender = Address.parse(self.sender, sender_realm)
        recipient = Address.parse(
            self.recipient, receiver_realm, "group name" if self.kind == GROUP else "username"
        )
        return Message(self.id, self.kind, sender, recipient, self.text, self.timestamp)


@attrs.frozen
class Ack:
    """The receiver's answer to one message frame."""

    id: str
    code: str | None = None  # None: stored (or already there)
    message: str = ""

    @classmethod
    def from_line(cls, line):
        try:
            reply = json.loads(line)
            if reply.get("status") == "OK":
                return cls(str(reply["id"]))
            if reply.get("status") == "ERROR":
                return cls(str(reply["id"]), str(reply["code"]), str(reply.get("message", "")))
        except (ValueError, KeyError, AttributeError):
            pass
        raise FrameError("an acknowledgement is a JSON object with status and id")

    def to_line(self):
        if self.code is None:
            return json.dumps({"status": "OK", "id": self.id})
        return json.dumps(
            {"status": "ERROR", "id": self.id, "code": self.code, "message": self.message}
        )

