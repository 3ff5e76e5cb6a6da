"""
Shared test fixtures: a realm on a temporary database, a cheap password
hasher, and a chat connection over a StringTransport.
"""

import json
import os
import threading

from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from multirealm.core.interfaces import IMessageObserver
from multirealm.core.metrics import HASH_WAIT_SECONDS, Histogram
from multirealm.core.passwords import hash_password, verify_password
from multirealm.core.realm import Realm
from multirealm.storage.files import FileStore
from multirealm.storage.store import SQLiteStore

# The real scrypt, at a cost that keeps the suite fast.
CHEAP_COST = (2**4, 1, 1)


class InlineHasher:
    """The real hashing functions, run at once on the calling thread."""

    waiting = running = 0  # nothing ever waits (what GET /metrics shows)

    def __init__(self):
        self.waits = Histogram(HASH_WAIT_SECONDS)

    def start(self):
        pass

    def stop(self):
        pass

    def hash(self, password, peer=None, suspect=False):
        return defer.execute(hash_password, password, CHEAP_COST)

    def verify(self, password, stored, peer=None, suspect=False):
        return defer.execute(verify_password, password, stored, CHEAP_COST)


def make_store(testcase, name="1", inline=True, path=None):
    """A SQLiteStore in a fresh temporary folder, stopped at cleanup."""
    if path is None:
        path = os.path.join(testcase.mktemp(), "realm.sqlite3")
    store = SQLiteStore(path, name, reactor, inline=inline)
    store.start()
    testcase.addCleanup(store.stop)
    return store


def make_realm(testcase, name="1", peers=("2",), limits=None, clock=None, store=None, files=None):
    """
    A Realm with an inline store (synchronous Deferreds) and a Clock.  A
    clock made here starts at a plausible "now"; one given is used as it is.
    """
    if clock is None:
        clock = task.Clock()
        clock.advance(1_700_000_000)  # a plausible "now" for timestamps
    store = store or make_store(testcase, name)
    files = files or FileStore(testcase.mktemp())
    return Realm(name, peers, limits or Limits(), store, InlineHasher(), clock, files)


class BoundedTransport(StringTransport):
    """
    A transport with a buffer of C{size} bytes, as a socket's: its producer
    is paused once more is buffered, and resumed by L{drain}.
    """

    size = 65536

    def __init__(self):
        super().__init__()
        self.out = b""
        self.most_buffered = 0
        self.full = False  # its producer was paused and not resumed yet

    def write(self, data):
        super().write(data)
        buffered = len(self.io.getvalue())
        self.most_buffered = max(self.most_buffered, buffered)
        if buffered > self.size and self.producer is not None and not self.full:
            self.full = True
            self.producer.pauseProducing()

    def drain(self):
        """The peer reads everything buffered; returns how many bytes."""
        data = self.io.getvalue()
        self.out += data
        self.clear()
        if self.producer is not None and self.full:
            self.full = False
            self.producer.resumeProducing()
        return len(data)


class Client:
    """A ChatProtocol on a StringTransport, read as parsed replies."""

    def __init__(self, realm, limits=None, clock=None, transport=None, factory=None):
        self.clock = clock or realm.clock
        self.factory = factory or ChatFactory(realm, limits or realm.limits, self.clock)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = transport or StringTransport()
        self.protocol.makeConnection(self.transport)
        self._read = 0

    def send(self, *lines):
        self.protocol.dataReceived(b"".join(line.encode() + b"\r\n" for line in lines))

    def raw(self, data):
        self.protocol.dataReceived(data)

    def replies(self):
        """Every reply written since the last call, parsed."""
        data = self.transport.value()[self._read :]
        self._read = len(self.transport.value())
        return parse_replies(data)

    def ask(self, line):
        """Send one request line; return its one reply."""
        self.send(line)
        (reply,) = self.replies()
        return reply

    def login(self, user, password="pw"):
        self.ask(f"register {user} {password}")
        reply = self.ask(f"auth {user} {password}")
        assert reply["status"] == "OK", reply
        return reply["tokenid"]


def parse_replies(data):
    """Split wire bytes into replies; every reply must end with CRLF CRLF."""
    assert data.endswith(b"\r\n\r\n") or data == b"", data[-50:]
    chunks = data.split(b"\r\n\r\n")[:-1]
    return [json.loads(chunk) for chunk in chunks]


