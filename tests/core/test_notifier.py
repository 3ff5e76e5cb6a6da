"""
The post-commit notifier: a subscriber hears of exactly the messages that
were committed, after their commit, and of nothing rolled back.
"""

import sqlite3

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from multirealm import errors
from multirealm.core.interfaces import IMessageObserver
from multirealm.core.notifier import Notifier, each_delivery
from multirealm.model import PRIVATE, Delivery, Message
from multirealm.names import Address
from tests.helpers import Recorder, make_realm, make_store

A_MESSAGE = Message("ID1", PRIVATE, Address("a", "1"), Address("b", "1"), "hi", "2026-01-01")


class NotifierTests(unittest.TestCase):
    def test_every_subscriber_hears_even_when_one_fails(self):
        notifier = Notifier()
        first, last = Recorder(), Recorder()
        broken = Recorder()
        broken.messages_committed = lambda deliveries: 1 / 0
        for observer in (first, broken, last):
            notifier.subscribe(observer)
        delivery = Delivery(message=A_MESSAGE, origin="1")
        notifier.notify([delivery])
        self.assertEqual((first.deliveries, last.deliveries), ([delivery], [delivery]))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_an_observer_that_handles_each_message_goes_on_past_one_that_fails(self):
        handled = []

        def committed(delivery):
            if delivery.message.text == "bad":
                raise ZeroDivisionError()
            handled.append(delivery.message.text)

        batch = [Delivery(message=A_MESSAGE._replace(text=text), origin="1")
                 for text in ("one", "bad", "three")]
        each_delivery(batch, committed, "1")
        self.assertEqual(handled, ["one", "three"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_recorder_provides_the_interface(self):
        self.assertTrue(verifyObject(IMessageObserver, Recorder()))


class RealmAnnouncesTests(unittest.TestCase):
    """The realm's notifier, on the real (threaded) store."""

    @defer.inlineCallbacks
    def setUp(self):
        self.store = make_store(self, inline=False)
        self.realm = make_realm(self, store=self.store)
        yield self.realm.register("alice", "pw")
        yield self.realm.register("heru", "pw")
        yield self.realm.create_group(
            "alice", Address("team", "1"), [Address("heru", "1"), Address("bob", "2")]
        )
        self.observer = Recorder()
        self.realm.notifier.subscribe(self.observer)

    @defer.inlineCallbacks
    def test_a_sent_message_is_announced_after_its_commit(self):
        seen_when_announced = []
        observer = self.observer

        def committed(deliveries):
            # Announced only once durable: a second connection finds it.
            other = sqlite3.connect(self.store.path)
            self.addCleanup(other.close)
            for delivery in deliveries:
                seen_when_announced.append(
                    other.execute("SELECT count(*) FROM messages WHERE id = ?",
                                  (delivery.message.id,)).fetchone()[0]
                )
            Recorder.messages_committed(observer, deliveries)

        observer.messages_committed = committed
        sent = yield self.realm.send("alice", Address("heru", "1"), "hello")
        (delivery,) = observer.deliveries
        self.assertEqual(delivery, sent)
        self.assertEqual(delivery.message.text, "hello")
        self.assertEqual(delivery.local_users, {"alice", "heru"})
        self.assertEqual(seen_when_announced, [1])

    @defer.inlineCallbacks
    def test_group_and_remote_messages_report_who_and_where(self):
        yield self.realm.send_group("heru", Address("team", "1"), "to the team")
        yield self.realm.send("alice", Address("bob", "2"), "to bob")
        group, remote = self.observer.deliveries
        # A group message names the realms it was queued for, not the
        # group's members: its cost does not grow with them.
        self.assertEqual((group.local_users, group.queued_for), (frozenset(), {"2"}))
        self.assertEqual((remote.local_users, remote.queued_for), ({"alice"}, {"2"}))

    @defer.inlineCallbacks
    def test_refused_messages_are_not_announced(self):
        yield self.assertFailure(
            self.realm.send("alice", Address("nobody", "1"), "x"), errors.NoSuchUser
        )
        yield self.assertFailure(
            self.realm.send_group("alice", Address("none", "1"), "x"), errors.NoSuchGroup
        )
        self.assertEqual(self.observer.deliveries, [])

    @defer.inlineCallbacks
    def test_a_rolled_back_transaction_announces_nothing(self):
        # Another writer holds the database: the batch's BEGIN fails, the
        # whole batch rolls back, and so nothing of it may be announced.
        yield self.store.submit(lambda db: db.execute("PRAGMA busy_timeout = 0"), writes=False)
        blocker = sqlite3.connect(self.store.path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("PRAGMA busy_timeout = 0")
        blocker.execute("BEGIN IMMEDIATE")
        failed = self.realm.send("alice", Address("heru", "1"), "lost")
        yield self.assertFailure(failed, sqlite3.OperationalError)
        blocker.execute("ROLLBACK")
        yield self.realm.send("alice", Address("heru", "1"), "kept")
        self.assertEqual(self.observer.texts, ["kept"])

    @defer.inlineCallbacks
    def test_a_failure_in_the_same_batch_leaves_its_neighbours_announced(self):
        def insert_then_break(db):
            db.execute("INSERT INTO users VALUES ('ghost', 'h', 't')")
            raise ValueError("a bug after a write")

        # Queued in one reactor turn: one batch, rerun with savepoints.
        first = self.realm.send("alice", Address("heru", "1"), "one")
        broken = self.store.submit(insert_then_break)
        last = self.realm.send("heru", Address("alice", "1"), "two")
        yield first
        yield self.assertFailure(broken, ValueError)
        yield last
        self.assertEqual(self.observer.texts, ["one", "two"])
        self.assertEqual((yield self.realm.list_users()), (["alice", "heru"], False))
