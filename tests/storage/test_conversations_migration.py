"""
Schema step 006 fills the conversations of an existing database from its
messages and memberships, once, at start: what it makes is what the
bookkeeping of each message would have made, a user's marker being their
own last message in each conversation.
"""

import os
import sqlite3

from twisted.internet import reactor
from twisted.trial import unittest

from multirealm.storage.store import SQLiteStore
from tests.helpers import InMemoryNetwork


class ConversationsMigrationTests(unittest.TestCase):
    def setUp(self):
        self.net = InMemoryNetwork.of_three_users(self)
        self.one, self.two = self.net.realms["1"], self.net.realms["2"]
        for user in ("bob", "dee"):
            self.successResultOf(self.one.register(user, "pw"))

    def rows(self, realm, user):
        conversations, _ = self.successResultOf(realm.conversations(user))
        return sorted(
            (c.other.relative_to(realm.name), c.kind, c.unread, c.last and c.last.id)
            for c in conversations
        )

    def as_before_step_6(self, realm):
        """Reopen C{realm}'s database after taking it back to step 5: step 6 runs again."""
        store = realm._store
        path = store.path
        self.successResultOf(store.stop())
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript(
            "DROP TABLE conversations; DROP INDEX messages_by_pair; PRAGMA user_version = 5;"
        )
        db.close()
        again = SQLiteStore(path, realm.name, reactor, inline=True)
        self.assertEqual(again.migrated, (5, 6))
        again.start()
        self.addCleanup(again.stop)
        realm._store = again

    def test_an_old_database_gets_the_conversations_its_messages_make(self):
        one, two = self.one, self.two
        send = lambda realm, user, to, text: self.successResultOf(
            realm.send(user, realm.address(to), text))
        send(one, "alice", "bob", "hi bob")
        send(one, "bob", "alice", "hi alice")
        send(one, "bob", "alice", "again")
        send(one, "alice", "alice", "note")
        send(one, "alice", "heru@2", "to heru")
        send(one, "alice", "nobody@2", "lost")  # comes back as a failure
        self.net.flush()
        send(two, "heru", "alice@1", "from heru")
        self.net.flush()
        team, quiet = one.address("team"), one.address("quiet")
        self.successResultOf(one.create_group(
            "alice", team, [one.address("bob"), one.address("heru@2")]))
        self.successResultOf(one.create_group("bob", quiet, [one.address("dee")]))
        self.net.flush()
        self.successResultOf(one.send_group("bob", team, "team 1"))
        self.successResultOf(one.send_group("alice", team, "team 2"))
        self.successResultOf(one.send_group("bob", team, "team 3"))
        self.net.flush()
        self.successResultOf(two.send_group("heru", two.address("team@1"), "heru in team"))
        self.net.flush()
        users = {one: ("alice", "bob", "dee"), two: ("heru",)}
        before = {(realm.name, u): self.rows(realm, u) for realm, us in users.items() for u in us}
        self.assertEqual(len(before["1", "alice"]), 5)  # bob, herself, heru@2, nobody@2, team
        for realm in users:
            self.as_before_step_6(realm)
        after = {(realm.name, u): self.rows(realm, u) for realm, us in users.items() for u in us}
        self.assertEqual(after, before)
