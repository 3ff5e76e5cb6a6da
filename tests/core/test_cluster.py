"""
One realm on two processes: two Realm cores ("process A" and "process B")
over one SQLite file, joined by an in-memory bus, a chat connection on
each (L{multirealm.core.cluster}).
"""

import os

from twisted.internet import defer, task
from twisted.trial import unittest

from multirealm.config import Limits
from multirealm.core.memory_bus import MemoryHub
from multirealm.core.operator import Operator
from multirealm.core.realm import Realm
from multirealm.storage.files import FileStore
from tests.helpers import Client, InlineHasher, Recorder, make_store


def events(client, kind=None):
    return [r for r in client.replies() if "event" in r and kind in (None, r["event"])]


class Processes:
    """Processes of realm 1 on one SQLite file, joined by one hub."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.hub = MemoryHub()
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")
        self.files = FileStore(self.mktemp())
        self.a = self.process("A")
        self.b = self.process("B")

    def process(self, name):
        store = make_store(self, path=self.path)
        realm = Realm("1", ("2",), Limits(), store, InlineHasher(), self.clock, self.files,
                      bus=self.hub.bus(name))
        realm.cluster.start()
        self.addCleanup(realm.cluster.stop)
        return realm

    def turn(self):
        """One reactor turn: what each process stored is published."""
        self.clock.advance(0)


class TwoProcessesTests(Processes, unittest.TestCase):
    def test_a_message_stored_on_b_is_pushed_live_on_a(self):
        alice, bob = Client(self.a), Client(self.b)
        alice.login("alice")
        alice.ask("subscribe -")
        bob.login("bob")
        sent = bob.ask("send - alice hello")
        self.assertEqual(sent["status"], "OK")
        self.turn()
        (event,) = events(alice, "message")
        self.assertEqual(event["message"]["msg"], "hello")
        self.assertEqual(event["message"]["id"], sent["id"])

    def test_a_missed_notification_is_caught_up_by_the_next_each_once_in_order(self):
        alice, bob = Client(self.a), Client(self.b)
        alice.login("alice")
        alice.ask("subscribe -")
        bob.login("bob")
        self.hub.drop_next("m ")
        bob.ask("send - alice one")
        self.turn()  # its notification is lost
        self.assertEqual(events(alice, "message"), [])
        bob.ask("send - alice two")
        bob.ask("send - alice three")
        self.turn()
        self.assertEqual([e["message"]["msg"] for e in events(alice, "message")],
                         ["one", "two", "three"])
        self.turn()
        self.assertEqual(events(alice), [])

    def test_a_lost_notification_is_caught_up_by_the_next_heartbeat(self):
        alice, bob = Client(self.a), Client(self.b)
        alice.login("alice")
        alice.ask("subscribe -")
        bob.login("bob")
        self.hub.drop_next("m ")
        bob.ask("send - alice one")
        self.turn()
        self.clock.advance(self.a.cluster.others.HEARTBEAT_SECONDS)
        self.assertEqual([e["message"]["msg"] for e in events(alice, "message")], ["one"])

    def test_own_commits_are_announced_after_the_others_before_them(self):
        alice, bob = Client(self.a), Client(self.b)
        alice.login("alice")
        bob.login("bob")
        heard = Recorder()
        self.a.notifier.subscribe(heard)
        bob.ask("send - alice from-b")  # B's notification has not come yet
        alice.ask("send - bob from-a")
        self.assertEqual(heard.texts, ["from-b", "from-a"])
        self.assertEqual([d.seq for d in heard.deliveries],
                         sorted(d.seq for d in heard.deliveries))
        self.turn()
        self.assertEqual(heard.texts, ["from-b", "from-a"])  # once each
        # Stored counts only what this process stored.
        self.assertEqual(self.a.metrics.stored, {("private", "local"): 1})
        self.assertEqual(self.b.metrics.stored, {("private", "local"): 1})

    def test_an_own_commit_read_back_before_its_report_is_announced_once(self):
        alice, bob = Client(self.a), Client(self.b)
        alice.login("alice")
        bob.login("bob")
        heard = Recorder()
        self.a.notifier.subscribe(heard)
        store = self.a.cluster._store
        store.report_deliveries_to(None)  # A's report of its commit is late...
        own = self.successResultOf(self.a.send("alice", self.a.address("bob"), "from-a"))
        store.report_deliveries_to(self.a.cluster._stored_here)
        bob.ask("send - alice from-b")
        self.turn()  # ... B's notification comes first: A reads its own back too
        self.assertEqual(heard.texts, ["from-a", "from-b"])
        self.a.cluster._stored_here([own])  # the report: counted, not announced again
        self.assertEqual(heard.texts, ["from-a", "from-b"])
        self.assertEqual(self.a.metrics.stored, {("private", "local"): 1})

    def test_a_seq_never_used_holds_nothing_up(self):
        # PostgreSQL's sequences skip the numbers of rolled-back inserts.
        alice = Client(self.a)
        alice.login("alice")
        heard = Recorder()
        self.a.notifier.subscribe(heard)
        sent = self.successResultOf(self.a.send("alice", self.a.address("alice"), "note"))
        later = sent._replace(seq=sent.seq + 5)
        self.a.cluster._stored_here([later])
        self.assertEqual([d.seq for d in heard.deliveries], [sent.seq, sent.seq + 5])

    def test_what_cannot_be_read_is_passed_over_and_held_deliveries_go_on(self):
        alice, bob = Client(self.a), Client(self.b)
        alice.login("alice")
        bob.login("bob")
        heard = Recorder()
        self.a.notifier.subscribe(heard)
        store = self.a.cluster._store
        store.deliveries_after = lambda *args: defer.fail(RuntimeError("a row that cannot be read"))
        bob.ask("send - alice from B")  # A cannot read it...
        mine = self.successResultOf(self.a.send("alice", self.a.address("bob"), "from A"))
        self.turn()
        self.assertEqual(heard.deliveries, [])  # ...so its own waits behind it
        for _ in range(self.a.cluster.GIVE_UP_READS):
            self.clock.advance(self.a.cluster.RETRY_SECONDS)
        self.assertEqual([d.seq for d in heard.deliveries], [mine.seq])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # logged once

    def test_a_process_that_cannot_read_where_the_stream_is_tries_again(self):
        store = make_store(self, path=self.path)
        last_seq, failures = store.last_seq, [RuntimeError("the database is down")]
        store.last_seq = lambda: defer.fail(failures.pop()) if failures else last_seq()
        late = Realm("1", ("2",), Limits(), store, InlineHasher(), self.clock, self.files,
                     bus=self.hub.bus("C"))
        late.cluster.start()
        self.addCleanup(late.cluster.stop)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        alice, bob = Client(late), Client(self.b)
        alice.login("alice")
        alice.ask("subscribe -")
        bob.login("bob")
        self.clock.advance(late.cluster.RETRY_SECONDS)
        bob.ask("send - alice hello")
        self.turn()
        self.assertEqual([e["message"]["msg"] for e in events(alice, "message")], ["hello"])

    def test_a_peer_queue_hears_of_messages_for_the_peer_stored_elsewhere(self):
        bob = Client(self.b)
        bob.login("bob")
        heard = Recorder()
        self.a.notifier.subscribe(heard)
        bob.ask("send - heru@2 hi")
        self.turn()
        (delivery,) = heard.deliveries
        self.assertEqual(delivery.queued_for, frozenset(("2",)))
        self.assertEqual(delivery.local_users, frozenset(("bob",)))
        self.assertEqual(delivery.origin, "1")

    def test_markread_reaches_the_users_connections_on_the_other_process(self):
        alice, bob, alice_b = Client(self.a), Client(self.b), Client(self.b)
        token = alice.login("alice")
        bob.login("bob")
        alice_b.ask(f"subscribe {token}")  # a session made on A works on B
        sent = bob.ask("send - alice hello")
        self.turn()
        events(alice_b)
        self.assertEqual(alice.ask(f"markread - bob {sent['id']}")["status"], "OK")
        self.assertEqual(events(alice_b, "read"),
                         [{"event": "read", "with": "bob", "up_to": sent["id"]}])

    def test_logout_on_a_ends_the_session_on_b(self):
        alice, alice_b, bob = Client(self.a), Client(self.b), Client(self.b)
        token = alice.login("alice")
        bob.login("bob")
        self.assertEqual(alice_b.ask(f"subscribe {token}")["status"], "OK")  # cached on B
        self.assertEqual(alice.ask("logout -")["status"], "OK")
        self.assertEqual(alice_b.ask(f"send {token} bob hi")["code"], "invalid_session")
        bob.ask("send - alice hello")
        self.turn()
        self.assertEqual(events(alice_b), [])  # its subscription ended with the session

    def test_passwd_on_a_ends_the_other_sessions_on_b(self):
        alice = Client(self.a)
        token = alice.login("alice")
        other = Client(self.a).ask("auth alice pw")["tokenid"]
        alice_b = Client(self.b)
        self.assertEqual(alice_b.ask(f"subscribe {other}")["status"], "OK")
        self.assertEqual(alice.ask("passwd - pw new")["status"], "OK")
        self.assertEqual(alice_b.ask(f"send {other} alice hi")["code"], "invalid_session")
        self.assertEqual(alice_b.ask(f"send {token} alice hi")["status"], "OK")  # kept

    def test_an_operators_lock_on_a_ends_the_session_on_b(self):
        alice, alice_b = Client(self.a), Client(self.b)
        token = alice.login("alice")
        self.assertEqual(alice_b.ask(f"subscribe {token}")["status"], "OK")
        operator = Operator(self.a, self.a.cluster._store, InlineHasher())
        self.assertEqual(self.successResultOf(operator.lock("alice")), ("alice", 1))
        self.assertEqual(alice_b.ask(f"send {token} alice hi")["code"], "invalid_session")

    def test_a_bus_that_fails_to_tell_of_a_logout_does_not_fail_the_logout(self):
        alice = Client(self.a)
        alice.login("alice")

        def broken(text):
            raise ValueError("the bus is broken")

        self.a.cluster.publish = broken
        self.assertEqual(alice.ask("logout -")["status"], "OK")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_a_lost_session_notice_is_made_good_when_the_bus_comes_back(self):
        alice, alice_b = Client(self.a), Client(self.b)
        token = alice.login("alice")
        self.assertEqual(alice_b.ask(f"subscribe {token}")["status"], "OK")
        self.hub.drop_next("s ")
        alice.ask("logout -")
        self.b.cluster.missed()  # B's bus lost touch, and is back
        self.assertEqual(alice_b.ask(f"send {token} alice hi")["code"], "invalid_session")

    def test_while_the_bus_is_lost_a_session_ended_elsewhere_is_refused_at_once(self):
        alice, alice_b = Client(self.a), Client(self.b)
        token = alice.login("alice")
        self.b.cluster.lost()  # B's bus broke: it hears nothing from A
        self.assertEqual(alice_b.ask(f"send {token} alice hi")["status"], "OK")
        self.hub.drop_next("s ")  # (and A's word would be lost anyway)
        alice.ask("logout -")
        self.assertEqual(alice_b.ask(f"send {token} alice hi")["code"], "invalid_session")
        self.b.cluster.missed()  # back: sessions are kept again
        bob = Client(self.b)
        bob_token = bob.login("bob")
        self.assertEqual(self.b.sessions.user_of(bob_token), "bob")

    def test_a_group_created_on_a_is_an_event_to_its_members_on_b(self):
        alice, bob = Client(self.a), Client(self.b)
        alice.login("alice")
        bob.login("bob")
        bob.ask("subscribe -")
        self.assertEqual(alice.ask("creategroup - team bob")["status"], "OK")
        self.assertEqual(events(bob, "member"), [{
            "event": "member", "group": "team", "change": "created", "member": "alice",
            "by": "alice",
        }])

    def test_unknown_payloads_are_ignored(self):
        alice = Client(self.a)
        alice.login("alice")
        self.b.cluster.publish("z something new")
        self.b.cluster.publish("m not-a-number")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)  # logged, and on it goes
        self.assertEqual(alice.ask("ping")["status"], "OK")


class PresenceAcrossProcessesTests(Processes, unittest.TestCase):
    def settle(self):
        """Presence settles on the one process, then (told) on the other."""
        self.clock.pump([0.1] * 10)

    def contacts(self):
        """carol on A and alice on B share a conversation; carol is subscribed."""
        carol, alice = Client(self.a), Client(self.b)
        carol.login("carol")
        alice.login("alice")
        alice.ask("send - carol hi")
        carol.ask("subscribe -")
        self.settle()
        events(carol)
        return carol, alice

    def presence(self, client, name):
        return client.ask(f"presence - {name}")["presence"][name]

    def test_a_user_online_on_b_is_online_to_a_contact_on_a(self):
        carol, alice = self.contacts()
        alice.ask("subscribe -")
        self.settle()
        self.assertEqual([e["online"] for e in events(carol, "presence")], [True])
        self.assertTrue(self.presence(carol, "alice")["online"])
        alice.ask("unsubscribe -")
        self.settle()
        (event,) = events(carol, "presence")
        self.assertFalse(event["online"])
        self.assertIsNotNone(event["last_seen"])

    def test_online_on_both_is_online_until_the_last_goes(self):
        carol, alice = self.contacts()
        alice_a = Client(self.a)
        alice_a.ask("auth alice pw")
        alice_a.ask("subscribe -")
        alice.ask("subscribe -")
        self.settle()
        self.assertEqual([e["online"] for e in events(carol, "presence")], [True])
        alice_a.ask("unsubscribe -")
        self.settle()
        self.assertEqual(events(carol, "presence"), [])  # still online on B
        self.assertTrue(self.presence(carol, "alice")["online"])

    def test_users_of_a_process_that_falls_silent_expire(self):
        carol, alice = self.contacts()
        alice.ask("subscribe -")
        self.settle()
        events(carol)
        # B is killed: not a word more, no heartbeat.
        self.b.cluster._beat.stop()
        self.b.cluster._stopped = True
        others = self.a.cluster.others
        self.clock.advance(others.HEARTBEAT_SECONDS * others.SILENT_BEATS)
        self.assertEqual(events(carol, "presence"), [])  # not yet
        self.clock.advance(others.HEARTBEAT_SECONDS)
        self.settle()
        (event,) = events(carol, "presence")
        self.assertFalse(event["online"])

    def test_a_process_that_stops_takes_its_users_offline_at_once(self):
        carol, alice = self.contacts()
        alice.ask("subscribe -")
        self.settle()
        events(carol)
        self.b.cluster.stop()
        self.settle()
        (event,) = events(carol, "presence")
        self.assertFalse(event["online"])

    def test_a_process_that_starts_learns_who_is_online_elsewhere(self):
        carol, alice = self.contacts()
        alice.ask("subscribe -")
        self.settle()
        late = Client(self.process("C"))
        late.ask("auth carol pw")
        self.assertTrue(self.presence(late, "alice")["online"])
