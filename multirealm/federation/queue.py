"""
What waits for one peer realm: L{PeerQueue}, its durable outbox sent over
whichever link (L{multirealm.federation.link.RealmLink}) is up.

Every message for a peer is in its durable outbox (written in the
transaction that stored the message).  Once a link has authenticated, the
peer's queue sends the outbox in order, many frames in flight (a window,
not one round trip each); each answer deletes its entry, an OK or a
refusal alike, so one message the peer refuses for good never blocks the
ones behind it.  After a reconnect or a restart the unanswered are sent
again; the receiver stores an (origin, id) once and answers it again.  The
queue drains as soon as there is a link (at start, after a reconnect) and
whenever a message for the peer is committed (the notifier), never only
"when the next message is sent".
"""

import os

from twisted.internet import defer, task
from zope.interface import implementer

from multirealm import errors
from multirealm.core.interfaces import IMessageObserver
from multirealm.core.notifier import each_delivery
from multirealm.federation.frames import (
    TRANSIENT,
    Ack,
    FileFrame,
    MessageFrame,
    PresenceFrame,
    UsersFrame,
    frame_limit,
)
from multirealm.logs import RealmLogger, plain
from multirealm.model import format_timestamp, rereads_outbox
from multirealm.names import parse_number

log = RealmLogger()


def _held_bytes(message):
    """About what an in-flight message holds in memory."""
    return 256 + len(message.text)


# The id of an announceusers frame: this prefix, then its cursor.
USERS_ID = "users-"



