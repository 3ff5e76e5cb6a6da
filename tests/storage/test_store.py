"""
The store, on each engine: durability across restarts, group commit, isolation of one
failing operation inside a batch.
"""

import sqlite3
import threading
import time

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from multirealm import errors
from multirealm.core.interfaces import IStore
from multirealm.model import user_mailbox
from multirealm.names import Address
from multirealm.storage.queries import conversations
from multirealm.storage.queries.messages import mailbox_number
from tests.storage.base import StoreTestCase, message, refuse_late, sqlite_only


class DurabilityTests(StoreTestCase):
    def test_provides_istore(self):
        self.assertTrue(verifyObject(IStore, self.open(start=False)))

    @sqlite_only
    @defer.inlineCallbacks
    def test_commits_are_durable_wal_with_synchronous_full(self):
        # WAL plus synchronous=FULL: a commit survives a power loss.  With
        # NORMAL (1) or OFF (0) the last commits can be lost.
        durability = yield self.open().durability()
        self.assertEqual(durability, {"journal_mode": "wal", "synchronous": 2})

    @defer.inlineCallbacks
    def test_everything_survives_a_restart(self):
        store = self.open()
        yield self.populate(store)
        yield store.create_session("tokhash", "alice", 2e9)
        yield store.create_group("team", Address("alice", "1"), [Address("alice", "1")], "t")
        yield store.add_private_message(message(1))
        yield store.stop()

        again = self.open()
        self.assertEqual((yield again.list_users()), ["alice", "heru"])
        self.assertEqual((yield again.password_hash("alice")), ("alice", "hash-a"))
        self.assertEqual((yield again.session_user("tokhash", 1e9)), ("alice", 2e9))
        self.assertEqual((yield again.list_groups()), ["team"])
        history = yield again.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual(history.messages, (message(1),))

    @defer.inlineCallbacks
    def test_acknowledged_write_is_on_disk_without_a_clean_stop(self):
        store = self.open()
        yield self.populate(store)
        yield store.add_private_message(message(1))
        # A second store on the same file, as after kill -9: the first one
        # was never stopped or closed.
        other = self.open()
        history = yield other.history(user_mailbox(Address("alice", "1")), None, 10)
        self.assertEqual(len(history.messages), 1)

    @defer.inlineCallbacks
    def test_expired_session_is_removed(self):
        store = self.open()
        yield self.populate(store)
        yield store.create_session("tokhash", "alice", 100.0)
        self.assertIsNone((yield store.session_user("tokhash", 100.0)))
        self.assertFalse((yield store.delete_session("tokhash")))


class BatchTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_operations_queued_together_share_one_commit(self):
        store = self.open(start=False)
        results = [store.create_user(f"u{i}", "h", "t") for i in range(300)]
        store.start()
        yield defer.gatherResults(results)
        self.assertEqual(store.commits, 1)
        self.assertEqual(len((yield store.list_users())), 300)

    @defer.inlineCallbacks
    def test_a_failing_operation_leaves_the_rest_of_its_batch(self):
        store = self.open(start=False)

        def half_done_then_broken(db):
            db.execute("INSERT INTO users VALUES ('ghost', 'h', 't')")
            raise ValueError("bug")

        first = store.create_user("a", "h", "t")
        duplicate = store.create_user("a", "h", "t")
        broken = store.submit(half_done_then_broken)
        last = store.create_user("b", "h", "t")
        store.start()
        yield first
        yield self.assertFailure(duplicate, errors.UserExists)
        yield self.assertFailure(broken, ValueError)
        yield last
        self.assertEqual((yield store.list_users()), ["a", "b"])

    @defer.inlineCallbacks
    def test_a_failing_read_fails_alone_and_the_store_goes_on(self):
        store = self.open(start=False)

        def broken_read(db):
            raise ValueError("bug in a query")

        before = store.create_user("a", "h", "t")
        broken = store.submit(broken_read, writes=False)
        after = store.create_user("b", "h", "t")
        store.start()
        yield before
        yield self.assertFailure(broken, ValueError)
        yield after
        self.assertEqual((yield store.list_users()), ["a", "b"])

    @defer.inlineCallbacks
    def test_a_read_whose_sql_fails_fails_alone(self):
        # After an error PostgreSQL refuses the rest of the transaction:
        # the batch runs again with every operation in a savepoint.
        store = self.open(start=False)
        before = store.create_user("a", "h", "t")
        broken = store.submit(lambda db: db.execute("SELECT no_such_column FROM users"),
                              writes=False)
        after = store.create_user("b", "h", "t")
        store.start()
        yield before
        yield self.assertFailure(broken, Exception)
        yield after
        self.assertEqual((yield store.list_users()), ["a", "b"])

    @sqlite_only
    @defer.inlineCallbacks
    def test_a_failing_begin_fails_the_batch_and_the_store_goes_on(self):
        store = self.open()
        yield store.submit(lambda db: db.execute("PRAGMA busy_timeout = 0"), writes=False)
        blocker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("PRAGMA busy_timeout = 0")
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        yield self.assertFailure(store.create_user("a", "h", "t"), sqlite3.OperationalError)
        blocker.execute("ROLLBACK")
        yield store.create_user("a", "h", "t")
        self.assertEqual((yield store.list_users()), ["a"])

    @defer.inlineCallbacks
    def test_a_refusal_after_a_change_is_undone_too(self):
        store = self.open(start=False)

        late = store.submit(refuse_late)
        kept = store.create_user("a", "h", "t")
        store.start()
        yield self.assertFailure(late, errors.UserExists)
        yield kept
        self.assertEqual((yield store.list_users()), ["a"])

    @defer.inlineCallbacks
    def test_an_undone_operation_leaves_no_stale_cache(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)  # queued first, same batch

        def make_alices_mailbox_then_break(db):
            mailbox_number(db, store.thread_cache, user_mailbox(Address("alice", "1")), create=True)
            raise ValueError("bug")

        broken = store.submit(make_alices_mailbox_then_break)
        to_heru = store.add_private_message(message(1, sender="heru", recipient="heru"))
        store.start()
        yield users
        yield self.assertFailure(broken, ValueError)
        yield to_heru
        # A note to self lands in alice's mailbox only: with a stale cache it
        # would land in whichever mailbox took the undone one's number.
        yield store.add_private_message(message(2, sender="alice", recipient="alice"))
        heru = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        alice = yield store.history(user_mailbox(Address("alice", "1")), None, 10)
        self.assertEqual([m.id for m in heru.messages], ["ID0001"])
        self.assertEqual([m.id for m in alice.messages], ["ID0002"])

    @defer.inlineCallbacks
    def test_operations_run_off_the_calling_thread(self):
        store = self.open()
        ident = yield store.submit(lambda db: threading.get_ident(), writes=False)
        self.assertNotEqual(ident, threading.get_ident())

    @defer.inlineCallbacks
    def test_stop_finishes_queued_work_then_refuses(self):
        store = self.make_store()
        store.start()
        done = [store.create_user(f"u{i}", "h", "t") for i in range(50)]
        yield store.stop()
        yield defer.gatherResults(done)
        yield self.assertFailure(store.list_users(), errors.Unavailable)
        again = self.open()
        self.assertEqual(len((yield again.list_users())), 50)


