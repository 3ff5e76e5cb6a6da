"""
Build the service tree of one realm: L{build_realm_service}.
"""

import os

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service

from multirealm.chat import ChatFactory
from multirealm.passwords import PasswordHasher
from multirealm.realm import Realm
from multirealm.store import SQLiteStore

DATABASE_FILE = "realm.sqlite3"
SESSION_PURGE_SECONDS = 3600


class ListeningService(Service):
    """
    Listen on a TCP port while running.  C{port} is the listening port once
    started (its C{getHost().port} is the real number when configured as 0).
    Binding happens in C{privilegedStartService} and raises
    L{twisted.internet.error.CannotListenError} at once if the port is taken.
    """

    def __init__(self, reactor, port, factory, interface):
        self._reactor = reactor
        self._port_number = port
        self._factory = factory
        self._interface = interface
        self.port = None

    def privilegedStartService(self):
        self.port = self._reactor.listenTCP(
            self._port_number, self._factory, interface=self._interface
        )
        Service.privilegedStartService(self)

    def stopService(self):
        Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


class RealmCoreService(Service):
    """Runs the store's database thread and the password-hashing pool."""

    def __init__(self, realm, store, hasher):
        self.realm = realm
        self.store = store
        self.hasher = hasher

    def startService(self):
        self.store.start()
        self.hasher.start()
        Service.startService(self)

    def stopService(self):
        # Listeners stop first (MultiService stops children in reverse),
        # then every queued store operation still commits before we return.
        Service.stopService(self)
        self.hasher.stop()
        return self.store.stop()


def build_realm_service(config, realm_name, reactor=None, hasher=None):
    """
    The L{MultiService} of realm C{realm_name} of the L{NetworkConfig}
    C{config}.  Opens the realm's database (creating its data directory),
    so a bad data directory fails here, before anything listens.

    Its children, by name: C{core} (a L{RealmCoreService}, whose C{realm} is
    the L{Realm}) and C{chat} (a L{ListeningService}).
    """
    if reactor is None:
        from twisted.internet import reactor
    realm_config = config.realm(realm_name)
    store = SQLiteStore(os.path.join(realm_config.data_dir, DATABASE_FILE), realm_name, reactor)
    hasher = hasher or PasswordHasher(reactor)
    realm = Realm(realm_name, realm_config.peers, config.limits, store, hasher, reactor)

    top = MultiService()
    core = RealmCoreService(realm, store, hasher)
    core.setName("core")
    core.setServiceParent(top)
    # Expired sessions are refused when used; this also removes the ones
    # nobody uses again, so the table does not grow for ever.
    purge = TimerService(SESSION_PURGE_SECONDS, realm.purge_expired_sessions)
    purge.clock = reactor
    purge.setServiceParent(top)
    chat = ListeningService(
        reactor,
        realm_config.chat_port,
        ChatFactory(realm, config.limits, reactor),
        realm_config.host,
    )
    chat.setName("chat")
    chat.setServiceParent(top)
    return top
