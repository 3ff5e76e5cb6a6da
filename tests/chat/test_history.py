"""
One conversation's history, paged backwards (docs/protocol.md, "History"):
`history <sessionid> private|group <peer_or_group> [<before_id>]` gives the
newest page of that conversation alone, oldest first, and the page before
an id; `more` says older messages exist.
"""

from twisted.trial import unittest

from multirealm.chat.protocol import ChatFactory
from multirealm.config import Limits
from tests.helpers import Client, make_realm


def texts(reply):
    return [m["msg"] for m in reply["messages"]]


class HistoryTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, limits=Limits(history_limit=3))
        self.factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        self.alice, self.heru, self.bob = (self.client(u) for u in ("alice", "heru", "bob"))

    def client(self, user):
        client = Client(self.realm, factory=self.factory)
        client.login(user)
        return client

    def sent(self, client, line):
        reply = client.ask(line)
        self.assertEqual(reply["status"], "OK", reply)
        return reply["id"]

    def test_a_private_conversation_alone_paged_backwards(self):
        ids = {}
        for sender, to, text in [
            (self.heru, "alice", "h1"), (self.alice, "heru", "a1"), (self.bob, "alice", "b1"),
            (self.heru, "alice", "h2"), (self.alice, "bob", "a-b"), (self.alice, "heru", "a2"),
            (self.heru, "alice", "h3"),
        ]:
            ids[text] = self.sent(sender, f"send - {to} {text}")
        newest = self.alice.ask("history - private heru")
        self.assertEqual((texts(newest), newest["more"]), (["h2", "a2", "h3"], True))
        older = self.alice.ask(f"history - private heru {newest['messages'][0]['id']}")
        self.assertEqual((texts(older), older["more"]), (["h1", "a1"], False))
        # The other party reads the same conversation from their side.
        self.assertEqual(texts(self.heru.ask(f"history - private alice {ids['a1']}")), ["h1"])
        self.assertEqual(texts(self.alice.ask("history - private bob")), ["b1", "a-b"])

    def test_an_id_of_another_conversation_is_refused(self):
        other = self.sent(self.bob, "send - alice b1")
        self.sent(self.heru, "send - alice h1")
        reply = self.alice.ask(f"history - private heru {other}")
        self.assertEqual((reply["code"], reply["message"]), (
            "bad_request", f"no message '{other}' in your conversation with heru",
        ))
        # bob's message to alice is not heru's to read, by any name.
        reply = self.heru.ask(f"history - private bob {other}")
        self.assertEqual(reply["code"], "bad_request")
        self.assertEqual(texts(self.heru.ask("history - private bob")), [])

    def test_a_peer_of_this_realm_is_named_in_any_case(self):
        self.sent(self.heru, "send - alice hello")
        self.assertEqual(texts(self.alice.ask("history - private HERU")), ["hello"])

    def test_notes_to_oneself_are_shown_once(self):
        self.sent(self.alice, "send - alice remember")
        self.assertEqual(texts(self.alice.ask("history - private alice")), ["remember"])

    def test_a_group_paged_backwards_by_members_only(self):
        self.assertEqual(self.alice.ask("creategroup - team heru")["status"], "OK")
        for n in range(5):
            self.sent(self.heru if n % 2 else self.alice, f"sendgroup - team post{n}")
        self.sent(self.heru, "send - alice private, not in the group")
        newest = self.heru.ask("history - group team")
        self.assertEqual((texts(newest), newest["more"]), (["post2", "post3", "post4"], True))
        older = self.heru.ask(f"history - group TEAM {newest['messages'][0]['id']}")
        self.assertEqual((texts(older), older["more"]), (["post0", "post1"], False))
        self.assertEqual(self.bob.ask("history - group team")["code"], "not_a_member")

    def test_a_page_is_cut_by_bytes_and_always_holds_one(self):
        self.realm.limits = Limits(history_limit=3, history_reply_bytes=1024)
        big = "x" * 600
        for _ in range(3):
            self.sent(self.heru, f"send - alice {big}")
        first = self.alice.ask("history - private heru")
        self.assertEqual((len(first["messages"]), first["more"]), (1, True))

    def test_wrong_words(self):
        self.assertEqual(self.alice.ask("history - chat heru")["code"], "bad_request")
        self.assertEqual(self.alice.ask("history - private")["code"], "bad_request")
        self.assertEqual(self.alice.ask("history - private he!ru")["code"], "invalid_name")
        self.assertEqual(self.alice.ask("history - group nogroup")["code"], "no_such_group")