@implementer(IMessageObserver)
class PeerQueue:
    """
    The outbox of one peer, sent over whichever link is up.

    @param window: frames in flight at most.
    @param window_bytes: bytes of text in flight at most (what they hold
        in memory until answered); the frames of files count their line only,
        the bytes of a file are read from disk as the socket takes them.
    """

    # One read of the outbox: at most this many messages, and about this
    # many bytes of text (the read stops after the message that passes it).
    BATCH = 1024
    BATCH_BYTES = 2 * 2**20

    def __init__(self, realm, peer, window=4096, window_bytes=8 * 2**20, reread_seconds=None):
        self.realm = realm
        # Other processes of the realm (on PostgreSQL) queue for the peer
        # too: while linked, the outbox is read this often for what is new,
        # so a wake-up that never came only delays.  None: only this
        # process writes the outbox, its notifier hears of every entry.
        self._reread_seconds = reread_seconds
        self._rereading = None
        self.peer = peer
        self.window = window
        self.window_bytes = window_bytes
        self._in_flight_bytes = 0  # what the frames in flight hold in memory
        self.link = None
        self._sent_up_to = 0  # the last outbox seq sent on this link
        self._in_flight = {}  # message id -> (outbox seq, message)
        self._reading = False
        # A message was announced while the outbox was read: the read may
        # have been made before it was stored (one another process of the
        # realm stored, announced as its stream is read: core/cluster.py).
        self._announced_while_reading = False
        # The last outbox read reached its end: new messages are sent as
        # they are announced, without reading the outbox again.
        self._caught_up = False
        self._users_in_flight = False  # an announceusers frame is unanswered
        self._waiting_answer = None  # the call that closes a silent link
        self._last_progress = 0.0  # when an answer last came or frames went out
        self._answered = []  # outbox seqs answered OK, not yet forgotten
        self._rereads = 0  # times the outbox was to be read again from the start
        self._presence_frames = 0  # presencerealm frames sent: their ids
        self._counts = realm.metrics.peer(peer)  # frames sent and answered (metrics)
        self._backlog = None  # (messages, since when) while a link drains what waited
        self._attached_at = None  # when the link came up
        realm.on_registration(self.users_changed)

    # -- the notifier -----------------------------------------------------------

    def messages_committed(self, deliveries):
        peer = self.peer
        mine = [d for d in deliveries if peer in d.queued_for]
        if not mine:
            return
        link = self.link
        if (self._caught_up and link is not None and not self._reading
                and mine[0].seq > self._sent_up_to and len(mine) <= self._room()
                and self._in_flight_bytes + sum(_held_bytes(d.message) for d in mine)
                <= self.window_bytes
                and not any(rereads_outbox(d.message) for d in mine)):
            # Everything before them was sent, and the window has room for
            # them all: sent from here, in one write, with no read of the
            # outbox (the store reports commits in seq order).
            try:
                self._send([(d.seq, d.message) for d in mine], link)
            except Exception:
                # One that failed (logged by the notifier) is skipped until
                # the next link, as when it went alone; the rest of the run
                # is read from the outbox.
                self._caught_up = False
                self.wake()
                raise
            return
        each_delivery(mine, self._committed, self.realm)

    def _committed(self, delivery):
        if rereads_outbox(delivery.message):
            # Entries were queued behind what was sent: read it all again
            # (the frames in flight are not sent twice; answered ones the
            # peer stores once).
            self.flush_acks()
            self._sent_up_to, self._caught_up = 0, False
            self._rereads += 1  # a read running now is of before: dropped
            self.wake()
            return
        if (self._caught_up and self.link is not None and not self._reading
                and delivery.seq > self._sent_up_to
                and self._room() > 0):
            # Everything before it was sent: send it from here, with no
            # read of the outbox (the store reports commits in seq order).
            self._send([(delivery.seq, delivery.message)], self.link)
            return
        self._caught_up = False  # the outbox has more than was sent: read it
        if self._reading:
            self._announced_while_reading = True  # and read again after this read
        self.wake()

    # -- the link -----------------------------------------------------------------

    def attach(self, link, recovered=""):
        """
        A link authenticated: send everything not yet answered, from the
        start.  C{recovered}: what its up line says of the failures before
        (None: no line now, links keep being lost as soon as up).
        """
        self.link, self._sent_up_to, self._in_flight = link, 0, {}
        self._in_flight_bytes = 0
        self._caught_up = False
        self._users_in_flight = False
        self._backlog = None
        self._attached_at = self.realm.clock.seconds()
        self.realm.set_linked(self.peer, True)
        if self._reread_seconds is not None and self._rereading is None:
            self._rereading = task.LoopingCall(self._reread)
            self._rereading.clock = self.realm.clock
            self._rereading.start(self._reread_seconds, now=False)
        if recovered is not None:
            # Counted before the first read of the outbox: the store answers in order.
            self.with_depth(self.tell_up, link, recovered)
        self.wake()
        self.users_changed()
        self.realm.presence.link_up(
            self.peer, lambda entries, snapshot: self._send_presence(link, entries, snapshot)
        )

    def detach(self, link, why=None):
        """
        C{link} is gone (C{why}: the reason its down line gives; None for
        no line).
        """
        self.flush_acks()
        if self.link is link:
            if why is not None:
                self._down(link, why, len(self._in_flight))
            self._backlog = None
            self.link, self._in_flight, self._in_flight_bytes = None, {}, 0
            self._users_in_flight = False
            if self._waiting_answer is not None and self._waiting_answer.active():
                self._waiting_answer.cancel()
            self._waiting_answer = None
            if self._rereading is not None:
                self._rereading.stop()
                self._rereading = None
            self.realm.set_linked(self.peer, False)
            self.realm.presence.peers.link_down(self.peer)

    # -- the link's story in the log: one line each, with the outbox depth -------

    def with_depth(self, tell, *args):
        """Call C{tell(depth, *args)} with the outbox depth once counted ("?" if it fails)."""
        d = defer.maybeDeferred(self.realm.outbox_depth, self.peer)
        d.addErrback(lambda _: "?")
        d.addCallback(tell, *args)
        d.addErrback(self._failed)

    def tell_up(self, depth, link, recovered):
        """The up line of C{link}, C{recovered} its note on the failures before."""
        log.info("link to realm {peer} up{recovered}: {queued} messages queued",
                 peer=self.peer, recovered=recovered, queued=depth, realm=self.realm,
                 link_event="up")
        if link is self.link and depth != "?" and depth > 0:
            self._backlog = (depth, self.realm.clock.seconds())
            log.info("link to realm {peer}: sending a backlog of {queued} messages",
                     peer=self.peer, queued=depth, realm=self.realm, link_event="backlog")
            self._check_drained()

    def _check_drained(self):
        """The backlog is sent and answered, all of it: one line."""
        if (self._backlog is not None and self._caught_up and not self._in_flight
                and not self._reading):
            (depth, since), self._backlog = self._backlog, None
            log.info("link to realm {peer}: backlog of {queued} messages drained in"
                     " {seconds:.1f} s", peer=self.peer, queued=depth,
                     seconds=self.realm.clock.seconds() - since, realm=self.realm,
                     link_event="drained")

    def _down(self, link, why, unanswered):
        fields = dict(peer=self.peer, why=why, unanswered=unanswered, link_event="down",
                      seconds=self.realm.clock.seconds() - self._attached_at)
        if not link.factory.continueTrying:  # the realm stops: no store to count with
            return log.info("link to realm {peer} closed after {seconds:.1f} s: {why};"
                            " {unanswered} frames unanswered", realm=self.realm, **fields)
        if not link.factory.story.down(fields["seconds"]):
            return link.factory.failing(link.factory.story.lost_early(why))
        self.with_depth(lambda depth: log.warn(
            "link to realm {peer} down after {seconds:.1f} s: {why}; {unanswered} frames"
            " unanswered, {queued} messages queued", queued=depth, realm=self.realm, **fields
        ))

    def _reread(self):
        """
        Read the outbox past what was sent, and the users not yet
        announced: another process may have queued more, or registered
        someone (one query each, answered by an index).
        """
        if self._caught_up and not self._reading:
            self._caught_up = False
            self.wake()
        self.users_changed()

    def wake(self):
        """Send what waits, while there is a link and room in the window."""
        room = self._room()
        if self.link is None or self._reading or self._caught_up or room <= 0:
            return
        if self._in_flight and room < min(self.BATCH, self.window // 2):
            return  # read in batches: wait until half the window is free
        self._reading = True
        link = self.link
        asked = min(self.BATCH, room)
        d = self.realm.outbox_batch(
            self.peer, self._sent_up_to, asked,
            min(self.BATCH_BYTES, self.window_bytes - self._in_flight_bytes),
        )
        d.addCallback(self._read, link, self._rereads)
        d.addErrback(self._read_failed)

    def _track(self, seq, message):
        self._in_flight[message.id] = (seq, message)
        self._in_flight_bytes += _held_bytes(message)

    def _room(self):
        """How many more frames may go out now: the window counts frames and bytes."""
        if self._in_flight_bytes >= self.window_bytes:
            return 0
        return self.window - len(self._in_flight)

    def _read(self, result, link, rereads=0):
        self._reading = False
        if link is not self.link or rereads != self._rereads:
            # The link went while reading (a link that came up meanwhile
            # found a read running), or the outbox is to be read again from
            # the start: start a new read now.
            self.wake()
            return
        batch, complete = result
        # The read found the end of the outbox: what commits next is sent
        # as it is announced (messages_committed), unless one was announced
        # while reading: then the outbox is read again past this batch.
        self._caught_up = complete and not self._announced_while_reading
        self._announced_while_reading = False
        self._send(batch, link)
        if not self._caught_up:
            self.wake()  # _send wakes after a batch; an empty one too
        self._check_drained()

    def _send(self, batch, link):
        lines = []  # frames written together, in one write
        here, peer = self.realm.name, self.peer
        was_idle = not self._in_flight
        longest = frame_limit(link.factory.max_line_bytes)
        try:
            for seq, message in batch:
                self._sent_up_to = seq
                if message.id in self._in_flight:
                    continue  # read again after a rewind: already on its way
                if message.file is not None:
                    line = FileFrame.of(message, here, peer).to_line()
                else:
                    line = MessageFrame.line_of(message, here, peer)
                if len(line) > longest:
                    # The peer would refuse it, every time: back to its sender.
                    self.realm.delivery_failed(
                        self.peer, seq, message, "line_too_long",
                        "the message is longer than a realm link carries",
                    ).addErrback(self._failed)
                    continue
                self._track(seq, message)
                self._counts.frames_sent += 1
                if message.file is not None:
                    lines = self._flush_lines(link, lines)  # in order, before the file
                    link.send_file(line, seq, message)
                else:
                    lines.append(line)
        finally:
            # What was tracked is written and timed, even if one after it failed.
            if was_idle and self._in_flight:
                self._last_progress = self.realm.clock.seconds()  # the wait starts now
            self._flush_lines(link, lines)
            if batch:
                self._watch()
        if batch and not self._caught_up:
            self.wake()

    @staticmethod
    def _flush_lines(link, lines):
        if lines:
            link.send("\r\n".join(lines))
        return []

    def open_file(self, seq, message):
        """
        The stored bytes of file message C{message}, open, when the link is
        about to stream them (one file open at a time, whatever the window
        holds); None if they cannot be sent.  Bytes that are gone (or
        changed) never will be: the message comes back to its sender.  Any
        other error (no descriptor left, say) is "not now": the link is
        closed and everything goes again after the backoff.
        """
        file = message.file
        try:
            opened = self.realm.files.open(file.id)
        except FileNotFoundError:
            opened = None
        except OSError as e:
            log.warn("cannot open file {id} for realm {peer}: {error}",
                     id=file.id, peer=self.peer, error=e, realm=self.realm)
            self.link.close(f"cannot read a file to send: {e.strerror}")
            return None
        if opened is not None and os.fstat(opened.fileno()).st_size != file.size:
            opened.close()
            opened = None
        if opened is None:
            sent = self._in_flight.pop(message.id, None)
            if sent is not None:
                self._in_flight_bytes -= _held_bytes(message)
            self.realm.delivery_failed(
                self.peer, seq, message, "no_such_file", "the file is gone from this realm",
            ).addErrback(self._failed)
        return opened

    RETRY_SECONDS = 1.0

    def _read_failed(self, failure):
        self._reading = False
        log.failure("reading the outbox of {peer} failed", failure, peer=self.peer,
                    realm=self.realm)
        # Not left waiting for the next message: try again shortly.
        self.realm.clock.callLater(self.RETRY_SECONDS, self.wake)

    def _failed(self, failure):
        """A store operation other than a read failed: logged (what it kept is sent again)."""
        if failure.check(errors.Unavailable):
            # The realm is stopping: the answer is forgotten, and the entry
            # goes again after the restart (the peer stores it once).
            log.info("the outbox of {peer}: an answer not recorded, the realm stops",
                     peer=self.peer, realm=self.realm)
            return
        log.failure("the outbox of {peer}: a store operation failed", failure, peer=self.peer,
                    realm=self.realm)

    # -- this realm's users, announced to the peer -------------------------------

    USERS_AT_ONCE = 500

    def users_changed(self):
        """A user registered (or a link came up): announce what the peer lacks."""
        if self.link is None or self._users_in_flight:
            return
        self._users_in_flight = True
        link = self.link
        d = self.realm.users_to_announce(self.peer, self.USERS_AT_ONCE)
        d.addCallback(self._send_users, link)
        d.addErrback(self._users_failed)

    def _send_users(self, rows, link):
        if link is not self.link:
            return  # attach() or detach() has reset the flag meanwhile
        if not rows:
            self._users_in_flight = False
            return
        room = link.factory.max_line_bytes - 128  # the tags and the verb
        names, cursor = [], None
        for cursor_here, name in rows:
            room -= len(name) + 1
            if names and room < 0:
                break
            names.append(name)
            cursor = cursor_here
        stamp = format_timestamp(self.realm.clock.seconds())
        link.send(UsersFrame(f"{USERS_ID}{cursor}", stamp, tuple(names)).to_line())

    def _users_acked(self, ack, cursor):
        self._users_in_flight = False
        if ack.code is not None:
            self.realm.set_link_error(self.peer, f"refused the user list: {ack.code}")
            return
        d = self.realm.users_announced(self.peer, cursor)
        d.addCallback(lambda _: self.users_changed())
        d.addErrback(self._users_failed)

    def _users_failed(self, failure):
        self._users_in_flight = False
        self._failed(failure)

    # -- this realm's users' presence, told to the peer (not durable) ------------

    def _send_presence(self, link, entries, snapshot):
        if link is not self.link:
            return
        lines = PresenceFrame.lines(
            entries, snapshot, self._presence_frames, format_timestamp(self.realm.clock.seconds()),
            link.factory.max_line_bytes,
        )
        self._presence_frames += len(lines)
        for line in lines:
            link.send(line)

    # -- a peer that stops answering ---------------------------------------------

    # With frames in flight, an answer must come this often, or the link is
    # closed and everything unanswered goes again on the next one.
    ANSWER_SECONDS = 60.0

    def _watch(self, answered=False):
        """
        Frames are in flight: an answer must come within ANSWER_SECONDS of
        the last one (or of the first frame sent while none was in
        flight).  Called for every answer, so it only notes the time; one
        timer, started when none runs, checks it when it fires.
        """
        if answered:
            self._last_progress = self.realm.clock.seconds()
        if self._waiting_answer is None and self.link is not None and self._in_flight:
            self._waiting_answer = self.realm.clock.callLater(
                self.ANSWER_SECONDS, self._no_answer
            )

    def _no_answer(self):
        self._waiting_answer = None
        if self.link is None or not self._in_flight:
            return
        now = self.realm.clock.seconds()
        # A file going out moves its answer back: its bytes moving are
        # progress too, but only while they move.
        last = max(self._last_progress, self.link.file_progress)
        silent = now - last
        if silent < self.ANSWER_SECONDS:
            self._waiting_answer = self.realm.clock.callLater(
                max(self.ANSWER_SECONDS - silent, 1.0), self._no_answer
            )
            return
        self.link.close(
            f"no answer for {self.ANSWER_SECONDS:.0f} s: the link is closed", abort=True
        )

    def answered(self, frame_id):
        """
        The peer answered OK to frame C{frame_id}: stored (or already
        there).  The link calls L{answers_read} after each read of answers:
        the entry is forgotten, and the window refilled, then.
        """
        if frame_id.startswith(USERS_ID):
            return self.acked(Ack(frame_id))
        sent = self._in_flight.pop(frame_id, None)
        if sent is None:
            return  # an answer to a frame of an earlier link, or a stray
        seq, message = sent
        self._in_flight_bytes -= _held_bytes(message)
        # Forgotten together with the others of the same read
        # (answers_read): one store operation for many answers.
        self._counts.frames_acknowledged += 1
        self._answered.append(seq)

    def acked(self, ack):
        """The peer answered C{ack} (an L{Ack}) to a frame (an OK: as L{answered})."""
        if ack.id.startswith(USERS_ID):
            cursor = parse_number(ack.id[len(USERS_ID):])
            if cursor is not None and self._users_in_flight:
                self._users_acked(ack, cursor)
            return
        if ack.code is None:
            return self.answered(ack.id)
        sent = self._in_flight.pop(ack.id, None)
        if sent is None:
            return  # an answer to a frame of an earlier link, or a stray
        self._in_flight_bytes -= _held_bytes(sent[1])
        seq, message = sent
        self._counts.frames_refused += 1
        if ack.code in TRANSIENT:
            # The peer cannot store now: everything goes again, in order,
            # on the next link (after the backoff), nothing is dropped.
            self.link.close(plain(f"{ack.code}: {ack.message[:200]}"))
            return
        # Refused for good: back to its sender as a failure, never retried,
        # never in the way of the ones behind it.
        done = self.realm.delivery_failed(self.peer, seq, message, ack.code, ack.message)
        done.addErrback(self._failed)
        self._watch(answered=True)
        self.wake()
        self._check_drained()

    def answers_read(self):
        """
        The link read a chunk of answers: forget the entries answered OK,
        note the progress, send what their room lets (once a read, not once
        an answer).
        """
        if self._answered:
            self.flush_acks()
            self._watch(answered=True)
            self.wake()
            self._check_drained()

    def flush_acks(self):
        """Forget, in one store operation, the entries answered OK since the last call."""
        if self._answered:
            seqs, self._answered = self._answered, []
            self.realm.outbox_done(self.peer, seqs).addErrback(self._failed)

    def link_failed(self, why):
        """A connection attempt or a link failed (listrealms shows the last)."""
        self.realm.set_link_error(self.peer, why)
