"""
Connections: idle timeout and ping, TCP keepalive, a cap per address,
and ids that follow request order whatever the session lookups do.
"""

import base64

import attrs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from tests.helpers import Client, make_realm, make_store, parse_replies, wait_until


class IdleTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, limits=attrs.evolve(Limits(), idle_timeout=60))

    def test_an_idle_connection_is_told_and_closed(self):
        client = Client(self.realm)
        self.realm.clock.advance(59)
        self.assertFalse(client.transport.disconnecting)
        self.realm.clock.advance(2)
        (reply,) = client.replies()
        self.assertEqual(reply["code"], "idle_timeout")
        self.assertTrue(client.transport.disconnecting)

    def test_an_idle_timeout_still_answers_what_was_asked(self):
        client = Client(self.realm)
        answer = defer.Deferred()
        self.realm.list_realms = lambda: answer  # a slow database
        client.send("listrealms")
        self.realm.clock.advance(61)
        self.assertFalse(client.transport.disconnecting)
        answer.callback([])
        self.assertEqual([r.get("code", r["status"]) for r in client.replies()],
                         ["OK", "idle_timeout"])
        self.assertTrue(client.transport.disconnecting)

    def test_ping_keeps_it_open(self):
        client = Client(self.realm)
        for _ in range(10):
            self.realm.clock.advance(50)
            self.assertEqual(client.ask("ping"), {"status": "OK", "message": "pong"})
        self.assertFalse(client.transport.disconnecting)

    def test_idle_connections_share_one_timer(self):
        factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        before = len(self.realm.clock.getDelayedCalls())
        clients = [Client(self.realm, factory=factory) for _ in range(20)]
        for client in clients:
            client.ask("ping")  # a request only stores the time
        self.assertEqual(len(self.realm.clock.getDelayedCalls()), before + 1)
        for client in clients:
            client.protocol.connectionLost(None)
        self.assertEqual(len(self.realm.clock.getDelayedCalls()), before)

    def test_tcp_keepalive_is_on(self):
        class KeepAliveTransport(StringTransport):
            keepalive = None

            def setTcpKeepAlive(self, enabled):
                self.keepalive = enabled

        client = Client(self.realm, transport=KeepAliveTransport())
        self.assertTrue(client.transport.keepalive)


class IdleMemoryTests(unittest.TestCase):
    """
    What an idle connection holds: its protocol and the helpers it owns
    keep their attributes in slots (benchmarks/idle_memory.py says why).
    """

    @defer.inlineCallbacks
    def test_a_connection_keeps_nothing_in_a_dict_of_its_own(self):
        realm = make_realm(self)
        bob = Client(realm)
        bob.login("bob")
        client = Client(realm)
        token = client.login("alice")
        protocol = client.protocol
        helpers = (protocol._outbound, protocol._gate, protocol._bucket, protocol.ticket)
        self.assertEqual(client.ask("ping")["status"], "OK")
        self.assertEqual(client.ask(f"subscribe {token}")["status"], "OK")
        self.assertEqual(bob.ask("send - alice hello")["status"], "OK")
        client.raw(b"sendfile - bob x.txt\r\n\r\n" + base64.b64encode(b"hi") + b"\r\n\r\n")
        protocol.pauseProducing()
        protocol.resumeProducing()
        client.send("a" * (protocol.MAX_LENGTH + 10), "quit")
        replies = []
        yield from wait_until(lambda: replies.extend(client.replies()) or len(replies) == 4)
        self.assertEqual([r.get("code") or r.get("event") or r["status"] for r in replies],
                         ["message", "OK", "line_too_long", "OK"])
        self.assertEqual(protocol._outbound._slots, ())  # no deque once the replies are out
        protocol.connectionLost(None)
        self.assertEqual(vars(protocol), {})
        for helper in helpers:
            self.assertFalse(hasattr(helper, "__dict__"), type(helper).__name__)


class PerAddressTests(unittest.TestCase):
    def test_connections_from_one_address_are_capped(self):
        realm = make_realm(self, limits=attrs.evolve(Limits(), connections_per_address=3))
        factory = ChatFactory(realm, realm.limits, realm.clock)

        def connect(host):
            protocol = factory.buildProtocol(IPv4Address("TCP", host, 4000))
            transport = StringTransport(peerAddress=IPv4Address("TCP", host, 4000))
            protocol.makeConnection(transport)
            return protocol, transport

        open_ones = [connect("10.0.0.1") for _ in range(3)]
        refused, transport = connect("10.0.0.1")
        (reply,) = parse_replies(transport.value())
        self.assertEqual(reply["code"], "too_many_connections")
        self.assertTrue(transport.disconnecting)
        other, other_transport = connect("10.0.0.2")  # another address is not affected
        self.assertFalse(other_transport.disconnecting)
        open_ones[0][0].connectionLost(None)  # one closes: room for one more
        again, again_transport = connect("10.0.0.1")
        self.assertEqual(again_transport.value(), b"")
        self.assertFalse(again_transport.disconnecting)


class RequestOrderTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_ids_follow_request_order_across_session_lookups(self):
        store = make_store(self, inline=False)
        first = make_realm(self, store=store)
        yield first.register("alice", "pw")
        yield first.register("heru", "pw")
        old = yield first.login("alice", "pw")  # known to the store only
        realm = make_realm(self, store=store)  # "after a restart": no session in memory
        client = Client(realm)
        client.send("auth heru pw")
        yield wait_until(lambda: client.transport.value().count(b"\r\n\r\n") == 1)
        # The first send needs a database lookup of its session; the second
        # uses the session this connection has in memory.
        client.send(f"send {old} heru one", "send - alice two")
        yield wait_until(lambda: client.transport.value().count(b"\r\n\r\n") == 3)
        _, one, two = parse_replies(client.transport.value())
        self.assertLess(one["id"], two["id"])  # ids sort by time, then mint order
        history = yield realm.inbox("heru")
        self.assertEqual([m.text for m in history.messages], ["one", "two"])
