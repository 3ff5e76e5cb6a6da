import threading
import time

from twisted.internet import defer, reactor
from twisted.trial import unittest

from multirealm import errors
from multirealm.core import passwords
from multirealm.core.passwords import PasswordHasher, hash_password, verify_password
from tests.helpers import CHEAP_COST


class PasswordTests(unittest.TestCase):
    def test_hash_is_salted_and_never_holds_the_password(self):
        first, second = (hash_password("progjar", CHEAP_COST) for _ in range(2))
        self.assertNotEqual(first, second)
        self.assertNotIn("progjar", first)
        self.assertTrue(first.startswith("scrypt$16$1$1$"))

    def test_verify(self):
        stored = hash_password("progjar", CHEAP_COST)
        self.assertTrue(verify_password("progjar", stored))
        self.assertFalse(verify_password("progjaR", stored))
        self.assertFalse(verify_password("progjar", None, CHEAP_COST))

    def test_default_cost_is_scrypt_n_16384(self):
        self.assertTrue(hash_password("x").startswith("scrypt$16384$8$1$"))

    @defer.inlineCallbacks
    def test_hasher_works_off_the_reactor_thread(self):
        hasher = PasswordHasher(reactor, cost=CHEAP_COST)
        hasher.start()
        self.addCleanup(hasher.stop)
        threads = []
        real_hash = passwords.hash_password

        def recording_hash(*args):
            threads.append(threading.get_ident())
            return real_hash(*args)

        self.patch(passwords, "hash_password", recording_hash)
        stored = yield hasher.hash("pw")
        self.assertTrue((yield hasher.verify("pw", stored)))
        self.assertFalse((yield hasher.verify("no", stored)))
        self.assertEqual(len(threads), 1)
        self.assertNotEqual(threads[0], threading.get_ident())

    @defer.inlineCallbacks
    def test_a_flood_of_hashes_is_refused_not_queued(self):
        hasher = PasswordHasher(reactor, cost=CHEAP_COST, max_waiting=3)
        hasher.start()
        self.addCleanup(hasher.stop)
        first = [hasher.hash("pw") for _ in range(3)]
        yield self.assertFailure(hasher.hash("pw"), errors.RateLimited)
        yield defer.gatherResults(first)
        self.assertTrue((yield hasher.hash("pw")).startswith("scrypt$"))


class ManualRunner:
    """Runs nothing until told: each job's Deferred waits in C{running}."""

    def __init__(self):
        self.running = []  # (label, deferred)

    def __call__(self, function, *args):
        d = defer.Deferred()
        self.running.append((args[0], d))
        return d

    def finish_one(self):
        label, d = self.running.pop(0)
        d.callback(label)
        return label

    def labels(self):
        return [label for label, _ in self.running]


