"""
Build the service tree of one realm: L{build_realm_service}.  The one
place that wires the core to its adapters (storage, chat).
"""

import os
import time

from twisted.application import strports
from twisted.application.internet import (
    SSLClient, StreamServerEndpointService, TCPClient, TimerService,
)
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.threads import deferToThread

from multirealm import tls
from multirealm.connections import bound_accepts, for_this_process, listen_backlog
from multirealm.reuseport import ReusePortEndpoint
from multirealm.admin.server import admin_service
from multirealm.chat.protocol import ChatFactory
from multirealm.federation.link import LinkFactory
from multirealm.federation.queue import PeerQueue
from multirealm.federation.server import RealmServerFactory
from multirealm.web.files import make_site
from multirealm.web.metrics import MetricsResource
from multirealm.web.ws import ChatSocketResource
from multirealm.core.leases import LeasedService, LocalLeases, outbox_lease
from multirealm.core.operator import Operator
from multirealm.core.passwords import PasswordHasher
from multirealm.core.realm import Realm
from multirealm.storage import datadir
from multirealm.storage.files import FileStore
from multirealm.storage import open_store
from multirealm.storage.pg_bus import PostgresBus
from multirealm.storage.pg_lease import PostgresLeases
from multirealm.logs import RealmLogger

log = RealmLogger()

FILES_FOLDER = "files"
SESSION_PURGE_SECONDS = 3600
# How often the holder of a peer's lease reads its outbox for what other
# processes queued (on PostgreSQL; their wake-ups come through the bus).
REREAD_SECONDS = 2.0


def tcp_description(host, port, backlog):
    """The endpoint description of a TCP port on C{host} (IPv6 literals quoted)."""
    return f"tcp:port={port}:interface={endpoints.quoteStringArgument(host)}:backlog={backlog}"


class _PortRecorder:
    """
    An endpoint that keeps the port it listens on as C{port}, so that the
    real number of a port configured as 0 can be read (tests, logs), and
    bounds the connections it accepts at a time (L{bound_accepts}).
    """

    def __init__(self, endpoint):
        self._endpoint = endpoint
        self.port = None

    def listen(self, factory):
        def listening(port):
            if hasattr(port, "numberAccepts"):  # a TCP port (not in every test's fake)
                bound_accepts(port)
            self.port = port
            return port

        return self._endpoint.listen(factory).addCallback(listening)


def listening_service(description, factory, reactor):
    """
    A service listening on the endpoint C{description} while it runs
    (C{strports.service}: binding in C{privilegedStartService}, raising
    L{twisted.internet.error.CannotListenError} at once if the port is
    taken).  Its C{endpoint.port} is the listening port once started.
    """
    service = strports.service(description, factory, reactor=reactor)
    service.endpoint = _PortRecorder(service.endpoint)
    return service


def port_service(realm_config, port, factory, backlog, reactor, secure=False):
    """
    The service of one of C{realm_config}'s ports (over TLS if C{secure}),
    as L{listening_service}.  A realm on PostgreSQL binds it with
    SO_REUSEPORT, so every process of the realm listens on it at once.
    """
    if realm_config.database is None:
        if secure:
            description = tls.listen_description(realm_config.host, port, realm_config, backlog)
        else:
            description = tcp_description(realm_config.host, port, backlog)
        return listening_service(description, factory, reactor)
    options = tls.server_options(realm_config) if secure else None
    endpoint = ReusePortEndpoint(reactor, realm_config.host, port, backlog, options)
    service = StreamServerEndpointService(_PortRecorder(endpoint), factory)
    service._raiseSynchronously = True  # as strports.service: a taken port fails the start
    return service


class _StopsTrying:
    """
    A link's client service: its factory stops reconnecting when it stops.
    Its L{LeasedService} (C{lease}) starts it again when this process takes
    the lease of the peer's outbox again.
    """

    lease = None

    def startService(self):
        self.factory.continueTrying = True  # again, after a lease lost and taken back
        return super().startService()

    def stopService(self):
        if self.lease is not None and self.lease.running:
            self.factory.stop_reason = "this process lost the lease of the outbox"
        else:
            self.factory.stop_reason = "this realm stops"
        self.factory.stopTrying()  # or it reconnects after the realm stopped
        return super().stopService()


