"""
Presence on one realm: the presence command, presence events to contacts,
coalescing, last_seen (durable), the bounds.
"""

import os

from twisted.trial import unittest

from multirealm.config import Limits
from multirealm.core.presence import Presence
from tests.helpers import Client, make_realm, make_store

SETTLE = Presence.SETTLE_SECONDS


class PresenceTests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")
        self.realm = make_realm(self, store=make_store(self, path=self.path))
        self.clock = self.realm.clock
        self.alice, self.bob, self.cy = (Client(self.realm) for _ in range(3))
        for client, name in ((self.alice, "alice"), (self.bob, "bob"), (self.cy, "cy")):
            client.login(name)
        self.assertEqual(self.alice.ask("creategroup - team bob")["status"], "OK")

    def presence(self, client, *names):
        reply = client.ask("presence - " + " ".join(names))
        self.assertEqual(reply["status"], "OK", reply)
        return reply["presence"]

    def events(self, client):
        return [r for r in client.replies() if r.get("event") == "presence"]

    def subscribe(self, client):
        self.assertEqual(client.ask("subscribe -")["status"], "OK")

    def test_online_while_a_connection_is_subscribed_then_last_seen(self):
        self.assertEqual(self.presence(self.bob, "alice"),
                         {"alice": {"online": False, "last_seen": None}})
        self.subscribe(self.alice)
        second = Client(self.realm)
        second.ask("auth alice pw")
        self.subscribe(second)
        self.assertEqual(self.presence(self.bob, "alice")["alice"]["online"], True)
        self.alice.ask("unsubscribe -")
        self.assertEqual(self.presence(self.bob, "alice")["alice"]["online"], True)
        self.clock.advance(5)
        second.protocol.transport.loseConnection()
        second.protocol.connectionLost(None)
        self.assertEqual(
            self.presence(self.bob, "alice", "bob"),
            {"alice": {"online": False, "last_seen": "2023-11-14T22:13:25.000+00:00"},
             "bob": {"online": False, "last_seen": None}},
        )

    def test_last_seen_survives_a_restart(self):
        self.subscribe(self.alice)
        self.clock.advance(3)
        self.alice.ask("unsubscribe -")
        self.successResultOf(self.realm._store.stop())
        realm = make_realm(self, store=make_store(self, path=self.path), clock=self.clock)
        bob = Client(realm)
        bob.ask("auth bob pw")
        self.assertEqual(self.presence(bob, "alice")["alice"],
                         {"online": False, "last_seen": "2023-11-14T22:13:23.000+00:00"})

    def test_stopping_writes_when_those_online_were_last_seen(self):
        self.subscribe(self.alice)
        self.clock.advance(7)
        self.successResultOf(self.realm.presence.stop())
        self.assertEqual(self.successResultOf(self.realm._store.last_seen(["alice"])),
                         {"alice": ("alice", "2023-11-14T22:13:27.000+00:00")})

    def test_contacts_get_events_and_others_do_not(self):
        for client in (self.bob, self.cy):
            self.subscribe(client)
        self.clock.advance(SETTLE)
        self.events(self.bob), self.events(self.cy)
        self.subscribe(self.alice)
        self.assertEqual(self.events(self.bob), [])  # not before it settles
        self.clock.advance(SETTLE)
        self.assertEqual(self.events(self.bob),
                         [{"event": "presence", "user": "alice", "online": True,
                           "last_seen": None}])
        self.assertEqual(self.events(self.cy), [])  # no group or conversation with alice
        self.assertEqual(self.events(self.alice), [])  # not one's own
        self.alice.protocol.connectionLost(None)
        self.clock.advance(SETTLE)
        self.assertEqual(self.events(self.bob),
                         [{"event": "presence", "user": "alice", "online": False,
                           "last_seen": "2023-11-14T22:13:20.600+00:00"}])

    def test_a_subscription_ends_with_its_session_and_its_user_goes_offline(self):
        realm = make_realm(self, limits=Limits(session_days=1, idle_timeout=10 * 86400))
        alice, bob = Client(realm), Client(realm)
        alice.login("alice")
        bob.ask("register bob pw")
        self.assertEqual(alice.ask("creategroup - team bob")["status"], "OK")
        self.subscribe(alice)
        realm.clock.advance(43200)
        bob.ask("auth bob pw")  # a session that outlives alice's
        self.subscribe(bob)
        realm.clock.advance(43200 - 1)
        self.assertEqual(self.presence(bob, "alice")["alice"]["online"], True)
        realm.clock.advance(1)
        realm.clock.advance(SETTLE)
        self.assertEqual([(e["user"], e["online"]) for e in self.events(bob)],
                         [("alice", False)])
        self.assertEqual(self.presence(bob, "alice")["alice"]["online"], False)

    def test_a_private_conversation_makes_contacts(self):
        self.assertEqual(self.alice.ask("send - cy hello")["status"], "OK")
        self.subscribe(self.cy)
        self.subscribe(self.alice)
        self.clock.advance(SETTLE)
        self.assertEqual([e["user"] for e in self.events(self.cy)], ["alice"])
        self.assertEqual([e["user"] for e in self.events(self.alice)], ["cy"])

    def test_a_user_who_flaps_ten_times_in_a_second_is_one_event(self):
        self.subscribe(self.bob)
        self.clock.advance(SETTLE)
        for _ in range(10):
            self.subscribe(self.alice)
            self.clock.advance(0.05)
            self.alice.ask("unsubscribe -")
            self.clock.advance(0.05)
        self.subscribe(self.alice)
        self.clock.advance(SETTLE)
        self.assertEqual([e["online"] for e in self.events(self.bob)], [True])

    def test_coming_back_before_it_settles_is_no_event(self):
        self.subscribe(self.bob)
        self.subscribe(self.alice)
        self.clock.advance(SETTLE)
        self.events(self.bob), self.events(self.alice)
        self.alice.ask("unsubscribe -")
        self.clock.advance(SETTLE / 2)
        self.subscribe(self.alice)
        self.clock.advance(SETTLE)
        self.assertEqual(self.events(self.bob), [])

    def test_a_change_that_keeps_flapping_is_announced_within_the_most_seconds(self):
        self.subscribe(self.bob)
        self.clock.advance(SETTLE)
        self.subscribe(self.alice)
        for tenth in range(1, 50):
            self.clock.advance(0.1)
            if self.events(self.bob):
                break
            self.alice.ask("unsubscribe -")
            self.subscribe(self.alice)
        # Settling after each change alone, it would never come while she flaps.
        self.assertLess(tenth, Presence.MOST_SECONDS * 10 + 2)

    def test_refusals(self):
        def error(line):
            reply = self.alice.ask(line)
            self.assertEqual(reply["status"], "ERROR", reply)
            return reply["code"]

        self.assertEqual(error("presence - alice nobody"), "no_such_user")
        self.assertEqual(error("presence - al!ce"), "invalid_name")
        self.assertEqual(error("presence - heru@9"), "no_such_realm")
        self.assertEqual(error("presence -"), "bad_request")
        many = " ".join(["bob"] * (Presence.MAX_NAMES + 1))
        self.assertEqual(error("presence - " + many), "bad_request")
        self.assertEqual(error("presence nosuchsession bob"), "invalid_session")
        # The connection goes on; names as asked, any case; a peer's unknown user reads offline.
        self.assertEqual(
            self.presence(self.alice, "BOB", "heru@2"),
            {"BOB": {"online": False, "last_seen": None},
             "heru@2": {"online": False, "last_seen": None}},
        )
