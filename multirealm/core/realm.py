"""
The core of one realm: accounts, sessions, messages and groups.

L{Realm} knows no sockets and no SQL.  Each operation takes plain values
(the caller's user name, the words of the request) and returns a value or a
Deferred; refusals raise L{errors.ChatError}.  The chat protocol is one
caller; the realm link (federation) is another, through L{Realm.receive}.
Every stored message is announced, after its commit, through
L{Realm.notifier}: the realm hands the notifier to its store, which calls
it with every L{multirealm.model.Delivery} an operation returns, once the
transaction has committed and before the operation's Deferred fires.  So
an operation that stores a message announces it by returning its Delivery;
no caller has to remember to.
"""

import functools

from twisted.internet import defer, task

from multirealm import errors
from multirealm.core import policy, received
from multirealm.core.cluster import Cluster
from multirealm.core.links import LinkStates
from multirealm.core.logins import LoginGuard, RegistrationRate
from multirealm.core.metrics import RealmMetrics
from multirealm.core.notifier import Notifier
from multirealm.core.presence import Presence
from multirealm.core.sessions import Sessions
from multirealm.model import (
    ADDED,
    FAILURE,
    GROUP,
    JOINED,
    LEFT,
    LEFT_GROUP,
    MEMBER,
    PRIVATE,
    REMOVED,
    Failed,
    Message,
    MessageIds,
    format_timestamp,
    user_mailbox,
)
from multirealm.names import Address, check_name, check_new_name
from multirealm.logs import RealmLogger, plain

log = RealmLogger()
_new_tuple = tuple.__new__  # makes a named tuple without its Python __new__ (new_message)


def returns_deferred(coroutine_function):
    """Make an C{async def} method return a Deferred, as every core method does."""

    @functools.wraps(coroutine_function)
    def wrapper(*args, **kwargs):
        return defer.ensureDeferred(coroutine_function(*args, **kwargs))

    return wrapper


