"""
Durable state: the database thread with group commit (L{batching}), on
SQLite (L{store}, the default) or PostgreSQL (L{postgres}), the SQL
(L{queries}), the numbered schema steps (L{schema}).
"""

import os

# The SQLite database of a realm, in its data directory.
DATABASE_FILE = "realm.sqlite3"


def open_store(realm_config, realm_name, reactor):
    """
    The store of realm C{realm_name}: on the PostgreSQL database its
    C{database} names, or else on SQLite in its data directory.  Opened
    (and migrated) at once; unstarted.
    """
    if realm_config.database is not None:
        from multirealm.storage.postgres import PostgresStore

        return PostgresStore(realm_config.database, realm_name, reactor)
    from multirealm.storage.store import SQLiteStore

    return SQLiteStore(os.path.join(realm_config.data_dir, DATABASE_FILE), realm_name, reactor)