class ReturnsTests(StoreTestCase):
    """
    After a big batch the database thread waits a little for the clients
    it answered to send again (BatchingStore.RETURNS_*): one batch of what
    would be two.  The thresholds are set here so that the outcome does
    not depend on this machine's speed.
    """

    def returns(self, store, most_from, gap, wait):
        store.RETURNS_FROM, store.RETURNS_GAP, store.RETURNS_WAIT = most_from, gap, wait

    @defer.inlineCallbacks
    def until(self, condition):
        for _ in range(500):
            if condition():
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail("waited 5 s")

    @defer.inlineCallbacks
    def test_the_clients_of_a_big_batch_are_waited_for(self):
        store = self.open(start=False)
        self.returns(store, most_from=4, gap=5.0, wait=10.0)
        running, release = threading.Event(), threading.Event()

        def held(db):
            running.set()
            release.wait(5)

        first = [store.submit(held)] + [store.create_user(f"a{i}", "h", "t") for i in range(3)]
        store.start()
        yield self.until(running.is_set)
        # Handed over while the first batch runs, before its answers: not
        # its clients coming back (another group of clients).
        others = [store.create_user(f"b{i}", "h", "t") for i in range(2)]
        yield self.until(lambda: not store._pending)
        release.set()
        yield defer.gatherResults(first)
        self.assertEqual(store.commits, 1)
        # Half of the first batch's weight comes back: still waiting.
        back = [store.create_user(f"c{i}", "h", "t") for i in range(2)]
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(store.commits, 1)
        self.assertFalse(any(d.called for d in others + back))
        back += [store.create_user(f"d{i}", "h", "t") for i in range(2)]
        yield defer.gatherResults(others + back)
        self.assertEqual(store.commits, 2)  # the others and the four back, together
        self.assertEqual(len((yield store.list_users())), 9)

    @defer.inlineCallbacks
    def seconds_for_one_after(self, store, batch):
        """How long one operation takes once a batch of C{batch} was answered."""
        yield defer.gatherResults([store.create_user(f"a{i}", "h", "t") for i in range(batch)])
        started = time.monotonic()
        yield store.create_user("b", "h", "t")
        return time.monotonic() - started

    @defer.inlineCallbacks
    def test_one_clients_run_counts_as_one_operation(self):
        # A read of many sends is one operation: one client alone does not
        # set the wait off for everybody else (review).
        store = self.open()
        self.returns(store, most_from=4, gap=5.0, wait=10.0)
        ran = defer.Deferred()
        store.submit_run(ran.callback, 10, lambda db: None)
        yield ran
        started = time.monotonic()
        yield store.create_user("b", "h", "t")
        self.assertLess(time.monotonic() - started, 2.5)

    @defer.inlineCallbacks
    def test_after_a_small_batch_nothing_is_waited_for(self):
        store = self.open()
        self.returns(store, most_from=4, gap=5.0, wait=10.0)
        self.assertLess((yield self.seconds_for_one_after(store, 3)), 2.5)

    @defer.inlineCallbacks
    def test_the_wait_ends_when_no_client_came_back_for_the_gap(self):
        store = self.open()
        self.returns(store, most_from=2, gap=0.05, wait=10.0)
        seconds = yield self.seconds_for_one_after(store, 3)
        self.assertGreater(seconds, 0.04)  # it did wait (the gap, 0.05 s)
        self.assertLess(seconds, 2.5)
        self.assertEqual(store.commits, 2)

    @defer.inlineCallbacks
    def test_the_wait_ends_after_returns_wait_in_all(self):
        store = self.open()
        self.returns(store, most_from=2, gap=5.0, wait=0.2)
        seconds = yield self.seconds_for_one_after(store, 3)
        self.assertGreater(seconds, 0.18)  # it did wait (0.2 s in all)
        self.assertLess(seconds, 2.5)


class FailureInsideABatchTests(StoreTestCase):
    @sqlite_only
    @defer.inlineCallbacks
    def test_a_transaction_that_sqlite_rolled_back_fails_its_whole_batch(self):
        store = self.open()
        yield self.populate(store)

        def disk_error(db):
            db.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL or IOERR
            raise sqlite3.OperationalError("database or disk is full")

        announced = []
        store.report_deliveries_to(announced.extend)
        # Submitted in one reactor turn: one batch.
        before = store.add_private_message(message(1))
        broken = store.submit(disk_error, writes=False)
        after = store.add_private_message(message(2))
        for d in (before, broken, after):
            yield self.assertFailure(d, errors.StorageFull)
        stored = yield store.submit(
            lambda db: db.execute("SELECT count(*) FROM messages").fetchone()[0], writes=False
        )
        self.assertEqual(stored, 0)  # nothing half-stored, in autocommit or not
        self.assertEqual(announced, [])

    @sqlite_only
    @defer.inlineCallbacks
    def test_a_full_disk_is_storage_full_said_once_and_passes(self):
        store = self.open()
        yield self.populate(store)
        said = []
        observer = lambda event: said.append(event) if "is full" in event.get("log_format", "") else None
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        def full(db):
            raise sqlite3.OperationalError("database or disk is full")

        for _ in range(3):
            yield self.assertFailure(store.submit(full), errors.StorageFull)
        self.assertEqual(len(said), 1)
        yield store.add_private_message(message(1))  # room again: it goes on
        yield self.assertFailure(store.submit(full), errors.StorageFull)
        self.assertEqual(len(said), 2)


