"""
One realm on two processes (L{multirealm.core.cluster_links}): what the
link to a peer does on the process holding it, every process answers.
"""

from twisted.trial import unittest

from tests.core.test_cluster import Processes
from tests.helpers import Client


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
