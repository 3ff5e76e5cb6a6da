"""
Failed logins cost the one who fails them, not the realm or the account's
owner (L{LoginGuard}); registrations are rationed per address
(L{RegistrationRate}).

Everything here is kept per client address (or per address and account)
in bounded, least-recently-used tables, and forgotten after C{WINDOW}
seconds without a failure.
"""

from collections import OrderedDict

from multirealm import errors
from multirealm.names import is_valid_name
from multirealm.ratelimit import TokenBucket


def _account_key(account):
    """An account as a table key: folded, and bounded (any invalid name is one key)."""
    return account.lower() if is_valid_name(account) else "<invalid name>"


class _Recent:
    """
    key -> (failures, start of their window): failures counted over
    C{window} seconds from the first, then forgotten (so a slow trickle of
    guesses does not keep a count alive for ever); bounded in keys.
    """

    def __init__(self, clock, window, max_keys):
        self._clock = clock
        self._window = window
        self._max = max_keys
        self._entries = OrderedDict()

    def count(self, key):
        entry = self._entries.get(key)
        if entry is None:
            return 0
        failures, since = entry
        if self._clock.seconds() - since > self._window:
            del self._entries[key]
            return 0
        return failures

    def add(self, key):
        failures = self.count(key)
        since = self._entries[key][1] if failures else self._clock.seconds()
        self._entries[key] = (failures + 1, since)
        self._entries.move_to_end(key)
        failures += 1
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return failures

    def forget(self, key):
        self._entries.pop(key, None)


class LoginGuard:
    """
    Brute force is throttled where it comes from:

      - every failed login is answered after a delay that doubles with the
        address's recent failures (none for the first, then 0.5 s, 1 s, ...
        up to C{MAX_DELAY}); the connection waits, the realm does not;
      - an address with recent failures is a I{suspect}: its hashes queue
        behind everyone else's (L{multirealm.core.passwords});
      - an address that failed C{PER_PAIR} times on one account is refused
        that account (C{rate_limited}) until the window passes; and when an
        account has C{PER_ACCOUNT} recent failures from anywhere (a
        distributed guess), every address that failed on it is refused it.

    An address that has not failed on an account is never refused it, so
    the real owner of an account under attack still logs in (unless the
    owner shares an address with the guesser, behind one NAT: addresses
    are all a realm can tell apart).
    """

    WINDOW = 600.0
    MAX_DELAY = 8.0
    PER_PAIR = 5
    PER_ACCOUNT = 50
    MAX_KEYS = 100_000

    def __init__(self, clock):
        self._peers = _Recent(clock, self.WINDOW, self.MAX_KEYS)
        self._pairs = _Recent(clock, self.WINDOW, self.MAX_KEYS)
        self._accounts = _Recent(clock, self.WINDOW, self.MAX_KEYS)

    def is_suspect(self, peer):
        return self._peers.count(peer) > 0

    def check(self, peer, account):
        """Raise L{errors.RateLimited} if C{peer} may not try C{account} now."""
        key = _account_key(account)
        tried = self._pairs.count((peer, key))
        if tried >= self.PER_PAIR or (tried and self._accounts.count(key) >= self.PER_ACCOUNT):
            raise errors.RateLimited(
                "too many failed logins for this account from your address: try again later"
            )

    def failed(self, peer, account):
        """Record a failure; return the seconds to wait before answering it."""
        key = _account_key(account)
        self._pairs.add((peer, key))
        self._accounts.add(key)
        failures = self._peers.add(peer)
        if failures == 1:
            return 0.0
        return min(self.MAX_DELAY, 0.25 * 2 ** min(failures - 1, 6))

    def succeeded(self, peer, account):
        self._pairs.forget((peer, _account_key(account)))


class RegistrationRate:
    """
    A token bucket per address: C{burst} registrations at once, then
    C{per_hour}.  Past it: L{errors.QuotaExceeded}.
    """

    MAX_PEERS = 100_000

    def __init__(self, clock, per_hour, burst):
        self._clock = clock
        self._rate = per_hour / 3600.0
        self._burst = burst
        self._buckets = OrderedDict()

    def take(self, peer):
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket(self._rate, self._burst, self._clock)
            if len(self._buckets) > self.MAX_PEERS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(peer)
        if not bucket.allow():
            raise errors.QuotaExceeded(
                "too many accounts registered from your address: try again later"
            )
