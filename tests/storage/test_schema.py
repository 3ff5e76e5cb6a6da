"""
Schema migrations: numbered steps, applied in order at start; an old
database migrates and keeps everything; a newer one is refused.  The
snapshot (schema/current.sql) is exactly what the steps make.
"""

import os
import re
import sqlite3
from importlib import resources

from twisted.internet import defer, reactor
from twisted.trial import unittest

from multirealm import errors
from multirealm.model import user_mailbox
from multirealm.names import Address
from multirealm.storage import schema
from multirealm.storage.store import SQLiteStore


def version(path):
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


class MigrationTests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")
        os.makedirs(os.path.dirname(self.path))

    def open(self):
        store = SQLiteStore(self.path, "1", reactor)
        store.start()
        self.addCleanup(store.stop)
        return store

    def make_release_1_database(self):
        """A database as the first release left it, with a user and a message."""
        db = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(db.close)
        self.assertEqual(schema.migrate(db, self.path, up_to=1), (0, 1))
        db.executescript(
            """
            INSERT INTO users VALUES ('alice', 'h', 't'), ('heru', 'h', 't');
            INSERT INTO messages (seq, id, kind, sender, recipient, body, timestamp)
                VALUES (1, '0123456789abcdef0123456789abcdef', 'private', 'alice@1',
                        'heru@1', 'from release 1', '2026-01-01T00:00:00.000+00:00');
            INSERT INTO mailboxes VALUES (1, 'user:alice@1'), (2, 'user:heru@1');
            INSERT INTO timeline VALUES (1, 1), (2, 1);
            INSERT INTO groups VALUES ('team', 'alice@1', 't');
            INSERT INTO members VALUES ('team', 'alice@1'), ('team', 'bob@2'),
                                       ('team', 'cy@2'), ('team', 'dee@3');
            """
        )
        db.close()

    def test_steps_are_numbered_from_one(self):
        numbers = [number for number, _ in schema.steps()]
        self.assertEqual(numbers, list(range(1, len(numbers) + 1)))
        self.assertGreaterEqual(schema.latest(), 2)

    def test_a_new_database_gets_every_step(self):
        store = self.open()
        self.assertEqual(store.migrated, (0, schema.latest()))
        self.assertEqual(version(self.path), schema.latest())

    @defer.inlineCallbacks
    def test_a_release_1_database_migrates_and_keeps_its_messages(self):
        self.make_release_1_database()
        store = self.open()
        self.assertEqual(store.migrated, (1, schema.latest()))
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        (old,) = history.messages
        self.assertEqual((old.id, old.text, old.file), ("0123456789abcdef0123456789abcdef",
                                                        "from release 1", None))
        # It was minted here: a peer reusing its id does not collide with it.
        origin = yield store.submit(
            lambda db: db.execute("SELECT origin FROM messages").fetchall(), writes=False
        )
        self.assertEqual(origin, [("1",)])
        # Step 3 counted each group's members by realm.
        realms = yield store.submit(
            lambda db: db.execute("SELECT * FROM group_realms ORDER BY realm").fetchall(),
            writes=False,
        )
        self.assertEqual(realms, [("team", "1", 1), ("team", "2", 2), ("team", "3", 1)])
        # Opening again does nothing more.
        yield store.stop()
        self.assertEqual(self.open().migrated, (schema.latest(), schema.latest()))

    @defer.inlineCallbacks
    def test_old_names_that_differ_only_in_case_stay_apart(self):
        db = sqlite3.connect(self.path, isolation_level=None)
        schema.migrate(db, self.path, up_to=1)
        db.executescript(
            """
            INSERT INTO users VALUES ('alice', 'h', 't'), ('Alice', 'h', 't'), ('..', 'h', 't');
            INSERT INTO groups VALUES ('team', 'alice@1', 't'), ('Team', 'Alice@1', 't');
            INSERT INTO members VALUES ('team', 'alice@1'), ('Team', 'Alice@1');
            """
        )
        db.close()
        store = self.open()
        # Each keeps its members: no group is merged into another.
        yield self.assertFailure(
            store.group_history("Team", Address("alice", "1"), None, 10, 10**6),
            errors.NotAMember,
        )
        yield store.group_history("team", Address("alice", "1"), None, 10, 10**6)
        yield store.group_history("Team", Address("Alice", "1"), None, 10, 10**6)
        # An old name that the new rule would refuse still logs in.
        self.assertEqual((yield store.password_hash("..")), ("..", "h"))

    def test_a_newer_database_is_refused(self):
        with sqlite3.connect(self.path) as db:
            db.execute("PRAGMA user_version = 999")
        with self.assertRaises(schema.SchemaError) as caught:
            SQLiteStore(self.path, "1", reactor)
        self.assertIn(self.path, str(caught.exception))
        self.assertIn("999", str(caught.exception))

    def test_a_failing_step_leaves_the_database_at_the_last_good_step(self):
        broken = [schema.steps()[0], (2, "CREATE TABLE half (a); INSERT INTO nowhere VALUES (1);")]
        self.patch(schema, "steps", lambda: broken)
        db = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(db.close)
        self.assertRaises(sqlite3.OperationalError, schema.migrate, db, self.path)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 1)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        self.assertNotIn("half", tables)


