"""
Messages handed over by peer realms: kept as they are, stored once per
(origin, id).
"""

from twisted.internet import defer

from multirealm import errors
from multirealm.model import GROUP, PRIVATE, FileRef, Message, Sent, group_mailbox, user_mailbox
from multirealm.names import Address
from multirealm.storage import batching
from multirealm.storage.queries import messages as message_queries, received
from tests.storage.base import StoreTestCase, counts, message


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
        theirs = message(7, sender="bob", sender_realm="2")._replace(timestamp="2020-01-01")
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
        with_file = message(3)._replace(text="", file=FileRef("a.txt", "f" * 32, 2**40))
        yield self.store.add_private_message(with_file)
        (stored,) = (yield self.inbox()).messages
        self.assertEqual(stored, with_file)
        self.assertEqual(
            stored.to_wire("1"),
            {"id": "ID0003", "msg_from": "alice", "msg_to": "heru", "file": "a.txt",
             "file_id": "f" * 32, "size": 2**40, "timestamp": "2026-01-01T00:00:00.000+00:00"},
        )


class ReceiveBatchTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_a_frame_resent_in_the_same_batch_is_a_duplicate(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        theirs = message(7, sender="bob", sender_realm="2")
        first = store.receive_message("2", theirs)
        again = store.receive_message("2", theirs)
        store.start()
        yield users
        self.assertFalse((yield first).duplicate)
        self.assertTrue((yield again).duplicate)
        self.assertEqual(store.commits, 1)
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual(history.messages, (theirs,))


class ReceiveRunTests(StoreTestCase):
    """
    The private messages of one read of a link (receive_private_messages):
    one operation, each message its own answer, stored at most once.
    """

    timeout = 15

    def setUp(self):
        super().setUp()
        # A batch run again in isolation gets every duplicate right too, by
        # its slow path: the tests see that the run's own checks did.
        self.isolated = []
        split = batching._split_runs
        self.patch(batching, "_split_runs", lambda batch: self.isolated.append(1) or split(batch))

    def run_of(self, store, run):
        answered = defer.Deferred()
        store.receive_private_messages("2", run, answered.callback)
        return answered

    @defer.inlineCallbacks
    def test_each_message_is_stored_refused_or_a_duplicate_in_one_operation(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        reported = []
        store.report_deliveries_to(reported.extend)
        before = store.receive_message("2", message(1, sender="bob", sender_realm="2"))
        same_batch = store.receive_message("2", message(2, sender="bob", sender_realm="2"))
        run = [
            message(n, sender="bob", sender_realm="2", recipient=recipient)
            for n, recipient in [(3, "heru"), (1, "heru"), (4, "nobody"), (2, "heru"),
                                 (5, "alice"), (3, "heru")]
        ]
        answered = self.run_of(store, run)
        store.start()
        yield users
        self.assertFalse((yield before).duplicate)
        self.assertFalse((yield same_batch).duplicate)
        sent = yield answered
        self.assertEqual(store.commits, 1)
        self.assertIs(type(sent), Sent)
        self.assertEqual(
            [(type(r).__name__, getattr(r, "duplicate", None)) for r in sent],
            [("Delivery", False),  # 3: new
             ("Delivery", True),   # 1 and 2: received by this batch's operations before
             ("NoSuchUser", None),  # the run, gathered, not written yet
             ("Delivery", True),
             ("Delivery", False),  # 5
             ("Delivery", True)],  # 3 again, in the same run
        )
        self.assertEqual([d.message.id for d in reported], ["ID0001", "ID0002", "ID0003", "ID0005"])
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual([m.id for m in history.messages], ["ID0001", "ID0002", "ID0003"])
        again = yield self.run_of(store, run[:2])  # resent after a reconnect: written rows
        self.assertEqual([d.duplicate for d in again], [True, True])
        self.assertEqual(len(reported), 4)
        self.assertEqual(self.isolated, [])

    @defer.inlineCallbacks
    def test_a_second_copy_in_a_run_gets_the_first_copys_answer(self):
        store = self.open()
        yield self.populate(store)
        lost = message(1, sender="bob", sender_realm="2", recipient="nobody")
        kept = message(2, sender="bob", sender_realm="2")
        sent = yield self.run_of(store, [lost, kept, lost, kept])
        self.assertEqual([type(r).__name__ for r in sent],
                         ["NoSuchUser", "Delivery", "NoSuchUser", "Delivery"])
        self.assertEqual([r.duplicate for r in sent[1::2]], [False, True])
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual([m.id for m in history.messages], ["ID0002"])
        self.assertEqual(self.isolated, [])

    @defer.inlineCallbacks
    def test_a_run_stores_and_counts_as_its_messages_received_one_by_one(self):
        # The same pattern goes to users a0-a2 as one run and to users
        # b0-b2 a message at a time; the histories, unread counts and
        # deliveries must match.  A0 is a0 spelled otherwise, 9 does not exist.
        # Users c0-c2 get the run with an Address a message, as a link's
        # frames give them (not grouped); a0-a2 with one Address a name
        # (the store's conversation groups).
        store = self.open()
        for name in ("a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"):
            yield store.create_user(name, "h", "t")
        pattern = [("bob", 0), ("bob", 0), ("Cy", 0), ("bob", 1), ("bob", 9), ("bob", "0"),
                   ("bob", "0"), ("Cy", 1), ("Cy", 1), ("bob", 0), ("bob", 2)]

        def messages(prefix, shared):
            people = {}

            def person(name, realm):
                address = Address(name, realm)
                return people.setdefault((name, realm), address) if shared else address

            return [
                Message(f"ID{prefix}{n:03d}", PRIVATE, person(sender, "2"),
                        person(f"{prefix.upper()}0" if who == "0" else f"{prefix}{who}", "1"),
                        f"text {n}", "2026-01-01T00:00:00.000+00:00")
                for n, (sender, who) in enumerate(pattern)
            ]

        grouped = yield self.run_of(store, messages("a", shared=True))
        ungrouped = yield self.run_of(store, messages("c", shared=False))
        alone = []
        for one in messages("b", shared=False):
            try:
                alone.append((yield store.receive_message("2", one)))
            except errors.NoSuchUser as refused:
                alone.append(refused)

        def unprefixed(name):
            return ("X" if name[0].isupper() else "x") + name[1:] if name[0] in "abcABC" else name

        def seen(result):
            if isinstance(result, errors.ChatError):
                return type(result)
            message = result.message
            return (str(message.sender), unprefixed(str(message.recipient)), message.text,
                    sorted(unprefixed(u) for u in result.local_users), result.duplicate)

        self.assertEqual([seen(r) for r in grouped], [seen(r) for r in alone])
        self.assertEqual([seen(r) for r in ungrouped], [seen(r) for r in alone])
        for user in ("0", "1", "2"):
            pages = []
            for prefix in ("a", "b", "c"):
                history = yield store.history(user_mailbox(Address(prefix + user, "1")), None, 20)
                page, _ = yield store.conversations(prefix + user, None, 10)
                pages.append(([m.text for m in history.messages],
                              [(str(peer), kind, last.text, unread)
                               for peer, kind, last, unread in page]))
            self.assertEqual(pages[0], pages[1], user)
            self.assertEqual(pages[2], pages[1], user)
        page, _ = yield store.conversations("a0", None, 10)
        self.assertEqual(sorted(unread for _, _, _, unread in page), [1, 5])
        self.assertEqual(self.isolated, [])

    @defer.inlineCallbacks
    def test_a_message_that_fails_by_a_bug_fails_alone(self):
        # The run fails as a whole; the batch runs again with the run split,
        # a message an operation in a savepoint: only the bug's message fails,
        # and a duplicate is still one.
        real = message_queries._gather

        def failing(db, cache, origin, message, *route):
            if message.text == "text 2":
                raise ZeroDivisionError("a bug in one message")
            return real(db, cache, origin, message, *route)

        store = self.open()
        yield self.populate(store)
        yield store.receive_message("2", message(3, sender="bob", sender_realm="2"))
        self.patch(message_queries, "_gather", failing)
        sent = yield self.run_of(store, [
            message(n, sender="bob", sender_realm="2") for n in (1, 2, 3, 4)
        ])
        first, bug, duplicate, fourth = sent
        self.assertEqual((first.duplicate, duplicate.duplicate, fourth.duplicate),
                         (False, True, False))
        self.assertTrue(bug.check(ZeroDivisionError))
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual([m.id for m in history.messages], ["ID0003", "ID0001", "ID0004"])

    @defer.inlineCallbacks
    def test_ids_are_looked_up_in_statements_of_at_most_so_many(self):
        store = self.open()
        yield self.populate(store)
        statements = []
        real = received._stored_statement
        self.patch(received, "_stored_statement",
                   lambda count: statements.append(count) or real(count))
        first = [message(n, sender="bob", sender_realm="2") for n in range(301)]
        yield self.run_of(store, first[:3])
        self.assertEqual(statements, [4])  # one statement, its list padded
        yield self.run_of(store, first[::2])
        del statements[:]
        sent = yield self.run_of(store, first)
        self.assertEqual([d.duplicate for d in sent], [n % 2 == 0 or n < 3 for n in range(301)])
        self.assertEqual(statements, [256, 64])  # 301 ids: 256, then 45 padded to 64
        self.assertEqual(self.isolated, [])
