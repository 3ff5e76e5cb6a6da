"""
The realm port: L{RealmProtocol}, the receiving end of a peer's link.

A peer connects, proves which realm it is (L{multirealm.federation.handshake}),
and then sends message frames; each is stored through L{Realm.receive} as
coming from the realm the link proved, and answered with an L{Ack} once
durable (or refused with its code).  Nothing is acted on before the
handshake: a frame before it gets one ERROR line and the connection is
closed.  A handshake (TLS included) that does not finish within
C{HANDSHAKE_SECONDS} of the connection is closed too, however its bytes
trickle in.

No exception in handling a frame drops the link: a line that is no frame
gets its error (a bug C{internal}, logged), by the id it gives, and the
link goes on.  Only after a file frame that fails is the link closed, once
every frame before it is answered: the bytes after its line are a body
whose end is unknown.
"""

import json

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from multirealm import errors, wire
from multirealm.core.incoming import IncomingFile
from multirealm.connections import admitted, for_this_process
from multirealm.federation import handshake
from multirealm.federation.story import LinkStory
from multirealm.names import ParsedAddresses, check_filename
from multirealm.federation.frames import (
    Ack,
    FileFrame,
    TRANSIENT,
    FrameError,
    MessageFrame,
    PresenceFrame,
    UsersFrame,
    body_follows,
    frame_limit,
    line_id,
    parse_frame,
)
from multirealm.framing import RequestLineReceiver
from multirealm.readgate import ReadGate
from multirealm.logs import RealmLogger
from multirealm.model import PRIVATE

log = RealmLogger()

HANDSHAKE_SECONDS = 10.0
INTERNAL = "internal error: the realm logged it"

# The private message frames of one read are stored as a run (L{_ReceiveRun})
# of at most this many frames and characters of text.
RUN_MOST = 256
RUN_TEXT = 256 * 1024


