"""
The client's connection, on StringTransports: replies matched to requests
in order, events shown as they come, and after a dropped connection: the
same session subscribed again and what came meanwhile caught up from
history, each message shown once.  The session id is never shown.
"""

import json

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from multirealm.client import render
from multirealm.client.connection import ChatSession, NotConnected

TOKEN = "t" * 43


def reply(**fields):
    return json.dumps(fields).encode() + b"\r\n\r\n"


def entry(n, sender="bob"):
    return {"id": f"{n:032x}", "msg_from": sender, "msg_to": "alice", "msg": f"m{n}",
            "timestamp": "2026-11-25T21:32:15.449+00:00"}


class SessionTests(unittest.TestCase):
    def setUp(self):
        self.shown = []
        self.clock = task.Clock()  # the session's reactor: only its timers are used here
        self.session = ChatSession("127.0.0.1", 1, self.clock, self.shown.append,
                                   lambda item: render.event(item, self.session.user))

    def connect(self):
        protocol = self.session._factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(self.requests(transport), ["ping"])  # is it a chat port?
        protocol.dataReceived(reply(status="OK", message="pong"))
        return protocol, transport

    def requests(self, transport):
        lines = transport.value().decode().split("\r\n")
        transport.clear()
        return [line for line in lines if line]

    def log_in(self, protocol, transport):
        done = self.session.login("alice", "pw")
        self.assertEqual(self.requests(transport), ["auth alice pw"])
        protocol.dataReceived(reply(status="OK", tokenid=TOKEN))
        self.assertEqual(self.requests(transport), [f"subscribe {TOKEN}"])
        protocol.dataReceived(reply(status="OK", message="subscribed"))
        self.assertEqual(self.requests(transport), [f"inbox {TOKEN}"])
        protocol.dataReceived(reply(status="OK", messages=[entry(1)], more=False))
        self.assertEqual(self.requests(transport), [f"mygroups {TOKEN}"])
        protocol.dataReceived(reply(status="OK", groups=[]))
        self.assertEqual(self.successResultOf(done)["status"], "OK")

    def test_events_are_shown_and_a_reconnect_catches_up_once(self):
        protocol, transport = self.connect()
        self.log_in(protocol, transport)
        # An event, split across reads, with a reply in the same read.
        event = json.dumps({"event": "message", "kind": "private", "message": entry(2)}).encode()
        pending = self.session.request("ping")
        protocol.dataReceived(event[:10])
        protocol.dataReceived(event[10:] + b"\r\n\r\n" + reply(status="OK", message="pong"))
        self.assertEqual(self.successResultOf(pending)["message"], "pong")
        self.assertIn("bob → you: m2", self.shown[-1])
        # The connection drops: requests in flight fail, a new one resumes.
        pending = self.session.request("ping")
        protocol.connectionLost()
        self.failureResultOf(pending, NotConnected)
        self.assertIn("reconnecting", self.shown[-1])
        protocol, transport = self.connect()
        self.assertEqual(self.requests(transport), [f"subscribe {TOKEN}"])
        protocol.dataReceived(reply(status="OK", message="subscribed"))
        # From the last message seen, m2: m3 came while it was away.
        self.assertEqual(self.requests(transport), [f"inbox {TOKEN} {entry(2)['id']}"])
        protocol.dataReceived(reply(status="OK", messages=[entry(3)], more=False))
        self.assertIn("bob → you: m3", self.shown[-1])
        # Groups joined meanwhile are caught up from their start.
        self.assertEqual(self.requests(transport), [f"mygroups {TOKEN}"])
        protocol.dataReceived(reply(status="OK", groups=["team@2"]))
        self.assertEqual(self.requests(transport), [f"groupinbox {TOKEN} team@2"])
        protocol.dataReceived(reply(status="OK", more=False, messages=[
            dict(entry(5, "cy@2"), msg_to="team@2")]))
        self.assertIn("#team@2 cy@2: m5", self.shown[-1])
        # The same message as an event too: shown once.
        count = len(self.shown)
        protocol.dataReceived(
            json.dumps({"event": "message", "kind": "private", "message": entry(3)}).encode()
            + b"\r\n\r\n"
        )
        self.assertEqual(len(self.shown), count)
        self.assertFalse(any(TOKEN in line for line in self.shown))

    def test_a_group_created_with_us_in_it_is_followed(self):
        protocol, transport = self.connect()
        self.log_in(protocol, transport)
        for group, creator in (("crew", "alice"), ("team@2", "cy@2")):  # by us, by another
            protocol.dataReceived(json.dumps({
                "event": "member", "group": group, "change": "created", "member": creator,
                "by": creator,
            }).encode() + b"\r\n\r\n")
        self.assertEqual(self.session.groups, {"crew", "team@2"})
        self.assertEqual(self.shown[-2:], ["you created #crew", "cy@2 created #team@2"])

    def test_an_overflow_subscribes_again_and_catches_up(self):
        protocol, transport = self.connect()
        self.log_in(protocol, transport)
        protocol.dataReceived(b'{"event": "overflow"}\r\n\r\n')
        self.assertIn("catching up", self.shown[-1])
        self.assertEqual(self.requests(transport), [f"subscribe {TOKEN}"])
        protocol.dataReceived(reply(status="OK", message="subscribed"))
        self.assertEqual(self.requests(transport), [f"inbox {TOKEN} {entry(1)['id']}"])
        protocol.dataReceived(reply(status="OK", messages=[entry(4)], more=False))
        self.assertIn("m4", self.shown[-1])

    def test_a_quiet_client_pings_so_the_realm_keeps_it(self):
        protocol, transport = self.connect()
        self.log_in(protocol, transport)
        self.clock.advance(60)
        self.assertEqual(self.requests(transport), ["ping"])
        protocol.dataReceived(reply(status="OK", message="pong"))

    def test_a_reconnect_with_nothing_seen_yet_catches_up_the_newest(self):
        protocol, transport = self.connect()
        self.session.login("alice", "pw")
        protocol.dataReceived(reply(status="OK", tokenid=TOKEN))
        protocol.dataReceived(reply(status="OK", message="subscribed"))
        protocol.dataReceived(reply(status="OK", messages=[], more=False))  # an empty inbox
        protocol.dataReceived(reply(status="OK", groups=[]))
        self.requests(transport)
        protocol.connectionLost()
        protocol, transport = self.connect()
        protocol.dataReceived(reply(status="OK", message="subscribed"))
        self.assertEqual(self.requests(transport), [f"subscribe {TOKEN}", f"inbox {TOKEN}"])
        protocol.dataReceived(reply(status="OK", messages=[entry(7)], more=False))
        self.assertIn("bob → you: m7", self.shown[-1])

    def test_a_request_made_during_an_upload_waits_for_its_body(self):
        import io

        protocol, transport = self.connect()
        self.session.request("sendfile - heru a.bin", io.BytesIO(b"x" * 100_000))
        self.session.request("ping")
        while transport.producer is not None:
            transport.producer.resumeProducing()
        data = transport.value()
        # The body's last line, the empty line that ends it, then the ping.
        self.assertTrue(data.endswith(b"\r\n\r\nping\r\n"), data[-40:])
        self.assertEqual(data.count(b"ping"), 1)

    def test_a_reply_longer_than_any_is_dropped(self):
        from multirealm.client import connection

        protocol, transport = self.connect()
        self.patch(connection, "MAX_REPLY_BYTES", 1000)
        protocol.dataReceived(b"x" * 2000)
        self.assertTrue(transport.disconnecting)

    def test_not_connected_is_said_not_raised(self):
        self.failureResultOf(self.session.request("ping"), NotConnected)


