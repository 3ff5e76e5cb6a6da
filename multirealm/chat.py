"""
The client port: L{ChatProtocol} and L{ChatFactory} (PROTOCOL.md §1).

The protocol is thin: it frames lines, parses each with the pure
L{parse_request}, calls the core (L{multirealm.realm.Realm}) through one
C{command_<name>} method per command, and writes one JSON reply per request
in request order, however the core's answers interleave.
"""

import json
from collections import deque

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from multirealm import errors
from multirealm.commands import COMMANDS, parse_request
from multirealm.framing import RequestLineReceiver
from multirealm.names import Address
from multirealm.ratelimit import TokenBucket

log = Logger()

REPLY_END = b"\r\n\r\n"
SAME_SESSION = "-"


def encode(reply):
    """One reply or event on the wire: a JSON object, then an empty line."""
    return json.dumps(reply).encode("ascii") + REPLY_END


def ok(**fields):
    return {"status": "OK", **fields}


def error_reply(error):
    return {"status": "ERROR", "code": error.code, "message": error.message}


@attrs.frozen
class Caller:
    """Who sent a request that carries a session: the user and the token."""

    user: str
    token: str


@implementer(IHalfCloseableProtocol)
class ChatProtocol(RequestLineReceiver):
    """
    One client connection.

    Replies wait in C{_replies}, a queue of one-item lists (slots) in
    request order: an answer that comes early waits for those before it.

    Reading stops (C{pauseProducing}) for any of three reasons, kept apart
    in C{_holds}: the transport's write buffer is full (a client that does
    not read its replies), too many replies are pending, or a C{register}
    / C{auth} is running.  The last keeps pipelined requests in order
    across the password hashing, which runs in a thread pool: C{auth} then
    C{send - ...}, or C{register} then C{auth}, work when sent in one burst.

    A client may half-close (C{nc -N}, C{printf ... | nc -q 5}): every
    request it sent before its end still gets its reply, then the server
    closes.
    """

    MAX_PENDING = 1000

    def connectionMade(self):
        factory = self.factory
        self.realm = factory.realm
        self.MAX_LENGTH = factory.limits.max_line_bytes
        self._bucket = TokenBucket(
            factory.limits.rate_limit_per_second, factory.limits.rate_limit_burst, factory.clock
        )
        self._replies = deque()
        self._holds = set()
        self._session = None  # token of the last successful auth here
        self._caller = None  # the last Caller, reused while its session sends
        self._quitting = False
        self._input_done = False  # the client half-closed: nothing more comes
        self.transport.registerProducer(self, True)

    def readConnectionLost(self):
        self._input_done = True
        self._close_when_answered()

    def writeConnectionLost(self):
        pass  # we never half-close our side

    def connectionLost(self, reason):
        self.connected = False
        self._replies.clear()
        self._quitting = True

    # -- flow control -------------------------------------------------------

    def _hold(self, reason):
        self._holds.add(reason)
        if not self.paused:
            RequestLineReceiver.pauseProducing(self)

    def _release(self, reason):
        self._holds.discard(reason)
        if self.paused and not self._holds and self.connected:
            if self._input_done:
                # Nothing more to read: just go on with the lines received.
                self.paused = False
                self.dataReceived(b"")
            else:
                RequestLineReceiver.resumeProducing(self)

    def dataReceived(self, data):
        RequestLineReceiver.dataReceived(self, data)
        self._close_when_answered()

    def _close_when_answered(self):
        """After quit or the client's end, close once every reply is out."""
        if self._replies or self._busyReceiving or not self.connected:
            return
        if self._quitting or (self._input_done and not self.paused):
            self.transport.loseConnection()

    # The transport calls these when its write buffer fills and drains.
    def pauseProducing(self):
        self._hold("writes")

    def resumeProducing(self):
        self._release("writes")

    # -- requests -----------------------------------------------------------

    def lineReceived(self, line):
        line = line.rstrip(b" \t\r")
        if not line or self._quitting:
            return
        if not self._bucket.allow():
            return self._answer(errors.RateLimited("too many requests: slow down"))
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._answer(errors.BadEncoding("request is not valid UTF-8"))
        try:
            result = self._dispatch(parse_request(text))
        except Exception:
            result = defer.fail()  # answered like a failure that came later
        self._answer(result)

    def lineTooLong(self):
        self._bucket.allow()  # the line counts against the rate all the same
        self._answer(
            errors.LineTooLong(f"request line longer than {self.MAX_LENGTH} bytes; ignored")
        )

    def _answer(self, result):
        """Queue the reply to one request: a dict, a ChatError or a Deferred."""
        if isinstance(result, defer.Deferred):
            slot = [None]
            self._replies.append(slot)
            result.addCallbacks(self._fill, self._fill_failure, (slot,), None, (slot,))
            if len(self._replies) >= self.MAX_PENDING:
                self._hold("pending")
        elif self._replies:
            self._replies.append([_format(result)])
        else:
            self._write(_format(result))

    def _fill_failure(self, failure, slot):
        if failure.check(errors.ChatError):
            self._fill(failure.value, slot)
        else:
            # The traceback only: the request line may hold a password.
            log.failure("request failed on realm {realm}", failure, realm=self.realm.name)
            self._fill(errors.ChatError("internal error: the server logged it"), slot)

    def _fill(self, result, slot):
        slot[0] = _format(result)
        replies = self._replies
        while replies and replies[0][0] is not None:
            self._write(replies.popleft()[0])
        if len(replies) < self.MAX_PENDING // 2 and "pending" in self._holds:
            self._release("pending")

    def _write(self, payload):
        self.transport.write(payload)
        self._close_when_answered()

    def _dispatch(self, request):
        command = request.command
        if command is None:
            raise request.error
        if not command.session:
            if request.error is not None:
                raise request.error
            return getattr(self, "command_" + command.name)(**request.args)
        if request.session is None:
            raise request.error  # the session id itself is missing
        token = request.session
        if token == SAME_SESSION:
            if self._session is None:
                raise errors.InvalidSession(
                    "no session on this connection yet: auth first, or give the session id"
                )
            token = self._session
        user = self.realm.session_user(token)
        if isinstance(user, defer.Deferred):
            return user.addCallback(self._run, token, request)
        return self._run(user, token, request)

    def _run(self, user, token, request):
        if request.error is not None:
            raise request.error
        caller = self._caller
        if caller is None or caller.token != token or caller.user != user:
            caller = self._caller = Caller(user, token)
        handler = getattr(self, "command_" + request.command.name)
        return handler(caller, **request.args)

    def _hold_until(self, deferred):
        """
        Hold later requests of this connection until C{deferred} (with
        every callback already added to it) has fired.
        """
        self._hold("auth")

        def release(result):
            self._release("auth")
            return result

        return deferred.addBoth(release)

    # -- commands: accounts -------------------------------------------------

    def command_register(self, username, password):
        d = self.realm.register(username, password)
        return self._hold_until(d.addCallback(lambda _: ok(message=f"user {username} registered")))

    def command_auth(self, username, password):
        def logged_in(token):
            self._session = token
            return ok(tokenid=token)

        return self._hold_until(self.realm.login(username, password).addCallback(logged_in))

    def command_logout(self, caller):
        if self._session == caller.token:
            self._session = None
        return self.realm.logout(caller.token).addCallback(lambda _: ok(message="logged out"))

    def command_listusers(self):
        return self.realm.list_users().addCallback(lambda users: ok(users=users))

    def command_help(self):
        return ok(commands=[f"{c.usage}  -- {c.summary}" for c in COMMANDS.values()])

    def command_quit(self):
        self._quitting = True
        return ok(message="bye")

    # -- commands: messages -------------------------------------------------

    def command_send(self, caller, to, message):
        return self.realm.send(caller.user, self.realm.address(to), message).addCallback(_sent)

    def command_sendrealm(self, caller, to, message):
        recipient = self.realm.remote_address(to)
        return self.realm.send(caller.user, recipient, message).addCallback(_sent)

    def command_sendgroup(self, caller, group, message):
        group = self.realm.address(group, "group name")
        return self.realm.send_group(caller.user, group, message).addCallback(_sent)

    def command_sendgrouprealm(self, caller, group, message):
        group = self.realm.remote_address(group, "group name")
        return self.realm.send_group(caller.user, group, message).addCallback(_sent)

    def command_inbox(self, caller, after_id):
        return self.realm.inbox(caller.user, after_id).addCallback(self._history)

    def command_groupinbox(self, caller, group, after_id):
        group = self.realm.address(group, "group name")
        return self.realm.group_inbox(caller.user, group, after_id).addCallback(self._history)

    def _history(self, history):
        realm = self.realm.name
        return ok(messages=[m.to_wire(realm) for m in history.messages], more=history.more)

    # -- commands: groups and realms ----------------------------------------

    def command_creategroup(self, caller, group, member):
        group = Address.parse(group, self.realm.name, "group name")
        members = [self.realm.address(m) for m in member]
        d = self.realm.create_group(caller.user, group, members)
        return d.addCallback(lambda _: ok(message=f"group {group.name} created"))

    def command_leavegroup(self, caller, group):
        group = self.realm.address(group, "group name")
        d = self.realm.leave_group(caller.user, group)
        return d.addCallback(lambda _: ok(message=f"left group {group.name}"))

    def command_listgroups(self):
        return self.realm.list_groups().addCallback(lambda groups: ok(groups=groups))

    def command_listrealms(self):
        return self.realm.list_realms().addCallback(lambda realms: ok(realms=realms))


# The reply to every sending command, the hottest reply there is, formatted
# without json.dumps: its two fields are ASCII by construction (a hex id, an
# ISO timestamp), so these are the bytes json.dumps would give.
_SENT = b'{"status": "OK", "message": "Message Sent", "id": "%s", "timestamp": "%s"}' + REPLY_END


def _sent(message):
    return _SENT % (message.id.encode("ascii"), message.timestamp.encode("ascii"))


def _format(result):
    """Wire bytes of a reply: a dict, a ChatError, or bytes already encoded."""
    if isinstance(result, bytes):
        return result
    if isinstance(result, errors.ChatError):
        return encode(error_reply(result))
    return encode(result)


class ChatFactory(Factory):
    protocol = ChatProtocol
    noisy = False

    def __init__(self, realm, limits, clock):
        self.realm = realm
        self.limits = limits
        self.clock = clock
