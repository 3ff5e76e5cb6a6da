"""
What only the PostgreSQL engine does: OK means committed, a lost
connection is made again, a full disk is a clean error, several stores
(processes) on one database write one at a time, and its schema is
SQLite's.
"""

import sqlite3
import threading

from twisted.internet import defer, reactor, task, threads
from twisted.logger import globalLogPublisher

from multirealm import errors
from multirealm.model import user_mailbox
from multirealm.names import Address
from multirealm.storage import pg_schema, schema
from tests.storage.base import StoreTestCase, message


def backend_pid(db):
    return db.execute("SELECT pg_backend_pid()").fetchone()[0]


class PostgresTestCase(StoreTestCase):
    engine = "postgres"

    def admin(self, sql, *args):
        """Run C{sql} on a connection of its own; its rows."""
        import psycopg

        with psycopg.connect(self.path, autocommit=True) as db:
            cursor = db.execute(sql, args)
            return cursor.fetchall() if cursor.description else None

    @defer.inlineCallbacks
    def until(self, condition):
        """Wait (polling, bounded by the test's timeout) until C{condition()} is true."""
        while not (yield threads.deferToThread(condition)):
            yield task.deferLater(reactor, 0.01, lambda: None)


class ConnectionTests(PostgresTestCase):
    @defer.inlineCallbacks
    def test_ok_means_committed(self):
        durability = yield self.open().durability()
        self.assertEqual(durability, {"synchronous_commit": "on"})

    @defer.inlineCallbacks
    def test_a_connection_lost_between_batches_is_made_again(self):
        store = self.open()
        yield self.populate(store)
        pid = yield store.submit(backend_pid, writes=False)
        self.admin("SELECT pg_terminate_backend(%s)", pid)
        yield store.add_private_message(message(1))
        self.assertNotEqual((yield store.submit(backend_pid, writes=False)), pid)
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual(history.messages, (message(1),))

    @defer.inlineCallbacks
    def test_a_connection_lost_in_a_batch_fails_it_cleanly_and_the_next_goes_on(self):
        store = self.open()
        yield self.populate(store)
        said = []
        observer = lambda event: said.append(event) if "lost" in event.get("log_format", "") else None
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        def killed(db):
            db.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        # One batch: what ran before the loss is gone with it.
        before = store.add_private_message(message(1))
        broken = store.submit(killed, writes=False)
        for d in (before, broken):
            yield self.assertFailure(d, errors.Unavailable)
        self.assertEqual(len(said), 1)
        yield store.add_private_message(message(2))
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual(history.messages, (message(2),))

    @defer.inlineCallbacks
    def test_a_batch_postgresql_rolled_back_is_never_answered_ok(self):
        import psycopg

        store = self.open()
        yield self.populate(store)

        def swallowed(db):
            try:
                db.execute("SELECT no_such_column FROM users")
            except psycopg.Error:
                pass  # the transaction is in error: its COMMIT is a rollback

        # One batch, with the silent error in it.
        before = store.add_private_message(message(1))
        broken = store.submit(swallowed)
        for d in (before, broken):
            yield self.assertFailure(d, errors.Unavailable)
        history = yield store.history(user_mailbox(Address("heru", "1")), None, 10)
        self.assertEqual(history.messages, ())

    @defer.inlineCallbacks
    def test_a_full_disk_is_storage_full_said_once(self):
        from psycopg import errors as pg_errors

        store = self.open()
        said = []
        observer = lambda event: said.append(event) if "is full" in event.get("log_format", "") else None
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        def full(db):
            raise pg_errors.DiskFull("could not extend file: No space left on device")

        for _ in range(2):
            yield self.assertFailure(store.submit(full), errors.StorageFull)
        self.assertEqual(len(said), 1)

    def test_an_unreachable_database_is_one_clear_error(self):
        import psycopg

        url = psycopg.conninfo.make_conninfo(self.path, port="1", connect_timeout="2")
        from multirealm.storage.postgres import PostgresStore

        caught = self.assertRaises(ConnectionError, PostgresStore, url, "1", reactor)
        self.assertIn("cannot use PostgreSQL", str(caught))
        self.assertNotIn("\n", str(caught))


