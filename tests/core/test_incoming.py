"""
The one incoming-file component of every port (chat, realm link, HTTP):
batches and back-pressure, the size limit, durable then stored, removed on
any error, and one mapping of disk errors to codes.
"""

import errno
import os

from twisted.internet import defer
from twisted.trial import unittest

from multirealm import errors
from multirealm.core.incoming import IncomingFile, disk_error
from multirealm.storage.files import FileStore, Incoming


class DiskErrorTests(unittest.TestCase):
    def test_a_full_disk_or_quota_is_storage_full_any_other_unavailable(self):
        self.assertIsInstance(disk_error(OSError(errno.ENOSPC, "full")), errors.StorageFull)
        self.assertIsInstance(disk_error(OSError(errno.EDQUOT, "quota")), errors.StorageFull)
        for other in (errno.EIO, errno.EMFILE, errno.EROFS):
            error = disk_error(OSError(other, os.strerror(other)))
            self.assertIsInstance(error, errors.Unavailable)
            self.assertIn(os.strerror(other), error.message)


class IncomingFileTests(unittest.TestCase):
    def setUp(self):
        self.folder = self.mktemp()
        self.files = FileStore(self.folder)
        self.stored = []

    def on_disk(self):
        """Names in the files folder and in its incoming folder."""
        return (
            sorted(n for n in os.listdir(self.folder) if n != "incoming"),
            os.listdir(os.path.join(self.folder, "incoming")),
        )

    def store(self, file_id, size):
        self.stored.append((file_id, size))
        return defer.succeed("stored")

    @defer.inlineCallbacks
    def test_a_file_in_batches_is_durable_then_stored(self):
        file = IncomingFile(self.files, 10**6)
        batch = Incoming.BATCH
        self.assertIsNone(file.write(b"a" * (batch - 1)))  # kept: not a batch yet
        written = file.write(b"b")
        self.assertIsInstance(written, defer.Deferred)  # the caller reads no more meanwhile
        yield written
        self.assertIsNone(file.write(b"c"))
        self.assertEqual((yield file.finish(self.store)), "stored")
        ((file_id, size),) = self.stored
        self.assertEqual(size, batch + 1)
        with self.files.open(file_id) as f:
            self.assertEqual(f.read(), b"a" * (batch - 1) + b"bc")
        self.assertEqual(self.on_disk(), ([file_id], []))

    @defer.inlineCallbacks
    def test_past_the_limit_is_file_too_large_and_nothing_stays(self):
        file = IncomingFile(self.files, 10)
        file.write(b"0123456789")
        file.write(b"!")
        yield self.assertFailure(file.finish(self.store), errors.FileTooLarge)
        self.assertEqual((self.stored, self.on_disk()), ([], ([], [])))

    @defer.inlineCallbacks
    def test_a_file_refused_before_its_body_never_touches_the_disk(self):
        begun = []
        real_begin = self.files.begin
        self.patch(self.files, "begin", lambda: begun.append(1) or real_begin())
        file = IncomingFile(self.files, 100)
        file.expect(101)
        self.assertIsNone(file.write(b"x" * 50))
        yield self.assertFailure(file.finish(self.store), errors.FileTooLarge)
        self.assertEqual(begun, [])

    @defer.inlineCallbacks
    def test_a_message_that_cannot_be_stored_takes_its_file_away(self):
        file = IncomingFile(self.files, 100)
        file.write(b"x")
        refused = lambda file_id, size: defer.fail(errors.NoSuchUser("no user 'nobody'"))
        yield self.assertFailure(file.finish(refused), errors.NoSuchUser)
        self.assertEqual(self.on_disk(), ([], []))

    @defer.inlineCallbacks
    def test_disk_errors_become_their_codes_and_leave_nothing(self):
        real_begin = self.files.begin
        for number, expected in ((errno.EDQUOT, errors.StorageFull),
                                 (errno.EIO, errors.Unavailable)):

            def begin_on_a_bad_disk(number=number):
                incoming = real_begin()

                def fails(*args):
                    raise OSError(number, os.strerror(number))

                incoming.write_now = fails
                return incoming

            self.patch(self.files, "begin", begin_on_a_bad_disk)
            file = IncomingFile(self.files, 10**7)
            yield file.write(b"x" * Incoming.BATCH)
            self.assertIsNotNone(file.error)  # known at once: later bytes are skipped
            yield self.assertFailure(file.finish(self.store), expected)
            self.assertEqual(self.on_disk()[0], [])
            self.flushLoggedErrors()
