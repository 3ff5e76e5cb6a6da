"""
Messages: private and group messages stored where they go, what each
store reports, history pages.
"""

from twisted.internet import defer

from multirealm import errors
from multirealm.model import GROUP, group_mailbox, user_mailbox
from multirealm.names import Address
from tests.storage.base import StoreTestCase, counts, message


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
