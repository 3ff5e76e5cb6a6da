"""
Request bodies on the HTTP port: only POST /files by a valid session keeps
one, and only once the session is known; a refusal (401, 413) comes before
the body; a body makes progress or is dropped; a client that stops reading
a response is cut.
"""

import json
import os

import attrs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from multirealm import errors
from multirealm.config import Limits
from multirealm.connections import LINGER_SECONDS
from multirealm.web.admission import PROGRESS
from multirealm.web.files import make_site
from tests.helpers import Client, make_realm, wait_until

LIMITS = attrs.evolve(Limits(), idle_timeout=60, header_timeout=5, max_file_bytes=2**20)
PEER = IPv4Address("TCP", "127.0.0.9", 40000)


class BodyTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, limits=LIMITS)
        self.clock = self.realm.clock
        self.token = Client(self.realm).login("alice")
        Client(self.realm).login("heru")
        self.site = make_site(self.realm, LIMITS, reactor=self.clock)
        self.begun = []  # every file begun on disk (each a descriptor)
        real_begin = self.realm.files.begin
        self.patch(self.realm.files, "begin", lambda: self.begun.append(real_begin()) or self.begun[-1])

    def connect(self):
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        self.addCleanup(lambda: channel.connectionLost(Failure(ConnectionDone())) if channel.transport else None)
        return channel, transport

    def head(self, path=b"/files?to=heru&name=f.bin", length=1000, token=True, extra=b""):
        auth = b"Authorization: Bearer " + self.token.encode() + b"\r\n" if token else b""
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth + extra
                + b"Content-Length: %d\r\n\r\n" % length)

    def incoming(self):
        return os.listdir(os.path.join(self.realm.files.folder, "incoming"))

    def assertAnswered(self, transport, status, code):
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 %d " % status), transport.value())
        self.assertIn(b"Connection: close", head.split(b"\r\n"))
        self.assertEqual(json.loads(body)["code"], code)
        self.assertTrue(transport.disconnecting)

    # -- item 1: which bodies are kept, and when --------------------------------

    def test_a_body_to_another_path_opens_no_file(self):
        channel, transport = self.connect()
        channel.dataReceived(self.head(b"/nowhere", token=False) + b"A" * 999)
        channel.dataReceived(b"A")
        self.assertEqual((self.begun, self.incoming()), ([], []))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))

    def test_an_upload_without_a_session_is_refused_before_its_body(self):
        for extra in [b"", b"Expect: 100-continue\r\n",
                      b"Authorization: Bearer nope\r\nExpect: 100-continue\r\n"]:
            channel, transport = self.connect()
            channel.dataReceived(self.head(token=False, extra=extra) + b"A")
            self.assertAnswered(transport, 401, "invalid_session")
            self.assertNotIn(b"100 Continue", transport.value())
            channel.dataReceived(b"A" * 999)  # what comes meanwhile is dropped
            self.assertEqual((self.begun, self.incoming()), ([], []))

    def test_a_length_over_the_limit_is_refused_before_its_body(self):
        channel, transport = self.connect()
        channel.dataReceived(self.head(length=2**20 + 1, extra=b"Expect: 100-continue\r\n"))
        self.assertAnswered(transport, 413, "file_too_large")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertEqual(self.begun, [])

    def test_what_sendfile_would_refuse_is_refused_before_the_body(self):
        for path, status, code in [
            (b"/files?to=heru&name=a%2Fb", 400, "bad_filename"),
            (b"/files?name=f.bin", 400, "bad_request"),
            (b"/files?to=heru@nowhere&name=f.bin", 404, "no_such_realm"),
        ]:
            channel, transport = self.connect()
            channel.dataReceived(self.head(path=path, extra=b"Expect: 100-continue\r\n"))
            self.assertAnswered(transport, status, code)
            self.assertNotIn(b"100 Continue", transport.value())
            channel.dataReceived(b"A" * 1000)
            self.assertEqual((self.begun, self.incoming()), ([], []))

    def test_a_refusal_before_the_body_lingers_counted_with_the_ports_other_refusals(self):
        connections = self.site.connections
        channel, transport = self.connect()
        half_closed = []
        transport.loseWriteConnection = lambda: half_closed.append(True)  # as TCP has
        channel.dataReceived(self.head(length=2**20 + 1))
        self.assertEqual(half_closed, [True])  # the answer, then our end
        self.assertEqual(connections.lingering, 1)
        self.clock.advance(LINGER_SECONDS)  # the client never closed: cut
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"413", transport.value().split(b"\r\n", 1)[0])
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((connections.lingering, connections.open), (0, 0))

    def test_a_multipart_form_is_refused_before_its_body(self):
        channel, transport = self.connect()
        channel.dataReceived(self.head(extra=(
            b"Content-Type: multipart/form-data; boundary=x\r\nExpect: 100-continue\r\n")))
        self.assertAnswered(transport, 415, "bad_request")
        self.assertNotIn(b"100 Continue", transport.value())
        channel.dataReceived(b"A" * 1000)  # the body, sent all the same, is dropped
        self.assertEqual((self.begun, self.incoming()), ([], []))

    @defer.inlineCallbacks
    def test_a_chunked_body_past_the_limit_is_refused_at_once(self):
        channel, transport = self.connect()
        head = self.head().replace(b"Content-Length: 1000", b"Transfer-Encoding: chunked")
        chunk = b"80000\r\n" + b"A" * 0x80000 + b"\r\n"  # 512 KiB
        channel.dataReceived(head + chunk + chunk)
        self.assertEqual(transport.value(), b"")
        yield wait_until(lambda: transport.producerState == "producing")  # a batch written
        channel.dataReceived(b"1\r\nA\r\n")  # one byte past the limit
        self.assertAnswered(transport, 413, "file_too_large")
        yield wait_until(lambda: self.incoming() == [])

    @defer.inlineCallbacks
    def test_the_body_waits_for_its_session(self):
        looked_up = defer.Deferred()
        self.patch(self.realm.sessions, "user_of", lambda token: looked_up)
        channel, transport = self.connect()
        body = os.urandom(1000)
        channel.dataReceived(self.head(extra=b"Expect: 100-continue\r\n") + body[:10])
        self.assertEqual(transport.producerState, "paused")  # reading stops meanwhile
        self.assertEqual(transport.value(), b"")  # no 100 Continue yet
        self.assertEqual(self.begun, [])
        channel.dataReceived(body[10:])  # what was read already: the whole body
        looked_up.callback("alice")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
        self.assertEqual(transport.producerState, "producing")
        yield wait_until(lambda: b"Message Sent" in transport.value())
        file = (yield self.realm.inbox("heru")).messages[-1].file
        with self.realm.files.open(file.id) as f:
            self.assertEqual(f.read(), body)

    @defer.inlineCallbacks
    def test_a_session_ended_before_the_body_is_in_stores_no_message(self):
        channel, transport = self.connect()
        body = os.urandom(1000)
        channel.dataReceived(self.head() + body[:500])
        self.assertEqual(Client(self.realm).ask(f"logout {self.token}")["status"], "OK")
        channel.dataReceived(body[500:])
        yield wait_until(lambda: b"invalid_session" in transport.value())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401 "), transport.value())
        self.assertEqual((yield self.realm.inbox("heru")).messages, ())

    def test_a_session_found_invalid_later_is_refused_before_its_body(self):
        looked_up = defer.Deferred()
        self.patch(self.realm.sessions, "user_of", lambda token: looked_up)
        channel, transport = self.connect()
        channel.dataReceived(self.head() + b"A" * 10)
        looked_up.errback(errors.InvalidSession("unknown or expired session"))
        self.assertAnswered(transport, 401, "invalid_session")
        self.assertEqual((self.begun, self.incoming()), ([], []))

    def test_a_lookup_that_fails_is_503_before_the_body(self):
        self.patch(self.realm.sessions, "user_of", lambda token: defer.fail(OSError("db gone")))
        channel, transport = self.connect()
        channel.dataReceived(self.head() + b"A")
        self.assertAnswered(transport, 503, "unavailable")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.begun, [])

    def test_another_path_to_the_files_resource_keeps_no_body(self):
        channel, transport = self.connect()
        channel.dataReceived(self.head(b"/files//?to=heru&name=f.bin") + b"A" * 1000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value())
        self.assertEqual(self.begun, [])

    # -- item 2: a body makes progress or is dropped ----------------------------

    def test_a_body_trickle_is_dropped_at_the_idle_timeout(self):
        for path in (b"/files?to=heru&name=f.bin", b"/nowhere"):
            channel, transport = self.connect()
            channel.dataReceived(self.head(path, length=2**20))
            for _ in range(59):  # a byte a second: every read restarted twisted.web's timer
                self.clock.advance(1)
                channel.dataReceived(b"A")
            self.assertFalse(transport.disconnecting)
            self.clock.advance(1.5)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
            self.assertIn(b'"idle_timeout"', transport.value())
            self.assertTrue(transport.disconnecting, path)
            channel.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(self.incoming(), [])  # nothing kept

    def test_a_body_that_moves_64_kib_per_idle_timeout_goes_on(self):
        channel, transport = self.connect()
        channel.dataReceived(self.head(b"/nowhere", length=10 * PROGRESS))
        for _ in range(9):
            self.clock.advance(59)
            channel.dataReceived(b"A" * PROGRESS)
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"A" * PROGRESS)  # its end
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "), transport.value())

    # -- item 3: a response the client does not read ----------------------------

    def test_a_client_that_stops_reading_is_cut_at_the_idle_timeout(self):
        self.patch(self.realm.sessions, "user_of", lambda token: defer.Deferred())
        channel, transport = self.connect()
        channel.dataReceived(b"GET /files/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
        self.clock.advance(600)  # a response on its way: twisted.web's idle timer is off
        self.assertFalse(transport.disconnecting)
        channel.pauseProducing()  # as the transport does when its buffer is full
        self.clock.advance(59)
        channel.resumeProducing()  # the client read: the wait starts again
        channel.pauseProducing()
        self.clock.advance(59)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1.5)
        self.assertTrue(transport.disconnected)  # aborted: its buffer would never leave
