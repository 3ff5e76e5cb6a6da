"""
A realm link under stress, each test from an adversarial review that found
the defect (and failed before its fix): descriptors held by files in the
window, a frame longer than the far realm reads, a link that comes up
while the last one's read runs, a peer that stops answering (under traffic,
or mid-file), order after a "not now", and a peer that pipelines without
bound.  Plus the bounds of what a peer may store here.
"""

import errno
import os
import resource

from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest

from multirealm.federation.link import LinkFactory
from multirealm.federation.queue import PeerQueue
from multirealm.federation.server import RealmProtocol, RealmServerFactory
from multirealm.model import FileRef
from tests.helpers import Client, InMemoryNetwork, make_realm


def secret_for(a, b):
    return "pair-secret"


def open_fds():
    return len(os.listdir("/proc/self/fd"))


class TwoRealms(unittest.TestCase):
    def setUp(self):
        self.one = make_realm(self, name="1", peers=("2",))
        self.two = make_realm(self, name="2", peers=("1",))
        self.successResultOf(self.one.register("alice", "pw"))
        self.successResultOf(self.two.register("heru", "pw"))
        self.queue = PeerQueue(self.one, "2")
        self.one.notifier.subscribe(self.queue)
        self.server = RealmServerFactory(self.two, secret_for, 65536, self.two.clock)
        self.links = LinkFactory(self.one, "2", "pair-secret", self.queue, 65536, self.one.clock)

    def connect(self):
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.server.buildProtocol(None), lambda: self.links.buildProtocol(None),
        )
        pump.flush()
        return client, pump

    def link_to_a_peer_that_does_not_read(self):
        """A RealmLink, authenticated, whose socket the peer never drains."""
        link = self.links.buildProtocol(None)
        link.makeConnection(StringTransport())
        link._state = "linked"
        self.queue.attach(link)
        return link

    def delivered(self):
        return [m.text for m in self.successResultOf(self.two.inbox("heru")).messages]

    def state(self):
        self.one.clock.advance(2)
        return self.successResultOf(self.one.list_realms())[0]

    def store_file(self, data=b"x" * 1000):
        incoming = self.one.files.begin()
        incoming.write_now(data)
        incoming.commit_now()
        return FileRef("f.bin", incoming.id, len(data))


class OversizedFrame(TwoRealms):
    def test_a_message_the_chat_port_accepts_is_delivered_or_failed(self):
        """R1: a frame longer than the far realm's line limit: answered with id "", lost forever."""
        chat = Client(self.one)
        token = chat.login("bob")
        head = f"send {token} heru@2 "
        text = "x" * (65536 - len(head))  # a chat line of exactly max_line_bytes
        self.assertEqual(chat.ask(head + text)["status"], "OK")
        for attempt in range(3):
            client, pump = self.connect()
            pump.flush()
            self.one.clock.advance(PeerQueue.ANSWER_SECONDS + 1)  # dropped, sent again...
            pump.flush()
        history = self.successResultOf(self.one.inbox("bob")).messages
        self.assertTrue(
            self.delivered() or any(m.kind == "failure" for m in history),
            f"neither delivered nor failed; still pending={self.state()['pending']},"
            f" last_error={self.state()['last_error']!r}",
        )


class FilesInTheWindow(TwoRealms):
    def test_files_in_flight_hold_a_bounded_number_of_descriptors(self):
        """R2a: every file frame in the window holds an open descriptor."""
        self.link_to_a_peer_that_does_not_read()
        before = open_fds()
        ref = self.store_file()
        for _ in range(300):
            self.successResultOf(self.one.send_file("alice", self.one.address("heru@2"), ref))
        self.assertLess(open_fds() - before, 20, "open file descriptors for queued files")

    def test_running_out_of_descriptors_is_no_permanent_failure(self):
        """R2b: EMFILE while opening a queued file is reported as no_such_file, for good."""
        self.link_to_a_peer_that_does_not_read()
        ref = self.store_file()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 30, hard))
        try:
            for _ in range(60):
                self.successResultOf(self.one.send_file("alice", self.one.address("heru@2"), ref))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        failed = [m for m in self.successResultOf(self.one.inbox("alice")).messages
                  if m.kind == "failure"]
        self.assertEqual(failed, [], f"{len(failed)} files failed for good: {failed[:1]}")


class SilentPeer(TwoRealms):
    def test_a_peer_that_never_answers_is_dropped_even_under_traffic(self):
        """R3a: frames going out count as 'progress': a mute peer is never dropped."""
        client, pump = self.connect()
        answering = RealmProtocol._message_frame
        RealmProtocol._message_frame = lambda protocol, text: None  # reads, never answers
        try:
            for i in range(20):  # one message every 30 s, for 10 minutes
                self.successResultOf(self.one.send("alice", self.one.address("heru@2"), f"m{i}"))
                pump.flush()
                self.one.clock.advance(30)
                pump.flush()
            self.assertFalse(self.state()["linked"], "10 minutes without an answer, still linked")
        finally:
            RealmProtocol._message_frame = answering

    def test_a_peer_that_stops_reading_mid_file_is_dropped(self):
        """R3b: 'a file is still going out' exempts a link from the timeout forever."""
        link = self.link_to_a_peer_that_does_not_read()
        self.successResultOf(self.one.send_file("alice", self.one.address("heru@2"),
                                                self.store_file()))
        self.assertTrue(link.streaming)
        self.one.clock.advance(3600)
        self.assertFalse(self.state()["linked"], "an hour stuck mid-file, still linked")


