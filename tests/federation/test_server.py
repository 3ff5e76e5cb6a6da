"""
The realm port's receiving end: nothing before the handshake, the
handshake's failures, frames stored as coming from the proved realm.
"""

import json
import sqlite3

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from multirealm import errors
from multirealm.federation import handshake, server
from multirealm.federation.server import HANDSHAKE_SECONDS, RealmServerFactory
from multirealm.names import Address
from multirealm.storage.queries import messages as message_queries
from tests.helpers import make_realm

SECRETS = {frozenset(("1", "2")): "pair-secret", frozenset(("1", "3")): "other"}


class Peer:
    """A peer realm's end of a link, driven by hand."""

    def __init__(self, realm, name="2"):
        self.factory = RealmServerFactory(
            realm, lambda a, b: SECRETS[frozenset((a, b))], 65536, realm.clock
        )
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.name = name
        self.nonce = handshake.new_nonce()

    def send(self, line):
        self.protocol.dataReceived(line.encode() + b"\r\n")

    def lines(self):
        out = self.transport.value().decode().splitlines()
        self.transport.clear()
        return out

    def link(self, secret="pair-secret"):
        self.send(handshake.Hello(self.name, self.nonce).to_line())
        (challenge,) = self.lines()
        challenge = handshake.Challenge.from_line(challenge)
        expected = handshake.proof(secret, "responder", self.name, "1", self.nonce, challenge.nonce)
        self.server_proved = handshake.proves(expected, challenge.proof)
        mine = handshake.proof(secret, "initiator", self.name, "1", self.nonce, challenge.nonce)
        self.send(handshake.Proof(mine).to_line())
        return [json.loads(line) for line in self.lines()]


class HandshakeTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, peers=("2", "3"))
        self.realm.register("heru", "pw")

    def test_both_sides_prove_the_secret(self):
        peer = Peer(self.realm)
        self.assertEqual(peer.link(), [{"status": "OK", "message": "linked"}])
        self.assertTrue(peer.server_proved)

    def test_a_wrong_secret_is_refused_and_closed(self):
        peer = Peer(self.realm)
        (refused,) = peer.link(secret="guess")
        self.assertEqual(refused["code"], "forbidden")
        self.assertFalse(peer.server_proved)
        self.assertTrue(peer.transport.disconnecting)

    def test_a_replayed_proof_fails(self):
        # An eavesdropper records a whole successful handshake, then plays
        # the initiator's lines back on a new connection: the responder's
        # nonce is fresh, so the recorded proof proves nothing.
        recorded = Peer(self.realm)
        recorded.send(handshake.Hello("2", recorded.nonce).to_line())
        (challenge,) = recorded.lines()
        nonce = handshake.Challenge.from_line(challenge).nonce
        proof = handshake.Proof(handshake.proof(
            "pair-secret", "initiator", "2", "1", recorded.nonce, nonce
        )).to_line()
        recorded.send(proof)
        self.assertEqual(json.loads(recorded.lines()[0])["status"], "OK")
        replay = Peer(self.realm)
        replay.send(handshake.Hello("2", recorded.nonce).to_line())
        replay.lines()
        replay.send(proof)
        (refused,) = replay.lines()
        self.assertEqual(json.loads(refused)["code"], "forbidden")
        self.assertTrue(replay.transport.disconnecting)

    def test_an_unknown_realm_is_refused(self):
        peer = Peer(self.realm, name="9")
        peer.send(handshake.Hello("9", peer.nonce).to_line())
        self.assertEqual(json.loads(peer.lines()[0])["code"], "forbidden")
        self.assertTrue(peer.transport.disconnecting)

    def test_a_frame_before_the_handshake_is_never_acted_on(self):
        peer = Peer(self.realm)
        peer.send("@id=a1;ts=2026-11-25T00:00:00+00:00 sendrealm bob heru hi")
        peer.send("@id=a2;ts=2026-11-25T00:00:00+00:00 sendrealm bob heru again")
        (refused,) = peer.lines()  # one ERROR line, then closed
        self.assertEqual(json.loads(refused)["status"], "ERROR")
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(self.successResultOf(self.realm.inbox("heru")).messages, ())

    def test_a_handshake_that_does_not_finish_is_closed(self):
        peer = Peer(self.realm)
        self.realm.clock.advance(HANDSHAKE_SECONDS + 1)
        self.assertTrue(peer.transport.disconnecting)

    def test_a_bug_in_the_handshake_is_refused_as_internal(self):
        peer = Peer(self.realm)
        peer.factory.secret_for = lambda realm, peer: 1 / 0
        peer.send(handshake.Hello("2", peer.nonce).to_line())
        (refused,) = peer.lines()
        self.assertEqual(json.loads(refused)["code"], "internal")
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class FrameTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, peers=("2", "3"))
        self.realm.register("heru", "pw")
        self.peer = Peer(self.realm)
        self.peer.link()

    def acks(self):
        return [json.loads(line) for line in self.peer.lines()]

    def test_a_frame_is_stored_once_and_acknowledged_every_time(self):
        frame = "@id=a1;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob heru Hello from realm 2"
        self.peer.send(frame)
        self.peer.send(frame)  # resent after a reconnect
        self.assertEqual(self.acks(), [{"status": "OK", "id": "a1"}] * 2)
        (stored,) = self.successResultOf(self.realm.inbox("heru")).messages
        self.assertEqual((stored.sender, stored.text), (Address("bob", "2"), "Hello from realm 2"))

    def test_a_link_cannot_speak_for_another_realms_user(self):
        self.peer.send("@id=a1;ts=2026-11-25T00:00:00.000+00:00 sendrealm eve@3 heru spoofed")
        (ack,) = self.acks()
        self.assertEqual((ack["id"], ack["code"]), ("a1", "forbidden"))
        self.assertEqual(self.successResultOf(self.realm.inbox("heru")).messages, ())

    def test_a_refused_frame_is_answered_and_the_next_goes_on(self):
        self.peer.send("@id=a1;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob nobody hi")
        self.peer.send("not a frame")
        self.peer.send("@id=a2;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob heru hi")
        codes = [a.get("code", a["status"]) for a in self.acks()]
        self.assertEqual(codes, ["no_such_user", "bad_request", "OK"])

    def read(self, *frames):
        """C{frames} (id, sender, recipient, text), arriving in one read."""
        ts = "2026-11-25T00:00:00.000+00:00"
        self.peer.protocol.dataReceived("".join(
            f"@id={frame_id};ts={ts} sendrealm {sender} {recipient} {text}\r\n"
            for frame_id, sender, recipient, text in frames
        ).encode())

    def watch_runs(self):
        """The ids of each run stored, in the order stored."""
        runs, receive_run = [], self.realm.receive_run

        def watched(peer, messages, then):
            runs.append([m.id for m in messages])
            receive_run(peer, messages, then)

        self.realm.receive_run = watched
        return runs

    def answers(self):
        return [(a["id"], a.get("code", a["status"])) for a in self.acks()]

    def test_the_private_frames_of_one_read_are_stored_in_one_operation(self):
        runs = self.watch_runs()
        self.read(("a1", "bob", "heru", "one"), ("a2", "eve@3", "heru", "spoofed"),
                  ("a3", "bob", "nobody", "lost"), ("a4", "bob", "heru", "two"),
                  ("a1", "bob", "heru", "one"))
        self.assertEqual(runs, [["a1", "a3", "a4", "a1"]])
        # Refused before the store at once; the run's answers in the order read.
        self.assertEqual(self.answers(), [("a2", "forbidden"), ("a1", "OK"),
                                          ("a3", "no_such_user"), ("a4", "OK"), ("a1", "OK")])
        texts = [m.text for m in self.successResultOf(self.realm.inbox("heru")).messages]
        self.assertEqual(texts, ["one", "two"])
        self.assertEqual(self.peer.protocol._pending, 0)

    def test_a_frame_that_joins_no_run_is_stored_after_the_frames_before_it(self):
        order, receive_users = self.watch_runs(), self.realm.receive_users

        def users(peer, names):
            order.append(["users"])
            return receive_users(peer, names)

        self.realm.receive_users = users
        ts = "2026-11-25T00:00:00.000+00:00"
        self.peer.protocol.dataReceived(
            f"@id=a1;ts={ts} sendrealm bob heru one\r\n"
            f"@id=users-1;ts={ts} announceusers bob\r\n"
            f"@id=a2;ts={ts} sendrealm bob heru two\r\n".encode()
        )
        self.assertEqual(order, [["a1"], ["users"], ["a2"]])
        self.assertEqual(self.answers(), [("a1", "OK"), ("users-1", "OK"), ("a2", "OK")])

    def test_a_run_holds_so_many_frames_and_so_much_text(self):
        runs = self.watch_runs()
        self.patch(server, "RUN_MOST", 3)
        self.read(*[(f"a{n}", "bob", "heru", "hi") for n in range(7)])
        self.assertEqual([len(run) for run in runs], [3, 3, 1])
        del runs[:]
        self.patch(server, "RUN_MOST", 100)
        self.patch(server, "RUN_TEXT", 10)
        self.read(*[(f"b{i}", "bob", "heru", "x" * n) for i, n in enumerate((4, 5, 1, 11, 1))])
        self.assertEqual(runs, [["b0", "b1", "b2"], ["b3"], ["b4"]])  # the first always fits
        self.assertEqual(len(self.acks()), 12)

    def test_a_run_refused_for_now_refuses_the_frames_after_it_unstored(self):
        runs = []
        full = errors.StorageFull("the realm's disk is full")
        self.realm.receive_run = lambda peer, messages, then: (
            runs.append(len(messages)), then(Failure(full))
        )
        self.read(("a1", "bob", "heru", "one"), ("a2", "bob", "heru", "two"))
        self.read(("a3", "bob", "heru", "three"))
        self.assertEqual(runs, [2])
        self.assertEqual(self.answers(), [("a1", "storage_full"), ("a2", "storage_full"),
                                          ("a3", "storage_full")])

    def test_a_run_answered_at_once_past_half_the_pending_bound_resumes_reading(self):
        self.patch(server.RealmProtocol, "MAX_PENDING", 4)
        release = self.stall_receive()
        self.read(*[(f"a{n}", "bob", "heru", "hi") for n in range(6)])
        self.assertEqual(self.acks(), [])  # four stored late; two not read yet
        release()  # four answers at once: 4 -> 0 pending, past the half
        self.assertEqual(len(self.acks()), 6)
        texts = [m.text for m in self.successResultOf(self.realm.inbox("heru")).messages]
        self.assertEqual(len(texts), 6)

    def test_a_full_disk_inside_a_run_is_storage_full_for_each_frame(self):
        # The run's first pass fails, its isolated pass fails a message at
        # a time: each frame is "not now", so the sender keeps it and sends
        # it again, and the frames after it wait (review of the runs: they
        # were answered internal, for good).
        def full(*args):
            raise sqlite3.OperationalError("database or disk is full")

        self.patch(message_queries, "_gather", full)
        self.read(("a1", "bob", "heru", "one"), ("a2", "bob", "heru", "two"))
        self.read(("a3", "bob", "heru", "three"))
        self.assertEqual(self.answers(), [("a1", "storage_full"), ("a2", "storage_full"),
                                          ("a3", "storage_full")])
        self.assertIsNotNone(self.peer.protocol._not_now)
        self.assertEqual(self.flushLoggedErrors(), [])  # a full disk is no bug

    def test_a_bug_storing_a_run_answers_each_frame_internal_logged_once(self):
        self.realm.receive_run = lambda peer, messages, then: 1 / 0
        self.read(("a1", "bob", "heru", "one"), ("a2", "bob", "heru", "two"))
        self.assertEqual(self.answers(), [("a1", "internal"), ("a2", "internal")])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.peer.protocol._pending, 0)
        self.read(("a3", "bob", "heru", "three"))  # the link goes on
        self.assertEqual(self.answers(), [("a3", "internal")])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_a_bad_frame_is_answered_by_its_id_and_the_link_goes_on(self):
        # Numbers are ASCII digits: a time in Arabic-Indic digits is no time.
        arabic_indic_year = "\u0662\u0660\u0662\u0666"
        self.peer.send(f"@id=a1;ts={arabic_indic_year}-11-25T00:00:00+00:00 sendrealm bob heru hi")
        self.peer.send("@id=a2;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob")
        self.peer.send("@id=\u0663;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob heru hi")
        self.peer.protocol.dataReceived(
            b"@id=a3;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob heru \xff\r\n"
        )
        self.peer.send("@id=a4;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob heru hi")
        answers = [(a["id"], a.get("code", a["status"])) for a in self.acks()]
        self.assertEqual(answers, [
            ("a1", "bad_request"), ("a2", "bad_request"), ("", "bad_request"),
            ("a3", "bad_encoding"), ("a4", "OK"),
        ])
        self.assertFalse(self.peer.transport.disconnecting)

    def test_a_time_is_judged_the_same_each_time_it_comes(self):
        # The answers for the last timestamps are kept (core/received.py).
        for frame_id, ts in (("a1", "2026-11-25T00:00:00"), ("a2", "2026-11-25T00:00:00"),
                             ("a3", "9999-11-25T00:00:00+00:00"), ("a4", "2026-11-25T00:00:00+01:00"),
                             ("a5", "2026-11-25T00:00:00+01:00"), ("a6", "2026-11-25T00:00:00")):
            self.peer.send(f"@id={frame_id};ts={ts} sendrealm bob heru hi")
        answers = [(a["id"], a.get("code", a["status"])) for a in self.acks()]
        self.assertEqual(answers, [
            ("a1", "bad_request"), ("a2", "bad_request"), ("a3", "bad_request"),
            ("a4", "OK"), ("a5", "OK"), ("a6", "bad_request"),
        ])

    def stall_receive(self):
        """
        Frames are stored only when C{release()} is called, in the order
        handed over, alone or in runs: answers come late.
        """
        held, receive, receive_run = [], self.realm.receive, self.realm.receive_run

        def later(peer, message):
            d = defer.Deferred()
            held.append(lambda: receive(peer, message).chainDeferred(d))
            return d

        def later_run(peer, messages, then):
            held.append(lambda: receive_run(peer, messages, then))

        def release():
            for store in held:
                store()

        self.realm.receive = later
        self.realm.receive_run = later_run
        return release

    def test_a_file_size_in_other_digits_closes_the_link_once_the_frames_before_are_answered(self):
        # The attack run: a file frame whose size is "\u00b2" killed the link,
        # and the answers to the frames applied in the same read were lost.
        release = self.stall_receive()
        ts = "2026-11-25T00:00:00.000+00:00"
        lines = [f"@id=a{i};ts={ts} sendrealm bob heru hi {i}" for i in range(3)]
        lines.append(f"@id=f1;ts={ts} sendfilerealm bob heru \u00b2 x.txt")
        self.peer.protocol.dataReceived(
            "".join(line + "\r\n" for line in lines).encode()
            + f"xy@id=a9;ts={ts} sendrealm bob heru not a frame: part of the body\r\n".encode()
        )
        (refused,) = self.acks()
        self.assertEqual((refused["id"], refused["code"]), ("f1", "bad_request"))
        self.assertFalse(self.peer.transport.disconnecting)  # three answers to come
        release()
        self.assertEqual(self.acks(), [{"status": "OK", "id": f"a{i}"} for i in range(3)])
        self.assertTrue(self.peer.transport.disconnecting)
        texts = [m.text for m in self.successResultOf(self.realm.inbox("heru")).messages]
        self.assertEqual(texts, ["hi 0", "hi 1", "hi 2"])  # nothing after the bad frame

    def test_a_bug_in_a_frame_is_its_internal_answer_and_the_link_goes_on(self):
        self.realm.receive_users = lambda peer, names: 1 / 0
        self.peer.send("@id=users-1;ts=2026-11-25T00:00:00.000+00:00 announceusers bob")
        self.peer.send("@id=a1;ts=2026-11-25T00:00:00.000+00:00 sendrealm bob heru hi")
        answers = [(a["id"], a.get("code", a["status"])) for a in self.acks()]
        self.assertEqual(answers, [("users-1", "internal"), ("a1", "OK")])
        self.assertFalse(self.peer.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_bug_in_a_file_frame_closes_the_link_once_the_frames_before_are_answered(self):
        release = self.stall_receive()
        check = self.realm.check_received
        self.realm.check_received = lambda peer, message: (
            1 / 0 if message.file else check(peer, message)
        )
        ts = "2026-11-25T00:00:00.000+00:00"
        self.peer.send(f"@id=a1;ts={ts} sendrealm bob heru hi")
        self.peer.send(f"@id=f1;ts={ts} sendfilerealm bob heru 3 x.txt")
        self.assertEqual([(a["id"], a["code"]) for a in self.acks()], [("f1", "internal")])
        release()
        self.assertEqual(self.acks(), [{"status": "OK", "id": "a1"}])
        self.assertTrue(self.peer.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_bug_reading_a_file_body_closes_the_link_once_the_frames_before_are_answered(self):
        release = self.stall_receive()
        begin = self.realm.files.begin

        def failing_begin():
            incoming = begin()
            incoming.write = lambda data: 1 / 0
            return incoming

        self.realm.files.begin = failing_begin
        ts = "2026-11-25T00:00:00.000+00:00"
        self.peer.send(f"@id=a1;ts={ts} sendrealm bob heru hi")
        self.peer.protocol.dataReceived(
            f"@id=f1;ts={ts} sendfilerealm bob heru 3 x.txt\r\nabc".encode()
        )
        self.assertEqual(self.acks(), [])
        release()
        self.assertEqual(self.acks(), [{"status": "OK", "id": "a1"}])  # f1 goes again
        self.assertTrue(self.peer.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
