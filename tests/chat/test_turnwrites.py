"""
A connection's writes of one reactor turn, sent at its end in one send():
multirealm.chat.turnwrites, on a model of Twisted's TCP transport and on a
real loopback socket.
"""

import base64
import os
import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, endpoints, main, reactor, task, tcp
from twisted.trial import unittest

from multirealm.chat.turnwrites import MOST_GATHERED, GatheredWrites, gathering
from tests.helpers import parse_replies, wait_until
from tests.test_service import Collector, started_realm


class ModelTransport:
    """
    What GatheredWrites uses of a C{tcp.Server}, as Twisted does it: write()
    buffers (counted in C{_tempDataLen}) until L{drain}; writeSomeData()
    puts in the socket at most C{room} bytes (an int), or returns the
    exception of a lost connection.  C{wire} is every byte the socket took,
    in order; C{log} every call.
    """

    def __init__(self, room=None):
        self.room = room  # bytes the socket takes per writeSomeData; None: any
        self.connected = True
        self.disconnecting = False
        self.lost = False
        self.dataBuffer = b""
        self._tempDataLen = 0
        self.buffered = []
        self.wire = b""
        self.log = []

    def writeSomeData(self, data):
        self.log.append(("send", bytes(data)))
        if self.lost:
            return main.CONNECTION_LOST
        taken = len(data) if self.room is None else min(self.room, len(data))
        self.wire += bytes(data[:taken])
        return taken

    def write(self, data):
        self.log.append(("write", bytes(data)))
        self.buffered.append(bytes(data))
        self._tempDataLen += len(data)

    def drain(self):
        """The reactor's doWrite, once the socket has room: what Twisted buffered goes out."""
        self.wire += b"".join(self.buffered)
        self.buffered = []
        self._tempDataLen = 0

    def loseConnection(self):
        self.log.append(("lose", b""))

    def abortConnection(self):
        self.log.append(("abort", b""))

    def unregisterProducer(self):
        self.log.append(("unregister", b""))


class GatheredWritesTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.transport = ModelTransport()
        self.writes = GatheredWrites(self.transport, self.clock)

    def test_a_turns_writes_go_out_at_its_end_in_one_send(self):
        self.writes.write(b"one\r\n\r\n")
        self.writes.write(b"two\r\n\r\n")
        self.assertEqual(self.transport.log, [])  # nothing yet, within the turn
        self.clock.advance(0)
        self.assertEqual(self.transport.log, [("send", b"one\r\n\r\ntwo\r\n\r\n")])
        self.assertEqual(self.transport.buffered, [])  # Twisted's buffer never used

    def test_one_call_a_turn_serves_every_connection_of_the_reactor(self):
        other = ModelTransport()
        second = GatheredWrites(other, self.clock)
        self.writes.write(b"a")
        second.write(b"b")
        self.writes.write(b"c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual((self.transport.wire, other.wire), (b"ac", b"b"))
        self.writes.write(b"d")  # the next turn gathers anew
        self.clock.advance(0)
        self.assertEqual(self.transport.wire, b"acd")

    def test_what_the_socket_does_not_take_goes_to_twisted(self):
        self.transport.room = 3
        self.writes.write(b"abcdef")
        self.clock.advance(0)
        self.assertEqual(self.transport.wire, b"abc")
        self.assertEqual(self.transport.buffered, [b"def"])

    def test_behind_bytes_twisted_holds_everything_goes_to_twisted(self):
        self.transport.write(b"held")  # an earlier partial send's rest
        self.transport.log.clear()
        self.writes.write(b"next")
        self.clock.advance(0)
        self.assertEqual(self.transport.log, [("write", b"next")])
        self.transport.drain()
        self.assertEqual(self.transport.wire, b"heldnext")

    def test_a_lost_connection_is_left_to_twisted(self):
        self.transport.lost = True
        self.writes.write(b"late")
        self.clock.advance(0)
        # write() is where Twisted's transport notices, and closes, as before.
        self.assertEqual(self.transport.log, [("send", b"late"), ("write", b"late")])

    def test_a_disconnecting_transport_is_left_to_twisted(self):
        self.transport.disconnecting = True
        self.writes.write(b"x")
        self.clock.advance(0)
        self.assertEqual(self.transport.log, [("write", b"x")])

    def test_past_the_bound_gathered_bytes_go_first_then_the_write_at_once(self):
        self.writes.write(b"small")
        big = b"B" * MOST_GATHERED
        self.writes.write(big)  # a chunk of a streamed reply: meets backpressure now
        self.assertEqual(self.transport.log, [("send", b"small"), ("write", big)])
        self.clock.advance(0)  # nothing left gathered
        self.assertEqual(len(self.transport.log), 2)

    def test_closing_sends_what_was_gathered_first(self):
        self.writes.write(b"bye")
        self.writes.loseConnection()
        self.assertEqual(self.transport.log, [("send", b"bye"), ("lose", b"")])
        self.clock.advance(0)
        self.assertEqual(len(self.transport.log), 2)  # sent once

    def test_aborting_drops_what_was_gathered(self):
        self.writes.write(b"never")
        self.writes.abortConnection()
        self.clock.advance(0)
        self.assertEqual(self.transport.log, [("abort", b"")])

    def test_a_failing_connection_is_closed_and_the_others_still_get_theirs(self):
        broken, fine = ModelTransport(), ModelTransport()

        def fails(data):
            raise RuntimeError("a bug")

        broken.writeSomeData = fails
        first = GatheredWrites(broken, self.clock, "1")
        second = GatheredWrites(fine, self.clock, "1")
        first.write(b"lost")
        second.write(b"kept")
        self.clock.advance(0)
        self.assertEqual(broken.log, [("abort", b"")])  # its stream lost bytes: it ends
        self.assertEqual(fine.wire, b"kept")
        (failure,) = self.flushLoggedErrors(RuntimeError)
        first.write(b"again")  # nothing is left stuck: a later turn gathers anew
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["write", "turn", "drain"]),
                st.integers(min_value=1, max_value=MOST_GATHERED + 100),
            ),
            max_size=40,
        ),
        st.one_of(st.none(), st.integers(min_value=0, max_value=MOST_GATHERED)),
    )
    def test_the_bytes_keep_their_order_whatever_the_socket_takes(self, steps, room):
        clock = task.Clock()
        transport = ModelTransport(room)
        writes = GatheredWrites(transport, clock)
        expected = b""
        for n, (step, size) in enumerate(steps):
            if step == "write":
                data = bytes([65 + n % 26]) * size
                expected += data
                writes.write(data)
                self.assertLessEqual(writes._size, MOST_GATHERED)  # the bound holds
            elif step == "turn":
                clock.advance(0)
            else:
                transport.drain()
        clock.advance(0)
        transport.drain()
        self.assertEqual(transport.wire, expected)


