"""
Realm links and the chat port over real TLS on loopback.  Certificates are
made here with C{cryptography} (no private key is committed): a network
CA, a certificate for 127.0.0.1 that it signs, one for another host name,
and one signed by a stranger.  A link to a realm whose certificate does
not chain to the CA or does not name its host fails, and nothing crosses.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, endpoints, reactor, ssl, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer

from multirealm import config
from multirealm.connections import LINGER_SECONDS, MOST_LINGERING
from multirealm.service import build_realm_service
from tests.helpers import InlineHasher, parse_replies, wait_until
from tests.test_end_to_end import free_port
from tests.test_service import Collector


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_certificate(issuer_key, issuer_name, subject, san, ca=False):
    """(certificate, key) for C{subject}, signed by C{issuer_key} (self-signed if None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    certificate = builder.sign(issuer_key or key, hashes.SHA256())
    return certificate, key


def write_pem(folder, name, certificate, key=None):
    paths = []
    path = os.path.join(folder, name + ".crt")
    with open(path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    paths.append(path)
    if key is not None:
        path = os.path.join(folder, name + ".key")
        with open(path, "wb") as f:
            f.write(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
        paths.append(path)
    return paths


REALMS_INI = """
[network]
secret = s

[realm:1]
host = 127.0.0.1
chat_port = 0
realm_port = {realm1}
http_port = 0
data_dir = data/realm1
tls_ca = ca.crt

[realm:2]
host = 127.0.0.1
chat_port = 0
realm_port = {realm2}
http_port = 0
tls_port = 0
data_dir = data/realm2
tls_cert = {cert}.crt
tls_key = {cert}.key
tls_ca = ca.crt
"""


@implementer(IHalfCloseableProtocol)
class Silent(Protocol):
    """A client that sends nothing and keeps its end open when the server closes its own."""

    def readConnectionLost(self):
        pass


class TLSLinkTests(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        ca, ca_key = make_certificate(None, None, "multirealm test CA", None, ca=True)
        self.ca = write_pem(self.folder, "ca", ca)[0]
        loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        good, key = make_certificate(ca_key, ca.subject, "realm 2", loopback)
        write_pem(self.folder, "good", good, key)
        other, key = make_certificate(ca_key, ca.subject, "realm 2",
                                      [x509.DNSName("wrong.example")])
        write_pem(self.folder, "wrong-host", other, key)
        stranger, stranger_key = make_certificate(None, None, "a stranger", None, ca=True)
        forged, key = make_certificate(stranger_key, stranger.subject, "realm 2", loopback)
        write_pem(self.folder, "untrusted", forged, key)

    def start(self, cert, network=""):
        path = os.path.join(self.folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI.format(realm1=free_port(), realm2=free_port(), cert=cert)
                    .replace("secret = s", "secret = s\n" + network))
        network = config.load(path)
        services = {}
        for name in ("1", "2"):
            service = build_realm_service(network, name, reactor, hasher=InlineHasher())
            service.privilegedStartService()
            service.startService()
            self.addCleanup(service.stopService)
            services[name] = service.getServiceNamed("core").realm
            services[name, "service"] = service
        return services

    @defer.inlineCallbacks
    def test_a_link_to_a_good_certificate_carries_messages(self):
        realms = self.start("good")
        one, two = realms["1"], realms["2"]
        yield one.register("alice", "pw")
        yield two.register("heru", "pw")
        yield one.send("alice", one.address("heru@2"), "over TLS")
        inbox = ()
        for _ in range(500):  # 10 s at most
            inbox = (yield two.inbox("heru")).messages
            if inbox:
                break
            yield task.deferLater(reactor, 0.02)
        self.assertEqual([m.text for m in inbox], ["over TLS"])

    def tls_client(self, port):
        """A client endpoint to 127.0.0.1:C{port} over TLS, trusting the test CA."""
        with open(self.ca, "rb") as f:
            options = ssl.optionsForClientTLS(
                "127.0.0.1", trustRoot=ssl.Certificate.loadPEM(f.read())
            )
        return endpoints.wrapClientTLS(
            options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        )

    @defer.inlineCallbacks
    def test_the_chat_tls_port_serves_the_protocol(self):
        realms = self.start("good")
        port = realms["2", "service"].getServiceNamed("chat-tls").endpoint.port.getHost().port
        endpoint = self.tls_client(port)
        client = Collector([b"ping"])
        yield endpoints.connectProtocol(endpoint, client)
        (reply,) = yield client.done.addTimeout(10, reactor)
        self.assertEqual(reply["message"], "pong")

    @defer.inlineCallbacks
    def test_a_tls_handshake_that_never_finishes_is_cut(self):
        realms = self.start("good", "header_timeout = 1")
        port = realms["2", "service"].getServiceNamed("chat-tls").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        client = Protocol()
        lost = defer.Deferred()
        client.connectionLost = lambda reason: lost.callback(None)
        yield endpoints.connectProtocol(endpoint, client)
        client.transport.write(b"\x16\x03\x01")  # the start of a ClientHello, never the rest
        yield lost.addTimeout(10, reactor)  # the idle timeout (600 s) would be far later

    @defer.inlineCallbacks
    def test_a_finished_tls_handshake_is_not_cut(self):
        realms = self.start("good", "header_timeout = 1")
        port = realms["2", "service"].getServiceNamed("chat-tls").endpoint.port.getHost().port
        endpoint = self.tls_client(port)
        client = Collector([b"ping"])
        client.dataReceived = lambda data: setattr(client, "data", client.data + data)
        yield endpoints.connectProtocol(endpoint, client)
        yield wait_until(lambda: client.data.count(b"\r\n\r\n") == 1)
        yield task.deferLater(reactor, 1.5)  # past header_timeout: a non-event takes a wait
        client.transport.write(b"ping\r\n")
        yield wait_until(lambda: client.data.count(b"\r\n\r\n") == 2)
        client.transport.loseConnection()

    def connect_from(self, host, port, protocol=None, tls=None):
        """A connection from C{host} to C{port} (over TLS with options C{tls})."""
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10,
                                                bindAddress=(host, 0))
        if tls is not None:
            endpoint = endpoints.wrapClientTLS(tls, endpoint)
        protocol = protocol or Protocol()
        protocol.lost = defer.Deferred()
        protocol.connectionLost = lambda reason: protocol.lost.callback(None)
        self.addCleanup(lambda: protocol.transport and protocol.transport.abortConnection())
        return endpoints.connectProtocol(endpoint, protocol)

    @defer.inlineCallbacks
    def test_refused_tls_connections_are_all_gone_after_the_linger(self):
        service = self.start("good", "connections_per_address = 1")["2", "service"]
        factory = service.getServiceNamed("chat-tls").factory
        port = service.getServiceNamed("chat-tls").endpoint.port.getHost().port
        gone = []  # the server's ends closed
        real_build = factory.buildProtocol

        def build(addr):
            protocol = real_build(addr)
            real_lost = protocol.connectionLost
            protocol.connectionLost = lambda reason: gone.append(protocol) or real_lost(reason)
            return protocol

        self.patch(factory, "buildProtocol", build)
        yield self.connect_from("127.0.0.5", port)  # admitted: the address's one
        count = MOST_LINGERING + 8  # silent: never a ClientHello, never a close
        for _ in range(count):
            yield self.connect_from("127.0.0.5", port, Silent())
        yield wait_until(lambda: len(gone) == count, timeout=LINGER_SECONDS + 8)
        self.assertEqual(factory.connections.lingering, 0)

    @defer.inlineCallbacks
    def test_a_refused_tls_client_reads_its_refusal(self):
        service = self.start("good", "connections_per_address = 1")["2", "service"]
        port = service.getServiceNamed("chat-tls").endpoint.port.getHost().port
        yield self.connect_from("127.0.0.6", port)
        with open(self.ca, "rb") as f:
            options = ssl.optionsForClientTLS(
                "127.0.0.1", trustRoot=ssl.Certificate.loadPEM(f.read())
            )
        client = Collector([])
        client.dataReceived = lambda data: setattr(client, "data", client.data + data)
        yield self.connect_from("127.0.0.6", port, client, options)
        yield client.lost.addTimeout(LINGER_SECONDS + 8, reactor)
        (reply,) = parse_replies(client.data)
        self.assertEqual(reply["code"], "too_many_connections")

    def test_the_tls_ports_listen_with_the_backlog(self):
        service = self.start("good", "listen_backlog = 33")["2", "service"]
        for name in ("chat-tls", "realm-port"):
            self.assertEqual(service.getServiceNamed(name).endpoint.port.backlog, 33)

    @defer.inlineCallbacks
    def assertLinkFails(self, cert):
        realms = self.start(cert)
        one, two = realms["1"], realms["2"]
        yield one.register("alice", "pw")
        yield two.register("heru", "pw")
        yield one.send("alice", one.address("heru@2"), "must not cross")
        state = {}

        def failed():
            d = one.list_realms()
            d.addCallback(lambda realms: state.update(realms[0]))
            return state.get("last_error") is not None

        yield wait_until(failed)
        self.assertFalse(state["linked"])
        self.assertEqual((yield two.inbox("heru")).messages, ())
        return state["last_error"]

    @defer.inlineCallbacks
    def test_a_certificate_for_another_host_fails_the_link(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        error = yield self.assertLinkFails("wrong-host")
        self.assertIn("link lost", error)
        # Realm 1's log says so, once, with why (the TLS error).

        def failing():
            return [formatEvent(e) for e in events
                    if e.get("link_event") == "failing" and e.get("realm") == "1"]

        yield wait_until(failing)
        (line,) = failing()
        self.assertIn("link to realm 2 failing: handshake failed: link lost:", line)
        self.assertIn("Mismatch", line)

    @defer.inlineCallbacks
    def test_a_certificate_from_an_unknown_authority_fails_the_link(self):
        error = yield self.assertLinkFails("untrusted")
        self.assertIn("link lost", error)

    def test_a_wrong_certificate_file_is_one_clear_start_up_error(self):
        with open(os.path.join(self.folder, "good.crt"), "w") as f:
            f.write("not a certificate")
        path = os.path.join(self.folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI.format(realm1=free_port(), realm2=free_port(), cert="good"))
        with self.assertRaises(config.ConfigError) as caught:
            build_realm_service(config.load(path), "2", reactor, hasher=InlineHasher())
        self.assertIn("tls_cert", str(caught.exception))
