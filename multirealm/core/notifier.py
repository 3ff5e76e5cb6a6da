"""
The post-commit notifier: the one place that announces stored messages.

Every store operation that adds a message reports a L{Delivery} (what was
stored, whose history received it, which peer realms it was queued for).
Once the transaction has committed, the store hands each operation's
Deliveries (a run's all together) to the realm's L{Notifier.notify}
(wired by the core: L{IStore.report_deliveries_to}), and every
subscriber (an L{IMessageObserver}) hears of them in one call: the
federation queue of a peer wakes, live delivery pushes to subscribed
connections.
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
    """Subscribers, called in subscription order with every list of new deliveries."""

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

    def replayed(self, deliveries):
        """Announce the L{Delivery} values another process of the realm stored."""
        self._tell([o for o in self._observers if o not in self._here_only], deliveries)

    def counted(self, deliveries):
        """Deliveries of this process, replayed before their report came: counted only."""
        self._tell(self._here_only, deliveries)

    def notify(self, deliveries):
        """
        Announce committed L{Delivery} values (a sequence, in commit order).
        One observer that fails is logged and does not keep the others, or
        the senders' replies, from going on.
        """
        for observer in self._observers:  # _tell inlined: this runs for every send
            try:
                observer.messages_committed(deliveries)
            except Exception:
                self._failed(observer, deliveries)

    def _tell(self, observers, deliveries):
        for observer in observers:
            try:
                observer.messages_committed(deliveries)
            except Exception:
                self._failed(observer, deliveries)

    def _failed(self, observer, deliveries):
        log.failure("observer {observer!r} failed on messages {first}..{last}",
                    observer=observer, first=deliveries[0].message.id,
                    last=deliveries[-1].message.id, realm=self._realm)


def each_delivery(deliveries, committed, realm):
    """
    C{committed(delivery)} for each of C{deliveries}, for an observer that
    handles them one at a time: one that fails is logged, and the others
    still go on (as when the notifier called for each message).
    """
    for delivery in deliveries:
        try:
            committed(delivery)
        except Exception:
            log.failure("handling message {id} failed", id=delivery.message.id, realm=realm)
