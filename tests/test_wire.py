"""
Reply bytes: the size bound that history pages are cut by.
"""

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from multirealm import wire
from multirealm.model import PRIVATE, Failed, FileRef, Message
from multirealm.names import Address

names = st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=32)
addresses = st.builds(Address, names, names)
files = st.none() | st.builds(FileRef, st.text(max_size=300), st.text("0123456789abcdef", min_size=32, max_size=32), st.integers(0, 2**63 - 1))
messages = st.builds(
    Message,
    id=st.text("0123456789abcdef", min_size=32, max_size=32),
    kind=st.just(PRIVATE),
    sender=addresses,
    recipient=addresses,
    text=st.text(max_size=500),  # any code point: control characters, astral planes
    timestamp=st.just("2026-11-25T21:54:55.903+00:00"),
    file=files,
    failed=st.none() | st.builds(Failed, st.text(max_size=70), st.text(max_size=70)),
)


class MessageBytesTests(unittest.TestCase):
    @given(st.lists(messages, max_size=5), names)
    def test_is_an_upper_bound_of_the_real_reply(self, page, reader_realm):
        reply = wire.encode(wire.ok(messages=[m.to_wire(reader_realm) for m in page], more=True))
        bound = wire.HISTORY_REPLY_OVERHEAD + sum(wire.message_bytes(m) for m in page)
        self.assertLessEqual(len(reply), bound)

    def test_is_close_for_control_characters(self):
        text = "\x01" * 1000  # json.dumps writes each as \\u0001: six bytes
        message = Message("0" * 32, PRIVATE, Address("a", "1"), Address("b", "1"), text, "t")
        real = len(json.dumps(message.to_wire("1")))
        self.assertGreaterEqual(real, 6000)
        self.assertLess(wire.message_bytes(message) - real, 200)
