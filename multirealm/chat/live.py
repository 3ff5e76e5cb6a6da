"""
Live delivery (docs/protocol.md, "Live events"): the connections that
asked for events with C{subscribe}, and the event of each committed
message for them.

L{LiveDelivery} is an L{IMessageObserver} of the realm's notifier, so an
event is made right after its message's commit, never by polling.  A
private message (or a delivery failure) goes to the connections of its
local recipient; a group message to those of the group's local members
(asked of the store: a message's own record names no members, so that
storing it costs the same whatever the group's size).  The sender's own
message is not sent back to them.  A new group's members hear of it
(C{group_created} here, the JOINED frame on their own realm).  Each connection takes the bytes
through its outbound queue, under a byte budget of its own (the
protocol's C{push_event}).
"""

from zope.interface import implementer

from multirealm import errors, wire
from multirealm.core.interfaces import IMessageObserver
from multirealm.core.notifier import each_delivery
from multirealm.names import Address
from multirealm.model import FAILURE, GROUP, JOINED, KNOWN, MEMBER, PRIVATE
from multirealm.logs import RealmLogger

log = RealmLogger()


@implementer(IMessageObserver)
class LiveDelivery:
    # Connections one user may have subscribed at once: each holds events
    # (up to event_buffer_bytes), so their number is bounded too.
    MAX_PER_USER = 16

    def __init__(self, realm):
        self.realm = realm
        self._by_user = {}  # user name -> {connection: (token, when it expires)}
        # A user is online while a connection of theirs is subscribed.
        self._presence = realm.presence
        self._presence.listen(self)
        self._expiry = {}  # connection -> the call that ends its subscription with its session

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, user, token, connection):
        """
        Events for C{user} on C{connection}, while session C{token} lives
        (L{errors.QuotaExceeded} past L{MAX_PER_USER} connections).
        """
        self.unsubscribe(connection)
        connections = self._by_user.setdefault(user, {})
        if len(connections) >= self.MAX_PER_USER:
            if not connections:
                del self._by_user[user]
            raise errors.QuotaExceeded(
                f"{self.MAX_PER_USER} connections of yours get events already: unsubscribe one"
            )
        expires = self.realm.sessions.expires(token)
        connections[connection] = (token, float("inf") if expires is None else expires)
        connection.subscribed_as = user
        self._presence.connected(user)
        if expires is not None:
            # Ended when the session ends, event or not: the user goes offline then.
            clock = self.realm.clock
            self._expiry[connection] = clock.callLater(
                max(0.0, expires - clock.seconds()), self.unsubscribe, connection
            )

    def unsubscribe(self, connection):
        user = getattr(connection, "subscribed_as", None)
        if user is None:
            return
        connection.subscribed_as = None
        expiry = self._expiry.pop(connection, None)
        if expiry is not None and expiry.active():
            expiry.cancel()
        connections = self._by_user.get(user, {})
        if connections.pop(connection, None) is not None:
            self._presence.disconnected(user)
        if not connections:
            self._by_user.pop(user, None)

    def session_ended(self, token):
        """A session was logged out: its subscriptions end, on every connection."""
        for connections in list(self._by_user.values()):
            for connection, (subscribed_with, _) in list(connections.items()):
                if subscribed_with == token:
                    self.unsubscribe(connection)

    def sessions_ended(self, user, keep):
        """
        Every session of C{user} but C{keep} ended (C{passwd}): the
        subscriptions made with them end, on every connection.
        """
        for connection, (token, _) in list(self._by_user.get(user, {}).items()):
            if token != keep:
                self.unsubscribe(connection)

    def recheck(self, user):
        """
        Sessions of C{user} (None: of anyone) may have ended in another
        process of the realm: each subscription made with one is checked
        again, and ends if its session has.
        """
        if user is None:
            subscribed = [c for connections in self._by_user.values() for c in connections.items()]
        else:
            subscribed = list(self._by_user.get(user, {}).items())
        for connection, (token, _) in subscribed:
            d = self.realm.sessions.still_live(token)
            d.addErrback(self._ended_elsewhere, connection, token)

    def _ended_elsewhere(self, failure, connection, token):
        if not failure.check(errors.InvalidSession):
            log.failure("checking a session again failed", failure, realm=self.realm)
            return
        subscription = self._by_user.get(connection.subscribed_as, {}).get(connection)
        if subscription is not None and subscription[0] == token:
            self.unsubscribe(connection)

    # -- the notifier -------------------------------------------------------------

    def messages_committed(self, deliveries):
        if not self._by_user:
            return  # nobody listens: nothing to do
        each_delivery(deliveries, self._committed, self.realm)

    def _committed(self, delivery):
        if not self._by_user:
            return  # the last subscriber went with an earlier message's event
        message = delivery.message
        if message.kind in (PRIVATE, FAILURE):
            self._push(message, delivery.local_users)
        elif message.kind == GROUP:
            # Only the subscribed are asked about: point lookups while they
            # are few, not the group's whole member list for every post.
            # Those who were members when it was sent: the history a realm
            # gets for its first member is not news to push.
            d = self.realm.group_readers(
                message.recipient, tuple(self._by_user), sent=message.timestamp
            )
            d.addCallback(lambda readers: self._push(message, readers))
            d.addErrback(lambda failure: log.failure(
                "finding the readers of {group} failed", failure, group=message.recipient,
                realm=self.realm,
            ))
        elif message.kind == MEMBER and not message.text.startswith(KNOWN):
            # Every member here as the change left it, and the one it
            # concerns (who may be a member no more).
            d = self.realm.group_readers(message.recipient, tuple(self._by_user))
            d.addCallback(lambda readers: self._push_member(message, delivery, readers))
            d.addErrback(lambda failure: log.failure(
                "finding the readers of {group} failed", failure, group=message.recipient,
                realm=self.realm,
            ))
        elif message.kind == JOINED:
            # Sent only when a group is created: its one local user here
            # (spelled as registered) hears of the new group.
            event = self._created(message.recipient, message.sender)
            for user in delivery.local_users:
                self.push_to(user, event)
        # Other membership frames (left, known) are not news to anyone.

    def group_created(self, group, creator, skip=None):
        """
        Group C{group} of this realm was just created by local user
        C{creator}: its subscribed members here hear of it (but on
        C{skip}, the connection that created it and has its reply).
        """
        if not self._by_user:
            return
        event = self._created(group, Address(creator, self.realm.name))

        def push(readers):
            for user in readers:
                self.push_to(user, event, skip)

        d = self.realm.group_readers(group, tuple(self._by_user))
        d.addCallback(push)
        d.addErrback(lambda failure: log.failure(
            "finding the readers of {group} failed", failure, group=group, realm=self.realm,
        ))

    def _created(self, group, creator):
        realm = self.realm.name
        creator = creator.relative_to(realm)
        return wire.encode({
            "event": "member", "group": group.relative_to(realm), "change": "created",
            "member": creator, "by": creator,
        })

    def _push_member(self, message, delivery, readers):
        realm = self.realm.name
        change, _, member = message.text.partition(" ")
        event = wire.encode({
            "event": "member",
            "group": message.recipient.relative_to(realm),
            "change": change,
            "member": Address.parse(member, realm).relative_to(realm),
            "by": message.sender.relative_to(realm),
        })
        for user in set(readers) | delivery.local_users:
            self.push_to(user, event)

    def push_to(self, user, event, skip=None):
        """
        Push C{event} (encoded) to every subscribed connection of local
        user C{user}, but C{skip} (the one whose request caused it).
        """
        connections = self._by_user.get(user)
        if not connections:
            return
        now = self.realm.clock.seconds()
        for connection, (_, expires) in list(connections.items()):
            if expires <= now:
                self.unsubscribe(connection)  # its session has ended
                continue
            if connection is not skip:
                connection.push_event(event)

    def _push(self, message, users):
        sender = message.sender
        own = sender.name if sender.realm == self.realm.name else None
        event = None
        for user in users:
            if user == own and message.recipient.name != own:
                continue  # the sender's own message is not news to them
            connections = self._by_user.get(user)
            if not connections:
                continue
            if event is None:  # made once, for every subscriber
                event = wire.encode({
                    "event": "message",
                    "kind": message.kind,  # private, group or failure
                    "message": message.to_wire(self.realm.name),
                })
            self.push_to(user, event)
