"""
The timeline in two tables (schema step 013): SQLite's store writes a
batch's timeline rows to the small timeline_recent and, past
L{messages.SETTLE_ROWS} rows, moves a few mailboxes' rows at a time to
timeline_settled (L{messages.stage_timeline}); readers read the view
timeline, both.
"""

import os
import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from multirealm.model import user_mailbox
from multirealm.names import Address
from multirealm.storage import schema
from multirealm.storage.queries import conversations, groups, messages
from multirealm.storage.queries.common import ThreadCache
from tests.storage.base import StoreTestCase, message, postgres_only, sqlite_only


class StagedTimelineTests(StoreTestCase):
    def column(self, store, sql, *args):
        return store.submit(lambda db: [r[0] for r in db.execute(sql, args)], writes=False)

    def counts(self, store):
        """Rows of (timeline_recent, timeline_settled)."""
        return store.submit(lambda db: tuple(
            db.execute(f"SELECT count(*) FROM timeline_{table}").fetchone()[0]
            for table in ("recent", "settled")), writes=False)

    def ids(self, store, name, **kwargs):
        d = store.history(user_mailbox(Address(name, "1")), None, 100, **kwargs)
        return d.addCallback(lambda page: [m.id for m in page.messages])

    @sqlite_only
    @defer.inlineCallbacks
    def test_rows_wait_in_the_recent_table_then_move_a_few_mailboxes_at_a_time(self):
        self.patch(messages, "SETTLE_ROWS", 20)
        store = self.open()
        names = ["alice", "heru", "bob", "carol", "dee", "eve"]
        for name in names:
            yield store.create_user(name, "h", "t")
        for n in range(1, 11):  # 20 rows: they wait
            yield store.add_private_message(message(n, sender=names[n % 6],
                                                    recipient=names[(n + 1) % 6]))
        self.assertEqual((yield self.counts(store)), (20, 0))
        seen, moved = [], []
        for n in range(11, 61):
            before = yield self.counts(store)
            yield store.add_private_message(message(n, sender=names[n % 6],
                                                    recipient=names[(n + 1) % 6]))
            recent, settled = yield self.counts(store)
            self.assertEqual(recent + settled, 2 * n)
            moved.append(settled - before[1])
            seen.append(recent)
            # Only a batch that takes the table past the limit moves rows.
            self.assertEqual(moved[-1] > 0, before[0] + 2 > 20, (n, before, recent))
        # Each batch past the limit moves the rows of the next mailboxes
        # (at least twice what it wrote), never the whole table at once.
        self.assertTrue(all(0 <= m < 20 for m in moved), moved)
        self.assertLessEqual(max(seen), 20 + 4, seen)
        self.assertGreater(sum(moved), 60)
        # Every mailbox had rows moved: the sweep went round.
        boxes = yield self.column(store, "SELECT DISTINCT mailbox FROM timeline_settled")
        self.assertEqual(len(boxes), 6)
        # Readers see both tables, in order, whichever holds a row.
        for k, name in enumerate(names):
            ids = [f"ID{n:04d}" for n in range(1, 61) if k in (n % 6, (n + 1) % 6)]
            self.assertEqual((yield self.ids(store, name)), ids)

    @sqlite_only
    @defer.inlineCallbacks
    def test_the_rows_waiting_are_counted_again_after_a_restart(self):
        self.patch(messages, "SETTLE_ROWS", 10)
        store = self.open()
        yield self.populate(store)
        for n in range(1, 4):  # 6 rows
            yield store.add_private_message(message(n))
        yield store.stop()
        store = self.open()
        for n in range(4, 6):
            yield store.add_private_message(message(n))
        self.assertEqual((yield self.counts(store)), (10, 0))
        yield store.add_private_message(message(6))  # 12 rows: alice's move
        self.assertEqual((yield self.counts(store)), (6, 6))

    @sqlite_only
    @defer.inlineCallbacks
    def test_the_rows_waiting_are_counted_again_after_a_rollback(self):
        self.patch(messages, "SETTLE_ROWS", 10)
        store = self.open()
        yield self.populate(store)
        yield store.add_private_message(message(1))

        def send_then_fail(db):
            messages.add_private_message(db, store.thread_cache, "1", "1", message(2))
            messages.write_gathered(db, store.thread_cache)  # 2 more rows, undone
            raise ValueError("bug")

        yield self.assertFailure(store.submit(send_then_fail), ValueError)
        for n in range(3, 7):
            yield store.add_private_message(message(n))
        self.assertEqual((yield self.counts(store)), (10, 0))
        yield store.add_private_message(message(7))  # 12 rows: alice's move
        self.assertEqual((yield self.counts(store)), (6, 6))

    @postgres_only
    @defer.inlineCallbacks
    def test_postgresql_writes_the_settled_table_at_once(self):
        store = self.open()
        yield self.populate(store)
        yield store.add_private_message(message(1))
        self.assertEqual((yield self.counts(store)), (0, 2))
        self.assertEqual((yield self.ids(store, "alice")), ["ID0001"])

    @sqlite_only
    @defer.inlineCallbacks
    def test_reading_a_page_costs_the_same_in_a_long_history(self):
        # The view is two tables; a query that joins it whole reads all of a
        # mailbox first.  Each reader reads a page, or a bounded step.
        short = yield self.steps_reading(600)
        long = yield self.steps_reading(3000)
        for (what, few), (_, many) in zip(short, long):
            self.assertLess(many, few * 1.5, what)

    @defer.inlineCallbacks
    def steps_reading(self, sent):
        """The SQLite VM steps of each reader of alice's history after C{sent} messages."""
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")
        store = self.open()
        yield self.populate(store)
        self.patch(messages, "SETTLE_ROWS", 0)  # all but the last ten settled
        yield defer.gatherResults([store.add_private_message(message(n))
                                   for n in range(1, sent - 9)])
        self.patch(messages, "SETTLE_ROWS", 10**9)
        for n in range(sent - 9, sent + 1):
            yield store.add_private_message(message(n))
        self.assertEqual((yield self.counts(store)), (20, 2 * sent - 20))
        middle = f"ID{sent // 2:04d}"
        readers = [
            ("newest page", lambda: store.history(user_mailbox(Address("alice", "1")), None, 10)),
            ("page after", lambda: store.history(user_mailbox(Address("alice", "1")), middle, 10)),
            ("page before", lambda: store.history(user_mailbox(Address("alice", "1")), None, 10,
                                                  before_id=middle)),
            # The last message: the marker moves to the end, nothing to count.
            ("mark read", lambda: store.mark_read("heru", Address("alice", "1"), f"ID{sent:04d}")),
        ]
        # (A conversation's page and a count read in steps of up to
        # private_history.SCAN_ROWS rows by design, whatever the tables.)
        found = []
        for what, read in readers:
            counted = [0]

            def count():
                counted[0] += 1
                return 0

            yield store.submit(lambda db: db.set_progress_handler(count, 10), writes=False)
            yield read()
            yield store.submit(lambda db: db.set_progress_handler(None, 10), writes=False)
            found.append((what, counted[0]))
        yield store.stop()
        return found


