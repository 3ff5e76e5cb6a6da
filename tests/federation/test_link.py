"""
Two realms linked in memory (iosim): the handshake from the sending side,
the outbox drained in order, answers emptying it, a reconnect resending
what was not answered, exactly once at the far end.
"""

import socket

from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer

from multirealm import errors
from multirealm.core.interfaces import IMessageObserver
from multirealm.model import PRIVATE

from multirealm.federation.frames import MessageFrame
from multirealm.federation.link import LinkFactory
from multirealm.federation.queue import PeerQueue
from multirealm.federation.server import RealmProtocol, RealmServerFactory
from tests.helpers import make_realm


@implementer(IMessageObserver)
class Recorder:
    def __init__(self, seen):
        self.seen = seen

    def messages_committed(self, deliveries):
        self.seen += deliveries


class FakeConnector:
    connects = 0

    def connect(self):
        self.connects += 1

    def stopConnecting(self):
        pass


def secret_for(a, b):
    return "pair-secret"


class LinkTests(unittest.TestCase):
    def setUp(self):
        self.one = make_realm(self, name="1", peers=("2",))
        self.two = make_realm(self, name="2", peers=("1",))
        for realm in (self.one, self.two):
            self.successResultOf(realm.register("alice" if realm is self.one else "heru", "pw"))
        self.queue = PeerQueue(self.one, "2", window=4)
        self.one.notifier.subscribe(self.queue)
        self.server = RealmServerFactory(self.two, secret_for, 65536, self.two.clock)
        self.links = LinkFactory(self.one, "2", "pair-secret", self.queue, 65536, self.one.clock)

    def connect(self, secret=None):
        if secret is not None:
            self.links.secret = secret
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.server.buildProtocol(None), lambda: self.links.buildProtocol(None),
        )
        pump.flush()
        return client, pump

    def send(self, n):
        for i in range(n):
            self.successResultOf(self.one.send("alice", self.one.address("heru@2"), f"m{i}"))

    def delivered(self):
        return [m.text for m in self.successResultOf(self.two.inbox("heru")).messages]

    def pending(self):
        return self.successResultOf(self.one.list_realms())[0]

    def state(self):
        """(linked, pending) of realm 2 as listrealms shows it."""
        realm = self.pending()
        return realm["linked"], realm["pending"]

    def test_queued_messages_flow_once_linked_in_order(self):
        self.send(10)  # queued while there is no link
        self.assertEqual(self.state(), (False, 10))
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(self.delivered(), [f"m{i}" for i in range(10)])
        self.one.clock.advance(2)  # the outbox count is at most a second old
        self.assertEqual(self.state(), (True, 0))

    def test_a_message_sent_while_linked_flows_at_once(self):
        client, pump = self.connect()
        self.send(1)
        pump.flush()
        self.assertEqual(self.delivered(), ["m0"])

    def test_a_message_announced_while_the_outbox_is_read_is_sent(self):
        # A read of the outbox made before a message was stored may answer
        # "that is all" after the message was announced: one another
        # process of the realm stored, announced as the stream is read
        # (and, for one session, every batch's, when the store announced
        # them before it answered the batch's reads: benchmarks/federation.py
        # then stalled with 360 messages in the outbox).  It is still sent.
        read = defer.Deferred()
        real, self.one.outbox_batch = self.one.outbox_batch, lambda *args: read
        client, pump = self.connect()  # the link comes up: the outbox is read
        self.one.outbox_batch = real
        self.send(1)  # stored and announced while that read runs
        read.callback(([], True))  # what the read saw: nothing more, the end
        pump.flush()
        self.assertEqual(self.delivered(), ["m0"])

    def test_unanswered_frames_are_sent_again_after_a_reconnect_and_stored_once(self):
        client, pump = self.connect()
        self.send(3)
        # The link is found dead after the frames went out: the far end
        # stores and answers them, but the answers reach no one.
        self.queue.detach(client)
        pump.flush()
        self.assertEqual(self.delivered(), ["m0", "m1", "m2"])
        self.assertEqual(self.state(), (False, 3))
        client, pump = self.connect()  # sent again: answered, stored once
        pump.flush()
        self.assertEqual(self.delivered(), ["m0", "m1", "m2"])
        self.one.clock.advance(2)
        self.assertEqual(self.pending()["pending"], 0)

    def test_a_refused_message_does_not_block_the_ones_behind_it(self):
        self.successResultOf(self.one.send("alice", self.one.address("nobody@2"), "lost"))
        self.send(2)
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(self.delivered(), ["m0", "m1"])
        self.one.clock.advance(2)
        self.assertEqual(self.pending()["pending"], 0)
        self.flushLoggedErrors()

    def test_answers_that_reach_a_realm_stopping_are_no_error_and_go_again(self):
        client, pump = self.connect()
        self.send(2)
        # The realm stops (its store refuses, unavailable) as the answers come.
        self.successResultOf(self.one._store.stop())
        pump.flush()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.delivered(), ["m0", "m1"])

    def test_a_refused_message_comes_back_to_its_sender_as_a_failure(self):
        sent = self.successResultOf(self.one.send("alice", self.one.address("nobody@2"), "lost"))
        client, pump = self.connect()
        pump.flush()
        history = self.successResultOf(self.one.inbox("alice")).messages
        self.assertEqual([m.kind for m in history], ["private", "failure"])
        failure = history[1].to_wire("1")
        self.assertEqual(failure["failed"], {"id": sent.message.id, "code": "no_such_user"})
        self.assertEqual(failure["msg_from"], "@2")
        self.assertEqual(failure["msg_to"], "alice")
        self.assertIn("nobody@2", failure["msg"])
        self.assertIn("no_such_user", self.pending()["last_error"])
        # Reported once: a reconnect does not bring it back.
        client, pump = self.connect()
        pump.flush()
        history = self.successResultOf(self.one.inbox("alice")).messages
        self.assertEqual([m.kind for m in history], ["private", "failure"])

    def test_a_failure_is_announced_to_the_notifier(self):
        seen = []
        self.one.notifier.subscribe(Recorder(seen))
        self.successResultOf(self.one.send("alice", self.one.address("nobody@2"), "lost"))
        client, pump = self.connect()
        pump.flush()
        self.assertEqual([d.message.kind for d in seen], ["private", "failure"])
        self.assertEqual(seen[1].local_users, {"alice"})

    def test_a_transient_refusal_keeps_the_message_and_sends_it_again(self):
        self.send(1)
        real_receive, real_run = self.two.receive, self.two.receive_run
        full = errors.StorageFull("the realm's disk is full")
        self.two.receive = lambda origin, message: defer.fail(full)
        self.two.receive_run = lambda origin, messages, then: then(Failure(full))
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(self.delivered(), [])
        self.assertFalse(self.pending()["linked"])  # dropped, to come back after the backoff
        self.assertIn("storage_full", self.pending()["last_error"])
        self.one.clock.advance(2)
        self.assertEqual(self.pending()["pending"], 1)
        history = self.successResultOf(self.one.inbox("alice")).messages
        self.assertEqual([m.kind for m in history], ["private"])  # no failure
        self.two.receive, self.two.receive_run = real_receive, real_run
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(self.delivered(), ["m0"])

    def test_listrealms_shows_the_age_of_the_oldest_pending_message(self):
        self.send(1)
        self.one.clock.advance(90)
        self.assertEqual(self.pending()["oldest_pending_seconds"], 90)
        self.assertIsNone(self.pending()["last_error"])
        client, pump = self.connect()
        pump.flush()
        self.one.clock.advance(2)
        self.assertIsNone(self.pending()["oldest_pending_seconds"])

    def test_a_failed_connection_is_shown_as_the_last_error(self):
        self.links.clientConnectionFailed(
            FakeConnector(), Failure(ConnectionRefusedError("Connection refused"))
        )
        self.links.stopTrying()
        self.assertIn("cannot connect", self.pending()["last_error"])
        self.assertIsNotNone(self.pending()["last_error_at"])

    def test_the_backoff_is_capped_and_the_link_never_given_up(self):
        connector = FakeConnector()
        delays = []
        for _ in range(40):
            self.links.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
            delays.append(self.links.delay)
            self.one.clock.advance(self.links.delay + 0.01)  # the retry happens
        self.assertLessEqual(max(delays), 5.0)  # capped at the default maxDelay
        self.assertGreater(max(delays), 4.0)  # and it did grow
        self.assertEqual(connector.connects, 40)  # every failure retried
        self.links.stopTrying()

    def test_the_backoff_resets_only_once_the_link_has_authenticated(self):
        self.links.delay = self.links.maxDelay
        client, pump = self.connect(secret="guess")  # connects, fails the proof
        self.assertEqual(self.links.delay, self.links.maxDelay)
        client, pump = self.connect(secret="pair-secret")
        self.assertEqual(self.links.delay, self.links.initialDelay)

    def test_a_peer_that_links_to_us_cuts_our_backoff_short(self):
        connector = FakeConnector()
        self.links.delay = self.links.maxDelay  # it has failed for a while
        self.links.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.assertEqual(connector.connects, 0)
        self.links.peer_seen()
        self.assertEqual(connector.connects, 1)  # now, not when the delay ends
        self.one.clock.advance(60)
        self.assertEqual(connector.connects, 1)  # the old retry was cancelled
        self.links.stopTrying()

    def test_the_realm_port_tells_when_a_peer_proved_itself(self):
        seen = []
        server = RealmServerFactory(self.one, secret_for, 65536, self.one.clock)
        server.on_peer_seen("2", lambda: seen.append("2"))
        back = LinkFactory(self.two, "1", "pair-secret", PeerQueue(self.two, "1"), 65536,
                           self.two.clock)
        client, _, pump = iosim.connectedServerAndClient(
            lambda: server.buildProtocol(None), lambda: back.buildProtocol(None),
        )
        pump.flush()
        self.assertEqual(seen, ["2"])

    def test_a_peer_that_stops_answering_is_dropped_and_everything_goes_again(self):
        client, pump = self.connect()
        answering = RealmProtocol._message_frame
        RealmProtocol._message_frame = lambda protocol, text: None  # swallowed
        try:
            self.send(2)
            pump.flush()
            self.one.clock.advance(PeerQueue.ANSWER_SECONDS - 1)
            self.assertTrue(self.pending()["linked"])
            self.one.clock.advance(2)
            pump.flush()
            self.assertFalse(self.pending()["linked"])
            self.assertIn("no answer", self.pending()["last_error"])
        finally:
            RealmProtocol._message_frame = answering
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(self.delivered(), ["m0", "m1"])

    def test_once_caught_up_new_messages_go_without_reading_the_outbox(self):
        client, pump = self.connect()
        reads = []
        real = self.one.outbox_batch
        self.one.outbox_batch = lambda *args: reads.append(args) or real(*args)
        self.queue.window = 100
        self.send(10)
        pump.flush()
        self.assertEqual(self.delivered(), [f"m{i}" for i in range(10)])
        self.assertEqual(reads, [])

    def test_a_run_of_messages_goes_in_one_write_once_caught_up(self):
        client, pump = self.connect()
        self.queue.window = 100
        writes = []
        transport = self.queue.link.transport
        self.patch(transport, "write", lambda data, real=transport.write: (
            writes.append(data), real(data)))
        self.send_run([f"m{i}" for i in range(5)])
        self.assertEqual([data.count(b" sendrealm ") for data in writes], [5])
        pump.flush()
        self.assertEqual(self.delivered(), [f"m{i}" for i in range(5)])

    def send_run(self, texts):
        heru = self.one.address("heru@2")
        self.one.send_run(
            [self.one.new_message(PRIVATE, "alice", heru, text) for text in texts], [].append
        )

    def test_a_run_the_window_s_bytes_cannot_take_goes_through_the_outbox(self):
        client, pump = self.connect()
        self.queue.window, self.queue.window_bytes = 100, 3000
        most = []
        track = self.queue._track

        def tracked(seq, message):
            track(seq, message)
            most.append(len(self.queue._in_flight))

        self.patch(self.queue, "_track", tracked)
        self.send_run([f"{i}" * 1000 for i in range(10)])  # one run, 10 KB of text
        self.assertLessEqual(max(most), 3)
        pump.flush()
        self.assertEqual(len(self.delivered()), 10)

    def test_a_message_of_a_run_that_fails_to_go_out_holds_none_of_the_others(self):
        # As when each went alone: the others go, in order, and none is
        # left in flight unwritten (with no answer to wait for).
        client, pump = self.connect()
        self.queue.window = 100
        line_of = MessageFrame.line_of

        def failing(message, *args):
            if message.text == "m2":
                raise RuntimeError("a bug making m2's frame")
            return line_of(message, *args)

        self.patch(MessageFrame, "line_of", staticmethod(failing))
        self.send_run([f"m{i}" for i in range(5)])
        pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.delivered(), ["m0", "m1", "m3", "m4"])
        self.assertEqual(self.queue._in_flight, {})

    def test_the_window_holds_a_bounded_number_of_bytes(self):
        self.queue.window, self.queue.window_bytes = 100, 3000
        for i in range(10):
            self.successResultOf(
                self.one.send("alice", self.one.address("heru@2"), f"{i}" * 1000)
            )
        most = []
        track = self.queue._track

        def tracked(seq, message):
            track(seq, message)
            most.append(len(self.queue._in_flight))

        self.queue._track = tracked
        client, pump = self.connect()
        pump.flush()
        self.assertEqual(len(self.delivered()), 10)
        self.assertLessEqual(max(most), 3)  # not 10: its bytes bound the window

    def test_a_welcome_that_is_not_a_json_object_is_a_refusal(self):
        for line in (b"[" * 5000, b"[1, 2]", b'"OK"', b"null"):
            link = self.links.buildProtocol(None)
            transport = StringTransport()
            link.makeConnection(transport)
            link._state = "welcome"  # the challenge answered, the peer's verdict next
            link.dataReceived(line + b"\r\n")
            self.assertTrue(transport.disconnecting, line[:10])
            self.assertIn("refused", self.pending()["last_error"])
            self.assertFalse(self.pending()["linked"])

    def test_an_acknowledgement_that_is_not_a_json_object_is_skipped(self):
        client, pump = self.connect()
        link = self.queue.link
        for line in (b"[" * 5000, b"[1, 2]", b"null"):
            link.dataReceived(line + b"\r\n")
        self.send(1)
        pump.flush()
        self.assertEqual(self.delivered(), ["m0"])
        self.assertTrue(self.pending()["linked"])

    def test_a_wrong_secret_sends_nothing(self):
        self.send(1)
        client, pump = self.connect(secret="guess")
        pump.flush()
        self.assertEqual(self.delivered(), [])
        self.assertFalse(self.pending()["linked"])