class FairnessTests(unittest.TestCase):
    def hasher(self, **kwargs):
        self.runner = ManualRunner()
        hasher = PasswordHasher(reactor, cost=CHEAP_COST, threads=2, runner=self.runner, **kwargs)
        self.jobs = []
        real_hash = hasher.hash

        def hash(*args, **kwargs):
            job = real_hash(*args, **kwargs)
            self.jobs.append(job)
            return job

        hasher.hash = hash
        self.addCleanup(self.abandon, hasher)
        return hasher

    def abandon(self, hasher):
        """Stop the hasher; jobs still queued end with Unavailable, as they should."""
        hasher.stop()
        for job in self.jobs:
            job.addErrback(lambda failure: failure.trap(errors.Unavailable))

    def test_a_flood_from_one_address_does_not_delay_another(self):
        hasher = self.hasher()
        for n in range(10):
            hasher.hash(f"flood{n}", peer="10.0.0.66")
        done = []
        hasher.hash("mine", peer="10.0.0.7").addCallback(done.append)
        self.assertEqual(self.runner.labels(), ["flood0", "flood1"])
        order = [self.runner.finish_one() for _ in range(4)]
        # Lanes are served in turn: the newcomer's job is the second to start.
        self.assertIn("mine", order)
        self.assertEqual(done, ["mine"])

    def test_suspects_wait_until_nobody_else_does(self):
        hasher = self.hasher()
        hasher.hash("busy1", peer="a")
        hasher.hash("busy2", peer="b")
        hasher.hash("guesser", peer="x", suspect=True)
        hasher.hash("honest", peer="c")
        self.runner.finish_one()
        self.assertEqual(self.runner.labels(), ["busy2", "honest"])
        self.runner.finish_one()
        self.assertEqual(self.runner.labels(), ["honest", "guesser"])

    def test_one_address_is_capped_others_are_not(self):
        hasher = self.hasher(max_waiting_per_peer=3)
        for n in range(3):
            hasher.hash(f"f{n}", peer="flood")
        refused = hasher.hash("more", peer="flood")
        self.assertIsInstance(self.failureResultOf(refused).value, errors.RateLimited)
        self.assertEqual(hasher.waiting, 3)
        hasher.hash("other", peer="elsewhere")
        self.assertEqual(hasher.waiting, 4)

    def test_the_queue_and_each_jobs_wait_are_measured(self):
        hasher = self.hasher()
        for n in range(5):
            hasher.hash(f"j{n}", peer="a")
        self.assertEqual((hasher.waiting, hasher.running), (5, 2))
        self.assertEqual(sum(hasher.waits.counts), 2)  # started: waited (a moment)
        self.runner.finish_one()
        self.assertEqual((hasher.waiting, hasher.running), (4, 2))
        self.assertEqual(sum(hasher.waits.counts), 3)
        self.assertGreater(hasher.waits.sum, 0)

    def test_stop_abandons_the_queue_at_once(self):
        hasher = self.hasher()
        jobs = [hasher.hash(f"j{n}", peer=f"p{n}") for n in range(50)]
        hasher.stop()
        for job in jobs[2:]:
            self.assertIsInstance(self.failureResultOf(job).value, errors.Unavailable)
        self.assertEqual(self.runner.labels(), ["j0", "j1"])  # only these ran
        self.assertIsInstance(self.failureResultOf(hasher.hash("late")).value, errors.Unavailable)

    @defer.inlineCallbacks
    def test_stop_returns_fast_with_a_real_backlog(self):
        hasher = PasswordHasher(reactor, cost=(2**14, 8, 1), threads=2)
        hasher.start()
        jobs = [hasher.hash("pw", peer=f"p{n}") for n in range(200)]  # ~5 s of work
        started = time.monotonic()
        hasher.stop()
        self.assertLess(time.monotonic() - started, 2.0)
        results = yield defer.DeferredList(jobs, consumeErrors=True)
        abandoned = [r for ok, r in results if not ok and r.check(errors.Unavailable)]
        self.assertGreaterEqual(len(abandoned), 190)

    def test_suspects_are_never_starved(self):
        hasher = self.hasher()
        for n in range(20):
            hasher.hash(f"loop{n}", peer="busy")  # an address that never fails
        hasher.hash("typo", peer="me", suspect=True)
        started = []
        for _ in range(hasher.SUSPECT_SHARE + 1):
            started.append(self.runner.finish_one())
            if "typo" in self.runner.labels():
                break
        self.assertIn("typo", self.runner.labels())

    def test_a_full_queue_makes_room_for_a_newcomer(self):
        hasher = self.hasher(max_waiting=10, max_waiting_per_peer=10)
        flood = [hasher.hash(f"f{n}", peer="flood") for n in range(10)]
        mine = hasher.hash("mine", peer="newcomer")
        self.assertNoResult(mine)  # queued, not refused
        self.assertIsInstance(self.failureResultOf(flood[-1]).value, errors.RateLimited)
        self.assertEqual(hasher.waiting, 10)
