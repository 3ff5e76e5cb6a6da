"""
Presence end to end over real sockets: two realms as processes (one killed
-9 and started again), and three realms in one C{--realm=all} process.
Every wait is bounded; every process is killed at cleanup.
"""

import signal

from tests.test_end_to_end import DEADLINE, Connection
from tests.test_federation_end_to_end import FederationTestCase, wait_for


def next_presence(connection):
    """The next presence event on a subscribed C{connection} (others are skipped)."""
    while True:
        event = connection.read()
        if event.get("event") == "presence":
            return {k: event[k] for k in ("user", "online", "last_seen")}


def state(client, user):
    reply = client.ask(f"presence - {user}")
    assert reply["status"] == "OK", reply
    return reply["presence"][user]


class PresenceAcrossProcessesTests(FederationTestCase):
    NAMES = ("1", "2")

    def listener(self, realm, user):
        """A second connection of C{user}, subscribed: where their events come."""
        connection = self.connect_as(realm, user)
        self.assertEqual(connection.ask("subscribe -")["status"], "OK")
        return connection

    def connect_as(self, realm, user):
        connection = Connection(self.ports[f"chat{realm}"])
        self.addCleanup(connection.close)
        self.assertEqual(connection.ask(f"auth {user} pw")["status"], "OK")
        return connection

    def test_presence_crosses_the_link_and_converges_after_a_kill_9(self):
        one, alice = self.start("1")
        two, heru = self.start("2")
        alice.ask("register alice pw", "auth alice pw")
        heru.ask("register heru pw", "auth heru pw")
        wait_for("the links", lambda: self.all_linked(alice) and self.all_linked(heru))
        self.assertEqual(alice.ask("creategroup - team heru@2")["status"], "OK")
        wait_for("team at realm 2", lambda: heru.ask("mygroups -")["groups"] == ["team@1"])
        events = self.listener("2", "heru")
        self.listener("1", "alice")
        self.assertEqual(next_presence(events),
                         {"user": "alice@1", "online": True, "last_seen": None})
        self.assertEqual(state(heru, "alice@1"), {"online": True, "last_seen": None})
        # Realm 1 dies: its users read offline, last seen unknown, at realm 2.
        one.send_signal(signal.SIGKILL)
        one.communicate(timeout=DEADLINE)
        self.assertEqual(next_presence(events),
                         {"user": "alice@1", "online": False, "last_seen": None})
        self.assertEqual(state(heru, "alice@1"), {"online": False, "last_seen": None})
        # Back, alice online again: realm 2 hears it.
        one, alice = self.start("1")
        alice.ask("auth alice pw")
        self.listener("1", "alice")
        self.assertEqual(next_presence(events),
                         {"user": "alice@1", "online": True, "last_seen": None})
        self.stop(one)
        self.stop(two)

    def test_last_seen_is_kept_across_a_restart(self):
        one, alice = self.start("1")
        alice.ask("register alice pw", "register bob pw", "auth alice pw")
        alice.ask("subscribe -")
        alice.ask("unsubscribe -")
        seen = state(alice, "alice")["last_seen"]
        self.assertIsNotNone(seen)
        self.stop(one)
        one, bob = self.start("1")
        bob.ask("auth bob pw")
        self.assertEqual(state(bob, "alice"), {"online": False, "last_seen": seen})
        self.stop(one)


class PresenceInThreeRealmsTests(FederationTestCase):
    def test_presence_reaches_contacts_on_every_realm_of_one_process(self):
        process, alice, heru, cy = self.three_linked_in_one_process()
        self.assertEqual(alice.ask("creategroup - team heru@2 cy@3")["status"], "OK")
        wait_for("the roster at realm 3",
                 lambda: cy.ask("groupinfo - team@1").get("members") == ["alice@1", "cy",
                                                                          "heru@2"])
        self.assertEqual(cy.ask("subscribe -")["status"], "OK")
        self.assertEqual(heru.ask("subscribe -")["status"], "OK")
        # Heru and cy share team@1, a group of realm 1: realm 3 knows from its roster.
        self.assertEqual(next_presence(cy), {"user": "heru@2", "online": True, "last_seen": None})
        self.assertEqual(next_presence(heru), {"user": "cy@3", "online": True, "last_seen": None})
        self.assertEqual(alice.ask("subscribe -")["status"], "OK")
        self.assertEqual(next_presence(cy), {"user": "alice@1", "online": True, "last_seen": None})
        self.assertEqual(next_presence(heru),
                         {"user": "alice@1", "online": True, "last_seen": None})
        alice.close()
        gone = next_presence(heru)
        self.assertEqual((gone["user"], gone["online"]), ("alice@1", False))
        self.assertIsNotNone(gone["last_seen"])
        self.assertEqual(next_presence(cy), gone)
        log = self.stop(process)
        self.assertNotIn("Traceback", log)
