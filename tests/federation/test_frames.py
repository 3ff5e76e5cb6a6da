"""
Realm-port frames and the link handshake, as pure parsing and checking.
"""

import json
import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from multirealm import errors
from multirealm.federation import handshake
from multirealm.federation.frames import (
    Ack,
    FileFrame,
    FrameError,
    MessageFrame,
    body_follows,
    line_id,
    parse_frame,
)
from multirealm.model import GROUP, JOINED, LEFT, PRIVATE, Message
from multirealm.names import Address

names = st.text(alphabet="abcXYZ019_", min_size=1, max_size=32)
texts = st.text(min_size=1, max_size=200).filter(
    lambda t: "\n" not in t and "\r" not in t and t.strip(" ") == t and t
)


class MessageFrameTests(unittest.TestCase):
    def test_the_original_frame_with_tags(self):
        line = "@id=0123456789abcdef0123456789abcdef;ts=2026-11-25T21:32:15.449+00:00" \
               " sendrealm alice heru Hello from another realm!"
        frame = MessageFrame.from_line(line)
        self.assertEqual(frame.to_line(), line)
        message = frame.message(sender_realm="1", receiver_realm="2")
        self.assertEqual(message.sender, Address("alice", "1"))
        self.assertEqual(message.recipient, Address("heru", "2"))
        self.assertEqual(message.text, "Hello from another realm!")

    @given(names, names, names, texts, st.sampled_from([PRIVATE, GROUP, JOINED]))
    def test_a_message_crosses_and_comes_back_the_same(self, sender, recipient, realm, text, kind):
        message = Message("a" * 32, kind, Address(sender, "1"), Address(recipient, "2"), text,
                          "2026-11-25T21:32:15.449+00:00")
        frame = MessageFrame.of(message, "1", "2")
        line = frame.to_line()
        self.assertEqual(MessageFrame.line_of(message, "1", "2"), line)  # the queue's way
        self.assertEqual(MessageFrame.from_line(line).message("1", "2"), message)
        # of() and from_line() make the tuple without its __new__: every field, in order.
        self.assertEqual(MessageFrame.from_line(line), frame)
        self.assertEqual(frame, MessageFrame(**frame._asdict()))
        self.assertEqual(len(frame), len(MessageFrame._fields))

    def test_a_forwarded_group_post_names_its_member_and_home(self):
        message = Message("b" * 32, GROUP, Address("cy", "3"), Address("team", "1"), "hi",
                          "2026-11-25T21:32:15.449+00:00")
        frame = MessageFrame.of(message, sender_realm="1", receiver_realm="2")
        self.assertEqual((frame.sender, frame.recipient), ("cy@3", "team@1"))
        self.assertEqual(MessageFrame.from_line(frame.to_line()).message("1", "2"), message)

    def test_membership_frames(self):
        ts = "2026-11-25T21:32:15.449+00:00"
        joined = Message("c" * 32, JOINED, Address("alice", "1"), Address("team", "1"), "heru", ts)
        line = MessageFrame.of(joined, "1", "2").to_line()
        self.assertEqual(line, f"@id={'c' * 32};ts={ts} joingrouprealm alice team@1 heru")
        self.assertEqual(MessageFrame.from_line(line).message("1", "2"), joined)
        left = Message("d" * 32, LEFT, Address("heru", "2"), Address("team", "1"), "", ts)
        line = MessageFrame.of(left, "2", "1").to_line()
        self.assertEqual(line, f"@id={'d' * 32};ts={ts} leavegrouprealm heru team")
        self.assertEqual(MessageFrame.line_of(left, "2", "1"), line)
        self.assertEqual(MessageFrame.from_line(line).message("2", "1"), left)

    def test_a_file_frame_counts_its_bytes_and_ends_with_the_name(self):
        ts = "2026-11-25T21:32:15.449+00:00"
        line = f"@id={'e' * 32};ts={ts} sendgroupfilerealm alice team@1 1234 my photo.jpg"
        frame = parse_frame(line)
        self.assertIsInstance(frame, FileFrame)
        self.assertEqual((frame.size, frame.name, frame.kind), (1234, "my photo.jpg", GROUP))
        self.assertEqual(frame.to_line(), line)
        message = frame.message("2", "3", "f" * 32)
        self.assertEqual((message.sender, message.recipient), (Address("alice", "2"),
                                                               Address("team", "1")))
        self.assertEqual(message.file.id, "f" * 32)
        for bad in [f"@id=a;ts={ts} sendfilerealm alice heru -5 x",
                    f"@id=a;ts={ts} sendfilerealm alice heru 12",
                    f"@id=a;ts={ts} sendfilerealm alice heru 99999999999999999999 x"]:
            self.assertRaises(FrameError, parse_frame, bad)
        self.assertIsInstance(parse_frame(f"@id=a;ts={ts} sendrealm a b c"), MessageFrame)

    def test_numbers_are_ascii_digits_only(self):
        # int() takes Arabic-Indic or fullwidth digits, and "\u00b2".isdigit() is
        # true: none of them is a size, an id or a time on the wire.
        ts = "2026-11-25T21:32:15.449+00:00"
        for size in ["\u00b2", "\u0663", "\uff15", "1\u0660", "\u0967\u0968"]:
            self.assertRaises(FrameError, parse_frame, f"@id=a;ts={ts} sendfilerealm a b {size} x")
        self.assertRaises(FrameError, parse_frame, f"@id=\u0663;ts={ts} sendrealm a b c")
        self.assertRaises(
            FrameError, parse_frame, "@id=a;ts=\u0662026-11-25T21:32:15.449+00:00 sendrealm a b c"
        )
        self.assertEqual(parse_frame(f"@id=a;ts={ts} sendfilerealm a b 007 x").size, 7)

    def test_a_bad_line_is_answered_by_the_id_it_gives(self):
        ts = "2026-11-25T21:32:15.449+00:00"
        self.assertEqual(line_id(f"@id=f1;ts={ts} sendfilerealm a b \u00b2 x"), "f1")
        self.assertEqual(line_id("@id=f2;ts=\u0662 sendrealm a b c"), "f2")
        self.assertEqual(line_id("@id=f3 sendrealm a b c"), "f3")
        for line in ["@id=\u0663;ts=t sendrealm a b c", "@id=;ts=t x", "sendrealm a b c", ""]:
            self.assertEqual(line_id(line), "")

    def test_whether_a_file_body_follows_a_line_good_or_bad(self):
        for line in ["@id=a;ts=t sendfilerealm a b \u00b2 x", "@id=\u0663 sendgroupfilerealm",
                     "@id=a;ts=2026 sendfilerealm a b 1 x"]:
            self.assertTrue(body_follows(line), line)
        for line in ["@id=a;ts=t sendrealm a b sendfilerealm", "sendfilerealm a b 1 x", ""]:
            self.assertFalse(body_follows(line), line)

    def test_not_frames(self):
        for line in ["sendrealm alice heru hi", "@id=x;ts=t sendrealm alice heru",
                     "@id=a;ts=2026-11-25T21:32:15.449+00:00 leavegrouprealm heru team extra",
                     "@id=a;ts=2026-11-25T21:32:15.449+00:00 joingrouprealm alice team",
                     "@id=a;ts=2026-11-25T21:32:15.449+00:00 sendrealm alice heru",
                     "@id=bad id;ts=t sendrealm a b c", "@id=a;ts=t frob a b c", ""]:
            self.assertRaises(FrameError, MessageFrame.from_line, line)

    def test_a_malformed_name_is_refused_when_read(self):
        frame = MessageFrame.from_line("@id=a;ts=2026 sendrealm al!ce heru hi")
        self.assertRaises(errors.InvalidName, frame.message, "1", "2")


