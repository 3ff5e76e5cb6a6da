"""
The durable store on SQLite: L{SQLiteStore}, the default engine of
L{multirealm.core.interfaces.IStore}.

The SQL itself lives in L{multirealm.storage.queries}, one module per
aggregate, and the tables in L{multirealm.storage.schema}; the database
thread and group commit are L{multirealm.storage.batching}'s, the same
for both engines (L{multirealm.storage.postgres} is the other).
"""

import os
import sqlite3

from twisted.python.failure import Failure
from zope.interface import implementer

from multirealm import errors
from multirealm.core.interfaces import IStore
from multirealm.logs import RealmLogger
from multirealm.storage import checkpoints, schema
from multirealm.storage.batching import BatchingStore
from multirealm.storage.operations import StoreOperations

log = RealmLogger()


@implementer(IStore)
class SQLiteStore(StoreOperations, BatchingStore):
    """
    L{IStore} on one SQLite file in WAL mode with C{synchronous=FULL}: a
    commit survives a power loss, and group commit keeps that affordable.
    """

    def __init__(self, path, realm, reactor, inline=False):
        """
        Open (creating if need be) the database at C{path}.  This runs on
        the calling thread: it is start-up work, done before the realm
        accepts any connection, so that a bad data directory fails start-up
        at once.  C{inline}: see L{BatchingStore.__init__}.
        """
        BatchingStore.__init__(self, realm, reactor, inline)
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Room for the statements of many rows of each size (queries.messages.write_rows).
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Checkpoints run on a thread of their own (checkpoints.Checkpointer)
        # once the store's thread runs; this connection only past a bound.
        self._checkpointer = None
        if not inline:
            self._db.execute(f"PRAGMA wal_autocheckpoint={checkpoints.SAFETY_PAGES}")
            self._checkpointer = checkpoints.Checkpointer(path, realm, lambda: self.commits)
        self.migrated = schema.migrate(self._db, path, realm=realm)  # (from, to) versions
        # Whole pages go to the WAL: timeline rows wait in a small table
        # (queries.messages.stage_timeline, schema step 013).
        self.thread_cache.stage_timeline = True

    def start(self):
        BatchingStore.start(self)
        if self._checkpointer is not None:
            self._checkpointer.start()

    def _close(self):
        # The checkpointer's connection first: the last one to close
        # checkpoints the whole WAL and removes it.
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()

    def _begin(self, writes, isolated):
        self._db.execute("BEGIN IMMEDIATE")

    def durability(self):
        """
        Fires with C{{"journal_mode": ..., "synchronous": ...}} as the
        store's own connection runs them (C{"wal"} and 2, FULL).
        """

        def read(db):
            return {
                "journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": db.execute("PRAGMA synchronous").fetchone()[0],
            }

        return self.submit(read, writes=False)

    def _clean_error(self, failure):
        """
        L{errors.StorageFull} for a failure that is a full disk, logged once
        until a commit succeeds again (a full disk is not a bug: no
        traceback per request); None for anything else.
        """
        error = failure.value
        if not (isinstance(error, sqlite3.OperationalError) and "full" in str(error)):
            return None
        if not self._full:
            self._full = True
            log.error("realm {realm}: the disk of {path} is full; nothing is stored until"
                      " there is room again", realm=self.realm, path=self.path)
        return Failure(errors.StorageFull("the realm's disk is full: nothing was stored; try later"))
