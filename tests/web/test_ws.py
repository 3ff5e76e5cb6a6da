"""
The chat protocol over a WebSocket (C{/ws} on the HTTP port): what a
message is, who may open one, and the same answers as the chat port, in
memory and over loopback.
"""

import gc
import json
import os
import tracemalloc
import weakref

from twisted.internet import defer, endpoints, reactor
from twisted.internet.testing import AccumulatingProtocol
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest
from twisted.web.websocket import WebSocketClientEndpoint
from wsproto.frame_protocol import FrameProtocol

from multirealm import config
from multirealm.config import Limits
from multirealm.connections import ConnectionLimits
from multirealm.service import build_realm_service
from tests import test_service
from tests.helpers import Client, InlineHasher, wait_until
from tests.web.ws_client import Browsers, InMemory, frames, handshake, same_shape, server_frames


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
            [same_shape(r) for r in over_ws], [same_shape(r) for r in over_chat]
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

    def test_the_http_request_a_websocket_started_as_is_let_go(self):
        made = []
        factory = self.realm.site.requestFactory

        def request(*args, **kwargs):
            made.append(factory(*args, **kwargs))
            return made[-1]

        self.realm.site.requestFactory = request
        browser = self.realm.connect()
        (ref,) = [weakref.ref(r) for r in made]
        del made[:]
        gc.collect()
        self.assertIsNone(ref())
        self.assertEqual(self.realm.ask(browser, "ping")[0]["message"], "pong")

    def test_tcp_keepalive_finds_a_vanished_browser_as_it_does_a_chat_client(self):
        self.assertTrue(self.realm.connect().pipe.server_transport.keepalive)

    def test_events_arrive_as_messages(self):
        heru = self.realm.connect()
        alice = self.realm.connect()
        self.realm.ask(heru, "register heru pw", "auth heru pw", "subscribe -")
        self.realm.ask(alice, "register alice pw", "auth alice pw", "send - heru hi there")
        heru.pipe.flush()
        (event,) = heru.take()
        self.assertEqual(event["event"], "message")
        self.assertEqual(event["message"]["msg"], "hi there")


class HandshakeTests(unittest.TestCase):
    """Who may open /ws, and what the handshake takes."""

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

    def test_an_origin_web_origins_lists_may_open_it_behind_a_tls_proxy(self):
        # The proxy speaks plain HTTP to the realm: the page's https origin
        # is not this port's, so only the operator's list lets it in.
        self.assertEqual(self.status(handshake(b"https://chat.example.org", b"chat.example.org")),
                         b"HTTP/1.1 403 Forbidden")
        self.realm = InMemory(self, origins=[("https", "chat.example.org", 443)])
        for origin in (b"https://chat.example.org", b"https://Chat.Example.org:443"):
            self.assertEqual(self.status(handshake(origin, b"chat.example.org")),
                             b"HTTP/1.1 101 Switching Protocols", origin)
        for origin in (b"https://chat.example.org:8443", b"http://chat.example.org:443",
                       b"https://evil.example", b"https://chat.example.org/x"):
            self.assertEqual(self.status(handshake(origin, b"chat.example.org")),
                             b"HTTP/1.1 403 Forbidden", origin)

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
            self.assertIn(b"\r\nX-Content-Type-Options: nosniff\r\n", answer)
            # Still HTTP: what comes next is no WebSocket message to the chat.
            self.assertEqual(pipe.raw(b"\x81\x84abcd\x00\x00\x00\x00"), b"")

    def test_a_request_that_is_no_handshake_is_a_400_and_no_error_logged(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for request in [
            b"GET /ws HTTP/1.1\r\nHost: realm.test:8080\r\n\r\n",  # a link followed
            handshake().replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""),
        ]:
            answer = self.realm.pipe().raw(request)
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            self.assertEqual(body["code"], "bad_request")
        self.assertEqual([e for e in events if e["log_level"] > LogLevel.info], [])

    def test_frames_sent_with_the_handshake_are_dropped(self):
        pipe = self.realm.pipe()
        answer = pipe.raw(handshake() + frames(("ping", True)))
        answer += pipe.raw(frames(("help", True)))
        self.assertTrue(answer.startswith(b"HTTP/1.1 101 "))
        (reply,) = [json.loads(f.payload) for f in server_frames(answer)]
        self.assertIn("commands", reply)

    def test_two_origins_are_refused(self):
        request = handshake(b"http://realm.test:8080").replace(
            b"\r\n\r\n", b"\r\nOrigin: http://evil.test\r\n\r\n"
        )
        self.assertTrue(self.status(request).startswith(b"HTTP/1.1 403 "))


