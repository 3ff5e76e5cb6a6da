"""
The body of an upload (C{sendfile}, C{sendgroupfile}): docs/protocol.md,
"Files".

The original client sends the header line, an empty line, the file as
base64 on one line or several, and an empty line.  L{Base64Body} decodes
that body as it arrives, a chunk at a time: 4-character groups split
across reads, line breaks anywhere between groups, the end found across
reads too.  It never holds more than one chunk.
"""

import binascii
import re

_END = re.compile(rb"\n\r*\n")  # a line break, then an empty line
_START_OF_CHUNK_END = re.compile(rb"\r*\n")  # the empty line, when a chunk starts a line
_BLANK = re.compile(rb"\r*\n?")  # the empty line after the header


class BadEncoding(Exception):
    """The body is not base64."""


class Base64Body:
    """
    Feed it the raw bytes after the header line with L{feed}; it returns
    the decoded bytes of each piece, and sets C{done} (with C{rest}, the
    bytes after the body) once the empty line that ends the body came.
    A body that is not base64 raises L{BadEncoding} from L{feed}; the
    caller then goes on with L{skip}, which only looks for the end.
    """

    def __init__(self):
        self.done = False
        self.rest = b""
        self.size = 0  # decoded bytes so far
        self._blank = True  # the empty line after the header is still to come
        self._line_start = False  # the last byte seen ended a line
        self._carry = b""  # base64 characters short of a group of four
        self._padded = False  # a group ended with '=': nothing may follow

    def _take(self, data):
        """The body part of C{data} (up to the end, if it is in there)."""
        if self._blank:
            match = _BLANK.match(data)
            if match.end() == len(data) and not data.endswith(b"\n"):
                return b""  # only carriage returns so far
            self._blank = False
            data = data[match.end() :]
            self._line_start = match.group().endswith(b"\n")
        match = _START_OF_CHUNK_END.match(data) if self._line_start else None
        if match is None:
            match = _END.search(data)
            end = None if match is None else match.start() + 1
        else:
            end = 0
        if match is not None:
            self.done, self.rest = True, data[match.end() :]
            return data[:end]
        significant = data.rstrip(b"\r")  # a carriage return alone changes nothing
        if significant:
            self._line_start = significant.endswith(b"\n")
        return data

    def feed(self, data):
        body = self._take(data).translate(None, b"\r\n")
        group = self._carry + body
        whole = len(group) - len(group) % 4
        self._carry = group[whole:]
        if self.done and self._carry:
            raise BadEncoding("the base64 body does not end on a group of four")
        if not whole:
            return b""
        if self._padded:
            raise BadEncoding("base64 goes on after its padding")
        try:
            decoded = binascii.a2b_base64(group[:whole], strict_mode=True)
        except binascii.Error as e:
            raise BadEncoding(f"the body is not base64: {e}") from None
        self._padded = group[whole - 1 : whole] == b"="
        self.size += len(decoded)
        return decoded

    def skip(self, data):
        """Consume C{data} without decoding it, up to the end of the body."""
        self._take(data)
