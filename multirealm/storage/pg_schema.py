"""
The schema of a PostgreSQL store: the same versions as SQLite's steps
(L{multirealm.storage.schema}), kept in the one-row table
C{schema_version}.  A new database gets the whole current schema at once
(C{schema/postgres/current.sql}); a later step NNN (013 on) adds
C{schema/postgres/NNN_what.sql} beside the SQLite one, applied here in
order, each in a transaction with its version.

Processes of one realm start together: migration runs under a session
advisory lock, so one migrates and the others wait, then find it done.
"""

import hashlib
import re
from importlib import resources

from multirealm.storage import schema
from multirealm.storage.schema import SchemaError

_STEP_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")


def lock_key(purpose, realm):
    """A 64-bit advisory lock key of C{purpose} for C{realm}'s database."""
    digest = hashlib.sha256(f"multirealm {purpose} {realm}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _files():
    return resources.files(schema.__name__).joinpath("postgres")


def current_sql():
    return _files().joinpath("current.sql").read_text(encoding="utf-8")


def steps():
    """{number: sql text} of the PostgreSQL steps after the current schema's first release."""
    found = {}
    for entry in _files().iterdir():
        match = _STEP_NAME.fullmatch(entry.name)
        if match:
            found[int(match.group(1))] = entry.read_text(encoding="utf-8")
    return found


def migrate(connection, where, realm):
    """
    Bring the database of C{connection} (psycopg, autocommit) to
    L{schema.latest}; (from, to) versions, 0 for a new database.

    @raise SchemaError: the database is newer than this code, or a step
        has no PostgreSQL file.
    """
    latest = schema.latest()
    key = lock_key("migrate", realm)
    connection.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        made = connection.execute("SELECT to_regclass('schema_version')").fetchone()[0]
        if made is None:
            with connection.transaction():
                connection.execute(current_sql())
                connection.execute("INSERT INTO schema_version VALUES (%s)", (latest,))
            return 0, latest
        version = connection.execute("SELECT version FROM schema_version").fetchone()[0]
        if version > latest:
            raise SchemaError(
                f"{where}: the database is at schema version {version}, newer than this"
                f" code knows ({latest}): run a newer multirealm"
            )
        later = steps()
        for number in range(version + 1, latest + 1):
            if number not in later:
                raise SchemaError(f"schema step {number} has no PostgreSQL file")
            with connection.transaction():
                connection.execute(later[number])
                connection.execute("UPDATE schema_version SET version = %s", (number,))
        return version, latest
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