@defer.inlineCallbacks
def wait_until(predicate, timeout=10.0, step=0.01):
    """
    Poll C{predicate} on the real reactor every C{step} seconds; fail with
    C{AssertionError} if it is still false after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {predicate}")
        yield task.deferLater(reactor, step)


@implementer(IMessageObserver)
class Recorder:
    """A notifier subscriber that keeps every delivery it hears of."""

    def __init__(self):
        self.deliveries = []

    def messages_committed(self, deliveries):
        self.deliveries += deliveries

    @property
    def texts(self):
        return [d.message.text for d in self.deliveries]


class InMemoryNetwork:
    """
    Realms linked in memory: for each ordered pair, the first's
    L{PeerQueue} and L{LinkFactory} connected through iosim to the
    second's L{RealmServerFactory}.  L{flush} moves every byte until
    nothing moves.  Every realm's clock is the same L{task.Clock}.
    """

    SECRET = "pair-secret"

    def __init__(self, testcase, names=("1", "2", "3")):
        from multirealm.federation.link import LinkFactory
        from multirealm.federation.queue import PeerQueue
        from multirealm.federation.server import RealmServerFactory

        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.realms = {
            name: make_realm(testcase, name, tuple(n for n in names if n != name), clock=self.clock)
            for name in names
        }
        self.servers = {
            name: RealmServerFactory(realm, lambda a, b: self.SECRET, 65536, self.clock)
            for name, realm in self.realms.items()
        }
        self.queues, self.factories, self.pumps = {}, {}, {}
        for name, realm in self.realms.items():
            for peer in realm.peers:
                queue = PeerQueue(realm, peer)
                realm.notifier.subscribe(queue)
                self.queues[name, peer] = queue
                self.factories[name, peer] = LinkFactory(
                    realm, peer, self.SECRET, queue, 65536, self.clock
                )

    @classmethod
    def of_three_users(cls, testcase):
        """Realms 1, 2 and 3 with alice, heru and cy, every link up."""
        network = cls(testcase)
        for name, user in (("1", "alice"), ("2", "heru"), ("3", "cy")):
            testcase.successResultOf(network.realms[name].register(user, "pw"))
        network.connect_all()
        return network

    def connect(self, name, peer):
        """Open the link from realm C{name} to realm C{peer}."""
        from twisted.test import iosim

        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.servers[peer].buildProtocol(None),
            lambda: self.factories[name, peer].buildProtocol(None),
        )
        self.pumps[name, peer] = pump
        return pump

    def connect_all(self):
        for name, peer in self.factories:
            self.connect(name, peer)
        self.flush()

    def cut(self, name, peer):
        """Lose the link from C{name} to C{peer} (both ends see it go)."""
        pump = self.pumps.pop((name, peer))
        pump.client.transport.loseConnection()
        pump.flush()

    def flush(self):
        for _ in range(100):
            moved = False
            for pump in list(self.pumps.values()):
                moved = pump.flush() or moved
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def ask(self, client, line):
        """Send C{line}, let the realms talk; its reply (events are kept for L{events})."""
        client.send(line)
        self.flush()
        replies = client.replies()
        client.kept = getattr(client, "kept", []) + [r for r in replies if "event" in r]
        (reply,) = [r for r in replies if "status" in r]
        return reply

    @staticmethod
    def events(client, kind):
        """The events of C{kind} C{client} got since the last call (of any kind)."""
        got = getattr(client, "kept", []) + client.replies()
        client.kept = []
        return [r for r in got if r.get("event") == kind]


def slow_disk(test, files):
    """
    Make the batch writes of C{files} (a FileStore) wait until the
    returned C{threading.Event} is set (set at the end of C{test} anyway).
    """
    release = threading.Event()
    real_begin = files.begin

    def begin_on_a_slow_disk():
        incoming = real_begin()
        real_write = incoming.write_now

        def slow(data):
            release.wait(10)
            real_write(data)

        incoming.write_now = slow
        return incoming

    test.patch(files, "begin", begin_on_a_slow_disk)
    test.addCleanup(release.set)
    return release
