"""
What a realm counts for its operator (C{GET /metrics}, read by
L{multirealm.web.metrics}): plain integers and fixed-bucket histograms
that the adapters bump on their hot paths, and nothing else.

No metrics library here: a request must cost a dict update and a bisect,
not a lock per sample.  The Prometheus families are made from these
numbers only when a scrape asks (a collector in the web adapter).

Every label value is bounded by construction: command names come from the
command table (anything else is C{unknown}), codes from L{multirealm.errors},
peers from realms.ini, message kinds from L{multirealm.model}; never a user
name or an address.
"""

from bisect import bisect_left

from zope.interface import implementer

from multirealm.core.interfaces import IMessageObserver

# Upper bounds (le) of the buckets, in seconds or operations.
REQUEST_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
COMMIT_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COMMIT_OPERATIONS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
HASH_WAIT_SECONDS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The kinds of connection counted open.
CONNECTION_KINDS = ("chat", "chat_tls", "websocket", "realm_in", "realm_out")
# The ports a stored file's bytes are sent by.
FILE_PORTS = ("chat", "chat_tls", "websocket", "http", "realm")


class Histogram:
    """
    Observations counted into fixed buckets: C{counts[i]} is how many were
    at most C{bounds[i]} (and above the bound before); the last, above
    every bound.  One writer thread at a time (the reactor's, or the
    database thread's for a store's own); a scrape only reads.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0

    def observe(self, value, times=1):
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    @property
    def count(self):
        return sum(self.counts)

    def add(self, other):
        """Count C{other}'s observations (same bounds) in this one too."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.sum += other.sum

    def cumulative(self):
        """C{[(bound, observations at most bound)...]}, the last bound C{inf}."""
        total, out = 0, []
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            total += count
            out.append((bound, total))
        return out


class PeerCounts:
    """What went over this realm's link to one peer, since start."""

    __slots__ = ("frames_sent", "frames_acknowledged", "frames_refused", "reconnects")

    def __init__(self):
        self.frames_sent = 0  # message and file frames written
        self.frames_acknowledged = 0  # answered OK
        self.frames_refused = 0  # answered with an error code (for now or for good)
        self.reconnects = 0  # connection attempts after a failed or lost one


@implementer(IMessageObserver)
class RealmMetrics:
    """
    The counters of one realm.  Adapters bump the attributes directly;
    the realm's notifier tells it of every stored message.

    @ivar requests: C{{(command, code): Histogram}} of the seconds from a
        request being handled to its reply being ready, code C{OK} or an
        error code: one histogram counts and times (one update a request).
    @ivar connections: C{{kind: connections open}}.
    @ivar stored: C{{(kind, origin): messages}}, origin C{local} (minted
        here) or C{peer} (received over a link).
    @ivar file_bytes_in: C{{origin: bytes}} of the files of stored messages.
    @ivar file_bytes_out: C{{port: bytes}} of stored files sent (counted
        as the sending starts).
    @ivar peers: C{{peer: PeerCounts}}, one per peer of realms.ini.
    """

    def __init__(self, name, peers):
        self.name = name
        self.requests = {}
        self.connections = dict.fromkeys(CONNECTION_KINDS, 0)
        self.stored = {}
        self.file_bytes_in = {"local": 0, "peer": 0}
        self.file_bytes_out = dict.fromkeys(FILE_PORTS, 0)
        self.events_sent = 0
        self.event_overflows = 0
        self.peers = {peer: PeerCounts() for peer in peers}

    def peer(self, name):
        """The L{PeerCounts} of peer C{name} (a realm of realms.ini)."""
        counts = self.peers.get(name)
        if counts is None:
            counts = self.peers[name] = PeerCounts()
        return counts

    def request(self, command, code, seconds, times=1):
        """C{times} requests of C{command} answered C{code} after C{seconds}."""
        histogram = self.requests.get((command, code))
        if histogram is None:
            histogram = self.requests[command, code] = Histogram(REQUEST_SECONDS)
        histogram.observe(seconds, times)

    def messages_committed(self, deliveries):
        stored, name = self.stored, self.name
        for delivery in deliveries:
            message = delivery.message
            origin = "local" if delivery.origin == name else "peer"
            key = (message.kind, origin)
            stored[key] = stored.get(key, 0) + 1
            if message.file is not None:
                self.file_bytes_in[origin] += message.file.size
