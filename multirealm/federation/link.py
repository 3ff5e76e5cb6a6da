"""
The sending end of a realm link: L{RealmLink} (the connection) and
L{LinkFactory} (reconnecting, with a backoff that resets once a link has
authenticated).  What the link sends is its peer's
L{multirealm.federation.queue.PeerQueue}.
"""

from collections import deque

from twisted.internet.protocol import ReconnectingClientFactory
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from multirealm.federation import handshake
from multirealm.federation.frames import Ack, FrameError, frame_limit, json_object
from multirealm.federation.story import LinkStory
from multirealm.framing import RequestLineReceiver
from multirealm.logs import RealmLogger, plain

log = RealmLogger()


class RealmLink(RequestLineReceiver):
    """One outgoing connection to a peer: the handshake, then frames out, answers in."""

    closed_on_purpose = False
    linked_at = None  # when the handshake finished
    _strays = False  # a line that is no answer was logged

    def connectionMade(self):
        self.streaming = False  # a file is being written: other frames wait
        self.file_progress = 0.0  # when a file's bytes last moved
        self._waiting = deque()  # frames (bytes) and files after it
        factory = self.factory
        self.MAX_LENGTH = frame_limit(factory.max_line_bytes)
        self._nonce = handshake.new_nonce()
        self._state = "challenge"
        factory.realm.metrics.connections["realm_out"] += 1
        self.send(handshake.Hello(factory.realm.name, self._nonce).to_line())

    def send(self, line):
        data = line.encode("utf-8") + b"\r\n"
        if self.streaming:
            self._waiting.append(data)  # after the file being sent
        else:
            self.transport.write(data)

    def send_file(self, line, seq, message):
        """
        Send a file frame's line, then the stored file of C{message} (its
        bytes raw, read as the socket takes them: never whole in memory,
        and the frames after it wait their turn).  The file is opened only
        when its turn comes, so one is open at a time.
        """
        if self.streaming:
            self._waiting.append((line, seq, message))
            return
        opened = self.factory.queue.open_file(seq, message)
        if opened is None:
            return  # gone (answered to its sender) or the link is closing
        self.transport.write(line.encode("utf-8") + b"\r\n")
        self.factory.realm.metrics.file_bytes_out["realm"] += message.file.size
        self.streaming = True
        d = _WatchedFileSender(self).beginFileTransfer(opened, self.transport)
        d.addBoth(self._file_sent, opened)

    def _file_sent(self, result, opened):
        opened.close()
        self.streaming = False
        if isinstance(result, Failure):
            self._waiting.clear()  # the link went mid-file: nothing more to write
            return
        while self._waiting and not self.streaming:
            item = self._waiting.popleft()
            if isinstance(item, bytes):
                self.transport.write(item)
            else:
                self.send_file(*item)

    def lineTooLong(self):
        self.transport.loseConnection()

    def dataReceived(self, data):
        RequestLineReceiver.dataReceived(self, data)
        self.factory.queue.answers_read()  # the answers of this read, handled at once

    def lineReceived(self, line):
        linked = self._state == "linked"
        if linked:
            frame_id = Ack.ok_id(line)
            if frame_id is not None:
                return self.factory.queue.answered(frame_id)
        text = line.rstrip(b" \t\r").decode("utf-8", "replace")
        if not text:
            return None
        if linked:
            return self._answer(text)
        if self._state == "challenge":
            return self._challenge(text)
        self._welcome(text)

    def _answer(self, text):
        """A line other than the common OK, once linked: an answer, or a stray."""
        try:
            ack = Ack.from_line(text)
        except FrameError:
            if self._strays:  # a peer sending garbage: one line a link, not one a line
                return None
            self._strays = True
            return log.warn("realm {peer} sent {line!r} (more lines that are no answer on"
                            " this link are not logged)", peer=self.factory.peer,
                            line=text[:200], realm=self.factory.realm)
        return self.factory.queue.acked(ack)

    def _challenge(self, text):
        factory = self.factory
        try:
            challenge = handshake.Challenge.from_line(text)
        except handshake.HandshakeError:
            return self._give_up(_refused(text) or f"not a challenge: {text[:200]!r}")
        secret = factory.secret
        expected = handshake.proof(
            secret, "responder", factory.realm.name, factory.peer, self._nonce, challenge.nonce
        )
        if challenge.realm != factory.peer:
            return self._give_up(f"wrong realm: it says it is realm {challenge.realm[:100]!r}")
        if not handshake.proves(expected, challenge.proof):
            return self._give_up("the peer could not prove its realm (another link secret?)")
        mine = handshake.proof(
            secret, "initiator", factory.realm.name, factory.peer, self._nonce, challenge.nonce
        )
        self._state = "welcome"
        self.send(handshake.Proof(mine).to_line())

    def _welcome(self, text):
        reply = json_object(text)
        if reply is None or reply.get("status") != "OK":
            return self._give_up(_refused(text) or f"refused: {text[:200]!r}")
        self._state = "linked"
        self.linked_at = self.factory.realm.clock.seconds()
        self.factory.resetDelay()  # only now: the link is proved
        queue = self.factory.queue
        queue.attach(self, self.factory.story.up(
            lambda note: queue.with_depth(queue.tell_up, self, note)
        ))

    def _give_up(self, why):
        self.factory.failing(f"handshake failed: {why}")
        self.close(why)

    def connectionLost(self, reason):
        self.factory.realm.metrics.connections["realm_out"] -= 1
        why = f"link lost: {reason.getErrorMessage()}"
        if not self.closed_on_purpose and self.factory.continueTrying:
            if self.linked_at is None:  # the TLS handshake, or the peer hung up
                self.factory.failing(f"handshake failed: {why}")
            else:
                self.factory.queue.link_failed(why)
        if not self.factory.continueTrying:
            why = self.factory.stop_reason
        self.factory.queue.detach(self, why)

    def close(self, why, abort=False):
        """
        Close this link, C{why} being what listrealms shows as its last
        error.  The queue lets go of it at once, so nothing more is written
        on it (what was sent and not answered goes again on the next one).
        C{abort}: drop it without waiting for what is being written.
        """
        self.closed_on_purpose = True
        self.factory.queue.link_failed(why)
        self.factory.queue.detach(self, why)
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()


