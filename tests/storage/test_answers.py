"""
How the store answers: with a Deferred (L{BatchingStore.submit}), or with
one call (L{BatchingStore.submit_then}: the send path, issue 18).
"""

import gc
import weakref

from twisted.internet import defer
from twisted.python.failure import Failure

from multirealm import errors
from multirealm.model import Delivery
from tests.helpers import wait_until
from tests.storage.base import StoreTestCase, message


class AnswerWithACallTests(StoreTestCase):
    timeout = 15  # a batch left unanswered would otherwise wait two minutes
    def answers(self):
        """A C{then} that keeps its answers, and a Deferred that fires at the first."""
        got = []
        first = defer.Deferred()

        def then(result):
            got.append(result)
            if not first.called:
                first.callback(None)

        return then, got, first

    @defer.inlineCallbacks
    def test_a_message_is_answered_by_one_call_with_its_delivery_once_committed(self):
        store = self.open()
        yield store.create_user("heru", "h", "t")
        then, got, first = self.answers()
        self.assertIsNone(store.add_private_message(message(1), then))
        self.assertEqual(got, [])  # not before the commit
        yield first
        [delivery] = got
        self.assertIsInstance(delivery, Delivery)
        self.assertEqual(delivery.message.id, "ID0001")
        self.assertEqual(delivery.local_users, frozenset({"alice", "heru"}))

    @defer.inlineCallbacks
    def test_a_refused_message_is_answered_with_a_failure_and_its_neighbours_go_on(self):
        store = self.open(start=False)
        store.create_user("heru", "h", "t")
        then, got, first = self.answers()
        store.add_private_message(message(1, recipient="nobody"), then)
        after = store.add_private_message(message(2))
        store.start()
        yield first
        [failure] = got
        self.assertIsInstance(failure, Failure)
        self.assertTrue(failure.check(errors.NoSuchUser))
        yield after

    @defer.inlineCallbacks
    def test_a_call_that_raises_is_logged_and_the_batch_is_still_answered(self):
        store = self.open(start=False)
        store.create_user("heru", "h", "t")

        def broken(result):
            raise ZeroDivisionError("a bug in whoever was answered")

        store.add_private_message(message(1), broken)
        after = store.add_private_message(message(2))
        store.start()
        yield after
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @defer.inlineCallbacks
    def test_a_store_that_is_stopping_answers_unavailable_at_once(self):
        store = self.open()
        yield store.stop()
        then, got, _ = self.answers()
        store.add_private_message(message(1), then)
        [failure] = got
        self.assertTrue(failure.check(errors.Unavailable))

    @defer.inlineCallbacks
    def test_the_call_comes_on_the_reactor_thread(self):
        import threading

        store = self.open()
        yield store.create_user("heru", "h", "t")
        threads = []
        done = defer.Deferred()
        store.add_private_message(
            message(1), lambda result: (threads.append(threading.current_thread()),
                                        done.callback(None)))
        yield done
        self.assertEqual(threads, [threading.main_thread()])


class NothingKeptTests(StoreTestCase):
    timeout = 15

    @defer.inlineCallbacks
    def test_an_answered_batch_is_not_kept_by_the_waiting_thread(self):
        # Its operations hold their messages and whoever is answered (a
        # protocol): up to MAX_BATCH of them, until the next batch (review).
        gc.disable()
        self.addCleanup(gc.enable)

        class Marker:
            pass

        marker = Marker()
        kept = weakref.ref(marker)
        store = self.open()
        yield store.submit(lambda db, marker: None, marker, writes=False)
        del marker
        yield from wait_until(lambda: kept() is None, timeout=5)
