"""
Frames of the realm port: each a small class that parses and formats
itself (the shape of Synapse's replication commands), tested as pure
parsing.

A message frame is the original one with IRCv3-style tags in front:

    @id=<id>;ts=<timestamp> sendrealm <from> <to> <message>
    @id=<id>;ts=<timestamp> sendgrouprealm <from> <group> <message>
    @id=<id>;ts=<timestamp> joingrouprealm <creator> <group@home> <member>
    @id=<id>;ts=<timestamp> leavegrouprealm <user> <group>
    @id=<id>;ts=<timestamp> membergrouprealm <by> <group@home> <change> <member> ...

C{<from>} is bare for a user of the sending realm; a group's home realm
forwarding a member's post names the member as C{user@realm}.  C{<to>} is
bare for a user of the receiving realm; C{<group>} is bare for a group of
the receiving realm, C{group@home} for a copy the home realm forwards.  C{joingrouprealm}: a
group's home realm added C{<member>}, a user of the receiving realm.
C{leavegrouprealm}: C{<user>} of the sending realm left C{<group>} of the
receiving realm.  C{membergrouprealm}: a group's home realm tells a realm
with members (or one that just lost its last) that C{<member>} (always
C{user@realm}) was C{added}, C{removed} or C{left} (C{<by>}: the owner, or
the member who left), or that the members listed are C{known} members
(the roster a realm gets with its first member, no event).

The receiver answers every message frame with one JSON line:
C{{"status": "OK", "id": ...}} once stored (or already there), or
C{{"status": "ERROR", "id": ..., "code": ..., "message": ...}}.
"""

import json
import re

from typing import NamedTuple

import attrs

from multirealm.model import GROUP, JOINED, LEFT, MEMBER, PRIVATE, FileRef, Message
from multirealm.names import Address, is_valid_name, parse_number

_new_tuple = tuple.__new__  # a named tuple without its Python __new__

_TAGS = re.compile(r"@id=([0-9A-Za-z_-]{1,64});ts=([0-9T:.+\-Z]{1,40}) ")
_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
# An error code, as docs/protocol.md spells them: a peer's code that is
# not one is kept as "internal" (it is shown to the message's sender).
_CODE = re.compile(r"[a-z][a-z_]{0,39}")
_ID_TAG = re.compile(r"@id=([0-9A-Za-z_-]{1,64})[; ]")
# The common answer as json.dumps writes it (Ack.to_line), with what a
# line keeps of its end (the CR of a CRLF).
_OK_LINE = re.compile(rb'\{"status": "OK", "id": "([0-9A-Za-z_-]{1,64})"\}[ \t\r]*')


def frame_limit(max_line_bytes):
    """
    The longest frame line on a realm link: the longest request line a
    client may send, plus room for the tags and the qualified names a frame
    adds, so that every message a realm accepts can cross.
    """
    return max_line_bytes + FRAME_OVERHEAD


# More than tags (about 110 bytes), a verb, two qualified names (66 each)
# and a file size take.
FRAME_OVERHEAD = 512


# Refusals that say "not now", not "never": the message is sent again.
TRANSIENT = frozenset({"unavailable", "storage_full", "rate_limited"})


class FrameError(ValueError):
    """A line that is no frame of this protocol."""


def _addressed(message, sender_realm, receiver_realm):
    """The fields every message frame starts with: id, timestamp, kind, from, to."""
    return (
        message.id, message.timestamp, message.kind,
        message.sender.relative_to(sender_realm),
        message.recipient.relative_to(receiver_realm),
    )


def _message_line(frame_id, timestamp, kind, sender, recipient, text):
    """The line of a L{MessageFrame}, from its fields."""
    line = f"@id={frame_id};ts={timestamp} {MessageFrame.NAMES[kind]} {sender} {recipient}"
    return line if kind == LEFT else f"{line} {text}"  # leaving says who and what


