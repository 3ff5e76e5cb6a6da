"""
Schema step 010 fills the conversation counters of a database that had
messages before it: the same counters the messages would have kept had
the step been there (unread after each user's own last message).
"""

import sqlite3

from twisted.internet import reactor
from twisted.trial import unittest

from multirealm.model import FAILURE, GROUP, MEMBER, PRIVATE, Failed, Message
from multirealm.names import Address
from multirealm.storage import schema
from multirealm.storage.store import SQLiteStore
from tests.helpers import Client, make_realm, make_store

TABLES = {
    "private_conversations": "user, peer, last_seq, read_seq, received, read",
    "group_activity": "mailbox, posts, last_seq, joined",
    # since is the join's place: a step cannot know it (it takes 0, the oldest).
    "group_markers": "user, mailbox, read_seq, read",
}


def rows(path):
    with sqlite3.connect(path) as db:
        return {
            table: sorted(db.execute(f"SELECT {columns} FROM {table}").fetchall())
            for table, columns in TABLES.items()
        }


def remote(n, kind, sender, recipient, text="hi"):
    return Message(f"r{n}", kind, sender, recipient, text, "2026-01-01T00:00:00.000+00:00")


class MigrationTests(unittest.TestCase):
    def test_step_010_fills_what_the_messages_would_have_kept(self):
        store = make_store(self)
        realm = make_realm(self, peers=("2",), store=store)
        alice, bob = Client(realm), Client(realm)
        alice.login("Alice")
        bob.login("bob")
        for line in ("send - bob one", "send - Alice note to self", "creategroup - team bob",
                     "sendgroup - team g1", "creategroup - quiet bob"):
            self.assertEqual(alice.ask(line)["status"], "OK", line)
        for line in ("send - Alice two", "send - Alice three", "sendgroup - team g2",
                     "send - heru@2 out"):
            self.assertEqual(bob.ask(line)["status"], "OK", line)
        self.assertEqual(alice.ask("send - bob four")["status"], "OK")
        self.assertEqual(bob.ask("send - Alice five")["status"], "OK")
        # From realm 2: a private message, a group of realm 2 that bob is in, a post there.
        lab = Address("Lab", "2")
        for message in [
            remote(1, PRIVATE, Address("Heru", "2"), Address("bob", "1")),
            remote(2, MEMBER, Address("heru", "2"), lab, "added bob@1"),
            remote(3, GROUP, Address("heru", "2"), lab),
            remote(4, GROUP, Address("bob", "1"), lab),
        ]:
            self.successResultOf(store.receive_message("2", message))
        # Realm 2 refuses bob's message: a failure, in bob's conversation with @2.
        (seq, out), = self.successResultOf(store.outbox_batch("2", 0, 10))[0]
        failure = Message("f1", FAILURE, Address("", "2"), Address("bob", "1"), "no",
                          out.timestamp, failed=Failed(out.id, "no_such_user"))
        self.successResultOf(store.record_failure("2", seq, failure))
        kept = rows(store.path)
        self.assertTrue(all(kept.values()), kept)
        self.successResultOf(store.stop())
        # The database as step 009 left it (the counters' tables gone), then opened again.
        with sqlite3.connect(store.path) as db:
            db.executescript(
                "DROP TABLE private_conversations; DROP TABLE group_activity;"
                " DROP TABLE group_markers; PRAGMA user_version = 9;"
                # and what the steps after 010 make, to make again
                " DROP TABLE last_seen; DROP INDEX remote_rosters_by_member;"
                " DROP INDEX members_by_folded_member;"
                " DROP TABLE locked_users; DROP TABLE deleted_groups;"
                # step 013: the timeline one table again
                " DROP VIEW timeline; INSERT INTO timeline_settled SELECT * FROM timeline_recent;"
                " DROP TABLE timeline_recent; ALTER TABLE timeline_settled RENAME TO timeline;"
            )
        again = SQLiteStore(store.path, "1", reactor, inline=True)
        again.start()
        self.addCleanup(again.stop)
        self.assertEqual(again.migrated, (9, schema.latest()))
        self.assertEqual(rows(store.path), kept)
        page, _ = self.successResultOf(again.conversations("Alice", None, 10))
        self.assertEqual(
            [(str(other), unread) for other, _, _, unread in page],
            [("bob@1", 1), ("team@1", 1), ("Alice@1", 0), ("quiet@1", 0)],
        )
