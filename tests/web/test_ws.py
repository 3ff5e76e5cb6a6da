"""
The chat protocol over a WebSocket (C{/ws} on the HTTP port): Twisted's
own WebSocket client against the realm's site, in memory (a pipe of two
string transports, the server's bounded like a socket) and over loopback.
"""

import base64
import json
import tracemalloc

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.websocket import WebSocketClientEndpoint
from wsproto.frame_protocol import FrameProtocol

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from multirealm.connections import ConnectionLimits
from multirealm.web.files import make_site
from multirealm.web.ws import ChatSocketResource
from tests.helpers import (
    BoundedTransport, Client, make_realm, make_store, parse_replies, wait_until,
)

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

    def __init__(self, testcase, limits=None, store=None):
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

    def test_tcp_keepalive_finds_a_vanished_browser_as_it_does_a_chat_client(self):
        self.assertTrue(self.realm.connect().pipe.server_transport.keepalive)

    def test_quit_closes_with_a_close_frame_and_nothing_follows_it(self):
        heru = self.realm.connect()
        self.realm.ask(heru, "register heru pw", "auth heru pw", "subscribe -")
        heru.pipe.reading = False  # the replies before quit wait: so does bye
        heru.send(*["help"] * 30, "quit", "register eve pw")
        heru.pipe.client_transport.write(frames((b"binary", True)))
        heru.pipe.flush()
        socket = heru.pipe.server_transport
        self.assertTrue(socket.full)
        while socket.drain():
            pass
        self.assertTrue(socket.disconnecting)
        sent = server_frames(socket.out)
        self.assertEqual(sent[-1].opcode.name, "CLOSE")
        self.assertEqual(sent[-1].payload, (1000, ""))
        self.assertEqual(json.loads(sent[-2].payload)["message"], "bye")
        heru.pipe.reading = True
        heru.pipe.flush()
        self.assertIsNotNone(heru.lost)
        self.assertEqual(self.realm.connections.open, 0)

    @defer.inlineCallbacks
    def test_a_refused_message_after_quit_gets_no_reply_either(self):
        realm = InMemory(self, store=make_store(self, inline=False))  # answers come later
        browser = realm.connect()
        browser.send("register heru pw", "auth heru pw")
        yield wait_until(lambda: browser.pipe.flush() or len(browser.messages) == 2)
        browser.send("send - heru note", "quit")
        browser.pipe.client_transport.write(frames((b"binary", True)))

        def closed():
            browser.pipe.flush()
            return browser.lost is not None

        yield wait_until(closed)
        self.assertEqual([m["message"] for m in browser.take()[2:]], ["Message Sent", "bye"])

    def test_what_comes_after_the_browser_closed_is_dropped(self):
        heru = self.realm.connect()
        self.realm.ask(heru, "register heru pw", "auth heru pw", "subscribe -")
        heru.transport.loseConnection()  # a close frame, not read by the server yet
        heru.pipe.server.dataReceived(heru.pipe.client_transport.value())
        socket = heru.pipe.server_transport
        self.assertTrue(socket.disconnecting)  # the server answered it and closes
        alice = Client(self.realm.realm, factory=self.realm.chat)
        alice.login("alice")
        self.assertEqual(alice.ask("send - heru too late")["message"], "Message Sent")
        self.realm.clock.advance(self.realm.limits.idle_timeout)  # and it times out meanwhile
        self.assertEqual(server_frames(socket.out + socket.value())[-1].opcode.name, "CLOSE")

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


def frames(*parts, protocol=None):
    """
    The bytes of client frames (masked): each part is (payload, fin), a
    str payload a text frame (or its continuation), bytes a binary one;
    a message goes on across calls with the same C{protocol}.
    """
    protocol = protocol or FrameProtocol(client=True, extensions=[])
    return b"".join(bytes(protocol.send_data(payload, fin)) for payload, fin in parts)