class AckTests(unittest.TestCase):
    @given(st.text(alphabet="abcXYZ019_-", min_size=1, max_size=64))
    def test_the_quick_ok_is_exactly_what_json_writes_and_reads(self, frame_id):
        line = json.dumps({"status": "OK", "id": frame_id})
        self.assertEqual(Ack(frame_id).to_line(), line)
        self.assertEqual(Ack.from_line(line), Ack(frame_id))
        # Spacing json would accept still parses, through json.
        self.assertEqual(Ack.from_line(line.replace(": ", ":")), Ack(frame_id))

    @given(st.one_of(
        st.text(alphabet="abcXYZ019_-", min_size=1, max_size=64),
        st.text(min_size=1, max_size=20),  # quotes, escapes, anything json writes
    ))
    def test_the_common_ok_read_from_its_bytes_is_what_json_reads(self, frame_id):
        # An answer's id read from the bytes alone (one a message crossing
        # a link, issue 18: no decoding, no json) is the id json reads, with
        # or without the CR of its CRLF; any other line is left to json.
        for ack in (Ack(frame_id), Ack(frame_id, "no_such_user", "no user")):
            for line in (ack.to_line(), ack.to_line() + "\r"):
                read = Ack.ok_id(line.encode("utf-8"))
                if read is not None:
                    self.assertEqual(Ack(read), Ack.from_line(line))
        line = Ack(frame_id).to_line().encode("utf-8")
        self.assertEqual(Ack.ok_id(line + b"\r"), frame_id if re.fullmatch("[0-9A-Za-z_-]{1,64}", frame_id) else None)
        for line in (b'{"status": "OK", "id": "a\\u0062"}', b'{"status": "OK", "id": "a", "x": "y"}',
                     b'{"status": "OK", "id": "a"} x', b"\xff", b' {"status": "OK", "id": "a"}',
                     b'{"status":"OK", "id": "a"}', b'{"status": "OK", "id": "%s"}' % (b"a" * 65)):
            self.assertIsNone(Ack.ok_id(line))  # json's to read

    def test_round_trips(self):
        for ack in (Ack("a1"), Ack("a2", "no_such_user", "no user 'x'")):
            self.assertEqual(Ack.from_line(ack.to_line()), ack)
        self.assertRaises(FrameError, Ack.from_line, "OK")

    def test_a_code_that_is_no_error_code_is_kept_as_internal(self):
        # A peer's code reaches the sender in its failure entry: only a code's shape.
        for code in ("<img src=x onerror=alert(1)>", "no_such_user\u2028x", "x" * 41, ""):
            line = json.dumps({"status": "ERROR", "id": "a1", "code": code, "message": "m"})
            self.assertEqual(Ack.from_line(line).code, "internal")
        line = json.dumps({"status": "ERROR", "id": "a1", "code": "quota_exceeded"})
        self.assertEqual(Ack.from_line(line).code, "quota_exceeded")

    def test_an_answer_that_is_not_a_json_object_is_a_bad_answer(self):
        for line in ("[" * 5000, "[1, 2]", '"OK"', "null", "7", '{"status": "OK"}'):
            self.assertRaises(FrameError, Ack.from_line, line)


