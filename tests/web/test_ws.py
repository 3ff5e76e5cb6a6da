"""
The chat protocol over a WebSocket (C{/ws} on the HTTP port): Twisted's
own WebSocket client against the realm's site, in memory (a pipe of two
string transports, the server's bounded like a socket) and over loopback.
"""

import json

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.websocket import WebSocketClientEndpoint

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from multirealm.connections import ConnectionLimits
from multirealm.web.files import make_site
from multirealm.web.ws import ChatSocketResource
from tests.helpers import BoundedTransport, Client, make_realm

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


class _Browsers:
    def buildProtocol(self, url):
        return Browser()


class Pipe:
    """
    One TCP connection in memory between a client protocol and the site:
    the server's side is a L{BoundedTransport} (its producer paused past
    64 KiB unread, as a socket's), read by the client only while
    C{reading}.
    """

    def __init__(self, site, host="127.0.0.1"):
        self.server = site.buildProtocol(IPv4Address("TCP", host, 40000))
        self.server_transport = BoundedTransport()
        self.server_transport.peerAddress = IPv4Address("TCP", host, 40000)
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
            if sent:
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
                from twisted.python.failure import Failure
                from twisted.internet.error import ConnectionDone
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

    def __init__(self, testcase, limits=None):
        self.limits = limits or Limits()
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.realm = make_realm(testcase, limits=self.limits, clock=self.clock)
        self.connections = ConnectionLimits(
            self.limits.connections_per_address, 1000, self.clock
        )
        self.chat = ChatFactory(self.realm, self.limits, self.clock, connections=self.connections)
        self.site = make_site(self.realm, self.limits, self.connections, self.clock)
        self.site.resource.putChild(
            b"ws", ChatSocketResource(self.chat.build_upgraded, self.limits.max_line_bytes)
        )

    def connect(self, host="127.0.0.1"):
        """A connected L{Browser}, with its L{Pipe} as C{pipe}."""
        endpoint = _Endpoint(self.site, host)
        connecting = defer.Deferred.fromCoroutine(
            WebSocketClientEndpoint(endpoint, URL).connect(_Browsers())
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


def _same_shape(reply):
    """A reply with its random parts (session ids, message ids, times) blanked."""
    if isinstance(reply, list):
        return [_same_shape(value) for value in reply]
    if not isinstance(reply, dict):
        return reply
    return {
        key: "*" if key in ("tokenid", "id", "timestamp") else _same_shape(value)
        for key, value in reply.items()
    }


class InMemoryTests(unittest.TestCase):
    def setUp(self):
        self.realm = InMemory(self)

    def test_register_auth_send_answer_as_on_the_chat_port(self):
        script = [
            "register alice pw", "register alice pw", "register heru pw",
            "auth alice pw", "auth alice nope", "send - heru hello", "send - nobody hi",
            "frobnicate", "inbox -", "help", "ping",
        ]
        browser = self.realm.connect()
        over_ws = self.realm.ask(browser, *script)
        twin = InMemory(self)
        chat = Client(twin.realm, factory=twin.chat)
        chat.send(*script)
        over_chat = chat.replies()
        self.assertEqual(len(over_ws), len(script))
        self.assertEqual(
            [_same_shape(r) for r in over_ws], [_same_shape(r) for r in over_chat]
        )
        self.assertEqual(over_ws[5]["message"], "Message Sent")

    def test_pipelined_requests_are_answered_in_request_order(self):
        browser = self.realm.connect()
        lines = ["register alice pw", "auth alice pw"] + [f"send - alice m{i}" for i in range(50)]
        lines.append("inbox -")
        replies = self.realm.ask(browser, *lines)
        self.assertEqual(len(replies), 53)
        self.assertEqual(replies[1]["status"], "OK")
        self.assertTrue(all(r["message"] == "Message Sent" for r in replies[2:52]))
        self.assertEqual([m["msg"] for m in replies[52]["messages"]],
                         [f"m{i}" for i in range(50)])

    def test_events_arrive_as_messages(self):
        heru = self.realm.connect()
        alice = self.realm.connect()
        self.realm.ask(heru, "register heru pw", "auth heru pw", "subscribe -")
        self.realm.ask(alice, "register alice pw", "auth alice pw", "send - heru hi there")
        heru.pipe.flush()
        (event,) = heru.take()
        self.assertEqual(event["event"], "message")
        self.assertEqual(event["message"]["msg"], "hi there")


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


class OriginTests(unittest.TestCase):
    def setUp(self):
        self.realm = InMemory(self)

    def status(self, data):
        return self.realm.pipe().raw(data).split(b"\r\n", 1)[0]

    def test_a_page_of_this_origin_may_open_it(self):
        for origin, host in [
            (b"http://realm.test:8080", b"realm.test:8080"),
            (b"http://REALM.test:8080", b"realm.test:8080"),
            (b"http://realm.test", b"realm.test:80"),
            (b"http://[::1]:8080", b"[::1]:8080"),
        ]:
            self.assertEqual(self.status(handshake(origin, host)),
                             b"HTTP/1.1 101 Switching Protocols", origin)

    def test_a_client_without_origin_is_no_browser_and_may(self):
        self.assertEqual(self.status(handshake()), b"HTTP/1.1 101 Switching Protocols")

    def test_another_origin_gets_403_and_no_websocket(self):
        for origin in [
            b"http://evil.test:8080", b"http://realm.test:8081", b"https://realm.test:8080",
            b"http://realm.test", b"null", b"http://realm.test:8080.evil.test",
            b"http://realm.test:8080/path", b"http://realm.test:x",
        ]:
            pipe = self.realm.pipe()
            answer = pipe.raw(handshake(origin))
            self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), (origin, answer))
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            self.assertEqual(body["code"], "forbidden")
            # Still HTTP: what comes next is no WebSocket message to the chat.
            self.assertEqual(pipe.raw(b"\x81\x84abcd\x00\x00\x00\x00"), b"")

    def test_two_origins_are_refused(self):
        request = handshake(b"http://realm.test:8080").replace(
            b"\r\n\r\n", b"\r\nOrigin: http://evil.test\r\n\r\n"
        )
        self.assertTrue(self.status(request).startswith(b"HTTP/1.1 403 "))


