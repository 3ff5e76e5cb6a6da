"""
open_store: the engine realms.ini names for a realm (SQLite by default).
"""

import os

import attrs
from twisted.internet import reactor

from multirealm.storage import open_store
from multirealm.storage.store import SQLiteStore
from tests.storage.base import StoreTestCase


@attrs.frozen
class Realm:
    data_dir: str
    database: str = None


class OpenStoreTests(StoreTestCase):
    def test_the_engine_named(self):
        if self.engine == "sqlite":
            folder = self.mktemp()
            store = open_store(Realm(folder), "1", reactor)
            self.assertIsInstance(store, SQLiteStore)
            self.assertEqual(store.path, os.path.join(folder, "realm.sqlite3"))
        else:
            from multirealm.storage.postgres import PostgresStore

            store = open_store(Realm(self.mktemp(), self.path), "1", reactor)
            self.assertIsInstance(store, PostgresStore)
        self.assertEqual(store.realm, "1")
        self.addCleanup(store.stop)
