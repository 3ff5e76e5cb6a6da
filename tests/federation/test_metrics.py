"""
What a realm link counts for GET /metrics (two realms linked in memory):
frames sent, acknowledged and refused per peer, reconnects, links open
in and out.
"""

from twisted.internet import error
from twisted.python.failure import Failure

from tests.federation.test_hardening import TwoRealms
from tests.federation.test_link import FakeConnector


class LinkCountTests(TwoRealms):
    def setUp(self):
        super().setUp()
        self.counts = self.one.metrics.peers["2"]

    def test_frames_are_counted_sent_then_acknowledged_or_refused(self):
        for to in ("heru@2", "nobody@2", "heru@2"):
            self.successResultOf(self.one.send("alice", self.one.address(to), "hi"))
        client, pump = self.connect()
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