class LeasesService(Service):
    """Serves the realm's leases (an L{ILeases}) while it runs."""

    def __init__(self, leases):
        self.leases = leases

    def startService(self):
        Service.startService(self)
        self.leases.start()

    def stopService(self):
        Service.stopService(self)
        return self.leases.stop()


class LinkService(_StopsTrying, TCPClient):
    """Keeps this realm's link to one peer up while the realm runs (TCP)."""

    def __init__(self, host, port, factory, reactor):
        TCPClient.__init__(self, host, port, factory, reactor=reactor)
        self.factory = factory


class TLSLinkService(_StopsTrying, SSLClient):
    """As L{LinkService}, to a peer whose realm port is TLS."""

    def __init__(self, host, port, factory, options, reactor):
        SSLClient.__init__(self, host, port, factory, options, reactor=reactor)
        self.factory = factory


class RealmCoreService(Service):
    """Runs the store's database thread and the password-hashing pool."""

    def __init__(self, realm, store, hasher, files=None, claim=None):
        self.realm = realm
        self.store = store
        self.hasher = hasher
        self.files = files
        self.claim = claim  # the lock on the data directory (storage.datadir)

    def startService(self):
        self.store.start()
        self.hasher.start()
        if self.realm.cluster is not None:
            self.realm.cluster.start()
        Service.startService(self)
        if self.files is not None:
            # Files a crash left without their message (renamed, then the
            # commit never came): removed once the store says which are known.
            started = time.time()
            self.store.file_ids().addCallback(
                lambda known: deferToThread(self.files.remove_orphans, known, started)
            ).addErrback(
                lambda failure: log.failure("sweeping orphan files failed", failure,
                                           realm=self.realm)
            )

    def stopService(self):
        # Listeners stop first (MultiService stops children in reverse),
        # then every queued store operation still commits before we return.
        Service.stopService(self)
        self.hasher.stop()
        self.realm.presence.stop()  # who is online now was last seen now
        if self.realm.cluster is None:
            stopped = self.store.stop()
        else:
            # The others hear that our users are offline here; then the store closes.
            stopped = self.realm.cluster.stop().addCallback(lambda _: self.store.stop())
        if self.claim is not None:
            stopped.addBoth(lambda result: self.claim.close() or result)
        return stopped


