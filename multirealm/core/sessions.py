"""
Sessions: token -> user, the one lookup every adapter uses (chat today,
web and live events later).

The store is the truth and keeps only the SHA-256 of each token, so a
stolen database holds no usable token.  L{Sessions} keeps the sessions
used most recently in memory (at most C{MAX_KNOWN}, least recently used
forgotten first), which saves a hash and a database round trip on almost
every request.  Every logout, and every end of a user's other sessions
(L{Sessions.end_all_of}: C{passwd}), goes through this object, so the
memory never holds a session the store ended.
"""

import hashlib
import secrets
from collections import OrderedDict

from twisted.internet import defer

from multirealm import errors
from multirealm.logs import RealmLogger

log = RealmLogger()


def token_hash(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Sessions:
    """
    @param store: an L{multirealm.core.interfaces.IStore}.
    @param clock: an L{IReactorTime}: only C{seconds()} is used.
    @param lifetime: seconds a session works after it is made.
    @param realm: the realm's name, for the log.
    """

    MAX_KNOWN = 10_000  # about 10 MB

    def __init__(self, store, clock, lifetime, realm=None):
        self.realm_name = realm
        self._store = store
        self._clock = clock
        self._lifetime = lifetime
        self._known = OrderedDict()  # token -> (user, expires), least recently used first
        self._keeping = True  # sessions looked up are kept in _known
        self._listeners = []
        self._ended_listeners = []  # told the user of each session ended (other processes)
        self._forgotten_listeners = []  # told of sessions that may have ended elsewhere

    async def create(self, user, checked_hash=None):
        """
        A new session of C{user}, stored; returns its token.  C{checked_hash}:
        the password hash its login checked, which must still be the user's.
        """
        token = secrets.token_urlsafe(32)  # 256 bits
        expires = self._clock.seconds() + self._lifetime
        await self._store.create_session(token_hash(token), user, expires, checked_hash)
        self._remember_known(token, (user, expires))
        return token

    def keep_known(self, keep):
        """
        Whether sessions looked up are kept here (the default); while not,
        every use asks the store (the realm's other processes cannot be
        heard), and none known is kept.
        """
        self._keeping = keep
        if not keep:
            self.forget_user(None)

    def _remember_known(self, token, found):
        if not self._keeping:
            return
        known = self._known
        known[token] = found
        if len(known) > self.MAX_KNOWN:
            known.popitem(last=False)

    async def end(self, token):
        known = self._known.pop(token, None)
        if known is None and self._ended_listeners:
            # Whose it was, for the other processes of the realm.
            known = await self._store.session_user(token_hash(token), self._clock.seconds())
        await self._store.delete_session(token_hash(token))
        # A lookup of this token queued before the delete may have cached
        # it again meanwhile; answers come in queue order, so this is after.
        self._known.pop(token, None)
        if known is not None:
            self._tell_ended(known[0])

    async def end_all_of(self, user, keep, write):
        """
        Every session of C{user} ends but C{keep} (a token; None: all): at
        once here, and in the store by C{write(the hash of keep, or None)},
        a store operation that ends them there in the transaction of what
        else it changes (a new password, a lock).  Once it has committed,
        each listener of L{on_user_sessions_ended} hears of it.
        """
        self._forget_user(user, keep)
        await write(None if keep is None else token_hash(keep))
        self._forget_user(user, keep)  # as in end: a lookup queued before may have cached one
        self._tell_ended(user)
        for listener in tuple(self._listeners):
            try:
                listener(user, keep)
            except Exception:  # what is stored stays done: the caller's reply goes on
                log.failure("a listener failed on the end of {user}'s sessions", user=user,
                            realm=self.realm_name)

    def on_user_sessions_ended(self, listener):
        """Call C{listener(user, kept token or None)} after each L{end_all_of}."""
        self._listeners.append(listener)

    def on_session_ended(self, listener):
        """
        Call C{listener(user)} once a session of C{user} has ended in the
        store (L{end}, L{end_all_of}): the realm's other processes hear of it.
        """
        self._ended_listeners.append(listener)

    def _tell_ended(self, user):
        for listener in self._ended_listeners:
            try:
                listener(user)
            except Exception:  # what is stored stays done: the caller's reply goes on
                log.failure("telling of the end of a session of {user} failed", user=user,
                            realm=self.realm_name)

    def forget_user(self, user):
        """
        Sessions of C{user} (None: of anyone) may have ended in another
        process of the realm: those cached here are forgotten (the store
        is asked at their next use), and each listener of
        L{on_sessions_forgotten} checks again what it holds.
        """
        if user is None:
            self._known.clear()
        else:
            self._forget_user(user, None)
        for listener in tuple(self._forgotten_listeners):
            listener(user)

    def on_sessions_forgotten(self, listener):
        """Call C{listener(user or None)} after each L{forget_user}."""
        self._forgotten_listeners.append(listener)

    def _forget_user(self, user, keep):
        known = self._known
        for token in [t for t, (u, _) in known.items() if u == user and t != keep]:
            del known[token]

    def user_of(self, token):
        """
        The user name of a live session, at once when the session is known
        here, else a Deferred.  L{errors.InvalidSession} if there is none.
        """
        known = self._known.get(token)
        if known is not None:
            user, expires = known
            if expires > self._clock.seconds():
                self._known.move_to_end(token)
                return user
            del self._known[token]
            raise errors.InvalidSession("session expired: log in again with auth")
        d = self._store.session_user(token_hash(token), self._clock.seconds())
        return d.addCallback(self._remember, token)

    def still_live(self, token):
        """
        A Deferred that fires if session C{token} is still live, else fails
        with L{errors.InvalidSession}: asked again when a request ends that
        began long before (an upload, checked at its header), so that a
        session ended meanwhile (C{logout}, C{passwd}, a lock) stores nothing.
        """
        return defer.maybeDeferred(self.user_of, token)

    def _remember(self, found, token):
        if found is None:
            raise errors.InvalidSession("unknown or expired session: log in with auth")
        self._remember_known(token, found)
        return found[0]

    def expires(self, token):
        """When a session known here expires (epoch seconds), or None."""
        known = self._known.get(token)
        return None if known is None else known[1]

    def purge_expired(self):
        """Forget every expired session, here and in the store."""
        now = self._clock.seconds()
        for token in [t for t, (_, expires) in self._known.items() if expires <= now]:
            del self._known[token]
        return self._store.purge_sessions(now)