def _tagged(line, words=0):
    """
    (id, timestamp, words) of a tagged frame: its words split on spaces,
    into at most C{words} (the last one the rest of the line; 0: all).
    """
    tags = _TAGS.match(line)
    if tags is None:
        raise FrameError("a frame starts with @id=<id>;ts=<timestamp>")
    return tags.group(1), tags.group(2), line[tags.end():].split(" ", words - 1)


class MessageFrame(NamedTuple):
    """
    C{sendrealm} / C{sendgrouprealm}: one message for the receiving realm.
    A named tuple made with C{tuple.__new__}, as L{Message} is: one is
    made for every message crossing a link, at each end (issue 18).
    """

    VERBS = {
        "sendrealm": PRIVATE,
        "sendgrouprealm": GROUP,
        "joingrouprealm": JOINED,
        "leavegrouprealm": LEFT,
        "membergrouprealm": MEMBER,
    }
    NAMES = {kind: verb for verb, kind in VERBS.items()}

    id: str
    timestamp: str
    kind: str
    sender: str  # as on the wire: bare, or user@realm
    recipient: str
    text: str

    @classmethod
    def from_line(cls, line):
        frame_id, timestamp, words = _tagged(line, 4)
        kind = cls.VERBS.get(words[0])
        if kind == LEFT and len(words) == 3:
            words.append("")  # leaving says no more than who and what
        elif kind is None or kind == LEFT or len(words) != 4 or not words[3]:
            raise FrameError(
                "expected: sendrealm|sendgrouprealm|joingrouprealm|membergrouprealm <from> <to>"
                " <text>"
                " or leavegrouprealm <user> <group>"
            )
        verb, sender, recipient, text = words
        return _new_tuple(cls, (frame_id, timestamp, kind, sender, recipient, text))

    def to_line(self):
        return _message_line(*self)

    @classmethod
    def of(cls, message, sender_realm, receiver_realm):
        """The frame that carries L{Message} C{message} from one realm to another."""
        return _new_tuple(cls, (*_addressed(message, sender_realm, receiver_realm), message.text))

    @staticmethod
    def line_of(message, sender_realm, receiver_realm):
        """C{of(...).to_line()}, with no frame made: one a message crossing a link."""
        return _message_line(*_addressed(message, sender_realm, receiver_realm), message.text)

    def message(self, sender_realm, receiver_realm, parse=Address.parse):
        """
        The L{Message}, its addresses qualified: a bare sender is of the
        sending realm, a bare recipient of the receiving one (read by
        C{parse}: L{Address.parse}, or a link's L{ParsedAddresses}).
        L{multirealm.errors.InvalidName} for a malformed name.
        """
        sender = parse(self.sender, sender_realm)
        recipient = parse(
            self.recipient, receiver_realm, "username" if self.kind == PRIVATE else "group name"
        )
        return _new_tuple(
            Message, (self.id, self.kind, sender, recipient, self.text, self.timestamp, None, None)
        )


