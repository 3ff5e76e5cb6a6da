"""
Groups: the checks that must hold atomically with the write they guard
run inside its transaction, so that operations queued in the same batch
(one transaction) see each other.
"""

from twisted.internet import defer

from multirealm import errors
from multirealm.model import GROUP, group_mailbox
from multirealm.names import Address
from tests.storage.base import StoreTestCase, counts, message

ALICE, HERU = Address("alice", "1"), Address("heru", "1")


class GroupTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_a_leave_queued_before_a_post_refuses_the_post(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        created = store.create_group("team", ALICE, [ALICE, HERU, Address("bob", "2")], "t")
        left = store.leave_group("team", HERU)
        post = store.add_group_message(message(1, sender="heru", recipient="team", kind=GROUP))
        store.start()
        yield defer.gatherResults([users, created, left])
        yield self.assertFailure(post, errors.NotAMember)
        self.assertEqual(counts((yield store.pending_counts())), {})
        history = yield store.history(group_mailbox(Address("team", "1")), None, 10)
        self.assertEqual(history.messages, ())

    @defer.inlineCallbacks
    def test_groups_created_in_one_batch_count_each_other(self):
        store = self.open(start=False)
        users = self.populate_inline_free(store)
        first = store.create_group("one", ALICE, [ALICE], "t", max_created=1)
        second = store.create_group("two", ALICE, [ALICE], "t", max_created=1)
        store.start()
        yield defer.gatherResults([users, first])
        yield self.assertFailure(second, errors.QuotaExceeded)
        self.assertEqual((yield store.list_groups()), ["one"])

    @defer.inlineCallbacks
    def test_a_member_of_another_realm_is_matched_in_any_case(self):
        store = self.open()
        yield self.populate(store)
        yield store.create_group("team", ALICE, [ALICE, Address("Bob", "2")], "t")
        post = message(1, sender="bob", sender_realm="2", recipient="team", kind=GROUP)
        yield store.receive_message("2", post)
        yield store.leave_group("team", Address("BOB", "2"))
        yield self.assertFailure(store.receive_message("2", message(2, sender="bob",
                                 sender_realm="2", recipient="team", kind=GROUP)),
                                 errors.NotAMember)

    @defer.inlineCallbacks
    def test_local_members_are_matched_exactly(self):
        store = self.open()
        yield self.populate(store)
        yield store.create_group("team", ALICE, [ALICE], "t")
        yield self.assertFailure(store.leave_group("team", Address("Alice", "1")),
                                 errors.NotAMember)
