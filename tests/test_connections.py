"""
The connection admission shared by every port (L{ConnectionLimits}), the
descriptor budget it is sized from, the open-files limit raised at start,
and the listen backlog.
"""

import resource
import socket

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer

from multirealm import errors
from multirealm.connections import (
    LINGER_SECONDS,
    MOST_ACCEPTS,
    MOST_LINGERING,
    ConnectionLimits,
    connection_budget,
    listen_backlog,
    raise_descriptor_limit,
    refusal,
)


def address(host):
    return IPv4Address("TCP", host, 40000)


class ConnectionLimitsTests(unittest.TestCase):
    def test_an_address_gets_at_most_per_address(self):
        limits = ConnectionLimits(per_address=2, most=100)
        first = limits.admit(address("127.0.0.2"))
        limits.admit(address("127.0.0.2"))
        with self.assertRaises(errors.TooManyConnections) as caught:
            limits.admit(address("127.0.0.2"))
        self.assertIn("at most 2", caught.exception.message)
        limits.admit(address("127.0.0.1"))  # another address is not affected
        first.release()
        limits.admit(address("127.0.0.2"))  # one closed: room for one more

    def test_the_process_takes_at_most_most(self):
        limits = ConnectionLimits(per_address=100, most=3)
        tickets = [limits.admit(address(f"127.0.0.{i}")) for i in range(2, 5)]
        with self.assertRaises(errors.Unavailable):
            limits.admit(address("127.0.0.9"))
        tickets[0].release()
        limits.admit(address("127.0.0.9"))
        self.assertEqual(limits.open, 3)

    def test_a_full_process_is_logged_once_not_at_every_refusal(self):
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        limits = ConnectionLimits(per_address=1000, most=100)
        tickets = [limits.admit(address("127.0.0.2")) for _ in range(100)]
        for _ in range(5):
            self.assertRaises(errors.Unavailable, limits.admit, address("127.0.0.3"))
        tickets.pop().release()  # back under, but not by a tenth: still "full"
        limits.admit(address("127.0.0.3"))
        self.assertRaises(errors.Unavailable, limits.admit, address("127.0.0.3"))
        full = [e for e in logged if "the most this process takes" in e.get("log_format", "")]
        self.assertEqual(len(full), 1)
        for ticket in tickets[:20]:
            ticket.release()
        for _ in range(20):
            limits.admit(address("127.0.0.4"))
        self.assertRaises(errors.Unavailable, limits.admit, address("127.0.0.3"))
        full = [e for e in logged if "the most this process takes" in e.get("log_format", "")]
        self.assertEqual(len(full), 2)  # full again after it had room: said again

    def test_a_ticket_released_twice_counts_once(self):
        limits = ConnectionLimits(per_address=1, most=10)
        ticket = limits.admit(address("127.0.0.2"))
        ticket.release()
        ticket.release()
        self.assertEqual(limits.open, 0)
        limits.admit(address("127.0.0.2"))
        with self.assertRaises(errors.TooManyConnections):
            limits.admit(address("127.0.0.2"))

    def test_addresses_without_a_host_share_one_count(self):
        limits = ConnectionLimits(per_address=1, most=10)
        limits.admit(None)
        with self.assertRaises(errors.TooManyConnections):
            limits.admit(None)


class BudgetTests(unittest.TestCase):
    def test_a_reserve_stays_below_the_descriptor_limit(self):
        self.assertEqual(connection_budget(1024), 768)  # a quarter kept back
        self.assertEqual(connection_budget(20000), 15000)
        self.assertEqual(connection_budget(200), 136)  # at least 64 kept back

    def test_a_configured_cap_is_never_above_the_budget(self):
        self.assertEqual(connection_budget(1024, configured=100), 100)
        self.assertEqual(connection_budget(1024, configured=5000), 768)


class RaiseDescriptorLimitTests(unittest.TestCase):
    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        limits = {resource.RLIMIT_NOFILE: (1024, 20000)}

        def setrlimit(which, values):
            limits[which] = values

        result = raise_descriptor_limit(limits.__getitem__, setrlimit)
        self.assertEqual(limits[resource.RLIMIT_NOFILE], (20000, 20000))
        self.assertEqual(result, (1024, 20000, 20000))

    def test_a_refusal_keeps_the_limit(self):
        def setrlimit(which, values):
            raise ValueError("not allowed")

        result = raise_descriptor_limit(lambda which: (1024, 4096), setrlimit)
        self.assertEqual(result, (1024, 1024, 4096))


