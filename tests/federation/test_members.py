"""
Membership changes across three realms linked in memory: the home decides,
every realm with members learns the whole membership (and keeps it while
the link is down), member events reach every realm, a realm that loses its
last member is told, and a refused member comes back as a failure.
"""

from twisted.trial import unittest

from multirealm import errors
from multirealm.core import policy
from multirealm.federation.frames import MessageFrame
from multirealm.model import MEMBER, Message
from multirealm.names import Address
from tests.helpers import Client, InMemoryNetwork


class MembersAcrossRealmsTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.one, self.two, self.three = (self.net.realms[n] for n in ("1", "2", "3"))
        self.alice, self.heru, self.cy = Client(self.one), Client(self.two), Client(self.three)
        for client, user in ((self.alice, "alice"), (self.heru, "heru"), (self.cy, "cy")):
            client.ask(f"auth {user} pw")
        self.assertEqual(self.alice.ask("creategroup - team cy@3")["status"], "OK")
        self.net.flush()

    def ask(self, client, line):
        return self.net.ask(client, line)

    def events(self, client):
        """The member events C{client} got since the last call."""
        return self.net.events(client, "member")

    def info(self, client, group):
        reply = self.ask(client, f"groupinfo - {group}")
        return reply.get("owner"), reply.get("members", reply.get("code"))

    def test_a_member_of_another_realm_is_added_and_every_realm_learns_it(self):
        for client in (self.alice, self.heru, self.cy):
            self.ask(client, "subscribe -")
        first = self.ask(self.alice, "sendgroup - team before heru")["id"]
        self.events(self.alice)
        self.assertEqual(self.ask(self.alice, "addmember - team heru@2")["status"], "OK")
        self.assertEqual(self.events(self.alice), [
            {"event": "member", "group": "team", "change": "added", "member": "heru@2",
             "by": "alice"}])
        self.assertEqual(self.events(self.heru), [
            {"event": "member", "group": "team@1", "change": "added", "member": "heru",
             "by": "alice@1"}])
        self.assertEqual(self.events(self.cy), [
            {"event": "member", "group": "team@1", "change": "added", "member": "heru@2",
             "by": "alice@1"}])
        # The whole history, the whole membership, and the group in mygroups.
        history = self.ask(self.heru, "groupinbox - team@1")["messages"]
        self.assertEqual([m["id"] for m in history], [first])
        self.assertEqual(self.info(self.heru, "team@1"), ("alice@1", ["alice@1", "cy@3", "heru"]))
        self.assertEqual(self.info(self.cy, "team@1"), ("alice@1", ["alice@1", "cy", "heru@2"]))
        self.assertEqual(self.ask(self.heru, "mygroups -")["groups"], ["team@1"])

    def test_a_new_realm_gets_at_most_the_newest_messages_of_the_history(self):
        self.patch(policy, "HISTORY_FOR_A_NEW_REALM", 2)
        sent = [self.ask(self.alice, f"sendgroup - team m{n}")["id"] for n in range(4)]
        self.ask(self.alice, "addmember - team heru@2")
        history = self.ask(self.heru, "groupinbox - team@1")["messages"]
        self.assertEqual([m["id"] for m in history], sent[2:])

    def test_a_remote_user_named_in_two_cases_is_added_once(self):
        self.assertEqual(self.ask(self.alice, "addmember - team heru@2 HERU@2")["status"], "OK")
        self.assertEqual(self.info(self.alice, "team"), ("alice", ["alice", "cy@3", "heru@2"]))
        self.ask(self.alice, "removemember - team heru@2")
        self.assertEqual(self.info(self.alice, "team"), ("alice", ["alice", "cy@3"]))
        self.assertEqual(self.info(self.heru, "team@1"), (None, "not_a_member"))

    def test_a_realm_added_again_is_not_sent_its_own_posts_back(self):
        # It holds them already; sent back, each was refused (forbidden)
        # and logged, and listrealms showed a link error.
        self.ask(self.alice, "addmember - team heru@2")
        self.assertEqual(self.ask(self.heru, "sendgroup - team@1 from heru")["status"], "OK")
        self.ask(self.alice, "removemember - team heru@2")
        sent = []
        real_batch = self.one._store.outbox_batch
        self.patch(self.one._store, "outbox_batch", lambda peer, *args, **kwargs: real_batch(
            peer, *args, **kwargs).addCallback(lambda batch: sent.extend(
                [(peer, m.text) for _, m in batch[0]] if peer == "2" else []) or batch))
        self.ask(self.alice, "addmember - team heru@2")
        self.assertNotIn(("2", "from heru"), sent)
        self.assertEqual([m["msg"] for m in self.ask(self.heru, "groupinbox - team@1")["messages"]],
                         ["from heru"])

    def test_a_realm_added_again_is_sent_only_what_came_since_it_lost_its_members(self):
        # Else each removemember/addmember pair re-sent the whole history
        # (and re-streamed its files): an owner's amplifier.
        self.ask(self.alice, "addmember - team heru@2")
        for n in range(5):
            self.ask(self.alice, f"sendgroup - team m{n}")
        self.ask(self.alice, "removemember - team heru@2")
        self.ask(self.alice, "sendgroup - team while away")
        sent = []
        real_batch = self.one._store.outbox_batch
        self.patch(self.one._store, "outbox_batch", lambda peer, *args, **kwargs: real_batch(
            peer, *args, **kwargs).addCallback(lambda batch: sent.extend(
                [m.text for _, m in batch[0]] if peer == "2" else []) or batch))
        for _ in range(3):
            self.ask(self.alice, "addmember - team heru@2")
            self.ask(self.alice, "removemember - team heru@2")
        self.ask(self.alice, "addmember - team heru@2")
        self.assertEqual([t for t in sent if not t.startswith(("added", "removed", "known"))],
                         ["while away"])
        history = self.ask(self.heru, "groupinbox - team@1")["messages"]
        self.assertEqual(sorted(m["msg"] for m in history),
                         ["m0", "m1", "m2", "m3", "m4", "while away"])

    def test_the_history_a_new_realm_is_sent_is_no_live_news(self):
        # 10,000 old posts pushed as new events would be noise, and the
        # subscriber's event budget would overflow.
        for n in range(5):
            self.ask(self.alice, f"sendgroup - team old{n}")
        self.ask(self.heru, "subscribe -")
        self.heru.kept = []
        self.net.clock.advance(1)  # heru joins a second after the posts
        self.ask(self.alice, "addmember - team heru@2")
        self.ask(self.alice, "sendgroup - team new")
        got = getattr(self.heru, "kept", []) + self.heru.replies()
        self.assertEqual([e["message"]["msg"] for e in got if e.get("event") == "message"],
                         ["new"])
        self.assertEqual(len(self.ask(self.heru, "groupinbox - team@1")["messages"]), 6)

    def test_a_post_the_home_refuses_leaves_the_member_realms_copy(self):
        # heru posts before realm 2 hears of his removal: realm 2 stored it
        # in its copy of the group, the home refuses it (not_a_member).
        self.successResultOf(self.two.register("bob", "pw"))
        bob = Client(self.two)
        bob.ask("auth bob pw")
        self.ask(self.alice, "addmember - team heru@2 bob@2")
        self.net.cut("1", "2")  # the removal has not reached realm 2 yet
        self.ask(self.alice, "removemember - team heru@2")
        self.assertEqual(self.ask(self.heru, "sendgroup - team@1 after removal")["status"], "OK")
        self.net.connect("1", "2")
        self.net.flush()
        on_one = [m["msg"] for m in self.ask(self.alice, "groupinbox - team")["messages"]]
        on_two = [m["msg"] for m in self.ask(bob, "groupinbox - team@1")["messages"]]
        self.assertEqual((on_one, on_two), ([], []))
        failed = self.ask(self.heru, "inbox -")["messages"][-1]
        self.assertEqual(failed["failed"]["code"], "not_a_member")

    def test_the_membership_holds_while_the_link_is_down(self):
        self.ask(self.alice, "addmember - team heru@2")
        for a, b in (("1", "2"), ("2", "1"), ("1", "3"), ("3", "1")):
            self.net.cut(a, b)
        self.assertEqual(self.info(self.heru, "team@1"), ("alice@1", ["alice@1", "cy@3", "heru"]))
        self.assertEqual(self.ask(self.heru, "groupinbox - team@1")["messages"], [])
        self.assertEqual(self.ask(self.heru, "sendgroup - team@1 offline")["status"], "OK")
        self.assertEqual(self.info(self.cy, "team@1"), ("alice@1", ["alice@1", "cy", "heru@2"]))

    def test_a_realm_whose_last_member_is_removed_is_told_and_keeps_nothing(self):
        self.ask(self.alice, "addmember - team heru@2")
        self.ask(self.heru, "subscribe -")
        self.ask(self.cy, "subscribe -")
        self.assertEqual(self.ask(self.alice, "removemember - team heru@2")["status"], "OK")
        removed = {"event": "member", "group": "team@1", "change": "removed", "member": "heru",
                   "by": "alice@1"}
        self.assertEqual(self.events(self.heru), [removed])
        self.assertEqual(self.events(self.cy), [dict(removed, member="heru@2")])
        self.assertEqual(self.ask(self.heru, "groupinbox - team@1")["code"], "not_a_member")
        self.assertEqual(self.ask(self.heru, "sendgroup - team@1 hi")["code"], "not_a_member")
        self.assertEqual(self.info(self.heru, "team@1"), (None, "not_a_member"))
        self.assertEqual(self.ask(self.heru, "mygroups -")["groups"], [])
        rows = self.successResultOf(self.two._store.submit(
            lambda db: [db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                        for table in ("remote_members", "remote_rosters", "remote_groups")],
            writes=False,
        ))
        self.assertEqual(rows, [0, 0, 0])
        self.assertEqual(self.info(self.cy, "team@1"), ("alice@1", ["alice@1", "cy"]))

    def test_leaving_from_another_realm_is_announced_to_every_realm(self):
        self.ask(self.alice, "addmember - team heru@2")
        for client in (self.alice, self.heru, self.cy):
            self.ask(client, "subscribe -")
        self.assertEqual(self.ask(self.cy, "leavegroup - team@1")["status"], "OK")
        left = {"event": "member", "change": "left", "member": "cy@3", "by": "cy@3"}
        self.assertEqual(self.events(self.alice), [dict(left, group="team")])
        self.assertEqual(self.events(self.heru), [dict(left, group="team@1")])
        self.assertEqual(self.events(self.cy), [dict(left, group="team@1", member="cy", by="cy")])
        self.assertEqual(self.info(self.heru, "team@1"), ("alice@1", ["alice@1", "heru"]))
        self.assertEqual(self.info(self.alice, "team"), ("alice", ["alice", "heru@2"]))

    def test_a_user_the_far_realm_does_not_know_comes_back_as_a_failure(self):
        self.assertEqual(self.ask(self.alice, "addmember - team nobody@2")["status"], "OK")
        (failure,) = [m for m in self.ask(self.alice, "inbox -")["messages"] if "failed" in m]
        self.assertEqual(failure["failed"]["code"], "no_such_user")
        self.assertIn("nobody@2 was not added to group team", failure["msg"])
        self.assertEqual(self.info(self.alice, "team"), ("alice", ["alice", "cy@3"]))
        self.assertEqual(self.info(self.cy, "team@1"), ("alice@1", ["alice@1", "cy"]))

    def test_a_new_group_is_told_to_its_members_on_every_realm(self):
        for client in (self.alice, self.heru, self.cy):
            self.ask(client, "subscribe -")
        self.assertEqual(self.ask(self.alice, "creategroup - crew HERU@2 cy@3")["status"], "OK")
        created = {"event": "member", "group": "crew@1", "change": "created",
                   "member": "alice@1", "by": "alice@1"}
        self.assertEqual(self.events(self.heru), [created])  # typed HERU, told as registered
        self.assertEqual(self.events(self.cy), [created])
        self.assertEqual(self.events(self.alice), [])  # the connection that made it
        # Before any post: the group is in the member's conversations, and
        # what else the creation sends (rosters) tells nothing more.
        self.assertIn(
            {"with": "crew@1", "kind": "group", "last": None, "unread": 0},
            self.ask(self.heru, "conversations -")["conversations"],
        )
        self.assertEqual(self.events(self.heru), [])

    def test_a_member_refused_at_creation_is_taken_out_on_every_realm(self):
        self.assertEqual(self.ask(self.alice, "creategroup - crew cy@3 nobody@2")["status"], "OK")
        self.assertEqual(self.info(self.alice, "crew"), ("alice", ["alice", "cy@3"]))
        self.assertEqual(self.info(self.cy, "crew@1"), ("alice@1", ["alice@1", "cy"]))

    def test_a_member_named_in_another_case_is_listed_as_registered(self):
        self.ask(self.alice, "addmember - team HERU@2")
        self.assertEqual(self.info(self.heru, "team@1"), ("alice@1", ["alice@1", "cy@3", "heru"]))
        self.ask(self.alice, "removemember - team heru@2")
        self.assertEqual(self.info(self.cy, "team@1"), ("alice@1", ["alice@1", "cy"]))

    def test_a_group_announced_without_its_members_still_lists_this_realms_own(self):
        # As an older release left it: memberships, no roster.
        self.successResultOf(self.three._store.submit(
            lambda db: db.execute("DELETE FROM remote_rosters"), writes=True))
        self.successResultOf(self.three._store.submit(
            lambda db: db.execute("DELETE FROM remote_groups"), writes=True))
        self.assertEqual(self.info(self.cy, "team@1"), (None, ["cy"]))
        self.ask(self.alice, "addmember - team heru@2")
        self.assertEqual(self.info(self.cy, "team@1"), ("alice@1", ["cy", "heru@2"]))

    def test_only_the_owner_changes_a_group_from_any_realm(self):
        self.assertEqual(self.ask(self.cy, "addmember - team@1 heru@2")["code"], "forbidden")
        self.assertEqual(self.ask(self.cy, "removemember - team@1 alice@1")["code"], "forbidden")
        self.assertEqual(self.ask(self.heru, "addmember - team@1 heru")["code"], "not_a_member")
        self.assertEqual(self.info(self.heru, "team@1"), (None, "not_a_member"))

    def test_a_change_is_applied_once_whatever_the_resends(self):
        self.ask(self.heru, "subscribe -")
        notice = Message(
            "e" * 32, MEMBER, Address("alice", "1"), Address("team", "1"), "added heru@2",
            "2026-01-01T00:00:00.000+00:00",
        )
        first = self.successResultOf(self.two.receive("1", notice))
        again = self.successResultOf(self.two.receive("1", notice))
        self.assertEqual((first.duplicate, again.duplicate), (False, True))
        self.assertEqual(len(self.events(self.heru)), 1)

    def test_a_change_crosses_as_a_membergrouprealm_frame(self):
        notice = Message(
            "e" * 32, MEMBER, Address("cy", "3"), Address("team", "1"), "left cy@3",
            "2026-01-01T00:00:00.000+00:00",
        )
        line = MessageFrame.of(notice, "1", "2").to_line()
        self.assertEqual(
            line, f"@id={'e' * 32};ts=2026-01-01T00:00:00.000+00:00 membergrouprealm cy@3 team@1"
                  " left cy@3",
        )
        self.assertEqual(MessageFrame.from_line(line).message("1", "2"), notice)

    def test_a_realm_cannot_change_another_realms_group(self):
        forged = Message(
            "f" * 32, MEMBER, Address("mallory", "3"), Address("team", "1"), "added heru@2",
            "2026-01-01T00:00:00.000+00:00",
        )
        self.failureResultOf(self.two.receive("3", forged), errors.Forbidden)
        for text in ("joined heru@2", "added heru", "added heru@2 cy@3", "known"):
            bad = Message("a" * 32, MEMBER, Address("alice", "1"), Address("team", "1"), text,
                          "2026-01-01T00:00:00.000+00:00")
            self.assertIsInstance(
                self.failureResultOf(self.two.receive("1", bad)).value, errors.ChatError
            )