class FakeLink:
    streaming = False
    file_progress = 0.0

    def __init__(self):
        self.lines = []
        self.factory = type("F", (), {"max_line_bytes": 65536})()

    def send(self, line):
        self.lines.extend(line.split("\r\n"))

    def close(self, why, abort=False):
        pass


class ReattachDuringRead(TwoRealms):
    def test_a_link_that_comes_up_while_the_last_ones_read_runs_gets_the_backlog(self):
        """R4: attach() while the previous link's outbox read is pending: nothing is ever sent."""
        for i in range(3):
            self.successResultOf(self.one.send("alice", self.one.address("heru@2"), f"m{i}"))
        held, real = [], self.one.outbox_batch

        def slow(*args):
            d = defer.Deferred()
            held.append((d, args))
            return d

        self.one.outbox_batch = slow
        first, second = FakeLink(), FakeLink()
        self.queue.attach(first)           # read 1 starts
        self.queue.detach(first)           # the link drops...
        self.queue.attach(second)          # ...and a new one comes up before read 1 answers
        self.one.outbox_batch = real
        d, args = held.pop(0)
        d.callback(self.successResultOf(real(*args)))  # read 1 answers (for the old link)
        for d, args in held:
            d.callback(self.successResultOf(real(*args)))
        self.one.clock.advance(3600)
        sent = [line for line in second.lines if "sendrealm" in line]
        self.assertEqual(len(sent), 3, "the new link sent nothing of the backlog")


class TransientRefusalOrder(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork(self, names=("1", "2"))
        self.one, self.two = self.net.realms["1"], self.net.realms["2"]
        self.successResultOf(self.one.register("alice", "pw"))
        self.successResultOf(self.two.register("heru", "pw"))

    @defer.inlineCallbacks
    def settle(self):
        quiet = 0
        for _ in range(200):
            moved = any([pump.flush() for pump in list(self.net.pumps.values())])
            yield task.deferLater(reactor, 0.01)
            quiet = 0 if moved else quiet + 1
            if quiet == 5:
                return

    @defer.inlineCallbacks
    def test_frames_after_a_transiently_refused_file_are_not_stored_before_it(self):
        """R5: ENOSPC on a file, the small message after it is stored: order broken."""
        incoming = self.one.files.begin()
        incoming.write_now(b"y" * 100_000)
        incoming.commit_now()
        heru = self.one.address("heru@2")
        self.successResultOf(self.one.send_file(
            "alice", heru, FileRef("big.bin", incoming.id, 100_000)))
        self.successResultOf(self.one.send("alice", heru, "after"))
        real_begin, calls = self.two.files.begin, []

        def begin():
            calls.append(1)
            if len(calls) == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_begin()

        self.two.files.begin = begin
        self.net.connect("1", "2")
        yield self.settle()
        self.net.pumps.pop(("1", "2"))  # closed by the sender (storage_full)
        self.net.connect("1", "2")      # after the backoff
        yield self.settle()
        self.flushLoggedErrors(OSError)
        history = self.successResultOf(self.two.inbox("heru")).messages
        self.assertEqual([m.file.name if m.file else m.text for m in history],
                         ["big.bin", "after"])


class RealmPortBackpressure(unittest.TestCase):
    def test_a_peer_cannot_queue_unbounded_work(self):
        """R6: no bound on frames pending at the receiver (ChatProtocol stops at 1000)."""
        realm = make_realm(self, name="2", peers=("1",))
        pending = []
        # Stored never: alone or in runs (one operation for the frames of a read).
        realm.receive = lambda origin, message: pending.append(1) or defer.Deferred()
        realm.receive_run = lambda origin, messages, then: pending.extend(messages)
        factory = RealmServerFactory(realm, secret_for, 65536, realm.clock)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.peer = "1"  # as after the handshake
        protocol.setTimeout(None)
        frames = b"".join(
            b"@id=m%d;ts=2026-11-25T00:00:00+00:00 sendrealm bob heru hi\r\n" % i
            for i in range(20000)
        )
        protocol.dataReceived(frames)
        self.assertEqual(transport.producerState, "paused",
                         f"{len(pending)} stores pending, reading never paused")


class RemoteRowsBound(unittest.TestCase):
    def test_a_peer_fills_at_most_so_many_rows_here(self):
        from multirealm import errors
        from tests.helpers import make_store

        store = make_store(self)
        names = [f"u{n}" for n in range(1000)]
        self.successResultOf(store.receive_users("2", names, most=1500))
        self.successResultOf(store.receive_users("2", names, most=1500))  # the same: no more rows
        self.failureResultOf(
            store.receive_users("2", [f"v{n}" for n in range(1000)], most=1500),
            errors.QuotaExceeded,
        )
        rows = self.successResultOf(store.submit(
            lambda db: db.execute("SELECT count(*) FROM remote_users").fetchone()[0],
            writes=False))
        self.assertEqual(rows, 1000)
