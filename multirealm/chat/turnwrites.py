"""
A connection's writes of one reactor turn, sent at the turn's end with one
C{send()}: L{GatheredWrites}.

Twisted's C{transport.write} buffers the bytes and asks the reactor to
watch the socket for writing (an C{epoll_ctl}); the next poll reports the
socket writable, the reactor dispatches that event, the bytes are sent, and
a second C{epoll_ctl} stops the watch.  A realm answers a whole batch of
requests at once (after a commit), and nearly every reply goes to a socket
with nothing buffered and room to spare: that round trip is most of what a
reply costs.  So a plain TCP connection's writes are gathered here, joined,
and sent straight to the socket (C{writeSomeData}) at the end of the turn,
by one C{callLater(0)} shared by every connection of the reactor.  Bytes
the socket does not take at once, or any while Twisted still holds some,
go to C{transport.write}, which buffers them, pauses the producer if need
be and reports a lost connection, as it always did: order and backpressure
are Twisted's, only the common case is shorter.

The end of the turn is a Twisted timer, and Twisted's timers follow the
wall clock: if the system clock steps back, the gathered bytes wait for
it to catch up, as every timer of the reactor does (the store's hand-over
of a turn's operations among them, so durable requests waited so before).

Measured (benchmarks/README.md, "Issue 18, third session"): the closed
loop's reactor thread spends about 8 us less a message (35 -> 27, medians
of run.py), and the C{epoll_ctl} calls, two a reply before, are gone.
"""

import weakref

from twisted.internet import tcp

from multirealm.logs import RealmLogger

log = RealmLogger()

# Past this many gathered bytes a connection's writes go to its transport
# at once: a reply written in chunks must meet the transport's backpressure
# (its producer paused) within the turn, not pile up here.
MOST_GATHERED = 16384

_NOTHING = ()  # the parts of a connection with nothing gathered: no list kept

_turns = weakref.WeakKeyDictionary()  # reactor -> its _Turn


def gathering(transport, realm=None):
    """
    What to write C{transport}'s bytes to: a L{GatheredWrites} for a plain
    TCP connection (of realm C{realm}, for its log lines); any other
    transport (TLS, a WebSocket's, a test's) itself, unchanged.
    """
    # What send() reads of Twisted's buffer is not public: a Twisted without
    # it gets the plain transport, not a failure on every connection.
    if type(transport) is tcp.Server and hasattr(transport, "_tempDataLen"):
        return GatheredWrites(transport, transport.reactor, realm)
    return transport


class _Turn:
    """The connections of one reactor with writes gathered in this turn."""

    __slots__ = ("_reactor", "_waiting", "_call")

    def __init__(self, reactor):
        self._reactor = weakref.ref(reactor)  # the key of _turns: this must not keep it
        self._waiting = []
        self._call = None

    def add(self, writes):
        # A call cancelled or never run (a reactor stopped and run again)
        # must not leave the connections waiting for ever.
        if not self._waiting or not self._call.active():
            self._call = self._reactor().callLater(0, self._send)
        self._waiting.append(writes)

    def _send(self):
        waiting, self._waiting = self._waiting, []
        for writes in waiting:
            try:
                writes.send()
            except Exception:
                # A bug; the other connections' bytes still go.  This one's
                # stream has lost bytes, so it ends here.
                log.failure("sending a connection's replies failed; closing it",
                            realm=writes.realm)
                writes.abortConnection()


class GatheredWrites:
    """
    The writes of one TCP transport (C{tcp.Server}), gathered until the end
    of the reactor's turn (module doc).  It stands for the transport to
    L{multirealm.chat.outbound.OutboundQueue}: write, loseConnection,
    abortConnection, unregisterProducer.
    """

    __slots__ = ("_transport", "_parts", "_size", "_turn", "realm")

    def __init__(self, transport, reactor, realm=None):
        self.realm = realm
        self._transport = transport
        self._parts = _NOTHING
        self._size = 0
        turn = _turns.get(reactor)
        if turn is None:
            turn = _turns[reactor] = _Turn(reactor)
        self._turn = turn

    def write(self, data):
        if self._size + len(data) > MOST_GATHERED:
            self.send()
            if len(data) > MOST_GATHERED:  # a chunk of a long reply: backpressure now
                self._transport.write(data)
                return
        if not self._parts:
            self._parts = []
            self._turn.add(self)
        self._parts.append(data)
        self._size += len(data)

    def send(self):
        """Send what was gathered: at the turn's end, or before what must follow it."""
        parts = self._parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = _NOTHING
        self._size = 0
        transport = self._transport
        if (transport.connected and not transport.disconnecting
                and not transport._tempDataLen and not transport.dataBuffer):
            # Nothing of Twisted's ahead of these bytes: straight to the socket.
            sent = transport.writeSomeData(data)
            if type(sent) is int:  # else the connection is lost: write() lets Twisted see it
                if sent == len(data):
                    return
                data = data[sent:]
        transport.write(data)

    def unregisterProducer(self):
        self._transport.unregisterProducer()

    def loseConnection(self):
        self.send()
        self._transport.loseConnection()

    def abortConnection(self):
        self._parts = _NOTHING
        self._size = 0
        self._transport.abortConnection()