class LoopbackTests(unittest.TestCase):
    """A realm as it runs (build_realm_service), on real loopback sockets."""

    timeout = 30

    def setUp(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(test_service.REALMS_INI)
        self.connections = ConnectionLimits(100, 1000)
        self.service = build_realm_service(
            config.load(path), "1", reactor, hasher=InlineHasher(), connections=self.connections
        )
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.http_port = self.service.getServiceNamed("http").endpoint.port.getHost().port

    @defer.inlineCallbacks
    def connect(self):
        endpoint = WebSocketClientEndpoint.new(
            reactor, f"http://127.0.0.1:{self.http_port}/ws", connectTimeout=10
        )
        browser = yield defer.Deferred.fromCoroutine(endpoint.connect(Browsers()))
        self.addCleanup(self.close, browser)
        return browser

    def close(self, browser):
        if browser.lost is None:
            browser.transport.loseConnection()

    @defer.inlineCallbacks
    def replies(self, browser, count):
        yield wait_until(lambda: len(browser.messages) >= count)
        return browser.take()

    @defer.inlineCallbacks
    def test_the_same_replies_and_events_as_the_chat_port(self):
        def script(a, b):
            return [f"register {a} pw", f"register {b} pw", f"auth {a} pw",
                    f"send - {b} hello", "frobnicate", "inbox -"]

        def shape(replies, a, b):
            text = json.dumps([same_shape(r) for r in replies])
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

    @defer.inlineCallbacks
    def test_each_websocket_counts_once_until_it_closes(self):
        browsers = []
        for _ in range(3):
            browsers.append((yield self.connect()))
        self.assertEqual(self.connections.open, 3)
        for browser in browsers:
            browser.send("quit")
        yield wait_until(lambda: all(b.lost is not None for b in browsers))
        yield wait_until(lambda: self.connections.open == 0)

    @defer.inlineCallbacks
    def test_a_websocket_opened_is_in_the_access_log(self):
        lines = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        browser = yield self.connect()
        browser.send("ping")
        yield self.replies(browser, 1)
        logged = [str(event["log_io"]) for event in lines if "log_io" in event]
        self.assertEqual(len(logged), 1, logged)
        self.assertRegex(logged[0], r'^realm 1 "127\.0\.0\.1" .* "GET /ws HTTP/1\.1" 101 ')

    @defer.inlineCallbacks
    def test_a_page_of_another_origin_gets_403(self):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.http_port, timeout=10)
        client = yield endpoints.connectProtocol(endpoint, AccumulatingProtocol())
        client.closedDeferred = defer.Deferred()
        host = f"127.0.0.1:{self.http_port}".encode()
        client.transport.write(handshake(b"http://evil.test", host))
        yield wait_until(lambda: b"}" in client.data)
        self.assertTrue(client.data.startswith(b"HTTP/1.1 403 "), client.data)
        self.assertIn(b'"forbidden"', client.data)
        client.transport.loseConnection()
        yield client.closedDeferred
        yield wait_until(lambda: self.connections.open == 0)


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
        replies = self.realm.ask(self.browser, "x" * 1000 + "\r")  # the most, with its \r
        self.assertEqual(self.codes(replies), ["unknown_command"])

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

    def test_a_message_in_fragments_or_split_across_reads_is_one_line(self):
        replies = self.raw(frames(("pi", False), ("", False), ("ng", True)))
        self.assertEqual(self.codes(replies), ["OK"])
        data = frames(("ping", True))
        self.assertEqual(self.raw(data[:8]), [])
        self.assertEqual(self.codes(self.raw(data[8:])), ["OK"])

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
        self.assertEqual(self.codes(browser.take()),
                         ["bad_encoding", "bad_request", "rate_limited"])

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
