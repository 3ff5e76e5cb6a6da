"""
The files of a realm (L{FileStore}): each under the data directory's
C{files/} folder, named by a random id, never by the name its sender gave.

An upload is written to C{files/incoming/<id>.part} a chunk at a time as
it arrives (to the page cache: a bounded write per chunk), then flushed,
fsynced and renamed into place in a thread, so an C{OK} that follows means
the file survives a crash.  What is left in C{incoming/} by a crash or a
dropped connection is removed at start (L{FileStore.sweep}).
"""

import os
import re
import secrets

from twisted.internet.threads import deferToThread

_FILE_ID = re.compile(r"[0-9a-f]{32}")


class Incoming:
    """One file being received; L{finish} or L{abort} it."""

    def __init__(self, file_id, temporary, final):
        self.id = file_id
        self._temporary = temporary
        self._final = final
        self._file = open(temporary, "xb")

    def write(self, data):
        self._file.write(data)

    def finish(self):
        """Make it durable under its id; fires once done (in a thread)."""
        return deferToThread(self._commit)

    def _commit(self):
        file = self._file
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
    def __init__(self, folder):
        self.folder = folder
        self._incoming = os.path.join(folder, "incoming")
        os.makedirs(self._incoming, exist_ok=True)

    def sweep(self):
        """Remove what a crash left half-received; returns how many."""
        left = os.listdir(self._incoming)
        for name in left:
            os.unlink(os.path.join(self._incoming, name))
        return len(left)

    def remove_orphans(self, known, before):
        """
        Remove the stored files that no message names (C{known}: the ids
        messages carry), older than C{before} (epoch seconds): a crash
        between a file's rename and its message's commit leaves one.  The
        age spares an upload being stored while this runs.
        """
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

    def copy_in(self, source, limit):
        """
        Store what the open binary file C{source} holds (at most C{limit}
        bytes), in a thread; fires with (L{Incoming} made durable, size).
        """
        incoming = self.begin()

        def copy():
            size = 0
            while chunk := source.read(65536):
                size += len(chunk)
                if size > limit:
                    raise OverflowError(size)
                incoming.write(chunk)
            incoming._commit()
            return incoming, size

        def failed(failure):
            incoming.abort()
            return failure

        return deferToThread(copy).addErrback(failed)

    def open(self, file_id):
        """The stored file C{file_id} for reading (binary); C{FileNotFoundError} if none."""
        if not _FILE_ID.fullmatch(file_id):
            raise FileNotFoundError(file_id)
        return open(os.path.join(self.folder, file_id), "rb")

    def remove(self, file_id):
        if _FILE_ID.fullmatch(file_id):
            try:
                os.unlink(os.path.join(self.folder, file_id))
            except FileNotFoundError:
                pass
