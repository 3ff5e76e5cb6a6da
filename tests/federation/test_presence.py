"""
Presence across realms linked in memory: the presencerealm frame, events
to contacts on other realms, batching, convergence after a link drops and
comes back, the bounds.
"""

from twisted.trial import unittest

from multirealm.core.peer_presence import PeerPresence
from multirealm.core.presence import Presence
from multirealm.federation.frames import FrameError, PresenceFrame, parse_frame
from tests.helpers import Client, InMemoryNetwork

STAMP = "2026-12-06T04:37:11.123+00:00"


class PresenceFrameTests(unittest.TestCase):
    def test_a_frame_carries_online_and_offline_entries(self):
        entries = (("alice", True, None), ("-bob", False, STAMP), ("cy", False, None))
        (line,) = PresenceFrame.lines(entries, False, 7, STAMP, 1000)
        self.assertEqual(
            line, f"@id=presence-7;ts={STAMP} presencerealm update +alice --bob={STAMP} -cy"
        )
        self.assertEqual(parse_frame(line), PresenceFrame("presence-7", STAMP, "update", entries))

    def test_a_snapshot_is_chunked_within_the_bytes_and_ends_synced(self):
        entries = [(f"user{n:04d}", True, None) for n in range(1000)]
        lines = PresenceFrame.lines(entries, True, 1, STAMP, 1024)
        self.assertGreater(len(lines), 5)
        self.assertLessEqual(max(len(line) for line in lines), 1024)
        frames = [parse_frame(line) for line in lines]
        self.assertEqual([f.mode for f in frames], ["sync"] * (len(lines) - 1) + ["synced"])
        self.assertEqual([e for f in frames for e in f.entries], entries)
        # Nobody online is still a snapshot: one frame that empties the view.
        (empty,) = PresenceFrame.lines([], True, 1, STAMP, 1024)
        self.assertEqual(parse_frame(empty).entries, ())
        self.assertEqual(PresenceFrame.lines([], False, 1, STAMP, 1024), [])

    def test_bad_frames_are_refused(self):
        head = f"@id=presence-1;ts={STAMP} presencerealm"
        for line in (f"{head} sometimes +alice", f"{head} update al!ce", f"{head} update +al!ce",
                     f"{head} update +alice={STAMP}", f"{head} update -alice=yesterday",
                     f"{head} update +", f"{head}"):
            self.assertRaises(FrameError, parse_frame, line)


class PresenceAcrossRealmsTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.clock = self.net.clock
        self.one, self.two, self.three = (self.net.realms[n] for n in ("1", "2", "3"))
        self.alice, self.heru, self.cy = Client(self.one), Client(self.two), Client(self.three)
        for client, user in ((self.alice, "alice"), (self.heru, "heru"), (self.cy, "cy")):
            client.ask(f"auth {user} pw")
        self.assertEqual(self.ask(self.alice, "creategroup - team heru@2 cy@3")["status"], "OK")

    def settle(self):
        """Let every change settle, its batch go out, and the realms talk."""
        for _ in range(3):
            self.clock.advance(Presence.SETTLE_SECONDS + PeerPresence.BATCH_SECONDS)
            self.net.flush()

    def ask(self, client, line):
        return self.net.ask(client, line)

    def events(self, client):
        return [(e["user"], e["online"], e["last_seen"])
                for e in self.net.events(client, "presence")]

    def test_contacts_on_every_realm_get_the_event(self):
        self.ask(self.heru, "subscribe -")
        self.ask(self.cy, "subscribe -")
        self.settle()
        # Each is the other's contact through team@1, as realm 3 knows its roster.
        self.assertEqual(self.events(self.cy), [("heru@2", True, None)])
        self.assertEqual(self.events(self.heru), [("cy@3", True, None)])
        self.ask(self.alice, "subscribe -")
        self.settle()
        self.assertEqual(self.events(self.heru), [("alice@1", True, None)])
        self.assertEqual(self.events(self.cy), [("alice@1", True, None)])
        self.assertEqual(self.events(self.alice), [])  # she came after them: the command tells
        self.assertEqual(
            self.ask(self.alice, "presence - heru@2 cy@3 alice")["presence"],
            {"heru@2": {"online": True, "last_seen": None},
             "cy@3": {"online": True, "last_seen": None},
             "alice": {"online": True, "last_seen": None}},
        )
        self.ask(self.alice, "unsubscribe -")
        seen = self.ask(self.alice, "presence - alice")["presence"]["alice"]["last_seen"]
        self.settle()
        self.assertEqual(self.events(self.heru), [("alice@1", False, seen)])
        self.assertEqual(self.ask(self.heru, "presence - alice@1")["presence"],
                         {"alice@1": {"online": False, "last_seen": seen}})

    def test_one_frame_carries_the_changes_of_many_users(self):
        received = []
        real = self.two.presence.peers.received
        self.two.presence.peers.received = lambda *args: (received.append(args), real(*args))
        for n in range(20):
            client = Client(self.one)
            client.login(f"user{n}")
            client.ask("subscribe -")
        self.settle()
        ((peer, _, mode, entries),) = received
        self.assertEqual((peer, mode, len(entries)), ("1", "update", 20))

    def test_the_views_converge_after_a_link_drops_and_comes_back(self):
        self.ask(self.heru, "subscribe -")
        self.ask(self.alice, "subscribe -")
        self.settle()
        self.events(self.heru), self.events(self.alice)
        # Realm 2 stops hearing from realm 1: realm 1's users read offline, null.
        self.net.cut("1", "2")
        self.assertEqual(self.events(self.heru), [("alice@1", False, None)])
        self.assertEqual(self.ask(self.heru, "presence - alice@1")["presence"]["alice@1"],
                         {"online": False, "last_seen": None})
        # Meanwhile alice goes, then bob comes, and neither is told to realm 2.
        self.ask(self.alice, "unsubscribe -")
        bob = Client(self.one)
        bob.login("bob")
        self.ask(self.alice, "addmember - team bob")
        bob.ask("subscribe -")
        self.settle()
        self.assertEqual(self.events(self.heru), [])
        self.net.connect("1", "2")
        self.net.flush()
        self.assertEqual(self.events(self.heru), [("bob@1", True, None)])
        self.assertEqual(
            self.ask(self.heru, "presence - alice@1 bob@1")["presence"],
            {"alice@1": {"online": False, "last_seen": None},
             "bob@1": {"online": True, "last_seen": None}},
        )
        # Realm 1 kept hearing from realm 2 all along (the other link).
        self.assertEqual(self.ask(bob, "presence - heru@2")["presence"]["heru@2"]["online"], True)

    def test_what_an_older_link_says_is_not_believed(self):
        peers = self.two.presence.peers
        old, new = object(), object()
        peers.peer_linked("1", old)
        peers.peer_linked("1", new)
        peers.received("1", old, "synced", [("alice", True, None)])
        self.assertEqual(peers.state(self.two.address("alice@1")), (False, None))
        peers.peer_lost("1", old)  # the old one ending changes nothing
        peers.received("1", new, "synced", [("alice", True, None)])
        self.assertEqual(peers.state(self.two.address("alice@1")), (True, None))

    def test_an_update_that_changes_nothing_is_no_news(self):
        peers = self.two.presence.peers
        told = []
        peers._fan_out = lambda person, online, last_seen: told.append((str(person), online))
        link = object()
        peers.peer_linked("1", link)
        peers.received("1", link, "update", [("alice", True, None)] * 1000)
        peers.received("1", link, "update", [("Alice", True, None), ("alice", False, STAMP)])
        self.assertEqual(told, [("alice@1", True), ("alice@1", False)])

    def test_a_peer_fills_at_most_max_view_names(self):
        peers = self.two.presence.peers
        peers.MAX_VIEW = 5
        link = object()
        peers.peer_linked("1", link)
        peers.received("1", link, "sync", [(f"u{n}", True, None) for n in range(4)])
        peers.received("1", link, "synced", [(f"v{n}", True, None) for n in range(4)])
        peers.received("1", link, "update", [(f"w{n}", True, None) for n in range(4)])
        online = [f"{p}{n}" for p in "uvw" for n in range(4)
                  if peers.state(self.two.address(f"{p}{n}@1"))[0]]
        self.assertEqual(online, ["u0", "u1", "u2", "u3", "v0"])
        self.flushLoggedErrors()

    def test_a_link_that_comes_back_with_nobody_online_sends_one_empty_snapshot(self):
        sent = []
        queue = self.net.queues["1", "2"]
        self.net.cut("1", "2")
        real = queue._send_presence
        queue._send_presence = lambda *args: (sent.append(args[1:]), real(*args))
        self.net.connect("1", "2")
        self.net.flush()
        self.assertEqual(sent, [([], True)])  # the snapshot: nobody is online
