"""
Replies and events as bytes on the wire (docs/protocol.md, "Replies").

One reply or event is one JSON object on one line followed by an empty
line: its bytes end with C{\\r\\n\\r\\n}.  JSON is written with
C{ensure_ascii}, so a reply is ASCII whatever the text it carries.  This
module is a leaf: the server and a client program share it.
"""

import json

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


def sent(message):
    """The OK reply to a sending command, for the accepted L{Message}."""
    return _SENT % (message.id.encode("ascii"), message.timestamp.encode("ascii"))


def to_bytes(result):
    """Wire bytes of a reply: a dict, a L{errors.ChatError}, or bytes already encoded."""
    if isinstance(result, bytes):
        return result
    if isinstance(result, errors.ChatError):
        return encode(error_reply(result))
    return encode(result)
