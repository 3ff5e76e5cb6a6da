"""
The outbound queue: replies in request order, streamed replies written by
a pull producer a chunk at a time while the transport has room.
"""

import base64
import io
import json
import os

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from multirealm import wire
from multirealm.chat.outbound import CHUNK, OutboundQueue, Streamed, base64_file
from tests.helpers import BoundedTransport, Client, make_realm, parse_replies

MIB = 2**20


class Listener:
    def __init__(self):
        self.events = []

    def pause(self):
        self.events.append("pause")

    def resume(self):
        self.events.append("resume")

    def written(self):
        self.events.append("written")


def streamed_reply(payload):
    """A getfile-shaped reply whose content is streamed from a file."""
    head = b'{"status": "OK", "size": %d, "content": "' % len(payload)
    return Streamed(head, base64_file(io.BytesIO(payload)), b'"}' + wire.REPLY_END)


class OutboundQueueTests(unittest.TestCase):
    def queue(self, transport=None):
        self.transport = transport or StringTransport()
        self.listener = Listener()
        return OutboundQueue(
            self.transport, self.listener.pause, self.listener.resume, self.listener.written
        )

    def test_replies_come_in_reservation_order(self):
        queue = self.queue()
        first, second, third = queue.reserve(), queue.reserve(), queue.reserve()
        queue.fill(third, b"3")
        queue.fill(second, b"2")
        self.assertEqual(self.transport.value(), b"")
        queue.fill(first, b"1")
        self.assertEqual(self.transport.value(), b"123")
        self.assertEqual(queue.waiting, 0)
        queue.reply(b"4")
        self.assertEqual(self.transport.value(), b"1234")

    def test_replies_wait_in_the_queue_counted_while_the_transport_is_full(self):
        queue = self.queue()
        queue.pauseProducing()  # what the transport does when its buffer is full
        waiting = queue.reserve(most=1000)
        self.assertEqual(queue.pending_bytes, 1000)
        queue.reply(b"ready")
        queue.fill(waiting, b"late")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(queue.pending_bytes, len(b"ready") + len(b"late"))
        queue.resumeProducing()
        self.assertEqual(self.transport.value(), b"lateready")
        self.assertEqual(queue.pending_bytes, 0)
        self.assertEqual(self.listener.events[:2], ["pause", "resume"])

    def test_a_long_reply_goes_out_a_chunk_at_a_time_counted_until_sent(self):
        transport = BoundedTransport()
        queue = self.queue(transport)
        long_reply = os.urandom(MIB)
        queue.reply(long_reply)
        self.assertLess(transport.most_buffered, transport.size + 65536 + 1)
        self.assertGreaterEqual(queue.pending_bytes, MIB - 2 * 65536)  # the rest, counted here
        while transport.drain():
            pass
        self.assertEqual(transport.out, long_reply)
        self.assertEqual(queue.pending_bytes, 0)

    def test_a_streamed_reply_is_written_only_while_the_transport_has_room(self):
        transport = BoundedTransport()
        queue = self.queue(transport)
        payload = os.urandom(MIB)
        before, streamed, after = queue.reserve(), queue.reserve(), queue.reserve()
        queue.fill(after, b"after" + wire.REPLY_END)
        queue.fill(streamed, streamed_reply(payload))
        queue.fill(before, b"before" + wire.REPLY_END)
        drains = 0
        while transport.drain():
            drains += 1
            self.assertLess(drains, 1000)
        self.assertEqual(queue.waiting, 0)
        # Never more than the transport's buffer plus one chunk was waiting.
        self.assertLess(transport.most_buffered, transport.size + 3 * 2**14 * 4 // 3 + 100)
        self.assertGreater(drains, 5)  # the transport really pushed back
        self.assertTrue(transport.out.startswith(b"before\r\n\r\n{"))
        self.assertTrue(transport.out.endswith(b"}\r\n\r\nafter\r\n\r\n"))
        (reply,) = parse_replies(transport.out[len("before\r\n\r\n") : -len("after\r\n\r\n")])
        self.assertEqual(base64.b64decode(reply["content"]), payload)
        self.assertIn("pause", self.listener.events)

    def test_a_lost_connection_stops_the_stream_and_closes_its_file(self):
        transport = BoundedTransport()
        queue = self.queue(transport)
        source = io.BytesIO(os.urandom(MIB))
        head = b'{"content": "'
        queue.reply(Streamed(head, base64_file(source), b'"}\r\n\r\n'))
        self.assertLess(len(transport.value()), transport.size + 3 * 2**14 * 2)
        transport.producer.stopProducing()  # what the transport does on close
        self.assertTrue(source.closed)
        self.assertEqual(queue.waiting, 0)
        queue.reply(b"too late")
        self.assertNotIn(b"too late", transport.value())

    def test_a_stream_that_fails_midway_closes_the_connection(self):
        queue = self.queue()

        def broken(consumer):
            consumer.write(b"partial")
            return defer.fail(OSError("disk read failed"))

        queue.reply(Streamed(b"{", broken, b"}\r\n\r\n"))
        queue.reply(b"next\r\n\r\n")
        self.assertEqual(self.transport.value(), b"{partial")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_a_read_error_inside_the_producer_aborts_the_connection(self):
        class FlakyFile(io.BytesIO):
            reads = 0

            def read(self, size=-1):
                self.reads += 1
                if self.reads == 2:
                    raise OSError("disk read failed")
                return super().read(size)

        queue = self.queue(BoundedTransport())
        source = FlakyFile(os.urandom(MIB))
        queue.reply(Streamed(b"{", base64_file(source), b"}\r\n\r\n"))
        while self.transport.drain():
            pass
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNone(self.transport.producer)  # unregistered, so it really closes
        self.assertTrue(source.closed)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_a_part_that_raises_aborts_the_connection(self):
        queue = self.queue()

        def broken(consumer):
            raise ValueError("bug")

        queue.reply(Streamed(b"{", broken, b"}"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_a_producer_registered_after_the_connection_went_is_stopped(self):
        queue = self.queue()
        later = []
        queue.reply(Streamed(b"{", lambda consumer: later.append(consumer) or defer.Deferred()))
        queue.close()

        class Producer:
            stopped = False

            def stopProducing(self):
                self.stopped = True

        producer = Producer()
        later[0].registerProducer(producer, False)
        self.assertTrue(producer.stopped)

    def test_only_pull_producers_stream(self):
        queue = self.queue()
        self.assertRaises(ValueError, queue.registerProducer, object(), True)


class StreamedReplyOnTheConnectionTests(unittest.TestCase):
    def test_a_1_mib_reply_streams_in_order_between_two_ordinary_replies(self):
        client = Client(make_realm(self), transport=BoundedTransport())
        payload = os.urandom(MIB)
        answer = defer.Deferred()
        client.protocol.handlers.command_listgroups = lambda realm, after: answer
        client.send("help", "listgroups", "listusers")
        answer.callback(streamed_reply(payload))
        while client.transport.drain():
            pass
        help_reply, streamed, users = parse_replies(client.transport.out)
        self.assertIn("commands", help_reply)
        self.assertEqual(base64.b64decode(streamed["content"]), payload)
        self.assertEqual(streamed["size"], MIB)
        self.assertEqual(users, {"status": "OK", "users": [], "more": False})
        json.dumps(streamed)  # it is one well-formed JSON object


class EventOrderTests(unittest.TestCase):
    def test_an_event_never_overtakes_one_queued_before_it(self):
        # Found by hypothesis in a review (issue 18): E0 waited behind an
        # unanswered reply while the socket was full; once it drained, E1
        # was written at once, ahead of E0.
        transport = BoundedTransport()
        queue = OutboundQueue(transport, lambda: None, lambda: None, lambda: None)
        first, second = queue.reserve(), queue.reserve()
        queue.fill(first, b"r" * (3 * CHUNK + 6))  # a long reply fills the socket
        transport.drain()
        queue.between(b"{E0}")  # the socket is full: E0 waits behind `second`
        transport.drain()  # room again; `second` is still not answered
        queue.between(b"{E1}")
        queue.fill(second, b"done")
        transport.drain()
        out = transport.out
        self.assertLess(out.index(b"{E0}"), out.index(b"{E1}"), out[-40:])
