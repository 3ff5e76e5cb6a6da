"""
A WebSocket client of a realm's HTTP site (C{/ws}) in memory: Twisted's
own client (L{twisted.web.websocket}) over a pipe of two string
transports, the server's bounded like a socket; and the bytes of frames
and handshakes written by hand, for what that client does not send.
"""

import json

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.websocket import WebSocketClientEndpoint
from wsproto.frame_protocol import FrameProtocol

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from multirealm.connections import ConnectionLimits
from multirealm.web.files import make_site
from multirealm.web.ws import ChatSocketResource
from tests.helpers import BoundedTransport, make_realm

URL = "http://realm.test:8080/ws"


class Browser:
    """A WebSocket client's protocol: keeps every message, parsed."""

    def __init__(self):
        self.messages = []
        self.binary = []
        self.lost = None

    def negotiationStarted(self, transport):
        self.transport = transport

    def negotiationFinished(self):
        pass

    def textMessageReceived(self, text):
        self.messages.append(json.loads(text))

    def bytesMessageReceived(self, data):
        self.binary.append(data)

    def pongReceived(self, payload):
        pass

    def connectionLost(self, reason):
        self.lost = reason

    def send(self, *texts):
        for text in texts:
            self.transport.sendTextMessage(text)

    def take(self):
        """The messages received since the last call."""
        messages, self.messages = self.messages, []
        return messages


class Browsers:
    def buildProtocol(self, url):
        return Browser()


class Pipe:
    """
    One TCP connection in memory between a client protocol and the site:
    the server's side is a L{BoundedTransport} (its producer paused past
    64 KiB unread, as a socket's), read by the client only while
    C{reading}; the server reads what the client sent only while it has
    not paused its transport.
    """

    def __init__(self, site, host="127.0.0.1"):
        self.server = site.buildProtocol(IPv4Address("TCP", host, 40000))
        self.server_transport = BoundedTransport()
        self.server_transport.peerAddress = IPv4Address("TCP", host, 40000)
        self.server_transport.keepalive = False
        self.server_transport.setTcpKeepAlive = lambda on: setattr(
            self.server_transport, "keepalive", on
        )
        self.server.makeConnection(self.server_transport)
        self.client = None
        self.client_transport = StringTransport()
        self.reading = True
        self.lost = False

    def attach(self, client):
        self.client = client
        client.makeConnection(self.client_transport)

    def flush(self):
        moved = True
        while moved and not self.lost:
            moved = False
            sent = self.client_transport.value()
            if sent and self.server_transport.producerState != "paused":
                self.client_transport.clear()
                self.server.dataReceived(sent)
                moved = True
            if self.reading and self.server_transport.value():
                data = self.server_transport.value()
                self.server_transport.drain()
                if self.client is not None:
                    self.client.dataReceived(data)
                moved = True
            if not moved and (self.server_transport.disconnecting
                              or self.client_transport.disconnecting):
                self.lost = True
                self.server.connectionLost(Failure(ConnectionDone()))
                if self.client is not None:
                    self.client.connectionLost(Failure(ConnectionDone()))

    def raw(self, data):
        """Bytes to the server as they are; returns what it answered."""
        self.server.dataReceived(data)
        answer = self.server_transport.value()
        self.server_transport.drain()
        return answer


class _Endpoint:
    """An endpoint whose connections are L{Pipe}s to C{site}."""

    def __init__(self, site, host):
        self.site = site
        self.host = host
        self.pipe = None

    def endpointForURI(self, uri):
        return self

    def connect(self, factory):
        self.pipe = Pipe(self.site, self.host)
        protocol = factory.buildProtocol(None)
        self.pipe.attach(protocol)
        return defer.succeed(protocol)


class InMemory:
    """A realm's HTTP site with C{/ws}, and WebSocket clients of it in memory."""

    def __init__(self, testcase, limits=None, store=None, origins=()):
        self.limits = limits or Limits()
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.realm = make_realm(testcase, limits=self.limits, clock=self.clock, store=store)
        self.connections = ConnectionLimits(
            self.limits.connections_per_address, 1000, self.clock
        )
        self.chat = ChatFactory(self.realm, self.limits, self.clock, connections=self.connections)
        self.site = make_site(self.realm, self.limits, self.connections, self.clock)
        self.site.resource.putChild(
            b"ws", ChatSocketResource(self.chat.build_upgraded, self.limits.max_line_bytes, origins)
        )

    def connect(self, host="127.0.0.1"):
        """A connected L{Browser}, with its L{Pipe} as C{pipe}."""
        endpoint = _Endpoint(self.site, host)
        connecting = defer.Deferred.fromCoroutine(
            WebSocketClientEndpoint(endpoint, URL).connect(Browsers())
        )
        endpoint.pipe.flush()
        browser = connecting.result  # connected once the handshake is in
        browser.pipe = endpoint.pipe
        return browser

    def ask(self, browser, *lines):
        """Send C{lines} in one burst; return the messages that came back."""
        browser.send(*lines)
        browser.pipe.flush()
        return browser.take()

    def pipe(self, host="127.0.0.1"):
        return Pipe(self.site, host)


def same_shape(reply):
    """A reply with its random parts (session ids, message ids, times) blanked."""
    if isinstance(reply, list):
        return [same_shape(value) for value in reply]
    if not isinstance(reply, dict):
        return reply
    return {
        key: "*" if key in ("tokenid", "id", "timestamp") else same_shape(value)
        for key, value in reply.items()
    }


def handshake(origin=None, host=b"realm.test:8080", path=b"/ws"):
    """The bytes of a browser's WebSocket handshake, with C{origin} if given."""
    lines = [
        b"GET %s HTTP/1.1" % path, b"Host: " + host, b"Upgrade: websocket",
        b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(b"Origin: " + origin)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def frames(*parts, protocol=None):
    """
    The bytes of client frames (masked): each part is (payload, fin), a
    str payload a text frame (or its continuation), bytes a binary one;
    a message goes on across calls with the same C{protocol}.
    """
    protocol = protocol or FrameProtocol(client=True, extensions=[])
    return b"".join(bytes(protocol.send_data(payload, fin)) for payload, fin in parts)


def server_frames(data):
    """The frames in C{data}, bytes a server wrote after its 101 response."""
    protocol = FrameProtocol(client=True, extensions=[])
    protocol.receive_bytes(data.split(b"\r\n\r\n", 1)[1])
    return list(protocol.received_frames())
