"""
One realm on several processes sharing one database (issue 17):
L{Cluster}, what each process tells the others, and what it does with
what they tell it.  No SQL and no sockets: the payloads go through an
L{IClusterBus} (PostgreSQL's LISTEN/NOTIFY in production,
L{multirealm.storage.pg_bus}), and carry ids, never bodies; what a
process needs beyond them it reads from the shared store.

A payload is one line, C{<kind> <words>}:

  - C{m SEQ}: messages up to SEQ are stored.  The others read every
    message after the last they announced (in pages, L{IStore.deliveries_after})
    and hand each to their notifier as I{replayed}: live pushes and the
    peer queues run, the metrics of what was stored do not count it
    twice.  At most one a reactor turn.
  - C{r USER WITH UP_TO}: USER's read marker in the conversation WITH
    moved to UP_TO: their connections here get the C{read} event.
  - C{s USER}: a session of USER ended (C{logout}, C{passwd}, a lock, a
    reset): the sessions of USER cached here are forgotten, and each
    subscription of theirs is checked again.
  - C{g GROUP CREATOR}: a group was created: its members here hear of it.
  - presence (L{multirealm.core.cluster_presence}): C{p}, C{P}, C{a},
    C{h}, C{?}, C{!}, C{x}.
  - links (L{multirealm.core.cluster_links}): C{l}, C{L}, C{e} (ours to
    the peers), C{i}, C{o}, C{u}, C{y}, C{Y} (the peers' to us: their
    users' presence).

A kind this process does not know is ignored (logged once), so that a
newer process can join older ones.

Messages are announced here in seq order, whoever stored them: writing
transactions commit in seq order across the processes (the store
serialises writers), so "every seq after the last announced" misses
nothing, and a report of this process's own commit that comes after a
gap waits until the messages of the gap are read and announced (a peer
queue that sends what it is told relies on that order).
"""

from collections import deque

from twisted.internet import task

from multirealm import wire
from multirealm.core.cluster_links import OtherLinks, OtherPeerLinks
from multirealm.core.cluster_presence import OtherProcesses
from multirealm.names import Address
from multirealm.logs import RealmLogger

log = RealmLogger()


