"""
One private conversation read backwards (storage/queries/private_history.py):
only the two parties' messages, only what the reader's own history holds,
a bounded number of rows a step.
"""

import os
import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from multirealm import errors
from multirealm.model import FAILURE, Failed, Message
from multirealm.names import Address
from multirealm.storage import schema
from multirealm.storage.queries import messages, private_history
from tests.storage.base import StoreTestCase, message


class PrivateHistoryTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_two_users_one_name_in_two_cases_read_apart(self):
        # A first-release database may hold 'Alice' and 'alice': two people.
        store = self.open(start=False)
        store.start()
        for name in ("alice", "heru"):
            yield store.create_user(name, "h", "t")
        yield store.stop()
        self.sql("INSERT INTO users VALUES ('Alice', 'h', 't')")
        store = self.open()
        yield store.add_private_message(message(1, "Alice", "heru"))
        yield store.add_private_message(message(2, "alice", "heru"))
        yield store.add_private_message(message(3, "heru", "Alice"))

        def texts(user, peer):
            d = store.private_history(user, Address(peer, "1"), None, 10)
            return d.addCallback(lambda page: [m.text for m in page.messages])

        self.assertEqual((yield texts("alice", "heru")), ["text 2"])
        self.assertEqual((yield texts("Alice", "heru")), ["text 1", "text 3"])
        self.assertEqual((yield texts("heru", "alice")), ["text 2"])
        self.assertEqual((yield texts("heru", "Alice")), ["text 1", "text 3"])
        yield self.assertFailure(
            store.private_history("alice", Address("heru", "1"), "ID0001", 10), errors.BadRequest
        )

    @defer.inlineCallbacks
    def test_a_conversation_far_apart_is_read_in_steps_of_bounded_rows(self):
        self.patch(private_history, "SCAN_ROWS", 5)
        store = self.open()
        for name in ("alice", "heru", "bob"):
            yield store.create_user(name, "h", "t")
        n = 0
        for text in ["h0", "h1"] + [None] * 12 + ["h2"] + [None] * 3 + ["h3"]:
            n += 1
            if text is None:  # bob's, in alice's history between heru's
                yield store.add_private_message(message(n, "bob", "alice"))
            else:
                yield store.add_private_message(message(n, "heru", "alice")._replace(text=text))
        steps = []
        real = store.submit

        def counted(function, *args, **kwargs):
            steps.append(function.__name__)
            return real(function, *args, **kwargs)

        self.patch(store, "submit", counted)
        page = yield store.private_history("alice", Address("heru", "1"), None, 3)
        self.assertEqual(([m.text for m in page.messages], page.more), (["h1", "h2", "h3"], True))
        # 20 rows, 5 a step: each step a batch of its own.
        self.assertEqual(steps, ["private_history", "_read_back", "_read_back", "_read_back"])
        older = yield store.private_history("alice", Address("heru", "1"), "ID0002", 3)
        self.assertEqual(([m.text for m in older.messages], older.more), (["h0"], False))


class PagingTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_paging_back_gives_each_message_once_in_order(self):
        # Both directions, another realm's user in two cases, failures and
        # another conversation interleaved; pages cut by count and by bytes.
        store = self.open()
        yield self.populate(store)
        sent, failed = [], []
        for n in range(60):
            text = "x" * (n * 37 % 400)
            if n % 5 == 0:
                mine = message(n, "alice", "bob", realm="2")._replace(text=text)
                yield store.add_private_message(mine)
                sent.append(mine.id)
            elif n % 5 == 1:
                theirs = message(n, "BOB" if n % 2 else "bob", "alice", sender_realm="2")
                yield store.receive_message("2", theirs._replace(text=text))
                sent.append(f"ID{n:04d}")
            elif n % 5 in (2, 4):
                yield store.add_private_message(message(n, "heru", "alice"))
            else:
                (seq, out), = (yield store.outbox_batch("2", 0, 1))[0]
                failure = Message(f"F{n:04d}", FAILURE, Address("", "2"), Address("alice", "1"),
                                  "no", out.timestamp, failed=Failed(out.id, "no_such_user"))
                yield store.record_failure("2", seq, failure)
                failed.append(failure.id)

        def read_back(peer, limit, max_bytes):
            ids, before = [], None
            while True:
                page = yield store.private_history("alice", peer, before, limit, max_bytes)
                ids[:0] = [m.id for m in page.messages]
                if not page.more:
                    return ids
                before = page.messages[0].id

        for limit, max_bytes in [(1, 2**62), (4, 2**62), (7, 2000), (50, 1500)]:
            got = yield defer.inlineCallbacks(read_back)(Address("Bob", "2"), limit, max_bytes)
            self.assertEqual(got, sent, (limit, max_bytes))
            got = yield defer.inlineCallbacks(read_back)(Address("", "2"), limit, max_bytes)
            self.assertEqual(got, failed, (limit, max_bytes))


class PagePlanTests(unittest.TestCase):
    """
    A page's messages are read in order, never sorted: a sort takes every
    row of the page or step, bodies and all (64 KiB each at most), before
    the page takes its first, and the page stops at the reply's bytes.
    """

    def plans(self, statements):
        path = os.path.join(self.mktemp(), "realm.sqlite3")
        os.makedirs(os.path.dirname(path))
        db = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(db.close)
        schema.migrate(db, path, realm="1")
        return [
            [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, (1,) * sql.count("?"))]
            for sql in statements
        ]

    def test_history_pages_sort_nothing(self):
        pages = [messages._page_of("", "DESC"), messages._page_of(" AND seq > ?", ""),
                 messages._page_of(" AND seq < ?", "DESC")]
        for plan in self.plans(pages):
            self.assertFalse([step for step in plan if "TEMP B-TREE" in step], plan)

    def test_a_conversation_s_steps_sort_nothing(self):
        steps = [private_history._step_of(True), private_history._step_of(False)]
        for plan in self.plans(steps):
            self.assertFalse([step for step in plan if "TEMP B-TREE" in step], plan)
