"""
addmember, removemember, groupinfo and the member event on one realm.
"""

from twisted.trial import unittest

from multirealm.config import Limits
from tests.helpers import Client, make_realm


class MembershipTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self, peers=("2",), limits=Limits(max_group_members=4))
        self.alice, self.bob, self.cy = Client(self.realm), Client(self.realm), Client(self.realm)
        self.alice.login("alice")
        self.bob.login("bob")
        self.cy.login("cy")
        self.assertEqual(self.alice.ask("creategroup - team bob")["status"], "OK")

    def error(self, client, line):
        reply = client.ask(line)
        self.assertEqual(reply["status"], "ERROR", reply)
        return reply["code"]

    def test_the_owner_adds_a_member_who_reads_the_whole_history(self):
        sent = self.alice.ask("sendgroup - team before cy")["id"]
        self.assertEqual(self.alice.ask("addmember - team cy")["status"], "OK")
        history = self.cy.ask("groupinbox - team")["messages"]
        self.assertEqual([m["id"] for m in history], [sent])
        self.assertEqual(self.cy.ask("sendgroup - team hello")["status"], "OK")
        self.assertEqual(self.cy.ask("mygroups -")["groups"], ["team"])

    def test_adding_twice_is_no_error(self):
        self.alice.ask("addmember - team cy")
        self.assertEqual(self.alice.ask("addmember - team cy CY bob")["status"], "OK")
        self.assertEqual(
            self.cy.ask("groupinfo - team"),
            {"status": "OK", "group": "team", "owner": "alice", "members": ["alice", "bob", "cy"]},
        )

    def test_a_removed_member_loses_read_and_post_at_once(self):
        self.assertEqual(self.alice.ask("removemember - team bob")["status"], "OK")
        self.assertEqual(self.error(self.bob, "groupinbox - team"), "not_a_member")
        self.assertEqual(self.error(self.bob, "sendgroup - team hi"), "not_a_member")
        self.assertEqual(self.error(self.bob, "groupinfo - team"), "not_a_member")
        self.assertEqual(self.bob.ask("mygroups -")["groups"], [])

    def test_refusals(self):
        self.assertEqual(self.error(self.bob, "addmember - team cy"), "forbidden")
        self.assertEqual(self.error(self.bob, "removemember - team alice"), "forbidden")
        self.assertEqual(self.error(self.cy, "addmember - team cy"), "not_a_member")
        self.assertEqual(self.error(self.alice, "addmember - team nobody"), "no_such_user")
        self.assertEqual(self.error(self.alice, "addmember - team he!ru"), "invalid_name")
        self.assertEqual(self.error(self.alice, "addmember - team x@9"), "no_such_realm")
        self.assertEqual(self.error(self.alice, "addmember - nothing cy"), "no_such_group")
        self.assertEqual(self.error(self.alice, "addmember - team"), "bad_request")
        self.assertEqual(self.error(self.cy, "groupinfo - team"), "not_a_member")
        # Past max_group_members (4): alice, bob, cy, and two more.
        self.assertEqual(self.error(self.alice, "addmember - team cy d@2 e@2"), "quota_exceeded")
        self.assertEqual(self.alice.ask("groupinfo - team")["members"], ["alice", "bob"])
        # The connection goes on.
        self.assertEqual(self.alice.ask("addmember - team cy d@2")["status"], "OK")

    def act(self, client, line):
        """Send C{line}: (its reply, the events that came with it)."""
        client.send(line)
        replies = client.replies()
        (reply,) = [r for r in replies if "status" in r]
        return reply, [r for r in replies if "event" in r]

    def test_member_events_reach_every_subscribed_member_and_the_one_concerned(self):
        for client in (self.alice, self.bob, self.cy):
            client.ask("subscribe -")
        reply, events = self.act(self.alice, "addmember - team cy")
        added = {"event": "member", "group": "team", "change": "added", "member": "cy",
                 "by": "alice"}
        self.assertEqual(events, [added])
        self.assertEqual(self.bob.replies(), [added])
        self.assertEqual(self.cy.replies(), [added])
        reply, events = self.act(self.alice, "removemember - team bob")
        removed = dict(added, change="removed", member="bob")
        self.assertEqual(events, [removed])
        self.assertEqual(self.bob.replies(), [removed])
        self.assertEqual(self.cy.replies(), [removed])
        reply, events = self.act(self.cy, "leavegroup - team")
        left = dict(added, change="left", member="cy", by="cy")
        self.assertEqual(events, [left])
        self.assertEqual(self.alice.replies(), [left])
        self.assertEqual(self.bob.replies(), [])
        # Adding one already in tells nobody.
        reply, events = self.act(self.alice, "addmember - team alice")
        self.assertEqual((reply["status"], events), ("OK", []))

    def test_a_new_group_is_told_to_its_subscribed_members_but_the_connection_that_made_it(self):
        # One chat factory, as a realm's ports share: alice's other connection too.
        factory = self.alice.factory
        alice, other, bob, cy = (Client(self.realm, factory=factory) for _ in range(4))
        for client, user in ((alice, "alice"), (other, "alice"), (bob, "bob"), (cy, "cy")):
            client.ask(f"auth {user} pw")
            client.ask("subscribe -")
        reply, events = self.act(alice, "creategroup - crew BOB")
        self.assertEqual((reply["status"], events), ("OK", []))  # it has the reply
        created = {"event": "member", "group": "crew", "change": "created", "member": "alice",
                   "by": "alice"}
        self.assertEqual(other.replies(), [created])
        self.assertEqual(bob.replies(), [created])
        self.assertEqual(cy.replies(), [])  # no member
        # A failed creation tells nobody.
        reply, events = self.act(alice, "creategroup - crew cy")
        self.assertEqual((reply["code"], events), ("group_exists", []))
        self.assertEqual((other.replies(), cy.replies()), ([], []))
