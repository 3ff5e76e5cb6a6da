"""
The realm's counters: fixed-bucket histograms, and what the notifier's
deliveries count (messages by kind and origin, file bytes in).
"""

from twisted.trial import unittest

from multirealm.core.metrics import Histogram
from multirealm.model import FileRef, Delivery, Message
from multirealm.names import Address
from tests.helpers import make_realm


class HistogramTests(unittest.TestCase):
    def test_a_value_on_a_bound_is_in_that_bucket_as_prometheus_le_says(self):
        histogram = Histogram((1, 5, 10))
        for value in (0.5, 1, 1.5, 5, 10, 11, 1000):
            histogram.observe(value)
        self.assertEqual(histogram.counts, [2, 2, 1, 2])
        self.assertEqual(
            histogram.cumulative(), [(1, 2), (5, 4), (10, 5), (float("inf"), 7)]
        )
        self.assertEqual(histogram.sum, 1029)


class DeliveryCountTests(unittest.TestCase):
    def test_messages_stored_are_counted_by_kind_and_origin_with_their_file_bytes(self):
        one = make_realm(self, name="1", peers=("2",))
        for user in ("alice", "bob"):
            self.successResultOf(one.register(user, "pw"))
        self.successResultOf(one.send("alice", one.address("bob"), "hi"))
        self.successResultOf(one.send("alice", one.address("heru@2"), "hi"))
        self.successResultOf(one.create_group("alice", one.address("team"), []))
        self.successResultOf(one.send_group("alice", one.address("team"), "all"))
        metrics = one.metrics
        self.assertEqual(metrics.stored[("private", "local")], 2)
        self.assertEqual(metrics.stored[("group", "local")], 1)
        self.assertEqual(metrics.file_bytes_in, {"local": 0, "peer": 0})

    def test_a_received_file_counts_its_bytes_as_from_a_peer(self):
        one = make_realm(self, name="1", peers=("2",))
        self.successResultOf(one.register("alice", "pw"))
        message = Message(
            "01" * 16, "private", Address("heru", "2"), Address("alice", "1"), "",
            "2026-12-06T00:00:00.000+00:00", file=FileRef("a.txt", "ab" * 16, 1234),
        )
        self.successResultOf(one.receive("2", message))
        self.successResultOf(one.receive("2", message))  # a duplicate: nothing new stored
        metrics = one.metrics
        self.assertEqual(metrics.stored, {("private", "peer"): 1})
        self.assertEqual(metrics.file_bytes_in, {"local": 0, "peer": 1234})

    def test_one_batch_of_kinds_origins_and_files_is_counted_as_each_alone(self):
        metrics = make_realm(self, name="1", peers=("2",)).metrics

        def delivery(kind, origin, size=None):
            file = None if size is None else FileRef("a.txt", "ab" * 16, size)
            sender = Address("heru", origin)
            message = Message("01" * 16, kind, sender, Address("alice", "1"), "", "t", file=file)
            return Delivery(message, origin)

        batch = [delivery("private", "1"), delivery("private", "2", 10), delivery("group", "1", 5),
                 delivery("private", "1", 7), delivery("group", "2"), delivery("private", "2")]
        metrics.messages_committed(batch[:2])
        metrics.messages_committed(batch[2:])
        self.assertEqual(metrics.stored, {("private", "local"): 2, ("private", "peer"): 2,
                                          ("group", "local"): 1, ("group", "peer"): 1})
        self.assertEqual(metrics.file_bytes_in, {"local": 12, "peer": 10})

