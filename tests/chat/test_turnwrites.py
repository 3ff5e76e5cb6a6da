"""
A connection's writes of one reactor turn, sent at its end in one send():
multirealm.chat.turnwrites, on a model of Twisted's TCP transport and on a
real loopback socket.
"""

import base64
import gc
import os
import socket
import weakref

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
        big = b"B" * (MOST_GATHERED + 1)
        self.writes.write(big)  # a chunk of a streamed reply: meets backpressure now
        self.assertEqual(self.transport.log, [("send", b"small"), ("write", big)])
        self.clock.advance(0)  # nothing left gathered
        self.assertEqual(len(self.transport.log), 2)

    def test_a_small_write_past_the_bound_begins_a_new_gathering(self):
        first, second = b"a" * (MOST_GATHERED - 10), b"b" * 20
        self.writes.write(first)
        self.writes.write(second)  # the turn's bytes so far go; this one waits for the turn's end
        self.assertEqual(self.transport.log, [("send", first)])
        self.clock.advance(0)
        self.assertEqual(self.transport.log, [("send", first), ("send", second)])

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


class PartialTwisted(ModelTransport):
    """
    A ModelTransport whose doWrite is Twisted's: what write() buffered is
    joined into C{dataBuffer} (C{_tempDataLen} back to 0), and only C{n}
    bytes of it go out; the rest stays there.
    """

    def do_write(self, n):
        self.dataBuffer += b"".join(self.buffered)
        self.buffered = []
        self._tempDataLen = 0
        self.wire += self.dataBuffer[:n]
        self.dataBuffer = self.dataBuffer[n:]


class TwistedPartlySentTests(unittest.TestCase):
    """Bytes Twisted's doWrite sent in part wait in its dataBuffer: gathered ones go after them."""

    def test_bytes_twisted_still_holds_in_its_data_buffer_go_first(self):
        clock = task.Clock()
        transport = PartialTwisted(room=0)  # the client is not reading
        writes = GatheredWrites(transport, clock)
        writes.write(b"A" * 100)
        clock.advance(0)  # the socket is full: all of it to Twisted
        transport.do_write(10)  # the socket took 10; 90 wait in dataBuffer, _tempDataLen 0
        transport.room = None  # the client reads again: the kernel has room
        writes.write(b"B")
        clock.advance(0)
        transport.do_write(10**6)
        self.assertEqual(transport.wire, b"A" * 100 + b"B")

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["write", "turn", "dowrite", "room"]),
                st.integers(min_value=0, max_value=MOST_GATHERED + 100),
            ),
            max_size=40,
        ),
    )
    def test_order_with_twisteds_partial_writes(self, steps):
        clock = task.Clock()
        transport = PartialTwisted(room=0)
        writes = GatheredWrites(transport, clock)
        expected = b""
        for n, (step, size) in enumerate(steps):
            if step == "write":
                data = bytes([65 + n % 26]) * max(size, 1)
                expected += data
                writes.write(data)
            elif step == "turn":
                clock.advance(0)
            elif step == "dowrite":
                transport.do_write(size)
            else:
                transport.room = None if size % 2 else size
        clock.advance(0)
        transport.do_write(10**9)
        self.assertEqual(transport.wire, expected)


class TurnTests(unittest.TestCase):
    def test_a_turn_whose_call_was_cancelled_is_scheduled_again(self):
        # As trial's janitor does with a pending call, or a reactor stopped
        # and run again: the connections must not wait for ever.
        clock = task.Clock()
        transport = ModelTransport()
        writes = GatheredWrites(transport, clock)
        writes.write(b"a")
        (call,) = clock.getDelayedCalls()
        call.cancel()
        other = ModelTransport()
        GatheredWrites(other, clock).write(b"b")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual((transport.wire, other.wire), (b"a", b"b"))

    def test_a_reactor_is_not_kept_alive_by_its_turn(self):
        clock = task.Clock()
        GatheredWrites(ModelTransport(), clock)
        ref = weakref.ref(clock)
        del clock
        gc.collect()
        self.assertIsNone(ref())