class ProcessesTests(PostgresTestCase):
    """Two stores on one database, as two processes of one realm."""

    def two(self):
        first = self.open()
        return first, self.open()

    @defer.inlineCallbacks
    def test_a_writing_batch_waits_for_the_realms_lock(self):
        import psycopg

        store, other = self.two()
        yield self.populate(store)
        holder = psycopg.connect(self.path, autocommit=True)
        self.addCleanup(holder.close)
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (pg_schema.lock_key("write", "1"),))
        sent = store.add_private_message(message(1))
        yield self.until(lambda: self.admin(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'multirealm realm 1'"
            " AND wait_event_type = 'Lock'"
        ))
        # Another process's reads take no lock: they pass.
        self.assertEqual((yield other.list_users()), ["alice", "heru"])
        self.assertNoResult(sent)
        holder.execute("COMMIT")
        yield sent

    @defer.inlineCallbacks
    def test_a_writer_stalled_holding_the_lock_makes_the_others_unavailable_not_stuck(self):
        from multirealm.storage.postgres import PostgresStore

        self.patch(PostgresStore, "LOCK_WAIT", "1s")
        stalled, other = self.two()
        yield self.populate(other)
        go_on = threading.Event()
        self.addCleanup(go_on.set)

        def stall(db):  # a process stopped (SIGSTOP) in the middle of a batch
            go_on.wait(20)

        held = stalled.submit(stall)
        yield self.until(lambda: self.admin(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"))
        # The other process's write waits LOCK_WAIT, then says so: no one waits for ever.
        yield self.assertFailure(other.add_private_message(message(1)), errors.Unavailable)
        go_on.set()
        yield held
        yield other.add_private_message(message(2))  # and it goes on once the lock is free
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_two_stores_writing_at_once_keep_order_counts_and_exactly_once(self):
        a, b = self.two()
        yield self.populate(a)
        sent = {a: [], b: []}
        received = []
        for turn in range(20):
            for store, sender in ((a, "alice"), (b, "heru")):
                for k in range(5):
                    n = len(sent[a]) + len(sent[b]) + 1
                    m = message(n, sender=sender, recipient="heru" if sender == "alice" else "alice")
                    sent[store].append((m.id, store.add_private_message(m)))
            # The same frame handed over to both processes.
            frame = message(1000 + turn, sender="zed", recipient="alice", sender_realm="3")
            received += [a.receive_message("3", frame), b.receive_message("3", frame)]
            yield task.deferLater(reactor, 0, lambda: None)  # batches of many turns
        for store in (a, b):
            yield defer.gatherResults([d for _, d in sent[store]])
        deliveries = yield defer.gatherResults(received)
        self.assertEqual(
            [sorted(d.duplicate for d in deliveries[i:i + 2]) for i in range(0, 40, 2)],
            [[False, True]] * 20,
        )
        rows = yield a.submit(lambda db: db.execute(
            "SELECT id, seq FROM messages ORDER BY seq"
        ).fetchall(), writes=False)
        self.assertEqual(len(rows), 220)
        seqs = dict(rows)
        for store in (a, b):  # each process's messages in the order it was asked
            ordered = [seqs[i] for i, _ in sent[store]]
            self.assertEqual(ordered, sorted(ordered))
        counts = yield a.submit(lambda db: db.execute(
            'SELECT "user", peer, received, last_seq FROM private_conversations ORDER BY 1, 2'
        ).fetchall(), writes=False)
        self.assertEqual(counts, [
            ("alice", "heru@1", 100, max(seqs[i] for i, _ in sent[a] + sent[b])),
            ("alice", "zed@3", 20, max(seqs[f"ID{1000 + t:04d}"] for t in range(20))),
            ("heru", "alice@1", 100, max(seqs[i] for i, _ in sent[a] + sent[b])),
        ])


class ReadOnlyBatchTests(PostgresTestCase):
    @defer.inlineCallbacks
    def test_a_batch_that_only_reads_sees_one_snapshot(self):
        store = self.open()
        yield store.create_user("alice", "h", "t")

        def count_twice(db):
            first = db.execute("SELECT count(*) FROM users").fetchone()[0]
            self.admin("INSERT INTO users VALUES ('bob', 'h', 't')")  # another process
            return first, db.execute("SELECT count(*) FROM users").fetchone()[0]

        self.assertEqual((yield store.submit(count_twice, writes=False)), (1, 1))
        self.assertEqual((yield store.list_users()), ["alice", "bob"])


class SchemaTests(PostgresTestCase):
    """Both engines have the same tables, columns, keys and index names."""

    # SQLite's own rowid of users is a column in PostgreSQL.
    POSTGRES_ONLY = {("users", "rowid"), ("schema_version", "version")}

    def sqlite_shape(self):
        db = sqlite3.connect(":memory:", isolation_level=None)
        schema.migrate(db, ":memory:", realm="1")
        shape = {}
        for (table,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ):
            info = db.execute(f"PRAGMA table_info({table})").fetchall()
            uniques = set()
            indexes = set()
            for _, name, unique, origin, _ in db.execute(f"PRAGMA index_list({table})"):
                columns = tuple(r[2] for r in db.execute(f"PRAGMA index_info({name})"))
                if origin == "u":
                    uniques.add(columns)
                elif origin == "c":
                    indexes.add(name)
            shape[table] = {
                "columns": [row[1] for row in info],
                "primary key": tuple(row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]),
                "unique": uniques,
                "indexes": indexes,
            }
        db.close()
        return shape

    def postgres_shape(self):
        shape = {}
        for (table,) in self.admin(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ):
            columns = [name for (name,) in self.admin(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                " ORDER BY ordinal_position", table,
            ) if (table, name) not in self.POSTGRES_ONLY]
            uniques = set()
            indexes = set()
            primary = ()
            for name, unique, is_primary, keys in self.admin(
                "SELECT c.relname, i.indisunique, i.indisprimary,"
                " array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = %s::regclass", table,
            ):
                if is_primary:
                    primary = tuple(keys)
                elif unique and not any((table, k) in self.POSTGRES_ONLY for k in keys):
                    uniques.add(tuple(keys))
                elif not unique:
                    indexes.add(name)
            if columns:
                shape[table] = {
                    "columns": columns, "primary key": primary, "unique": uniques,
                    "indexes": indexes,
                }
        return shape

    def test_the_engines_schemas_are_the_same(self):
        self.open(start=False)  # the schema made
        self.assertEqual(self.postgres_shape(), self.sqlite_shape())

    def test_a_newer_database_is_refused(self):
        from multirealm.storage.postgres import PostgresStore

        self.open(start=False)
        self.admin("UPDATE schema_version SET version = version + 1")
        self.addCleanup(self.admin, "UPDATE schema_version SET version = version - 1")
        caught = self.assertRaises(schema.SchemaError, PostgresStore, self.path, "1", reactor)
        self.assertIn("newer than this code knows", str(caught))

    def fresh_database(self, suffix):
        """(name, URL) of a new empty database beside the test's, dropped after the test."""
        import psycopg

        name = f"{psycopg.conninfo.conninfo_to_dict(self.path)['dbname']}_{suffix}"
        self.admin(f"DROP DATABASE IF EXISTS {name}")
        self.admin(f"CREATE DATABASE {name}")
        self.addCleanup(self.admin, f"DROP DATABASE {name} WITH (FORCE)")
        return name, psycopg.conninfo.make_conninfo(self.path, dbname=name)

    def test_processes_starting_together_migrate_once(self):
        import psycopg

        name, url = self.fresh_database("fresh")
        results = []

        def start():
            with psycopg.connect(url, autocommit=True) as db:
                results.append(pg_schema.migrate(db, name, "1"))

        started = [threading.Thread(target=start) for _ in range(3)]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
        latest = schema.latest()
        self.assertEqual(sorted(results), [(0, latest), (latest, latest), (latest, latest)])

    def test_step_013_keeps_the_timeline_and_makes_the_current_schema(self):
        import psycopg

        name, url = self.fresh_database("step13")
        with psycopg.connect(url, autocommit=True) as db:
            pg_schema.migrate(db, name, "1")
            made = self.tables_and_indexes(db)
            # The database as step 012 left it: one timeline table, two rows.
            db.execute(
                "DROP VIEW timeline; DROP TABLE timeline_recent;"
                " ALTER TABLE timeline_settled RENAME TO timeline;"
                " ALTER INDEX timeline_settled_pkey RENAME TO timeline_pkey;"
                " INSERT INTO timeline VALUES (1, 1), (2, 1);"
                " UPDATE schema_version SET version = 12"
            )
            self.assertEqual(pg_schema.migrate(db, name, "1"), (12, schema.latest()))
            self.assertEqual(
                db.execute("SELECT mailbox, seq FROM timeline ORDER BY mailbox").fetchall(),
                [(1, 1), (2, 1)],
            )
            self.assertEqual(self.tables_and_indexes(db), made)

    def tables_and_indexes(self, db):
        return sorted(db.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).fetchall())
