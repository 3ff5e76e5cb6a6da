"""
What a realm link counts for GET /metrics (two realms linked in memory):
frames sent, acknowledged and refused per peer, reconnects, links open
in and out.
"""

from twisted.internet import error
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest

from multirealm.federation.link import LinkFactory
from multirealm.federation.queue import PeerQueue
from multirealm.federation.server import RealmServerFactory
from tests.federation.test_link import FakeConnector, secret_for
from tests.helpers import make_realm


class LinkCountTests(unittest.TestCase):
    def setUp(self):
        self.one = make_realm(self, name="1", peers=("2",))
        self.two = make_realm(self, name="2", peers=("1",))
        self.successResultOf(self.one.register("alice", "pw"))
        self.successResultOf(self.two.register("heru", "pw"))
        self.queue = PeerQueue(self.one, "2")
        self.one.notifier.subscribe(self.queue)
        self.server = RealmServerFactory(self.two, secret_for, 65536, self.two.clock)
        self.links = LinkFactory(self.one, "2", "pair-secret", self.queue, 65536, self.one.clock)
        self.counts = self.one.metrics.peers["2"]

    def test_frames_are_counted_sent_then_acknowledged_or_refused(self):
        for to in ("heru@2", "nobody@2", "heru@2"):
            self.successResultOf(self.one.send("alice", self.one.address(to), "hi"))
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.server.buildProtocol(None), lambda: self.links.buildProtocol(None),
        )
        pump.flush()
        counts = self.counts
        self.assertEqual(
            (counts.frames_sent, counts.frames_acknowledged, counts.frames_refused), (3, 2, 1)
        )
        self.assertEqual(self.one.metrics.connections["realm_out"], 1)
        self.assertEqual(self.two.metrics.connections["realm_in"], 1)
        client.transport.loseConnection()
        pump.flush()
        self.assertEqual(self.one.metrics.connections["realm_out"], 0)
        self.assertEqual(self.two.metrics.connections["realm_in"], 0)

    def test_each_attempt_after_a_failure_is_a_reconnect_until_the_realm_stops(self):
        connector = FakeConnector()
        self.links.connector = connector
        for _ in range(3):
            self.links.clientConnectionFailed(connector, Failure(error.ConnectionRefusedError()))
            self.one.clock.advance(self.links.maxDelay)
        self.assertEqual((self.counts.reconnects, connector.connects), (3, 3))
        self.links.stopTrying()
        self.links.clientConnectionFailed(connector, Failure(error.ConnectionRefusedError()))
        self.assertEqual(self.counts.reconnects, 3)
