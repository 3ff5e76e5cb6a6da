"""
Files across realm links (three realms in memory): streamed after their
frame, stored once at the far end, fetched there by whom they are for,
in order with the frames around them, refused files come back.
"""

import os

import attrs
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from multirealm import errors
from multirealm.model import FileRef
from tests.helpers import InMemoryNetwork


class FileLinkTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.one, self.two, self.three = (self.net.realms[n] for n in ("1", "2", "3"))

    @defer.inlineCallbacks
    def settle(self):
        """
        Move bytes until nothing moves and no file is being written: files
        are written in threads, so the real reactor runs between rounds
        (bounded: 20 s).
        """
        pool = reactor.getThreadPool()
        quiet = 0
        for _ in range(2000):
            moved = any([pump.flush() for pump in list(self.net.pumps.values())])
            yield task.deferLater(reactor, 0.01)
            busy = moved or pool.working or pool.q.qsize()
            quiet = 0 if busy else quiet + 1
            if quiet == 5:
                return
        raise AssertionError("the network never settled")

    def store_file(self, realm, data):
        """C{data} stored in C{realm}'s files, as an upload would; its L{FileRef}."""
        incoming = realm.files.begin()
        incoming.write_now(data)
        incoming.commit_now()
        return FileRef("photo 1.jpg", incoming.id, len(data))

    def read(self, realm, user, entry):
        """The bytes of history entry C{entry}'s file, fetched as C{user} may."""
        file = self.successResultOf(realm.file_for(user, entry.file.id))
        with realm.files.open(file.id) as f:
            return f.read()

    def stored_files(self, realm):
        folder = realm.files.folder
        return sorted(n for n in os.listdir(folder) if n != "incoming"), os.listdir(
            os.path.join(folder, "incoming")
        )

    @defer.inlineCallbacks
    def test_a_private_file_crosses_and_is_fetched_by_its_recipient(self):
        data = os.urandom(300_000)
        sent = self.successResultOf(self.one.send_file(
            "alice", self.one.address("heru@2"), self.store_file(self.one, data)
        ))
        yield self.settle()
        (entry,) = self.successResultOf(self.two.inbox("heru")).messages
        self.assertEqual(entry.id, sent.message.id)
        self.assertEqual((entry.file.name, entry.file.size), ("photo 1.jpg", len(data)))
        self.assertEqual(self.read(self.two, "heru", entry), data)
        self.assertEqual(self.one.metrics.file_bytes_out["realm"], len(data))
        self.assertEqual(self.two.metrics.file_bytes_in["peer"], len(data))
        # Nobody else on realm 2 may fetch it.
        self.successResultOf(self.two.register("eve", "pw"))
        self.failureResultOf(self.two.file_for("eve", entry.file.id), errors.Forbidden)

    @defer.inlineCallbacks
    def test_frames_after_a_file_keep_their_order(self):
        heru = self.one.address("heru@2")
        self.successResultOf(self.one.send("alice", heru, "before"))
        self.successResultOf(self.one.send_file(
            "alice", heru, self.store_file(self.one, b"x" * 100_000)
        ))
        self.successResultOf(self.one.send("alice", heru, "after"))
        yield self.settle()
        history = self.successResultOf(self.two.inbox("heru")).messages
        self.assertEqual(
            [m.file.name if m.file else m.text for m in history],
            ["before", "photo 1.jpg", "after"],
        )

    @defer.inlineCallbacks
    def test_a_group_file_reaches_every_realm_with_members(self):
        team = self.one.address("team")
        self.successResultOf(self.one.create_group(
            "alice", team, [self.one.address("heru@2"), self.one.address("cy@3")]
        ))
        yield self.settle()
        data = os.urandom(70_000)
        self.successResultOf(self.two.send_group_file(
            "heru", self.two.address("team@1"), self.store_file(self.two, data)
        ))
        yield self.settle()
        for realm, user, group in ((self.one, "alice", "team"), (self.three, "cy", "team@1"),
                                   (self.two, "heru", "team@1")):
            (entry,) = self.successResultOf(
                realm.group_inbox(user, realm.address(group, "group name"))
            ).messages
            self.assertEqual(self.read(realm, user, entry), data)

    @defer.inlineCallbacks
    def test_a_file_over_the_far_realms_limit_comes_back_and_blocks_nothing(self):
        self.two.limits = attrs.evolve(self.two.limits, max_file_bytes=1000)
        heru = self.one.address("heru@2")
        sent = self.successResultOf(self.one.send_file(
            "alice", heru, self.store_file(self.one, b"y" * 5000)
        ))
        self.successResultOf(self.one.send("alice", heru, "after"))
        yield self.settle()
        self.assertEqual(
            [m.text for m in self.successResultOf(self.two.inbox("heru")).messages], ["after"]
        )
        self.assertEqual(self.stored_files(self.two), ([], []))  # nothing kept
        (failure,) = [m for m in self.successResultOf(self.one.inbox("alice")).messages
                      if m.kind == "failure"]
        self.assertEqual((failure.failed.id, failure.failed.code),
                         (sent.message.id, "file_too_large"))

    @defer.inlineCallbacks
    def test_a_link_lost_mid_file_sends_it_again_and_it_is_stored_once(self):
        data = os.urandom(2_000_000)
        self.successResultOf(self.one.send_file(
            "alice", self.one.address("heru@2"), self.store_file(self.one, data)
        ))
        pump = self.net.pumps["1", "2"]
        pump.pump()  # part of the file crosses
        pump.pump()
        self.net.cut("1", "2")
        self.assertEqual(self.successResultOf(self.two.inbox("heru")).messages, ())
        self.assertEqual(self.stored_files(self.two), ([], []))  # the part is gone
        self.net.connect("1", "2")
        yield self.settle()
        (entry,) = self.successResultOf(self.two.inbox("heru")).messages
        self.assertEqual(self.read(self.two, "heru", entry), data)
        self.assertEqual(len(self.stored_files(self.two)[0]), 1)

    @defer.inlineCallbacks
    def test_a_file_sent_twice_is_kept_once(self):
        data = b"z" * 10_000
        self.successResultOf(self.one.send_file(
            "alice", self.one.address("heru@2"), self.store_file(self.one, data)
        ))
        queue = self.net.queues["1", "2"]
        link = queue.link
        queue.detach(link)  # the answer will reach no one: sent again below
        yield self.settle()
        self.net.cut("1", "2")
        self.net.connect("1", "2")
        yield self.settle()
        self.assertEqual(len(self.successResultOf(self.two.inbox("heru")).messages), 1)
        self.assertEqual(len(self.stored_files(self.two)[0]), 1)


