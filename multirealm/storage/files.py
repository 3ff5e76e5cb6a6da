"""
The files of a realm (L{FileStore}): each under the data directory's
C{files/} folder, named by a random id, never by the name its sender gave.

An upload is gathered in batches of C{Incoming.BATCH} bytes, each written
to C{files/incoming/<id>.part} in a thread (the reactor thread only
copies bytes), then flushed, fsynced and renamed into place in a thread,
so an C{OK} that follows means the file survives a crash.  What is left in C{incoming/} by a crash or a
dropped connection is removed at start (L{FileStore.sweep}).

The processes of a realm on PostgreSQL share the folder (C{shared}): a
file being received is locked (C{flock}) by the process receiving it,
and what one process sweeps at start spares what the others are
receiving or about to commit (L{SHARED_GRACE_SECONDS}).
"""

import fcntl
import os
import re
import secrets
import time

from twisted.internet import defer
from twisted.internet.threads import deferToThread

_FILE_ID = re.compile(r"[0-9a-f]{32}")

# In a folder shared by several processes, a file in incoming/ that nobody
# locks, or a stored file no message names, is left alone until it is this
# old: the moments between creating a file and locking it, or between
# writing it and committing its message, are within it by far.
SHARED_GRACE_SECONDS = 600.0


class Incoming:
    """
    One file being received; L{finish} or L{abort} it.  On the reactor
    thread: L{write}, L{finish}, L{abort}; L{write_now} and L{commit_now}
    run in the threads these start.  Its life (limits, errors, the
    message after it) is L{multirealm.core.incoming.IncomingFile}'s.
    """

    BATCH = 256 * 1024

    def __init__(self, file_id, temporary, final):
        self.id = file_id
        self._temporary = temporary
        self._final = final
        self._file = open(temporary, "xb")
        fcntl.flock(self._file, fcntl.LOCK_EX)  # being received: no other process sweeps it
        self._batch = []
        self._batched = 0
        self._writing = None  # the batch being written in a thread
        self.error = None  # the first failed write (a full disk, say)

    def write(self, data):
        """
        Keep C{data}.  Once a batch is full it is written in a thread,
        after the batches before it: the Deferred returned then fires when
        it is written (a caller that waits for it before giving more holds
        at most one batch and one more in memory).
        """
        if self.error is not None:
            raise self.error
        self._batch.append(data)
        self._batched += len(data)
        if self._batched < self.BATCH:
            return None
        data = self._take()
        after = self._writing or defer.succeed(None)
        self._writing = after.addCallback(lambda _: deferToThread(self.write_now, data))
        self._writing.addCallbacks(self._written, self._write_failed)
        return self._writing

    def _take(self):
        data, self._batch, self._batched = b"".join(self._batch), [], 0
        return data

    def _written(self, result):
        self._writing = None

    def _write_failed(self, failure):
        self._writing = None
        self.error = failure.value  # raised by the next write, or by finish

    def write_now(self, data):
        self._file.write(data)

    def finish(self):
        """Write what is left and make it durable under its id (in a thread)."""
        waiting = self._writing or defer.succeed(None)
        rest = self._take()

        def commit(_):
            if self.error is not None:
                raise self.error
            return deferToThread(self.commit_now, rest)

        return waiting.addCallback(commit)

    def commit_now(self, rest=b""):
        file = self._file
        file.write(rest)
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(self._temporary, self._final)
        folder = os.open(os.path.dirname(self._final), os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a crash
        finally:
            os.close(folder)

    def abort(self):
        """Forget it: nothing of it stays on disk."""
        try:
            self._file.close()
        except OSError:
            pass
        for path in (self._temporary, self._final):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class FileStore:
    """
    @param shared: other processes (of a realm on PostgreSQL) use the
        folder too.
    """

    def __init__(self, folder, shared=False):
        self.folder = folder
        self._incoming = os.path.join(folder, "incoming")
        os.makedirs(self._incoming, exist_ok=True)
        self.grace = SHARED_GRACE_SECONDS if shared else 0.0

    def sweep(self):
        """
        Remove what a crash left half-received; returns how many.  In a
        shared folder, only files no process is receiving (unlocked) and
        older than the grace.
        """
        removed = 0
        before = time.time() - self.grace
        for name in os.listdir(self._incoming):
            path = os.path.join(self._incoming, name)
            if self.grace and not _abandoned(path, before):
                continue
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass  # finished or swept meanwhile
        return removed

    def remove_orphans(self, known, before):
        """
        Remove the stored files that no message names (C{known}: the ids
        messages carry), older than C{before} (epoch seconds; less the
        grace in a shared folder): a crash between a file's rename and its
        message's commit leaves one.  The age spares an upload being stored
        while this runs, by this process or (the grace) another.
        """
        before -= self.grace
        removed = 0
        for name in os.listdir(self.folder):
            if not _FILE_ID.fullmatch(name) or name in known:
                continue
            path = os.path.join(self.folder, name)
            try:
                if os.path.getmtime(path) < before:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                pass  # gone meanwhile
        return removed

    def begin(self):
        file_id = secrets.token_hex(16)
        return Incoming(
            file_id,
            os.path.join(self._incoming, file_id + ".part"),
            os.path.join(self.folder, file_id),
        )

    def path(self, file_id):
        """Where stored file C{file_id} is; C{FileNotFoundError} for a malformed id."""
        if not _FILE_ID.fullmatch(file_id):
            raise FileNotFoundError(file_id)
        return os.path.join(self.folder, file_id)

    def open(self, file_id):
        """The stored file C{file_id} for reading (binary); C{FileNotFoundError} if none."""
        if not _FILE_ID.fullmatch(file_id):
            raise FileNotFoundError(file_id)
        return open(os.path.join(self.folder, file_id), "rb")


def _abandoned(path, before):
    """Whether no process is receiving the file at C{path}, last written before C{before}."""
    try:
        with open(path, "rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live process is receiving it
            return os.fstat(file.fileno()).st_mtime < before
    except FileNotFoundError:
        return False
