"""
Work only one process of a realm may do at a time, such as draining the
outbox to one peer: L{LeasedService} runs a service only while this
process holds its lease (an L{ILeases}), and tries to take it every
L{LeasedService.RETRY_SECONDS} while another process holds it, so a
process that dies is replaced within seconds.

L{LocalLeases} is the lease of a realm on SQLite: one process, which
holds every lease at once (nothing changes there).
"""

from twisted.application.service import Service
from twisted.internet import defer, task
from zope.interface import implementer

from multirealm.core.interfaces import ILeases
from multirealm.logs import RealmLogger

log = RealmLogger()


def outbox_lease(realm, peer):
    """The name of the lease of realm C{realm}'s outbox to realm C{peer}."""
    return f"outbox {realm} {peer}"


@implementer(ILeases)
class LocalLeases:
    """The leases of a realm that runs as one process: each is always held."""

    shared = False

    def start(self):
        pass

    def stop(self):
        return defer.succeed(None)

    def acquire(self, name, lost):
        return defer.succeed(True)

    def release(self, name):
        return defer.succeed(None)


class LeasedService(Service):
    """
    Runs C{service} while this process holds lease C{lease} of C{leases}
    (an L{ILeases}): started when it is taken, stopped when it is lost (it
    is tried again then), stopped and the lease released when this stops.

    @param what: what the lease is for, as the log says it.
    """

    RETRY_SECONDS = 2.0

    def __init__(self, leases, lease, service, clock, realm, what):
        self.leases = leases
        self.lease = lease
        self.service = service
        self._clock = clock
        self._realm = realm
        self._what = what
        self.held = False
        self._asking = False
        self._failing = None  # why the last attempt failed, said once
        self._loop = None

    def startService(self):
        Service.startService(self)
        self._loop = task.LoopingCall(self._try)
        self._loop.clock = self._clock
        self._loop.start(self.RETRY_SECONDS, now=True)

    def _try(self):
        if self.held or self._asking:
            return
        self._asking = True
        held = defer.maybeDeferred(self.leases.acquire, self.lease, self._lost)
        held.addCallbacks(self._answered, self._failed)

    def _answered(self, held):
        self._asking = False
        if self._failing is not None:
            self._failing = None
            log.info("leases of {what} can be taken again", what=self._what, realm=self._realm)
        if not held:
            return
        if not self.running:  # stopped while asking
            self._release()
            return
        self.held = True
        if self.leases.shared:
            log.info("this process holds the lease of {what}: it runs here",
                     what=self._what, realm=self._realm)
        self.service.startService()

    def _failed(self, failure):
        self._asking = False
        why = failure.getErrorMessage()
        if why != self._failing:
            self._failing = why
            log.warn("cannot take the lease of {what} now: {why}; trying again every"
                     " {seconds:g} s (said again only for a new reason)", what=self._what,
                     why=why, seconds=self.RETRY_SECONDS, realm=self._realm)

    def _lost(self, why):
        if not self.held:
            return
        self.held = False
        log.warn("this process lost the lease of {what} ({why}): stopped here until it"
                 " takes it again (another process of the realm may meanwhile)",
                 what=self._what, why=why, realm=self._realm)
        self.service.stopService()

    def stopService(self):
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if not self.held:
            return None
        self.held = False
        stopped = defer.maybeDeferred(self.service.stopService)
        return stopped.addCallback(lambda _: self._release())

    def _release(self):
        # A release that fails changes nothing: the lease goes with its
        # connection, which the realm's stop closes.
        return self.leases.release(self.lease).addErrback(lambda _: None)