class RealmProtocol(RequestLineReceiver, TimeoutMixin):
    ticket = None  # from the factory's ConnectionLimits, given back when the connection ends

    def connectionMade(self):
        self.realm = self.factory.realm
        self.realm.metrics.connections["realm_in"] += 1
        self.MAX_LENGTH = frame_limit(self.factory.max_line_bytes)
        self.callLater = self.factory.clock.callLater
        self.setTimeout(HANDSHAKE_SECONDS)
        self.peer = None  # the realm the link proved, once it has
        self._linked_at = None
        self._refused = None  # why this realm refused the handshake
        self._hello = None
        self._nonce = handshake.new_nonce()
        self._file = None  # the file body being read, in raw mode
        self._addresses = ParsedAddresses()  # the names of its frames, read once
        self._gate = ReadGate(self)
        self._pending = 0  # frames not yet answered
        self._closing = False  # closed once every frame read is answered
        self._not_now = None  # the ChatError of a "not now" refusal on this link
        self._run = None  # the private message frames of this read not yet stored (_ReceiveRun)
        # The peer not reading our answers stops our reading its frames.
        self.transport.registerProducer(_AnswerFlow(self), True)

    def connectionLost(self, reason):
        self.realm.metrics.connections["realm_in"] -= 1
        self.setTimeout(None)
        if self.peer is not None:
            self.realm.presence.peers.peer_lost(self.peer, self)
            self.factory.lost(
                self.peer, self.realm.clock.seconds() - self._linked_at,
                reason.getErrorMessage(), self._pending, self.transport.getPeer(),
            )
        elif self._refused is None:  # the peer hung up, or TLS failed
            self.factory.failing(
                self._claimed(), f"hung up in the handshake: {reason.getErrorMessage()}",
                self.transport.getPeer(),
            )
        if self.ticket is not None:
            self.ticket.release()
        self._gate.connection_lost()  # an answer arriving now releases nothing
        if self._file is not None:
            self._file.abandon()
            self._file = None

    def timeoutConnection(self):
        self._refuse("the handshake did not finish in time")

    def _refuse(self, why, error=errors.Forbidden, logged=None):
        """
        One ERROR line, then the connection is closed: nothing more is read.
        Only ever during the handshake, which fails with C{why} (C{logged}
        in the log, if given).
        """
        self._refused = why
        self.factory.failing(
            self._claimed(), f"handshake refused: {logged or why}", self.transport.getPeer()
        )
        self.transport.write(_error_line(error(why)))
        self.transport.loseConnection()  # reading stops; the framing reads no later line

    def lineTooLong(self):
        if self.peer is None:
            return self._refuse("a line over the limit during the handshake", errors.LineTooLong)
        self._write(Ack("", "line_too_long", "a frame over the line limit").to_line())

    def lineReceived(self, line):
        if self.transport.disconnecting:
            return  # refused: nothing more is acted on
        try:
            text = line.rstrip(b" \t\r").decode("utf-8")
        except UnicodeDecodeError:
            if self.peer is None:
                return self._refuse("a line that is not UTF-8", errors.BadEncoding)
            text = line.decode("utf-8", "replace")
            return self._bad_frame(text, "bad_encoding", "a frame that is not UTF-8")
        if not text:
            return
        try:
            if self.peer is None:
                self._handshake(text)
            else:
                self._message_frame(text)
        except Exception:
            self._bug(text)

    def dataReceived(self, data):
        try:
            RequestLineReceiver.dataReceived(self, data)
        except Exception:  # a bug reading a file's body: its frame is not answered
            log.failure("reading from realm {peer} failed", realm=self.realm, peer=self.peer)
            self._close_when_answered()
        finally:
            if self._run is not None:
                self._store_run()

    def _bug(self, text):
        """A line failed: logged, and answered C{internal}."""
        log.failure("a line from realm {peer} failed", realm=self.realm, peer=self.peer)
        if self.peer is None:
            return self._refuse(INTERNAL, errors.ChatError)
        self._bad_frame(text, "internal", INTERNAL)

    def _bad_frame(self, text, code, why):
        """
        Answer a line that is no frame, by the id it gives.  If a file's body
        follows it, where that ends is unknown: close once answered.
        """
        if body_follows(text):
            why = f"{why}: the link is closed (where the file ends is unknown)"
            return self._close_when_answered(Ack(line_id(text), code, why))
        self._write(Ack(line_id(text), code, why).to_line())

    def _close_when_answered(self, ack=None):
        """
        Write C{ack} (if any), read nothing more, and close once every frame
        read is answered: what follows cannot be read as frames.
        """
        if ack is not None:
            self._write(ack.to_line())
        self._closing = True
        self._hold("closing")
        if not self._pending:
            self.transport.loseConnection()

    # -- the handshake --------------------------------------------------------

    def _handshake(self, text):
        try:
            if self._hello is None:
                hello = handshake.Hello.from_line(text)
                if hello.realm not in self.realm.peers:
                    # The log's reason names no realm: a new name an attempt is no new line.
                    return self._refuse(f"realm {hello.realm!r} is not linked to this realm",
                                        logged="a realm that is not linked to this realm")
                self._hello = hello
                mine = handshake.proof(
                    self._secret(), "responder", hello.realm, self.realm.name,
                    hello.nonce, self._nonce,
                )
                self._write(handshake.Challenge(self.realm.name, self._nonce, mine).to_line())
                return
            given = handshake.Proof.from_line(text).proof
        except handshake.HandshakeError:
            return self._refuse("authenticate first: HELLO <realm> <nonce>")
        expected = handshake.proof(
            self._secret(), "initiator", self._hello.realm, self.realm.name,
            self._hello.nonce, self._nonce,
        )
        if not handshake.proves(expected, given):
            return self._refuse("the link could not prove its realm")
        self.peer = self._hello.realm
        self._linked_at = self.realm.clock.seconds()
        self.factory.linked(self.peer, self.transport.getPeer())
        self.setTimeout(None)
        self._write(json.dumps({"status": "OK", "message": "linked"}))
        self.realm.presence.peers.peer_linked(self.peer, self)
        self.factory.peer_seen(self.peer)

    def _claimed(self):
        """The realm the handshake says it is from, if one of this realm's peers."""
        hello = self._hello
        return hello.realm if hello is not None and hello.realm in self.realm.peers else None

    def _secret(self):
        return self.factory.secret_for(self.realm.name, self._hello.realm)

    # -- frames -----------------------------------------------------------------

    # Frames whose answers are not yet written, at most: past it the link
    # is not read (twice the sender's window: an honest peer never waits).
    MAX_PENDING = 8192

    def _message_frame(self, text):
        try:
            frame = parse_frame(text)
        except FrameError as e:
            return self._bad_frame(text, "bad_request", str(e))
        if type(frame) is MessageFrame and frame.kind == PRIVATE and self._not_now is None:
            return self._join_run(frame)
        if self._run is not None:
            self._store_run()  # before any other frame: stored in the order read
        if isinstance(frame, FileFrame):
            return self._file_frame(frame)
        if isinstance(frame, PresenceFrame):
            # Not durable, not answered: what the peer's users are now.
            return self.realm.presence.peers.received(self.peer, self, frame.mode, frame.entries)
        if self._not_now is not None:
            # Frames after a "not now" on this link wait for the next one
            # too, so none is stored before the one refused: order is kept.
            return self._write(Ack(frame.id, self._not_now.code, self._not_now.message).to_line())
        if isinstance(frame, UsersFrame):
            d = self.realm.receive_users(self.peer, frame.names)
        else:
            d = defer.maybeDeferred(
                lambda: self.realm.receive(
                    self.peer, frame.message(self.peer, self.realm.name, self._addresses.parse)
                )
            )
        self._answer(frame.id, d)

    def _join_run(self, frame):
        """
        A private message frame, checked now, joins this read's run: stored
        with the others once the read's lines are handled
        (L{dataReceived}), or before the next frame that is not one.  One
        that is refused is answered at once, as it would be alone.
        """
        try:
            message = frame.message(self.peer, self.realm.name, self._addresses.parse)
            self.realm.check_received(self.peer, message)
        except Exception:
            return self._answer(frame.id, defer.fail())
        run = self._run
        if run is not None and not run.add(frame.id, message):
            self._store_run()
            run = None
        if run is None:
            run = self._run = _ReceiveRun(self)
            run.add(frame.id, message)  # the first always fits
        self._taken()  # held: no more lines of this read, and the run is stored at its end

    def _store_run(self):
        run, self._run = self._run, None
        try:
            self.realm.receive_run(self.peer, run.messages, run)
        except Exception:
            run(Failure())

    def _taken(self):
        """One more frame to answer: at L{MAX_PENDING}, the link is read no more."""
        self._pending += 1
        if self._pending == self.MAX_PENDING:
            self._hold("pending")

    def _answer(self, frame_id, d):
        """Answer frame C{frame_id} when C{d} fires: OK, or its refusal."""
        self._taken()
        d.addCallbacks(
            lambda _: Ack(frame_id).to_line(),
            lambda failure: self._refusal(frame_id, failure).to_line(),
        )
        d.addCallback(self._answered)

    def _answered(self, line, count=1):
        """Write C{line}, the answers to C{count} frames (a run's, joined)."""
        pending = self._pending = self._pending - count
        if pending <= self.MAX_PENDING // 2 < pending + count:
            self._release("pending")
        self._write(line)
        if self._closing and not pending:
            self.transport.loseConnection()

    # -- files -------------------------------------------------------------------

    def _file_frame(self, frame):
        """
        Read the file's C{size} bytes that follow, to disk if the frame is
        good, else only to their end; nothing after them is read until the
        file's message is stored, so frames stay in order.
        """
        incoming = IncomingFile(
            self.realm.files, self.realm.limits.max_file_bytes, self.realm.name
        )
        self._file = _FileBody(frame, incoming)
        try:
            check_filename(frame.name)
            incoming.expect(frame.size)
            # Checked before a byte is written: a refused file costs no disk.
            self.realm.check_received(self.peer, frame.message(self.peer, self.realm.name, "0"))
        except errors.ChatError as e:
            incoming.fail(e)
        self.setRawMode()
        if frame.size == 0:
            self.rawDataReceived(b"")

    def rawDataReceived(self, data):
        file = self._file
        body, rest = data[:file.remaining], data[file.remaining:]
        file.remaining -= len(body)
        written = file.incoming.write(body)
        if written is not None:
            self._hold_until("disk", written)  # one batch in memory, at most
        if file.remaining:
            return
        self._file = None
        # Until this file's message is stored, the frames after it wait.
        if self._not_now is not None:
            file.incoming.abort()
            stored = defer.fail(self._not_now)
        else:
            stored = file.store(self.realm, self.peer)
        self._hold_until("storing", stored)
        self._answer(file.frame.id, stored)
        self.setLineMode(rest)

    # -- reading paused: for the disk, a file's message, too many frames
    # pending, answers the peer does not read, or closing ----------------------

    def _hold(self, reason):
        self._gate.hold(reason)

    def _release(self, reason):
        self._gate.release(reason)

    def _hold_until(self, reason, deferred):
        self._gate.hold_until(reason, deferred)

    def _refusal(self, frame_id, failure):
        if failure.check(errors.ChatError):
            return self._refusal_of(frame_id, failure.value)
        log.failure("a frame from realm {peer} failed", failure, realm=self.realm,
                    peer=self.peer)
        return Ack(frame_id, "internal", INTERNAL)

    def _refusal_of(self, frame_id, error):
        """The answer to frame C{frame_id} refused with ChatError C{error}."""
        if error.code in TRANSIENT and self._not_now is None:
            self._not_now = error
        return Ack(frame_id, error.code, error.message)

    def _write(self, line):
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.write(line.encode("utf-8") + b"\r\n")


