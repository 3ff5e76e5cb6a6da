"""
Names are one identity whatever their case; groups are capped in size and
in number per user; a group message costs the same however many members.
"""

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from multirealm.config import Limits
from tests.helpers import Client, make_realm, make_store


class NameTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.alice = Client(self.realm)
        self.token = self.alice.login("alice")

    def test_a_name_in_another_case_is_the_same_account(self):
        self.assertEqual(self.alice.ask("register Alice pw")["code"], "user_exists")
        self.assertEqual(self.alice.ask("register ALICE pw")["code"], "user_exists")
        other = Client(self.realm)
        reply = other.ask("auth ALICE pw")
        self.assertEqual(reply["status"], "OK")
        other.ask("send - Alice note to self")
        (note,) = self.alice.ask("inbox -")["messages"]
        # The name keeps the case it was registered with.
        self.assertEqual((note["msg_from"], note["msg_to"]), ("alice", "alice"))
        self.assertEqual(self.alice.ask("listusers")["users"], ["alice"])

    def test_names_of_only_dots_and_dashes_are_refused(self):
        for name in ["-", ".", "..", "-.-", "---"]:
            self.assertEqual(self.alice.ask(f"register {name} pw")["code"], "invalid_name")
        self.assertEqual(self.alice.ask("register a.-b pw")["status"], "OK")

    def test_groups_are_one_whatever_the_case(self):
        self.alice.ask("creategroup - Team")
        self.assertEqual(self.alice.ask("creategroup - team")["code"], "group_exists")
        self.assertEqual(self.alice.ask("sendgroup - TEAM hi")["status"], "OK")
        self.assertEqual(
            [m["msg_to"] for m in self.alice.ask("groupinbox - team")["messages"]], ["Team"]
        )


class GroupQuotaTests(unittest.TestCase):
    def test_a_group_has_at_most_max_group_members(self):
        realm = make_realm(self, limits=attrs.evolve(Limits(), max_group_members=3))
        client = Client(realm)
        client.login("alice")
        self.assertEqual(client.ask("creategroup - big a@2 b@2 c@2")["code"], "quota_exceeded")
        self.assertEqual(client.ask("creategroup - fits a@2 b@2")["status"], "OK")
        # Members named twice are one member.
        self.assertEqual(client.ask("creategroup - dup b@2 b@2 alice")["status"], "OK")

    def test_a_user_creates_at_most_max_groups_per_user(self):
        realm = make_realm(self, limits=attrs.evolve(Limits(), max_groups_per_user=2))
        alice, heru = Client(realm), Client(realm)
        alice.login("alice")
        heru.login("heru")
        self.assertEqual(alice.ask("creategroup - g1")["status"], "OK")
        self.assertEqual(alice.ask("creategroup - g2")["status"], "OK")
        self.assertEqual(alice.ask("creategroup - g3")["code"], "quota_exceeded")
        self.assertEqual(heru.ask("creategroup - g3")["status"], "OK")


class FanOutTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_group_message_reads_no_member_list(self):
        store = make_store(self)
        realm = make_realm(self, peers=("2", "3"), store=store)
        client = Client(realm)
        client.login("alice")
        members = " ".join(f"u{n}@{2 + n % 2}" for n in range(998))
        self.assertEqual(client.ask(f"creategroup - crowd {members}")["status"], "OK")
        realm.clock.advance(2)
        # Each member's realm is told of each of its users (one frame each),
        # then of all 999 members (4 frames of at most 2,000 bytes of names).
        self.assertEqual([(r["name"], r["pending"]) for r in (yield realm.list_realms())],
                         [("2", 503), ("3", 503)])
        realm.clock.advance(2)
        statements = []
        yield store.submit(lambda db: db.set_trace_callback(statements.append), writes=False)
        self.addCleanup(store.submit, lambda db: db.set_trace_callback(None), writes=False)
        reply = client.ask("sendgroup - crowd hello everyone")
        self.assertEqual(reply["status"], "OK")
        touching_members = [s for s in statements if "members" in s]
        # One point lookup: is the sender a member.  No scan of the list.
        self.assertEqual(len(touching_members), 1, touching_members)
        self.assertIn("member = ", touching_members[0])
        self.assertEqual([(r["name"], r["pending"]) for r in (yield realm.list_realms())],
                         [("2", 504), ("3", 504)])

    def test_leaving_updates_the_realms_a_group_is_sent_to(self):
        store = make_store(self)
        realm = make_realm(self, peers=("2",), store=store)
        client = Client(realm)
        client.login("alice")
        client.ask("creategroup - duo bob@2")
        self.successResultOf(store.leave_group("duo", realm.address("bob@2")))
        client.ask("sendgroup - duo only me now")
        # Only the frames that told realm 2 bob was added (and who is in the
        # group); the post is not queued.
        self.assertEqual(client.ask("listrealms")["realms"][0]["pending"], 2)
