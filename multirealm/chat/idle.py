"""
The idle timeout of every connection of a chat factory: L{IdleSweep}.

One timer for all of them instead of one Twisted C{DelayedCall} each: a
request only stores the time (the connection's C{idle_since}) instead of
resetting its C{DelayedCall}, and an idle connection holds no timer of
its own.  A C{LoopingCall} sweeps every C{PERIOD} seconds; connections
are filed by the second they were last seen active (a coarse timer
wheel), so a sweep looks only at those whose time may be up, and files
again those that were active since.  A connection is told at most one
C{PERIOD} after its C{idle_timeout}, never before.
"""

from math import floor

from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from multirealm.logs import RealmLogger

log = RealmLogger()

PERIOD = 1.0  # seconds between two sweeps


class IdleSweep:
    """
    Calls C{connection.timeoutConnection()} once for each connection
    L{add}ed whose C{idle_since} (its clock's seconds, which it updates
    itself) is C{timeout} seconds old or more, and forgets it; until then
    L{remove} forgets it.  The sweep runs only while it holds connections;
    it marks each with the second it is filed under (C{_idle_second}).

    @param clock: an L{IReactorTime}: C{seconds()} and C{callLater}.
    @param realm: the name of the realm, for its log lines.
    """

    def __init__(self, clock, timeout, realm=None):
        self._clock = clock
        self._timeout = timeout
        self._realm = realm
        self._buckets = {}  # whole second -> the connections filed under it
        self._count = 0
        self._loop = None

    def add(self, connection):
        """Watch C{connection}, active now (its C{idle_since} is set to now)."""
        now = connection.idle_since = self._clock.seconds()
        if self._loop is None:
            self._loop = LoopingCall(self._sweep)
            self._loop.clock = self._clock
            self._loop.start(PERIOD, now=False)
        self._file(connection, floor(now))
        self._count += 1

    def remove(self, connection):
        """
        Forget C{connection} (it ended); nothing if it timed out already or
        was never added (its C{_idle_second} is None).
        """
        second, connection._idle_second = connection._idle_second, None
        if second is None:
            return
        self._buckets[second].discard(connection)
        if not self._buckets[second]:
            del self._buckets[second]
        self._forgotten()

    def _file(self, connection, second):
        connection._idle_second = second
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = set()
        bucket.add(connection)

    def _forgotten(self):
        self._count -= 1
        if not self._count:
            loop, self._loop = self._loop, None
            loop.stop()
            self._buckets.clear()

    def _sweep(self):
        now = self._clock.seconds()
        due = floor(now - self._timeout)  # filed at or before it: may be idle long enough
        expired = []
        # At most idle_timeout + 1 of them (600 by default): sorted each time.
        for second in sorted(second for second in self._buckets if second <= due):
            for connection in self._buckets.pop(second):
                since = connection.idle_since
                if now - since >= self._timeout:
                    connection._idle_second = None
                    expired.append(connection)
                else:  # active since it was filed (or not idle quite long enough yet)
                    self._file(connection, floor(since))
        for connection in expired:
            self._forgotten()
            try:
                connection.timeoutConnection()
            except Exception:  # a bug: logged, and the sweep goes on for the others
                log.failure("idle timeout failed", Failure(), realm=self._realm)