class MessageTests(unittest.TestCase):
    """What a message may be: one line of text, of at most max_line_bytes."""

    def setUp(self):
        self.realm = InMemory(self, Limits(max_line_bytes=1000))
        self.browser = self.realm.connect()

    def raw(self, data):
        self.browser.pipe.client_transport.write(data)
        self.browser.pipe.flush()
        return self.browser.take()

    def codes(self, replies):
        return [r.get("code", r.get("status")) for r in replies]

    def test_a_longer_message_is_line_too_long_and_the_connection_goes_on(self):
        replies = self.realm.ask(self.browser, "ping", "x" * 1001, "é" * 501, "ping")
        self.assertEqual(self.codes(replies), ["OK", "line_too_long", "line_too_long", "OK"])
        self.assertEqual(self.codes(self.realm.ask(self.browser, "x" * 1000 + "\r")), ["unknown_command"])

    def test_a_longer_message_is_not_kept_as_it_arrives(self):
        client = FrameProtocol(client=True, extensions=[])
        server = self.browser.pipe.server
        for first, piece in ("ping ", "x" * 65536), (b"ping ", b"x" * 65536):
            data = frames((first, False), *[(piece, False)] * 32, protocol=client)
            chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            tracemalloc.start()
            try:
                for chunk in chunks:
                    server.dataReceived(chunk)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            self.assertLess(peak, 512 * 1024)  # of 2 MiB in the message so far
            replies = self.raw(frames((piece[:0], True), protocol=client))
            self.assertEqual(len(replies), 1)
        self.assertIsNone(self.browser.lost)

    def test_a_message_in_fragments_is_one_line(self):
        replies = self.raw(frames(("pi", False), ("", False), ("ng", True)))
        self.assertEqual(self.codes(replies), ["OK"])

    def test_a_line_break_in_a_message_is_bad_request_and_nothing_of_it_is_done(self):
        replies = self.realm.ask(self.browser, "ping\nquit", "register a pw\r\nregister b pw",
                                 "ping")
        self.assertEqual(self.codes(replies), ["bad_request", "bad_request", "OK"])
        self.assertIn("line break", replies[0]["message"])
        self.assertIsNone(self.browser.lost)

    def test_a_binary_message_is_bad_encoding_and_the_connection_goes_on(self):
        replies = self.raw(frames((b"ping", True), ("ping", True)))
        self.assertEqual(self.codes(replies), ["bad_encoding", "OK"])
        self.assertIn("text message", replies[0]["message"])

    def test_refusals_count_against_the_rate(self):
        realm = InMemory(self, Limits(rate_limit_burst=2, rate_limit_per_second=0.001))
        browser = realm.connect()
        browser.pipe.client_transport.write(frames((b"x", True), ("a\nb", True), ("ping", True)))
        browser.pipe.flush()
        self.assertEqual(self.codes(browser.take()), ["bad_encoding", "bad_request", "rate_limited"])

    def test_a_text_message_that_is_not_utf8_closes_with_1007(self):
        replies = self.raw(b"\x81\x81\x00\x00\x00\x00\xff")  # masked, with a zero key
        self.assertEqual(replies, [])
        self.assertIsNotNone(self.browser.lost)
        close = server_frames(self.browser.pipe.server_transport.out)[-1]
        self.assertEqual((close.opcode.name, close.payload[0]), ("CLOSE", 1007))
        self.assertEqual(self.realm.connections.open, 0)
        self.assertEqual(self.realm.ask(self.realm.connect(), "ping")[0]["message"], "pong")

    def test_an_empty_message_is_an_empty_line_no_reply(self):
        self.assertEqual(self.codes(self.realm.ask(self.browser, "", "  ", "ping")), ["OK"])

    @defer.inlineCallbacks
    def replies(self, count, *lines):
        """Send C{lines}; the next C{count} messages, waiting (on the real reactor) for the disk."""
        browser = self.browser
        browser.send(*lines)

        def arrived():
            browser.pipe.flush()
            return len(browser.messages) >= count

        yield wait_until(arrived)
        return browser.take()

    @defer.inlineCallbacks
    def test_a_file_is_sent_a_line_a_message(self):
        replies = yield self.replies(
            4, "register a pw", "auth a pw", "sendfile - a hi.txt", "", "SGVs", "bG8=", "",
            "inbox -",
        )
        self.assertEqual(replies[2]["message"], "Message Sent")
        file_id = replies[3]["messages"][0]["file_id"]
        (reply,) = yield self.replies(1, f"getfile - {file_id}")
        self.assertEqual(reply["content"], "SGVsbG8=")

    @defer.inlineCallbacks
    def test_a_refused_message_in_a_file_body_fails_the_file_not_a_reply_of_its_own(self):
        replies = yield self.replies(
            4, "register a pw", "auth a pw", "sendfile - a hi.txt", "", "SGVs\nbG8=", "", "ping",
        )
        self.assertEqual(self.codes(replies), ["OK", "OK", "bad_file_encoding", "OK"])
        self.assertIn("line break", replies[2]["message"])


def server_frames(data):
    """The frames in C{data}, bytes a server wrote after its 101 response."""
    protocol = FrameProtocol(client=True, extensions=[])
    protocol.receive_bytes(data.split(b"\r\n\r\n", 1)[1])
    return list(protocol.received_frames())


