"""
Presence across the processes of one realm: L{OtherProcesses}.

A user is online while a connection of theirs is subscribed on any
process.  Each process publishes the changes of its own users once they
have settled (L{multirealm.core.presence.Presence}): C{p USER 1}, or
C{p USER 0 LAST_SEEN}; and keeps, for each other process, the users it
said are online there.  A process that starts asks the others for their
whole lists (C{?}); one whose bus lost touch says so (C{!}) and sends its
own: each answers with C{P USER...} (what is known of it is replaced)
and C{a USER...} (more of them), at most L{OtherProcesses.DUMP_BYTES}
each.  The realm-wide changes then reach contacts and peer realms as a
change of a local user always did.

Every process publishes a heartbeat (C{h}) every
L{OtherProcesses.HEARTBEAT_SECONDS}; one silent for
L{OtherProcesses.SILENT_BEATS} heartbeats is forgotten (killed without
a word): its users read offline, unless online elsewhere, at most
SILENT_BEATS + 1 heartbeats (20 s) and presence's settling after it
died.  A process that stops says so (C{x}): its users are offline at once.

The other state a process shares (its links, L{multirealm.core.cluster_links})
goes in each of its dumps and is forgotten with it: each of L{OtherProcesses.parts}
has C{dump()} and C{forget(process)}.
"""

from multirealm.model import format_timestamp
from multirealm.logs import RealmLogger

log = RealmLogger()


class OtherProcesses:
    """
    @param realm: the realm's name.
    @param presence: its L{multirealm.core.presence.Presence}.
    @param clock: an L{IReactorTime}.
    @param publish: sends a payload to the other processes.
    """

    HEARTBEAT_SECONDS = 5.0
    SILENT_BEATS = 3
    DUMP_BYTES = 4000  # well within a NOTIFY payload (8000 bytes)

    def __init__(self, realm, presence, clock, publish):
        self._realm = realm
        self._presence = presence
        self._clock = clock
        self._publish = publish
        self._online = {}  # process -> the users online there
        self._heard = {}  # process -> when it was last heard
        self._published = set()  # the users this process said are online here
        self.parts = []  # what else is dumped, and forgotten with a process
        self.handlers = {"p": self._on_change, "P": self._on_all, "a": self._on_more,
                         "?": self._on_ask, "x": self._on_gone}

    def start(self):
        self._publish("?")  # who is online elsewhere

    def stop(self):
        self._publish("x")

    def lost_touch(self):
        """This process's bus lost touch: the others check again, and learn our users again."""
        self._publish("!")
        self.send_dump()

    def heard(self, process):
        self._heard[process] = self._clock.seconds()

    def online_elsewhere(self, user):
        """Whether local user C{user} (as registered) is online on another process."""
        for users in self._online.values():
            if user in users:
                return True
        return False

    def local_state(self, user, online, last_seen):
        """Presence settled local user C{user}'s state on this process: tell the others."""
        if online and user not in self._published:
            self._published.add(user)
            self._publish(f"p {user} 1")
        elif not online and user in self._published:
            self._published.discard(user)
            self._publish(f"p {user} 0 {last_seen or self._now()}")

    def send_dump(self):
        """Every user online here, in payloads of at most L{DUMP_BYTES}."""
        kind, chunk, size = "P", [], 0
        for user in sorted(self._published):
            if chunk and size + len(user) + 1 > self.DUMP_BYTES:
                self._publish(" ".join((kind, *chunk)))
                kind, chunk, size = "a", [], 0
            chunk.append(user)
            size += len(user) + 1
        self._publish(" ".join((kind, *chunk)))
        for part in self.parts:
            part.dump()

    def expire(self):
        """Forget the processes silent for L{SILENT_BEATS} heartbeats."""
        silent = self._clock.seconds() - self.SILENT_BEATS * self.HEARTBEAT_SECONDS
        for process, heard in list(self._heard.items()):
            if heard < silent:
                log.info("process {process} of the realm fell silent: its users are offline",
                         process=process, realm=self._realm)
                self._forget(process, format_timestamp(heard))

    def _now(self):
        return format_timestamp(self._clock.seconds())

    # -- what the others say ------------------------------------------------------

    def _on_change(self, process, rest):
        user, online, *last_seen = rest.split(" ")
        users = self._online.setdefault(process, set())
        if online == "1":
            users.add(user)
            self._presence.elsewhere_changed(user)
        else:
            users.discard(user)
            self._presence.elsewhere_changed(user, last_seen[0] if last_seen else self._now())

    def _on_all(self, process, rest):
        old = self._online.get(process, set())
        new = self._online[process] = set(rest.split())
        now = self._now()
        for user in old ^ new:
            self._presence.elsewhere_changed(user, None if user in new else now)

    def _on_more(self, process, rest):
        users = self._online.setdefault(process, set())
        for user in rest.split():
            if user not in users:
                users.add(user)
                self._presence.elsewhere_changed(user)

    def _on_ask(self, process, rest):
        self.send_dump()

    def _on_gone(self, process, rest):
        self._forget(process, self._now())

    def _forget(self, process, last_seen):
        self._heard.pop(process, None)
        for user in self._online.pop(process, ()):
            self._presence.elsewhere_changed(user, last_seen)
        for part in self.parts:
            part.forget(process)
