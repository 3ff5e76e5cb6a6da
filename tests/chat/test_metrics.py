"""
What the chat port counts for GET /metrics: connections open by kind,
each request by command and code once its reply is ready (however late),
events pushed and overflows, the bytes of files sent by getfile.
"""

import base64

from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import directlyProvides

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from tests.chat.test_events import read_all
from tests.chat.test_files import sendfile
from tests.helpers import BoundedTransport, Client, make_realm, wait_until


class ChatCountTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.metrics = self.realm.metrics
        self.factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)

    def client(self, transport=None):
        return Client(self.realm, factory=self.factory, transport=transport)

    def test_connections_are_counted_open_by_kind_until_they_end(self):
        tls = StringTransport()
        directlyProvides(tls, ISSLTransport)
        plain, secure = self.client(), self.client(tls)
        self.client()  # a third, open to the end
        self.assertEqual(
            (self.metrics.connections["chat"], self.metrics.connections["chat_tls"]), (2, 1)
        )
        for client in (plain, secure):
            client.protocol.connectionLost(None)
            client.protocol.connectionLost(None)  # twice is still once
        self.assertEqual(
            (self.metrics.connections["chat"], self.metrics.connections["chat_tls"]), (1, 0)
        )

    def test_a_request_is_counted_when_its_reply_is_ready_by_command_and_code(self):
        alice = self.client()
        alice.login("alice")
        later = defer.Deferred()
        self.realm.list_realms = lambda: later  # the core answers later
        alice.send("listrealms", "ping", "listrealms")
        requests = self.metrics.requests
        self.assertNotIn(("listrealms", "OK"), requests)
        self.assertEqual(requests[("ping", "OK")].count, 1)
        later.callback([])
        self.assertEqual(requests[("listrealms", "OK")].count, 2)
        alice.send("send - nobody hi", "auth alice wrong", "nonsense", "x" * 70_000)
        alice.raw(b"zork \xff\r\n")  # refused before it is parsed: not UTF-8
        self.assertEqual(requests[("unknown", "bad_encoding")].count, 1)
        self.assertEqual(requests[("send", "no_such_user")].count, 1)
        self.assertEqual(requests[("auth", "bad_credentials")].count, 1)
        self.assertEqual(requests[("unknown", "unknown_command")].count, 1)
        self.assertEqual(requests[("unknown", "line_too_long")].count, 1)
        self.assertEqual(requests[("register", "OK")].count, 1)

    def test_events_sent_and_overflows_are_counted(self):
        self.realm.limits = Limits(event_buffer_bytes=4096)
        factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        transport = BoundedTransport()
        transport.size = 1024
        slow = Client(self.realm, factory=factory, transport=transport)
        slow.login("heru")
        slow.send("subscribe -")
        sender = Client(self.realm, factory=factory)
        sender.login("alice")
        for n in range(100):
            sender.ask(f"send - heru message {n:03} " + "x" * 200)
        got = [e for e in read_all(transport) if "event" in e]
        self.assertEqual(self.metrics.event_overflows, 1)
        self.assertEqual(self.metrics.events_sent, len(got))

    @defer.inlineCallbacks
    def test_the_bytes_of_a_file_sent_by_getfile_are_counted(self):
        alice, heru = self.client(), self.client()
        token = alice.login("alice")
        heru.login("heru")
        alice.raw(sendfile(token, "heru", "a.bin", b"x" * 1000))
        yield wait_until(lambda: alice.transport.value().count(b"\r\n\r\n") >= 3)
        (entry,) = heru.ask("inbox -")["messages"]
        got = heru.ask(f"getfile - {entry['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), b"x" * 1000)
        self.assertEqual(self.metrics.file_bytes_out["chat"], 1000)
        self.assertEqual(self.metrics.file_bytes_in["local"], 1000)
