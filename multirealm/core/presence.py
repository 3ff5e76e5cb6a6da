"""
Who is online (docs/protocol.md, "Presence"): L{Presence}.

A local user is online while at least one of their connections is
subscribed (the chat adapter reports each subscription that starts and
ends); C{last_seen} is when the last one ended, written to the store then
(so a restarted realm still answers it).  A change is announced once it
has settled: a user who flaps is announced once, with the state the flaps
left (L{Presence.SETTLE_SECONDS} after the last change, at most
L{Presence.MOST_SECONDS} after the first).  An announcement is an event to
the subscribed connections of the user's contacts here (who they are is
the store's L{local_contacts}), and an entry in the next batch for every
linked peer (L{PeerPresence}, which also keeps what the peers announce).
Nothing of it is durable but C{last_seen}, and none of it runs on the
path of a message.
"""

from twisted.internet import defer

from multirealm import errors, wire
from multirealm.core.peer_presence import PeerPresence
from multirealm.model import format_timestamp
from multirealm.names import Address
from multirealm.logs import RealmLogger

log = RealmLogger()


class Presence:
    """
    @param realm: this realm's name.
    @param peers: the names of the realms it links to.
    @param store: the L{multirealm.core.interfaces.IStore}.
    @param clock: an L{IReactorTime}.

    @ivar peers: the L{PeerPresence}: what goes to the peers, what they announced.
    """

    SETTLE_SECONDS = 0.3
    MOST_SECONDS = 2.0
    # Names one presence request may ask about.
    MAX_NAMES = 100
    # Contact lookups in the store at once: a storm of changes (a peer's
    # link dropping with thousands online) waits its turn, one entry a
    # person, and the database thread's batches keep room for messages.
    LOOKUPS = 16

    def __init__(self, realm, peers, store, clock):
        self.realm = realm
        self._store = store
        self._clock = clock
        self._connections = {}  # local user -> subscribed connections now
        self._announced = set()  # local users last announced online
        self._settling = {}  # local user -> (first change, the call that settles it)
        self._went_offline = {}  # local user -> when, until their change settles
        self._listeners = []  # what pushes events to subscribed connections
        self._stopped = False  # the realm stops: connections that end now change nothing
        # People whose event waits for a contact lookup: their latest state
        # only (a storm of changes is bounded by the people it is about).
        self._waiting = {}  # Address -> (online, last_seen)
        self._looking = 0  # lookups in the store now
        self.peers = PeerPresence(peers, clock, self.fan_out, realm)
        # The realm's other processes (L{multirealm.core.cluster_presence}), if any.
        self.cluster = None

    def listen(self, listener):
        """
        C{listener.push_to(user, event)} pushes an encoded event to every
        subscribed connection of local user C{user} (the chat's live delivery).
        """
        self._listeners.append(listener)

    # -- local users --------------------------------------------------------

    def connected(self, user):
        """A connection of local user C{user} (as registered) subscribed."""
        if self._stopped:
            return
        count = self._connections.get(user, 0)
        self._connections[user] = count + 1
        if not count:
            self._changed(user)

    def disconnected(self, user):
        """A connection of C{user} that was subscribed is no longer."""
        if self._stopped:
            return
        count = self._connections.get(user, 0) - 1
        if count > 0:
            self._connections[user] = count
            return
        self._connections.pop(user, None)
        stamp = format_timestamp(self._clock.seconds())
        self._went_offline[user] = stamp
        self._store.set_last_seen([(user, stamp)]).addErrback(self._failed)
        self._changed(user)

    def online(self):
        """The local users online now (names as registered)."""
        return set(self._connections)

    def _changed(self, user):
        now = self._clock.seconds()
        settling = self._settling.get(user)
        if settling is None:
            call = self._clock.callLater(self.SETTLE_SECONDS, self._settle, user)
            self._settling[user] = (now, call)
            return
        first, call = settling
        call.reset(max(0.0, min(self.SETTLE_SECONDS, first + self.MOST_SECONDS - now)))

    def elsewhere_changed(self, user, last_seen=None):
        """
        Local user C{user}'s connections on another process of the realm
        began, or ended (C{last_seen}: when): their state is settled again.
        """
        if self._stopped:
            return
        if last_seen is not None and user not in self._connections:
            known = self._went_offline.get(user)
            if known is None or last_seen > known:
                self._went_offline[user] = last_seen
        self._changed(user)

    def _settle(self, user):
        del self._settling[user]
        online = user in self._connections
        if self.cluster is not None:
            self.cluster.local_state(user, online, self._went_offline.get(user))
            online = online or self.cluster.online_elsewhere(user)
        last_seen = None if online else self._went_offline.pop(user, None)
        if online:
            self._went_offline.pop(user, None)
        if online == (user in self._announced):
            return  # back as it was announced: nothing to say
        if online:
            self._announced.add(user)
        else:
            self._announced.discard(user)
        self.peers.announce(user, online, last_seen)
        self.fan_out(Address(user, self.realm), online, last_seen)

    def fan_out(self, person, online, last_seen):
        """
        The presence event of C{person} (an Address, here or on a peer) to
        the subscribed connections of their contacts here.
        """
        if not self._connections or not self._listeners:
            return  # nobody here is subscribed
        self._waiting.pop(person, None)  # a newer state: it goes in its turn, not twice
        self._waiting[person] = (online, last_seen)
        self._look_up()

    def _look_up(self):
        """The contacts of the people waiting, at most L{LOOKUPS} at once, oldest first."""
        while self._waiting and self._looking < self.LOOKUPS:
            person = next(iter(self._waiting))
            online, last_seen = self._waiting.pop(person)
            event = wire.encode({
                "event": "presence",
                "user": person.relative_to(self.realm),
                "online": online,
                "last_seen": last_seen,
            })
            self._looking += 1
            d = self._store.local_contacts(person)
            d.addCallbacks(self._push, self._failed, callbackArgs=(event,))
            d.addBoth(self._looked_up)

    def _push(self, contacts, event):
        for user in contacts:
            if user in self._connections:
                for listener in self._listeners:
                    listener.push_to(user, event)

    def _looked_up(self, _):
        self._looking -= 1
        self._look_up()

    def link_up(self, peer, send):
        """Our link to C{peer} authenticated: see L{PeerPresence.link_up}."""
        self.peers.link_up(peer, send, self._announced)

    def stop(self):
        """The realm stops: everyone online was last seen now."""
        self._stopped = True
        for _, call in self._settling.values():
            call.cancel()
        self._settling.clear()
        self.peers.stop()
        if self._connections:
            stamp = format_timestamp(self._clock.seconds())
            users, self._connections = self._connections, {}
            return self._store.set_last_seen([(user, stamp) for user in users])
        return defer.succeed(None)

    # -- the presence command -------------------------------------------------

    def ask(self, addresses):
        """
        Fires with {name as this realm shows it: {"online", "last_seen"}}
        for C{addresses} (at most L{MAX_NAMES}); L{errors.NoSuchUser} for
        a local name with no user.
        """
        if len(addresses) > self.MAX_NAMES:
            raise errors.BadRequest(f"ask about at most {self.MAX_NAMES} users at once")
        local = [a.name for a in addresses if a.realm == self.realm]

        def answer(found):
            states = {}
            for address in addresses:
                shown = address.relative_to(self.realm)
                if address.realm != self.realm:
                    online, last_seen = self.peers.state(address)
                elif address.name not in found:
                    raise errors.NoSuchUser(f"no user {address.name!r}")
                else:
                    name, last_seen = found[address.name]
                    online = name in self._connections or (
                        self.cluster is not None and self.cluster.online_elsewhere(name)
                    )
                    if online:
                        last_seen = None
                states[shown] = {"online": online, "last_seen": last_seen}
            return states

        if not local:
            return defer.maybeDeferred(answer, {})
        return self._store.last_seen(local).addCallback(answer)

    def _failed(self, failure):
        log.failure("presence: a store operation failed", failure, realm=self.realm)
