"""
Line framing for the request/reply protocols (PROTOCOL.md §1, Framing).

L{RequestLineReceiver} is a L{LineReceiver} whose C{dataReceived} is
rewritten for the contract:

  - a line ends with C{\\n}; a C{\\r} before it is dropped with the rest of
    the trailing whitespace by the subclass;
  - a line over C{MAX_LENGTH} is reported once through L{lineTooLong} and
    skipped up to its end, and the connection goes on with the next line
    (the stock C{lineLengthExceeded} drops the connection and discards
    every pipelined line after the long one);
  - lines are cut from the buffer by offset, so a chunk holding thousands
    of pipelined lines costs linear time (the stock implementation copies
    the rest of the buffer for every line).

Pausing (C{pauseProducing}/C{resumeProducing}) and raw mode keep the
semantics of L{LineReceiver}.
"""

from twisted.protocols.basic import LineReceiver


class RequestLineReceiver(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    _pos = 0
    _discarding = False  # inside the tail of a line already reported too long

    def lineTooLong(self):
        """
        Called once for each line longer than C{MAX_LENGTH}, in its place
        among the other lines.
        """
        raise NotImplementedError

    def dataReceived(self, data):
        self._buffer += data
        if self._busyReceiving:
            # Re-entered from a callback (resumeProducing, setLineMode with
            # extra bytes): the running loop below sees the new bytes.
            return
        self._busyReceiving = True
        try:
            self._processBuffer()
        finally:
            self._busyReceiving = False
            self._buffer = self._buffer[self._pos :]
            self._pos = 0

    def _processBuffer(self):
        limit = self.MAX_LENGTH + 1  # room for the \r of a CRLF
        while not self.paused:
            buffer = self._buffer
            if not self.line_mode:
                rest = buffer[self._pos :]
                self._buffer, self._pos = b"", 0
                if rest:
                    self.rawDataReceived(rest)
                if not self.line_mode and not self._buffer:
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