def shape(db):
    """
    All that a schema decides, read back from SQLite: the user_version;
    per table its columns (name, declared type, not null, default, place
    in the key), whether it has a rowid, the collations it names, and
    each index (unique, how it was made, partial, its key columns with
    order and collation, the condition of a partial one); views and
    triggers as written.  Automatic indexes are named by their columns
    (SQLite numbers them by the table's history).
    """

    def plain(sql):
        return " ".join(re.sub(r"--[^\n]*", "", sql).split()).lower()

    tables, others = {}, set()
    for kind, name, sql in db.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall():
        if kind == "index":
            continue
        if kind != "table":
            others.add((kind, name, plain(sql)))
            continue
        indexes = {}
        for _, index, unique, made, partial in db.execute(f'PRAGMA index_list("{name}")'):
            key = tuple(db.execute(f'PRAGMA index_xinfo("{index}")').fetchall())
            condition = None
            if partial:
                (index_sql,) = db.execute(
                    "SELECT sql FROM sqlite_master WHERE name = ?", (index,)
                ).fetchone()
                condition = plain(index_sql).partition(" where ")[2]
            label = index if made == "c" else (made, key)
            indexes[label] = (unique, made, partial, key, condition)
        tables[name] = (
            db.execute(f'PRAGMA table_xinfo("{name}")').fetchall(),
            db.execute(
                "SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?",
                (name,),
            ).fetchall(),
            sorted(re.findall(r"collate\s+(\w+)", plain(sql))),
            indexes,
        )
    return db.execute("PRAGMA user_version").fetchone()[0], tables, others


class SnapshotTests(unittest.TestCase):
    def connect(self):
        db = sqlite3.connect(":memory:", isolation_level=None)
        self.addCleanup(db.close)
        return db

    def stepped(self):
        db = self.connect()
        schema.migrate(db, ":memory:")
        return shape(db)

    def snapshot(self):
        db = self.connect()
        db.executescript(resources.files(schema).joinpath("current.sql").read_text("utf-8"))
        return shape(db)

    def test_the_steps_make_exactly_the_snapshot(self):
        self.assertEqual(self.snapshot(), self.stepped())

    def test_a_step_the_snapshot_lacks_is_seen(self):
        steps = schema.steps()
        for change in (
            "CREATE INDEX users_by_created ON users (created);",
            "ALTER TABLE users ADD COLUMN nick TEXT;",
            "DROP INDEX messages_by_file;"
            " CREATE INDEX messages_by_file ON messages (file_id) WHERE file_id IS NULL;",
            "DROP INDEX users_by_folded_name;"
            " CREATE INDEX users_by_folded_name ON users (name COLLATE RTRIM);",
        ):
            self.patch(schema, "steps", lambda: steps + [(len(steps) + 1, change)])
            stepped = self.stepped()
            self.patch(schema, "steps", lambda: steps)
            self.assertNotEqual(stepped[1], self.snapshot()[1], change)
