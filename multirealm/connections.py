"""
Who may open a connection: L{ConnectionLimits}, consulted by the factory
of every listening port (chat, TLS chat, HTTP, realm port) in its
C{buildProtocol}, and the process's descriptor budget it is sized from.

One L{ConnectionLimits} serves a whole process (with C{--realm=all}, every
realm in it), because what it protects is the process's descriptors:

  - at most C{connections_per_address} connections at once from one client
    address, counted across every port and realm of the process (an
    address flooding the HTTP port cannot also take 100 chat and 100
    realm-port descriptors);
  - at most C{most} connections in all, below the soft C{RLIMIT_NOFILE}
    with a reserve (L{connection_budget}), so accept never fails with
    EMFILE and the database, the log, realm links and files being sent
    or received always have descriptors.

A port refuses an extra connection in its own language (L{refusal}):
chat sends one C{too_many_connections} or C{unavailable} reply, HTTP a
503, the realm port one ERROR line.  Nothing wraps the protocol (no
per-byte cost): the factory takes a L{Ticket} in C{buildProtocol}, the
protocol gives it back in C{connectionLost}.

A WebSocket (C{/ws} on the HTTP port) is admitted as the HTTP
connection it starts as, under the HTTP request-header deadline.
Twisted's upgrade replaces the channel's C{connectionLost} with the
WebSocket protocol's, so the channel hands its C{ticket} to the chat
protocol the C{/ws} resource builds, which releases it when it ends.
"""

import resource
import socket

from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from multirealm import errors

log = Logger()

SOMAXCONN_FILE = "/proc/sys/net/core/somaxconn"

# A refused connection waits this long for its client to read the answer
# and close (closing on bytes we never read would send a reset, and the
# client could lose the answer), over TLS for its handshake first; this
# many at most wait at once.  With MOST_ACCEPTS, and the process's own
# descriptors (databases, ports, logs: about 20), they fit the smallest
# reserve of connection_budget (64): 24 + 8 + 20 < 64.  At 32 and 16 they
# did not, and a flood past the budget met EMFILE on accept (seen in CI).
LINGER_SECONDS = 2.0
MOST_LINGERING = 24


class Ticket:
    """One admitted connection; L{release} it when the connection ends (once is enough)."""

    __slots__ = ("_limits", "host")

    def __init__(self, limits, host):
        self._limits = limits
        self.host = host

    def release(self):
        limits, self._limits = self._limits, None
        if limits is not None:
            limits._release(self.host)


