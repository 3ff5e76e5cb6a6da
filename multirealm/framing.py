"""
Line framing for the request/reply protocols (docs/protocol.md, "Framing").

L{RequestLineReceiver} is a L{LineReceiver} whose receiving side is
rewritten for the contract, on a buffer of its own (it does not touch
C{LineReceiver}'s private state):

  - a line ends with C{\\n}; a C{\\r} before it is dropped with the rest of
    the trailing whitespace by the subclass;
  - a line over C{MAX_LENGTH} is reported once through L{lineTooLong} and
    skipped up to its end, and the connection goes on with the next line
    (the stock C{lineLengthExceeded} drops the connection and discards
    every pipelined line after the long one);
  - lines are cut from the buffer by offset, so a chunk holding thousands
    of pipelined lines costs linear time (the stock implementation copies
    the rest of the buffer for every line).

C{LineReceiver}'s public interface keeps its meaning: C{paused} with
C{pauseProducing}/C{resumeProducing}, C{line_mode} with C{setRawMode},
C{setLineMode} and C{rawDataReceived}, C{clearLineBuffer}.
"""

from twisted.protocols.basic import LineReceiver


class RequestLineReceiver(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    _unread = b""  # bytes received and not yet framed, from _pos on
    _pos = 0
    _framing = False  # inside the loop of _cut_lines (guards re-entry)
    _discarding = False  # inside the tail of a line already reported too long

    def logPrefix(self):
        """Its factory's (which names the realm): Twisted's lines about it name the realm."""
        return self.factory.logPrefix()

    def lineTooLong(self):
        """
        Called once for each line longer than C{MAX_LENGTH}, in its place
        among the other lines.
        """
        raise NotImplementedError

    def dataReceived(self, data):
        if (
            not data or self._unread or self._framing or self._discarding or self.paused
            or not self.line_mode or data.find(b"\n") != len(data) - 1
            or len(data) > self.MAX_LENGTH + 1
        ):
            self._receive(data)
            return
        # One whole line of a fitting length, and nothing before it: what a
        # client that waits for each reply sends.  Handed on unbuffered.
        self._framing = True
        try:
            self.lineReceived(data[:-1])
        finally:
            self._framing = False
        if self._unread and self.transport is not None and not self.transport.disconnecting:
            self._receive(b"")  # bytes that came in while it ran (re-entered)

    def _receive(self, data):
        """L{dataReceived}'s general case: buffer C{data}, then cut what lines it can."""
        self._unread += data
        if self._framing:
            # Re-entered from a callback (resumeProducing, setLineMode with
            # extra bytes): the running loop below sees the new bytes.
            return
        self._framing = True
        try:
            self._cut_lines()
        finally:
            self._framing = False
            self._unread = self._unread[self._pos :]
            self._pos = 0

    def clearLineBuffer(self):
        rest, self._unread, self._pos = self._unread[self._pos :], b"", 0
        return rest

    def _cut_lines(self):
        limit = self.MAX_LENGTH + 1  # room for the \r of a CRLF
        while not self.paused:
            buffer = self._unread
            if not self.line_mode:
                rest = buffer[self._pos :]
                self._unread, self._pos = b"", 0
                if rest:
                    self.rawDataReceived(rest)
                if not self.line_mode and not self._unread:
                    return
                continue
            end = buffer.find(b"\n", self._pos)
            if end == -1:
                if not self._discarding and len(buffer) - self._pos > limit:
                    self._discarding = True
                    self.lineTooLong()
                if self._discarding:
                    self._pos = len(buffer)
                return
            line = buffer[self._pos : end]
            self._pos = end + 1
            if self._discarding:
                self._discarding = False
            elif len(line) > limit or (len(line) == limit and not line.endswith(b"\r")):
                self.lineTooLong()
            else:
                self.lineReceived(line)
            if self.transport is None or self.transport.disconnecting:
                return

    @property
    def more_lines(self):
        """True while handing on a line that another line of the same chunk follows."""
        return self._framing and self._unread.find(b"\n", self._pos) != -1

    @property
    def receiving(self):
        """True while lines received in one chunk are being handed on."""
        return self._framing
