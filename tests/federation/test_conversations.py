"""
Conversations across realms, three realms linked in memory: peers of
other realms in both directions (one conversation in any case), groups of
other realms (their posts counted on each member realm, one's own moving
one's marker), groups joined by addmember on the home and on member
realms, a remote group left, and delivery failures (the conversation with
the realm that refused).
"""

from twisted.trial import unittest

from multirealm import errors
from multirealm.model import FAILURE, Failed
from multirealm.names import Address
from tests.helpers import Client, InMemoryNetwork


class RemoteConversationTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.one, self.two, self.three = (self.net.realms[n] for n in ("1", "2", "3"))

    def listed(self, realm, user):
        """(with, kind, unread, last text, last sender) of each of C{user}'s conversations."""
        conversations, _ = self.successResultOf(realm.conversations(user))
        return [
            (other.relative_to(realm.name), kind, unread,
             *((None, None) if last is None
               else (last.text, last.sender.relative_to(realm.name))))
            for other, kind, last, unread in conversations
        ]

    def send(self, realm, user, to, text):
        delivery = self.successResultOf(realm.send(user, realm.address(to), text))
        self.net.flush()
        return delivery.message.id

    def post(self, realm, user, group, text):
        delivery = self.successResultOf(realm.send_group(user, realm.address(group), text))
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
                         [("heru@2", "private", 1)])
        # And markread finds it by any spelling.
        answer = self.successResultOf(self.one.inbox("alice")).messages[-1].id
        other, moved = self.successResultOf(
            self.one.mark_read("alice", self.one.address("Heru@2"), answer))
        self.assertEqual((str(other), moved), ("heru@2", True))
        self.assertEqual([c[:3] for c in self.listed(self.one, "alice")],
                         [("heru@2", "private", 0)])

    def test_remote_groups_are_conversations_of_their_members(self):
        team = self.one.address("team")
        self.successResultOf(
            self.one.create_group("alice", team, [self.one.address("heru@2"),
                                                  self.one.address("cy@3")])
        )
        self.net.flush()
        self.assertEqual(self.listed(self.two, "heru"), [("team@1", "group", 0, None, None)])
        self.post(self.one, "alice", "team", "from 1")
        self.post(self.three, "cy", "team@1", "from 3")
        self.assertEqual(self.listed(self.two, "heru"),
                         [("team@1", "group", 2, "from 3", "cy@3")])
        self.assertEqual(self.listed(self.three, "cy"), [("team@1", "group", 0, "from 3", "cy")])
        self.assertEqual(self.listed(self.one, "alice"), [("team", "group", 1, "from 3", "cy@3")])
        # A marker in a remote group, then leaving it.
        history = self.successResultOf(self.two.group_inbox("heru", self.two.address("team@1")))
        other, moved = self.successResultOf(
            self.two.mark_read("heru", self.two.address("TEAM@1"), history.messages[0].id)
        )
        self.assertEqual((other.relative_to("2"), moved), ("team@1", True))
        self.assertEqual(self.listed(self.two, "heru")[0][2], 1)
        self.successResultOf(self.two.leave_group("heru", self.two.address("team@1")))
        self.net.flush()
        self.assertEqual(self.listed(self.two, "heru"), [])

    def test_members_added_on_the_home_and_on_member_realms_are_listed(self):
        alice, heru = Client(self.one), Client(self.two)
        alice.ask("auth alice pw")
        heru.ask("auth heru pw")
        self.assertEqual(alice.ask("creategroup - team cy@3")["status"], "OK")
        self.net.flush()
        self.successResultOf(self.one.register("bob", "pw"))
        self.assertEqual(alice.ask("addmember - team bob heru@2")["status"], "OK")
        self.net.flush()
        self.assertEqual(heru.ask("mygroups -")["groups"], ["team@1"])
        self.assertEqual(self.listed(self.two, "heru"), [("team@1", "group", 0, None, None)])
        self.assertEqual(self.listed(self.one, "bob"), [("team", "group", 0, None, None)])
        self.post(self.three, "cy", "team@1", "hello all")
        self.assertEqual(self.listed(self.two, "heru"),
                         [("team@1", "group", 1, "hello all", "cy@3")])
        self.assertEqual(self.listed(self.one, "bob"),
                         [("team", "group", 1, "hello all", "cy@3")])
        # Removed by the owner: gone from the member realm's list too.
        self.assertEqual(alice.ask("removemember - team heru@2")["status"], "OK")
        self.net.flush()
        self.assertEqual(self.listed(self.two, "heru"), [])

    def test_a_delivery_failure_is_in_the_conversation_with_the_realm_that_refused(self):
        self.send(self.one, "alice", "heru@2", "to heru")
        failed = self.send(self.one, "alice", "nobody@2", "anyone?")
        listed = self.listed(self.one, "alice")
        refused = "not delivered to nobody@2: no user 'nobody'"
        self.assertEqual(listed, [("@2", "private", 1, refused, "@2"),
                                  ("nobody@2", "private", 0, "anyone?", "alice"),
                                  ("heru@2", "private", 0, "to heru", "alice")])
        notice = [m for m in self.successResultOf(self.one.inbox("alice")).messages
                  if m.failed is not None and m.failed.id == failed][0]
        other = self.one.conversation_address("@2")
        self.assertEqual(self.successResultOf(self.one.mark_read("alice", other, notice.id)),
                         (other, True))
        self.assertEqual(self.listed(self.one, "alice")[0][2], 0)

    def test_the_history_a_realm_gets_with_its_first_member_is_not_unread(self):
        self.successResultOf(self.one.create_group("alice", self.one.address("team"), []))
        self.post(self.one, "alice", "team", "before heru")
        self.net.clock.advance(1)
        self.successResultOf(self.one.add_members(
            "alice", self.one.address("team"), [self.one.address("heru@2")]))
        self.net.flush()
        self.assertEqual(self.listed(self.two, "heru"),
                         [("team@1", "group", 0, "before heru", "alice@1")])
        self.post(self.one, "alice", "team", "after heru")
        self.assertEqual(self.listed(self.two, "heru"),
                         [("team@1", "group", 1, "after heru", "alice@1")])

    def test_a_post_its_home_refused_is_no_longer_counted(self):
        self.refused_post_withdrawn(settled=False)

    def test_a_settled_post_its_home_refused_is_no_longer_counted(self):
        # Its timeline rows moved to timeline_settled first (schema step 013).
        self.refused_post_withdrawn(settled=True)

    def refused_post_withdrawn(self, settled):
        self.successResultOf(self.two.register("dee", "pw"))
        self.successResultOf(self.one.create_group(
            "alice", self.one.address("team"), [self.one.address(m) for m in ("heru@2", "dee@2")]))
        self.net.flush()
        self.post(self.one, "alice", "team", "first")
        self.net.cut("2", "1")
        refused = self.successResultOf(
            self.two.send_group("heru", self.two.address("team@1"), "refused"))
        self.assertEqual(self.listed(self.two, "dee"), [("team@1", "group", 2, "refused", "heru")])
        failure = refused.message._replace(id="f1", kind=FAILURE, sender=Address("", "1"),
                                           recipient=Address("heru", "2"),
                                           failed=Failed(refused.message.id, "not_a_member"))
        store = self.two._store
        if settled:
            self.successResultOf(store.submit(settle_every_row))
            store.thread_cache.recent_timeline_rows = None  # moved behind its back
        self.successResultOf(store.record_failure("1", refused.seq, failure))
        # The count of rows waiting stays true (or is counted again).
        waiting = self.successResultOf(store.submit(
            lambda db: db.execute("SELECT count(*) FROM timeline_recent").fetchone()[0],
            writes=False))
        self.assertIn(store.thread_cache.recent_timeline_rows, (None, waiting))
        self.assertEqual(self.listed(self.two, "dee"), [("team@1", "group", 1, "first", "alice@1")])
        self.assertEqual(self.listed(self.two, "heru")[1],
                         ("team@1", "group", 0, "first", "alice@1"))

    def test_a_member_s_conversation_rows_do_not_count_against_the_peer_s_quota(self):
        self.successResultOf(self.one.create_group(
            "alice", self.one.address("team"), [self.one.address("heru@2")]))
        self.net.flush()
        counted = self.successResultOf(self.two._store.submit(
            lambda db: db.execute("SELECT memberships FROM remote_counts WHERE realm = '1'")
            .fetchone()[0], writes=False))
        self.assertEqual(counted, 3)  # heru's membership, and alice and heru on the roster