class StreamedFileTests(unittest.TestCase):
    """A getfile reply goes to disk as it arrives, never whole into memory."""

    def setUp(self):
        from multirealm.client.transfers import FileSink

        self.shown = []
        self.session = ChatSession("127.0.0.1", 1, task.Clock(), self.shown.append,
                                   lambda item: render.event(item, None))
        self.protocol = self.session._factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(reply(status="OK", message="pong"))  # its first request
        self.folder = self.mktemp()
        import os

        os.makedirs(self.folder)
        self.sink = FileSink(self.folder, "f" * 32)

    def test_the_file_is_written_as_it_comes_in_any_pieces(self):
        import base64
        import os

        data = os.urandom(300_001)
        reply = (b'{"status": "OK", "filename": "photo 1.jpg", "size": 300001, "content": "'
                 + base64.b64encode(data) + b'"}\r\n\r\n')
        event = b'{"event": "overflow"}\r\n\r\n'
        d = self.session.request("getfile - x", sink=self.sink)
        stream = event + reply + reply[:0]
        for at in range(0, len(stream), 7919):  # odd pieces: a head or a quad cut anywhere
            self.protocol.dataReceived(stream[at:at + 7919])
            self.assertLess(len(self.protocol._buffer), 10_000)  # never the file in memory
        head = self.successResultOf(d)
        self.assertEqual(head["filename"], "photo 1.jpg")
        with open(os.path.join(self.folder, "photo 1.jpg"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(os.listdir(self.folder), ["photo 1.jpg"])
        self.assertIn("catching up", self.shown[-1])  # the event before it was read as one

    def test_an_error_reply_is_read_as_usual(self):
        d = self.session.request("getfile - x", sink=self.sink)
        self.protocol.dataReceived(reply(status="ERROR", code="forbidden", message="no"))
        self.assertEqual(self.successResultOf(d)["code"], "forbidden")

    def test_a_connection_lost_mid_file_leaves_nothing(self):
        import os

        d = self.session.request("getfile - x", sink=self.sink)
        self.protocol.dataReceived(b'{"status": "OK", "filename": "a.bin", "size": 9, '
                                   b'"content": "aGVsbG8')
        self.protocol.connectionLost()
        self.failureResultOf(d, NotConnected)
        self.assertEqual(os.listdir(self.folder), [])


class WrongPortTests(unittest.TestCase):
    """Pointed at a port that is no chat port, the client says what it found and stops."""

    def setUp(self):
        self.shown = []
        self.session = ChatSession("127.0.0.1", 8000, task.Clock(), self.shown.append,
                                   lambda item: render.event(item, None))
        self.protocol = self.session._factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.assertEqual(self.transport.value(), b"ping\r\n")  # the first request

    def assert_told(self, what):
        self.assertIn(f"127.0.0.1:8000 is not a chat port: it answered like {what}",
                      self.shown[-1])
        self.assertIn("--port 8889", self.shown[-1])
        self.assertFalse(self.session._factory.continueTrying)
        failure = self.failureResultOf(self.session.request("ping"), NotConnected)
        self.assertEqual(str(failure.value), "not connected to the realm")

    def test_an_http_port(self):
        self.protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost()
        self.assert_told("an HTTP server (a realm's http_port, for files)")

    def test_a_realm_port(self):
        self.protocol.dataReceived(b'{"status": "ERROR", "code": "forbidden", "message": '
                                   b'"authenticate first: HELLO <realm> <nonce>"}\r\n')
        self.protocol.connectionLost()
        self.assert_told("a realm port")

    def test_a_realm_that_refuses_the_connection_is_tried_again(self):
        self.protocol.dataReceived(reply(status="ERROR", code="too_many_connections",
                                         message="too many connections from your address"))
        self.protocol.connectionLost()
        self.assertEqual(self.shown, ["(the realm refused the connection: error: too many "
                                      "connections from your address (too_many_connections))"])
        self.assertTrue(self.session._factory.continueTrying)

    def test_a_port_that_stays_silent(self):
        from multirealm.client.connection import FIRST_ANSWER_SECONDS

        self.session.reactor.advance(FIRST_ANSWER_SECONDS)
        self.assertIn("127.0.0.1:8000 has not answered in 5 s, where a chat port answers at once: "
                      "a tls_port", self.shown[-1])
        self.assertIn("--port 8889", self.shown[-1])
        # A slow chat port that answers after all is used as usual.
        self.protocol.dataReceived(reply(status="OK", message="pong"))
        self.assertIn("(connected to 127.0.0.1:8000", self.shown[-1])

    def test_a_chat_port_that_answers_in_time_is_not_doubted(self):
        self.protocol.dataReceived(reply(status="OK", message="pong"))
        self.session.reactor.advance(60)
        self.assertEqual(len(self.shown), 1)
        self.assertIn("(connected to 127.0.0.1:8000", self.shown[0])