class Cluster:
    """
    @param realm: the L{multirealm.core.realm.Realm} of this process.
    @param store: its L{multirealm.core.interfaces.IStore}, shared with the others.
    @param bus: an L{multirealm.core.interfaces.IClusterBus} of this realm.
    @param clock: an L{IReactorTime}.
    """

    PAGE = 200  # messages read at once
    RETRY_SECONDS = 1.0  # after a read that failed
    # Reads failed in a row, or this process's deliveries held waiting for
    # the others' before them, before the messages that cannot be read are
    # passed over (they stay in history; they are not pushed live here).
    GIVE_UP_READS = 10
    MAX_HELD = 10_000

    def __init__(self, realm, store, bus, clock):
        self._realm = realm
        self._store = store
        self._bus = bus
        self._clock = clock
        self._notifier = realm.notifier
        self._listeners = []  # the live delivery: push_to(user, event), group_created
        self._last = None  # every seq up to it was announced here; None until started
        self._highest_here = 0  # the newest seq this process stored
        self._wanted = 0  # the newest seq the others said they stored (inf: all there is)
        self._pending = deque()  # this process's deliveries, waiting for those before them
        self._reading = False
        self._failures = 0  # reads failed in a row
        self._retry = None
        self._publishing = None  # the call that publishes "m" this turn
        self._stopped = False
        self._unknown = set()  # kinds of payload logged once
        self._handlers = {"m": self._on_stored, "r": self._on_read, "s": self._on_session,
                          "g": self._on_group, "h": self._on_heartbeat, "!": self._on_lost}
        self.others = OtherProcesses(realm.name, realm.presence, clock, self.publish)
        self._handlers.update(self.others.handlers)
        for part in (OtherLinks(realm.links, self.publish),
                     OtherPeerLinks(realm.presence.peers, self.publish, OtherProcesses.DUMP_BYTES)):
            self.others.parts.append(part)
            self._handlers.update(part.handlers)
        realm.presence.cluster = self.others
        realm.sessions.on_session_ended(self.session_ended)
        store.report_deliveries_to(self._stored_here)
        self._beat = task.LoopingCall(self._heartbeat)
        self._beat.clock = clock

    def listen(self, listener):
        """C{listener}: C{push_to(user, event)} and C{group_created(group, creator)}."""
        self._listeners.append(listener)

    def start(self):
        self._bus.start(self)
        self._where_the_stream_is()
        self.others.start()
        self._beat.start(self.others.HEARTBEAT_SECONDS, now=False)

    def stop(self):
        """Say goodbye (our users are offline here now); fires once the bus is closed."""
        self.others.stop()
        self._stopped = True
        if self._beat.running:
            self._beat.stop()
        for call in (self._retry, self._publishing):
            if call is not None and call.active():
                call.cancel()
        return self._bus.stop()

    def publish(self, text):
        if not self._stopped:
            self._bus.publish(text)

    # -- what this process did ------------------------------------------------

    def _stored_here(self, deliveries):
        """The store's report of a commit of this process (its new Deliveries)."""
        highest = max(delivery.seq for delivery in deliveries)
        if highest > self._highest_here:
            self._highest_here = highest
        if self._publishing is None:
            self._publishing = self._clock.callLater(0, self._publish_stored)
        if self._last is None:  # starting: nothing of the others' is announced yet
            self._notifier.notify(deliveries)
            return
        pending = self._pending
        for delivery in deliveries:
            if len(pending) >= self.MAX_HELD:
                self._pass_over()
            pending.append(delivery)
        self._pump()

    def _publish_stored(self):
        self._publishing = None
        self.publish(f"m {self._highest_here}")

    def read_moved(self, user, conversation, up_to):
        self.publish(f"r {user} {conversation.relative_to(self._realm.name)} {up_to}")

    def session_ended(self, user):
        self.publish(f"s {user}")

    def group_created(self, group, creator):
        self.publish(f"g {group.name} {creator}")

    # -- the message stream -----------------------------------------------------

    def _where_the_stream_is(self):
        self._store.last_seq().addCallbacks(self._started, self._not_started)

    def _started(self, seq):
        self._last = max(seq, self._highest_here)
        self._pump()

    def _not_started(self, failure):
        if not self._stopped:
            log.failure("reading where the message stream is failed: trying again", failure,
                        realm=self._realm)
            self._retry = self._clock.callLater(self.RETRY_SECONDS, self._where_the_stream_is)

    def _pump(self):
        """Announce what can be, in seq order; read what is missing first."""
        if self._reading or self._last is None or self._stopped:
            return
        pending, notifier = self._pending, self._notifier
        counted, announced = [], []
        while pending:
            delivery = pending[0]
            if delivery.seq <= self._last:  # read and replayed before its report came
                counted.append(pending.popleft())
            elif delivery.seq == self._last + 1:
                announced.append(pending.popleft())
                self._last = delivery.seq
            else:
                # Another process committed in between (or a number was
                # never used): those first.
                break
        if counted:
            notifier.counted(counted)
        if announced:
            notifier.notify(announced)
        if pending:
            return self._read(pending[0].seq - 1)
        if self._wanted > self._last:
            self._read(self._wanted)

    def _read(self, up_to):
        self._reading = True
        bound = None if up_to == float("inf") else up_to
        d = self._store.deliveries_after(self._realm.peers, self._last, bound, self.PAGE)
        d.addCallback(self._replay, bound)
        d.addErrback(self._read_failed)

    def _replay(self, deliveries, bound):
        self._failures = 0
        new = [delivery for delivery in deliveries if delivery.seq > self._last]
        if new:
            self._last = new[-1].seq
            self._notifier.replayed(new)
        if len(deliveries) < self.PAGE:  # all there was up to the bound
            if bound is None:
                self._wanted = self._last
            else:
                self._last = max(self._last, bound)
        self._reading = False
        self._pump()

    def _read_failed(self, failure):
        self._reading = False
        if self._stopped:
            return
        self._failures += 1
        if self._failures == 1:  # once an outage, not once a second
            log.failure("reading what the realm's other processes stored failed", failure,
                        realm=self._realm)
        if self._failures >= self.GIVE_UP_READS:
            self._pass_over()
        elif self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(self.RETRY_SECONDS, self._pump)

    def _pass_over(self):
        """
        Announce none of what cannot be read (or waited for too long): up
        to this process's oldest held delivery, or all the others said.
        """
        if self._pending:
            up_to = self._pending[0].seq - 1
        else:
            up_to = self._last if self._wanted == float("inf") else self._wanted
        if up_to > self._last:
            log.warn("passed over the messages {first}..{last} of the realm's other processes:"
                     " they are in history, but not pushed live here", first=self._last + 1,
                     last=up_to, realm=self._realm)
            self._last = up_to
        if self._wanted == float("inf"):  # a catch-up that cannot be made: given up
            self._wanted = self._last
        self._failures = 0
        self._pump()

    # -- what the others did ------------------------------------------------------

    def received(self, process, text):
        """L{IClusterReceiver}: process C{process} published C{text}."""
        if self._stopped:
            return
        self.others.heard(process)
        kind, _, rest = text.partition(" ")
        handler = self._handlers.get(kind)
        if handler is None:
            if kind not in self._unknown and len(self._unknown) < 100:
                self._unknown.add(kind)
                log.info("ignored a payload of unknown kind {kind!r} from process {process}"
                         " (a newer version?)", kind=kind[:20], process=process[:40],
                         realm=self._realm)
            return
        try:
            handler(process, rest)
        except Exception:
            log.failure("a payload from process {process} failed: {text!r}", process=process,
                        text=text[:200], realm=self._realm)

    def lost(self):
        """
        L{IClusterReceiver}: deaf to the others until L{missed}.  A session
        may end on another process meanwhile, unheard: none is kept here
        until then (each use asks the store).
        """
        if not self._stopped:
            self._realm.sessions.keep_known(False)

    def missed(self):
        """
        L{IClusterReceiver}: what the others published meanwhile may be
        lost, and what we did: catch up on messages, check sessions
        again, and swap presence with them.
        """
        if self._stopped:
            return
        self._want(float("inf"))
        self._realm.sessions.keep_known(True)
        self._realm.sessions.forget_user(None)
        self.others.lost_touch()

    def _want(self, seq):
        if seq > self._wanted:
            self._wanted = seq
            self._pump()

    def _on_stored(self, process, rest):
        self._want(int(rest))

    def _on_read(self, process, rest):
        user, conversation, up_to = rest.split(" ")
        event = wire.encode({"event": "read", "with": conversation, "up_to": up_to})
        for listener in self._listeners:
            listener.push_to(user, event)

    def _on_session(self, process, rest):
        self._realm.sessions.forget_user(rest)

    def _on_group(self, process, rest):
        group, creator = rest.split(" ")
        for listener in self._listeners:
            listener.group_created(Address(group, self._realm.name), creator)

    def _heartbeat(self):
        self.publish(f"h {max(self._last or 0, self._highest_here)}")
        self.others.expire()

    def _on_heartbeat(self, process, rest):
        # With the newest seq it knows: an C{m} that was lost is caught up.
        self._want(int(rest))

    def _on_lost(self, process, rest):
        # What it published may be lost (an C{s} among them): sessions are
        # checked again; and its presence view is rebuilt from ours.
        self._realm.sessions.forget_user(None)
        self.others.send_dump()
