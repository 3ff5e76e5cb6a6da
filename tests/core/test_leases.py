"""
L{LeasedService}: a service that runs only while this process holds its
lease, driven by a fake lease and a L{task.Clock}.
"""

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer

from multirealm.core.interfaces import ILeases
from multirealm.core.leases import LeasedService, LocalLeases, outbox_lease


@implementer(ILeases)
class FakeLeases:
    """Leases another process holds while C{elsewhere} names them."""

    shared = True

    def __init__(self):
        self.elsewhere = set()
        self.held = {}  # name -> lost
        self.released = []
        self.broken = None  # a reason: every acquire fails with it
        self.asked = 0

    def start(self):
        pass

    def stop(self):
        return defer.succeed(None)

    def acquire(self, name, lost):
        self.asked += 1
        if self.broken is not None:
            return defer.fail(ConnectionError(self.broken))
        if name in self.elsewhere:
            return defer.succeed(False)
        self.held[name] = lost
        return defer.succeed(True)

    def release(self, name):
        self.held.pop(name, None)
        self.released.append(name)
        return defer.succeed(None)

    def lose_all(self, why):
        held, self.held = self.held, {}
        for lost in held.values():
            lost(why)


class Runs(Service):
    def __init__(self):
        self.starts = self.stops = 0

    def startService(self):
        Service.startService(self)
        self.starts += 1

    def stopService(self):
        Service.stopService(self)
        self.stops += 1


class LeasedServiceTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.leases = FakeLeases()
        self.inner = Runs()
        self.service = LeasedService(
            self.leases, outbox_lease("1", "2"), self.inner, self.clock, "1",
            "the outbox to realm 2",
        )

    def test_a_free_lease_is_taken_at_start_and_the_service_runs(self):
        self.service.startService()
        self.assertTrue(self.service.held)
        self.assertEqual((self.inner.running, self.inner.starts), (1, 1))

    def test_while_another_process_holds_it_nothing_runs_and_it_is_tried_again(self):
        self.leases.elsewhere.add("outbox 1 2")
        self.service.startService()
        self.clock.pump([LeasedService.RETRY_SECONDS] * 3)
        self.assertEqual((self.inner.starts, self.leases.asked), (0, 4))
        self.leases.elsewhere.clear()  # the holder died: its lease is free
        self.clock.advance(LeasedService.RETRY_SECONDS)
        self.assertEqual((self.inner.running, self.inner.starts), (1, 1))

    def test_a_lost_lease_stops_the_service_until_it_is_taken_again(self):
        self.service.startService()
        self.leases.elsewhere.add("outbox 1 2")  # taken over while the connection was down
        self.leases.lose_all("the connection broke")
        self.assertEqual((self.inner.running, self.inner.stops), (0, 1))
        self.clock.advance(LeasedService.RETRY_SECONDS)
        self.assertEqual(self.inner.starts, 1)
        self.leases.elsewhere.clear()
        self.clock.advance(LeasedService.RETRY_SECONDS)
        self.assertEqual((self.inner.running, self.inner.starts), (1, 2))

    def test_stopping_stops_the_service_then_releases_the_lease(self):
        self.service.startService()
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        self.assertEqual((self.inner.running, self.leases.released), (0, ["outbox 1 2"]))
        self.clock.pump([LeasedService.RETRY_SECONDS] * 3)
        self.assertEqual((self.inner.starts, self.leases.asked), (1, 1))

    def test_a_lease_that_cannot_be_asked_for_is_tried_again_and_said_once(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.leases.broken = "database down"
        self.service.startService()
        self.clock.pump([LeasedService.RETRY_SECONDS] * 2)
        self.assertEqual((self.inner.starts, self.leases.asked), (0, 3))
        self.leases.broken = None
        self.clock.advance(LeasedService.RETRY_SECONDS)
        self.assertEqual(self.inner.starts, 1)
        said = [formatEvent(e) for e in events if "lease" in formatEvent(e)]
        self.assertEqual(len(said), 3, said)
        self.assertIn("cannot take the lease of the outbox to realm 2 now: database down", said[0])
        self.assertIn("can be taken again", said[1])
        self.assertIn("holds the lease of the outbox to realm 2", said[2])

    def test_a_lease_taken_after_stopping_is_released(self):
        answer = defer.Deferred()
        self.patch(self.leases, "acquire", lambda name, lost: answer)
        self.service.startService()
        self.service.stopService()
        answer.callback(True)
        self.assertEqual((self.inner.starts, self.leases.released), (0, ["outbox 1 2"]))

    def test_a_loss_after_stopping_changes_nothing(self):
        self.service.startService()
        lost = self.leases.held["outbox 1 2"]
        self.service.stopService()
        lost("late")
        self.assertEqual(self.inner.stops, 1)


class LocalLeasesTests(unittest.TestCase):
    def test_one_process_holds_every_lease(self):
        leases = LocalLeases()
        self.assertTrue(self.successResultOf(leases.acquire("outbox 1 2", lambda why: None)))
        self.assertTrue(self.successResultOf(leases.acquire("outbox 1 3", lambda why: None)))

    def test_one_process_says_nothing_of_leases(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        inner = Runs()
        LeasedService(LocalLeases(), "outbox 1 2", inner, task.Clock(), "1", "x").startService()
        self.assertEqual((inner.running, events), (1, []))
