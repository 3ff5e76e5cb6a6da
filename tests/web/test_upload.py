"""
An HTTP upload's body goes to disk as it arrives, through the same
IncomingFile as a chat upload: a batch at a time in a thread, the
connection not read meanwhile, nothing left by a client that goes away.
"""

import os

import attrs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionLost
from twisted.test.proto_helpers import StringTransport
from twisted.trial import unittest

from multirealm.config import Limits
from multirealm.storage.files import FileStore
from multirealm.web.files import make_site
from tests.helpers import Client, make_realm, slow_disk, wait_until

LIMIT = 2**20


class StreamedUploadTests(unittest.TestCase):
    def setUp(self):
        self.folder = self.mktemp()
        self.files = FileStore(self.folder)
        self.realm = make_realm(
            self, files=self.files, limits=attrs.evolve(Limits(), max_file_bytes=LIMIT)
        )
        self.token = Client(self.realm).login("alice")
        Client(self.realm).login("heru")
        site = make_site(self.realm, self.realm.limits)
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.addCleanup(self.channel.connectionLost, Failure(ConnectionLost()))

    def head(self, method=b"POST", path=b"/files?to=heru&name=big.bin", length=LIMIT):
        return (
            method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + self.token.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % length
        )

    def on_disk(self):
        return (
            sorted(n for n in os.listdir(self.folder) if n != "incoming"),
            os.listdir(os.path.join(self.folder, "incoming")),
        )

    @defer.inlineCallbacks
    def test_the_connection_is_not_read_while_a_batch_is_written(self):
        release = slow_disk(self, self.files)
        body = os.urandom(LIMIT)
        self.channel.dataReceived(self.head() + body[:600_000])  # over a batch, not all
        self.assertEqual(self.transport.producerState, "paused")
        release.set()
        yield wait_until(lambda: self.transport.producerState == "producing")
        self.channel.dataReceived(body[600_000:])
        yield wait_until(lambda: b"Message Sent" in self.transport.value())
        (stored,), incoming = self.on_disk()
        self.assertEqual(incoming, [])
        with self.files.open(stored) as f:
            self.assertEqual(f.read(), body)

    @defer.inlineCallbacks
    def test_a_client_that_leaves_mid_body_leaves_nothing(self):
        release = slow_disk(self, self.files)
        self.channel.dataReceived(self.head() + os.urandom(600_000))
        self.channel.connectionLost(Failure(ConnectionLost()))
        release.set()
        yield wait_until(lambda: self.on_disk() == ([], []))

    @defer.inlineCallbacks
    def test_the_body_of_a_request_that_is_no_upload_is_dropped(self):
        self.channel.dataReceived(self.head(b"GET", b"/", 300_000) + os.urandom(300_000))
        yield wait_until(lambda: b"multirealm" in self.transport.value())
        yield wait_until(lambda: self.on_disk() == ([], []))
