"""
Every listening port under one L{ConnectionLimits}, each refusing in its
own language; deadlines that a trickle of bytes cannot extend: HTTP
request headers, the TLS handshake of the chat port, the realm handshake,
and the chat port's idle timer.
"""

import json

import attrs
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import directlyProvides

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from multirealm.connections import ConnectionLimits
from multirealm.federation.server import HANDSHAKE_SECONDS, RealmServerFactory
from multirealm.web.files import make_site
from tests.helpers import Client, make_realm, parse_replies

LIMITS = attrs.evolve(Limits(), idle_timeout=600, header_timeout=30)


def connect(factory, host="127.0.0.2", transport=None):
    """A connection from C{host} to C{factory}'s port: (protocol, transport)."""
    peer = IPv4Address("TCP", host, 40000)
    protocol = factory.buildProtocol(peer)
    transport = transport or StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


class Ports:
    """The chat, HTTP and realm-port factories of one realm, under one ConnectionLimits."""

    def __init__(self, case, connections):
        self.realm = realm = make_realm(case, limits=LIMITS, peers=("2",))
        self.clock = realm.clock
        self.chat = ChatFactory(realm, LIMITS, realm.clock, connections=connections)
        self.http = make_site(realm, LIMITS, connections, reactor=realm.clock)
        self.link = RealmServerFactory(
            realm, lambda a, b: "s", 65536, realm.clock, connections
        )


class OneAdmissionTests(unittest.TestCase):
    def test_one_address_is_capped_across_every_port(self):
        connections = ConnectionLimits(per_address=3, most=100, clock=task.Clock())
        ports = Ports(self, connections)
        chat, _ = connect(ports.chat)
        http, _ = connect(ports.http)
        link, _ = connect(ports.link)
        self.assertEqual(connections.open, 3)

        _, refused = connect(ports.chat)
        (reply,) = parse_replies(refused.value())
        self.assertEqual(reply["code"], "too_many_connections")
        self.assertTrue(refused.disconnecting)

        _, refused = connect(ports.http)
        head, _, body = refused.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(json.loads(body)["code"], "too_many_connections")
        self.assertTrue(refused.disconnecting)

        _, refused = connect(ports.link)
        (line,) = refused.value().splitlines()
        self.assertEqual(json.loads(line)["code"], "too_many_connections")
        self.assertTrue(refused.disconnecting)

        _, other = connect(ports.http, host="127.0.0.1")  # a bystander's address
        self.assertEqual(other.value(), b"")

        for protocol in (chat, http, link):  # each gives its place back
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(connections.open, 1)
        _, again = connect(ports.link)
        self.assertEqual(again.value(), b"")

    def test_past_the_process_cap_every_port_says_unavailable(self):
        connections = ConnectionLimits(per_address=100, most=1, clock=task.Clock())
        ports = Ports(self, connections)
        connect(ports.chat, host="127.0.0.5")
        _, chat = connect(ports.chat)
        _, http = connect(ports.http)
        _, link = connect(ports.link)
        self.assertEqual(parse_replies(chat.value())[0]["code"], "unavailable")
        self.assertIn(b"HTTP/1.1 503 ", http.value())
        self.assertIn(b'"unavailable"', http.value())
        self.assertEqual(json.loads(link.value())["code"], "unavailable")


# HEAD: answered at once (a GET of the page is streamed by a producer)
REQUEST = b"HEAD / HTTP/1.1\r\nHost: realm\r\n\r\n"


class HTTPHeaderDeadlineTests(unittest.TestCase):
    def setUp(self):
        self.ports = Ports(self, ConnectionLimits(per_address=100, most=100))
        self.clock = self.ports.clock

    def test_a_trickled_header_is_cut_at_the_deadline(self):
        channel, transport = connect(self.ports.http)
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        for _ in range(29):  # a byte a second: twisted.web's idle timer restarts each time
            self.clock.advance(1)
            channel.dataReceived(b"X")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1.5)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
        self.assertIn(b'"idle_timeout"', transport.value())
        self.assertTrue(transport.disconnecting)

    def test_headers_in_time_are_served_and_the_next_request_has_its_own_deadline(self):
        channel, transport = connect(self.ports.http)
        self.clock.advance(29)
        channel.dataReceived(REQUEST)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value())
        transport.clear()
        self.clock.advance(29)  # the deadline restarted at the response
        channel.dataReceived(REQUEST)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertFalse(transport.disconnecting)
        transport.clear()
        self.clock.advance(31)  # an idle keep-alive connection ends at the deadline too
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_a_connection_that_ends_cancels_its_deadline(self):
        channel, _ = connect(self.ports.http)
        channel.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TLSHandshakeDeadlineTests(unittest.TestCase):
    def setUp(self):
        self.ports = Ports(self, ConnectionLimits(per_address=100, most=100))
        self.clock = self.ports.clock

    def tls_transport(self):
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.2", 40000))
        directlyProvides(transport, ISSLTransport)
        return transport

    def test_a_handshake_that_does_not_finish_is_cut(self):
        _, transport = connect(self.ports.chat, transport=self.tls_transport())
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnected)  # aborted: nothing can be said before TLS

    def test_a_finished_handshake_leaves_the_idle_timeout(self):
        protocol, transport = connect(self.ports.chat, transport=self.tls_transport())
        protocol.handshakeCompleted()
        self.clock.advance(599)
        self.assertFalse(transport.disconnecting)

    def test_plain_connections_have_no_handshake_deadline(self):
        _, transport = connect(self.ports.chat)
        self.clock.advance(31)
        self.assertFalse(transport.disconnecting)


class RealmHandshakeDeadlineTests(unittest.TestCase):
    def test_a_trickled_handshake_is_cut_at_its_fixed_deadline(self):
        ports = Ports(self, ConnectionLimits(per_address=100, most=100))
        protocol, transport = connect(ports.link)
        for _ in range(int(HANDSHAKE_SECONDS) - 1):
            ports.clock.advance(1)
            protocol.dataReceived(b"H")
        self.assertFalse(transport.disconnecting)
        ports.clock.advance(1.5)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"did not finish in time", transport.value())


class ChatIdleTrickleTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, limits=attrs.evolve(Limits(), idle_timeout=60))

    def test_a_line_trickled_a_byte_at_a_time_does_not_restart_the_idle_timer(self):
        client = Client(self.realm)
        for _ in range(5):
            self.realm.clock.advance(20)
            client.raw(b"x")
        self.assertTrue(client.transport.disconnecting)
        (reply,) = client.replies()
        self.assertEqual(reply["code"], "idle_timeout")

    def test_a_slow_typist_is_served(self):
        client = Client(self.realm)
        for part in (b"p", b"i", b"n", b"g\r\n"):  # a character each 12 s: done in 48 s
            self.realm.clock.advance(12)
            client.raw(part)
        self.assertEqual(client.replies(), [{"status": "OK", "message": "pong"}])
        self.realm.clock.advance(59)  # the complete line restarted the timer
        self.assertFalse(client.transport.disconnecting)
