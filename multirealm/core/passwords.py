"""
Password hashing with salted scrypt, run off the reactor thread.

A stored hash reads C{scrypt$<n>$<r>$<p>$<salt hex>$<key hex>}, so the cost
can be raised later without breaking existing accounts.
"""

import hashlib
import hmac
import os

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from multirealm import errors

# 16 MiB and about 50 ms a hash: OWASP's floor for scrypt.
DEFAULT_COST = (2**14, 8, 1)


def _derive(password, salt, n, r, p):
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 1024 * 1024, dklen=32
    )


def hash_password(password, cost=DEFAULT_COST):
    n, r, p = cost
    salt = os.urandom(16)
    key = _derive(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def verify_password(password, stored, cost=DEFAULT_COST):
    """
    True if C{password} matches C{stored}.  With C{stored} None (no such
    user) a hash is computed all the same, so a wrong user and a wrong
    password take the same time.
    """
    if stored is None:
        hash_password(password, cost)
        return False
    scheme, n, r, p, salt, key = stored.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    candidate = _derive(password, bytes.fromhex(salt), int(n), int(r), int(p))
    return hmac.compare_digest(candidate, bytes.fromhex(key))


class PasswordHasher:
    """
    Hashes and verifies passwords in a small thread pool of its own, so a
    burst of C{register}/C{auth} never stalls the reactor (scrypt releases
    the GIL).  L{start} and L{stop} follow the realm service.

    At most C{max_waiting} hashes wait or run at once, across all
    connections: past that a request fails at once with
    L{errors.RateLimited} instead of queueing ever more work (each hash
    costs ~50 ms of a core; 1,024 is about 25 s of backlog on two threads,
    room for every client of a busy realm logging in at once).
    """

    def __init__(self, reactor, cost=DEFAULT_COST, threads=2, max_waiting=1024):
        self._reactor = reactor
        self._cost = cost
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="multirealm-passwords")
        self._max_waiting = max_waiting
        self._waiting = 0

    def start(self):
        self._pool.start()

    def stop(self):
        self._pool.stop()

    def hash(self, password):
        return self._in_pool(hash_password, password, self._cost)

    def verify(self, password, stored):
        return self._in_pool(verify_password, password, stored, self._cost)

    def _in_pool(self, function, *args):
        if self._waiting >= self._max_waiting:
            return defer.fail(errors.RateLimited("too many logins at once: try again shortly"))
        self._waiting += 1

        def done(result):
            self._waiting -= 1
            return result

        return deferToThreadPool(self._reactor, self._pool, function, *args).addBoth(done)
