"""
Password hashing with salted scrypt, run off the reactor thread, fairly.

A stored hash reads C{scrypt$<n>$<r>$<p>$<salt hex>$<key hex>}, so the cost
can be raised later without breaking existing accounts.

Hashing is the most expensive thing a client can ask for (about 50 ms of a
core each), so L{PasswordHasher} does not hand every request to a thread
pool's first-come queue.  It keeps its own queue, one lane per client
address, and serves the lanes in turn: a flood from one address waits
behind itself, not in front of everyone else.  Addresses with recent
failed logins (C{suspect}) get one turn in C{SUSPECT_SHARE}: they wait
behind everyone else without ever being starved.  When the queue is full,
the longest lane gives up its newest job, so a newcomer gets a place.
Only as many jobs as there are threads are in the pool at once, so
stopping abandons the queue at once instead of hashing it all first.
"""

import hashlib
import hmac
import os
from collections import OrderedDict, deque
from time import perf_counter

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from multirealm import errors
from multirealm.core.metrics import HASH_WAIT_SECONDS, Histogram

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

    @param max_waiting: hashes waiting or running at once across all
        addresses; past it, L{errors.RateLimited} at once.
    @param max_waiting_per_peer: the same for one address.
    @param runner: C{runner(function, *args)} runs a job off the reactor
        thread and returns a Deferred (tests give their own); the default
        is this hasher's thread pool.
    """

    SUSPECT_SHARE = 4

    def __init__(
        self, reactor, cost=DEFAULT_COST, threads=2, max_waiting=1024, max_waiting_per_peer=64,
        runner=None,
    ):
        self._reactor = reactor
        self._cost = cost
        self._threads = threads
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="multirealm-passwords")
        self._run = runner or self._in_pool
        self._max_waiting = max_waiting
        self._max_per_peer = max_waiting_per_peer
        # Two sets of lanes, served in turn within a set: peer -> deque of
        # (function, args, deferred, when queued).  Suspects are served
        # after the rest.
        self._lanes = {False: OrderedDict(), True: OrderedDict()}
        self._queued = {}  # peer -> jobs waiting or running
        self._waiting = 0
        self._running = 0
        self._turns = 0
        self._stopped = False
        self.waits = Histogram(HASH_WAIT_SECONDS)  # seconds from queued to started (metrics)

    def start(self):
        self._stopped = False
        self._pool.start()

    def stop(self):
        """Abandon every queued job (L{errors.Unavailable}); wait only for the running ones."""
        if self._stopped:
            return
        self._stopped = True
        for lanes in self._lanes.values():
            while lanes:
                _, lane = lanes.popitem(last=False)
                for _, _, deferred, _ in lane:
                    self._waiting -= 1
                    deferred.errback(errors.Unavailable("the realm is shutting down; try again"))
        self._queued.clear()
        self._pool.stop()

    def hash(self, password, peer=None, suspect=False):
        return self._submit(peer, suspect, hash_password, password, self._cost)

    def verify(self, password, stored, peer=None, suspect=False):
        return self._submit(peer, suspect, verify_password, password, stored, self._cost)

    @property
    def waiting(self):
        """Jobs waiting or running."""
        return self._waiting

    @property
    def running(self):
        """Jobs running."""
        return self._running

    def _in_pool(self, function, *args):
        return deferToThreadPool(self._reactor, self._pool, function, *args)

    def _submit(self, peer, suspect, function, *args):
        if self._stopped:
            return defer.fail(errors.Unavailable("the realm is shutting down; try again"))
        if self._queued.get(peer, 0) >= self._max_per_peer:
            return defer.fail(
                errors.RateLimited("too many logins at once from your address: try again shortly")
            )
        if self._waiting >= self._max_waiting and not self._make_room(peer):
            return defer.fail(errors.RateLimited("too many logins at once: try again shortly"))
        deferred = defer.Deferred()
        lanes = self._lanes[bool(suspect)]
        lane = lanes.get(peer)
        if lane is None:
            lane = lanes[peer] = deque()
        lane.append((function, args, deferred, perf_counter()))
        self._queued[peer] = self._queued.get(peer, 0) + 1
        self._waiting += 1
        self._next()
        return deferred

    def _make_room(self, peer):
        """
        The queue is full: the longest lane (if longer than C{peer}'s) gives
        up its newest job, refused.  True if there is room now.
        """
        mine = self._queued.get(peer, 0)
        longest = None  # (jobs waiting, peer, its set of lanes)
        for lanes in self._lanes.values():
            for other, lane in lanes.items():
                if longest is None or len(lane) > longest[0]:
                    longest = (len(lane), other, lanes)
        if longest is None or longest[0] <= mine + 1:
            return False
        _, other, lanes = longest
        lane = lanes[other]
        _, _, refused, _ = lane.pop()
        if not lane:
            del lanes[other]
        self._waiting -= 1
        self._queued[other] -= 1
        refused.errback(errors.RateLimited("too many logins at once: try again shortly"))
        return True

    def _next(self):
        """
        Start queued jobs while a thread is free: each lane in turn; lanes
        of suspects one turn in C{SUSPECT_SHARE}, or when no one else waits.
        """
        while self._running < self._threads and not self._stopped:
            clean, suspects = self._lanes[False], self._lanes[True]
            if not (clean or suspects):
                return
            self._turns += 1
            if suspects and (not clean or self._turns % self.SUSPECT_SHARE == 0):
                lanes = suspects
            else:
                lanes = clean
            peer, lane = lanes.popitem(last=False)
            function, args, deferred, queued = lane.popleft()
            self.waits.observe(perf_counter() - queued)
            if lane:
                lanes[peer] = lane  # back of the line for its next job
            self._running += 1
            self._run(function, *args).addBoth(self._done, peer, deferred)

    def _done(self, result, peer, deferred):
        self._running -= 1
        self._waiting -= 1
        left = self._queued.get(peer, 1) - 1
        if left:
            self._queued[peer] = left
        else:
            self._queued.pop(peer, None)
        deferred.callback(result)  # a Failure goes down the errback chain
        self._next()
