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
        # A copy of the database file alone (the WAL not read) comes to
        # hold the message; the store's connection never checkpoints here.
        alone = os.path.join(self.mktemp(), "copy.sqlite3")
        os.makedirs(os.path.dirname(alone))
        yield wait_for(lambda: self.in_file_alone(store.path, alone) == [("ID0001",)])
        self.assertGreater(store._checkpointer.checkpoints, 0)

    def in_file_alone(self, path, copy):
        """The message ids a copy of the database file at C{path} holds, without its WAL."""
        with open(path, "rb") as f:
            data = f.read()
        with open(copy, "wb") as f:
            f.write(data)
        db = sqlite3.connect(copy)
        try:
            return db.execute("SELECT id FROM messages").fetchall()
        except sqlite3.Error:
            return None  # not yet a database with that table
        finally:
            db.close()

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


class FailingCheckpointsTests(unittest.TestCase):
    def test_a_lasting_failure_is_said_once_until_a_checkpoint_succeeds(self):
        from twisted.logger import globalLogPublisher

        said = []
        observer = said.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        outcomes = iter([False, False, False, True, False, False])
        ticks = iter(range(100))
        checkpointer = checkpoints.Checkpointer("realm.sqlite3", "1", lambda: next(ticks), 0)

        class Database:
            def execute(self, sql):
                ok = next(outcomes, None)
                if ok is None:
                    checkpointer._stopping.set()
                    return self
                if not ok:
                    raise sqlite3.OperationalError("disk I/O error")
                return self

            def fetchall(self):
                return []

            def close(self):
                pass

        checkpointer._run(Database())
        warned = [e for e in said if "checkpoints of" in e.get("log_format", "")]
        self.assertEqual(len(warned), 2)
        self.assertEqual(checkpointer.checkpoints, 2)  # the success, and the last call
