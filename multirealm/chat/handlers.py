"""
The chat commands: request -> core -> reply (docs/protocol.md, "Commands").

L{Handlers} holds one C{command_<name>} method per entry of
L{multirealm.commands.COMMANDS}, the shape of Twisted words' C{irc_<VERB>}
dispatch.  A handler takes the parsed words, calls the core
(L{multirealm.core.realm.Realm}) and returns the reply: a dict, bytes
already encoded, a Deferred of either, or for a sending command a
L{Stored} message (answered without a Deferred); a refusal raises or
fails with an L{errors.ChatError}.  Framing, ordering and flow control are the
protocol's (L{multirealm.chat.protocol}); nothing here touches a transport.
"""

import attrs
from twisted.internet import defer

import json

from multirealm import errors, wire
from multirealm.chat.outbound import Streamed, base64_file
from multirealm.commands import COMMANDS
from multirealm.names import check_filename
from multirealm.wire import ok
from multirealm.logs import RealmLogger

SAME_SESSION = "-"

log = RealmLogger()


@attrs.frozen
class PendingFile:
    """
    A checked C{sendfile}: C{send(file)} stores its message once the body
    is stored (a L{multirealm.model.FileRef}), firing with the reply.
    """

    name: str
    send: object


class Stored:
    """
    The reply to a sending command, given without a Deferred: the send
    path makes one call a message, not a Deferred and its callbacks
    (issue 18).  L{store} sends the message now (messages are minted in
    request order) and calls C{then} once, on the reactor thread, with
    its L{multirealm.model.Delivery} once durable or a Failure; the reply
    is then L{wire.sent} of the Delivery.  L{deferred} is the same for
    whoever wants a Deferred of the reply.
    """

    __slots__ = ("_send", "args")

    def __init__(self, send, args):
        self._send = send  # Realm.send or Realm.send_group
        self.args = args

    def store(self, then):
        self._send(*self.args, then=then)

    def deferred(self):
        return self._send(*self.args).addCallback(wire.sent)


class PrivateStored(Stored):
    """
    A private message's L{Stored} (C{send}, C{sendrealm}): its C{args} are
    C{(sender, recipient, text)}, and the protocol may store several of
    one connection together instead (L{multirealm.core.realm.Realm.send_run}).
    """

    __slots__ = ()


@attrs.frozen
class Caller:
    """Who sent a request that carries a session: the user and the token."""

    user: str
    token: str


