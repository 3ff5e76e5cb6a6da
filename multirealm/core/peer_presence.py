"""
Presence across realms (docs/protocol.md, "Realm port", presencerealm):
L{PeerPresence}, what this realm tells its peers of its users and what it
knows of theirs.  It knows no sockets: the federation adapter hands it a
function that sends entries on a link, and hands it what arrives.

Outgoing: every announced change of a local user waits, at most
L{PeerPresence.BATCH_SECONDS}, in one batch per linked peer (the latest
state of each user, so a batch holds at most one entry per user); a link
that authenticates first gets a snapshot of the users online.  Nothing is
kept for a peer while its link is down: the snapshot says it all when the
link comes back.

Incoming: the view of each peer's users, in memory, at most
L{PeerPresence.MAX_VIEW} names per peer.  A snapshot replaces it; an
update changes it; the link it came on ending empties it (everyone there
reads offline, last_seen null).  Each change is fanned out to the local
contacts of that user.

A realm on several processes believes one link of each peer's, on
whichever process it landed: that process relays what it applies
(L{multirealm.core.cluster_links.OtherPeerLinks}), and the others apply
it as coming from an L{Elsewhere} link.
"""

import attrs

from multirealm.names import Address
from multirealm.logs import RealmLogger

log = RealmLogger()

UPDATE, SYNC, SYNCED = "update", "sync", "synced"


@attrs.frozen
class Elsewhere:
    """A peer's link to this realm that landed on another process of it."""

    process: str


class PeerPresence:
    """
    @param peers: the names of the realms this one links to.
    @param clock: an L{IReactorTime}.
    @param fan_out: C{fan_out(address, online, last_seen)}: the event to
        the local contacts of a peer's user whose state changed.
    """

    BATCH_SECONDS = 0.1
    MAX_VIEW = 100_000

    def __init__(self, peers, clock, fan_out, realm=None):
        self._realm = realm  # its name, for the log
        self._clock = clock
        self._fan_out = fan_out
        self._senders = {}  # peer -> send(entries, snapshot) while our link to it is up
        self._batches = {}  # peer -> {user: (user, online, last_seen)} not yet sent
        self._flush = None  # the call that sends the batches
        self._views = {peer: {} for peer in peers}  # peer -> {folded name: (name, online, seen)}
        self._links = {}  # peer -> the link of theirs whose frames are believed
        self._syncing = {}  # peer -> the snapshot being received
        self._full = set()  # peers whose view was full (logged once)
        self.peers = tuple(peers)
        # What tells the realm's other processes what the links here say, if any.
        self.relay = None
        self._seen_elsewhere = []  # called with a peer whose link landed on another process

    # -- what goes to the peers -------------------------------------------------

    def link_up(self, peer, send, online):
        """
        Our link to C{peer} authenticated: C{send(entries, snapshot)} sends
        [(user, online, last_seen)] on it; the snapshot of C{online} (the
        local users announced online) goes at once.
        """
        self._senders[peer] = send
        self._batches.pop(peer, None)
        send([(user, True, None) for user in sorted(online)], True)

    def link_down(self, peer):
        self._senders.pop(peer, None)
        self._batches.pop(peer, None)

    def announce(self, user, online, last_seen):
        """Local user C{user} went online or offline: in the next batch of each linked peer."""
        for peer in self._senders:
            self._batches.setdefault(peer, {})[user] = (user, online, last_seen)
        if self._batches and self._flush is None:
            self._flush = self._clock.callLater(self.BATCH_SECONDS, self._send_batches)

    def _send_batches(self):
        self._flush = None
        batches, self._batches = self._batches, {}
        for peer, batch in batches.items():
            send = self._senders.get(peer)
            if send is not None:
                send(list(batch.values()), False)

    def stop(self):
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self._batches.clear()

    # -- what the peers announce -------------------------------------------------

    def peer_linked(self, peer, link):
        """C{peer}'s link to this realm authenticated: its frames are the ones believed."""
        self._links[peer] = link
        self._syncing.pop(peer, None)
        if self.relay is not None and not isinstance(link, Elsewhere):
            self.relay.taken(peer)

    def on_linked_elsewhere(self, listener):
        """Call C{listener(peer)} whenever C{peer}'s link authenticates on another process."""
        self._seen_elsewhere.append(listener)

    def linked_elsewhere(self, peer, process):
        """C{peer}'s link authenticated on process C{process}: the newest link is believed."""
        self.peer_linked(peer, Elsewhere(process))
        for listener in self._seen_elsewhere:
            listener(peer)

    def peer_lost(self, peer, link):
        """C{peer}'s link C{link} ended: if it was the believed one, its users read offline."""
        if self._links.get(peer) != link:
            return
        del self._links[peer]
        self._syncing.pop(peer, None)
        if self.relay is not None and not isinstance(link, Elsewhere):
            self.relay.lost(peer)
        self._replace(peer, {})

    def received(self, peer, link, mode, entries):
        """
        C{peer} announced C{entries} [(user, online, last_seen)] on C{link}:
        an L{UPDATE}, or a part of a snapshot (L{SYNC}, the last L{SYNCED}).
        """
        if self._links.get(peer) != link:
            return  # an older link of that peer's: what the newer one says counts
        relay = None if isinstance(link, Elsewhere) else self.relay
        if mode == UPDATE:
            view, applied = self._views[peer], []
            for name, online, last_seen in entries:
                key = name.lower()
                was = view.get(key)
                if was is None and not self._room(peer, view):
                    continue
                view[key] = (name, online, last_seen)
                applied.append((name, online, last_seen))
                if (was is not None and was[1]) != online:  # news only if it changed
                    self._fan_out(Address(name, peer), online, last_seen)
            if relay is not None:
                relay.updated(peer, applied)
            return
        snapshot = self._syncing.setdefault(peer, {})
        for name, online, last_seen in entries:
            if self._room(peer, snapshot):
                snapshot[name.lower()] = (name, online, last_seen)
        if mode == SYNCED:
            view = self._syncing.pop(peer)
            self._replace(peer, view)
            if relay is not None:
                relay.swapped(peer, list(view.values()))

    def _room(self, peer, view):
        if len(view) < self.MAX_VIEW:
            return True
        if peer not in self._full:
            self._full.add(peer)
            log.warn("realm {peer} announced more than {most} users' presence: the rest is"
                     " ignored", peer=peer, most=self.MAX_VIEW, realm=self._realm)
        return False

    def _replace(self, peer, view):
        """C{view} is now what C{peer}'s users are: each user whose online state changed is news."""
        old, self._views[peer] = self._views[peer], view
        for key in old.keys() | view.keys():
            was, now = old.get(key), view.get(key)
            if (was is not None and was[1]) == (now is not None and now[1]):
                continue
            name, online, last_seen = now or (was[0], False, None)
            self._fan_out(Address(name, peer), online, last_seen)

    def believed(self, peer):
        """The link of C{peer}'s whose frames are believed (an L{Elsewhere} or one here), or None."""
        return self._links.get(peer)

    def views_here(self):
        """[(peer, its view's entries)] of each peer whose believed link is on this process."""
        return [(peer, list(self._views[peer].values())) for peer, link in self._links.items()
                if not isinstance(link, Elsewhere)]

    def state(self, address):
        """(online, last_seen) of C{address}, a user of a peer, as it announced."""
        seen = self._views.get(address.realm, {}).get(address.name.lower())
        return (False, None) if seen is None else seen[1:]
