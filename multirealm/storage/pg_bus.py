"""
The PostgreSQL transport of the bus between a realm's processes
(L{multirealm.core.cluster}): L{PostgresBus}, LISTEN/NOTIFY on the
channel C{multirealm_<realm>} of the realm's own database.  No other
server is needed.

Two connections of its own (psycopg 3, autocommit), each driven by a
thread of its own, so that the reactor never waits on the database:

  - the listener: C{LISTEN}, then blocks in C{notifies(timeout=...)};
    each notification reaches the reactor by C{callFromThread}, at most
    L{PostgresBus.MAX_HANDED} waiting there (beyond, a reactor that fell
    behind is not buried: they are dropped and the receiver is told it
    L{missed} things).  A thread rather than a reader of the connection's
    socket in the reactor:
    psycopg's blocking C{notifies} does the protocol (TLS, a server that
    closes, keepalives) for us, and the reactor thread never runs libpq;
    it costs one thread that sleeps.
  - the publisher: what was published while the last round trip ran
    goes in the next, up to L{PostgresBus.BATCH_PAYLOADS} a statement
    (C{SELECT pg_notify(...), pg_notify(...)}), one round trip in flight.

Each payload is C{<process> <text>}: a process ignores its own (the
server delivers them to their sender too).  A connection that breaks is
opened again after a growing delay (L{PostgresBus.DELAYS}); once it is
back, the receiver is told it L{missed} things.  While the publisher
cannot send, payloads are dropped beyond L{PostgresBus.MAX_WAITING} (the
receiver's catch-up after C{missed} makes good what they said).
"""

import queue
import secrets
import threading

from twisted.internet import defer
from zope.interface import implementer

from multirealm.core.interfaces import IClusterBus
from multirealm.logs import RealmLogger
from multirealm.storage.pg_timeouts import CLIENT_TIMEOUTS, SERVER_TIMEOUTS

log = RealmLogger()

_STOP = object()


def channel_of(realm):
    """The NOTIFY channel of realm C{realm}."""
    return f"multirealm_{realm}"


