"""
The client port: L{ChatProtocol} and L{ChatFactory} (docs/protocol.md).

The protocol is thin: it frames lines (L{RequestLineReceiver}), applies
the rate limit, decodes and parses each line with the pure
L{parse_request}, hands the request to the connection's
L{multirealm.chat.handlers.Handlers}, and queues the reply in the
connection's L{OutboundQueue}, which writes replies in request order
however the core's answers interleave.
"""

from time import perf_counter

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from multirealm import errors, wire
from multirealm.chat.handlers import Handlers, PrivateStored, Stored
from multirealm.chat.idle import IdleSweep
from multirealm.chat.live import LiveDelivery
from multirealm.chat.outbound import OutboundQueue, ReplyBudget, Streamed
from multirealm.chat.upload import BadEncoding, Base64Body
from multirealm.commands import parse_request, split_command
from multirealm.connections import admitted, for_this_process
from multirealm.core.incoming import IncomingFile
from multirealm.framing import RequestLineReceiver
from multirealm.model import PRIVATE, Delivery, FileRef
from multirealm.ratelimit import TokenBucket
from multirealm.readgate import ReadGate
from multirealm.logs import RealmLogger

# During a file body, only this many bytes of it restart the idle timer:
# a body trickled a byte a minute does not hold a connection for ever.
BODY_PROGRESS_BYTES = 65536

# Sent once to a subscriber whose events backed up past its budget.
OVERFLOW_EVENT = wire.encode({"event": "overflow"})

# The command label of a request that names no known command (metrics).
UNKNOWN = "unknown"

# The private messages of one read are stored as a run (L{_SendRun}) of
# at most this many, whose texts together hold at most this many
# characters (or one message, whatever its length): a run's reply slot
# holds about as much as one long request line does.
RUN_MOST = 32
RUN_TEXT = 16384