class _CountingLinkFactory(LinkFactory):
    """A LinkFactory that counts its attempts and tells of each failure."""

    attempts = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed = defer.Deferred()

    def startedConnecting(self, connector):
        self.attempts += 1

    def clientConnectionFailed(self, connector, reason):
        super().clientConnectionFailed(connector, reason)
        failed, self.failed = self.failed, defer.Deferred()
        failed.callback(None)


class RealConnectorTests(unittest.TestCase):
    """
    peer_seen on Twisted's own connector and ReconnectingClientFactory
    (whose private pending retry it cancels), its backoff on a Clock: a
    loopback port that refuses every connection.
    """

    def setUp(self):
        # Bound and never listening: connections are refused, and no other
        # program can take the port meanwhile.
        refusing = socket.socket()
        self.addCleanup(refusing.close)
        refusing.bind(("127.0.0.1", 0))
        self.port = refusing.getsockname()[1]
        realm = make_realm(self, name="1", peers=("2",))
        self.clock = task.Clock()
        self.links = _CountingLinkFactory(
            realm, "2", "pair-secret", PeerQueue(realm, "2"), 65536, self.clock
        )
        self.addCleanup(self.links.stopTrying)

    def waiting_retry(self):
        (call,) = self.clock.getDelayedCalls()
        return call, call.getTime() - self.clock.seconds()

    @defer.inlineCallbacks
    def test_a_peer_seen_connects_at_once_instead_of_waiting_out_the_backoff(self):
        links = self.links
        links.delay = links.maxDelay  # it has failed for a while
        failed = links.failed
        reactor.connectTCP("127.0.0.1", self.port, links, timeout=10)
        yield failed
        retry, delay = self.waiting_retry()
        self.assertEqual((links.attempts, delay), (1, links.maxDelay))

        failed = links.failed
        links.peer_seen()
        self.assertEqual(links.attempts, 2)  # now, not in maxDelay seconds
        self.assertFalse(retry.active())  # the retry that waited is cancelled
        yield failed  # refused again: the backoff starts over
        _, delay = self.waiting_retry()
        self.assertLess(delay, links.maxDelay)
        links.stopTrying()  # no second cancel of the cancelled retry
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_peer_seen_while_connecting_changes_nothing(self):
        self.links.peer_seen()  # never connected: nothing to retry
        reactor.connectTCP("127.0.0.1", self.port, self.links, timeout=10)
        self.links.peer_seen()  # connecting, no retry waiting
        self.assertEqual(self.links.attempts, 1)
        return self.links.failed