class Realm:
    """
    @param name: this realm's name.
    @param peers: names of the realms this one links to.
    @param limits: the network's L{multirealm.config.Limits}.
    @param store: an L{multirealm.core.interfaces.IStore}.
    @param hasher: a L{multirealm.core.passwords.PasswordHasher}.
    @param clock: an L{IReactorTime} giving the time of timestamps,
        session expiry and message ids.

    @ivar notifier: the L{Notifier} that announces every stored message.
    @ivar sessions: the L{Sessions} of this realm.
    @ivar links: the L{LinkStates} of its links to C{peers}.
    @ivar presence: the L{Presence} of its users, and of its peers' users.
    @ivar metrics: the L{RealmMetrics} its adapters count into.
    @ivar cluster: with a C{bus} (an L{multirealm.core.interfaces.IClusterBus}:
        the realm runs as several processes), the L{Cluster} that tells the
        others what this one did; else None.
    """

    _ADDRESSES_MAX = 10_000  # bound of the parsed-address cache

    def __init__(self, name, peers, limits, store, hasher, clock, files=None, bus=None):
        self.name = name
        self.peers = tuple(peers)
        self.limits = limits
        self.clock = clock
        self.files = files  # the FileStore: where uploaded files live
        self.notifier = Notifier(name)
        self.metrics = RealmMetrics(name, self.peers)
        self.notifier.subscribe(self.metrics, replays=False)  # messages stored here, by kind
        self.logins = LoginGuard(clock)
        self._registrations = RegistrationRate(
            clock, limits.registrations_per_hour, limits.registration_burst
        )
        self.sessions = Sessions(store, clock, limits.session_days * 86400, name)
        store.report_deliveries_to(self.notifier.notify)
        self._store = store
        self._hasher = hasher
        self._stamp = (None, None)  # (epoch ms, its ISO 8601 form)
        self._ids = MessageIds()
        self._addresses = {}  # text -> Address: valid addresses parsed before, local senders
        self.links = LinkStates(self.peers, store, clock)
        self.presence = Presence(name, self.peers, store, clock)
        self._registration_listeners = []
        self.cluster = None if bus is None else Cluster(self, store, bus, clock)

    def _now(self):
        return self.clock.seconds()

    # -- accounts and sessions ----------------------------------------------

    @returns_deferred
    async def register(self, name, password, peer=None):
        """
        Create local user C{name}.  C{peer} is the client's address: hashing
        is queued fairly by it, and registrations are rationed by it.
        """
        check_new_name(name, "username")
        self._registrations.take(peer)
        password_hash = await self._hasher.hash(
            password, peer=peer, suspect=self.logins.is_suspect(peer)
        )
        await self._store.create_user(name, password_hash, format_timestamp(self._now()))
        log.info("registered {user} on realm {realm}", user=name, realm=self.name)
        for listener in self._registration_listeners:
            listener()

    @returns_deferred
    async def login(self, name, password, peer=None):
        """
        Check the password; return a new session token.  C{peer} is the
        client's address: failures are throttled by it (L{LoginGuard}).
        """
        self.logins.check(peer, name)
        stored = None
        try:
            check_name(name, "username")
        except errors.InvalidName:
            pass  # no such user: still hash, so timing tells nothing
        else:
            found = await self._store.password_hash(name)
            if found is not None:
                name, stored = found  # the name as registered: Alice logs in as alice
        await self._check_password(name, password, stored, peer, "wrong username or password")
        # Made only while that hash is still the user's: a passwd that
        # committed meanwhile has ended every other session, this one too.
        return await self.sessions.create(name, checked_hash=stored)

    async def _check_password(self, name, password, stored, peer, refusal):
        """
        L{errors.BadCredentials} (C{refusal}) unless C{password} matches the
        hash C{stored} of account C{name}; a failure counts against C{peer}
        and the account (L{LoginGuard}) and is answered late.
        """
        suspect = self.logins.is_suspect(peer)
        if not await self._hasher.verify(password, stored, peer=peer, suspect=suspect):
            delay = self.logins.failed(peer, name)
            log.info(
                "failed login as {user!r} from {peer} on realm {realm}",
                user=name[:40], peer=peer, realm=self.name,
            )
            if delay:
                await task.deferLater(self.clock, delay)
            raise errors.BadCredentials(refusal)
        self.logins.succeeded(peer, name)

    @returns_deferred
    async def change_password(self, user, token, old, new, peer=None):
        """
        Local user C{user}, in session C{token}, changes their password from
        C{old} to C{new}.  C{old} is checked and throttled as in L{login}
        (a wrong one is a failed login from C{peer}); then every other
        session of the user ends (L{Sessions.end_all_of}), in the
        transaction that stores the new hash.
        """
        self.logins.check(peer, user)
        found = await self._store.password_hash(user)
        await self._check_password(
            user, old, None if found is None else found[1], peer, "wrong password"
        )
        password_hash = await self._hasher.hash(
            new, peer=peer, suspect=self.logins.is_suspect(peer)
        )
        await self.sessions.end_all_of(
            user, token,
            lambda keep: self._store.change_password(user, password_hash, keep),
        )
        log.info("{user} changed their password on realm {realm}", user=user, realm=self.name)

    @returns_deferred
    async def logout(self, token):
        await self.sessions.end(token)

    def purge_expired_sessions(self):
        """Forget every expired session, here and in the store."""
        return self.sessions.purge_expired()

    def list_users(self, after=None, realm=None):
        """
        A page of this realm's user names (or of peer C{realm}'s, as it
        announced them), sorted, after C{after}: fires with (names, more),
        at most C{list_limit} names.
        """
        if realm is None or realm == self.name:
            return self._page(self._store.list_users, after)
        return self._page(functools.partial(self._store.list_remote_users, realm), after)

    def _page(self, lister, after):
        limit = self.limits.list_limit

        def cut(names):
            return names[:limit], len(names) > limit

        return lister(after or "", limit + 1).addCallback(cut)

    def check_listed_realm(self, realm, what="users"):
        """
        A realm named in C{listusers} / C{listgroups}: this one or a peer
        (for users only: peers announce their users, not their groups);
        L{errors.NoSuchRealm} or L{errors.BadRequest} otherwise.
        """
        if realm is None or realm == self.name:
            return
        check_name(realm, "realm name")
        if realm not in self.peers:
            raise errors.NoSuchRealm(f"realm {realm!r} is not linked to this realm")
        if what != "users":
            raise errors.BadRequest(
                f"realms announce their users, not their {what}: connect to realm {realm}"
            )

    def on_registration(self, listener):
        """Call C{listener()} after each new user is stored (peers announce them)."""
        self._registration_listeners.append(listener)

    def users_to_announce(self, peer, limit):
        return self._store.users_to_announce(peer, limit)

    def users_announced(self, peer, up_to):
        return self._store.users_announced(peer, up_to)

    def receive_users(self, origin, names):
        """Peer C{origin} announced users C{names}: kept for C{listusers origin}."""
        try:
            if origin not in self.peers:
                raise errors.NoSuchRealm(f"realm {origin!r} is not linked to this realm")
            for name in names:
                check_name(name, "username")
        except errors.ChatError:
            return defer.fail()
        return self._store.receive_users(origin, names, policy.REMOTE_ROWS_PER_PEER)

    # -- addresses ----------------------------------------------------------

    def address(self, text, what="username"):
        """Parse C{name} or C{name@realm}; the realm must be this one or a peer."""
        address = self._addresses.get(text)
        if address is None:
            address = Address.parse(text, self.name, what)
            if address.realm != self.name and address.realm not in self.peers:
                raise errors.NoSuchRealm(f"realm {address.realm!r} is not linked to this realm")
            self._keep_address(text, address)
        return address

    def _keep_address(self, text, address):
        if len(self._addresses) >= self._ADDRESSES_MAX:
            self._addresses.clear()
        self._addresses[text] = address

    def _sender_address(self, name):
        """
        Local user C{name}'s Address, kept as address() keeps what it
        parses: one object a name, so that the store finds a run's
        messages of one conversation by identity.  (A notice's sender, "",
        is no name: made, never kept.)
        """
        address = Address(name, self.name)
        if name:
            self._keep_address(name, address)
        return address

    def remote_address(self, text, what="username"):
        """
        An address on another realm (C{sendrealm}): C{name@realm}, or a bare
        name when this realm has exactly one peer.
        """
        if "@" in text:
            return self.address(text, what)
        if len(self.peers) != 1:
            raise errors.AmbiguousRealm(
                f"{what} {text!r} has no realm and this realm has {len(self.peers)} peers:"
                f" write {text}@REALM"
            )
        check_name(text, what)
        return Address(text, self.peers[0])

    # -- messages -----------------------------------------------------------

    def new_message(self, kind, sender, recipient, text):
        """A L{Message} from local user C{sender}, with a new id and the time now."""
        milliseconds = int(self.clock.seconds() * 1000)
        if milliseconds != self._stamp[0]:
            # Messages of the same millisecond share one formatted timestamp.
            self._stamp = (milliseconds, format_timestamp(milliseconds / 1000))
        # tuple.__new__: a named tuple's own __new__ is a Python function (issue 18).
        return _new_tuple(Message, (
            self._ids.new(milliseconds),
            kind,
            self._addresses.get(sender) or self._sender_address(sender),
            recipient,
            text,
            self._stamp[1],
            None,
            None,
        ))

    def send(self, sender, recipient, text, then=None):
        """
        Accept a private message from local user C{sender} to the
        L{Address} C{recipient}; fires with its L{multirealm.model.Delivery}
        once durable, or with C{then} calls it with the Delivery or a
        Failure instead (L{IStore.add_private_message}).
        """
        message = self.new_message(PRIVATE, sender, recipient, text)
        return self._store.add_private_message(message, then)

    def send_run(self, messages, then):
        """
        Store private messages minted by L{new_message}, in their order, in
        one operation: C{then} is called once with a
        L{multirealm.model.Sent} or a Failure (L{IStore.add_private_messages}).
        """
        self._store.add_private_messages(messages, then)

    def send_group(self, sender, group, text, then=None):
        """
        Accept a message to the group at L{Address} C{group}; as L{send}.
        Only members post, on every path: for a group of another realm,
        the members its home realm announced (the home checks again).
        """
        return self._store.add_group_message(self.new_message(GROUP, sender, group, text), then)


    def send_file(self, sender, recipient, file):
        """Accept a message carrying the stored file C{file} (a L{FileRef}); as L{send}."""
        message = self.new_message(PRIVATE, sender, recipient, "")._replace(file=file)
        return self._store.add_private_message(message)

    def send_group_file(self, sender, group, file):
        """As L{send_file}, to a group (of this realm or, as L{send_group}, another)."""
        message = self.new_message(GROUP, sender, group, "")._replace(file=file)
        return self._store.add_group_message(message)

    def file_for(self, user, file_id):
        """The L{FileRef} of C{file_id} if local user C{user} may fetch it."""
        reader = Address(user, self.name)
        return self._store.file_entry(file_id, reader).addCallback(policy.fetchable, reader)

    def receive(self, origin, message):
        """
        Store a L{Message} that peer realm C{origin} handed over, keeping
        its id and timestamp; fires with the L{multirealm.model.Delivery}
        once durable (C{duplicate} if this (origin, id) was stored before:
        answer it OK all the same).

        A link speaks only for its own realm: the sender must be of
        C{origin}, except in a message to a group of C{origin}, which the
        group's home realm forwards on behalf of members of any realm.
        L{errors.Forbidden} otherwise.
        """
        try:
            self.check_received(origin, message)
        except Exception:
            return defer.fail()
        notice = None
        if message.kind == LEFT:
            # The home tells every realm with members, the leaver's included.
            notice = self.new_message(MEMBER, "", message.recipient, f"{LEFT_GROUP} -")._replace(
                sender=message.sender,
            )
        return self._store.receive_message(
            origin, message, policy.REMOTE_ROWS_PER_PEER, notice
        )

    def receive_run(self, origin, messages, then):
        """
        Store private messages that peer realm C{origin} handed over in one
        read of its link, each already passed by L{check_received}, in
        their order, in one operation: C{then} is called once with a
        L{multirealm.model.Sent} or a Failure
        (L{IStore.receive_private_messages}).
        """
        self._store.receive_private_messages(origin, messages, then)

    def check_received(self, origin, message):
        """L{received.check} for this realm: L{errors.ChatError} if refused."""
        received.check(self.name, self.peers, self.limits.max_line_bytes, origin, message)

    def inbox(self, user, after_id=None):
        return self._store.history(
            user_mailbox(Address(user, self.name)),
            after_id,
            self.limits.history_limit,
            self.limits.history_reply_bytes,
        )

    def group_inbox(self, user, group, after_id=None, before_id=None):
        if group.realm != self.name:
            # Read here, from what its home forwarded: works while the link is down.
            return self._store.remote_group_history(
                group, user, after_id, self.limits.history_limit,
                self.limits.history_reply_bytes, before_id,
            )
        return self._store.group_history(
            group.name,
            Address(user, self.name),
            after_id,
            self.limits.history_limit,
            self.limits.history_reply_bytes,
            before_id,
        )

    def conversation_history(self, user, kind, other, before_id=None):
        """
        A page of local C{user}'s conversation with C{other} (an Address,
        as L{conversation_address} reads it), of C{kind} C{"private"} or
        C{"group"} as C{conversations} names it: the newest messages, or
        the newest before C{before_id}; C{more} if older ones exist.
        """
        if kind == GROUP:
            return self.group_inbox(user, other, before_id=before_id)
        if kind != PRIVATE:
            raise errors.BadRequest(f"kind {kind!r} is neither private nor group")
        return self._store.private_history(
            user, other, before_id, self.limits.history_limit, self.limits.history_reply_bytes
        )

    # -- groups -------------------------------------------------------------

    def create_group(self, creator, group, members):
        """Create the local group C{group} with C{creator} and C{members}."""
        if group.realm != self.name:
            raise errors.BadRequest(
                f"groups are created on their own realm: connect to realm {group.realm}"
            )
        check_new_name(group.name, "group name")
        creator = Address(creator, self.name)
        everyone = {creator: creator}  # one each, in order
        for member in members:
            everyone.setdefault(member, member)
        everyone = tuple(everyone)
        if len(everyone) > self.limits.max_group_members:
            raise errors.QuotaExceeded(
                f"a group has at most {self.limits.max_group_members} members"
            )
        # Each member of another realm is announced to it, one message each:
        # a name that realm does not know is refused alone, and taken out.
        joined = [
            (member.realm, self.new_message(JOINED, creator.name, group, member.name))
            for member in everyone if member.realm != self.name
        ]
        d = self._store.create_group(
            group.name, creator, everyone, format_timestamp(self._now()),
            self.limits.max_groups_per_user, joined,
            self.new_message(MEMBER, creator.name, group, "") if joined else None,
        )
        if self.cluster is not None:
            def created(result):
                self.cluster.group_created(group, creator.name)
                return result

            d.addCallback(created)
        return d

    def add_members(self, owner, group, members):
        """
        Owner C{owner} (a local user's name) adds C{members} (Addresses) to
        group C{group}; other realms hear of it through MEMBER messages.
        """
        if group.realm != self.name:
            return self._not_owner(owner, group)
        if len(members) > self.limits.max_group_members:
            raise errors.QuotaExceeded(
                f"a group has at most {self.limits.max_group_members} members"
            )
        return self._store.add_members(
            group.name, Address(owner, self.name), members,
            [self.new_message(MEMBER, owner, group, "") for _ in members],
            self.new_message(MEMBER, owner, group, ""), self.limits.max_group_members,
        )

    def remove_members(self, owner, group, members):
        """Owner C{owner} takes C{members} out of group C{group}; as L{add_members}."""
        if group.realm != self.name:
            return self._not_owner(owner, group)
        return self._store.remove_members(
            group.name, Address(owner, self.name), members,
            [self.new_message(MEMBER, owner, group, REMOVED) for _ in members],
        )

    def _not_owner(self, user, group):
        """A group of another realm has its owner there: forbidden to members."""
        def refuse(_):
            raise errors.Forbidden(f"only the owner of {group} adds and removes its members")
        return self._store.remote_group_info(group, user).addCallback(refuse)

    def group_info(self, user, group):
        """(group, owner or None, members: Addresses) of C{group}, for a member."""
        if group.realm != self.name:
            return self._store.remote_group_info(group, user)
        return self._store.group_info(group.name, Address(user, self.name)).addCallback(
            lambda info: (Address(info[0], self.name), *info[1:])
        )

    def my_groups(self, user):
        """
        The groups local user C{user} is in: names here, C{group@home} for
        other realms'.  Others can add a user to any number of groups, so
        the reply is capped: a quarter of list_limit of each kind keeps it
        within what a list reply is counted as.
        """
        return self._store.groups_of(user, max(1, self.limits.list_limit // 4))

    def group_readers(self, group, among=None, sent=None):
        """
        The names of this realm's users who read group C{group} (live
        delivery); only those in C{among} (names) if given; with C{sent}
        (a message's timestamp), only those who were members then.
        """
        return self._store.group_readers(group, among, sent)

    def leave_group(self, user, group):
        if group.realm != self.name:
            left = self.new_message(LEFT, user, group, "")
            return self._store.leave_remote_group(group, left)
        notice = self.new_message(MEMBER, user, group, LEFT_GROUP)
        return self._store.leave_group(group.name, Address(user, self.name), notice)

    def list_groups(self, after=None):
        """A page of this realm's group names; as L{list_users}."""
        return self._page(self._store.list_groups, after)

    # -- conversations ------------------------------------------------------

    def conversation_address(self, text):
        """
        The peer or group a conversation is with: C{name}, C{name@realm}
        (of any realm: one that was linked once), or C{@realm} for the
        delivery failures a realm reported.
        """
        if text.startswith("@"):
            check_name(text[1:], "realm name")
            return Address("", text[1:])
        return Address.parse(text, self.name, "peer or group")

    def conversations(self, user, after=None):
        """
        A page of local user C{user}'s conversations, newest activity
        first, after the one with C{after} (text, as the previous page
        named it): fires with ([(Address, kind, last Message or None,
        unread)], more).
        """
        other = None if after is None else self.conversation_address(after)
        return self._store.conversations(
            user, other, self.limits.list_limit, self.limits.history_reply_bytes
        )

    def mark_read(self, user, other, message_id):
        """
        C{user} has read their conversation with C{other} (an Address) up
        to message C{message_id}: fires with (the conversation's Address,
        whether the marker moved).
        """
        d = self._store.mark_read(user, other, message_id)
        if self.cluster is not None:
            def marked(result):
                if result[1]:
                    self.cluster.read_moved(user, result[0], message_id)
                return result

            d.addCallback(marked)
        return d

    # -- links (the federation adapter reports and drains through these) ----

    def set_linked(self, peer, linked):
        """Whether this realm's link to C{peer} is up (shown by listrealms)."""
        self.links.set_linked(peer, linked)

    def outbox_batch(self, peer, after_seq, limit, max_bytes=2**62):
        """Up to C{limit} (seq, L{Message}) waiting for C{peer}, oldest first."""
        return self._store.outbox_batch(peer, after_seq, limit, max_bytes)

    def outbox_depth(self, peer):
        """Fires with how many messages wait for C{peer}: a count, for the log's link lines."""
        return self._store.pending_counts().addCallback(
            lambda counts: counts.get(peer, (0, None))[0]
        )

    def outbox_done(self, peer, seqs):
        """C{peer} answered the outbox entries C{seqs}: forget them."""
        return self._store.outbox_done(peer, seqs)

    # The most of a peer's refusal text kept in a failure entry.
    REASON_CHARS = 300

    def delivery_failed(self, peer, seq, message, code, reason):
        """
        C{peer} refused outbox entry C{seq} (L{Message} C{message}) for
        good, with error C{code} and C{reason}.  A message a local user
        sent comes back to them as a L{FAILURE} entry in their history
        (naming the failed id and the code), in the transaction that
        forgets the entry; a group post this realm forwarded for another
        realm's user is only logged (its sender's realm has it stored).
        """
        self.set_link_error(peer, f"refused message {message.id}: {code}")
        code, reason = plain(code), plain(reason[:self.REASON_CHARS])  # a peer's words
        if message.sender.realm != self.name:
            log.warn(
                "realm {peer} refused forwarded message {id}: {code} ({why})",
                peer=peer, id=message.id, code=code, why=reason[:self.REASON_CHARS], realm=self,
            )
            return self.outbox_done(peer, [seq])
        removed = notice = None
        if message.kind == MEMBER:
            change, _, member = message.text.partition(" ")
            if change != ADDED or not member.endswith(f"@{peer}"):
                log.warn(
                    "realm {peer} refused membership notice {id}: {code} ({why})",
                    peer=peer, id=message.id, code=code, why=reason[:self.REASON_CHARS],
                    realm=self,
                )
                return self.outbox_done(peer, [seq])
            removed = Address.parse(member, peer)
            notice = self.new_message(MEMBER, message.sender.name, message.recipient, REMOVED)
            what = f"{removed} was not added to group {message.recipient.name}: {reason}"
        elif message.kind == JOINED:
            # The member's realm does not know them: they are no member.
            removed = Address(message.text, peer)
            notice = self.new_message(MEMBER, message.sender.name, message.recipient, REMOVED)
            what = f"{removed} was not added to group {message.recipient.name}: {reason}"
        elif message.kind == LEFT:
            what = f"{message.recipient} did not take note that you left: {reason}"
        else:
            what = f"not delivered to {message.recipient}: {reason}"
        failure = self.new_message(FAILURE, message.sender.name, message.sender, what)._replace(
            sender=Address("", peer),
            failed=Failed(message.id, code),
        )
        return self._store.record_failure(peer, seq, failure, removed, notice)

    def set_link_error(self, peer, error):
        """The last thing that went wrong with C{peer}'s link (listrealms)."""
        self.links.set_error(peer, error)

    def list_realms(self):
        """Fires with the state of each peer's link: L{LinkStates.states}."""
        return self.links.states()
