"""
C{GET /metrics} (docs/protocol.md, "Metrics"): one realm's numbers in the
Prometheus text format, made by C{prometheus_client}'s registry and
exposition, for the addresses of realms.ini's C{metrics_allow} only
(loopback by default); anyone else gets 403.

The hot paths count into plain integers (L{multirealm.core.metrics}); the
L{RealmCollector} turns them into metric families only when a scrape asks.
What already exists as state is read then: connections open, the hash
queue, and each peer's link and outbox (the count that C{listrealms}
shows, read at most once a second off the reactor).  Each realm has a
registry of its own; the C{process_*} figures are the process's, the same
on every realm's port under C{--realm=all}.
"""

import ipaddress
import json

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from twisted.web import resource, server

from multirealm import errors, wire
from multirealm.core.metrics import Histogram
from multirealm.logs import RealmLogger

log = RealmLogger()


def is_allowed(host, networks):
    """Whether client address C{host} (text) is in one of C{networks}."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # not an IP address at all
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack port shows IPv4 clients so
    return any(address in network for network in networks)


def _histogram(name, documentation, labels=()):
    return HistogramMetricFamily(name, documentation, labels=labels)


def _add(family, histogram, labels=()):
    buckets = [(floatToGoString(bound), count) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.sum)


class RealmCollector:
    """
    A C{prometheus_client} collector of one realm: its L{RealmMetrics},
    its store's commits, its password hasher's queue, and the state of its
    links as last read (L{peer_states}, set before each scrape).
    """

    def __init__(self, realm, store, hasher):
        self._realm = realm
        self._metrics = realm.metrics
        self._store = store
        self._hasher = hasher
        # Each peer's L{multirealm.core.links.LinkStates.states} entry; None
        # when they could not be read (the outbox gauges are left out).
        self.peer_states = None

    def collect(self):
        metrics = self._metrics
        yield from self._requests(metrics)
        connections = GaugeMetricFamily(
            "multirealm_connections_open", "Connections open, by kind", labels=["kind"]
        )
        for kind, count in sorted(metrics.connections.items()):
            connections.add_metric([kind], count)
        yield connections
        yield from self._store_families(metrics)
        yield from self._peers(metrics)
        yield CounterMetricFamily(
            "multirealm_events_sent", "Live events pushed to subscribed connections",
            value=metrics.events_sent,
        )
        yield CounterMetricFamily(
            "multirealm_event_overflows",
            "Subscriptions ended by an overflow event (the client read too slowly)",
            value=metrics.event_overflows,
        )
        yield from self._hashes()
        yield from self._files(metrics)

    def _requests(self, metrics):
        requests = CounterMetricFamily(
            "multirealm_requests", "Chat requests answered, by command and code (OK or an error code)",
            labels=["command", "code"],
        )
        by_command = {}
        for (command, code), histogram in sorted(metrics.requests.items()):
            requests.add_metric([command, code], histogram.count)
            merged = by_command.get(command)
            if merged is None:
                merged = by_command[command] = Histogram(histogram.bounds)
            merged.add(histogram)
        yield requests
        latency = _histogram(
            "multirealm_request_seconds",
            "Seconds from a chat request being handled to its reply being ready, by command",
            ["command"],
        )
        for command, histogram in by_command.items():
            _add(latency, histogram, [command])
        yield latency

    def _store_families(self, metrics):
        stored = CounterMetricFamily(
            "multirealm_messages_stored",
            "Messages stored, by kind and origin (local: minted here; peer: from a link)",
            labels=["kind", "origin"],
        )
        for (kind, origin), count in sorted(metrics.stored.items()):
            stored.add_metric([kind, origin], count)
        yield stored
        operations = _histogram(
            "multirealm_commit_operations", "Store operations in each committed transaction"
        )
        _add(operations, self._store.commit_operations)
        yield operations
        seconds = _histogram(
            "multirealm_commit_seconds", "Seconds of each committed transaction, BEGIN to COMMIT"
        )
        _add(seconds, self._store.commit_seconds)
        yield seconds

    def _peers(self, metrics):
        link_up = GaugeMetricFamily(
            "multirealm_peer_link_up",
            "1 while this realm's link to the peer is authenticated (on any of its processes)",
            labels=["peer"],
        )
        link_here = GaugeMetricFamily(
            "multirealm_peer_link_here",
            "1 while this realm's link to the peer is authenticated and runs in this process",
            labels=["peer"],
        )
        here = self._realm.links.linked_here()
        for peer in self._realm.peers:
            link_up.add_metric([peer], 1 if self._realm.links.linked(peer) else 0)
            link_here.add_metric([peer], 1 if peer in here else 0)
        yield link_up
        yield link_here
        if self.peer_states is not None:
            depth = GaugeMetricFamily(
                "multirealm_peer_outbox_messages", "Messages waiting for the peer",
                labels=["peer"],
            )
            age = GaugeMetricFamily(
                "multirealm_peer_outbox_oldest_seconds",
                "Age of the oldest message waiting for the peer (0: none waits)",
                labels=["peer"],
            )
            for state in self.peer_states:
                depth.add_metric([state["name"]], state["pending"])
                age.add_metric([state["name"]], state["oldest_pending_seconds"] or 0)
            yield depth
            yield age
        for name, attribute, documentation in (
            ("multirealm_peer_frames_sent", "frames_sent", "Message and file frames sent"),
            ("multirealm_peer_frames_acknowledged", "frames_acknowledged",
             "Frames the peer answered OK"),
            ("multirealm_peer_frames_refused", "frames_refused",
             "Frames the peer answered with an error code (for now or for good)"),
            ("multirealm_peer_reconnects", "reconnects",
             "Connection attempts after a failed or lost link"),
        ):
            family = CounterMetricFamily(name, documentation, labels=["peer"])
            for peer, counts in sorted(metrics.peers.items()):
                family.add_metric([peer], getattr(counts, attribute))
            yield family

    def _hashes(self):
        hasher = self._hasher
        yield GaugeMetricFamily(
            "multirealm_password_hashes_waiting", "Password hashes queued, not started",
            value=hasher.waiting - hasher.running,
        )
        yield GaugeMetricFamily(
            "multirealm_password_hashes_running", "Password hashes running", value=hasher.running,
        )
        wait = _histogram(
            "multirealm_password_hash_wait_seconds",
            "Seconds a password hash waited in the queue before it started",
        )
        _add(wait, hasher.waits)
        yield wait

    def _files(self, metrics):
        received = CounterMetricFamily(
            "multirealm_file_bytes_in",
            "Bytes of the files of stored messages (local: uploaded here; peer: from a link)",
            labels=["origin"],
        )
        for origin, count in sorted(metrics.file_bytes_in.items()):
            received.add_metric([origin], count)
        yield received
        sent = CounterMetricFamily(
            "multirealm_file_bytes_out", "Bytes of stored files sent, by port", labels=["port"]
        )
        for port, count in sorted(metrics.file_bytes_out.items()):
            sent.add_metric([port], count)
        yield sent


class MetricsResource(resource.Resource):
    """
    C{/metrics} of one realm, for the clients whose address is in
    C{allowed} (ip_network values).  Reads its links' state (one bounded
    read, off the reactor, shared with C{listrealms}), then writes the
    registry in the format the scraper asks for.
    """

    isLeaf = True

    def __init__(self, realm, store, hasher, allowed):
        super().__init__()
        self._realm = realm
        self._allowed = allowed
        self.collector = RealmCollector(realm, store, hasher)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)

    def render(self, request):
        # The address first, whatever the method: another one learns nothing (no 405).
        if not is_allowed(getattr(request.getClientAddress(), "host", None), self._allowed):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"application/json")
            error = errors.Forbidden(
                "metrics are for the addresses of metrics_allow in realms.ini"
            )
            return json.dumps(wire.error_reply(error)).encode("ascii")
        return super().render(request)

    def render_GET(self, request):
        gone = []
        request.notifyFinish().addErrback(gone.append)
        d = self._realm.links.states()
        d.addCallbacks(self._write, self._without_states, (request, gone), None, (request, gone))
        d.addErrback(self._failed, request, gone)
        return server.NOT_DONE_YET

    def _failed(self, failure, request, gone):
        log.failure("metrics of realm {realm} failed", failure, realm=self._realm.name)
        if not gone:
            request.setResponseCode(500)
            request.finish()

    def _without_states(self, failure, request, gone):
        log.failure("metrics: the outbox of realm {realm} could not be read", failure,
                    realm=self._realm.name)
        self._write(None, request, gone)

    def _write(self, states, request, gone):
        if gone:
            return
        self.collector.peer_states = states
        encoder, content_type = choose_encoder(
            (request.getHeader(b"accept") or b"").decode("latin-1")
        )
        body = encoder(self.registry)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.write(body)
        request.finish()
