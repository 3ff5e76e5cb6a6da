"""
Conversations across realms, three realms linked in memory: peers of
other realms in both directions, groups of other realms (their messages
stored per member realm), a remote group left, and delivery failures in
the conversation with the peer they were for.
"""

from twisted.trial import unittest

from tests.helpers import InMemoryNetwork


class RemoteConversationTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.one, self.two, self.three = (self.net.realms[n] for n in ("1", "2", "3"))

    def listed(self, realm, user):
        """(with, kind, unread, last text, last sender) of each of C{user}'s conversations."""
        conversations, _ = self.successResultOf(realm.conversations(user))
        return [
            (w["with"], w["kind"], w["unread"],
             *((None, None) if w["last"] is None else (w["last"]["msg"], w["last"]["msg_from"])))
            for w in (c.to_wire(realm.name) for c in conversations)
        ]

    def send(self, realm, user, to, text):
        delivery = self.successResultOf(realm.send(user, realm.address(to), text))
        self.net.flush()
        return delivery.message.id

    def test_peers_of_other_realms_both_directions(self):
        self.send(self.one, "alice", "heru@2", "hi heru")
        self.send(self.two, "heru", "alice@1", "hi alice")
        self.send(self.two, "heru", "alice@1", "still there?")
        self.send(self.three, "cy", "alice@1", "from 3")
        self.assertEqual(self.listed(self.one, "alice"), [
            ("cy@3", "private", 1, "from 3", "cy@3"),
            ("heru@2", "private", 2, "still there?", "heru@2"),
        ])
        self.assertEqual(self.listed(self.two, "heru"), [
            ("alice@1", "private", 0, "still there?", "heru"),
        ])

    def test_a_peer_named_in_another_case_is_one_conversation(self):
        self.send(self.one, "alice", "HERU@2", "typed in capitals")
        self.send(self.two, "heru", "alice@1", "answer")
        self.assertEqual([c[:3] for c in self.listed(self.one, "alice")],
                         [("heru@2", "private", 1)])  # as realm 2 spells it

    def test_remote_groups_are_conversations_of_their_members(self):
        team = self.one.address("team")
        self.successResultOf(
            self.one.create_group("alice", team, [self.one.address("heru@2"),
                                                  self.one.address("cy@3")])
        )
        self.net.flush()
        self.assertEqual(self.listed(self.two, "heru"), [("team@1", "group", 0, None, None)])
        self.successResultOf(self.one.send_group("alice", team, "from 1"))
        self.net.flush()
        self.successResultOf(self.three.send_group("cy", self.three.address("team@1"), "from 3"))
        self.net.flush()
        self.assertEqual(self.listed(self.two, "heru"),
                         [("team@1", "group", 2, "from 3", "cy@3")])
        self.assertEqual(self.listed(self.three, "cy"), [("team@1", "group", 0, "from 3", "cy")])
        self.assertEqual(self.listed(self.one, "alice"), [("team", "group", 1, "from 3", "cy@3")])
        # A marker in a remote group, then leaving it.
        history = self.successResultOf(self.two.group_inbox("heru", self.two.address("team@1")))
        moved = self.successResultOf(
            self.two.mark_read("heru", self.two.address("team@1"), history.messages[0].id)
        )
        self.assertTrue(moved)
        self.assertEqual(self.listed(self.two, "heru")[0][2], 1)
        self.successResultOf(self.two.leave_group("heru", self.two.address("team@1")))
        self.assertEqual(self.listed(self.two, "heru"), [])

    def test_a_delivery_failure_is_unread_in_the_conversation_with_its_peer(self):
        self.send(self.one, "alice", "heru@2", "to heru")
        failed = self.send(self.one, "alice", "nobody@2", "anyone?")
        listed = self.listed(self.one, "alice")
        self.assertEqual([c[:3] for c in listed], [("nobody@2", "private", 1),
                                                   ("heru@2", "private", 0)])
        self.assertEqual(listed[0][4], "@2")  # the notice, from the realm that refused
        notice = [m for m in self.successResultOf(self.one.inbox("alice")).messages
                  if m.failed is not None and m.failed.id == failed][0]
        self.assertTrue(self.successResultOf(
            self.one.mark_read("alice", self.one.address("nobody@2"), notice.id)
        ))
        self.assertEqual(self.listed(self.one, "alice")[0][2], 0)