@attrs.frozen
class FileFrame:
    """
    C{sendfilerealm} / C{sendgroupfilerealm}: a file for the receiving
    realm.  The line is followed by exactly C{size} bytes of the file, raw;
    the next frame starts after them.

        @id=<id>;ts=<timestamp> sendfilerealm <from> <to> <size> <filename>
        @id=<id>;ts=<timestamp> sendgroupfilerealm <from> <group> <size> <filename>

    The file name comes last: it may hold spaces.
    """

    VERBS = {"sendfilerealm": PRIVATE, "sendgroupfilerealm": GROUP}
    NAMES = {kind: verb for verb, kind in VERBS.items()}

    id: str
    timestamp: str
    kind: str
    sender: str
    recipient: str
    size: int
    name: str

    @classmethod
    def from_line(cls, line):
        frame_id, timestamp, words = _tagged(line, 5)
        if len(words) != 5 or words[0] not in cls.VERBS or not words[4]:
            raise FrameError("expected: sendfilerealm|sendgroupfilerealm <from> <to> <size> <name>")
        verb, sender, recipient, size, name = words
        size = parse_number(size)
        if size is None:
            raise FrameError("a file size is a number of bytes in ASCII digits")
        return cls(frame_id, timestamp, cls.VERBS[verb], sender, recipient, size, name)

    def to_line(self):
        return (
            f"@id={self.id};ts={self.timestamp} {self.NAMES[self.kind]}"
            f" {self.sender} {self.recipient} {self.size} {self.name}"
        )

    @classmethod
    def of(cls, message, sender_realm, receiver_realm):
        """The frame that carries file message C{message} (its L{FileRef} in C{file})."""
        file = message.file
        return cls(*_addressed(message, sender_realm, receiver_realm), file.size, file.name)

    def message(self, sender_realm, receiver_realm, file_id):
        """The L{Message}, its file stored here as C{file_id}."""
        text = MessageFrame(
            self.id, self.timestamp, self.kind, self.sender, self.recipient, ""
        ).message(sender_realm, receiver_realm)
        return text._replace(file=FileRef(self.name, file_id, self.size))


@attrs.frozen
class UsersFrame:
    """
    C{announceusers}: users of the sending realm, for C{listusers <realm>}
    at the receiver.  A realm announces its users in the order they
    registered, a frame at a time; the id names how far this frame goes.

        @id=users-<cursor>;ts=<timestamp> announceusers <name> <name> ...
    """

    VERB = "announceusers"

    id: str
    timestamp: str
    names: tuple

    @classmethod
    def from_line(cls, line):
        frame_id, timestamp, words = _tagged(line)
        if len(words) < 2 or words[0] != cls.VERB:
            raise FrameError("expected: announceusers <name> ...")
        return cls(frame_id, timestamp, tuple(words[1:]))

    def to_line(self):
        return f"@id={self.id};ts={self.timestamp} {self.VERB} {' '.join(self.names)}"


@attrs.frozen
class PresenceFrame:
    """
    C{presencerealm}: which users of the sending realm are online, not
    durable and not answered.  C{update} carries changes; a snapshot (the
    users online, sent when a link authenticates) is C{sync} frames, the
    last one C{synced}.  An entry is C{+<name>} (online) or C{-<name>}
    (offline), then C{=<last_seen>} for an offline one when known.

        @id=presence-<n>;ts=<timestamp> presencerealm update|sync|synced <entry> ...
    """

    VERB = "presencerealm"
    MODES = ("update", "sync", "synced")

    id: str
    timestamp: str
    mode: str
    entries: tuple  # (name, online, last_seen or None)

    @classmethod
    def from_line(cls, line):
        frame_id, timestamp, words = _tagged(line)
        if len(words) < 2 or words[0] != cls.VERB or words[1] not in cls.MODES:
            raise FrameError("expected: presencerealm update|sync|synced <entry> ...")
        return cls(frame_id, timestamp, words[1], tuple(_presence_entry(w) for w in words[2:]))

    def to_line(self):
        return " ".join([f"@id={self.id};ts={self.timestamp} {self.VERB} {self.mode}",
                         *(_presence_word(*entry) for entry in self.entries)])

    @classmethod
    def lines(cls, entries, snapshot, first_id, timestamp, max_bytes):
        """
        The frame lines that carry C{entries}, each at most about
        C{max_bytes}; a snapshot is at least one frame, its last C{synced}.
        Their ids are C{presence-<n>} from C{first_id} on.
        """
        chunks, words, size = [], [], 0
        for entry in entries:
            word = _presence_word(*entry)
            if words and size + len(word) + 1 > max_bytes - 128:
                chunks.append(words)
                words, size = [], 0
            words.append(word)
            size += len(word) + 1
        if words or (snapshot and not chunks):
            chunks.append(words)
        lines = []
        for n, chunk in enumerate(chunks):
            mode = "update" if not snapshot else "synced" if n == len(chunks) - 1 else "sync"
            lines.append(" ".join(
                [f"@id={PRESENCE_ID}{first_id + n};ts={timestamp} {cls.VERB} {mode}", *chunk]
            ))
        return lines