class RealmServerFactory(Factory):
    """
    @param secret_for: C{secret_for(realm, peer)}, the shared secret of a pair.
    @param connections: the L{multirealm.connections.ConnectionLimits} that
        admits each connection (default: one of its own); one refused gets
        one ERROR line (C{too_many_connections} or C{unavailable}).
    """

    protocol = RealmProtocol
    noisy = False

    def __init__(self, realm, secret_for, max_line_bytes, clock, connections=None):
        self.realm = realm
        self.secret_for = secret_for
        self.max_line_bytes = max_line_bytes
        self.clock = clock
        self.connections = connections or for_this_process(realm.limits, clock)
        self._seen_listeners = {}  # peer -> called when its link to this realm authenticates
        # The log of each peer's links (None: of realms that are none of them).
        self._stories = {peer: LinkStory(realm.clock) for peer in (None, *realm.peers)}
        self._stopping = False
        # A peer's link that landed on another process of the realm: it is up all the same.
        realm.presence.peers.on_linked_elsewhere(self.peer_seen)

    def logPrefix(self):
        return f"realm {self.realm.name} realm port"

    def stopFactory(self):
        self._stopping = True  # the links still open are lost because this realm stops
        for story in self._stories.values():
            story.stop()

    def failing(self, peer, why, address, event="handshake_failed"):
        """A link from C{peer} (None if unknown) failed with C{why}: said if news."""
        if self._stories[peer].failed(why):
            log.warn("link from {claimed} ({address}) failing: {why} (said again only for a"
                     " new reason)",
                     claimed=f"realm {peer}" if peer else "an unknown realm",
                     address=_address(address), why=why, peer=peer, realm=self.realm,
                     link_event=event)

    def linked(self, peer, address):
        """C{peer}'s link authenticated: its up line, now or once it stays up."""
        def say(note):
            log.info("link from realm {peer} ({address}) up{note}", peer=peer,
                     address=_address(address), note=note, realm=self.realm,
                     link_event="up")

        note = self._stories[peer].up(say)
        if note is not None:
            say(note)

    def lost(self, peer, seconds, why, unanswered, address):
        """C{peer}'s link, up C{seconds}, is lost: its down line, or one more failure."""
        story = self._stories[peer]
        if self._stopping:
            return log.info("link from realm {peer} closed after {seconds:.1f} s: this realm"
                            " stops; {unanswered} frames unanswered", peer=peer,
                            seconds=seconds, unanswered=unanswered, realm=self.realm,
                            link_event="down")
        if not story.down(seconds):
            return self.failing(peer, story.lost_early(why), address, "failing")
        log.warn("link from realm {peer} down after {seconds:.1f} s: {why};"
                 " {unanswered} frames unanswered", peer=peer, seconds=seconds, why=why,
                 unanswered=unanswered, realm=self.realm, link_event="down")

    def buildProtocol(self, addr):
        return admitted(
            self.connections, addr, _error_line, lambda: Factory.buildProtocol(self, addr)
        )

    def on_peer_seen(self, peer, listener):
        """Call C{listener()} whenever C{peer}'s link to this realm authenticates."""
        self._seen_listeners[peer] = listener

    def peer_seen(self, peer):
        listener = self._seen_listeners.get(peer)
        if listener is not None:
            listener()


