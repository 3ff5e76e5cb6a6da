"""
Conversations and read markers (docs/protocol.md, "Conversations"): one
entry per private peer and per group, newest activity first, paged; unread
counts messages from others after a durable marker that only moves
forward; markread tells the user's other subscribed connections.
"""

from twisted.internet import reactor
from twisted.trial import unittest

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from multirealm.storage.store import SQLiteStore
from tests.helpers import Client, make_realm


def summary(reply):
    """(with, kind, unread, last text or None) of each entry of a reply."""
    return [
        (c["with"], c["kind"], c["unread"], None if c["last"] is None else c["last"]["msg"])
        for c in reply["conversations"]
    ]


class ConversationTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, limits=Limits(list_limit=3))
        self.factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        self.alice = self.client("alice")
        self.heru = self.client("heru")
        self.bob = self.client("bob")

    def client(self, user=None):
        client = Client(self.realm, factory=self.factory)
        if user is not None:
            client.login(user)
        return client

    def sent(self, client, line):
        reply = client.ask(line)
        self.assertEqual(reply["status"], "OK", reply)
        return reply["id"]

    def test_newest_activity_first_with_unread_counts_both_directions(self):
        self.sent(self.heru, "send - alice one")
        self.sent(self.heru, "send - alice two")
        self.sent(self.alice, "send - bob hi bob")
        self.assertEqual(summary(self.alice.ask("conversations -")), [
            ("bob", "private", 0, "hi bob"),
            ("heru", "private", 2, "two"),
        ])
        self.assertEqual(summary(self.heru.ask("conversations -")), [
            ("alice", "private", 0, "two"),  # one's own messages are never unread
        ])
        self.sent(self.bob, "send - alice back")
        self.sent(self.alice, "send - heru thanks")  # sending reads what came before
        reply = self.alice.ask("conversations -")
        self.assertEqual(summary(reply), [
            ("heru", "private", 0, "thanks"),
            ("bob", "private", 1, "back"),
        ])
        self.assertEqual(reply["more"], False)
        last = reply["conversations"][0]["last"]
        self.assertEqual((last["msg_from"], last["msg_to"]), ("alice", "heru"))

    def test_a_note_to_oneself_is_one_conversation_never_unread(self):
        self.sent(self.alice, "send - alice remember")
        self.assertEqual(summary(self.alice.ask("conversations -")),
                         [("alice", "private", 0, "remember")])

    def test_groups_are_listed_with_no_message_yet_and_the_join_is_activity(self):
        self.sent(self.heru, "send - alice first")
        self.assertEqual(self.alice.ask("creategroup - team heru")["status"], "OK")
        self.assertEqual(summary(self.heru.ask("conversations -")), [
            ("team", "group", 0, None),  # joined after alice's message
            ("alice", "private", 0, "first"),
        ])
        self.sent(self.heru, "sendgroup - team hello team")
        self.sent(self.heru, "sendgroup - team anyone?")
        self.assertEqual(summary(self.alice.ask("conversations -")), [
            ("team", "group", 2, "anyone?"),
            ("heru", "private", 1, "first"),
        ])
        self.assertEqual(self.heru.ask("conversations -")["conversations"][0]["unread"], 0)

    def test_a_member_added_is_listed_with_nothing_old_unread(self):
        self.alice.ask("creategroup - team heru")
        before = self.sent(self.heru, "sendgroup - team before bob")
        self.sent(self.heru, "send - bob private")
        self.assertEqual(self.alice.ask("addmember - team bob")["status"], "OK")
        self.assertEqual(self.bob.ask("mygroups -")["groups"], ["team"])
        # The join is the group's activity: above heru's later private message.
        self.assertEqual(summary(self.bob.ask("conversations -")), [
            ("team", "group", 0, "before bob"), ("heru", "private", 1, "private"),
        ])
        # Marking a message from before the join moves nothing, and is no error.
        self.assertEqual(self.bob.ask(f"markread - team {before}")["status"], "OK")
        self.sent(self.heru, "sendgroup - team after")
        self.assertEqual(summary(self.bob.ask("conversations -"))[0], ("team", "group", 1, "after"))
        self.assertEqual(self.alice.ask("removemember - team bob")["status"], "OK")
        self.assertEqual(summary(self.bob.ask("conversations -")),
                         [("heru", "private", 1, "private")])

    def test_a_group_left_is_no_longer_a_conversation(self):
        self.alice.ask("creategroup - team heru")
        self.sent(self.alice, "sendgroup - team hi")
        self.assertEqual(self.heru.ask("leavegroup - team")["status"], "OK")
        self.assertEqual(self.heru.ask("conversations -")["conversations"], [])
        self.assertEqual(summary(self.alice.ask("conversations -")), [("team", "group", 0, "hi")])

    def test_pages_by_the_last_with_of_the_previous_page(self):
        for name in ("p1", "p2", "p3", "p4"):
            self.client(name).ask(f"register {name} pw")
            self.sent(self.alice, f"send - {name} to {name}")
        first = self.alice.ask("conversations -")
        self.assertEqual([c["with"] for c in first["conversations"]], ["p4", "p3", "p2"])
        self.assertEqual(first["more"], True)
        second = self.alice.ask("conversations - p2")
        self.assertEqual([c["with"] for c in second["conversations"]], ["p1"])
        self.assertEqual(second["more"], False)
        unknown = self.alice.ask("conversations - nobody")
        self.assertEqual(unknown["code"], "bad_request")

    def test_a_page_is_cut_by_bytes_too(self):
        realm = make_realm(self, limits=Limits(history_reply_bytes=1024))
        alice = Client(realm)
        alice.login("alice")
        for name in ("p1", "p2", "p3"):
            Client(realm).login(name)
            self.assertEqual(alice.ask(f"send - {name} {'x' * 200}")["status"], "OK")
        first = alice.ask("conversations -")
        self.assertEqual([c["with"] for c in first["conversations"]], ["p3", "p2"])
        self.assertEqual(first["more"], True)
        second = alice.ask("conversations - p2")
        self.assertEqual(([c["with"] for c in second["conversations"]], second["more"]),
                         (["p1"], False))

    def test_markread_moves_the_marker_forward_only(self):
        ids = [self.sent(self.heru, f"send - alice m{i}") for i in range(4)]
        self.assertEqual(self.alice.ask(f"markread - heru {ids[1]}"),
                         {"status": "OK", "message": f"read up to {ids[1]}"})
        self.assertEqual(summary(self.alice.ask("conversations -")), [("heru", "private", 2, "m3")])
        self.assertEqual(self.alice.ask(f"markread - heru {ids[0]}")["status"], "OK")
        self.assertEqual(summary(self.alice.ask("conversations -")), [("heru", "private", 2, "m3")])
        self.alice.ask(f"markread - heru {ids[3]}")
        self.assertEqual(summary(self.alice.ask("conversations -")), [("heru", "private", 0, "m3")])
        self.sent(self.heru, "send - alice m4")
        self.assertEqual(summary(self.alice.ask("conversations -")), [("heru", "private", 1, "m4")])

    def test_markread_counts_only_that_conversation_after_the_marker(self):
        first = self.sent(self.heru, "send - alice h1")
        self.sent(self.bob, "send - alice b1")
        self.sent(self.heru, "send - alice h2")
        self.sent(self.bob, "send - alice b2")
        self.alice.ask(f"markread - heru {first}")
        self.assertEqual(summary(self.alice.ask("conversations -")), [
            ("bob", "private", 2, "b2"), ("heru", "private", 1, "h2"),
        ])

    def test_markread_in_a_group(self):
        self.alice.ask("creategroup - team heru bob")
        posts = [(self.heru, "g1"), (self.bob, "g2"), (self.alice, "mine"), (self.heru, "g3"),
                 (self.bob, "g4")]
        ids = [self.sent(client, f"sendgroup - team {text}") for client, text in posts]
        self.assertEqual(summary(self.bob.ask("conversations -")), [("team", "group", 0, "g4")])
        self.assertEqual(summary(self.heru.ask("conversations -"))[0][2], 1)
        self.assertEqual(self.heru.ask(f"markread - team {ids[0]}")["status"], "OK")
        self.assertEqual(summary(self.heru.ask("conversations -"))[0][2], 1)  # before its marker
        self.bob.ask(f"markread - team {ids[2]}")  # behind bob's marker: nothing moves
        self.assertEqual(summary(self.bob.ask("conversations -"))[0][2], 0)
        self.alice.ask(f"markread - team {ids[2]}")
        self.assertEqual(summary(self.alice.ask("conversations -"))[0][2], 2)

    def test_an_id_not_in_that_conversation_is_refused(self):
        to_bob = self.sent(self.heru, "send - bob not yours")
        mine = self.sent(self.heru, "send - alice yours")
        for line in (f"markread - heru {to_bob}", f"markread - bob {mine}",
                     "markread - heru 0123", f"markread - team {mine}"):
            reply = self.alice.ask(line)
            self.assertEqual(reply["code"], "bad_request", line)
        self.assertEqual(self.alice.ask(f"markread - he!ru {mine}")["code"], "invalid_name")
        self.assertEqual(self.alice.ask(f"markread - heru@9 {mine}")["code"], "bad_request")
        self.assertEqual(summary(self.alice.ask("conversations -")),
                         [("heru", "private", 1, "yours")])

    def test_the_read_event_goes_to_the_user_s_other_subscribed_connections(self):
        phone, laptop, unsubscribed = self.client(), self.client(), self.client()
        for connection in (phone, laptop, unsubscribed):
            connection.ask("auth alice pw")
        phone.ask("subscribe -")
        laptop.ask("subscribe -")
        self.heru.ask("subscribe -")
        sent = self.sent(self.heru, "send - alice hi")
        phone.replies(), laptop.replies()
        self.assertEqual(phone.ask(f"markread - heru {sent}")["status"], "OK")
        self.assertEqual(phone.replies(), [])
        self.assertEqual(laptop.replies(),
                         [{"event": "read", "with": "heru", "up_to": sent}])
        self.assertEqual(unsubscribed.replies(), [])
        self.assertEqual(self.heru.replies(), [])
        # A marker that does not move tells nobody.
        phone.ask(f"markread - heru {sent}")
        self.assertEqual(laptop.replies(), [])

    def test_markers_are_durable(self):
        sent = self.sent(self.heru, "send - alice one")
        self.sent(self.heru, "send - alice two")
        self.alice.ask(f"markread - heru {sent}")
        # A second store on the same file reads what the first committed.
        again = SQLiteStore(self.realm._store.path, "1", reactor, inline=True)
        again.start()
        self.addCleanup(again.stop)
        page, _ = self.successResultOf(again.conversations("alice", None, 10))
        self.assertEqual([(other.name, unread) for other, _, _, unread in page], [("heru", 1)])

    def test_a_non_member_of_a_group_is_refused(self):
        self.alice.ask("creategroup - team heru")
        post = self.sent(self.heru, "sendgroup - team members only")
        self.assertEqual(self.bob.ask(f"markread - team {post}")["code"], "not_a_member")
        self.assertEqual(self.bob.ask("markread - team 0123")["code"], "not_a_member")
        self.assertEqual(self.bob.ask("conversations -")["conversations"], [])

    def test_a_partial_markread_counts_from_either_end(self):
        # Seqs 1-20, heru's odd: the first marker is near the start, the second near the end.
        heru, bob = [], []
        for i in range(10):
            heru.append(self.sent(self.heru, f"send - alice h{i}"))
            bob.append(self.sent(self.bob, f"send - alice b{i}"))
        # Near the marker: counted from it; near the end: counted back from the end.
        for marked, unread in ((heru[1], 8), (heru[8], 1), (heru[9], 0)):
            self.alice.ask(f"markread - heru {marked}")
            self.assertEqual(summary(self.alice.ask("conversations -")),
                             [("bob", "private", 10, "b9"), ("heru", "private", unread, "h9")])

    def test_a_partial_markread_in_a_group_counts_from_either_end(self):
        self.alice.ask("creategroup - team heru bob")
        posts = [self.sent(self.heru if i % 2 else self.bob, f"sendgroup - team p{i}")
                 for i in range(10)]
        for marked, unread in ((posts[1], 8), (posts[8], 1)):
            self.alice.ask(f"markread - team {marked}")
            self.assertEqual(summary(self.alice.ask("conversations -"))[0],
                             ("team", "group", unread, "p9"))

    def test_a_peer_of_this_realm_is_named_in_any_case(self):
        self.sent(self.heru, "send - alice one")
        last = self.sent(self.heru, "send - alice two")
        self.sent(self.bob, "send - alice three")
        self.assertEqual(self.alice.ask(f"markread - HERU {last}")["status"], "OK")
        self.assertEqual(summary(self.alice.ask("conversations - BOB")),
                         [("heru", "private", 0, "two")])

    def test_a_marker_put_back_stays_where_it_was(self):
        ids = [self.sent(self.heru, f"send - alice m{i}") for i in range(10)]
        self.alice.ask("creategroup - team heru")
        posts = [self.sent(self.heru, f"sendgroup - team p{i}") for i in range(10)]
        for other, sent, last in (("heru", ids, "m9"), ("team", posts, "p9")):
            kind = "group" if other == "team" else "private"
            self.alice.ask(f"markread - {other} {sent[1]}")
            self.alice.ask(f"markread - {other} {sent[0]}")  # back: nothing moves
            self.alice.ask(f"markread - {other} {sent[3]}")
            entries = summary(self.alice.ask("conversations -"))
            self.assertIn((other, kind, 6, last), entries)

    def test_a_name_both_a_peer_and_a_group_pages_on_without_skipping(self):
        realm = make_realm(self, limits=Limits(list_limit=1))
        alice, team = Client(realm), Client(realm)
        alice.login("alice")
        team.login("team")
        self.assertEqual(alice.ask("creategroup - team")["status"], "OK")
        self.sent(team, "send - alice from the user team")
        self.sent(alice, "sendgroup - team to the group team")
        self.sent(alice, "send - alice a note")
        seen, after = [], ""
        for _ in range(5):
            reply = alice.ask(f"conversations -{after}")
            seen += [(c["with"], c["kind"]) for c in reply["conversations"]]
            if not reply["more"]:
                break
            after = " " + reply["conversations"][-1]["with"]
        self.assertEqual(seen, [("alice", "private"), ("team", "group"), ("team", "private")])