class FlowTests(unittest.TestCase):
    """Back-pressure, order while reading is held, and streamed replies."""

    def setUp(self):
        self.realm = InMemory(self, Limits(event_buffer_bytes=16384))

    def test_a_refused_message_keeps_its_place_while_reading_is_held(self):
        browser = self.realm.connect()
        # About 260 KiB of help: the socket fills a quarter of the way, then
        # again and again as the browser reads, in the middle of the helps
        # read while it was full.
        browser.pipe.reading = False
        browser.send(*["help"] * 80)
        browser.pipe.client_transport.write(frames((b"binary", True), ("x\ny", True)))
        browser.send("ping")
        browser.pipe.flush()
        self.assertEqual(browser.pipe.server_transport.producerState, "paused")
        browser.pipe.reading = True
        browser.pipe.flush()
        replies = browser.take()
        self.assertEqual([r.get("code", "commands" in r) for r in replies],
                         [True] * 80 + ["bad_encoding", "bad_request", False])

    def test_a_browser_that_stops_reading_is_bounded_like_a_chat_connection(self):
        heru = self.realm.connect()
        self.realm.ask(heru, "register heru pw", "auth heru pw", "subscribe -")
        on_chat = BoundedTransport()
        chat = Client(self.realm.realm, factory=self.realm.chat, transport=on_chat)
        chat.send("auth heru pw", "subscribe -")
        on_chat.drain()
        heru.pipe.reading = False
        alice = Client(self.realm.realm, factory=self.realm.chat)
        alice.login("alice")
        for n in range(300):
            alice.ask(f"send - heru {n} " + "x" * 1000)
        heru.pipe.flush()
        socket = heru.pipe.server_transport
        # What waits: the socket's 64 KiB, and events within their budget.
        self.assertLess(socket.most_buffered, 65536 + 1200)
        # (The chat connection below does not read either: two budgets.)
        self.assertLess(self.realm.chat.reply_budget.used, 2 * (16384 + 1200))
        heru.pipe.reading = True
        heru.pipe.flush()
        over_ws = [e for e in heru.take() if "event" in e]
        while on_chat.drain():
            pass
        over_chat = [e for e in parse_replies(on_chat.out) if "event" in e]
        for stream in over_ws, over_chat:
            self.assertEqual(stream[-1], {"event": "overflow"})
            self.assertLess(len(stream), 100)
        self.assertAlmostEqual(len(over_ws), len(over_chat), delta=3)
        self.assertEqual(self.realm.chat.reply_budget.used, 0)

    @defer.inlineCallbacks
    def test_a_long_reply_streams_in_fragments_as_the_browser_reads(self):
        from tests.chat.test_files import sendfile

        payload = bytes(range(256)) * 4096  # 1 MiB
        alice = Client(self.realm.realm, factory=self.realm.chat)
        token = alice.login("alice")
        alice.raw(sendfile(token, "alice", "big.bin", payload))
        yield wait_until(lambda: b"Message Sent" in alice.transport.value())
        alice.replies()
        file_id = alice.ask(f"inbox {token}")["messages"][0]["file_id"]
        browser = self.realm.connect()
        browser.pipe.reading = False
        browser.send(f"getfile {token} {file_id}")
        browser.pipe.flush()
        socket = browser.pipe.server_transport
        self.assertTrue(socket.full)
        self.assertLess(socket.most_buffered, 65536 + 70000)
        self.assertLess(self.realm.chat.reply_budget.used, 70000)
        browser.pipe.reading = True
        browser.pipe.flush()
        replies = browser.take()
        self.assertEqual(len(replies), 1, [str(r)[:200] for r in replies])
        self.assertEqual(base64.b64decode(replies[0]["content"]), payload)
        # One message in parts: each part sent as it was read from disk.
        finished = [f.message_finished for f in server_frames(socket.out)]
        self.assertGreater(len(finished), 10)
        self.assertEqual(finished, [False] * (len(finished) - 1) + [True])


class TimeoutTests(unittest.TestCase):
    def setUp(self):
        self.realm = InMemory(self, Limits(idle_timeout=60, header_timeout=10))
        self.browser = self.realm.connect()

    def advance(self, seconds):
        self.realm.clock.advance(seconds)
        self.browser.pipe.flush()

    def test_the_chat_idle_timeout_applies_not_the_http_timers(self):
        for _ in range(5):
            self.advance(50)
            self.assertEqual(self.realm.ask(self.browser, "ping"), [{"status": "OK", "message": "pong"}])
        self.assertIsNone(self.browser.lost)
        self.advance(59)
        self.assertIsNone(self.browser.lost)
        self.advance(1)
        (reply,) = self.browser.take()
        self.assertEqual(reply["code"], "idle_timeout")
        self.assertIsNotNone(self.browser.lost)
        self.assertEqual(self.realm.connections.open, 0)


class ConnectionCountTests(unittest.TestCase):
    def setUp(self):
        self.realm = InMemory(self, Limits(connections_per_address=2))

    def test_a_websocket_counts_once_and_gives_its_place_back(self):
        first = self.realm.connect()
        self.realm.connect()
        self.realm.connect("127.0.0.2")  # another address
        self.assertEqual(self.realm.connections.open, 3)
        answer = self.realm.pipe().raw(handshake())
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertIn(b"too_many_connections", answer)
        first.transport.loseConnection()  # a close frame: the server answers and closes
        first.pipe.flush()
        self.assertIsNotNone(first.lost)
        self.assertEqual(self.realm.connections.open, 2)
        self.assertEqual(self.realm.ask(self.realm.connect(), "ping"), [{"status": "OK", "message": "pong"}])