def _refused(text):
    """The refusal of a peer's ERROR line, as a reason; None if C{text} is not one."""
    reply = json_object(text)
    if reply is None or reply.get("status") != "ERROR":
        return None
    return f"refused by the peer: {plain(str(reply.get('message'))[:200])}"


class _WatchedFileSender(FileSender):
    """A FileSender that notes, on its link, when its bytes last moved."""

    def __init__(self, link):
        self._link = link

    def resumeProducing(self):
        self._link.file_progress = self._link.factory.queue.realm.clock.seconds()
        FileSender.resumeProducing(self)


class LinkFactory(ReconnectingClientFactory):
    """
    Keeps one link to a peer up: reconnects with a backoff capped at
    C{max_delay} seconds, reset once a link has authenticated, and never
    given up while the realm runs (L{stopTrying} at its stop).
    """

    protocol = RealmLink
    noisy = False
    # Twisted adds its jitter after the cap, which would break the promise
    # "at most max_delay" by up to ~30 %: no jitter (a realm has few peers).
    jitter = 0
    # What the down line of a link stopped here says (the realm stops, or
    # this process lost the lease of the peer's outbox).
    stop_reason = "this realm stops"

    def __init__(self, realm, peer, secret, queue, max_line_bytes, clock, max_delay=5.0):
        self.realm = realm
        self.peer = peer
        self.secret = secret
        self.queue = queue
        self.max_line_bytes = max_line_bytes
        self.clock = clock
        self.maxDelay = max_delay
        self.story = LinkStory(realm.clock)

    def logPrefix(self):
        return f"realm {self.realm.name} link to {self.peer}"

    def clientConnectionFailed(self, connector, reason):
        self.failing(f"cannot connect: {reason.getErrorMessage()}")
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)

    def retry(self, connector=None):
        # A failed or lost link (never after stopTrying): another attempt after the backoff.
        self.realm.metrics.peer(self.peer).reconnects += 1
        ReconnectingClientFactory.retry(self, connector)
    def failing(self, why):
        """An attempt failed before the link was up: one line if that is news."""
        self.queue.link_failed(why)
        if self.story.failed(why):
            self.queue.with_depth(lambda depth: log.warn(
                "link to realm {peer} failing: {why}; {queued} messages queued; retrying"
                " at most {delay:g} s apart (said again only for a new reason)",
                peer=self.peer, why=why, queued=depth, delay=self.maxDelay,
                realm=self.realm, link_event="failing",
            ))

    def stopTrying(self):
        self.story.stop()
        ReconnectingClientFactory.stopTrying(self)

    def peer_seen(self):
        """
        The peer just proved itself on its own link to this realm: it is
        up.  If this realm's link to it is waiting out a backoff, connect
        now rather than when the delay ends, so the backlog drains at once.
        """
        if self.connector is not None and self._cancel_waiting_retry():
            self.resetDelay()
            self.connector.connect()

    def _cancel_waiting_retry(self):
        """
        Cancel the retry that ReconnectingClientFactory scheduled, if one is
        waiting out its delay; True if there was one.

        The one use of the base class's private C{_callID}: the
        IDelayedCall that C{retry} schedules, cleared when it fires and by
        C{resetDelay} and C{stopTrying} (checked against Twisted 23.10 and
        26.10); RealConnectorTests in tests/federation/test_link.py fails
        if it changes meaning.
        """
        waiting = self._callID
        if waiting is None or not waiting.active():
            return False
        waiting.cancel()
        self._callID = None  # else stopTrying would cancel it a second time
        return True
