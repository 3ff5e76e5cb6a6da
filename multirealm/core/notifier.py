"""
The post-commit notifier: the one place that announces stored messages.

Every store operation that adds a message reports a L{Delivery} (what was
stored, whose history received it, which peer realms it was queued for).
Once the transaction has committed, the store hands it to the realm's
L{Notifier.notify} (wired by the core: L{IStore.report_deliveries_to}), and
every subscriber (an L{IMessageObserver}) hears of it: the federation
queue of a peer wakes, live delivery pushes to subscribed connections.
The shape is Synapse's C{Notifier} and Twisted words' C{IChatClient.receive}.

A message whose transaction rolled back is never announced (the store only
reports after the commit), nor is a duplicate (nothing new was stored).

When a realm runs as several processes (L{multirealm.core.cluster}), a
message another process stored is I{replayed} here: every observer hears
of it but those that count what this process stored (metrics).
"""

from multirealm.logs import RealmLogger

log = RealmLogger()


class Notifier:
    """Subscribers, called in subscription order for every new delivery."""

    def __init__(self, realm=None):
        self._realm = realm  # its name, for the log
        self._observers = ()  # a tuple, replaced on subscribe: notify need not copy it
        self._here_only = []  # observers that count what this process stored

    def subscribe(self, observer, replays=True):
        """
        Start telling C{observer} (an L{IMessageObserver}) of deliveries;
        without C{replays}, only of those this process stored.
        """
        self._observers += (observer,)
        if not replays:
            self._here_only.append(observer)

    def replayed(self, delivery):
        """Announce a L{Delivery} another process of the realm stored."""
        self._tell([o for o in self._observers if o not in self._here_only], delivery)

    def counted(self, delivery):
        """A delivery of this process, replayed before its report came: counted only."""
        self._tell(self._here_only, delivery)

    def notify(self, delivery):
        """
        Announce one committed L{Delivery}.  One observer that fails is
        logged and does not keep the others, or the sender's reply, from
        going on.
        """
        for observer in self._observers:  # _tell inlined: this runs for every message
            try:
                observer.message_committed(delivery)
            except Exception:
                self._failed(observer, delivery)

    def _tell(self, observers, delivery):
        for observer in observers:
            try:
                observer.message_committed(delivery)
            except Exception:
                self._failed(observer, delivery)

    def _failed(self, observer, delivery):
        log.failure("observer {observer!r} failed on message {id}",
                    observer=observer, id=delivery.message.id, realm=self._realm)
