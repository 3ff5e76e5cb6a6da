"""
L{Checkpointer}: SQLite's WAL copied back into the database file on a
thread of its own, not by the commit that fills it.

In WAL mode a commit appends pages to the WAL, and by default the commit
that takes it past 1,000 pages then copies every page back into the
database file and syncs that file (a checkpoint), before the store can
answer its batch: measured, the batch after every ~20 of a closed loop
waited 4-5 ms more for it (p99 of a batch 6.4 ms against 2.6 without).
Here a second connection, on another thread, runs PASSIVE checkpoints
(which never wait for, nor hold up, the store's writer) ten times a
second while the store commits, and the store's own connection checkpoints
only past L{SAFETY_PAGES}.

Under steady load that bound is reached anyway: a WAL starts again from
its beginning only when a write begins with every frame copied back, and
while commits keep coming some always arrived after the last pass.  So the
WAL file grows to L{SAFETY_PAGES} (40 MiB), and then one commit of the
store checkpoints: it copies only the frames since this thread's last pass
(about 0.1 s of commits) and syncs the file, once every 10,000 pages
instead of every 1,000 (seen in review: a closed loop of 100 connections
took the WAL from 4,592 to 9,457 live frames in about 16 s, then it
started again).
"""

import sqlite3
import threading

from multirealm.logs import RealmLogger

log = RealmLogger()

# The store's own connection still checkpoints past this many WAL pages
# (40 MiB of 4 KiB pages): a bound on the WAL whatever happens here.
SAFETY_PAGES = 10_000


class Checkpointer:
    """
    PASSIVE checkpoints of realm C{realm}'s database at C{path}, every
    C{every} seconds in which C{commits()} (the store's count of commits)
    moved.
    """

    def __init__(self, path, realm, commits, every=0.1):
        self._path = path
        self._realm = realm
        self._commits = commits
        self._every = every
        self._stopping = threading.Event()
        self._thread = None
        self.checkpoints = 0  # run so far (tests)

    def start(self):
        self._stopping.clear()
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")  # the checkpoint syncs the database file
        self._thread = threading.Thread(
            target=self._run, args=(db,), name=f"multirealm-checkpoints {self._realm}",
            daemon=True,
        )
        self._thread.start()

    def stop(self):
        """Stop and close (the thread's next look at most away); returns once done."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None

    def _run(self, db):
        seen = self._commits()
        failing = False  # said once until a checkpoint succeeds again
        try:
            while not self._stopping.wait(self._every):
                now = self._commits()
                if now == seen:
                    continue  # nothing written since the last look
                seen = now
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:
                    # The store's connection checkpoints past SAFETY_PAGES meanwhile.
                    if not failing:
                        log.warn("realm {realm}: checkpoints of {path} fail: {error}",
                                 realm=self._realm, path=self._path, error=e)
                    failing = True
                else:
                    self.checkpoints += 1
                    failing = False
        finally:
            db.close()