def settle_every_row(db):
    db.execute("INSERT INTO timeline_settled SELECT * FROM timeline_recent")
    db.execute("DELETE FROM timeline_recent")


class RemoteHistoryTests(unittest.TestCase):
    """The history command's pages of conversations that cross realms."""

    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.one, self.two, self.three = (self.net.realms[n] for n in ("1", "2", "3"))

    def page(self, realm, user, kind, other, before=None):
        page = self.successResultOf(realm.conversation_history(
            user, kind, realm.conversation_address(other), before
        ))
        return [m.text for m in page.messages], page.more

    def send(self, realm, user, to, text):
        self.successResultOf(realm.send(user, realm.address(to), text))
        self.net.flush()

    def test_a_peer_of_another_realm_in_any_case_and_the_failures(self):
        self.send(self.one, "alice", "HERU@2", "typed in capitals")
        self.send(self.two, "heru", "alice@1", "answer")
        self.send(self.three, "cy", "alice@1", "not heru")
        self.send(self.one, "alice", "nobody@2", "anyone?")
        self.assertEqual(self.page(self.one, "alice", "private", "heru@2"),
                         (["typed in capitals", "answer"], False))
        self.assertEqual(self.page(self.two, "heru", "private", "Alice@1"),
                         (["typed in capitals", "answer"], False))
        self.assertEqual(self.page(self.one, "alice", "private", "@2"),
                         (["not delivered to nobody@2: no user 'nobody'"], False))

    def test_a_group_of_another_realm_read_backwards_on_a_member_realm(self):
        team = self.one.address("team")
        self.successResultOf(self.one.create_group("alice", team, [self.one.address("heru@2")]))
        self.net.flush()
        for n in range(4):
            self.successResultOf(self.one.send_group("alice", team, f"post{n}"))
        self.net.flush()
        history = self.successResultOf(self.two.group_inbox("heru", self.two.address("team@1")))
        before = history.messages[2].id
        self.assertEqual(self.page(self.two, "heru", "group", "team@1", before),
                         (["post0", "post1"], False))
        outside = self.three.conversation_history("cy", "group", self.three.address("team@1"))
        self.failureResultOf(outside, errors.NotAMember)
