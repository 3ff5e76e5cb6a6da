"""
The state of this realm's links as C{listrealms} shows it: which peers
are linked, the last thing that went wrong with each, and how many
messages wait for each.  The federation adapter reports into it through
the realm; it knows no sockets.

A realm on several processes runs the link to a peer in one of them (the
holder of its outbox lease): each process tells the others what its links
do (L{multirealm.core.cluster_links}), so that every one answers with the
realm's view: linked while linked on any process, the newest error of any.
"""

from datetime import datetime

from twisted.internet import defer
from twisted.python.failure import Failure

from multirealm.model import format_timestamp


class LinkStates:
    """
    @param peers: the names of the realms this one links to.
    @param store: the L{multirealm.core.interfaces.IStore} whose outbox
        is counted.
    @param clock: an L{IReactorTime}.
    """

    # Counting the outbox reads every waiting row: at most once a second,
    # however many listrealms are asked for meanwhile.
    PENDING_COUNTS_SECONDS = 1.0

    def __init__(self, peers, store, clock):
        self._peers = peers
        self._store = store
        self._clock = clock
        self._linked = set()  # peers with an authenticated link out
        self._errors = {}  # peer -> (when, what) went wrong last
        self._counted = (0.0, None)  # (when, {realm: messages waiting}) of the last count
        self._counting = []  # Deferreds waiting for the count in progress
        # The L{multirealm.core.cluster_links.OtherLinks} of the realm's other processes, if any.
        self.cluster = None

    def set_linked(self, peer, linked):
        if linked:
            self._linked.add(peer)
        else:
            self._linked.discard(peer)
        if self.cluster is not None:
            self.cluster.local_linked(peer, linked)

    def linked(self, peer):
        """Whether the link to C{peer} is up (authenticated), here or on another process."""
        return peer in self._linked or (
            self.cluster is not None and self.cluster.linked_elsewhere(peer)
        )

    def linked_here(self):
        """The peers whose link runs (authenticated) in this process."""
        return set(self._linked)

    def set_error(self, peer, error):
        at = format_timestamp(self._clock.seconds())
        self._errors[peer] = (at, error)
        if self.cluster is not None:
            self.cluster.local_error(peer, at, error)

    def error_elsewhere(self, peer, at, error):
        """Another process's link to C{peer} failed at C{at}: the last error if the newest."""
        if peer in self._peers and at >= self._errors.get(peer, ("", None))[0]:
            self._errors[peer] = (at, error)

    def errors(self):
        """{peer: (when, what)}: the last thing that went wrong with each link."""
        return dict(self._errors)

    def states(self):
        """
        Fires with each peer's link state, how many messages wait for it
        and for how long the oldest has, and the last error of its link.
        """
        return self._pending_counts().addCallback(
            lambda pending: [self._state(peer, pending.get(peer)) for peer in self._peers]
        )

    def _state(self, peer, pending):
        count, oldest = pending or (0, None)
        age = None
        if oldest is not None:
            try:
                age = datetime.fromisoformat(oldest).timestamp()
            except ValueError:
                pass
            else:
                age = max(0, int(self._clock.seconds() - age))
        error_at, error = self._errors.get(peer, (None, None))
        return {
            "name": peer,
            "linked": self.linked(peer),
            "pending": count,
            "oldest_pending_seconds": age,
            "last_error": error,
            "last_error_at": error_at,
        }

    def _pending_counts(self):
        now = self._clock.seconds()
        counted_at, counts = self._counted
        if counts is not None and now - counted_at < self.PENDING_COUNTS_SECONDS:
            return defer.succeed(counts)
        waiter = defer.Deferred()
        self._counting.append(waiter)
        if len(self._counting) == 1:
            self._store.pending_counts().addBoth(self._counted_now, now)
        return waiter

    def _counted_now(self, result, started):
        if not isinstance(result, Failure):
            self._counted = (started, result)
        waiters, self._counting = self._counting, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