class StepTests(StoreTestCase):
    @sqlite_only
    def test_step_013_keeps_the_timeline(self):
        path = self.mktemp()
        db = sqlite3.connect(path, isolation_level=None)
        schema.migrate(db, path, up_to=12, realm="1")
        db.executescript(
            "INSERT INTO mailboxes (id, owner) VALUES (1, 'user:alice@1'), (2, 'user:heru@1');"
            "INSERT INTO timeline VALUES (1, 1), (2, 1), (1, 2), (2, 2);"
        )
        self.assertEqual(schema.migrate(db, path, realm="1"), (12, schema.latest()))
        self.assertEqual(
            db.execute("SELECT * FROM timeline ORDER BY mailbox, seq").fetchall(),
            [(1, 1), (1, 2), (2, 1), (2, 2)],
        )
        self.assertEqual(db.execute("SELECT count(*) FROM timeline_settled").fetchone(), (4,))
        db.close()


def temporary_files():
    """The temporary files SQLite has open in this process (Linux)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:  # SQLite names its temporary files so
            found.add(target)
    return found


class SweepTests(unittest.TestCase):
    """The sweep of timeline_recent, driven directly (review of issue 18)."""

    def database(self):
        path = os.path.join(self.mktemp(), "realm.sqlite3")
        os.makedirs(os.path.dirname(path))
        db = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(db.close)
        schema.migrate(db, path, realm="1")
        return db

    def test_a_late_mailbox_s_rows_are_settled_in_the_end(self):
        # The newest mailboxes (numbered last) get one message, then 50 busy
        # ones 8 messages a batch: the sweep must reach past the busy ones.
        db = self.database()
        cache = ThreadCache()
        cache.stage_timeline = True
        seq = 0

        def batch(pairs):
            nonlocal seq
            values = []
            for a, b in pairs:
                seq += 1
                values += [a, seq, b, seq]
            db.execute("BEGIN")
            messages.stage_timeline(db, cache, values)
            db.execute("COMMIT")

        batch([(1000, 1001)])
        for i in range(3000):
            batch([(1 + (i * 7 + k) % 50, 1 + (i * 7 + k + 1) % 50) for k in range(8)])
        self.assertEqual(
            db.execute("SELECT count(*) FROM timeline_recent WHERE mailbox >= 1000").fetchone(),
            (0,),
        )
        self.assertEqual(
            db.execute("SELECT count(*) FROM timeline").fetchone(), (2 * seq,)
        )

    def test_a_batch_s_rows_and_their_move_keep_no_statement_journal(self):
        # A statement SQLite may have to undo alone keeps the pages it
        # changes in a journal, past 64 KiB in a temporary file opened,
        # written and closed each batch (issue 18).  The batch undoes a
        # failed statement itself (OR FAIL): no journal, no file.  (Not
        # the conversations' counts: an upsert's update always keeps one.)
        if not os.path.isdir("/proc/self/fd"):
            raise unittest.SkipTest("needs /proc/self/fd to see open files")
        db = self.database()
        db.execute("PRAGMA journal_mode=WAL")  # as the store's
        cache = ThreadCache()
        cache.stage_timeline = True
        mailboxes = 2000
        db.execute("BEGIN")
        # Pages that exist before the batch: a move changes them.
        db.executemany("INSERT INTO timeline_settled VALUES (?, ?)",
                       [(1 + n % mailboxes, n) for n in range(1, 40001)])
        db.executemany("INSERT INTO timeline_recent VALUES (?, ?)",
                       [(1 + n % mailboxes, n) for n in range(40001, 40001 + messages.SETTLE_ROWS)])
        db.execute("COMMIT")
        before = temporary_files()
        first = 40001 + messages.SETTLE_ROWS
        values = [v for n in range(first, first + 2000) for v in (1 + n % mailboxes, n)]
        db.execute("BEGIN")
        messages.stage_timeline(db, cache, values)
        self.assertGreaterEqual(db.execute("SELECT count(*) FROM timeline_settled").fetchone()[0],
                                42000)  # it moved rows
        during = temporary_files()
        db.execute("COMMIT")
        self.assertEqual(during, before)

    def test_the_last_seq_of_a_group_costs_the_same_in_a_long_history(self):
        # post_withdrawn and _history_sent read a group's last seq: with
        # max(seq) over the view, SQLite reads every row of the mailbox.
        for few, many in zip(self.last_seq_steps(600), self.last_seq_steps(6000)):
            self.assertLess(many, few * 1.5 + 5)

    def last_seq_steps(self, rows):
        db = self.database()
        db.execute("INSERT INTO mailboxes VALUES (1, 'group:team@1')")
        db.execute("INSERT INTO group_activity VALUES (1, 5, 5, NULL)")
        db.executemany("INSERT INTO timeline_settled VALUES (1, ?)", [(s,) for s in range(1, rows)])
        db.execute("INSERT INTO timeline_recent VALUES (1, ?)", (rows,))
        found = []
        for call in (lambda: conversations.post_withdrawn(db, 1, rows),
                     lambda: groups._history_sent(db, "1", "team", "2")):
            counted = [0]

            def count():
                counted[0] += 1
                return 0

            db.set_progress_handler(count, 10)
            call()
            db.set_progress_handler(None, 10)
            found.append(counted[0])
        return found
