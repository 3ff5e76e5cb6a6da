"""
The rows of a batch's private messages: numbered by the database thread,
gathered, and written together before the batch's next reader and its
commit (L{multirealm.storage.queries.messages.write_gathered}).
"""

from twisted.internet import defer

from multirealm import errors
from multirealm.model import user_mailbox
from multirealm.names import Address
from multirealm.storage.queries import messages
from tests.storage.base import StoreTestCase, message, postgres_only, refuse_late, sqlite_only


class GatheredRowsTests(StoreTestCase):
    def column(self, store, sql, *args):
        return store.submit(lambda db: [r[0] for r in db.execute(sql, args)], writes=False)

    def isolated_runs(self, store):
        """The batches run again in isolation from now on (a list that grows)."""
        runs = []
        transaction = store._transaction

        def recording(batch, isolated):
            if isolated:
                runs.append(len(batch))
            return transaction(batch, isolated)

        self.patch(store, "_transaction", recording)
        return runs

    @defer.inlineCallbacks
    def test_a_read_in_the_same_batch_sees_the_messages_sent_before_it(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        sent = [
            store.add_private_message(message(1, sender="heru", recipient="alice")),
            store.add_private_message(message(2, sender="alice", recipient="heru")),
            store.add_private_message(message(3, sender="alice", recipient="bob", realm="2")),
        ]
        history = store.history(user_mailbox(Address("alice", "1")), None, 10)
        conversations = store.conversations("alice", None, 10)
        outbox = store.pending_counts()
        store.start()
        yield users
        deliveries = yield defer.gatherResults(sent)
        self.assertEqual(store.commits, 1)
        self.assertEqual([m.id for m in (yield history).messages], ["ID0001", "ID0002", "ID0003"])
        entries, _ = yield conversations
        self.assertEqual(sorted((str(a), last.id) for a, _, last, _ in entries),
                         [("bob@2", "ID0003"), ("heru@1", "ID0002")])
        self.assertEqual({r: c for r, (c, _) in (yield outbox).items()}, {"2": 1})
        # Each Delivery's seq is its row's.
        self.assertEqual(
            (yield self.column(store, "SELECT seq FROM messages ORDER BY seq")),
            [d.seq for d in deliveries],
        )
        self.assertEqual(
            (yield self.column(store, "SELECT seq FROM outbox WHERE realm = '2'")),
            [deliveries[2].seq],
        )

    @defer.inlineCallbacks
    def test_the_rows_of_many_messages_are_written_in_statements_of_many_rows(self):
        self.patch(messages, "_MOST_ROWS", 16)
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        # 45 = 16 + 16 + 8 + 4 + 1 rows of messages (360 values), twice as many of timeline.
        sent = [store.add_private_message(message(n)) for n in range(1, 46)]
        store.start()
        yield users
        deliveries = yield defer.gatherResults(sent)
        self.assertEqual(store.commits, 1)
        seqs = [d.seq for d in deliveries]
        self.assertEqual((yield self.column(store, "SELECT seq FROM messages ORDER BY seq")), seqs)
        self.assertEqual(
            (yield self.column(store, "SELECT count(*) FROM timeline")), [2 * len(seqs)]
        )
        page = yield store.history(user_mailbox(Address("heru", "1")), None, 100)
        self.assertEqual([m.id for m in page.messages], [f"ID{n:04d}" for n in range(1, 46)])

    @defer.inlineCallbacks
    def test_the_conversations_kept_are_bounded(self):
        store = self.open()
        for name in ("alice", "heru", "bob"):
            yield store.create_user(name, "h", "t")
        store.thread_cache.MAX_ROUTES = 2
        pairs = [("alice", "heru"), ("heru", "bob"), ("bob", "alice"), ("alice", "heru")]
        for n, (sender, recipient) in enumerate(pairs, 1):
            yield store.add_private_message(message(n, sender=sender, recipient=recipient))
            self.assertLessEqual(len(store.thread_cache.routes), 2)
        page = yield store.history(user_mailbox(Address("alice", "1")), None, 10)
        self.assertEqual([m.id for m in page.messages], ["ID0001", "ID0003", "ID0004"])

    @defer.inlineCallbacks
    def test_a_failure_writing_the_gathered_rows_keeps_the_other_operations(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        first = store.add_private_message(message(1))
        created = store.create_user("carol", "h", "t")
        # The same (origin, id): refused by the UNIQUE key when the rows are
        # written, which is after this operation returned.
        again = store.add_private_message(message(1))
        last = store.add_private_message(message(2))
        store.start()
        yield users
        yield first
        yield created
        yield self.assertFailure(again, Exception)  # the engine's integrity error
        yield last
        self.assertEqual((yield store.list_users()), ["alice", "carol", "heru"])
        self.assertEqual(
            (yield self.column(store, "SELECT id FROM messages ORDER BY seq")), ["ID0001", "ID0002"]
        )
        self.assertEqual((yield self.column(store, "SELECT count(*) FROM timeline")), [4])
        self.assertEqual(
            [m.id for m in (yield store.history(user_mailbox(Address("heru", "1")), None, 10))
             .messages],
            ["ID0001", "ID0002"],
        )

    @defer.inlineCallbacks
    def test_a_message_received_twice_in_one_batch_is_stored_once(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        runs = self.isolated_runs(store)
        frame = message(1, sender="bob", recipient="alice", sender_realm="2")
        received = [store.receive_message("2", frame), store.receive_message("2", frame)]
        store.start()
        yield users
        first, second = yield defer.gatherResults(received)
        self.assertFalse(first.duplicate)
        self.assertTrue(second.duplicate)
        self.assertEqual(runs, [])  # seen as gathered, not as a failed write
        self.assertEqual((yield self.column(store, "SELECT count(*) FROM messages")), [1])
        self.assertEqual((yield self.column(store, "SELECT count(*) FROM timeline")), [1])

    @defer.inlineCallbacks
    def test_seqs_keep_increasing_across_a_restart(self):
        store = self.open()
        yield self.populate(store)
        before = yield store.add_private_message(message(1))
        yield store.stop()
        store = self.open()
        after = yield store.add_private_message(message(2))
        self.assertGreater(after.seq, before.seq)
        self.assertEqual(
            (yield self.column(store, "SELECT seq FROM messages ORDER BY seq")),
            [before.seq, after.seq],
        )

    @defer.inlineCallbacks
    def test_seqs_follow_the_rows_across_an_operation_undone(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)

        # The batch runs again isolated: the message before the refusal is
        # numbered in a savepoint kept, the one after it in a transaction
        # whose thread cache was forgotten.
        sent = [store.add_private_message(message(1))]
        late = store.submit(refuse_late)
        sent.append(store.add_private_message(message(2)))
        store.start()
        yield users
        yield self.assertFailure(late, errors.UserExists)
        deliveries = yield defer.gatherResults(sent)
        deliveries.append((yield store.add_private_message(message(3))))
        seqs = [d.seq for d in deliveries]
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertEqual((yield self.column(store, "SELECT seq FROM messages ORDER BY seq")), seqs)
        self.assertEqual((yield self.column(store, "SELECT count(*) FROM timeline")), [6])

    @defer.inlineCallbacks
    def test_a_conversation_undone_is_forgotten_with_its_mailboxes(self):
        store = self.open(start=False)
        users = [store.create_user(name, "h", "t") for name in ("alice", "heru", "bob", "carol")]

        def send_then_fail(db):
            # The first message of alice and heru makes their mailboxes...
            messages.add_private_message(db, store.thread_cache, "1", "1", message(1))
            raise ValueError("bug")  # ... undone with it

        broken = store.submit(send_then_fail)
        others = store.add_private_message(message(2, sender="bob", recipient="carol"))
        sent = store.add_private_message(message(3))
        store.start()
        yield defer.gatherResults(users)
        yield self.assertFailure(broken, ValueError)
        yield others
        yield sent
        for name, ids in [("alice", ["ID0003"]), ("heru", ["ID0003"]), ("bob", ["ID0002"])]:
            page = yield store.history(user_mailbox(Address(name, "1")), None, 10)
            self.assertEqual([m.id for m in page.messages], ids)

    @sqlite_only
    @defer.inlineCallbacks
    def test_seqs_keep_increasing_across_a_batch_rolled_back(self):
        import sqlite3

        store = self.open()
        yield self.populate(store)
        first = yield store.add_private_message(message(1))

        def disk_error(db):
            db.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL or IOERR
            raise sqlite3.OperationalError("disk I/O error")

        lost = [store.add_private_message(message(2)), store.submit(disk_error),
                store.add_private_message(message(3))]
        for d in lost:
            yield self.assertFailure(d, sqlite3.OperationalError)
        after = yield store.add_private_message(message(4))
        # Numbered from the rows, as SQLite itself would: the next one.
        self.assertEqual(after.seq, first.seq + 1)
        self.assertEqual(
            (yield self.column(store, "SELECT seq FROM messages ORDER BY seq")),
            [first.seq, after.seq],
        )

    @postgres_only
    @defer.inlineCallbacks
    def test_two_processes_number_messages_in_turn(self):
        one = self.open()
        two = self.open()
        yield self.populate(one)
        seqs = []
        for n, store in enumerate([one, two, one, two, two, one], 1):
            seqs.append((yield store.add_private_message(message(n))).seq)
        self.assertEqual(seqs, [1, 2, 3, 4, 5, 6])

    @postgres_only
    @defer.inlineCallbacks
    def test_the_identity_of_seq_follows_the_seqs_given(self):
        # An insert that lets PostgreSQL number its row (as an older version
        # of the realm does) takes the next seq, not one given already.
        store = self.open()
        yield self.populate(store)
        for n in (1, 2):
            yield store.add_private_message(message(n))
        seq = yield store.submit(lambda db: db.connection.execute(
            "INSERT INTO messages (origin, id, kind, sender, recipient, body, timestamp)"
            " VALUES ('1', 'X', 'private', 'a@1', 'b@1', '', '') RETURNING seq"
        ).fetchone()[0])
        self.assertEqual(seq, 3)
