"""
The timeline in two tables (schema step 013): SQLite's store writes a
batch's timeline rows to the small timeline_recent and moves them to
timeline_settled every L{messages.SETTLE_ROWS} rows
(L{messages.stage_timeline}); readers read the view timeline, both.
"""

import os
import sqlite3

from twisted.internet import defer

from multirealm.model import user_mailbox
from multirealm.names import Address
from multirealm.storage import schema
from multirealm.storage.queries import messages
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
    def test_rows_wait_in_the_recent_table_then_settle_all_together(self):
        self.patch(messages, "SETTLE_ROWS", 10)
        store = self.open()
        yield self.populate(store)
        for n in range(1, 5):  # 8 rows
            yield store.add_private_message(message(n))
        self.assertEqual((yield self.counts(store)), (8, 0))
        self.assertEqual((yield self.ids(store, "alice")), [f"ID{n:04d}" for n in range(1, 5)])
        yield store.add_private_message(message(5))  # 10 rows: they move
        self.assertEqual((yield self.counts(store)), (0, 10))
        yield store.add_private_message(message(6))
        self.assertEqual((yield self.counts(store)), (2, 10))
        # Readers see both tables, in order, whichever holds a row.
        self.assertEqual((yield self.ids(store, "heru")), [f"ID{n:04d}" for n in range(1, 7)])
        self.assertEqual(
            (yield self.column(store, "SELECT seq FROM timeline WHERE mailbox ="
                               " (SELECT id FROM mailboxes WHERE owner = 'user:alice@1')"
                               " ORDER BY seq")),
            (yield self.column(store, "SELECT seq FROM messages ORDER BY seq")),
        )

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
        yield store.add_private_message(message(4))
        self.assertEqual((yield self.counts(store)), (8, 0))
        yield store.add_private_message(message(5))
        self.assertEqual((yield self.counts(store)), (0, 10))

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
        for n in range(3, 6):
            yield store.add_private_message(message(n))
        self.assertEqual((yield self.counts(store)), (8, 0))
        yield store.add_private_message(message(6))
        self.assertEqual((yield self.counts(store)), (0, 10))

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
        self.patch(messages, "SETTLE_ROWS", 2 * sent - 20)  # most settled, some recent
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")
        store = self.open()
        yield self.populate(store)
        yield store.create_group("team", Address("alice", "1"),
                                 [Address("alice", "1"), Address("heru", "1")], "t")
        yield defer.gatherResults([store.add_private_message(message(n))
                                   for n in range(1, sent + 1)])
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