class OtherProcessesTests(unittest.TestCase):
    """
    On PostgreSQL other processes of the realm queue for the peer: their
    entries are not announced by this process's notifier.
    """

    def setUp(self):
        self.one = make_realm(self, name="1", peers=("2",))
        self.two = make_realm(self, name="2", peers=("1",))
        self.successResultOf(self.one.register("alice", "pw"))
        self.successResultOf(self.two.register("heru", "pw"))
        self.server = RealmServerFactory(self.two, secret_for, 65536, self.two.clock)

    def link(self, reread_seconds):
        queue = PeerQueue(self.one, "2", reread_seconds=reread_seconds)  # not subscribed
        links = LinkFactory(self.one, "2", "pair-secret", queue, 65536, self.one.clock)
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.server.buildProtocol(None), lambda: links.buildProtocol(None),
        )
        pump.flush()
        return queue, client, pump

    def delivered(self):
        return [m.text for m in self.successResultOf(self.two.inbox("heru")).messages]

    def queue_elsewhere(self, text):
        self.successResultOf(self.one.send("alice", self.one.address("heru@2"), text))

    def test_the_holder_reads_the_outbox_for_what_others_queued(self):
        queue, client, pump = self.link(reread_seconds=2.0)
        self.queue_elsewhere("from another process")
        pump.flush()
        self.assertEqual(self.delivered(), [])
        self.one.clock.advance(2)
        pump.flush()
        self.assertEqual(self.delivered(), ["from another process"])

    def test_the_holder_announces_users_another_process_registered(self):
        queue, client, pump = self.link(reread_seconds=2.0)
        self.successResultOf(self.one._store.create_user("bob", "x", "2026-12-06T00:00:00Z"))
        pump.flush()
        self.assertNotIn("bob", self.successResultOf(self.two.list_users(realm="1"))[0])
        self.one.clock.advance(2)
        pump.flush()
        self.assertIn("bob", self.successResultOf(self.two.list_users(realm="1"))[0])

    def test_without_rereading_only_announced_entries_go(self):
        queue, client, pump = self.link(reread_seconds=None)
        self.queue_elsewhere("never announced")
        self.one.clock.advance(60)
        pump.flush()
        self.assertEqual(self.delivered(), [])
