import threading

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