class LoopbackTests(unittest.TestCase):
    """A realm as it runs (build_realm_service), on real loopback sockets."""

    timeout = 30

    def setUp(self):
        import os
        from twisted.internet import reactor
        from multirealm import config
        from multirealm.service import build_realm_service
        from tests import test_service
        from tests.helpers import InlineHasher

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(test_service.REALMS_INI)
        self.service = build_realm_service(config.load(path), "1", reactor, hasher=InlineHasher())
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.reactor = reactor
        self.http_port = self.service.getServiceNamed("http").endpoint.port.getHost().port
        self.chat_service = self.service

    @defer.inlineCallbacks
    def connect(self):
        endpoint = WebSocketClientEndpoint.new(
            self.reactor, f"http://127.0.0.1:{self.http_port}/ws", connectTimeout=10
        )
        browser = yield defer.Deferred.fromCoroutine(endpoint.connect(_Browsers()))
        self.addCleanup(self.close, browser)
        return browser

    def close(self, browser):
        if browser.lost is None:
            browser.transport.loseConnection()

    @defer.inlineCallbacks
    def replies(self, browser, count):
        from tests.helpers import wait_until

        yield wait_until(lambda: len(browser.messages) >= count)
        return browser.take()

    @defer.inlineCallbacks
    def test_the_same_replies_and_events_as_the_chat_port(self):
        from tests import test_service

        def script(a, b):
            return [f"register {a} pw", f"register {b} pw", f"auth {a} pw",
                    f"send - {b} hello", "frobnicate", "inbox -"]

        def shape(replies, a, b):
            text = json.dumps([_same_shape(r) for r in replies])
            return text.replace(a, "A").replace(b, "B")

        browser = yield self.connect()
        browser.send(*script("alice", "heru"))
        over_ws = yield self.replies(browser, 6)
        over_chat = yield test_service.ServiceTests.talk(self, self.service, *script("bob", "cy"))
        self.assertEqual(shape(over_ws, "alice", "heru"), shape(over_chat, "bob", "cy"))
        heru = yield self.connect()
        heru.send("auth heru pw", "subscribe -")
        yield self.replies(heru, 2)
        browser.send("send - heru over loopback")
        yield self.replies(browser, 1)
        (event,) = yield self.replies(heru, 1)
        self.assertEqual(event["message"]["msg"], "over loopback")
