"""
SQLiteStore: durability across restarts, group commit, isolation of one
failing operation inside a batch, history paging, the outbox.
"""

import os
import sqlite3
import threading

import attrs

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from multirealm import errors
from multirealm.core.interfaces import IStore
from multirealm.model import GROUP, PRIVATE, FileRef, Message
from multirealm.names import Address
from multirealm.model import group_mailbox, user_mailbox
from multirealm.storage.queries.messages import mailbox_number
from multirealm.storage.store import SQLiteStore


def message(n, sender="alice", recipient="heru", kind=PRIVATE, realm="1", sender_realm="1"):
    return Message(
        id=f"ID{n:04d}",
        kind=kind,
        sender=Address(sender, sender_realm),
        recipient=Address(recipient, realm),
        text=f"text {n}",
        timestamp="2026-01-01T00:00:00.000+00:00",
    )



def counts(pending):
    """{realm: messages waiting} of L{SQLiteStore.pending_counts}."""
    return {realm: count for realm, (count, _oldest) in pending.items()}

class StoreTestCase(unittest.TestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")

    def open(self, start=True):
        store = SQLiteStore(self.path, "1", reactor)
        if start:
            store.start()
        self.addCleanup(store.stop)
        return store

    def populate_inline_free(self, store):
        """Add alice and heru before the store's thread starts."""
        return defer.gatherResults(
            [store.create_user("alice", "h", "t"), store.create_user("heru", "h", "t")]
        )

    @defer.inlineCallbacks
    def populate(self, store):
        yield store.create_user("alice", "hash-a", "t")
        yield store.create_user("heru", "hash-h", "t")


class DurabilityTests(StoreTestCase):
    def test_provides_istore(self):
        self.assertTrue(verifyObject(IStore, self.open(start=False)))

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

        def refuse_late(db):
            db.execute("INSERT INTO users VALUES ('ghost', 'h', 't')")
            raise errors.UserExists("too late to refuse cleanly")

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
        store = SQLiteStore(self.path, "1", reactor)
        store.start()
        done = [store.create_user(f"u{i}", "h", "t") for i in range(50)]
        yield store.stop()
        yield defer.gatherResults(done)
        yield self.assertFailure(store.list_users(), errors.Unavailable)
        again = self.open()
        self.assertEqual(len((yield again.list_users())), 50)


class MessageTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_private_message_to_unknown_local_user(self):
        store = self.open()
        yield self.populate(store)
        yield self.assertFailure(
            store.add_private_message(message(1, recipient="nobody")), errors.NoSuchUser
        )

    @defer.inlineCallbacks
    def test_remote_recipient_is_queued_in_the_same_transaction(self):
        store = self.open()
        yield self.populate(store)
        yield store.add_private_message(message(1, recipient="heru", realm="2"))
        self.assertEqual(counts((yield store.pending_counts())), {"2": 1})
        history = yield store.history(user_mailbox(Address("alice", "1")), None, 10)
        self.assertEqual(history.messages[0].recipient, Address("heru", "2"))

    @defer.inlineCallbacks
    def test_group_message_needs_membership(self):
        store = self.open()
        yield self.populate(store)
        members = [Address("alice", "1"), Address("bob", "2"), Address("cy", "3")]
        yield store.create_group("team", Address("alice", "1"), members, "t")
        group_message = message(1, sender="alice", recipient="team", kind=GROUP)
        yield store.add_group_message(group_message)
        self.assertEqual(counts((yield store.pending_counts())), {"2": 1, "3": 1})
        outsider = message(2, sender="heru", recipient="team", kind=GROUP)
        yield self.assertFailure(store.add_group_message(outsider), errors.NotAMember)
        nogroup = message(3, sender="alice", recipient="none", kind=GROUP)
        yield self.assertFailure(store.add_group_message(nogroup), errors.NoSuchGroup)
        history = yield store.history(group_mailbox(Address("team", "1")), None, 10)
        self.assertEqual(history.messages, (group_message,))

    @defer.inlineCallbacks
    def test_history_pages(self):
        store = self.open()
        yield self.populate(store)
        for n in range(10):
            yield store.add_private_message(message(n))
        box = user_mailbox(Address("heru", "1"))
        newest = yield store.history(box, None, 4)
        self.assertEqual([m.id for m in newest.messages], ["ID0006", "ID0007", "ID0008", "ID0009"])
        self.assertTrue(newest.more)
        page = yield store.history(box, "ID0001", 4)
        self.assertEqual([m.id for m in page.messages], ["ID0002", "ID0003", "ID0004", "ID0005"])
        self.assertTrue(page.more)
        tail = yield store.history(box, "ID0005", 4)
        self.assertFalse(tail.more)
        exact = yield store.history(box, None, 10)
        self.assertFalse(exact.more)
        yield self.assertFailure(store.history(box, "NOPE", 4), errors.BadRequest)


class DeliveryReportTests(StoreTestCase):
    """What a message-adding operation reports: the notifier's input."""

    @defer.inlineCallbacks
    def test_private_message_reports_local_parties_and_queued_realms(self):
        store = self.open()
        yield self.populate(store)
        local = yield store.add_private_message(message(1))
        self.assertEqual(local.message, message(1))
        self.assertEqual(local.origin, "1")
        self.assertEqual(local.local_users, {"alice", "heru"})
        self.assertEqual(local.queued_for, frozenset())
        self.assertFalse(local.duplicate)
        remote = yield store.add_private_message(message(2, realm="2"))
        self.assertEqual((remote.local_users, remote.queued_for), ({"alice"}, {"2"}))

    @defer.inlineCallbacks
    def test_group_message_reports_member_realms_not_members(self):
        store = self.open()
        yield self.populate(store)
        members = [Address("alice", "1"), Address("heru", "1"), Address("bob", "2")]
        yield store.create_group("team", Address("alice", "1"), members, "t")
        delivery = yield store.add_group_message(message(1, recipient="team", kind=GROUP))
        self.assertEqual(delivery.local_users, frozenset())
        self.assertEqual(delivery.queued_for, {"2"})


class ReceiveTests(StoreTestCase):
    """Messages minted by other realms: kept as they are, stored once."""

    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        self.store = self.open()
        yield self.populate(self.store)
        members = [Address("alice", "1"), Address("bob", "2"), Address("cy", "3")]
        yield self.store.create_group("team", Address("alice", "1"), members, "t")

    def inbox(self, user="heru"):
        return self.store.history(user_mailbox(Address(user, "1")), None, 10)

    @defer.inlineCallbacks
    def test_keeps_the_peers_id_and_timestamp(self):
        theirs = attrs.evolve(message(7, sender="bob", sender_realm="2"), timestamp="2020-01-01")
        delivery = yield self.store.receive_message("2", theirs)
        self.assertEqual((delivery.origin, delivery.duplicate), ("2", False))
        self.assertEqual(delivery.local_users, {"heru"})
        self.assertEqual((yield self.inbox()).messages, (theirs,))

    @defer.inlineCallbacks
    def test_a_second_delivery_is_a_duplicate_stored_once(self):
        theirs = message(7, sender="bob", sender_realm="2")
        yield self.store.receive_message("2", theirs)
        again = yield self.store.receive_message("2", theirs)
        self.assertTrue(again.duplicate)
        self.assertEqual(len((yield self.inbox()).messages), 1)

    @defer.inlineCallbacks
    def test_ids_are_keyed_by_origin_so_no_realm_blocks_another(self):
        ours = message(1)  # alice -> heru, minted here
        yield self.store.add_private_message(ours)
        # Realm 3 reuses our id, then realm 2 uses the same id as well.
        from3 = message(1, sender="cy", sender_realm="3")
        from2 = message(1, sender="bob", sender_realm="2")
        self.assertFalse((yield self.store.receive_message("3", from3)).duplicate)
        self.assertFalse((yield self.store.receive_message("2", from2)).duplicate)
        self.assertEqual((yield self.inbox()).messages, (ours, from3, from2))

    @defer.inlineCallbacks
    def test_unknown_local_recipient(self):
        theirs = message(7, sender="bob", sender_realm="2", recipient="nobody")
        yield self.assertFailure(self.store.receive_message("2", theirs), errors.NoSuchUser)

    @defer.inlineCallbacks
    def test_group_message_from_a_members_realm_is_not_queued_back(self):
        post = message(8, sender="bob", sender_realm="2", recipient="team", kind=GROUP)
        delivery = yield self.store.receive_message("2", post)
        self.assertEqual(delivery.queued_for, {"3"})
        self.assertEqual(counts((yield self.store.pending_counts())), {"3": 1})
        history = yield self.store.history(group_mailbox(Address("team", "1")), None, 10)
        self.assertEqual(history.messages, (post,))

    @defer.inlineCallbacks
    def test_group_message_from_a_non_member_is_refused(self):
        post = message(8, sender="eve", sender_realm="2", recipient="team", kind=GROUP)
        yield self.assertFailure(self.store.receive_message("2", post), errors.NotAMember)
        self.assertEqual(counts((yield self.store.pending_counts())), {})

    @defer.inlineCallbacks
    def test_a_remote_groups_message_lands_in_the_local_copy_only(self):
        post = message(9, sender="cy", sender_realm="3", recipient="club", realm="2", kind=GROUP)
        delivery = yield self.store.receive_message("2", post)
        self.assertEqual(delivery.queued_for, frozenset())
        history = yield self.store.history(group_mailbox(Address("club", "2")), None, 10)
        self.assertEqual(history.messages, (post,))

    @defer.inlineCallbacks
    def test_a_received_message_survives_a_restart(self):
        theirs = message(7, sender="bob", sender_realm="2")
        yield self.store.receive_message("2", theirs)
        yield self.store.stop()
        again = self.open()
        self.assertEqual(
            (yield again.history(user_mailbox(Address("heru", "1")), None, 10)).messages, (theirs,)
        )
        self.assertTrue((yield again.receive_message("2", theirs)).duplicate)

    @defer.inlineCallbacks
    def test_a_file_message_round_trips(self):
        with_file = attrs.evolve(message(3), text="", file=FileRef("a.txt", "f" * 32, 2**40))
        yield self.store.add_private_message(with_file)
        (stored,) = (yield self.inbox()).messages
        self.assertEqual(stored, with_file)
        self.assertEqual(
            stored.to_wire("1"),
            {"id": "ID0003", "msg_from": "alice", "msg_to": "heru", "file": "a.txt",
             "file_id": "f" * 32, "size": 2**40, "timestamp": "2026-01-01T00:00:00.000+00:00"},
        )


class FailureInsideABatchTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_a_transaction_that_sqlite_rolled_back_fails_its_whole_batch(self):
        store = self.open()
        yield self.populate(store)

        def disk_error(db):
            db.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL or IOERR
            raise sqlite3.OperationalError("database or disk is full")

        announced = []
        store.report_deliveries_to(announced.append)
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

    @defer.inlineCallbacks
    def test_paging_from_a_message_of_another_conversation_is_refused(self):
        store = self.open()
        yield self.populate(store)
        yield store.create_user("cy", "h", "t")
        yield store.add_private_message(message(1, sender="alice", recipient="heru"))
        yield store.add_private_message(message(2, sender="cy", recipient="cy"))
        yield self.assertFailure(
            store.history(user_mailbox(Address("heru", "1")), "ID0002", 10), errors.BadRequest
        )

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
