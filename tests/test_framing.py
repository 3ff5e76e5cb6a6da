"""
RequestLineReceiver on its own: line ends, long lines, raw mode, pausing.
"""

from twisted.internet.testing import StringTransport
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from multirealm.framing import RequestLineReceiver


class Recorder(RequestLineReceiver):
    """Records events; a line 'raw N' reads N raw bytes, then lines again."""

    MAX_LENGTH = 10

    def __init__(self):
        self.events = []
        self._raw_left = 0

    def lineReceived(self, line):
        self.events.append(("line", line))
        if line.startswith(b"raw "):
            self._raw_left = int(line[4:])
            self.setRawMode()

    def rawDataReceived(self, data):
        taken, rest = data[: self._raw_left], data[self._raw_left :]
        self._raw_left -= len(taken)
        self.events.append(("raw", taken))
        if self._raw_left == 0:
            self.setLineMode(rest)

    def lineTooLong(self):
        self.events.append(("too long", None))


def feed(data, step=None):
    protocol = Recorder()
    protocol.makeConnection(StringTransport())
    step = step or max(1, len(data))
    for i in range(0, len(data), step):
        protocol.dataReceived(data[i : i + step])
    return protocol


def lines(protocol):
    return [e for e in protocol.events if e[0] != "raw"]


class FramingTests(unittest.TestCase):
    def test_crlf_and_lf(self):
        self.assertEqual(
            lines(feed(b"a\r\nb\nc")), [("line", b"a\r"), ("line", b"b")]
        )

    def test_long_line_reported_once_in_its_place(self):
        for step in (1, 4, None):
            protocol = feed(b"ok\n" + b"x" * 25 + b"\nafter\n", step)
            self.assertEqual(
                lines(protocol), [("line", b"ok"), ("too long", None), ("line", b"after")]
            )

    def test_limit_counts_a_trailing_cr_free(self):
        protocol = feed(b"0123456789\r\n01234567890\n")
        self.assertEqual(lines(protocol), [("line", b"0123456789\r"), ("too long", None)])

    def test_raw_mode_and_back(self):
        for step in (1, 3, None):
            protocol = feed(b"raw 5\nABCDEnext\n", step)
            raw = b"".join(e[1] for e in protocol.events if e[0] == "raw")
            self.assertEqual(raw, b"ABCDE")
            self.assertEqual(lines(protocol), [("line", b"raw 5"), ("line", b"next")])

    def test_paused_receiver_keeps_lines_until_resumed(self):
        protocol = feed(b"")
        protocol.pauseProducing()
        protocol.dataReceived(b"one\ntwo\n")
        self.assertEqual(protocol.events, [])
        protocol.resumeProducing()
        self.assertEqual(lines(protocol), [("line", b"one"), ("line", b"two")])

    def test_many_lines_in_one_chunk(self):
        protocol = feed(b"l\n" * 10000)
        self.assertEqual(len(protocol.events), 10000)


class ChunkedRecorder(Recorder):
    """A Recorder whose every chunk takes the general path (no whole-line shortcut)."""

    def dataReceived(self, data):
        self._receive(data)


# Pieces of a stream: short and long lines, CRLF, empty lines, raw sections.
_PIECES = st.sampled_from(
    [b"a\n", b"ok\r\n", b"\n", b"\r\n", b"0123456789\n", b"0123456789\r\n",
     b"01234567890\n", b"x" * 25 + b"\n", b"raw 3\nABC", b"raw 0\n", b"half", b"y" * 12]
)


class WholeLineTests(unittest.TestCase):
    @settings(max_examples=400, deadline=None)
    @given(pieces=st.lists(_PIECES, max_size=12), cuts=st.lists(st.integers(0, 200), max_size=12))
    def test_a_whole_line_at_once_is_handled_as_any_chunk(self, pieces, cuts):
        # The shortcut for a chunk that is exactly one line must give the
        # same events as the general framing, however the bytes are cut.
        data = b"".join(pieces)
        chunks, start = [], 0
        for cut in sorted(set(c for c in cuts if c < len(data))) + [len(data)]:
            chunks.append(data[start:cut])
            start = cut
        chunks += [piece for piece in pieces]  # and each piece as a chunk of its own
        fast, slow = Recorder(), ChunkedRecorder()
        for protocol in (fast, slow):
            protocol.makeConnection(StringTransport())
            for chunk in chunks:
                protocol.dataReceived(chunk)
        self.assertEqual(fast.events, slow.events)

    def test_a_line_received_while_a_whole_line_is_handled_follows_it(self):
        class Reentering(Recorder):
            def lineReceived(self, line):
                Recorder.lineReceived(self, line)
                if line == b"first":
                    self.dataReceived(b"second\n")  # re-entered, as a resume does

        protocol = Reentering()
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"first\n")
        self.assertEqual(lines(protocol), [("line", b"first"), ("line", b"second")])

    def test_a_whole_line_received_while_paused_waits_for_resume(self):
        # TLS hands on decrypted bytes while the transport is paused.
        protocol = Recorder()
        protocol.makeConnection(StringTransport())
        protocol.pauseProducing()
        protocol.dataReceived(b"late\n")
        self.assertEqual(lines(protocol), [])
        protocol.resumeProducing()
        self.assertEqual(lines(protocol), [("line", b"late")])