class Handlers:
    """
    The commands of one connection.  C{session} is the token of the last
    successful C{auth} on this connection: what C{-} stands for.
    """

    def __init__(self, realm, peer=None, hold_until=None, events=None):
        self.realm = realm
        self.events = events  # the connection's subscription (subscribe/unsubscribe)
        self.peer = peer  # the client's address: logins are throttled by it
        # Called with a session lookup that has to wait for the database:
        # the protocol reads nothing more until it fires, so that messages
        # are minted (their ids made) in request order.
        self._hold_until = hold_until or (lambda deferred: None)
        self.session = None
        self._caller = None  # the last Caller, reused while its session sends
        self.port = "chat"  # the kind of connection (metrics: file bytes out)

    def handle(self, request):
        """
        The reply to a parsed L{multirealm.commands.Request}: a value or a
        Deferred; raises L{errors.ChatError} for a refusal known at once.
        A bad or unknown session is reported before bad arguments.
        """
        command = request.command
        if command is None:
            raise request.error
        if not command.session:
            if request.error is not None:
                raise request.error
            return getattr(self, command.method)(*request.args)
        if request.session is None:
            raise request.error  # the session id itself is missing
        token = request.session
        if token == SAME_SESSION:
            if self.session is None:
                raise errors.InvalidSession(
                    "no session on this connection: auth first, or give the session id"
                )
            token = self.session
        user = self.realm.sessions.user_of(token)
        if type(user) is not str:  # a Deferred (an ABC: isinstance would cost more)
            return self._after_lookup(user, token, request)
        return self._run(user, token, request)

    def _after_lookup(self, lookup, token, request):
        """
        Run the request once its session is looked up; later requests of
        the connection wait until it has run (its message minted), not
        until its answer.
        """
        ran = defer.Deferred()
        self._hold_until(ran)

        def run(user):
            try:
                result = self._run(user, token, request)
                return result.deferred() if isinstance(result, Stored) else result
            finally:
                ran.callback(None)

        def refused(failure):
            ran.callback(None)
            return failure

        return lookup.addCallbacks(run, refused)

    def _run(self, user, token, request):
        if request.error is not None:
            raise request.error
        caller = self._caller
        if caller is None or caller.token != token or caller.user != user:
            caller = self._caller = Caller(user, token)
        return getattr(self, request.command.method)(caller, *request.args)

    # -- accounts -----------------------------------------------------------

    def command_register(self, username, password):
        d = self.realm.register(username, password, self.peer)
        return d.addCallback(lambda _: ok(message=f"user {username} registered"))

    def command_auth(self, username, password):
        def logged_in(token):
            self.session = token
            if self.events is not None:
                # Events of another user stop here (a connection speaks for one).
                self.events.authenticated(username)
            return ok(tokenid=token)

        return self.realm.login(username, password, self.peer).addCallback(logged_in)

    def command_logout(self, caller):
        if self.session == caller.token:
            self.session = None
        d = self.realm.logout(caller.token)
        if self.events is not None:
            d.addCallback(lambda _: self.events.session_ended(caller.token))
        return d.addCallback(lambda _: ok(message="logged out"))

    def command_passwd(self, caller, old, new):
        d = self.realm.change_password(caller.user, caller.token, old, new, self.peer)
        return d.addCallback(
            lambda _: ok(message="password changed; your other sessions have ended")
        )

    def command_mygroups(self, caller):
        return self.realm.my_groups(caller.user).addCallback(lambda groups: ok(groups=groups))

    # -- live events ----------------------------------------------------------

    def command_subscribe(self, caller):
        self.events.subscribe(caller.user, caller.token)
        return ok(message="subscribed")

    def command_unsubscribe(self, caller):
        self.events.unsubscribe()
        return ok(message="unsubscribed")

    def command_listusers(self, realm, after):
        self.realm.check_listed_realm(realm)
        return self.realm.list_users(after, realm).addCallback(
            lambda page: ok(users=page[0], more=page[1])
        )

    def command_help(self):
        return ok(commands=[f"{c.usage}  -- {c.summary}" for c in COMMANDS.values()])

    def command_quit(self):
        return ok(message="bye")

    def command_ping(self):
        return ok(message="pong")

    # -- messages -----------------------------------------------------------

    def command_send(self, caller, to, message):
        return PrivateStored(self.realm.send, (caller.user, self.realm.address(to), message))

    def command_sendrealm(self, caller, to, message):
        return PrivateStored(self.realm.send, (caller.user, self.realm.remote_address(to), message))

    def command_sendgroup(self, caller, group, message):
        group = self.realm.address(group, "group name")
        return Stored(self.realm.send_group, (caller.user, group, message))

    def command_sendgrouprealm(self, caller, group, message):
        group = self.realm.remote_address(group, "group name")
        return Stored(self.realm.send_group, (caller.user, group, message))

    def command_inbox(self, caller, after_id):
        return self.realm.inbox(caller.user, after_id).addCallback(self._history)

    def command_groupinbox(self, caller, group, after_id):
        group = self.realm.address(group, "group name")
        return self.realm.group_inbox(caller.user, group, after_id).addCallback(self._history)

    def _history(self, history):
        realm = self.realm.name
        return ok(messages=[m.to_wire(realm) for m in history.messages], more=history.more)

    # -- groups and realms --------------------------------------------------

    def command_creategroup(self, caller, group, member):
        group = self.realm.address(group, "group name")
        members = [self.realm.address(m) for m in member]
        d = self.realm.create_group(caller.user, group, members)

        def created(_):
            if self.events is not None:
                self.events.group_created(group, caller.user)
            return ok(message=f"group {group.name} created")

        return d.addCallback(created)

    def command_leavegroup(self, caller, group):
        group = self.realm.address(group, "group name")
        d = self.realm.leave_group(caller.user, group)
        return d.addCallback(lambda _: ok(message=f"left group {group.name}"))

    def command_addmember(self, caller, group, member):
        return self._change_members(self.realm.add_members, "added to", caller, group, member)

    def command_removemember(self, caller, group, member):
        return self._change_members(
            self.realm.remove_members, "removed from", caller, group, member
        )

    def _change_members(self, change, what, caller, group, member):
        group = self.realm.address(group, "group name")
        if not member:
            raise errors.BadRequest("name at least one member")
        members = [self.realm.address(m) for m in member]
        d = change(caller.user, group, members)
        return d.addCallback(lambda _: ok(message=f"{len(members)} {what} group {group.name}"))

    def command_groupinfo(self, caller, group):
        group = self.realm.address(group, "group name")
        realm = self.realm.name

        def reply(info):
            group, owner, members = info
            return ok(
                group=group.relative_to(realm),
                owner=owner.relative_to(realm) if owner is not None else None,
                members=sorted(m.relative_to(realm) for m in members),
            )

        return self.realm.group_info(caller.user, group).addCallback(reply)

    # -- conversations ----------------------------------------------------------

    def command_conversations(self, caller, after):
        realm = self.realm.name

        def reply(page):
            entries, more = page
            return ok(conversations=[{
                "with": other.relative_to(realm),
                "kind": kind,
                "last": None if last is None else last.to_wire(realm),
                "unread": unread,
            } for other, kind, last, unread in entries], more=more)

        return self.realm.conversations(caller.user, after).addCallback(reply)

    def command_history(self, caller, kind, peer_or_group, before_id):
        other = self.realm.conversation_address(peer_or_group)
        return self.realm.conversation_history(
            caller.user, kind, other, before_id
        ).addCallback(self._history)

    def command_markread(self, caller, peer_or_group, id):
        other = self.realm.conversation_address(peer_or_group)

        def marked(result):
            conversation, moved = result
            if moved and self.events is not None:
                self.events.tell_other_connections(caller.user, {
                    "event": "read", "with": conversation.relative_to(self.realm.name),
                    "up_to": id,
                })
            return ok(message=f"read up to {id}")

        return self.realm.mark_read(caller.user, other, id).addCallback(marked)

    # -- presence -------------------------------------------------------------

    def command_presence(self, caller, user):
        if not user:
            raise errors.BadRequest("name at least one user")
        addresses = [self.realm.address(name) for name in user]
        return self.realm.presence.ask(addresses).addCallback(lambda states: ok(presence=states))

    # -- files ----------------------------------------------------------------

    def command_sendfile(self, caller, to, filename):
        recipient = self.realm.address(to)
        check_filename(filename)
        return self._pending_file(caller, filename, self.realm.send_file, recipient)

    def command_sendgroupfile(self, caller, group, filename):
        group = self.realm.address(group, "group name")
        check_filename(filename)
        return self._pending_file(caller, filename, self.realm.send_group_file, group)

    def _pending_file(self, caller, filename, send, to):
        """The message of a file once its body is in, if the session still lives then."""
        def stored(file):
            d = self.realm.sessions.still_live(caller.token)
            d.addCallback(lambda _: send(caller.user, to, file))
            return d.addCallback(wire.sent)

        return PendingFile(filename, stored)

    def command_getfile(self, caller, file_id):
        return self.realm.file_for(caller.user, file_id).addCallback(self._file_reply)

    def _file_reply(self, file):
        """
        The getfile reply, its content streamed from disk as base64.  The
        file is opened only when the reply's turn comes to be written, so
        a connection holds one file open however many getfile it pipelines;
        one gone by then is answered no_such_file in its place.
        """
        files = self.realm.files
        head = b'{"status": "OK", "filename": %s, "size": %d, "content": "' % (
            json.dumps(file.name).encode("ascii"), file.size,
        )

        def start(consumer):
            try:
                opened = files.open(file.id)
            except FileNotFoundError:
                consumer.write(wire.to_bytes(errors.NoSuchFile(f"the file {file.id} is gone")))
                return defer.succeed(None)
            except OSError as e:  # out of descriptors, say: this reply fails, not the connection
                log.error("cannot open file {id}: {error!r}", id=file.id, error=e,
                          realm=self.realm)
                consumer.write(wire.to_bytes(errors.Unavailable(
                    f"the file cannot be read now ({e.strerror or e}): try again later")))
                return defer.succeed(None)
            consumer.write(head)
            self.realm.metrics.file_bytes_out[self.port] += file.size
            streamed = base64_file(opened)(consumer)
            return streamed.addCallback(lambda _: consumer.write(b'"}' + wire.REPLY_END))

        return Streamed(start)

    def command_listgroups(self, realm, after):
        self.realm.check_listed_realm(realm, "groups")
        return self.realm.list_groups(after).addCallback(
            lambda page: ok(groups=page[0], more=page[1])
        )

    def command_listrealms(self):
        return self.realm.list_realms().addCallback(lambda realms: ok(realms=realms))