class PrivateCountsInABatchTests(StoreTestCase):
    """
    A batch writes each private conversation's counts once, at its end or
    before the first operation that may read them: what it writes must be
    what one row per message would have written.
    """

    def rows(self, store):
        return store.submit(lambda db: db.execute(
            'SELECT "user", peer, last_seq, read_seq, received, read FROM private_conversations'
            ' ORDER BY "user", peer'
        ).fetchall(), writes=False)

    @defer.inlineCallbacks
    def test_many_messages_of_one_conversation_in_one_batch(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        # heru 1, 2; alice 3 (her marker moves past 1 and 2); heru 4, 5.
        sent = [
            store.add_private_message(message(n, sender=s, recipient=r))
            for n, (s, r) in enumerate(
                [("heru", "alice"), ("heru", "alice"), ("alice", "heru"),
                 ("heru", "alice"), ("heru", "alice")], 1)
        ]
        store.start()
        yield users
        yield defer.gatherResults(sent)
        self.assertEqual(store.commits, 1)
        self.assertEqual((yield self.rows(store)), [
            ("alice", "heru@1", 5, 3, 4, 2),
            ("heru", "alice@1", 5, 5, 1, 1),
        ])
        # A second batch adds to the rows the first wrote.
        yield store.add_private_message(message(6, sender="alice", recipient="heru"))
        self.assertEqual((yield self.rows(store)), [
            ("alice", "heru@1", 6, 6, 4, 4),
            ("heru", "alice@1", 6, 5, 2, 1),
        ])

    @defer.inlineCallbacks
    def test_a_reader_in_the_same_batch_sees_the_counts(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        first = store.add_private_message(message(1, sender="heru", recipient="alice"))
        page = store.conversations("alice", None, 10)
        store.start()
        yield users
        yield first
        entries, more = yield page
        self.assertEqual(store.commits, 1)
        self.assertEqual([(str(a), kind, last.id, unread) for a, kind, last, unread in entries],
                         [("heru@1", "private", "ID0001", 1)])

    @defer.inlineCallbacks
    def test_a_batch_run_again_in_isolation_counts_each_message_once(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)

        late = store.submit(refuse_late)
        before = store.add_private_message(message(1, sender="heru", recipient="alice"))
        # Refused in its own savepoint, which forgets the thread's cache:
        # the counts of the message before it must be written by then.
        nobody = store.add_private_message(message(9, sender="heru", recipient="nobody"))
        after = store.add_private_message(message(2, sender="heru", recipient="alice"))
        store.start()
        yield users
        yield self.assertFailure(late, errors.UserExists)
        yield before
        yield self.assertFailure(nobody, errors.NoSuchUser)
        yield after
        self.assertEqual((yield self.rows(store)), [
            ("alice", "heru@1", 2, 0, 2, 0),
            ("heru", "alice@1", 2, 2, 0, 0),
        ])


class PartialMarkreadInStepsTests(StoreTestCase):
    """
    A markread in the middle of a private conversation counts a range of
    the user's whole private history: in steps of COUNT_ROWS rows, each in
    a batch of its own, so that other operations run between them.
    """

    def setUp(self):
        super().setUp()
        self.patch(conversations, "COUNT_ROWS", 3)

    @defer.inlineCallbacks
    def history(self, store):
        """heru writes alice 1..6, bob writes her 7..16 between them; the ids of heru's."""
        yield self.populate(store)
        yield store.create_user("bob", "h", "t")
        ids = []
        for n in range(1, 17):
            sender = "heru" if n % 3 == 1 else "bob"
            yield store.add_private_message(message(n, sender=sender, recipient="alice"))
            if sender == "heru":
                ids.append(f"ID{n:04d}")
        return ids

    def unread(self, store, peer):
        def read(db):
            return db.execute(
                "SELECT received - read, read_seq FROM private_conversations"
                " WHERE \"user\" = 'alice' AND peer = ?", (peer,)
            ).fetchone()
        return store.submit(read, writes=False)

    @defer.inlineCallbacks
    def test_the_count_runs_in_steps_with_other_batches_between(self):
        store = self.open()
        ids = yield self.history(store)
        commits = store.commits
        # The 3rd of heru's 6 (seq 7): 3 of his after it; the marker from 0.
        result = yield store.mark_read("alice", Address("heru", "1"), ids[2])
        self.assertEqual(result, (Address("heru", "1"), True))
        self.assertEqual((yield self.unread(store, "heru@1")), (3, 7))
        self.assertGreater(store.commits - commits, 2)  # seqs 1-7: 7 rows, 3 a step

    @defer.inlineCallbacks
    def test_a_marker_moved_between_the_steps_is_never_put_back(self):
        store = self.open()
        ids = yield self.history(store)
        # alice answers heru in the batch of the markread's first step: her
        # marker moves past everything before the count's next step.
        marked = store.mark_read("alice", Address("heru", "1"), ids[2])
        answered = store.add_private_message(message(99, sender="alice", recipient="heru"))
        self.assertEqual((yield marked), (Address("heru", "1"), False))
        yield answered
        self.assertEqual((yield self.unread(store, "heru@1")), (0, 17))
