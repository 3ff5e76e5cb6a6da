"""
The realm port's receiving end: nothing before the handshake, the
handshake's failures, frames stored as coming from the proved realm.
"""

import json

from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from multirealm.federation import handshake
from multirealm.federation.server import HANDSHAKE_SECONDS, RealmServerFactory
from multirealm.names import Address
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
