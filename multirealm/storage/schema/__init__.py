"""
Schema migrations: numbered steps applied in order at start, the shape of
Synapse's C{schema/delta/NN}.

Each step is a file C{NNN_what.sql} in this folder.  The database's
C{PRAGMA user_version} is the number of the last step applied.  At start,
L{migrate} applies every later step, each in a transaction of its own with
the new version, so a crash mid-way leaves the database at the last step
that completed.  A database of a later version than this code knows is
refused: running old code on it could lose data.

A new step is a new file with the next number; a released step is never
edited.  C{current.sql} beside them is the whole schema the steps make,
to be read in one place; a test keeps it exactly so, and a new step
updates it in the same commit.

A PostgreSQL store (L{multirealm.storage.pg_schema}) has the same
versions: a new database gets C{postgres/current.sql} (the latest version, the
whole schema in PostgreSQL's words) at once.  So a new step NNN (013 on)
is two files: C{NNN_what.sql} here and C{postgres/NNN_what.sql}, the same
change for PostgreSQL (applied to databases made before it), and it
updates both C{current.sql} files; a test keeps the two engines' tables,
columns, keys and indexes the same.
"""

import re
from importlib import resources


class SchemaError(Exception):
    """The database cannot be used by this code; the message says why."""


_STEP_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")


def steps():
    """[(number, sql text)] of every step, in order; numbers run 1, 2, 3 ..."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _STEP_NAME.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [number for number, _ in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"schema steps are not numbered 1..N: {[n for n, _ in found]}")
    return found


def latest():
    return len(steps())


def migrate(db, path, up_to=None, realm=None):
    """
    Bring the database C{db} (an sqlite3 connection in autocommit mode) up
    to step C{up_to} (default: the latest).  Returns (from, to) versions.
    A step that fills a table from the rows already there reads the name
    of the database's realm, C{realm}, from C{temp.this_realm}.

    @raise SchemaError: the database is newer than this code.
    """
    all_steps = steps()
    target = len(all_steps) if up_to is None else up_to
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(all_steps):
        raise SchemaError(
            f"{path}: the database is at schema version {version}, newer than this"
            f" code knows ({len(all_steps)}): run a newer multirealm"
        )
    db.execute("CREATE TEMP TABLE IF NOT EXISTS this_realm (name TEXT)")
    db.execute("DELETE FROM temp.this_realm")
    db.execute("INSERT INTO temp.this_realm VALUES (?)", (realm,))
    for number, sql in all_steps[version:target]:
        # executescript runs the step and the version bump as one transaction.
        try:
            db.executescript(f"BEGIN; {sql}\nPRAGMA user_version = {number}; COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return version, max(version, target)
