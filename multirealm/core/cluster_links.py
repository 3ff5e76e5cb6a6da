"""
What the links of one process of a realm tell its other processes
(L{multirealm.core.cluster}): the link *to* a peer runs only in the
process holding its outbox lease, yet every process answers
C{listrealms} with the realm's view.

L{OtherLinks}, the links to the peers (L{multirealm.core.links.LinkStates}):

  - C{l PEER 1|0}: this process's link to PEER is up, or no longer.
  - C{e PEER WHEN TEXT}: it failed (the newest error of any process is
    the last error).
  - C{L PEER...}: every peer linked here (in a dump: replaces what was
    known of the process).

A process forgotten (L{multirealm.core.cluster_presence}: stopped, or
silent for three heartbeats) takes its links with it: not linked.
"""

from multirealm.logs import plain


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