def _address(address):
    return f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"


def _error_line(error):
    return json.dumps(wire.error_reply(error)).encode("ascii") + b"\r\n"


class _AnswerFlow:
    """The transport's producer: pauses reading while our answers back up."""

    def __init__(self, protocol):
        self._protocol = protocol

    def pauseProducing(self):
        self._protocol._hold("answers")

    def resumeProducing(self):
        self._protocol._release("answers")

    def stopProducing(self):
        pass


class _ReceiveRun:
    """
    The private message frames of one read of a link, stored in one
    operation (L{multirealm.core.realm.Realm.receive_run}) and answered
    in one write: a message's duplicate check, Deferred and answer were
    most of what the far realm spent on it (issue 18).  Called once with
    a L{multirealm.model.Sent} or a Failure; each frame still gets its own
    answer, in the order read, and its own refusal.
    """

    __slots__ = ("_protocol", "ids", "messages", "_text")

    def __init__(self, protocol):
        self._protocol = protocol
        self.ids = []
        self.messages = []
        self._text = 0

    def add(self, frame_id, message):
        """Add frame C{frame_id}'s C{message} if the run takes it (the first always)."""
        text = self._text + len(message.text)
        if self.ids and (len(self.ids) >= RUN_MOST or text > RUN_TEXT):
            return False
        self.ids.append(frame_id)
        self.messages.append(message)
        self._text = text
        return True

    def __call__(self, sent):
        protocol = self._protocol
        ids, self.messages = self.ids, None  # the messages held no longer than needed
        if type(sent) is Failure:
            first = protocol._refusal(ids[0], sent)  # logged once, if a bug
            answers = [first] + [Ack(frame_id, first.code, first.message) for frame_id in ids[1:]]
        else:
            answers = []
            for frame_id, result in zip(ids, sent):
                if type(result) is Failure:  # this message alone failed (a bug, a full disk)
                    answers.append(protocol._refusal(frame_id, result))
                elif isinstance(result, errors.ChatError):
                    answers.append(protocol._refusal_of(frame_id, result))
                else:
                    answers.append(Ack(frame_id))
        protocol._answered("\r\n".join(answer.to_line() for answer in answers), len(ids))


class _FileBody:
    """The body of one file frame being read: to disk, or only to its end."""

    def __init__(self, frame, incoming):
        self.frame = frame
        self.remaining = frame.size
        self.incoming = incoming  # the IncomingFile

    def abandon(self):
        self.incoming.abort()

    def store(self, realm, peer):
        """Make the file durable, then store its message; fires once stored."""
        incoming = self.incoming

        def receive(file_id, size):
            return realm.receive(peer, self.frame.message(peer, realm.name, file_id))

        def stored(delivery):
            if delivery.duplicate:
                incoming.abort()  # the copy received the first time stays
            return delivery

        # A disk error is storage_full or unavailable: "not now", the
        # sender keeps the file and sends it again.
        return incoming.finish(receive).addCallback(stored)