class GatheringTests(unittest.TestCase):
    def test_only_a_plain_tcp_connection_is_gathered(self):
        model = ModelTransport()
        self.assertIs(gathering(model), model)  # TLS, WebSocket and test transports as they are


class LoopbackTests(unittest.TestCase):
    """A realm in this process on a real loopback port, pipelined requests."""

    def setUp(self):
        self.service = started_realm(self)

    @defer.inlineCallbacks
    def test_replies_reach_the_socket_without_a_writable_poll(self):
        watched = []
        start_writing = tcp.Server.startWriting

        def counted(transport):
            watched.append(transport)
            return start_writing(transport)

        self.patch(tcp.Server, "startWriting", counted)
        lines = [b"register alice pw", b"auth alice pw"]
        lines += [b"send - alice note %d" % n for n in range(50)] + [b"ping"]
        port = self.service.getServiceNamed("chat").endpoint.port.getHost().port
        client = Collector(lines)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        yield endpoints.connectProtocol(endpoint, client)
        replies = yield client.done.addTimeout(10, reactor)
        self.assertEqual([r["status"] for r in replies], ["OK"] * len(lines))
        self.assertEqual(replies[-2]["message"], "Message Sent")
        # Every reply went straight to the socket at the end of its turn;
        # Twisted's buffer and its writable poll were never needed.
        self.assertEqual(watched, [])

    @defer.inlineCallbacks
    def test_a_client_that_stops_reading_holds_a_bounded_buffer_then_gets_it_all(self):
        accepted, servers = [], []
        start_reading, start_writing = tcp.Server.startReading, tcp.Server.startWriting

        def reading(transport):
            accepted.append(transport)
            return start_reading(transport)

        def writing(transport):
            servers.append(transport)
            return start_writing(transport)

        self.patch(tcp.Server, "startReading", reading)
        self.patch(tcp.Server, "startWriting", writing)
        payload = os.urandom(2**20)
        client = Collector([b"register alice pw", b"auth alice pw"])
        port = self.service.getServiceNamed("chat").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        yield endpoints.connectProtocol(endpoint, client)
        yield client.done.addTimeout(10, reactor)  # (the collector closes when done)

        reader = Collector([])
        reader.connectionMade = lambda: None
        reader.dataReceived = lambda data: setattr(reader, "data", reader.data + data)
        yield endpoints.connectProtocol(endpoint, reader)
        self.addCleanup(reader.transport.loseConnection)
        # Small socket buffers, so that the kernel cannot take the whole reply.
        reader.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        accepted[-1].socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        reader.transport.write(
            b"auth alice pw\r\nsendfile - alice big.bin\r\n\r\n"
            + base64.b64encode(payload) + b"\r\n\r\ninbox -\r\n"
        )
        yield wait_until(lambda: reader.data.count(b"\r\n\r\n") == 3)
        (entry,) = parse_replies(reader.data)[2]["messages"]
        file_id = entry["file_id"]
        reader.data = b""
        reader.transport.pauseProducing()  # the client stops reading
        reader.transport.write(b"getfile - " + file_id.encode() + b"\r\n")
        server = accepted[-1]  # the reader's connection, on the realm's side
        yield wait_until(lambda: server in servers)  # its socket filled: Twisted buffers the rest
        yield task.deferLater(reactor, 0.3, lambda: None)
        held = len(server.dataBuffer) - server.offset + server._tempDataLen
        # The reply is 1.4 MB of base64; the server holds a few chunks of it.
        self.assertLess(held, 256 * 1024)
        reader.transport.resumeProducing()
        yield wait_until(lambda: reader.data.endswith(b"\r\n\r\n"))
        (got,) = parse_replies(reader.data)
        self.assertEqual(base64.b64decode(got["content"]), payload)