class LaterMemberFileTests(FileLinkTests):
    @defer.inlineCallbacks
    def test_a_member_added_later_on_another_realm_may_not_fetch_earlier_files(self):
        # The rule (policy.fetchable): the members when the file was sent.
        # The history reaches realm 2 after heru's "added", so its copy
        # must not count heru among the readers of files sent before.
        team = self.one.address("team")
        self.successResultOf(self.one.create_group("alice", team, [self.one.address("cy@3")]))
        self.successResultOf(self.one.register("bob", "pw"))
        yield self.settle()
        sent = self.successResultOf(self.one.send_group_file(
            "alice", team, self.store_file(self.one, os.urandom(1000))))
        yield self.settle()
        self.one.clock.advance(1)  # heru and bob join a second after the file
        self.successResultOf(self.one.add_members(
            "alice", team, [self.one.address("bob"), self.one.address("heru@2")]))
        yield self.settle()
        self.failureResultOf(self.one.file_for("bob", sent.message.file.id), errors.Forbidden)
        (entry,) = self.successResultOf(
            self.two.group_inbox("heru", self.two.address("team@1", "group name"))).messages
        self.failureResultOf(self.two.file_for("heru", entry.file.id), errors.Forbidden)
        # A file sent once heru is a member is heru's to fetch there.
        self.one.clock.advance(1)
        self.successResultOf(self.one.send_group_file(
            "alice", team, self.store_file(self.one, b"later")))
        yield self.settle()
        later = self.successResultOf(
            self.two.group_inbox("heru", self.two.address("team@1", "group name"))).messages[-1]
        self.assertEqual(self.read(self.two, "heru", later), b"later")