class HandshakeTests(unittest.TestCase):
    def run_handshake(self, initiator_secret, responder_secret):
        initiator_nonce, responder_nonce = handshake.new_nonce(), handshake.new_nonce()
        hello = handshake.Hello.from_line(handshake.Hello("1", initiator_nonce).to_line())
        responder_proof = handshake.proof(responder_secret, "responder", hello.realm, "2",
                                          hello.nonce, responder_nonce)
        challenge = handshake.Challenge.from_line(
            handshake.Challenge("2", responder_nonce, responder_proof).to_line()
        )
        initiator_sees = handshake.proves(
            handshake.proof(initiator_secret, "responder", "1", challenge.realm,
                            initiator_nonce, challenge.nonce),
            challenge.proof,
        )
        initiator_proof = handshake.proof(initiator_secret, "initiator", "1", "2",
                                          initiator_nonce, responder_nonce)
        responder_sees = handshake.proves(
            handshake.proof(responder_secret, "initiator", "1", "2", initiator_nonce,
                            responder_nonce),
            handshake.Proof.from_line(handshake.Proof(initiator_proof).to_line()).proof,
        )
        return initiator_sees, responder_sees

    def test_both_sides_prove_the_secret(self):
        self.assertEqual(self.run_handshake("s3cret", "s3cret"), (True, True))

    def test_a_wrong_secret_fails_both_ways(self):
        self.assertEqual(self.run_handshake("s3cret", "other"), (False, False))

    def test_a_recorded_proof_fails_on_a_new_connection(self):
        old = handshake.proof("s", "initiator", "1", "2", "a" * 32, "b" * 32)
        fresh = handshake.proof("s", "initiator", "1", "2", "a" * 32, "c" * 32)
        self.assertFalse(handshake.proves(fresh, old))

    def test_a_proof_cannot_be_reflected_to_its_maker(self):
        mine = handshake.proof("s", "responder", "1", "2", "a" * 32, "b" * 32)
        expected_from_peer = handshake.proof("s", "initiator", "1", "2", "a" * 32, "b" * 32)
        self.assertFalse(handshake.proves(expected_from_peer, mine))

    def test_malformed_lines(self):
        for parse, line in [(handshake.Hello.from_line, "HELLO 1"),
                            (handshake.Hello.from_line, "HELLO 1 nothex"),
                            (handshake.Challenge.from_line, "CHALLENGE 2 " + "a" * 32 + " short"),
                            (handshake.Proof.from_line, "PROOF " + "g" * 64)]:
            self.assertRaises(handshake.HandshakeError, parse, line)
