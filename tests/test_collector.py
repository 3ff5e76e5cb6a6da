"""The garbage collector's tuning (multirealm.collector)."""

import gc
import weakref

from twisted.trial import unittest

from multirealm import collector


class CollectorTuningTests(unittest.TestCase):
    def setUp(self):
        self.before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *self.before)
        self.addCleanup(gc.unfreeze)

    def test_started_it_collects_young_objects_rarely_and_freezes_what_exists(self):
        service = collector.CollectorTuning()
        service.startService()
        self.assertEqual(gc.get_threshold(), collector.THRESHOLDS)
        self.assertGreater(collector.YOUNG, 10_000)
        frozen = gc.get_freeze_count()
        self.assertGreater(frozen, 1000)  # at least the modules' objects

    def test_stopped_it_puts_the_defaults_back(self):
        service = collector.CollectorTuning()
        service.startService()
        service.stopService()
        self.assertEqual(gc.get_threshold(), self.before)
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_cyclic_garbage_is_still_collected_on_its_own(self):
        service = collector.CollectorTuning()
        service.startService()
        self.addCleanup(service.stopService)

        class Node:
            pass

        first = Node()
        first.self = first  # a cycle: only the collector frees it
        gone = weakref.ref(first)
        del first
        for _ in range(2 * collector.YOUNG):  # more cycles, no explicit collect
            node = Node()
            node.self = node
        self.assertIsNone(gone())
