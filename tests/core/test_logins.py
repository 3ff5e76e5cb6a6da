"""
Failed logins cost the address that fails them; the owner of an account
under attack still logs in; registrations are rationed per address.
"""

import attrs
from twisted.internet import defer, task
from twisted.trial import unittest

from multirealm import errors
from multirealm.config import Limits
from multirealm.core.logins import LoginGuard
from tests.helpers import make_realm


class LoginThrottleTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.successResultOf(self.realm.register("alice", "right", peer="owner"))

    def attempt(self, password, peer):
        return self.realm.login("alice", password, peer=peer)

    def test_failures_are_answered_later_and_later(self):
        delays = []
        for n in range(6):  # one address guessing at several accounts
            d = self.realm.login(f"user{n}", "wrong", peer="guesser")
            waited = 0.0
            while not d.called:
                self.realm.clock.advance(0.25)
                waited += 0.25
            self.assertIsInstance(self.failureResultOf(d).value, errors.BadCredentials)
            delays.append(waited)
        self.assertEqual(delays[0], 0.0)
        self.assertEqual(delays[1:], [0.5, 1.0, 2.0, 4.0, 8.0])

    def test_a_guessing_address_is_refused_the_account_but_its_owner_is_not(self):
        for _ in range(LoginGuard.PER_PAIR):
            d = self.attempt("wrong", "guesser")
            self.realm.clock.advance(LoginGuard.MAX_DELAY)
            self.failureResultOf(d)
        # Even the right password is refused from there now ...
        refused = self.attempt("right", "guesser")
        self.assertIsInstance(self.failureResultOf(refused).value, errors.RateLimited)
        # ... but the owner, from an address with no failures, logs in.
        self.assertTrue(self.successResultOf(self.attempt("right", "owner")))
        # The window passes: the guesser may try again.
        self.realm.clock.advance(LoginGuard.WINDOW + 1)
        self.assertTrue(self.successResultOf(self.attempt("right", "guesser")))

    def test_a_distributed_guess_refuses_the_suspects_only(self):
        for n in range(LoginGuard.PER_ACCOUNT):
            d = self.attempt("wrong", f"bot{n}")
            self.realm.clock.advance(LoginGuard.MAX_DELAY)
            self.failureResultOf(d)
        again = self.attempt("wrong", "bot7")
        self.assertIsInstance(self.failureResultOf(again).value, errors.RateLimited)
        self.assertTrue(self.successResultOf(self.attempt("right", "owner")))

    def test_an_address_with_failures_is_a_suspect(self):
        self.assertFalse(self.realm.logins.is_suspect("guesser"))
        self.failureResultOf(self.attempt("wrong", "guesser"))
        self.assertTrue(self.realm.logins.is_suspect("guesser"))
        self.assertFalse(self.realm.logins.is_suspect("owner"))


class RegistrationRateTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_registrations_are_rationed_per_address(self):
        limits = attrs.evolve(Limits(), registration_burst=3, registrations_per_hour=60)
        realm = make_realm(self, limits=limits)
        for n in range(3):
            yield realm.register(f"u{n}", "pw", peer="squatter")
        with self.assertRaises(errors.QuotaExceeded):
            yield realm.register("u3", "pw", peer="squatter")
        yield realm.register("mine", "pw", peer="someone-else")
        realm.clock.advance(60)  # one more an hour: one a minute
        yield realm.register("u3", "pw", peer="squatter")


class BoundedTablesTests(unittest.TestCase):
    def test_a_huge_or_invalid_account_name_is_not_kept(self):
        realm = make_realm(self)
        self.failureResultOf(realm.login("x" * 60_000, "pw", peer="p1"))
        self.failureResultOf(realm.login("../../etc", "pw", peer="p2"))  # first failure: no delay
        kept = realm.logins._pairs._entries  # the table itself: what it holds, not how
        self.assertTrue(all(len(key[1]) < 64 for key in kept))

    def test_a_thousand_failures_keep_the_delay_bounded(self):
        guard = LoginGuard(self.clock())
        delays = [guard.failed("p", f"user{n}") for n in range(2000)]
        self.assertEqual(max(delays), LoginGuard.MAX_DELAY)

    def test_a_trickle_of_guesses_is_forgotten_window_by_window(self):
        clock = self.clock()
        guard = LoginGuard(clock)
        for _ in range(LoginGuard.PER_PAIR - 1):
            guard.failed("guesser", "alice")
            clock.advance(LoginGuard.WINDOW / LoginGuard.PER_PAIR)
        clock.advance(LoginGuard.WINDOW)  # a window from the first failure is over
        guard.failed("guesser", "alice")
        guard.check("guesser", "alice")  # not refused: the old ones are forgotten

    def test_a_typo_elsewhere_does_not_lock_the_owner_out_of_an_attacked_account(self):
        guard = LoginGuard(self.clock())
        for n in range(LoginGuard.PER_ACCOUNT):
            guard.failed(f"bot{n}", "alice")
        guard.failed("owner", "bob")  # a typo on another account
        guard.check("owner", "alice")  # the owner may still try alice

    def clock(self):
        return task.Clock()
