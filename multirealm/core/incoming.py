"""
One file being received (L{IncomingFile}), whatever port it comes by: a
chat upload (base64), a file frame on a realm link (raw bytes counted by
the frame) or an HTTP POST (the body).  The framing is the port's; the
file's life is this module's: begun on disk at its first byte, written a
batch at a time off the reactor, held to C{max_file_bytes}, made durable,
then its message stored; removed on any error on the way.  A disk error
becomes one code (L{disk_error}): a full disk C{storage_full}, any other
C{unavailable}; both say "nothing was kept, try again later".
"""

import errno

from twisted.internet import defer
from twisted.python.failure import Failure

from multirealm import errors
from multirealm.logs import RealmLogger

log = RealmLogger()

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_error(error, realm=None):
    """The L{errors.ChatError} a client sees for file system error C{error} on C{realm}."""
    if getattr(error, "errno", None) in _FULL:
        return errors.StorageFull("the realm's disk is full: the file was not kept; try later")
    log.error("a file could not be stored: {error!r}", error=error, realm=realm)
    return errors.Unavailable(
        f"the file could not be stored ({getattr(error, 'strerror', None) or error});"
        " try again later"
    )


class IncomingFile:
    """
    One file being received into C{files} (the realm's file store), at
    most C{limit} bytes.  Give it the bytes with L{write}, then L{finish};
    or L{fail} it.  Once failed, it takes no more bytes and L{finish}
    answers its error.
    """

    def __init__(self, files, limit, realm=None):
        self._realm = realm  # its name, for the log
        self.size = 0
        self.error = None  # a Failure of the ChatError it will be refused with
        self._files = files
        self._limit = limit
        self._incoming = None  # the file on disk, once begun and while all is well

    def _too_large(self):
        return errors.FileTooLarge(f"files are at most {self._limit} bytes")

    def expect(self, size):
        """The port knows the size before the body: refuse one over the limit at once."""
        if size > self._limit:
            self.fail(self._too_large())

    def _disk(self):
        if self._incoming is None:
            self._incoming = self._files.begin()
        return self._incoming

    def write(self, data):
        """
        Take the next C{data} of the file.  Returns None, or, while a batch
        is written in a thread, a Deferred that fires (never fails) once
        it is: read no more until then, and memory holds at most a batch
        or two.
        """
        if self.error is not None or not data:
            return None
        self.size += len(data)
        if self.size > self._limit:
            self.fail(self._too_large())
            return None
        try:
            writing = self._disk().write(data)
        except OSError as e:  # begun on a full disk, or an earlier batch failed
            self.fail(disk_error(e, self._realm))
            return None
        if writing is None:
            return None
        written = defer.Deferred()

        def done(result):
            incoming = self._incoming
            if incoming is not None and incoming.error is not None:
                self.fail(disk_error(incoming.error, self._realm))  # dropped now, not at the end
            written.callback(None)
            return result

        writing.addBoth(done)
        return written

    def fail(self, error):
        """Refuse the file with C{error} (the first error counts); drop what is on disk."""
        if self.error is None:
            self.error = error if isinstance(error, Failure) else Failure(error)
        self._drop()

    def abort(self):
        """Forget the file, even once stored: nothing of it stays on disk, none is begun."""
        self.fail(errors.ChatError("the file was dropped"))

    def _drop(self):
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming.abort()

    def finish(self, store):
        """
        The body is whole: make the file durable, then store its message
        with C{store(file_id, size)} (a Deferred).  Fires with what that
        fires with; on any error, with the error to answer (a disk error
        mapped by L{disk_error}), the file removed.
        """
        if self.error is not None:
            return defer.fail(self.error)
        try:
            incoming = self._disk()
        except OSError as e:
            self.fail(disk_error(e, self._realm))
            return defer.fail(self.error)
        d = incoming.finish()
        d.addCallback(lambda _: store(incoming.id, self.size))
        return d.addErrback(self._failed)

    def _failed(self, failure):
        self._drop()
        if failure.check(OSError):
            return Failure(disk_error(failure.value, self._realm))
        return failure