def build_realm_service(
    config, realm_name, reactor=None, hasher=None, clock=None, connections=None
):
    """
    The L{MultiService} of realm C{realm_name} of the L{NetworkConfig}
    C{config}.  Opens the realm's database (creating its data directory
    and bringing its schema up to date), so a bad data directory fails
    here, before anything listens.

    C{clock} (default: C{reactor}) gives the realm its time and runs its
    timers.

    C{connections} (a L{multirealm.connections.ConnectionLimits}; default:
    one for this realm alone) admits every connection of every port: one
    for the whole process when it runs several realms.

    Its children, by name: C{core} (a L{RealmCoreService}, whose C{realm} is
    the L{Realm}), C{admin} (the admin socket, whose C{path} is its path),
    C{chat} (see L{listening_service}) and C{link-PEER} for each peer (a
    L{LeasedService} whose C{service} is the link).

    A realm on PostgreSQL (C{database}) may run as several processes: its
    data directory is shared, its ports are bound with SO_REUSEPORT, and
    the link to each peer runs in the process holding its lease.
    """
    if reactor is None:
        from twisted.internet import reactor
    clock = clock or reactor
    limits = config.limits
    connections = connections or for_this_process(limits, reactor)
    backlog = listen_backlog(limits.listen_backlog)
    realm_config = config.realm(realm_name)
    tls.check_files(realm_config)
    # Before anything is opened or bound: on SQLite this process alone.
    shared = realm_config.database is not None
    claim = datadir.claim(realm_config.data_dir, realm_name, shared)
    store = open_store(realm_config, realm_name, reactor)
    hasher = hasher or PasswordHasher(
        reactor, max_waiting_per_peer=config.limits.hashes_per_address
    )
    files = FileStore(os.path.join(realm_config.data_dir, FILES_FOLDER), shared)
    files.sweep()  # what a crash left half-received
    bus = None
    if realm_config.database is not None:
        # Several processes share the realm: they hear of each other through its database.
        bus = PostgresBus(realm_config.database, realm_name, reactor)
    realm = Realm(
        realm_name, realm_config.peers, config.limits, store, hasher, clock, files, bus=bus
    )

    top = MultiService()
    core = RealmCoreService(realm, store, hasher, files, claim)
    core.setName("core")
    core.setServiceParent(top)
    # The operator's multirealm-admin, on a UNIX socket only this user can reach.
    admin = admin_service(
        realm_config.data_dir, Operator(realm, store, hasher), reactor, shared
    )
    if admin is not None:
        admin.setName("admin")
        admin.setServiceParent(top)
    # Expired sessions are refused when used; this also removes the ones
    # nobody uses again, so the table does not grow for ever.
    purge = TimerService(SESSION_PURGE_SECONDS, realm.purge_expired_sessions)
    purge.clock = clock
    purge.setName("session-purge")
    purge.setServiceParent(top)
    chat_factory = ChatFactory(realm, config.limits, clock, connections=connections)
    chat = port_service(realm_config, realm_config.chat_port, chat_factory, backlog, reactor)
    chat.setName("chat")
    chat.setServiceParent(top)
    if realm_config.tls_port is not None:
        # The same chat, over TLS (one factory: one live delivery, one reply budget).
        chat_tls = port_service(
            realm_config, realm_config.tls_port, chat_factory, backlog, reactor, secure=True
        )
        chat_tls.setName("chat-tls")
        chat_tls.setServiceParent(top)
    site = make_site(realm, limits, connections, reactor)
    # GET /metrics, for the operator's scraper (metrics_allow: loopback by default).
    site.resource.putChild(
        b"metrics", MetricsResource(realm, store, hasher, realm_config.metrics_allow)
    )
    # The same chat over a WebSocket (one factory: one live delivery, one reply budget).
    site.resource.putChild(
        b"ws", ChatSocketResource(
            chat_factory.build_upgraded, limits.max_line_bytes, realm_config.web_origins
        )
    )
    http = port_service(realm_config, realm_config.http_port, site, backlog, reactor)
    http.setName("http")
    http.setServiceParent(top)
    # The receiving end of peers' links: over TLS when the realm has a certificate.
    server = RealmServerFactory(
        realm, config.link_secret, config.limits.max_line_bytes, clock, connections
    )
    links = port_service(
        realm_config, realm_config.realm_port, server, backlog, reactor,
        secure=realm_config.tls_cert is not None,
    )
    links.setName("realm-port")
    links.setServiceParent(top)
    # The outbox to each peer is drained by one process of the realm at a
    # time: the one holding its lease (always this one on SQLite).
    if realm_config.database is None:
        leases, reread = LocalLeases(), None
    else:
        leases, reread = PostgresLeases(realm_config.database, realm_name, reactor), REREAD_SECONDS
    leases_service = LeasesService(leases)
    leases_service.setName("leases")
    leases_service.setServiceParent(top)
    for peer in realm_config.peers:
        queue = PeerQueue(realm, peer, reread_seconds=reread)
        realm.notifier.subscribe(queue)
        peer_config = config.realm(peer)
        factory = LinkFactory(
            realm, peer, config.link_secret(realm_name, peer), queue,
            config.limits.max_line_bytes, clock if clock is not reactor else None,
            max_delay=config.limits.link_max_delay,
        )
        # A peer that links to us is up: our link to it need not wait out its backoff.
        server.on_peer_seen(peer, factory.peer_seen)
        if peer_config.tls_cert is not None:
            link = TLSLinkService(
                peer_config.host, peer_config.realm_port, factory,
                tls.client_options(realm_config, peer_config), reactor=reactor,
            )
        else:
            link = LinkService(peer_config.host, peer_config.realm_port, factory, reactor=reactor)
        link.lease = LeasedService(
            leases, outbox_lease(realm_name, peer), link, clock, realm_name,
            f"the outbox to realm {peer}",
        )
        link.lease.setName(f"link-{peer}")
        link.lease.setServiceParent(top)
    return top