class GatheringTests(unittest.TestCase):
    def test_only_a_plain_tcp_connection_is_gathered(self):
        model = ModelTransport()
        self.assertIs(gathering(model), model)  # TLS, WebSocket and test transports as they are

    def test_a_twisted_without_the_buffer_it_reads_gets_the_plain_transport(self):
        server = object.__new__(tcp.Server)  # no __init__: none of its buffer's attributes
        server.reactor = task.Clock()
        self.assertIs(gathering(server), server)
        server._tempDataLen = 0
        self.assertIsInstance(gathering(server), GatheredWrites)


class LoopbackTests(unittest.TestCase):
    """A realm in this process on a real loopback port, pipelined requests."""

    def setUp(self):
        self.service = started_realm(self)

    def watch(self, method):
        """The tcp.Server transports whose C{method} is called from now on, in order."""
        called = []
        original = getattr(tcp.Server, method)

        def recorded(transport):
            called.append(transport)
            return original(transport)

        self.patch(tcp.Server, method, recorded)
        return called

    def connect(self, client):
        port = self.service.getServiceNamed("chat").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        return endpoints.connectProtocol(endpoint, client)

    @staticmethod
    def quiet_client():
        """A client that sends nothing by itself and keeps what it reads in C{data}."""
        client = Collector([])
        client.connectionMade = lambda: None
        client.dataReceived = lambda data: setattr(client, "data", client.data + data)
        return client

    @defer.inlineCallbacks
    def test_replies_reach_the_socket_without_a_writable_poll(self):
        watched = self.watch("startWriting")
        lines = [b"register alice pw", b"auth alice pw"]
        lines += [b"send - alice note %d" % n for n in range(50)] + [b"ping"]
        client = Collector(lines)
        yield self.connect(client)
        replies = yield client.done.addTimeout(10, reactor)
        self.assertEqual([r["status"] for r in replies], ["OK"] * len(lines))
        self.assertEqual(replies[-2]["message"], "Message Sent")
        # Every reply went straight to the socket at the end of its turn;
        # Twisted's buffer and its writable poll were never needed.
        self.assertEqual(watched, [])

    @defer.inlineCallbacks
    def test_a_client_that_stops_reading_holds_a_bounded_buffer_then_gets_it_all(self):
        accepted, servers = self.watch("startReading"), self.watch("startWriting")
        payload = os.urandom(2**20)
        client = Collector([b"register alice pw", b"auth alice pw"])
        yield self.connect(client)
        yield client.done.addTimeout(10, reactor)  # (the collector closes when done)

        reader = self.quiet_client()
        yield self.connect(reader)
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

    @defer.inlineCallbacks
    def test_a_client_that_sends_and_never_reads_is_no_longer_read(self):
        accepted = self.watch("startReading")
        reader = self.quiet_client()
        yield self.connect(reader)
        self.addCleanup(reader.transport.abortConnection)
        yield wait_until(lambda: accepted)
        server = accepted[-1]
        reader.transport.pauseProducing()  # the client never reads
        reader.transport.write(b"ping\r\n" * 400000)
        yield wait_until(lambda: server not in reactor.getReaders(), timeout=20)
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertNotIn(server, reactor.getReaders())  # the realm stopped reading it
        queue = server.protocol._outbound
        held = len(server.dataBuffer) - server.offset + server._tempDataLen
        gathered = getattr(queue._transport, "_size", 0)  # a GatheredWrites, as a chat TCP connection has
        self.assertLess(held + gathered, 512 * 1024)

    @defer.inlineCallbacks
    def test_bytes_for_a_connection_lost_in_the_turn_are_dropped_quietly(self):
        accepted = self.watch("startReading")
        client = self.quiet_client()
        yield self.connect(client)
        yield wait_until(lambda: accepted)
        server = accepted[-1]
        writes = GatheredWrites(server, reactor)
        client.transport.abortConnection()
        yield wait_until(lambda: not server.connected)
        writes.write(b"late")  # an answer from the store, say, for a client gone
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.flushLoggedErrors(), [])
