"""
"OK means the file survives a crash" (storage/files.py): before the OK of
an upload, the file's bytes are fsynced, then it is renamed into place,
then its folder is fsynced (so the rename itself is on disk).  The calls
are recorded with what they were made on, and when.
"""

import os
import time

from twisted.internet import defer
from twisted.trial import unittest

from multirealm.storage.files import SHARED_GRACE_SECONDS, FileStore
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


class SharedFolderTests(unittest.TestCase):
    """
    The files folder of a realm on PostgreSQL, which its processes share:
    one process's start spares what another is receiving or storing.
    """

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        self.files = FileStore(self.folder, shared=True)
        self.incoming = os.path.join(self.folder, "incoming")

    def left(self, name, age):
        """A part file a process gone left, last written C{age} seconds ago."""
        path = os.path.join(self.incoming, name)
        with open(path, "wb") as f:
            f.write(b"half")
        os.utime(path, (time.time() - age,) * 2)
        return path

    def test_a_file_another_process_is_receiving_is_not_swept_however_old(self):
        receiving = self.files.begin()  # its process holds it locked
        self.addCleanup(receiving.abort)
        os.utime(receiving._temporary, (0, 0))
        gone = self.left("gone.part", SHARED_GRACE_SECONDS + 60)
        self.assertEqual(FileStore(self.folder, shared=True).sweep(), 1)
        self.assertEqual(os.listdir(self.incoming), [os.path.basename(receiving._temporary)])
        self.assertFalse(os.path.exists(gone))

    def test_a_file_nobody_locks_yet_is_spared_while_it_is_recent(self):
        fresh = self.left("fresh.part", 5)  # created, not yet locked
        self.assertEqual(self.files.sweep(), 0)
        self.assertTrue(os.path.exists(fresh))

    def test_one_process_alone_sweeps_everything(self):
        fresh = os.path.join(self.folder, "incoming", "fresh.part")
        with open(fresh, "wb"):
            pass
        self.assertEqual(FileStore(self.folder).sweep(), 1)

    def test_a_stored_file_another_process_is_about_to_commit_is_no_orphan(self):
        stored = os.path.join(self.folder, "a" * 32)
        with open(stored, "wb") as f:
            f.write(b"renamed, its message not yet committed")
        os.utime(stored, (time.time() - 60,) * 2)
        self.assertEqual(self.files.remove_orphans(set(), time.time()), 0)
        self.assertEqual(FileStore(self.folder).remove_orphans(set(), time.time()), 1)
