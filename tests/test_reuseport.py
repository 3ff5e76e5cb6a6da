"""
Ports several processes of a realm share (SO_REUSEPORT): two listeners in
this process stand for two processes, on real loopback sockets.
"""

import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, endpoints, reactor, ssl
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from multirealm import config
from multirealm.reuseport import ReusePortEndpoint
from multirealm.service import build_realm_service
from tests.federation.test_tls import make_certificate
from tests.helpers import InlineHasher
from tests.postgres import database
from tests.test_service import REALMS_INI


class Counting(Factory):
    """Counts the connections it accepts; each answers its name and closes."""

    def __init__(self, name):
        self.name = name
        self.accepted = 0

    def buildProtocol(self, addr):
        self.accepted += 1
        protocol = Protocol()
        protocol.connectionMade = lambda: (
            protocol.transport.write(self.name), protocol.transport.loseConnection()
        )
        return protocol


class Reader(Protocol):
    def __init__(self):
        self.data = b""
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


def reuses_port(port):
    return port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0


class ReusePortTests(unittest.TestCase):
    def listen(self, port, factory, tls_options=None):
        endpoint = ReusePortEndpoint(reactor, "127.0.0.1", port, 50, tls_options)
        return endpoint.listen(factory).addCallback(self._listening)

    def _listening(self, port):
        self.addCleanup(port.stopListening)
        return port

    @defer.inlineCallbacks
    def ask(self, port, tls_options=None):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        if tls_options is not None:
            endpoint = endpoints.wrapClientTLS(tls_options, endpoint)
        reader = Reader()
        yield endpoints.connectProtocol(endpoint, reader)
        answer = yield reader.done.addTimeout(10, reactor)
        return answer

    @defer.inlineCallbacks
    def test_two_listeners_on_one_port_both_accept(self):
        first, second = Counting(b"first"), Counting(b"second")
        port = yield self.listen(0, first)  # the first process binds 0 ...
        number = port.getHost().port
        again = yield self.listen(number, second)  # ... the second the number it got
        self.assertEqual(again.getHost().port, number)
        self.assertTrue(reuses_port(port) and reuses_port(again))
        answers = set()
        for _ in range(200):  # the kernel spreads by the connection's addresses
            answers.add((yield self.ask(number)))
            if len(answers) == 2:
                break
        self.assertEqual(answers, {b"first", b"second"})

    @defer.inlineCallbacks
    def test_over_tls(self):
        certificate, key = make_certificate(
            None, None, "127.0.0.1", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        server = ssl.PrivateCertificate.loadPEM(pem + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        port = yield self.listen(0, Counting(b"secret"), server.options())
        client = ssl.optionsForClientTLS("127.0.0.1", trustRoot=ssl.Certificate.loadPEM(pem))
        self.assertEqual((yield self.ask(port.getHost().port, client)), b"secret")

    @defer.inlineCallbacks
    def test_an_ipv6_address(self):
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            raise unittest.SkipTest("no IPv6 loopback here")
        endpoint = ReusePortEndpoint(reactor, "::1", 0, 50)
        port = self._listening((yield endpoint.listen(Counting(b"six"))))
        again = ReusePortEndpoint(reactor, "::1", port.getHost().port, 50)
        self._listening((yield again.listen(Counting(b"six"))))
        reader = Reader()
        client = endpoints.TCP6ClientEndpoint(reactor, "::1", port.getHost().port, timeout=10)
        yield endpoints.connectProtocol(client, reader)
        self.assertEqual((yield reader.done.addTimeout(10, reactor)), b"six")

    def test_a_port_another_socket_holds_alone_cannot_be_shared(self):
        with socket.socket() as plain:  # bound without SO_REUSEPORT
            plain.bind(("127.0.0.1", 0))
            plain.listen(1)
            taken = plain.getsockname()[1]
            failure = self.failureResultOf(self.listen(taken, Counting(b"")), CannotListenError)
        self.assertEqual((failure.value.interface, failure.value.port), ("127.0.0.1", taken))


class RealmPortsTests(unittest.TestCase):
    PORTS = ("chat", "http", "realm-port")

    def ports(self, extra=""):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI + extra)
        service = build_realm_service(config.load(path), "1", reactor, hasher=InlineHasher())
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return {name: service.getServiceNamed(name).endpoint.port for name in self.PORTS}

    def test_a_realm_on_sqlite_does_not_share_its_ports(self):
        ports = self.ports()
        self.assertEqual({name: reuses_port(port) for name, port in ports.items()},
                         dict.fromkeys(self.PORTS, False))

    def test_a_realm_on_postgresql_shares_every_port(self):
        ports = self.ports(f"database = {database(self)}\n")
        self.assertEqual({name: reuses_port(port) for name, port in ports.items()},
                         dict.fromkeys(self.PORTS, True))
