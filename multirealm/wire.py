"""
Replies and events as bytes on the wire (docs/protocol.md, "Replies").

One reply or event is one JSON object on one line followed by an empty
line: its bytes end with C{\\r\\n\\r\\n}.  JSON is written with
C{ensure_ascii}, so a reply is ASCII whatever the text it carries.  This
module is a leaf: the server and a client program share it.
"""

import json
from json.encoder import encode_basestring_ascii as _json_string

from multirealm import errors

REPLY_END = b"\r\n\r\n"


def encode(reply):
    """One reply or event on the wire: a JSON object, then an empty line."""
    return json.dumps(reply).encode("ascii") + REPLY_END


def ok(**fields):
    return {"status": "OK", **fields}


def error_reply(error):
    return {"status": "ERROR", "code": error.code, "message": error.message}


# The reply to every sending command, the hottest reply there is, formatted
# without json.dumps: its two fields are ASCII by construction (a hex id, an
# ISO timestamp), so these are the bytes json.dumps would give.
_SENT = b'{"status": "OK", "message": "Message Sent", "id": "%s", "timestamp": "%s"}' + REPLY_END


def sent(delivery):
    """The OK reply to a sending command, for the L{Delivery} of its message."""
    message = delivery.message
    return _SENT % (message.id.encode("ascii"), message.timestamp.encode("ascii"))


def to_bytes(result):
    """Wire bytes of a reply: a dict, a L{errors.ChatError}, or bytes already encoded."""
    if isinstance(result, bytes):
        return result
    if isinstance(result, errors.ChatError):
        return encode(error_reply(result))
    return encode(result)


# {"status": "OK", "messages": [], "more": false} and the empty line.
HISTORY_REPLY_OVERHEAD = 64
# The keys, quotes and separators of one message object in "messages".
_MESSAGE_OVERHEAD = 110


def message_bytes(message):
    """
    An upper bound of the bytes one message takes in a history reply, as
    C{json.dumps} writes it (escapes and all: a control character takes six
    bytes).  Addresses are counted qualified, the longest they are shown.
    """
    failed = message.failed
    file = message.file if failed is None else None  # as to_wire: a failure shows its text
    shown = message.text if file is None else file.name
    extra = 0 if failed is None else (
        40 + len(_json_string(failed.id)) + len(_json_string(failed.code))  # escapes too
    )
    return (
        extra
        + (_MESSAGE_OVERHEAD if file is None else _MESSAGE_OVERHEAD + 40 + len(file.id))
        + len(message.id)
        + len(message.timestamp)
        + len(_json_string(str(message.sender)))
        + len(_json_string(str(message.recipient)))
        + len(_json_string(shown))
    )
