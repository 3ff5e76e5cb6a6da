"""
The core of one realm: accounts, sessions, messages and groups.

L{Realm} knows no sockets.  Each operation takes plain values (the caller's
user name, the words of the request) and returns a value or a Deferred;
refusals raise L{errors.ChatError}.  The chat protocol is one caller; the
realm link (federation) will be another.
"""

import functools
import hashlib
import secrets

from twisted.internet import defer
from twisted.logger import Logger

from multirealm import errors
from multirealm.model import GROUP, PRIVATE, Message, MessageIds, format_timestamp
from multirealm.names import Address, check_name
from multirealm.sql import user_mailbox

log = Logger()


def _deferred(coroutine_function):
    """Make an C{async def} method return a Deferred, as every core method does."""

    @functools.wraps(coroutine_function)
    def wrapper(*args, **kwargs):
        return defer.ensureDeferred(coroutine_function(*args, **kwargs))

    return wrapper


def _token_hash(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Realm:
    """
    @param name: this realm's name.
    @param peers: names of the realms this one links to.
    @param limits: the network's L{multirealm.config.Limits}.
    @param store: an L{multirealm.store.IStore}.
    @param hasher: a L{multirealm.passwords.PasswordHasher}.
    @param clock: an L{IReactorTime} giving the time of timestamps,
        session expiry and message ids.
    """

    _ADDRESSES_MAX = 10_000  # bound of the parsed-address cache

    def __init__(self, name, peers, limits, store, hasher, clock):
        self.name = name
        self.peers = tuple(peers)
        self.limits = limits
        self._store = store
        self._hasher = hasher
        self._clock = clock
        # token -> (user, expires): sessions seen since start.  The store
        # stays the truth (it keeps only token hashes); this saves a hash
        # and a database round trip on every request.  Every logout goes
        # through this object, so it never holds a session the store ended.
        self._sessions = {}
        self._stamp = (None, None)  # (epoch ms, its ISO 8601 form)
        self._ids = MessageIds()
        self._addresses = {}  # text -> Address: valid addresses parsed before

    def _now(self):
        return self._clock.seconds()

    # -- accounts and sessions ----------------------------------------------

    @_deferred
    async def register(self, name, password):
        check_name(name, "username")
        password_hash = await self._hasher.hash(password)
        await self._store.create_user(name, password_hash, format_timestamp(self._now()))
        log.info("registered {user} on realm {realm}", user=name, realm=self.name)

    @_deferred
    async def login(self, name, password):
        """Check the password; return a new session token."""
        stored = None
        try:
            check_name(name, "username")
        except errors.InvalidName:
            pass  # no such user: still hash, so timing tells nothing
        else:
            stored = await self._store.password_hash(name)
        if not await self._hasher.verify(password, stored):
            log.info("failed login as {user!r} on realm {realm}", user=name, realm=self.name)
            raise errors.BadCredentials("wrong username or password")
        token = secrets.token_urlsafe(32)
        expires = self._now() + self.limits.session_days * 86400
        await self._store.create_session(_token_hash(token), name, expires)
        self._sessions[token] = (name, expires)
        return token

    @_deferred
    async def logout(self, token):
        self._sessions.pop(token, None)
        await self._store.delete_session(_token_hash(token))
        # A lookup of this token queued before the delete may have cached
        # it again meanwhile; answers come in queue order, so this is after.
        self._sessions.pop(token, None)

    def session_user(self, token):
        """
        The user name of a live session, at once when the session is known
        here, else a Deferred.  L{errors.InvalidSession} if there is none.
        """
        known = self._sessions.get(token)
        if known is not None:
            user, expires = known
            if expires > self._now():
                return user
            del self._sessions[token]
            raise errors.InvalidSession("session expired: log in again with auth")
        d = self._store.session_user(_token_hash(token), self._now())
        return d.addCallback(self._remember_session, token)

    def _remember_session(self, found, token):
        if found is None:
            raise errors.InvalidSession("unknown or expired session: log in with auth")
        self._sessions[token] = found
        return found[0]

    def purge_expired_sessions(self):
        """Forget every expired session, here and in the store."""
        now = self._now()
        for token in [t for t, (_, expires) in self._sessions.items() if expires <= now]:
            del self._sessions[token]
        return self._store.purge_sessions(now)

    def list_users(self):
        return self._store.list_users()

    # -- addresses ----------------------------------------------------------

    def address(self, text, what="username"):
        """Parse C{name} or C{name@realm}; the realm must be this one or a peer."""
        address = self._addresses.get(text)
        if address is None:
            address = Address.parse(text, self.name, what)
            if address.realm != self.name and address.realm not in self.peers:
                raise errors.NoSuchRealm(f"realm {address.realm!r} is not linked to this realm")
            if len(self._addresses) >= self._ADDRESSES_MAX:
                self._addresses.clear()
            self._addresses[text] = address
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

    def _new_message(self, kind, sender, recipient, text):
        milliseconds = int(self._now() * 1000)
        if milliseconds != self._stamp[0]:
            # Messages of the same millisecond share one formatted timestamp.
            self._stamp = (milliseconds, format_timestamp(milliseconds / 1000))
        return Message(
            id=self._ids.new(milliseconds),
            kind=kind,
            sender=Address(sender, self.name),
            recipient=recipient,
            text=text,
            timestamp=self._stamp[1],
        )

    def send(self, sender, recipient, text):
        """
        Accept a private message from local user C{sender} to the
        L{Address} C{recipient}; fires with the L{Message} once durable.
        """
        return self._store.add_private_message(
            self._new_message(PRIVATE, sender, recipient, text)
        )

    def send_group(self, sender, group, text):
        """Accept a message to the group at L{Address} C{group}."""
        return self._store.add_group_message(self._new_message(GROUP, sender, group, text))

    def inbox(self, user, after_id=None):
        return self._store.history(
            user_mailbox(Address(user, self.name)), after_id, self.limits.history_limit
        )

    def group_inbox(self, user, group, after_id=None):
        self._require_local_group(group)
        return self._store.group_history(
            group.name, Address(user, self.name), after_id, self.limits.history_limit
        )

    # -- groups -------------------------------------------------------------

    def _require_local_group(self, group):
        if group.realm != self.name:
            raise errors.NoSuchGroup(
                f"group {group} lives on realm {group.realm}: reading or leaving groups"
                " of other realms needs federation, which is not built yet"
            )

    def create_group(self, creator, group, members):
        """Create the local group C{group} with C{creator} and C{members}."""
        if group.realm != self.name:
            raise errors.BadRequest(
                f"groups are created on their own realm: connect to realm {group.realm}"
            )
        creator = Address(creator, self.name)
        everyone = (creator, *(m for m in members if m != creator))
        return self._store.create_group(
            group.name, creator, everyone, format_timestamp(self._now())
        )

    def leave_group(self, user, group):
        self._require_local_group(group)
        return self._store.leave_group(group.name, Address(user, self.name))

    def list_groups(self):
        return self._store.list_groups()

    # -- realms -------------------------------------------------------------

    def list_realms(self):
        """Each peer with its link state and how many messages wait for it."""
        return self._store.pending_counts().addCallback(
            lambda pending: [
                {"name": peer, "linked": False, "pending": pending.get(peer, 0)}
                for peer in self.peers
            ]
        )

