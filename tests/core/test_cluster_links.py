"""
One realm on two processes (L{multirealm.core.cluster_links}): what the
link to a peer does on the process holding it, and what a peer's link
to us says of its users, every process answers.
"""

from twisted.trial import unittest

from multirealm.federation.server import RealmServerFactory
from tests.core.test_cluster import Processes, events
from tests.helpers import Client


class Link:
    """A peer's link to the realm, as its realm port hands it to presence."""


def killed(realm):
    """C{realm}'s process dies without a word: no heartbeat, nothing published."""
    realm.cluster._beat.stop()
    realm.cluster._stopped = True


class LinksAcrossProcessesTests(Processes, unittest.TestCase):
    def realm_2(self, realm):
        (state,) = Client(realm).ask("listrealms")["realms"]
        return state

    def forget_silent(self):
        others = self.b.cluster.others
        self.clock.advance(others.HEARTBEAT_SECONDS * (others.SILENT_BEATS + 1))

    def test_the_link_held_by_a_is_linked_on_b(self):
        self.assertFalse(self.realm_2(self.b)["linked"])
        self.a.set_linked("2", True)
        self.assertTrue(self.realm_2(self.b)["linked"])
        self.assertTrue(self.b.links.linked("2"))  # /metrics' multirealm_peer_link_up
        self.a.set_linked("2", False)
        self.assertFalse(self.realm_2(self.b)["linked"])

    def test_the_last_error_of_the_link_on_a_is_the_last_error_on_b(self):
        self.b.set_link_error("2", "an older error")
        self.clock.advance(1)
        self.a.set_link_error("2", "cannot connect:\nrefused")
        a, b = self.realm_2(self.a), self.realm_2(self.b)
        self.assertEqual(b["last_error"], "cannot connect: refused")
        self.assertEqual((b["last_error"], b["last_error_at"]),
                         (a["last_error"].replace("\n", " "), a["last_error_at"]))

    def test_pending_is_the_outbox_in_the_shared_store(self):
        bob = Client(self.a)
        bob.login("bob")
        bob.ask("send - heru@2 hi")
        self.assertEqual(self.realm_2(self.b)["pending"], 1)

    def test_a_process_killed_while_linked_is_not_linked_once_forgotten(self):
        self.a.set_linked("2", True)
        killed(self.a)
        self.clock.advance(self.b.cluster.others.HEARTBEAT_SECONDS)
        self.assertTrue(self.realm_2(self.b)["linked"])  # not yet
        self.forget_silent()
        self.assertFalse(self.realm_2(self.b)["linked"])

    def test_a_process_that_stops_is_not_linked_at_once(self):
        self.a.set_linked("2", True)
        self.a.cluster.stop()
        self.assertFalse(self.realm_2(self.b)["linked"])

    def test_a_process_that_starts_learns_the_links_of_the_others(self):
        self.a.set_linked("2", True)
        self.a.set_link_error("2", "refused message 0123: quota_exceeded")
        late = self.process("C")
        state = self.realm_2(late)
        self.assertTrue(state["linked"])
        self.assertEqual(state["last_error"], "refused message 0123: quota_exceeded")

    def test_a_missed_change_is_made_good_after_an_outage(self):
        self.a.set_linked("2", True)
        self.hub.drop_next("l ")
        self.a.set_linked("2", False)
        self.assertTrue(self.realm_2(self.b)["linked"])  # B missed it
        self.b.cluster.missed()  # B's bus lost touch, and is back: A dumps
        self.assertFalse(self.realm_2(self.b)["linked"])


