"""
The chat protocol over a WebSocket (C{/ws}): back-pressure, order while
reading is held, streamed replies, timeouts, closing and the connection
count.
"""

import base64
import json

from twisted.internet import defer
from twisted.trial import unittest
from wsproto.frame_protocol import FrameProtocol

from multirealm.config import Limits
from tests.helpers import BoundedTransport, Client, make_store, parse_replies, wait_until
from tests.web.ws_client import InMemory, frames, handshake, server_frames

PONG = {"status": "OK", "message": "pong"}


class ClosingTests(unittest.TestCase):
    def setUp(self):
        self.realm = InMemory(self)

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

    def test_pings_from_a_browser_that_does_not_read_are_bounded(self):
        # Each ping is answered at once, by Twisted, out of the chat's queue:
        # a browser that pings and never reads stops being read instead.
        browser = self.realm.connect()
        browser.pipe.reading = False
        pinging = FrameProtocol(client=True, extensions=[])
        ping = bytes(pinging.ping(b"p" * 125))
        for _ in range(20):
            browser.pipe.client_transport.write(ping * 500)
            browser.pipe.flush()
        socket = browser.pipe.server_transport
        self.assertLess(socket.most_buffered, 65536 + 500 * 127)
        browser.pipe.reading = True
        browser.pipe.flush()
        self.assertEqual(self.realm.ask(browser, "ping"), [PONG])

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
        sent = self.realm.realm.metrics.file_bytes_out
        self.assertEqual((sent["websocket"], sent["chat"]), (len(payload), 0))  # by port


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
            self.assertEqual(self.realm.ask(self.browser, "ping"), [PONG])
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
        opened = self.realm.realm.metrics.connections
        self.assertEqual((opened["websocket"], opened["chat"]), (3, 0))  # as /metrics shows them
        answer = self.realm.pipe().raw(handshake())
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertIn(b"too_many_connections", answer)
        first.transport.loseConnection()  # a close frame: the server answers and closes
        first.pipe.flush()
        self.assertIsNotNone(first.lost)
        self.assertEqual(self.realm.connections.open, 2)
        self.assertEqual(opened["websocket"], 2)
        self.assertEqual(self.realm.ask(self.realm.connect(), "ping"), [PONG])
