"""
The outbound queue of one client connection: L{OutboundQueue}.

A transport has room for one producer.  If the protocol registered itself
there, no streamed reply (a C{FileSender} reading a file from disk) could
ever be written on the connection.  So the queue is the transport's one
producer, and everything the connection writes goes through it, in request
order:

  - each request reserves a slot (L{OutboundQueue.reserve}) when it is
    read; its reply fills the slot (L{OutboundQueue.fill}) whenever the
    core answers; a reply that comes early waits for those before it;
  - a reply is bytes, or a L{Streamed} reply: parts that are bytes or
    pull producers (the C{FileSender} shape), so a reply of any length is
    written a chunk at a time, only while the transport has room, and
    never held whole in memory;
  - when the transport's buffer fills or drains, the queue pauses or
    resumes the stream and tells its owner (the protocol stops reading).
"""

import base64
from collections import deque

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from zope.interface import implementer

log = Logger()


class Streamed:
    """
    A reply written in parts, in order.  Each part is bytes, or a callable
    C{start(consumer)} that registers a pull producer with C{consumer}
    (C{streaming=False}), as C{FileSender.beginFileTransfer} does, and
    returns a Deferred that fires once the producer has written its last
    byte.
    """

    __slots__ = ("_parts",)

    def __init__(self, *parts):
        self._parts = deque(parts)

    def next_part(self):
        return self._parts.popleft() if self._parts else None


@implementer(IPushProducer, IConsumer)
class OutboundQueue:
    """
    @param transport: the connection's transport; the queue registers
        itself as its streaming producer.
    @param on_pause: called when the transport's buffer is full.
    @param on_resume: called when it has drained.
    @param on_written: called after one or more replies were written out.
    """

    def __init__(self, transport, on_pause, on_resume, on_written):
        self._transport = transport
        self._on_pause = on_pause
        self._on_resume = on_resume
        self._on_written = on_written
        # One list per request, in request order: [None] until answered,
        # then [reply], reply being bytes or a Streamed.
        self._slots = deque()
        self._streaming = False  # a part of the head reply is being produced
        self._producer = None  # the pull producer of that part, once registered
        self._paused = False  # the transport's buffer is full
        self._running = False  # inside _run: guards re-entry
        self._closed = False
        transport.registerProducer(self, True)

    def __len__(self):
        """Replies reserved and not yet completely written."""
        return len(self._slots)

    def reserve(self):
        """A place for the reply of a request just read; fill it later."""
        slot = [None]
        self._slots.append(slot)
        return slot

    def fill(self, slot, reply):
        """Give the reply (bytes or L{Streamed}) of a reserved slot."""
        slot[0] = reply
        slots = self._slots
        if slots and slots[0] is slot:
            if type(reply) is bytes and not self._running and len(slots) == 1:
                # The common case, a lone reply answered: no loop needed.
                slots.popleft()
                self._transport.write(reply)
                self._on_written()
            else:
                self._run()

    def reply(self, reply):
        """A reply that is ready at once: written now if nothing is ahead of it."""
        if not self._slots and type(reply) is bytes and not self._closed:
            self._transport.write(reply)
            self._on_written()
        else:
            self._slots.append([reply])
            self._run()

    def close(self):
        """The connection is gone: drop what is queued, stop any stream."""
        self._closed = True
        self._slots.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()

    # -- writing out --------------------------------------------------------

    def _run(self):
        if self._running:
            return  # the loop below sees whatever changed
        self._running = True
        written = False
        try:
            slots = self._slots
            while slots and not self._closed:
                if self._streaming:
                    if self._producer is None or self._paused:
                        break
                    self._producer.resumeProducing()
                    continue
                reply = slots[0][0]
                if reply is None:
                    break  # the oldest request is not answered yet
                if type(reply) is bytes:
                    slots.popleft()
                    self._transport.write(reply)
                    written = True
                    continue
                part = reply.next_part()
                if part is None:
                    slots.popleft()
                    written = True
                elif type(part) is bytes:
                    self._transport.write(part)
                else:
                    self._streaming = True
                    part(self).addBoth(self._part_done)
        finally:
            self._running = False
        if written:
            self._on_written()

    def _part_done(self, result):
        self._streaming = False
        self._producer = None
        if self._closed:
            return None  # stopped because the connection went away
        if getattr(result, "check", None) is not None:  # a Failure
            # Part of the reply is out already; what follows could not be
            # framed correctly, so the connection ends here.
            log.failure("streamed reply failed; closing the connection", result)
            self.close()
            self._transport.loseConnection()
            return None
        self._run()
        return None

    # -- IConsumer: the pull producer of a streamed part writes here ----------

    def registerProducer(self, producer, streaming):
        if streaming:
            raise ValueError("a streamed reply is written by a pull producer")
        self._producer = producer
        self._run()

    def unregisterProducer(self):
        self._producer = None

    def write(self, data):
        self._transport.write(data)

    # -- IPushProducer: the transport tells us when its buffer fills ----------

    def pauseProducing(self):
        self._paused = True
        self._on_pause()

    def resumeProducing(self):
        self._paused = False
        self._on_resume()
        self._run()

    def stopProducing(self):
        self.close()


class _Base64FileSender(FileSender):
    # A multiple of 3, so that each chunk encodes on its own without padding.
    CHUNK_SIZE = 3 * 2**14


def base64_file(file):
    """
    A part of a L{Streamed} reply: the base64 of C{file} (open, binary,
    read from where it stands to its end), read and encoded a chunk at a
    time.  The file is closed when done.
    """

    def start(consumer):
        d = _Base64FileSender().beginFileTransfer(file, consumer, base64.b64encode)

        def close(result):
            file.close()
            return result

        return d.addBoth(close)

    return start
