"""
The outbox: read in order per peer, bounded in bytes, emptied by answers.
"""

from twisted.internet import defer

from tests.storage.base import StoreTestCase, counts, message


class OutboxTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_a_peers_outbox_is_read_in_order_and_emptied_by_answers(self):
        store = self.open()
        yield self.populate(store)
        for n in range(5):
            yield store.add_private_message(message(n, recipient="bob", realm="2"))
        yield store.add_private_message(message(9, recipient="cy", realm="3"))
        first, complete = yield store.outbox_batch("2", 0, 3)
        self.assertEqual([m.id for _, m in first], ["ID0000", "ID0001", "ID0002"])
        self.assertFalse(complete)
        rest, complete = yield store.outbox_batch("2", first[-1][0], 10)
        self.assertEqual([m.id for _, m in rest], ["ID0003", "ID0004"])
        self.assertTrue(complete)
        # A read stops after the message that passes its bytes.
        cut, complete = yield store.outbox_batch("2", 0, 10, max_bytes=1)
        self.assertEqual((len(cut), complete), (1, False))
        yield store.outbox_done("2", [seq for seq, _ in first])
        self.assertEqual(counts((yield store.pending_counts())), {"2": 2, "3": 1})
        again, _ = yield store.outbox_batch("2", 0, 10)
        self.assertEqual([m.id for _, m in again], ["ID0003", "ID0004"])