@implementer(IClusterBus)
class PostgresBus:
    """
    @param conninfo: the realm's database (a libpq connection string or URL).
    @param realm: the realm's name: its channel.
    @param reactor: the reactor the receiver runs on.
    """

    # A NOTIFY payload must be shorter than 8000 bytes; ours start with the process id.
    MAX_BYTES = 7900
    MAX_WAITING = 10_000  # payloads waiting for the publisher
    MAX_HANDED = 10_000  # notifications handed to the reactor, not yet delivered
    # At most this many in one statement (PostgreSQL takes at most 1664
    # columns in a SELECT), and about this many bytes.
    BATCH_PAYLOADS = 1000
    BATCH_BYTES = 1 << 20
    WAIT_SECONDS = 1.0  # how often the listener looks whether it should stop
    DELAYS = (0.5, 1.0, 2.0, 4.0, 5.0)  # before each new attempt to connect

    def __init__(self, conninfo, realm, reactor):
        self._conninfo = conninfo
        self._realm = realm
        self._reactor = reactor
        self.channel = channel_of(realm)
        self.process = secrets.token_hex(6)
        self._receiver = None
        self._waiting = []  # payloads not yet handed to the publisher
        self._sending = False  # a batch is with the publisher
        self._lost = False  # payloads were dropped: the receiver is told it missed
        self._stopping = threading.Event()
        self._publisher = queue.SimpleQueue()
        self._threads = []
        self._stopped = None
        self._room = None  # a semaphore of MAX_HANDED, made at start
        self.dropped = 0  # notifications the listener dropped (written by its thread only)
        self._dropped_told = 0
        self.listener_pid = None  # the listening connection's backend (tests end it)
        self.publisher_pid = None

    def start(self, receiver):
        self._receiver = receiver
        self._room = threading.Semaphore(self.MAX_HANDED)
        for name, target in (("listen", self._listen), ("publish", self._publish_loop)):
            thread = threading.Thread(
                target=self._run, args=(target,), name=f"multirealm-bus-{name} {self._realm}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def publish(self, text):
        if len(text.encode("utf-8")) > self.MAX_BYTES:
            raise ValueError(f"a bus payload is at most {self.MAX_BYTES} bytes")
        if self._stopping.is_set():
            return
        if len(self._waiting) >= self.MAX_WAITING:
            self._lost = True
            return
        self._waiting.append(f"{self.process} {text}")
        if not self._sending:
            self._sending = True
            self._reactor.callLater(0, self._hand_over)

    def _hand_over(self):
        batch = self._next_batch()
        if batch:
            self._publisher.put(batch)
        else:
            self._sending = False

    def _next_batch(self):
        waiting, size, count = self._waiting, 0, 0
        for payload in waiting[:self.BATCH_PAYLOADS]:
            size += len(payload)
            count += 1
            if size >= self.BATCH_BYTES:
                break
        batch, self._waiting = waiting[:count], waiting[count:]
        return batch

    def _sent(self, delivered):
        """The publisher is done with a batch (C{delivered} or not)."""
        if not delivered:
            self._lost = True
        elif self._lost:
            self._lost = False
            self._tell_missed()
        self._hand_over()

    def stop(self):
        """Send what waits, then close both connections; fires once both threads ended."""
        if self._stopped is None:
            self._stopped = defer.Deferred()
            self._stopping.set()
            while self._waiting:
                self._publisher.put(self._next_batch())
            self._publisher.put(_STOP)
            if not self._threads:
                self._stopped.callback(None)
        return self._stopped

    def _thread_ended(self, thread):
        self._threads.remove(thread)
        if not self._threads:
            self._stopped.callback(None)

    # -- the reactor's side of the threads ----------------------------------------

    def _deliver(self, process, text):
        self._room.release()
        if not self._stopping.is_set():
            self._receiver.received(process, text)
        dropped = self.dropped
        if dropped != self._dropped_told:
            self._dropped_told = dropped
            log.warn("this process fell behind the bus: {dropped} notifications dropped so far;"
                     " catching up from the database", dropped=dropped, realm=self._realm)
            if not self._stopping.is_set():
                self._receiver.missed()

    def _tell_lost(self):
        if not self._stopping.is_set():
            self._receiver.lost()

    def _tell_missed(self):
        if not self._stopping.is_set():
            log.info("the bus between the realm's processes is back", realm=self._realm)
            self._receiver.missed()

    # -- the threads ------------------------------------------------------------------

    def _run(self, target):
        try:
            target()
        finally:
            self._reactor.callFromThread(self._thread_ended, threading.current_thread())

    def _connect(self):
        import psycopg  # only a realm on PostgreSQL needs it

        connection = psycopg.connect(self._conninfo, autocommit=True, **CLIENT_TIMEOUTS)
        connection.execute(SERVER_TIMEOUTS)
        return connection

    def _pause(self, attempt):
        self._stopping.wait(self.DELAYS[min(attempt, len(self.DELAYS) - 1)])

    def _listen(self):
        from psycopg import sql

        attempt, broken = 0, False
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listener_pid = conn.info.backend_pid
                    if broken:
                        self._reactor.callFromThread(self._tell_missed)
                    attempt, broken = 0, False
                    mine = self.process
                    while not self._stopping.is_set():
                        # Each as it comes: the generator cannot say whether more wait.
                        for notify in conn.notifies(timeout=self.WAIT_SECONDS):
                            if self._stopping.is_set():
                                break
                            process, _, text = notify.payload.partition(" ")
                            if process == mine:
                                continue
                            if self._room.acquire(blocking=False):
                                self._reactor.callFromThread(self._deliver, process, text)
                            else:
                                self.dropped += 1  # told by the next delivery
            except Exception as e:
                if self._stopping.is_set():
                    break
                if not broken:
                    log.warn("the bus between the realm's processes broke ({error}):"
                             " connecting again", error=str(e).strip()[:200], realm=self._realm)
                    # At once, not only once back: sessions cached here may
                    # have ended elsewhere, unheard, from now on.
                    self._reactor.callFromThread(self._tell_lost)
                broken = True
                self._pause(attempt)
                attempt += 1

    def _publish_loop(self):
        conn, attempt = None, 0
        while True:
            batch = self._publisher.get()
            if batch is _STOP:
                break
            delivered = False
            try:
                if conn is None:
                    conn = self._connect()
                    self.publisher_pid = conn.info.backend_pid
                conn.execute(
                    "SELECT " + ", ".join(["pg_notify(%s, %s)"] * len(batch)),
                    [value for payload in batch for value in (self.channel, payload)],
                )
                delivered, attempt = True, 0
            except Exception as e:
                if not attempt:  # once an outage
                    log.warn("publishing on the bus between the realm's processes failed"
                             " ({error}): what it said is lost until it is back",
                             error=str(e).strip()[:200], realm=self._realm)
                if conn is not None:
                    conn.close()
                    conn = None
                self._pause(attempt)
                attempt += 1
            self._reactor.callFromThread(self._sent, delivered)
        if conn is not None:
            conn.close()
