"""
Files to and from the realm: L{Upload} (a file being sent, read as its
body goes out by L{Base64Body}) and L{FileSink} (a fetched file, written
to disk as it arrives).  Each counts C{done} of C{total} bytes for the
progress bar.
"""

import base64
import os

from multirealm import errors
from multirealm.names import check_filename

# A transfer this big shows a progress bar while it runs.
LARGE = 1024 * 1024
# One line of a file body: 48 KiB of file, 64 KiB of base64.
FILE_CHUNK = 48 * 1024


def plain_file_name(name):
    """C{name} if it can name a file here as it is (the realm's own rule), else None."""
    try:
        return check_filename(name) if isinstance(name, str) else None
    except errors.ChatError:
        return None


def wire_file_name(path):
    """
    The name file C{path} is sent under: its own, spaces made C{_} (the
    chat port splits a request into words on spaces).
    @raise errors.BadFilename: a name the realm refuses, in words.
    """
    return check_filename(os.path.basename(path).replace(" ", "_"))


class Upload:
    """File C{path}, open for its body to be read (by the connection), counted."""

    def __init__(self, path, label):
        self.label = label
        self._file = open(path, "rb")
        self.total = os.fstat(self._file.fileno()).st_size
        self.done = 0

    def read(self, size):
        data = self._file.read(size)
        self.done += len(data)
        return data

    def close(self):
        self._file.close()


class Base64Body:
    """A pull producer: a file as base64 lines, then the empty line that ends it."""

    def __init__(self, opened, protocol):
        self._file = opened
        self._protocol = protocol
        self._transport = protocol.transport

    def resumeProducing(self):
        chunk = self._file.read(FILE_CHUNK)
        if chunk:
            self._transport.write(base64.b64encode(chunk) + b"\r\n")
            return
        self._transport.write(b"\r\n")
        self._file.close()
        self._transport.unregisterProducer()
        self._protocol.body_sent()

    def stopProducing(self):
        self._file.close()


class FileSink:
    """
    Where a fetched file goes: a file in C{folder} named by the reply's
    C{filename} if it is a plain name (the realm's own rule), else by the
    file's id, never over an existing one.  Written to C{<name>.part}
    first and renamed once whole; a lost connection leaves nothing.
    """

    def __init__(self, folder, file_id):
        self.folder = folder
        self.file_id = file_id
        self.label = f"fetching {file_id}"
        self.path = None
        self.done = 0
        self.total = 0  # known once the reply's head is in
        self._file = None
        self._part = None

    def start(self, head):
        name = plain_file_name(head.get("filename")) or plain_file_name(self.file_id) or "file"
        self.label = f"fetching {name}"
        size = head.get("size")
        self.total = size if isinstance(size, int) else 0
        self.path = self._free(os.path.join(self.folder, name))
        self._part = self.path + ".part"
        self._file = open(self._part, "xb")

    def write(self, data):
        self._file.write(data)
        self.done += len(data)

    def finish(self):
        self._file.close()
        if os.path.exists(self.path):  # made meanwhile by someone else
            self.path = self._free(self.path)
        os.rename(self._part, self.path)

    def abandon(self):
        if self._file is not None:
            self._file.close()
            try:
                os.unlink(self._part)
            except FileNotFoundError:
                pass

    @staticmethod
    def _free(path):
        base, extension = os.path.splitext(path)
        n = 1
        while os.path.exists(path) or os.path.exists(path + ".part"):
            path = f"{base} ({n}){extension}"
            n += 1
        return path
