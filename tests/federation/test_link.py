"""
Two realms linked in memory (iosim): the handshake from the sending side,
the outbox drained in order, answers emptying it, a reconnect resending
what was not answered, exactly once at the far end.
"""

from twisted.test import iosim
from twisted.trial import unittest

from multirealm.federation.link import LinkFactory, PeerQueue
from multirealm.federation.server import RealmServerFactory
from tests.helpers import make_realm


def secret_for(a, b):
    return "pair-secret"


class LinkTests(unittest.TestCase):
    def setUp(self):
        self.one = make_realm(self, name="1", peers=("2",))
        self.two = make_realm(self, name="2", peers=("1",))
        for realm in (self.one, self.two):
            self.successResultOf(realm.register("alice" if realm is self.one else "heru", "pw"))
        self.queue = PeerQueue(self.one, "2", window=4)
        self.one.notifier.subscribe(self.queue)
        self.server = RealmServerFactory(self.two, secret_for, 65536, self.two.clock)
        self.links = LinkFactory(self.one, "2", "pair-secret", self.queue, 65536, self.one.clock)

    def connect(self, secret=None):
        if secret is not None:
            self.links.secret = secret
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.server.buildProtocol(None), lambda: self.links.buildProtocol(None),
        )
        pump.flush()
        return client, pump

    def send(self, n):
        for i in range(n):
            self.successResultOf(self.one.send("alice", self.one.address("heru@2"), f"m{i}"))

    def delivered(self):
        return [m.text for m in self.successResultOf(self.two.inbox("heru")).messages]

    def pending(self):
        return self.successResultOf(self.one.list_realms())[0]

    def test_queued_messages_flow_once_linked_in_order(self):
        self.send(10)  # queued while there is no link
        self.assertEqual(self.pending(), {"name": "2", "linked": False, "pending": 10})
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(self.delivered(), [f"m{i}" for i in range(10)])
        self.one.clock.advance(2)  # the outbox count is at most a second old
        self.assertEqual(self.pending(), {"name": "2", "linked": True, "pending": 0})

    def test_a_message_sent_while_linked_flows_at_once(self):
        client, pump = self.connect()
        self.send(1)
        pump.flush()
        self.assertEqual(self.delivered(), ["m0"])

    def test_unanswered_frames_are_sent_again_after_a_reconnect_and_stored_once(self):
        client, pump = self.connect()
        self.send(3)
        # The link is found dead after the frames went out: the far end
        # stores and answers them, but the answers reach no one.
        self.queue.detach(client)
        pump.flush()
        self.assertEqual(self.delivered(), ["m0", "m1", "m2"])
        self.assertEqual(self.pending(), {"name": "2", "linked": False, "pending": 3})
        client, pump = self.connect()  # sent again: answered, stored once
        pump.flush()
        self.assertEqual(self.delivered(), ["m0", "m1", "m2"])
        self.one.clock.advance(2)
        self.assertEqual(self.pending()["pending"], 0)

    def test_a_refused_message_does_not_block_the_ones_behind_it(self):
        self.successResultOf(self.one.send("alice", self.one.address("nobody@2"), "lost"))
        self.send(2)
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(self.delivered(), ["m0", "m1"])
        self.one.clock.advance(2)
        self.assertEqual(self.pending()["pending"], 0)
        self.flushLoggedErrors()

    def test_a_wrong_secret_sends_nothing(self):
        self.send(1)
        client, pump = self.connect(secret="guess")
        pump.flush()
        self.assertEqual(self.delivered(), [])
        self.assertFalse(self.pending()["linked"])
