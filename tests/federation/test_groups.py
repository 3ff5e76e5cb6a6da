"""
Groups with members on several realms, three realms linked in memory: the
home announces members, members post and read through their own realm,
posts are forwarded once to each realm with members, leaving crosses too,
and a member the far realm does not know comes back as a failure.
"""

from twisted.trial import unittest

from multirealm import errors
from tests.helpers import InMemoryNetwork


class RemoteGroupTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.one, self.two, self.three = (self.net.realms[n] for n in ("1", "2", "3"))
        self.team = self.one.address("team")

    def create(self, *members):
        self.successResultOf(self.one.create_group(
            "alice", self.team, [self.one.address(m) for m in members]
        ))
        self.net.flush()

    def texts(self, realm, user, group):
        history = self.successResultOf(realm.group_inbox(user, realm.address(group, "group name")))
        return [(m.sender.relative_to(realm.name), m.text) for m in history.messages]

    def test_members_of_every_realm_post_and_read_through_their_own_realm(self):
        self.create("heru@2", "cy@3")
        self.successResultOf(self.one.send_group("alice", self.team, "from 1"))
        self.net.flush()
        self.successResultOf(self.two.send_group("heru", self.two.address("team@1"), "from 2"))
        self.net.flush()
        self.successResultOf(self.three.send_group("cy", self.three.address("team@1"), "from 3"))
        self.net.flush()
        everything = [("alice", "from 1"), ("heru@2", "from 2"), ("cy@3", "from 3")]
        self.assertEqual(self.texts(self.one, "alice", "team"), everything)
        self.assertEqual(
            self.texts(self.two, "heru", "team@1"),
            [("alice@1", "from 1"), ("heru", "from 2"), ("cy@3", "from 3")],
        )
        self.assertEqual(
            self.texts(self.three, "cy", "team@1"),
            [("alice@1", "from 1"), ("heru@2", "from 2"), ("cy", "from 3")],
        )

    def test_a_member_reads_the_group_while_the_link_is_down(self):
        self.create("heru@2")
        self.successResultOf(self.one.send_group("alice", self.team, "before"))
        self.net.flush()
        self.net.cut("2", "1")
        self.net.cut("1", "2")
        self.assertEqual(self.texts(self.two, "heru", "team@1"), [("alice@1", "before")])
        # And posts while it is down, delivered when it is back.
        self.successResultOf(self.two.send_group("heru", self.two.address("team@1"), "offline"))
        self.net.connect("2", "1")
        self.net.flush()
        self.assertEqual(
            self.texts(self.one, "alice", "team"), [("alice", "before"), ("heru@2", "offline")]
        )

    def test_the_group_may_be_named_in_any_case(self):
        self.create("Heru@2")  # as the creator typed it; realm 2 registered "heru"
        self.successResultOf(self.two.send_group("heru", self.two.address("TEAM@1"), "hi"))
        self.net.flush()
        self.assertEqual(self.texts(self.one, "alice", "team"), [("heru@2", "hi")])
        self.assertEqual(self.texts(self.two, "heru", "Team@1"), [("heru", "hi")])

    def test_only_announced_members_post_or_read(self):
        self.create("cy@3")
        team = self.two.address("team@1")
        self.failureResultOf(self.two.send_group("heru", team, "let me in"), errors.NotAMember)
        self.failureResultOf(self.two.group_inbox("heru", team), errors.NotAMember)

    def test_the_home_checks_again(self):
        # Realm 2 believes heru is a member; realm 1 does not (heru left
        # there, say): the post comes back to heru as a failure.
        self.create("heru@2")
        self.successResultOf(self.one._store.leave_group("team", self.one.address("heru@2")))
        self.successResultOf(self.two.send_group("heru", self.two.address("team@1"), "hello?"))
        self.net.flush()
        self.assertEqual(self.texts(self.one, "alice", "team"), [])
        (failure,) = [
            m for m in self.successResultOf(self.two.inbox("heru")).messages
            if m.kind == "failure"
        ]
        self.assertEqual(failure.failed.code, "not_a_member")

    def test_leaving_a_remote_group_reaches_its_home(self):
        self.create("heru@2", "cy@3")
        team = self.two.address("team@1")
        self.successResultOf(self.two.leave_group("heru", team))
        # At once on heru's realm, even before realm 1 hears of it.
        self.failureResultOf(self.two.send_group("heru", team, "still here?"), errors.NotAMember)
        self.net.flush()
        self.successResultOf(self.one.send_group("alice", self.team, "after"))
        self.net.flush()
        self.assertEqual(self.texts(self.three, "cy", "team@1"), [("alice@1", "after")])
        # Nothing more is forwarded to realm 2: heru was its only member.
        self.net.clock.advance(2)
        self.assertEqual(
            [r["pending"] for r in self.successResultOf(self.one.list_realms())], [0, 0]
        )
        self.failureResultOf(self.two.group_inbox("heru", team), errors.NotAMember)
        # Realm 1 took heru out (leaving again there finds no member).
        self.failureResultOf(
            self.one._store.leave_group("team", self.one.address("heru@2")), errors.NotAMember
        )

    def test_a_member_the_far_realm_does_not_know_comes_back_and_is_taken_out(self):
        self.create("nobody@2", "heru@2")
        failures = [
            m for m in self.successResultOf(self.one.inbox("alice")).messages
            if m.kind == "failure"
        ]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].failed.code, "no_such_user")
        self.assertIn("nobody@2 was not added to group team", failures[0].text)
        self.failureResultOf(
            self.one._store.leave_group("team", self.one.address("nobody@2")), errors.NotAMember
        )
        # heru is in, all the same.
        self.successResultOf(self.two.send_group("heru", self.two.address("team@1"), "in"))
        self.net.flush()
        self.assertEqual(self.texts(self.one, "alice", "team"), [("heru@2", "in")])

    def test_a_realm_cannot_add_members_to_another_realms_group(self):
        from multirealm.model import JOINED, Message
        from multirealm.names import Address

        forged = Message(
            "f" * 32, JOINED, Address("mallory", "3"), Address("team", "1"), "heru",
            "2026-01-01T00:00:00.000+00:00",
        )
        self.failureResultOf(self.two.receive("3", forged), errors.Forbidden)
