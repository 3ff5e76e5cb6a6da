"""
Messages handed over by peer realms: kept as they are, stored once per
(origin, id).
"""

import attrs
from twisted.internet import defer

from multirealm import errors
from multirealm.model import GROUP, FileRef, group_mailbox, user_mailbox
from multirealm.names import Address
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