log = RealmLogger()


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class ChatProtocol(RequestLineReceiver):
    """
    One client connection.

    Reading stops (C{pauseProducing}) for any of six reasons, kept apart
    by its L{ReadGate}: the transport's write buffer is full (C{writes}: a
    client that does not read its replies), too many replies are pending
    (C{pending}), too many bytes of replies wait (C{bytes}: this
    connection's C{reply_buffer_bytes}, or the realm's L{ReplyBudget}
    while this connection holds any), a heavy request waits for that
    budget (C{budget}), a file's batch is being written (C{disk}), or a
    C{serial} command (C{register}, C{auth}, C{passwd}) or a session
    lookup is running (C{serial}).  A history or list request counts as
    its largest possible reply until it is answered.  The last keeps
    pipelined requests in order across the password hashing, which runs
    in a thread pool: C{auth} then C{send - ...}, or C{register} then
    C{auth}, work when sent in one burst.

    A client may half-close (C{nc -N}, C{printf ... | nc -q 5}): every
    request it sent before its end still gets its reply, then the server
    closes.

    A connection that sends no request for C{idle_timeout} seconds (a
    C{ping} counts) is told C{idle_timeout} and closed: only a complete
    line (or, in a file body, each C{BODY_PROGRESS_BYTES} of it) restarts
    the timer, so a trickle a byte a minute does not hold a connection
    open for ever.  One L{IdleSweep} per factory times them all out (up to
    a second late), not a timer per connection.  TCP keepalive finds peers
    that vanished without a word.  On the TLS port the handshake must
    finish within C{header_timeout} seconds.

    No exception in handling one request (parsing, its handler, the start
    of an upload, encoding its reply) drops the connection: it becomes that
    request's C{internal} reply, in its place, logged with its traceback.
    """

    MAX_PENDING = 1000

    # Every attribute in slots, its base classes' too, set here: in Python
    # 3.11 an object that is given an attribute its class's first
    # instances did not have (LineReceiver's _unread at the first request,
    # say), or its 30th, gets a whole dict of its own, up to 1.3 KiB more
    # per idle connection (benchmarks/idle_memory.py).  A new attribute
    # goes here too (tests/chat/test_connections.py, IdleMemoryTests).
    __slots__ = (
        "factory", "transport", "connected", "address", "ticket", "kind",
        "line_mode", "paused", "_unread", "_pos", "_framing", "_discarding",
        "realm", "_metrics", "MAX_LENGTH", "_bucket", "handlers", "subscribed_as",
        "_event_bytes", "_event_budget", "_reply_buffer", "_longest", "_parked", "_upload",
        "_budget", "_gate", "_quitting", "_outbound", "_body_bytes", "_handshake_deadline",
        "_counted_open", "idle_since", "_idle_second", "_run",
    )

    def __init__(self):
        self.factory = self.transport = None
        self.connected = 0
        self.address = None  # the client's IP, set by the factory: per-address limits key on it
        self.ticket = None  # from the factory's ConnectionLimits, given back when the connection ends
        self.kind = "chat"  # counted open as (metrics): chat_tls on the TLS port
        self.line_mode = 1
        self.paused = False
        self._unread = b""
        self._pos = 0
        self._framing = self._discarding = False
        self.MAX_LENGTH = RequestLineReceiver.MAX_LENGTH
        self.subscribed_as = None  # the user whose events this connection gets
        self._event_bytes = 0  # events queued since the client last caught up
        self._parked = None  # a heavy request waiting for the realm's budget
        self._upload = None  # the file body being read, in raw mode
        self._quitting = False
        self._handshake_deadline = None
        self._counted_open = False
        self._idle_second = None  # where the factory's IdleSweep filed it
        self._run = None  # the private messages of this read not yet stored (_SendRun)

    def connectionMade(self):
        factory = self.factory
        self.realm = factory.realm
        self._metrics = self.realm.metrics
        self.MAX_LENGTH = factory.limits.max_line_bytes
        self._bucket = TokenBucket(
            factory.limits.rate_limit_per_second, factory.limits.rate_limit_burst, factory.clock
        )
        self.handlers = Handlers(self.realm, self.address, self._hold_until, events=self)
        self._event_budget = factory.limits.event_buffer_bytes
        self._reply_buffer = factory.limits.reply_buffer_bytes
        self._longest = factory.longest  # the most a heavy reply may take, by kind
        self._budget = factory.reply_budget
        self._gate = ReadGate(self)
        self._outbound = OutboundQueue(
            self.transport,
            on_pause=self._writes_full,
            on_resume=self._writes_drained,
            on_written=self._replies_written,
            budget=self._budget,
            realm=self.realm.name,
        )
        factory.idle.add(self)  # sets idle_since
        if ISSLTransport.providedBy(self.transport):
            # TLS records never reach dataReceived: a handshake that
            # trickles would otherwise last the whole idle timeout.
            self._handshake_deadline = factory.clock.callLater(
                factory.limits.header_timeout, self.transport.abortConnection
            )
            self.kind = "chat_tls"
        open_now = self._metrics.connections
        open_now[self.kind] = open_now.get(self.kind, 0) + 1
        self.handlers.port = self.kind  # the files it sends are counted by it
        self._counted_open = True
        keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if keepalive is not None:
            keepalive(True)

    def handshakeCompleted(self):
        deadline, self._handshake_deadline = self._handshake_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def readConnectionLost(self):
        self._gate.input_ended()
        if self._upload is not None:  # the client ended in the middle of a file
            self._abandon_upload("the connection ended in the middle of a file")
        self._close_when_answered()

    def _abandon_upload(self, why):
        """
        A file body that will never end: drop the file and answer it with
        C{why}, in its place among the replies; the caller closes the
        connection once they are out.
        """
        upload, self._upload = self._upload, None
        upload.fail(errors.BadFileEncoding(why))
        self._quitting = True  # what comes after the body is not acted on
        upload.finish()
        self.setLineMode()

    def writeConnectionLost(self):
        pass  # we never half-close our side

    def connectionLost(self, reason):
        self.factory.live.unsubscribe(self)
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.fail(errors.ChatError("the connection was lost mid-upload"))
        self.factory.idle.remove(self)
        self.handshakeCompleted()  # its deadline, if it never did
        if self.ticket is not None:
            self.ticket.release()
        if self._counted_open:
            self._counted_open = False
            self._metrics.connections[self.kind] -= 1
        self.connected = False
        self._gate.connection_lost()
        self._quitting = True
        self._outbound.close()
        self._budget.forget(self)

    # -- live events (docs/protocol.md, "Live events") ------------------------

    def subscribe(self, user, token):
        self._event_bytes = 0
        self.factory.live.subscribe(user, token, self)

    def unsubscribe(self):
        self.factory.live.unsubscribe(self)

    def session_ended(self, token):
        self.factory.live.session_ended(token)

    def tell_other_connections(self, user, event):
        """C{event} (a dict) to C{user}'s subscribed connections other than this one."""
        self.factory.live.push_to(user, wire.encode(event), skip=self)

    def group_created(self, group, creator):
        """Group C{group}'s members here, but this connection, hear it was created."""
        self.factory.live.group_created(group, creator, skip=self)

    def authenticated(self, user):
        """This connection logged in as C{user}: another user's events stop."""
        if self.subscribed_as is not None and self.subscribed_as.lower() != user.lower():
            self.unsubscribe()

    def push_event(self, event):
        """
        Send the bytes of one event between replies, never inside one: at
        once when no reply is being written, else after the replies already
        queued.  Events that wait do so under a budget of their own:
        a client that stops reading gets one C{overflow} event, and no more
        until it subscribes again; what it missed is in its history.
        """
        outbound = self._outbound
        self._metrics.events_sent += 1
        if outbound.can_write_now():
            self._event_bytes = 0  # nothing of this client's waits: out at once
            outbound.between(event)
            return
        # It waits: within this connection's event budget, and within half
        # of the realm's reply budget, so that subscribers who do not read
        # never park other people's requests.
        realm = self._budget
        if (self._event_bytes + len(event) > self._event_budget
                or realm.used + len(event) > realm.limit // 2):
            self.unsubscribe()
            event = OVERFLOW_EVENT
            self._metrics.event_overflows += 1
        self._event_bytes += len(event)
        outbound.between(event)

    # -- flow control -------------------------------------------------------

    def _hold(self, reason):
        self._gate.hold(reason)

    def _release(self, reason):
        self._gate.release(reason)

    def _writes_full(self):
        self._gate.hold("writes")

    def _writes_drained(self):
        self._gate.release("writes")

    def dataReceived(self, data):
        if self.line_mode:
            if b"\n" in data:
                self.idle_since = self.factory.clock.seconds()  # a request ended, not a trickle
        else:
            # A file body restarts the timer by progress only, not by any byte.
            self._body_bytes += len(data)
            if self._body_bytes >= BODY_PROGRESS_BYTES:
                self._body_bytes = 0
                self.idle_since = self.factory.clock.seconds()
        try:
            RequestLineReceiver.dataReceived(self, data)
        finally:
            if self._run is not None:
                self._store_run()
        self._close_when_answered()

    def timeoutConnection(self):
        """
        Idle too long: say so and close once every reply is out, or at once
        if the client is not reading them (its replies would never leave).
        """
        self._quitting = True
        if self._upload is not None:  # a body stalled mid-way: its slot would never fill
            self._abandon_upload(
                f"less than {BODY_PROGRESS_BYTES // 1024} KiB of the file in"
                f" {self.factory.limits.idle_timeout:g} seconds: dropped"
            )
        idle = errors.IdleTimeout(
            f"no request for {self.factory.limits.idle_timeout:g} seconds: closing"
            " (send ping to keep a connection open)"
        )
        self._outbound.reply(wire.to_bytes(idle))
        if self._outbound.blocked:
            self._outbound.end(abort=True)
        else:
            self._close_when_answered()

    def _replies_written(self):
        if self.paused:  # a hold pauses: none is checked for every reply otherwise
            if "pending" in self._gate and self._outbound.waiting < self.MAX_PENDING // 2:
                self._release("pending")
            if "bytes" in self._gate:
                self._check_reply_bytes()
        self._close_when_answered()

    def _check_reply_bytes(self):
        """Hold or release reading by the bytes of replies waiting."""
        pending = self._outbound.pending_bytes
        if pending > self._reply_buffer:
            self._hold("bytes")
        elif pending and self._budget.exhausted:
            self._hold("bytes")
            self._budget.wait(self)
        elif "bytes" in self._gate:
            self._release("bytes")

    def budget_available(self):
        """The realm's reply budget has room again (L{ReplyBudget})."""
        if not self.connected:
            return
        parked, self._parked = self._parked, None
        if parked is not None:
            self._handle(parked)
            self._release("budget")
        self._check_reply_bytes()

    def _close_when_answered(self):
        """After quit or the client's end, close once every reply is out."""
        if not (self._quitting or self._gate.ended):
            return  # the common case, checked first: this runs for every reply
        if self._outbound.waiting or self.receiving or not self.connected:
            return
        if self._quitting or not self.paused:
            self._outbound.end()

    # -- requests -----------------------------------------------------------

    def lineReceived(self, line):
        line = line.rstrip(b" \t\r")
        if not line or self._quitting:
            return
        try:
            request = self._parse(line)
        except errors.ChatError as refused:
            # A file body follows an upload's header whatever else is wrong
            # with it: the command table tells, from the bytes as read.
            command = split_command(line)[0]
            if command is not None and command.upload:
                return self._begin_upload(command, None, refused)
            name = UNKNOWN if command is None else command.name
            return self._answer(refused, 0, name, perf_counter())
        command = request.command
        if command is not None and command.upload:
            return self._begin_upload(command, request)
        if command is not None and command.heavy and self._budget.exhausted:
            # The realm holds too many reply bytes: this long request waits
            # (and so do the ones after it) until there is room.
            self._parked = request
            self._hold("budget")
            self._budget.wait(self)
            return
        self._handle(request)

    def _parse(self, line):
        """The L{Request} of a line; raises the L{errors.ChatError} that refuses it."""
        if not self._bucket.allow():
            raise errors.RateLimited("too many requests: slow down")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.BadEncoding("request is not valid UTF-8") from None
        try:
            return parse_request(text)
        except Exception:
            raise self._bug(Failure()) from None

    def _handle(self, request):
        started = perf_counter()
        command = request.command
        name = UNKNOWN if command is None else command.name
        if self._run is not None and name not in _JOINS_RUNS:
            # What this request stores or reads (in its handler, before
            # its reply) comes after the run's messages.
            self._store_run()
        try:
            result = self.handlers.handle(request)
        except errors.ChatError as e:
            # Without its traceback: a refusal kept with the frame that
            # raised it is a cycle, which holds the request line until the
            # garbage collector runs (rarely: multirealm.collector).
            result = e.with_traceback(None)
        except Exception:
            result = defer.fail()  # answered like a failure that came later
        else:
            if command.closes:
                self._quitting = True
            elif command.serial and isinstance(result, defer.Deferred):
                self._hold_until(result)
            elif command.heavy:
                return self._answer(result, self._longest[command.heavy], name, started)
        self._answer(result, 0, name, started)

    # -- uploads: sendfile, sendgroupfile ------------------------------------

    def _begin_upload(self, command, request, refused=None):
        """
        A file body follows this line of C{command}, whatever the line
        said: read it in raw mode, to disk if the request is good, else
        only to its end, and answer once it is all in (in its place among
        the replies).
        """
        file = IncomingFile(
            self.realm.files, self.factory.limits.max_file_bytes, self.realm.name
        )
        upload = _Upload(defer.Deferred(), Base64Body(), file)
        self._answer(upload.answer, 0, command.name, perf_counter())
        try:
            if refused is not None:
                raise refused
            upload.target = self.handlers.handle(request)
        except errors.ChatError as e:
            file.fail(e)
        except Exception:
            file.fail(Failure())  # a bug: answered internal once the body is in
        if isinstance(upload.target, defer.Deferred):
            upload.target.addErrback(upload.refused)
        self._upload = upload
        self._body_bytes = 0
        self.setRawMode()

    def rawDataReceived(self, data):
        upload = self._upload
        body = upload.body
        if upload.file.error is not None:
            body.skip(data)
        else:
            try:
                decoded = body.feed(data)
                writing = upload.file.write(decoded)
            except BadEncoding as e:
                upload.file.fail(errors.BadFileEncoding(str(e)))
            except Exception:
                upload.file.fail(Failure())  # a bug: answered internal once the body is in
            else:
                if writing is not None:
                    # A batch is being written in a thread: read no more
                    # until it is (one batch in flight, in order).
                    self._gate.hold_until("disk", writing)
        if body.done:
            self._upload = None
            self.idle_since = self.factory.clock.seconds()  # a request ended
            # Later requests wait until this file and its message are
            # stored: messages keep request order, and a connection has one
            # file open at a time.
            self._hold_until(upload.finish())
            self.setLineMode(body.rest)

    def lineTooLong(self):
        if self._quitting:
            return  # ignored, as every line after quit is
        self._bucket.allow()  # the line counts against the rate all the same
        self._answer(
            errors.LineTooLong(f"request line longer than {self.MAX_LENGTH} bytes; ignored"),
            0, UNKNOWN, perf_counter(),
        )

    def refuse(self, error):
        """
        A request refused before it was a line (a WebSocket message that
        cannot be one: binary, or holding a line break), answered with
        C{error} in its place among the replies; inside a file body, the
        file fails with it instead.  It counts against the rate as a line.
        """
        if self._quitting:
            return
        if self._upload is not None:
            self._upload.fail(errors.BadFileEncoding(f"{error} (in the file's body)"))
            return
        self._bucket.allow()
        self._answer(error, 0, UNKNOWN, perf_counter())

    def _answer(self, result, most, name, started):
        """
        Queue the reply to one request of command C{name} handled since
        C{started} (C{perf_counter}): a dict, bytes, a ChatError, a
        L{Stored} message or a Deferred (whose reply may take up to C{most}
        bytes).
        """
        kind = type(result)
        if kind is PrivateStored:
            if self._run is not None or self._unread and self.more_lines:
                # A run is open, or another line of this read follows.  A
                # lone line is not a run (one would cost more than it
                # saves; framing's one-line path, the closed loop's,
                # buffers nothing).
                return self._join_run(result.args, name, started)
            later = True
        else:
            if self._run is not None:
                self._store_run()  # this reply's place is after the run's: no later send joins it
            later = kind is Stored
        if later or isinstance(result, defer.Deferred):
            slot = self._outbound.reserve(most)
            if later:
                reply = _StoredReply(self, slot, name, started)
                try:
                    result.store(reply)
                except Exception:
                    reply(Failure())
            else:
                counted = (slot, name, started)
                result.addCallbacks(self._fill, self._fill_failure, counted, None, counted)
            if self._outbound.waiting >= self.MAX_PENDING:
                self._hold("pending")
        else:
            self._count(result, name, started)
            self._outbound.reply(self._encode(result))
        if self._outbound.pending_bytes:
            self._check_reply_bytes()

    def _join_run(self, send, name, started):
        """
        A private message (C{(sender, recipient, text)}), minted now (in
        request order), joins this read's run: stored with the others once
        the read's lines are handled (L{dataReceived}), or before the next
        request or reply that is not one (L{_handle}, L{_answer},
        L{_hold_until}).
        """
        run = self._run
        try:
            message = self.realm.new_message(PRIVATE, *send)
        except Exception:  # a bug: this request's own reply (internal), after the run's
            return self._answer(self._bug(Failure()), 0, name, started)
        if run is None or not run.add(message, name):
            if run is not None:
                self._store_run()
            run = self._run = _SendRun(self, self._outbound.reserve(), name, started)
            run.add(message, name)  # the first always fits
            if self._outbound.waiting >= self.MAX_PENDING:
                self._hold("pending")

    def _store_run(self):
        run, self._run = self._run, None
        try:
            self.realm.send_run(run.messages, run)
        except Exception:
            run(Failure())

    def _count(self, result, name, started):
        """One request answered (metrics): by command, by code, and how long it took."""
        code = result.code if isinstance(result, errors.ChatError) else "OK"
        self._metrics.request(name, code, perf_counter() - started)

    def _fill(self, result, slot, name, started):
        self._count(result, name, started)
        self._outbound.fill(slot, result if type(result) is bytes else self._encode(result))

    def _fill_failure(self, failure, slot, name, started):
        if failure.check(errors.ChatError):
            self._fill(failure.value, slot, name, started)
        else:
            self._fill(self._bug(failure), slot, name, started)

    def _encode(self, result):
        """The bytes of a reply; one that cannot be encoded is a bug, answered internal."""
        try:
            return _reply_bytes(result)
        except Exception:
            return wire.to_bytes(self._bug(Failure()))

    def _bug(self, failure):
        """Log a request's failure; return its C{internal} reply."""
        # The traceback only: the request line may hold a password.
        log.failure("request failed on realm {realm}", failure, realm=self.realm.name)
        return errors.ChatError("internal error: the server logged it")

    def _hold_until(self, deferred):
        """
        Hold later requests of this connection until C{deferred} (with
        every callback already added to it) has fired.
        """
        if self._run is not None:
            # A send whose session is looked up stores its message when the
            # lookup fires, perhaps at once: the run's messages go first.
            self._store_run()
        self._gate.hold_until("serial", deferred)


class _StoredReply:
    """
    Fills the slot of a sending command's request (L{Stored}): called once
    with the message's Delivery or a Failure.
    """

    __slots__ = ("_protocol", "_slot", "_name", "_started")

    def __init__(self, protocol, slot, name, started):
        self._protocol = protocol
        self._slot = slot
        self._name = name
        self._started = started

    def __call__(self, result):
        protocol = self._protocol
        if type(result) is not Failure:
            try:
                reply = wire.sent(result)
            except Exception:  # a bug: still this request's reply (internal), in its place
                result = Failure()
            else:
                # ChatProtocol._fill of an OK, inlined: this runs for every message.
                protocol._metrics.request(self._name, "OK", perf_counter() - self._started)
                protocol._outbound.fill(self._slot, reply)
                return
        protocol._fill_failure(result, self._slot, self._name, self._started)


# The commands whose messages join a run (PrivateStored).
_JOINS_RUNS = frozenset(("send", "sendrealm"))


class _SendRun:
    """
    Private messages one connection sent in one read, stored in one
    operation (L{multirealm.core.realm.Realm.send_run}) and answered in
    one reply slot: the send path's per-message Python is mostly what one
    request costs a store and a reply queue, paid here once per run
    (issue 18).  Called once with a L{multirealm.model.Sent} or a Failure;
    each message still gets its own reply, in request order, and its own
    refusal.
    """

    __slots__ = ("_protocol", "_slot", "_name", "_started", "messages", "_text")

    def __init__(self, protocol, slot, name, started):
        self._protocol = protocol
        self._slot = slot
        self._name = name  # send or sendrealm: a run holds one command's (metrics)
        self._started = started
        self.messages = []
        self._text = 0

    def add(self, message, name):
        """
        Add C{message} of command C{name} if the run takes it (one
        command's, within the bounds; the first always); False if not.
        """
        messages = self.messages
        text = self._text + len(message.text)  # characters: few bytes each
        if messages and (name != self._name or len(messages) >= RUN_MOST or text > RUN_TEXT):
            return False
        messages.append(message)
        self._text = text
        return True

    def __call__(self, sent):
        protocol = self._protocol
        count = len(self.messages)
        self.messages = None  # held no longer than needed
        seconds = perf_counter() - self._started
        metrics = protocol._metrics
        if type(sent) is Failure:
            error = sent.value if sent.check(errors.ChatError) else protocol._bug(sent)
            metrics.request(self._name, error.code, seconds, count)
            reply = wire.to_bytes(error) * count
        else:
            replies, stored = [], 0
            for result in sent:
                if type(result) is Delivery:
                    try:
                        replies.append(wire.sent(result))
                    except Exception:  # a bug: this message's reply only (internal)
                        result = protocol._bug(Failure())
                    else:
                        stored += 1
                        continue
                elif type(result) is Failure:  # this message alone failed
                    # A refusal (a full disk, say) as it is; anything else a bug.
                    result = result.value if result.check(errors.ChatError) else protocol._bug(result)
                metrics.request(self._name, result.code, seconds)
                replies.append(wire.to_bytes(result))
            if stored:
                metrics.request(self._name, "OK", seconds, stored)
            reply = b"".join(replies)
        protocol._outbound.fill(self._slot, reply)


class _Upload:
    """One file body being received, and what to do once it is in."""

    def __init__(self, answer, body, file):
        self.answer = answer  # fires with the reply
        self.body = body
        self.file = file  # the IncomingFile
        self.target = None  # a PendingFile, or a Deferred of one

    def refused(self, failure):
        """The request was refused while its body came in (its session, say)."""
        self.file.fail(failure)
        return None

    def fail(self, error):
        self.file.fail(error)

    def finish(self):
        """
        The body is in: store the file and its message, or answer the
        error.  Returns a Deferred that fires once done either way.
        """
        work = defer.maybeDeferred(lambda: self.target)
        work.addCallback(lambda pending: self.file.finish(
            lambda file_id, size: pending.send(FileRef(pending.name, file_id, size))
        ))
        done = defer.Deferred()

        def stored(result):
            done.callback(None)
            return result

        work.addBoth(stored)
        work.chainDeferred(self.answer)
        return done


def _reply_bytes(result):
    """A reply as the outbound queue takes it: bytes, or a Streamed as it is."""
    return result if isinstance(result, Streamed) else wire.to_bytes(result)


class ChatFactory(Factory):
    """
    Builds a L{ChatProtocol} per connection that C{connections} (a
    L{multirealm.connections.ConnectionLimits}, by default one of its own)
    admits; past a cap, the connection gets one C{too_many_connections}
    (its address) or C{unavailable} (the process) reply and is closed.
    Not C{policies.LimitConnectionsByPeer}: it indexes addresses as
    tuples, which Twisted's address objects no longer are, and its
    protocol wrapper would sit on every read and write.
    """

    protocol = ChatProtocol
    noisy = False

    def __init__(self, realm, limits, clock, live=None, connections=None):
        self.realm = realm
        self.limits = limits
        self.clock = clock
        if live is None:
            live = LiveDelivery(realm)
            realm.notifier.subscribe(live)
            realm.sessions.on_user_sessions_ended(live.sessions_ended)
            realm.sessions.on_sessions_forgotten(live.recheck)
            if realm.cluster is not None:  # the realm's other processes' events too
                realm.cluster.listen(live)
        self.live = live  # who is subscribed to events, on every port of this chat
        # Reply bytes waiting across every connection of this realm.
        self.reply_budget = ReplyBudget(limits.realm_reply_buffer_bytes)
        self.longest = {  # the most a heavy reply may take, by kind
            "history": limits.history_reply_bytes,
            "list": limits.list_limit * 40 + 256,  # 32-character names, quoted
        }
        self.idle = IdleSweep(clock, limits.idle_timeout, realm.name)
        self.connections = connections or for_this_process(limits, clock)

    def logPrefix(self):
        return f"realm {self.realm.name} chat"

    def build_upgraded(self, addr, ticket):
        """
        The protocol of a connection admitted on another port (a WebSocket,
        admitted as the HTTP connection it started as): it holds that
        connection's C{ticket} and gives it back when it ends.
        """
        protocol = Factory.buildProtocol(self, addr)
        protocol.kind = "websocket"  # the one such port (metrics)
        protocol.ticket = ticket
        protocol.address = getattr(addr, "host", None)
        return protocol

    def buildProtocol(self, addr):
        protocol = admitted(
            self.connections, addr, wire.to_bytes, lambda: Factory.buildProtocol(self, addr)
        )
        protocol.address = getattr(addr, "host", None)  # per-address limits key on it
        return protocol