class ConnectionLimits:
    """
    Counts open connections, per client address and in all.

    @param per_address: most connections at once from one address.
    @param most: most connections at once in all.
    @param clock: runs the refusals' linger timers (default: the reactor).
    """

    def __init__(self, per_address, most, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.per_address = per_address
        self.most = most
        self.clock = clock
        self.open = 0
        self.lingering = 0  # refusals waiting for their client to close
        self._by_address = {}  # host -> open connections
        self._full = False  # said in the log that we are refusing

    def admit(self, address):
        """
        A L{Ticket} for a new connection from C{address} (an L{IAddress};
        those without a host share one count).

        @raise errors.Unavailable: the process holds C{most} connections.
        @raise errors.TooManyConnections: the address holds C{per_address}.
        """
        host = getattr(address, "host", None)
        if self.open >= self.most:
            if not self._full:
                self._full = True
                log.warn("{most} connections open, the most this process takes:"
                         " refusing new ones", most=self.most)
            raise errors.Unavailable(
                f"the realm has {self.most} connections open, its most: try again shortly"
            )
        count = self._by_address.get(host, 0)
        if count >= self.per_address:
            raise errors.TooManyConnections(
                f"too many connections from your address (at most {self.per_address}):"
                " close one first"
            )
        self._by_address[host] = count + 1
        self.open += 1
        return Ticket(self, host)

    def _release(self, host):
        self.open -= 1
        left = self._by_address[host] - 1
        if left:
            self._by_address[host] = left
        else:
            del self._by_address[host]
        if self._full and self.open <= self.most * 9 // 10:
            self._full = False  # log the next time it fills, not at every refusal on the edge


def admitted(limits, addr, words, build):
    """
    The protocol of a new connection from C{addr} on a port: C{build()}'s,
    holding its L{Ticket} as C{ticket} (it releases it when it ends), if
    C{limits} admit it; else a L{refusal} saying C{words(error)}, the
    error in the port's own language.
    """
    try:
        ticket = limits.admit(addr)
    except errors.ChatError as e:
        return refusal(limits, words(e))
    protocol = build()
    protocol.ticket = ticket
    return protocol


def refusal(limits, answer):
    """
    The protocol of a connection C{limits} refused: it writes C{answer}
    (the port's own words for the refusal), then closes.
    """
    return _Refusal(limits, answer)


class Linger:
    """
    The last seconds of a refused connection, counted in C{limits}: it is
    cut at their end, or at once when C{MOST_LINGERING} already linger
    (a flood: no descriptor waits on it).  L{end} it when the connection
    is lost.
    """

    def __init__(self, limits, transport):
        self._limits = limits
        self._timer = None
        if limits.lingering >= MOST_LINGERING:
            transport.abortConnection()
            return
        limits.lingering += 1
        self._timer = limits.clock.callLater(LINGER_SECONDS, transport.abortConnection)

    @property
    def waiting(self):
        """True while the linger runs (not cut yet)."""
        return self._timer is not None and self._timer.active()

    def end(self):
        timer, self._timer = self._timer, None
        if timer is not None:
            self._limits.lingering -= 1
            if timer.active():
                timer.cancel()


@implementer(IHandshakeListener)
class _Refusal(Protocol):
    """
    Every refusal ends within C{LINGER_SECONDS}: it answers, closes its
    end and waits for the client's, and is cut at the end of the linger;
    past C{MOST_LINGERING} at once it is cut at once, unanswered.  Over
    TLS the answer can only be written once the handshake is done; a
    client that never finishes it is cut at the end of the linger too.
    """

    _linger = None

    def __init__(self, limits, answer):
        self.limits = limits
        self.answer = answer

    def connectionMade(self):
        self._linger = Linger(self.limits, self.transport)
        if self._linger.waiting and not ISSLTransport.providedBy(self.transport):
            self._answer()

    def handshakeCompleted(self):
        if self._linger is not None and self._linger.waiting:
            self._answer()

    def _answer(self):
        self.transport.write(self.answer)
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is None or ISSLTransport.providedBy(self.transport):
            # TLS closes with its close_notify, never by half-closing the
            # TCP below it (the client would lose the answer).
            self.transport.loseConnection()
        else:
            half_close()  # the answer, then our end; the client's end closes it

    def dataReceived(self, data):
        pass  # read only so that closing does not reset

    def connectionLost(self, reason):
        if self._linger is not None:
            self._linger.end()


def for_this_process(limits, clock=None):
    """
    The L{ConnectionLimits} of this process under L{Limits} C{limits},
    sized by its open-files limit now, its refusals timed by C{clock}.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20  # the kernel's own ceiling (fs.nr_open) on Linux
    return ConnectionLimits(
        limits.connections_per_address, connection_budget(soft, limits.max_connections), clock
    )


def connection_budget(soft_limit, configured=0):
    """
    The most connections a process with C{soft_limit} descriptors takes:
    C{configured} if given (non-zero), never more than the limit less a
    reserve of a quarter (at least 64) for everything else.
    """
    budget = max(1, soft_limit - max(64, soft_limit // 4))
    return min(configured, budget) if configured else budget


# A listening port accepts at most this many connections each time the
# reactor finds it readable.  Twisted's own batch starts at 100 and grows by
# 20 after each full one; a connection refused past the budget keeps its
# descriptor until its refusal is written (the reactor's next turn), so a
# burst of them could outgrow the reserve (at least 64) and make accept
# fail with EMFILE.
MOST_ACCEPTS = 8


def bound_accepts(port, most=MOST_ACCEPTS):
    """Make C{port} (a Twisted TCP port) accept at most C{most} connections a read."""
    read = port.doRead

    def doRead():
        port.numberAccepts = min(port.numberAccepts, most)
        read()

    port.doRead = doRead


def raise_descriptor_limit(getrlimit=resource.getrlimit, setrlimit=resource.setrlimit):
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit.  Returns
    C{(soft before, soft now, hard)}.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:  # an unlimited hard limit on some systems
            log.warn("cannot raise the open-files limit from {soft} to {hard}: {error}",
                     soft=soft, hard=hard, error=e)
    return soft, getrlimit(resource.RLIMIT_NOFILE)[0], hard


def listen_backlog(configured=0, somaxconn_file=SOMAXCONN_FILE):
    """
    The backlog of a listening port: C{configured}, or (0) the system's
    maximum, which the kernel would cap a larger one at anyway.
    """
    if configured:
        return configured
    try:
        with open(somaxconn_file) as f:
            return int(f.read())
    except (OSError, ValueError):
        return socket.SOMAXCONN
