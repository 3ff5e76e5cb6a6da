"""
The realm's rules (L{multirealm.core.policy}) as pure functions: where a
message goes, whose membership counts in which case, quotas, who may
fetch a file.  No store, no reactor.
"""

from twisted.trial import unittest

from multirealm import errors
from multirealm.core import policy
from multirealm.model import GROUP, PRIVATE, FileRef, Message
from multirealm.names import Address


def private(sender, recipient):
    return Message("ID1", PRIVATE, Address.parse(sender, "1"), Address.parse(recipient, "1"),
                   "hi", "2026-01-01T00:00:00.000+00:00")


class PrivateRouteTests(unittest.TestCase):
    def test_a_local_message_reaches_both_histories(self):
        self.assertEqual(
            policy.private_route("1", "1", private("alice", "heru")),
            ({"user:alice@1", "user:heru@1"}, frozenset(), {"alice", "heru"}),
        )

    def test_a_note_to_oneself_is_in_one_history_once(self):
        mailboxes, outbox, local = policy.private_route("1", "1", private("alice", "alice"))
        self.assertEqual((len(mailboxes), outbox, local), (1, frozenset(), {"alice"}))

    def test_a_message_to_another_realm_is_queued_for_it(self):
        self.assertEqual(
            policy.private_route("1", "1", private("alice", "heru@2")),
            (("user:alice@1",), {"2"}, {"alice"}),
        )

    def test_a_message_handed_over_reaches_its_recipient_only(self):
        self.assertEqual(
            policy.private_route("1", "2", private("bob@2", "heru")),
            (("user:heru@1",), frozenset(), {"heru"}),
        )


class GroupOutboxTests(unittest.TestCase):
    team = Address("team", "1")
    club = Address("club", "2")

    def test_a_local_group_is_queued_once_per_other_member_realm(self):
        self.assertEqual(policy.group_outbox("1", "1", self.team, ["1", "2", "3"]), {"2", "3"})

    def test_never_back_to_the_realm_it_came_from(self):
        self.assertEqual(policy.group_outbox("1", "2", self.team, ["1", "2", "3"]), {"3"})

    def test_a_post_to_another_realms_group_goes_to_its_home(self):
        self.assertEqual(policy.group_outbox("1", "1", self.club), {"2"})

    def test_a_post_the_home_forwarded_goes_nowhere(self):
        self.assertEqual(policy.group_outbox("1", "2", self.club), frozenset())


class MembershipTests(unittest.TestCase):
    def test_members_of_other_realms_match_in_any_case_local_ones_exactly(self):
        self.assertTrue(policy.member_in_any_case("1", Address("Heru", "2")))
        self.assertFalse(policy.member_in_any_case("1", Address("Alice", "1")))


class QuotaTests(unittest.TestCase):
    def test_groups_created_up_to_the_most(self):
        policy.check_groups_created(2, 3)
        self.assertRaises(errors.QuotaExceeded, policy.check_groups_created, 3, 3)

    def test_rows_a_peer_fills_up_to_the_most(self):
        policy.check_remote_room("2", "users", 8, 2, most=10)
        with self.assertRaises(errors.QuotaExceeded) as caught:
            policy.check_remote_room("2", "users", 8, 3, most=10)
        self.assertIn("at most 10 users of realm 2", str(caught.exception))


class FetchableTests(unittest.TestCase):
    file = FileRef("a.txt", "f" * 32, 3)

    def entry(self, kind, recipient, listed=False):
        return policy.FileEntry(self.file, kind, "alice@1", recipient, listed)

    def test_a_private_file_is_for_its_sender_and_recipient(self):
        entry = self.entry(PRIVATE, "heru@2")
        self.assertEqual(policy.fetchable(entry, Address("alice", "1")), self.file)
        self.assertEqual(policy.fetchable(entry, Address("heru", "2")), self.file)
        self.assertRaises(errors.Forbidden, policy.fetchable, entry, Address("eve", "1"))

    def test_a_group_file_is_for_the_members_it_had_when_sent(self):
        self.assertEqual(
            policy.fetchable(self.entry(GROUP, "team@1", listed=True), Address("bob", "2")),
            self.file,
        )
        self.assertEqual(
            policy.fetchable(self.entry(GROUP, "team@1"), Address("alice", "1")), self.file
        )
        # Naming the group is not being one of its members.
        self.assertRaises(
            errors.Forbidden, policy.fetchable, self.entry(GROUP, "team@1"), Address("team", "1")
        )