# The id of a presencerealm frame: this prefix, then a number.
PRESENCE_ID = "presence-"
_SEEN = re.compile(r"[0-9T:.+\-Z]{1,40}")


def _presence_word(name, online, last_seen):
    if online:
        return f"+{name}"
    return f"-{name}" if last_seen is None else f"-{name}={last_seen}"


def _presence_entry(word):
    sign, name, last_seen = word[:1], *word[1:].partition("=")[::2]
    if sign not in "+-" or not sign or not is_valid_name(name) or (
        last_seen and (sign == "+" or not _SEEN.fullmatch(last_seen))
    ):
        raise FrameError(f"a presence entry is +<name>, -<name> or -<name>=<last seen>: {word!r}")
    return name, sign == "+", last_seen or None


def line_id(line):
    """The id a frame line gives, if it can be read, else "": what a bad frame is answered by."""
    tag = _ID_TAG.match(line)
    return tag.group(1) if tag else ""


def _verb(line):
    """The word after the tags (read or not)."""
    return line.partition(" ")[2].partition(" ")[0]


def body_follows(line):
    """
    True if C{line} is the line of a file frame, good or bad: bytes that
    are no frame follow it.
    """
    return _verb(line) in FileFrame.VERBS


def parse_frame(line):
    """
    The L{MessageFrame}, L{FileFrame}, L{UsersFrame} or L{PresenceFrame} of
    C{line}; L{FrameError} if none.
    """
    verb = _verb(line)
    if verb in FileFrame.VERBS:
        return FileFrame.from_line(line)
    if verb == UsersFrame.VERB:
        return UsersFrame.from_line(line)
    if verb == PresenceFrame.VERB:
        return PresenceFrame.from_line(line)
    return MessageFrame.from_line(line)


def json_object(line):
    """The JSON object of C{line}; None if it is anything else (not JSON, nested too deep, a list)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class Ack(NamedTuple):
    """The receiver's answer to one message frame (a named tuple: one a message)."""

    id: str
    code: str | None = None  # None: stored (or already there)
    message: str = ""

    # The common answer, read and written without json: an id is only
    # [0-9A-Za-z_-], so these are the bytes json.dumps gives.
    _OK_HEAD = '{"status": "OK", "id": "'

    @classmethod
    def from_line(cls, line):
        if line.startswith(cls._OK_HEAD) and line.endswith('"}'):
            frame_id = line[len(cls._OK_HEAD):-2]
            if _ID.fullmatch(frame_id):
                return _new_tuple(cls, (frame_id, None, ""))
        reply = json_object(line) or {}
        try:
            if reply.get("status") == "OK":
                return cls(str(reply["id"]))
            if reply.get("status") == "ERROR":
                code = str(reply["code"])
                if not _CODE.fullmatch(code):
                    code = "internal"
                return cls(str(reply["id"]), code, str(reply.get("message", "")))
        except KeyError:
            pass
        raise FrameError("an acknowledgement is a JSON object with status and id")

    @staticmethod
    def ok_id(line):
        """
        The id of C{line} (bytes, as read) if it is the common OK answer,
        else None (read it with L{from_line}): one a message crossing a
        link, read with one pattern, no decoding of the line, no json.
        """
        ok = _OK_LINE.fullmatch(line)
        return None if ok is None else ok.group(1).decode("ascii")

    def to_line(self):
        if self.code is None:
            if _ID.fullmatch(self.id):
                return f'{self._OK_HEAD}{self.id}"}}'
            return json.dumps({"status": "OK", "id": self.id})
        return json.dumps(
            {"status": "ERROR", "id": self.id, "code": self.code, "message": self.message}
        )

