"""
A realm's link to a peer runs only while its process holds the lease of
the outbox to that peer: two realms in this process on real loopback
sockets, the lease of realm 1's outbox to realm 2 a fake one.
"""

import os

from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from multirealm import config
from multirealm.core.leases import LeasedService
from multirealm.service import build_realm_service
from tests.core.test_leases import FakeLeases
from tests.helpers import InlineHasher, wait_until
from tests.test_end_to_end import free_port

REALMS_INI = """
[network]
secret = s

[realm:1]
host = 127.0.0.1
chat_port = 0
realm_port = {realm1}
http_port = 0
data_dir = data/realm1

[realm:2]
host = 127.0.0.1
chat_port = 0
realm_port = {realm2}
http_port = 0
data_dir = data/realm2
"""


class LeasedLinkTestCase(unittest.TestCase):
    def start(self, names):
        self.patch(LeasedService, "RETRY_SECONDS", 0.1)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI.format(realm1=free_port(), realm2=free_port()).replace(
                "secret = s", "secret = s\nlink_max_delay = 0.1"))
        network = config.load(path)
        self.leases = FakeLeases()
        self.realms, self.services = {}, {}
        for name in names:
            service = build_realm_service(network, name, reactor, hasher=InlineHasher())
            self.services[name] = service
            self.realms[name] = service.getServiceNamed("core").realm
        self.link = self.services["1"].getServiceNamed("link-2")
        self.link.leases = self.leases
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        for service in self.services.values():
            service.privilegedStartService()
            service.startService()
            self.addCleanup(service.stopService)

    def linked(self):
        return self.realms["1"].links.linked("2")

    @defer.inlineCallbacks
    def inbox(self):
        return [m.text for m in (yield self.realms["2"].inbox("heru")).messages]


class LeasedLinkTests(LeasedLinkTestCase):
    def setUp(self):
        self.start(("1", "2"))

    @defer.inlineCallbacks
    def test_a_lost_lease_stops_the_link_and_taking_it_back_starts_it(self):
        one, two = self.realms["1"], self.realms["2"]
        yield one.register("alice", "pw")
        yield two.register("heru", "pw")
        yield wait_until(self.linked)
        self.leases.elsewhere.add("outbox 1 2")  # another process takes it over
        self.leases.lose_all("the connection broke")
        yield wait_until(lambda: not self.linked())
        (down,) = [formatEvent(e) for e in self.events
                   if e.get("link_event") == "down" and e["realm"] == "1"]
        self.assertRegex(down, "^link to realm 2 closed after .* s: this process lost the lease"
                               " of the outbox; \\d+ frames unanswered")
        yield one.send("alice", one.address("heru@2"), "queued meanwhile")
        yield wait_until(lambda: self.leases.asked >= 4)  # tried again, not taken
        self.assertEqual((yield self.inbox()), [])
        self.leases.elsewhere.clear()  # the other process died
        yield wait_until(self.linked)
        for _ in range(500):  # 10 s at most
            if (yield self.inbox()):
                break
            yield task.deferLater(reactor, 0.02)
        self.assertEqual((yield self.inbox()), ["queued meanwhile"])


class LinkToARealmDownTests(LeasedLinkTestCase):
    def setUp(self):
        self.start(("1",))

    @defer.inlineCallbacks
    def test_a_link_started_again_keeps_trying_a_peer_that_is_down(self):
        factory = self.link.service.factory
        yield wait_until(lambda: factory.retries >= 2)
        self.leases.elsewhere.add("outbox 1 2")
        self.leases.lose_all("the connection broke")
        self.leases.elsewhere.clear()
        yield wait_until(lambda: self.link.held)
        tried = factory.retries
        yield wait_until(lambda: factory.retries >= tried + 2)
