"""The garbage collector's tuning (multirealm.collector)."""

import gc
import tracemalloc
import weakref

from twisted.internet import defer, task
from twisted.trial import unittest

from multirealm import collector
from tests.helpers import Client, make_realm, make_store


class CollectorTuningTests(unittest.TestCase):
    def setUp(self):
        self.before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *self.before)
        self.addCleanup(gc.unfreeze)

    def test_started_it_collects_young_objects_rarely_and_freezes_what_exists(self):
        self.started(task.Clock())
        self.assertEqual(gc.get_threshold(), collector.THRESHOLDS)
        self.assertGreater(collector.YOUNG, 10_000)
        frozen = gc.get_freeze_count()
        self.assertGreater(frozen, 1000)  # at least the modules' objects

    def test_stopped_it_puts_the_defaults_back(self):
        service = collector.CollectorTuning(task.Clock())
        service.startService()
        service.stopService()
        self.assertEqual(gc.get_threshold(), self.before)
        self.assertEqual(gc.get_freeze_count(), 0)

    def started(self, clock):
        service = collector.CollectorTuning(clock)
        service.startService()
        self.addCleanup(service.stopService)

    def test_garbage_never_waits_more_than_a_second(self):
        clock = task.Clock()
        self.started(clock)
        gone = weakref.ref(_cycle())
        self.assertIsNotNone(gone())  # a few allocations: no young collection yet
        clock.advance(collector.YOUNG_EVERY)
        self.assertIsNone(gone())

    def test_cyclic_garbage_is_still_collected_on_its_own(self):
        self.started(task.Clock())
        gone = weakref.ref(_cycle())
        for _ in range(2 * collector.YOUNG):  # more cycles, no explicit collect
            _cycle()
        self.assertIsNone(gone())


class _Node:
    pass


def _cycle():
    """An object in a cycle (only the collector frees it), nobody else's."""
    node = _Node()
    node.self = node
    return node


class RefusalsLeaveNoCyclesTests(unittest.TestCase):
    """
    With young collections rare (L{collector.YOUNG}), a cycle that holds a
    client's bytes would keep them long after its reply: a refusal must
    be freed by its reference count alone.  The collector is off here, so
    whatever a cycle holds stays (found in review: 1,000 refused lines of
    60 KB kept 231 MiB).
    """

    def setUp(self):
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)

    def held(self):
        return tracemalloc.get_traced_memory()[0]

    def test_refused_requests_keep_nothing_of_their_lines(self):
        realm = make_realm(self)
        client = Client(realm)
        line = "send - bob " + "x" * 60_000  # invalid_session: no auth on this connection
        start = self.held()
        for _ in range(200):
            client.send(line)
            client.transport.clear()
        kept = self.held() - start
        self.assertLess(kept, 2**20, f"{kept / 2**20:.1f} MiB held by 200 refused lines")

    @defer.inlineCallbacks
    def test_one_refused_message_does_not_keep_its_whole_batch(self):
        store = make_store(self, inline=False)
        realm = make_realm(self, store=store)
        yield defer.ensureDeferred(realm.register("alice", "pw"))
        yield defer.ensureDeferred(realm.register("bob", "pw"))
        start = self.held()
        answered = []
        done = defer.Deferred()

        def then(result):
            answered.append(type(result).__name__)
            if len(answered) == 101:
                done.callback(None)

        text = "y" * 60_000
        for i in range(100):  # one reactor turn: one batch
            realm.send("alice", realm.address("bob"), text + str(i), then=then)
        realm.send("alice", realm.address("nobody"), "refused", then=then)
        yield done
        self.assertIn("Failure", answered)
        # The database thread keeps its last batch until the next one: send one.
        yield realm.send("alice", realm.address("bob"), "next batch")
        kept = self.held() - start
        self.assertLess(kept, 2 * 2**20, f"{kept / 2**20:.1f} MiB of the batch kept after its answers")
