"""
What the store tests share: one place that opens a store, on either
engine, and messages to store.

Every test class made from L{StoreTestCase} runs on both engines: the
class itself on SQLite, and a twin made beside it in its module,
C{Postgres<Name>}, on PostgreSQL, skipped when C{MULTIREALM_TEST_POSTGRES}
(a conninfo of a superuser's database; CI always sets it) is unset.  A
test that says something of one engine only is marked L{sqlite_only} or
L{postgres_only}.

The PostgreSQL tests of one process share one database
(C{<prefix>_<pid>}: trial -j runs several processes; the prefix is
C{MULTIREALM_TEST_DB_PREFIX}, default C{multirealm_test}), made at the
first test and dropped at exit; every test starts with its tables
emptied and its identities restarted, as a new SQLite file.
"""

import atexit
import functools
import os
import sqlite3
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from multirealm import errors
from multirealm.model import PRIVATE, Message
from multirealm.names import Address
from multirealm.storage.store import SQLiteStore

POSTGRES = os.environ.get("MULTIREALM_TEST_POSTGRES")
NO_POSTGRES = "MULTIREALM_TEST_POSTGRES is unset: no PostgreSQL to test on"


def message(n, sender="alice", recipient="heru", kind=PRIVATE, realm="1", sender_realm="1"):
    return Message(
        id=f"ID{n:04d}",
        kind=kind,
        sender=Address(sender, sender_realm),
        recipient=Address(recipient, realm),
        text=f"text {n}",
        timestamp="2026-01-01T00:00:00.000+00:00",
    )


def refuse_late(db):
    """
    An operation that refuses after it changed a row: its batch runs again
    with each operation in a savepoint, and this one is undone alone.
    """
    db.execute("INSERT INTO users VALUES ('ghost', 'h', 't')")
    raise errors.UserExists("too late to refuse cleanly")


def counts(pending):
    """{realm: messages waiting} of L{SQLiteStore.pending_counts}."""
    return {realm: count for realm, (count, _oldest) in pending.items()}


class _TestDatabase:
    """This process's PostgreSQL test database, made once."""

    url = None

    @classmethod
    def empty(cls):
        """The URL of the database, every table emptied."""
        import psycopg

        if cls.url is None:
            name = f"{os.environ.get('MULTIREALM_TEST_DB_PREFIX', 'multirealm_test')}_{os.getpid()}"
            with psycopg.connect(POSTGRES, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                admin.execute(f"CREATE DATABASE {name}")
            atexit.register(cls._drop, name)
            cls.url = psycopg.conninfo.make_conninfo(POSTGRES, dbname=name)
        # DELETE, not TRUNCATE: a quarter of the time on tables this small.
        with psycopg.connect(cls.url, autocommit=True) as db, db.transaction():
            for (table,) in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename != 'schema_version'"
            ).fetchall():
                db.execute(f"DELETE FROM {table}")
            db.execute(
                "SELECT setval(pg_get_serial_sequence(table_name, column_name), 1, false)"
                " FROM information_schema.columns WHERE table_schema = 'public'"
                " AND is_identity = 'YES'"
            )
        return cls.url

    @staticmethod
    def _drop(name):
        import psycopg

        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sqlite_only(test):
    """A test of what only the SQLite engine does (its file, its locks)."""
    return _only("sqlite", test)


def postgres_only(test):
    """A test of what only the PostgreSQL engine does."""
    return _only("postgres", test)


def _only(engine, test):
    @functools.wraps(test)
    def run(self, *args, **kwargs):
        if self.engine != engine:
            raise unittest.SkipTest(f"of the {engine} engine only")
        return test(self, *args, **kwargs)
    return run


class StoreTestCase(unittest.TestCase):
    engine = "sqlite"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.engine == "postgres":  # a twin, or of PostgreSQL only
            if POSTGRES is None:
                cls.skip = NO_POSTGRES
            return
        twin = type(f"Postgres{cls.__name__}", (cls,), {
            "engine": "postgres", "__module__": cls.__module__,
            "__qualname__": f"Postgres{cls.__qualname__}",
        })
        setattr(sys.modules[cls.__module__], twin.__name__, twin)

    def setUp(self):
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")
        if self.engine == "postgres":
            self.path = _TestDatabase.empty()

    def make_store(self, realm="1", inline=False):
        """An unstarted store of the engine on the test's database (a SQLite file's path)."""
        if self.engine == "postgres":
            from multirealm.storage.postgres import PostgresStore

            return PostgresStore(self.path, realm, reactor, inline=inline)
        return SQLiteStore(self.path, realm, reactor, inline=inline)

    def open(self, start=True, inline=False):
        store = self.make_store(inline=inline)
        if start:
            store.start()
        self.addCleanup(store.stop)
        return store

    def sql(self, statement, *rows):
        """Run C{statement} (once, or once per row) on the database, not through a store."""
        if self.engine == "postgres":
            import psycopg

            from multirealm.storage.pg_sql import translate

            with psycopg.connect(self.path, autocommit=True) as db:
                if rows:
                    db.cursor().executemany(translate(statement), rows)
                else:
                    db.execute(statement)
            return
        with sqlite3.connect(self.path) as db:
            if rows:
                db.executemany(statement, rows)
            else:
                db.executescript(statement)
        db.close()

    def populate_inline_free(self, store):
        """Add alice and heru before the store's thread starts."""
        return defer.gatherResults(
            [store.create_user("alice", "h", "t"), store.create_user("heru", "h", "t")]
        )

    @defer.inlineCallbacks
    def populate(self, store):
        yield store.create_user("alice", "hash-a", "t")
        yield store.create_user("heru", "hash-h", "t")