class PeerPresenceAcrossProcessesTests(Processes, unittest.TestCase):
    def setUp(self):
        super().setUp()
        # carol on B has a conversation with heru@2, and is subscribed.
        self.carol = Client(self.b)
        self.carol.login("carol")
        self.carol.ask("send - heru@2 hi")
        self.carol.ask("subscribe -")
        self.settle()
        events(self.carol)

    def settle(self):
        self.clock.pump([0.1] * 10)

    def heru(self, realm=None):
        client = Client(realm or self.b)
        client.ask("auth carol pw")
        return client.ask("presence - heru@2")["presence"]["heru@2"]

    def linked_on(self, realm, *online):
        """Realm 2's link lands on C{realm}: its snapshot says C{online}."""
        link = Link()
        realm.presence.peers.peer_linked("2", link)
        realm.presence.peers.received("2", link, "synced", [(n, True, None) for n in online])
        return link

    def test_a_snapshot_heard_on_a_is_presence_on_b(self):
        self.linked_on(self.a, "heru")
        self.assertTrue(self.heru()["online"])
        self.settle()
        self.assertEqual([(e["user"], e["online"]) for e in events(self.carol, "presence")],
                         [("heru@2", True)])

    def test_an_update_heard_on_a_is_presence_on_b(self):
        link = self.linked_on(self.a, "heru")
        stamp = "2026-12-06T10:00:00.000+00:00"
        self.a.presence.peers.received("2", link, "update", [("heru", False, stamp)])
        self.assertEqual(self.heru(), {"online": False, "last_seen": stamp})
        self.settle()
        self.assertEqual([e["online"] for e in events(self.carol, "presence")], [True, False])

    def test_the_link_ending_on_a_takes_its_users_offline_on_b(self):
        link = self.linked_on(self.a, "heru")
        self.a.presence.peers.peer_lost("2", link)
        self.assertFalse(self.heru()["online"])

    def test_a_link_that_moves_to_b_takes_over_and_the_old_one_says_nothing_more(self):
        old = self.linked_on(self.a, "heru", "amon")
        self.linked_on(self.b, "amon")
        for realm in (self.a, self.b):
            self.assertFalse(self.heru(realm)["online"])
        # The old link, half dead on A, still speaks, then ends: no one believes it.
        self.a.presence.peers.received("2", old, "update", [("heru", True, None)])
        self.a.presence.peers.peer_lost("2", old)
        for realm in (self.a, self.b):
            self.assertFalse(self.heru(realm)["online"])
            amon = Client(realm)
            amon.ask("auth carol pw")
            self.assertTrue(amon.ask("presence - amon@2")["presence"]["amon@2"]["online"])

    def test_the_users_of_a_link_on_a_process_killed_read_offline_once_it_is_forgotten(self):
        self.linked_on(self.a, "heru")
        killed(self.a)
        others = self.b.cluster.others
        self.clock.advance(others.HEARTBEAT_SECONDS * (others.SILENT_BEATS + 1))
        self.assertFalse(self.heru()["online"])

    def test_a_process_that_starts_learns_the_peers_users(self):
        link = self.linked_on(self.a, "heru")
        stamp = "2026-12-06T10:00:00.000+00:00"
        self.a.presence.peers.received("2", link, "update", [("amon", False, stamp)])
        late = self.process("C")
        self.assertTrue(self.heru(late)["online"])
        amon = Client(late)
        amon.ask("auth carol pw")
        self.assertEqual(amon.ask("presence - amon@2")["presence"]["amon@2"],
                         {"online": False, "last_seen": stamp})

    def test_a_missed_update_is_made_good_after_an_outage(self):
        link = self.linked_on(self.a, "heru")
        self.hub.drop_next("u ")
        self.a.presence.peers.received("2", link, "update", [("heru", False, None)])
        self.assertTrue(self.heru()["online"])  # B missed it
        self.b.cluster.missed()
        self.assertFalse(self.heru()["online"])

    def test_a_missed_end_of_the_link_is_made_good_after_an_outage(self):
        link = self.linked_on(self.a, "heru")
        self.hub.drop_next("o ")
        self.a.presence.peers.peer_lost("2", link)
        self.assertTrue(self.heru()["online"])  # B missed it
        self.b.cluster.missed()
        self.assertFalse(self.heru()["online"])

    def test_a_peers_link_on_b_cuts_short_the_backoff_of_our_link_on_a(self):
        seen = []
        server = RealmServerFactory(self.a, lambda *realms: "secret", 65536, self.clock)
        server.on_peer_seen("2", lambda: seen.append("2"))  # A runs our link to 2
        self.linked_on(self.b, "heru")
        self.assertEqual(seen, ["2"])

    def test_a_large_view_goes_in_several_payloads_within_the_bound(self):
        self.b.presence.peers.MAX_VIEW = 300
        names = [f"user{n:05}" for n in range(1000)]
        self.linked_on(self.a, *names)
        self.assertEqual(len(self.b.presence.peers._views["2"]), 300)
