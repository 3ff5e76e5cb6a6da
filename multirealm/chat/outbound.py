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
  - when the transport's buffer fills, the queue stops writing (replies
    wait in the queue, counted) and tells its owner (the protocol stops
    reading); when it drains, both go on;
  - it counts, in C{pending_bytes}, the bytes of replies waiting in it,
    and for a request not answered yet the most its reply may take (given
    at L{OutboundQueue.reserve}), and reports every change to the realm's
    L{ReplyBudget}, so the protocol can stop reading a connection by bytes.
"""

import base64
from collections import deque

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from zope.interface import implementer

from multirealm.chat.turnwrites import gathering
from multirealm.logs import RealmLogger

log = RealmLogger()


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


class ReplyBudget:
    """
    The bytes of replies waiting in every connection's outbound queue of a
    realm, against a limit.  A connection told that the budget is
    L{exhausted} stops reading and L{wait}s; it is called back (its
    C{budget_available()}) once the total is under the limit again.
    """

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self._waiting = set()

    @property
    def exhausted(self):
        return self.used > self.limit

    def add(self, count):
        self.used += count
        if count < 0 and self._waiting and self.used <= self.limit:
            waiting, self._waiting = self._waiting, set()
            for waiter in waiting:
                waiter.budget_available()

    def wait(self, waiter):
        self._waiting.add(waiter)

    def forget(self, waiter):
        self._waiting.discard(waiter)


# A long reply goes to the transport this much at a time, and only while the
# transport has room: the rest stays here, counted in pending_bytes, instead
# of piling up uncounted in the transport's own buffer.
CHUNK = 65536

_NO_SLOTS = ()  # the slots of a queue that holds none


@implementer(IPushProducer, IConsumer)
class OutboundQueue:
    """
    @param transport: the connection's transport; the queue registers
        itself as its streaming producer.
    @param on_pause: called when the transport's buffer is full.
    @param on_resume: called when it has drained.
    @param on_written: called after one or more replies were written out.
    @param budget: the realm's L{ReplyBudget}, told of every change of
        C{pending_bytes}.
    @param realm: the name of the realm, for its log lines.
    """

    __slots__ = (
        "_realm", "_transport", "_on_pause", "_on_resume", "_on_written", "_budget",
        "pending_bytes", "_slots", "_streaming", "_producer", "_paused", "_running", "_closed",
        "_ended",
    )

    def __init__(self, transport, on_pause, on_resume, on_written, budget=None, realm=None):
        self._realm = realm
        # A plain TCP connection's replies of a turn go out in one send (chat.turnwrites).
        self._transport = gathering(transport, realm)
        self._on_pause = on_pause
        self._on_resume = on_resume
        self._on_written = on_written
        self._budget = budget or ReplyBudget(float("inf"))
        self.pending_bytes = 0
        # One list per request, in request order: [reply, charge].  reply
        # is None until answered, then bytes or a Streamed; charge is what
        # the slot counts in pending_bytes.  An empty tuple while there is
        # none: an empty deque is most of a KiB, and most connections are idle.
        self._slots = _NO_SLOTS
        self._streaming = False  # a part of the head reply is being produced
        self._producer = None  # the pull producer of that part, once registered
        self._paused = False  # the transport's buffer is full
        self._running = False  # inside _run: guards re-entry
        self._closed = False
        self._ended = False  # end() was called
        transport.registerProducer(self, True)

    @property
    def waiting(self):
        """
        Replies reserved and not yet completely written.  (Not C{__len__}:
        Twisted tests a transport's producer for truth, and an empty queue
        must not read as no producer.)
        """
        return len(self._slots)

    def _charge(self, count):
        self.pending_bytes += count
        self._budget.add(count)

    @property
    def blocked(self):
        """True while the transport is full (the client is not reading)."""
        return self._paused

    def reserve(self, most=0):
        """
        A place for the reply of a request just read, counted as C{most}
        bytes until it is filled.
        """
        slot = [None, most]
        if self._slots is _NO_SLOTS:
            self._slots = deque()
        self._slots.append(slot)
        if most:
            self._charge(most)
        return slot

    def fill(self, slot, reply):
        """Give the reply (bytes or L{Streamed}) of a reserved slot."""
        if self._closed:
            return
        slots = self._slots
        if type(reply) is bytes:
            size = len(reply)
            if slots[0] is slot and size <= CHUNK and not self._running and not self._paused:
                # The common case, the oldest request answered (answers
                # come in request order): written at once, never counted.
                slots.popleft()
                if slot[1]:
                    self._charge(-slot[1])
                self._transport.write(reply)
                if not slots:
                    self._slots = _NO_SLOTS  # an idle connection keeps no deque
                elif slots[0][0] is not None:
                    self._run()  # later ones answered first were waiting for it
                self._on_written()
                return
        else:
            size = 0
        if size != slot[1]:
            self._charge(size - slot[1])
            slot[1] = size
        slot[0] = reply
        if slots[0] is slot:
            self._run()

    def reply(self, reply):
        """A reply that is ready at once: written now if nothing is ahead of it."""
        if self._closed:
            return
        if not self._slots and type(reply) is bytes and len(reply) <= CHUNK and not self._paused:
            self._transport.write(reply)
            self._on_written()
        else:
            self.fill(self.reserve(), reply)

    def can_write_now(self):
        """
        True if bytes written now would go between replies: none is being
        written, and nothing already queued (an event, a reply answered
        before the one ahead of it) waits to go first.
        """
        if self._paused or self._running or self._streaming:
            return False
        for slot in self._slots:
            if slot[0] is not None:
                return False
        return True

    def between(self, data):
        """
        Bytes that may go between two replies but never inside one (an
        event): written now if no reply is being written (the oldest is
        not answered yet, or none waits) and the transport has room; else
        queued after the replies already queued.  True if written now.
        """
        if self._closed:
            return False
        if self.can_write_now():
            self._transport.write(data)
            self._on_written()
            return True
        self.fill(self.reserve(), data)
        return False

    def close(self):
        """The connection is gone: drop what is queued, stop any stream."""
        self._closed = True
        self._budget.add(-self.pending_bytes)
        self.pending_bytes = 0
        self._slots = _NO_SLOTS
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
                    try:
                        self._producer.resumeProducing()
                    except Exception:  # FileSender lets a read error out here
                        self._part_done(Failure())
                    continue
                if self._paused:
                    break  # the transport is full: replies wait here, counted
                head = slots[0]
                reply = head[0]
                if reply is None:
                    break  # the oldest request is not answered yet
                if type(reply) is bytes or type(reply) is memoryview:
                    if len(reply) > CHUNK:
                        view = memoryview(reply)
                        self._transport.write(bytes(view[:CHUNK]))
                        head[0] = view[CHUNK:]
                        head[1] -= CHUNK
                        self._charge(-CHUNK)
                        continue
                    slots.popleft()
                    if head[1]:
                        self._charge(-head[1])
                    self._transport.write(bytes(reply))
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
                    try:
                        started = part(self)
                    except Exception:
                        self._part_done(Failure())
                    else:
                        started.addBoth(self._part_done)
        finally:
            self._running = False
        if not self._slots:
            self._slots = _NO_SLOTS  # an idle connection keeps no deque
        if written:
            self._on_written()

    def _part_done(self, result):
        if not self._streaming:
            return None  # a failure already ended this part
        self._streaming = False
        if self._closed:
            self._producer = None
            return None  # stopped because the connection went away
        if isinstance(result, Failure):
            # Part of the reply is out already; what follows could not be
            # framed correctly, so the connection ends here, at once.
            log.failure("streamed reply failed; closing the connection", result,
                        realm=self._realm)
            self.close()
            self.end(abort=True)
            return None
        self._producer = None
        self._run()
        return None

    def end(self, abort=False):
        """
        Close the connection.  The queue first stops being the transport's
        producer: Twisted does not close a transport whose paused producer
        is still registered (it resumes the producer instead).
        """
        if self._ended:
            return
        self._ended = True
        self._transport.unregisterProducer()
        if abort:
            self._transport.abortConnection()
        else:
            self._transport.loseConnection()

    # -- IConsumer: the pull producer of a streamed part writes here ----------

    def registerProducer(self, producer, streaming):
        if streaming:
            raise ValueError("a streamed reply is written by a pull producer")
        if self._closed:
            producer.stopProducing()  # registered after the connection went away
            return
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
