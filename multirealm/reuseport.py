"""
A TCP port several processes of one realm listen on at once
(L{ReusePortEndpoint}): each binds it with C{SO_REUSEPORT} and the kernel
spreads new connections between them.  Twisted's TCP port has no such
option, so the endpoint makes and binds the socket itself and hands it to
the reactor (C{adoptStreamPort}); over TLS its factory is wrapped in
C{TLSMemoryBIOFactory}, as Twisted's own C{listenSSL} does.

Only a realm on PostgreSQL uses it: with SQLite a second process is
refused before it binds anything, and its ports are plain strports.
"""

import socket

from twisted.internet import defer
from twisted.internet.abstract import isIPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """
    Listens on C{host}:C{port} with C{SO_REUSEPORT} (and C{SO_REUSEADDR}),
    over TLS when C{tls_options} (an C{IOpenSSLServerConnectionCreator},
    such as L{twisted.internet.ssl.CertificateOptions}) is given.
    """

    def __init__(self, reactor, host, port, backlog, tls_options=None):
        self._reactor = reactor
        self._host = host
        self._port = port
        self._backlog = backlog
        self._tls_options = tls_options

    def listen(self, factory):
        return defer.execute(self._listen, factory)

    def _listen(self, factory):
        family = socket.AF_INET6 if isIPv6Address(self._host) else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    address = socket.getaddrinfo(
                        self._host, self._port, family, socket.SOCK_STREAM, 0,
                        socket.AI_NUMERICHOST,
                    )[0][4]
                else:
                    address = (self._host, self._port)
                sock.bind(address)
                sock.listen(self._backlog)
            except OSError as e:
                raise CannotListenError(self._host, self._port, e) from None
            sock.setblocking(False)
            if self._tls_options is not None:
                factory = TLSMemoryBIOFactory(self._tls_options, False, factory)
            # The reactor listens on a duplicate; this one is closed on leaving.
            port = self._reactor.adoptStreamPort(sock.fileno(), family, factory)
        port.backlog = self._backlog  # what it listens with (Twisted's says 50)
        return port