class BacklogTests(unittest.TestCase):
    def test_configured(self):
        self.assertEqual(listen_backlog(77), 77)

    def test_the_system_maximum_by_default(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("4096\n")
        self.assertEqual(listen_backlog(0, path), 4096)

    def test_socket_somaxconn_without_proc(self):
        self.assertEqual(listen_backlog(0, self.mktemp()), socket.SOMAXCONN)


class HalfClosingTransport(StringTransport):
    write_closed = False

    def loseWriteConnection(self):
        self.write_closed = True


@implementer(ISSLTransport)
class TLSTransport(HalfClosingTransport):
    """A TLS transport: its loseWriteConnection would be the TCP's below TLS."""

    def getPeerCertificate(self):
        return None


class RefusalTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.limits = ConnectionLimits(per_address=1, most=10, clock=self.clock)

    def refuse(self, transport_type=HalfClosingTransport):
        protocol = refusal(self.limits, b"no\r\n")
        transport = transport_type()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_the_answer_then_our_end_and_the_clients_end_closes_it(self):
        protocol, transport = self.refuse()
        self.assertEqual(transport.value(), b"no\r\n")
        self.assertTrue(transport.write_closed)  # not closed: unread bytes would reset it
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")  # read and dropped
        protocol.connectionLost(None)  # the client closed
        self.assertEqual((self.limits.lingering, self.clock.getDelayedCalls()), (0, []))

    def test_a_client_that_never_closes_is_cut_after_the_linger(self):
        protocol, transport = self.refuse()
        self.clock.advance(LINGER_SECONDS)
        self.assertTrue(transport.disconnected)  # aborted
        protocol.connectionLost(None)
        self.assertEqual(self.limits.lingering, 0)

    def test_past_the_most_lingering_a_refusal_is_cut_at_once(self):
        for _ in range(MOST_LINGERING):
            self.refuse()
        for transport_type in (HalfClosingTransport, TLSTransport):
            _, transport = self.refuse(transport_type)
            self.assertTrue(transport.disconnected)  # aborted: no descriptor waits
        self.assertEqual(len(self.clock.getDelayedCalls()), MOST_LINGERING)

    def test_over_tls_the_answer_waits_for_the_handshake_then_tls_closes(self):
        protocol, transport = self.refuse(TLSTransport)
        self.assertEqual(transport.value(), b"")  # nothing can be said before TLS
        protocol.handshakeCompleted()
        self.assertEqual(transport.value(), b"no\r\n")
        self.assertFalse(transport.write_closed)  # never a half-close below TLS
        self.assertTrue(transport.disconnecting)  # close_notify, then TLS closes
        self.assertFalse(transport.disconnected)
        self.clock.advance(LINGER_SECONDS)  # the client never closes its end
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(None)
        self.assertEqual(self.limits.lingering, 0)

    def test_a_tls_client_that_never_finishes_its_handshake_is_cut_after_the_linger(self):
        protocol, transport = self.refuse(TLSTransport)
        self.assertEqual(self.limits.lingering, 1)
        self.clock.advance(LINGER_SECONDS)
        self.assertTrue(transport.disconnected)
        self.assertFalse(transport.write_closed)
        protocol.connectionLost(None)
        self.assertEqual((self.limits.lingering, self.clock.getDelayedCalls()), (0, []))


class AcceptBatchTests(unittest.TestCase):
    def test_a_port_accepts_at_most_a_bounded_batch_a_read(self):
        # Refusals past the budget hold their descriptors until the next
        # turn: the batch must stay well inside the reserve of 64.
        from twisted.internet import reactor, task
        from twisted.internet.protocol import Factory, Protocol

        from multirealm.service import listening_service, tcp_description

        built = []

        class Counting(Factory):
            def buildProtocol(self, addr):
                built.append(Protocol())
                return built[-1]

        service = listening_service(tcp_description("127.0.0.1", 0, 128), Counting(), reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        port = service.endpoint.port
        total = MOST_ACCEPTS * 5 // 2  # two full reads and half of one
        for _ in range(total):
            client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
            self.addCleanup(client.close)
        port.stopReading()  # only these reads accept, not the reactor's
        batches = []
        for _ in range(4):
            before = len(built)
            port.doRead()
            batches.append(len(built) - before)
        self.assertEqual(batches, [MOST_ACCEPTS, MOST_ACCEPTS, total - 2 * MOST_ACCEPTS, 0])
        # Lingering refusals, one read's accepts and the process's own
        # descriptors (about 20) fit the smallest reserve (64).
        self.assertLess(MOST_LINGERING + MOST_ACCEPTS + 20, 64)
        for protocol in built:
            protocol.transport.abortConnection()
        return task.deferLater(reactor, 0.01, lambda: None)  # their ends, then the port's
