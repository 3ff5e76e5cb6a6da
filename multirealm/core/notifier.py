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
"""

from multirealm.logs import RealmLogger

log = RealmLogger()


class Notifier:
    """Subscribers, called in subscription order for every new delivery."""

    def __init__(self, realm=None):
        self._realm = realm  # its name, for the log
        self._observers = []

    def subscribe(self, observer):
        """Start telling C{observer} (an L{IMessageObserver}) of deliveries."""
        self._observers.append(observer)

    def notify(self, delivery):
        """
        Announce one committed L{Delivery}.  One observer that fails is
        logged and does not keep the others, or the sender's reply, from
        going on.
        """
        if not self._observers:
            return
        for observer in tuple(self._observers):
            try:
                observer.message_committed(delivery)
            except Exception:
                log.failure("observer {observer!r} failed on message {id}",
                            observer=observer, id=delivery.message.id, realm=self._realm)
