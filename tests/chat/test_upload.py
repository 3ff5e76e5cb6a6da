"""
The upload body decoder: any bytes, base64-encoded, split anywhere, with
line breaks anywhere between groups, come back the same.
"""

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from multirealm.chat.upload import Base64Body, BadEncoding


def feed_all(decoder, pieces):
    """Feed pieces until the body ends: (decoder, decoded bytes, bytes after the body)."""
    out = []
    pieces = list(pieces)
    while pieces and not decoder.done:
        out.append(decoder.feed(pieces.pop(0)))
    return decoder, b"".join(out), decoder.rest + b"".join(pieces)


def split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


class Base64BodyTests(unittest.TestCase):
    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=3000), st.lists(st.integers(0, 10**6), max_size=20),
           st.integers(0, 200), st.booleans())
    def test_any_bytes_any_split_any_line_breaks(self, payload, cuts, line, crlf):
        encoded = base64.b64encode(payload)
        if line:  # wrap the body in lines of 4 x line characters
            width = 4 * line
            encoded = (b"\r\n" if crlf else b"\n").join(
                encoded[i : i + width] for i in range(0, len(encoded), width)
            )
        end = b"\r\n" if crlf else b"\n"
        stream = end + encoded + end + end + b"next command\r\n"
        decoder, decoded, after = feed_all(Base64Body(), split(stream, cuts))
        self.assertTrue(decoder.done)
        self.assertEqual(decoded, payload)
        self.assertEqual(decoder.size, len(payload))
        # An empty file's empty base64 line reads as the end; the blank line
        # left over is one the line framing ignores.
        expected = b"next command\r\n"
        self.assertEqual(after if payload else after.lstrip(b"\r\n"), expected)

    def test_the_original_clients_bytes(self):
        # sendfile <sid> <to> <name> \r\n\r\n<base64>\r\n\r\n : after the header line
        decoder = Base64Body()
        self.assertEqual(decoder.feed(b"\r\naGVsbG8gd29ybGQ=\r\n\r\ninbox -\r\n"), b"hello world")
        self.assertTrue(decoder.done)
        self.assertEqual(decoder.rest, b"inbox -\r\n")

    def test_a_piece_of_only_carriage_returns_keeps_the_line_start(self):
        # Found by hypothesis: the closing empty line split as "\r\n" "\r" "\n".
        decoder = Base64Body()
        for piece in (b"\r\nAAAA\r\n", b"\r", b"\nnext\r\n"):
            decoder.feed(piece)
        self.assertEqual((decoder.done, decoder.rest), (True, b"next\r\n"))

    def test_rest_is_what_follows_the_body(self):
        decoder = Base64Body()
        decoder.feed(b"\r\nQUJD\r\n")
        self.assertFalse(decoder.done)
        decoder.feed(b"\r\nhelp\r\n")
        self.assertEqual((decoder.done, decoder.rest), (True, b"help\r\n"))

    def test_an_empty_file(self):
        decoder = Base64Body()
        self.assertEqual(decoder.feed(b"\r\n\r\nhelp\r\n"), b"")
        self.assertEqual((decoder.done, decoder.rest), (True, b"help\r\n"))

    def test_not_base64(self):
        for body in [b"QUJ!\r\n\r\n", b"QQ==QUJD\r\n\r\n", b"QUJ\r\n\r\n"]:
            with self.assertRaises(BadEncoding):
                Base64Body().feed(b"\r\n" + body)

    def test_padding_then_more_across_reads(self):
        decoder = Base64Body()
        decoder.feed(b"\r\nQQ==")
        with self.assertRaises(BadEncoding):
            decoder.feed(b"QUJD\r\n\r\n")

    def test_skip_finds_the_end_without_decoding(self):
        decoder = Base64Body()
        decoder.skip(b"\r\n!!!not base64")
        decoder.skip(b"!!!\r\n\r\nhelp\r\n")
        self.assertEqual((decoder.done, decoder.rest), (True, b"help\r\n"))
