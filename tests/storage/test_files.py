"""
"OK means the file survives a crash" (storage/files.py): before the OK of
an upload, the file's bytes are fsynced, then it is renamed into place,
then its folder is fsynced (so the rename itself is on disk).  The calls
are recorded with what they were made on, and when.
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from multirealm.storage.files import FileStore
from tests.chat.test_files import sendfile
from tests.helpers import Client, make_realm, wait_until


class DurableUploadTests(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        self.files = FileStore(self.folder)
        self.realm = make_realm(self, files=self.files)
        self.alice, self.heru = Client(self.realm), Client(self.realm)
        self.token = self.alice.login("alice")
        self.heru.login("heru")
        self.calls = []  # (what, on what, whether the OK was already sent)
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            status = os.fstat(fd)
            self.calls.append(("fsync", (status.st_dev, status.st_ino), self.answered()))
            return real_fsync(fd)

        def replace(source, destination):
            self.calls.append(("replace", (source, destination), self.answered()))
            return real_replace(source, destination)

        self.patch(os, "fsync", fsync)
        self.patch(os, "replace", replace)

    def answered(self):
        return b"Message Sent" in self.alice.transport.value()

    @defer.inlineCallbacks
    def upload(self):
        """Send a file by the chat port; the id it is stored under, once OK."""
        self.alice.raw(sendfile(self.token, "heru", "a.bin", b"kept through a crash"))
        yield wait_until(self.answered)
        (sent,) = self.alice.replies()
        self.assertEqual(sent["message"], "Message Sent")
        (entry,) = self.heru.ask("inbox -")["messages"]
        return entry["file_id"]

    @staticmethod
    def inode(path):
        status = os.stat(path)
        return status.st_dev, status.st_ino

    @defer.inlineCallbacks
    def test_the_bytes_are_fsynced_before_the_rename_and_the_ok(self):
        file_id = yield self.upload()
        final = os.path.join(self.folder, file_id)
        temporary = os.path.join(self.folder, "incoming", file_id + ".part")
        self.assertIn(("replace", (temporary, final), False), self.calls)
        rename = self.calls.index(("replace", (temporary, final), False))
        # The file's own descriptor (the inode the name now points to).
        self.assertIn(("fsync", self.inode(final), False), self.calls[:rename])

    @defer.inlineCallbacks
    def test_the_folder_is_fsynced_after_the_rename_and_before_the_ok(self):
        file_id = yield self.upload()
        final = os.path.join(self.folder, file_id)
        temporary = os.path.join(self.folder, "incoming", file_id + ".part")
        rename = self.calls.index(("replace", (temporary, final), False))
        self.assertIn(("fsync", self.inode(self.folder), False), self.calls[rename + 1:])
