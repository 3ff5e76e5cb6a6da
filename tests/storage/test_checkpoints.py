"""
SQLite's WAL copied back into the database on a thread of its own
(L{multirealm.storage.checkpoints.Checkpointer}), not by the commits.
"""

import os
import sqlite3
import time

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from multirealm.storage import checkpoints
from multirealm.storage.store import SQLiteStore
from tests.storage.base import message


def wait_for(condition, seconds=10.0):
    """Fires once C{condition()} holds (checked every 10 ms); fails after C{seconds}."""
    deadline = time.monotonic() + seconds

    def check():
        if condition():
            return None
        if time.monotonic() > deadline:
            raise AssertionError(f"not so after {seconds} s")
        return task.deferLater(reactor, 0.01, check)

    return task.deferLater(reactor, 0, check)


class CheckpointerTests(unittest.TestCase):
    def store(self):
        path = os.path.join(self.mktemp(), "realm.sqlite3")
        store = SQLiteStore(path, "1", reactor)
        store._checkpointer._every = 0.01
        store.start()
        self.addCleanup(lambda: store._thread and store.stop())
        return store

    @defer.inlineCallbacks
    def test_the_commits_pages_reach_the_database_file_without_the_store_checkpointing(self):
        store = self.store()
        self.assertEqual(
            (yield store.submit(
                lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0], writes=False)),
            checkpoints.SAFETY_PAGES,
        )
        yield store.create_user("alice", "h", "t")
        yield store.create_user("heru", "h", "t")
        yield store.add_private_message(message(1))
        yield wait_for(lambda: store._checkpointer.checkpoints > 0)
        # Another reader of the database file alone (the WAL not read): the
        # message is there.
        with open(store.path, "rb") as f:
            copy = f.read()
        alone = os.path.join(self.mktemp(), "copy.sqlite3")
        os.makedirs(os.path.dirname(alone))
        with open(alone, "wb") as f:
            f.write(copy)
        db = sqlite3.connect(alone)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT id FROM messages").fetchall(), [("ID0001",)])

    @defer.inlineCallbacks
    def test_an_idle_store_is_not_checkpointed(self):
        store = self.store()
        yield store.create_user("alice", "h", "t")
        yield wait_for(lambda: store._checkpointer.checkpoints > 0)
        before = store._checkpointer.checkpoints
        yield task.deferLater(reactor, 0.1, lambda: None)  # ten looks
        self.assertEqual(store._checkpointer.checkpoints, before)

    @defer.inlineCallbacks
    def test_stopping_the_store_stops_the_thread_and_removes_the_wal(self):
        store = self.store()
        yield store.create_user("alice", "h", "t")
        thread = store._checkpointer._thread
        yield store.stop()
        self.assertFalse(thread.is_alive())
        self.assertFalse(os.path.exists(store.path + "-wal"))

    def test_a_store_used_inline_has_no_checkpointer(self):
        store = SQLiteStore(os.path.join(self.mktemp(), "realm.sqlite3"), "1", reactor,
                            inline=True)
        self.addCleanup(store.stop)
        self.assertIsNone(store._checkpointer)
