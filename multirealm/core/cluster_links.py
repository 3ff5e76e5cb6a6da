"""
What the links of one process of a realm tell its other processes
(L{multirealm.core.cluster}): the link *to* a peer runs only in the
process holding its outbox lease, and a peer's link *to* us lands on any
one process, yet every process answers C{listrealms} and C{presence} with
the realm's view.

L{OtherLinks}, the links to the peers (L{multirealm.core.links.LinkStates}):

  - C{l PEER 1|0}: this process's link to PEER is up, or no longer.
  - C{e PEER WHEN TEXT}: it failed (the newest error of any process is
    the last error).
  - C{L PEER...}: every peer linked here (in a dump: replaces what was
    known of the process).

L{OtherPeerLinks}, what a peer's link to us says of its users' presence
(L{multirealm.core.peer_presence.PeerPresence}): the process whose link
from PEER authenticated last is believed; it publishes what it applies,
and the others apply it as if heard from the link:

  - C{i PEER}: PEER's link to the realm is here now (the newest link
    takes over, as one on the same process always did); PEER is up, so
    the process running our link to it stops waiting out a backoff.
  - C{o PEER}: it ended: PEER's users read offline (only where the
    sender's link was believed; a dump says it of each peer whose link
    is not here, so that one lost is made good).
  - C{u PEER ENTRY...}: an update applied; C{y PEER ENTRY...} then
    C{Y PEER ENTRY...}: the whole view (after a snapshot, and in a dump).
    An entry is C{+NAME}, C{-NAME} or C{-NAME=LAST_SEEN}, as on the wire.
    A process that believes no link of PEER's takes the sender's word.

A process forgotten (L{multirealm.core.cluster_presence}: stopped, or
silent for three heartbeats) takes its links with it: not linked, and
the users of the peer whose link it held read offline.
"""

from multirealm.core.peer_presence import SYNC, SYNCED, UPDATE, Elsewhere
from multirealm.logs import plain


def _chunks(words, most):
    """C{words} in lists of at most C{most} bytes of text (at least one list)."""
    chunk, size = [], 0
    for word in words:
        if chunk and size + len(word) + 1 > most:
            yield chunk
            chunk, size = [], 0
        chunk.append(word)
        size += len(word) + 1
    yield chunk


class OtherLinks:
    """
    @param links: this process's L{multirealm.core.links.LinkStates}.
    @param publish: sends a payload to the other processes.
    """

    ERROR_CHARS = 300  # of an error's text, at most

    def __init__(self, links, publish):
        self._links = links
        self._publish = publish
        self._linked = {}  # process -> the peers it said it is linked to
        self.handlers = {"l": self._on_linked, "L": self._on_all, "e": self._on_error}
        links.cluster = self

    def local_linked(self, peer, linked):
        self._publish(f"l {peer} {int(linked)}")

    def local_error(self, peer, at, error):
        self._publish(f"e {peer} {at} {plain(error)[:self.ERROR_CHARS]}")

    def linked_elsewhere(self, peer):
        return any(peer in peers for peers in self._linked.values())

    def dump(self):
        self._publish(" ".join(("L", *sorted(self._links.linked_here()))))
        for peer, (at, error) in sorted(self._links.errors().items()):
            self.local_error(peer, at, error)

    def forget(self, process):
        self._linked.pop(process, None)

    def _on_linked(self, process, rest):
        peer, linked = rest.split(" ")
        peers = self._linked.setdefault(process, set())
        if linked == "1":
            peers.add(peer)
        else:
            peers.discard(peer)

    def _on_all(self, process, rest):
        self._linked[process] = set(rest.split())

    def _on_error(self, process, rest):
        peer, at, error = rest.split(" ", 2)
        self._links.error_elsewhere(peer, at, error)


class OtherPeerLinks:
    """
    @param presence: this process's L{multirealm.core.peer_presence.PeerPresence}.
    @param publish: sends a payload to the other processes.
    @param most: the most bytes of entries in one payload.
    """

    def __init__(self, presence, publish, most):
        self._presence = presence
        self._publish = publish
        self._most = most
        self.handlers = {"i": self._on_taken, "o": self._on_lost, "u": self._on_update,
                         "y": self._on_swap, "Y": self._on_swapped}
        presence.relay = self

    # -- what the links here say ----------------------------------------------

    def taken(self, peer):
        self._publish(f"i {peer}")

    def lost(self, peer):
        self._publish(f"o {peer}")

    def updated(self, peer, entries):
        if entries:
            for chunk in _chunks(map(_word, entries), self._most):
                self._publish(" ".join(("u", peer, *chunk)))

    def swapped(self, peer, entries):
        *parts, last = _chunks(map(_word, entries), self._most)
        for chunk in parts:
            self._publish(" ".join(("y", peer, *chunk)))
        self._publish(" ".join(("Y", peer, *last)))

    def dump(self):
        """The view of each peer whose link is here; C{o} for the others (an C{o} lost)."""
        here = dict(self._presence.views_here())
        for peer in self._presence.peers:
            if peer in here:
                self.swapped(peer, here[peer])
            else:
                self.lost(peer)

    def forget(self, process):
        for peer in self._presence.peers:
            self._presence.peer_lost(peer, Elsewhere(process))

    # -- what the others' links say --------------------------------------------

    def _on_taken(self, process, rest):
        if rest in self._presence.peers:
            self._presence.linked_elsewhere(rest, process)

    def _on_lost(self, process, rest):
        if rest in self._presence.peers:
            self._presence.peer_lost(rest, Elsewhere(process))

    def _on_update(self, process, rest):
        peer, *words = rest.split(" ")
        self._apply(process, peer, UPDATE, words)

    def _on_swap(self, process, rest):
        peer, *words = rest.split(" ")
        self._apply(process, peer, SYNC, words)

    def _on_swapped(self, process, rest):
        peer, *words = rest.split(" ")
        self._apply(process, peer, SYNCED, words)

    def _apply(self, process, peer, mode, words):
        if peer not in self._presence.peers:
            return
        source = Elsewhere(process)
        if self._presence.believed(peer) is None:
            self._presence.peer_linked(peer, source)
        self._presence.received(peer, source, mode, [_entry(w) for w in words if w])


def _word(entry):
    name, online, last_seen = entry
    if online:
        return f"+{name}"
    return f"-{name}" if last_seen is None else f"-{name}={last_seen}"


def _entry(word):
    name, _, last_seen = word[1:].partition("=")
    return name, word[0] == "+", last_seen or None
