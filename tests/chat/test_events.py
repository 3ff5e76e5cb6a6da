"""
Live events (docs/protocol.md, "Live events"): subscribe / unsubscribe,
events to every subscribed connection of the recipient and to no other,
in order with replies and never inside one, a budget past which a
non-reading subscriber gets one overflow event and catches up from
history, and no events after logout.
"""

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from multirealm.config import Limits
from multirealm.chat.protocol import ChatFactory
from tests.helpers import BoundedTransport, Client, InMemoryNetwork, make_realm, parse_replies


def events(replies):
    return [r for r in replies if "event" in r]


def read_all(transport):
    """The client reads until nothing more comes; the replies and events it got."""
    start = len(transport.out)
    while transport.drain():
        pass
    return parse_replies(transport.out[start:])


class EventTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        self.alice = self.client()
        self.alice.login("alice")
        self.heru = self.client()
        self.heru.login("heru")

    def client(self, transport=None):
        return Client(self.realm, factory=self.factory, transport=transport)

    def test_a_subscriber_gets_each_message_as_it_is_stored(self):
        self.assertEqual(self.heru.ask("subscribe -"), {"status": "OK", "message": "subscribed"})
        sent = self.alice.ask("send - heru hello")
        (event,) = self.heru.replies()
        self.assertEqual(event["event"], "message")
        self.assertEqual(event["message"]["id"], sent["id"])
        self.assertEqual((event["message"]["msg_from"], event["message"]["msg"]),
                         ("alice", "hello"))
        self.assertEqual(self.alice.replies(), [])  # the sender gets no event of her own

    def test_every_subscribed_connection_of_the_user_gets_it_and_no_other(self):
        phone, laptop, idle = self.client(), self.client(), self.client()
        for connection in (phone, laptop, idle):
            connection.ask("auth heru pw")
        phone.ask("subscribe -")
        laptop.ask("subscribe -")
        self.alice.ask("subscribe -")
        self.alice.ask("send - heru hi")
        self.assertEqual([e["message"]["msg"] for e in phone.replies()], ["hi"])
        self.assertEqual([e["message"]["msg"] for e in laptop.replies()], ["hi"])
        self.assertEqual(idle.replies(), [])  # never subscribed: never an event
        laptop.ask("unsubscribe -")
        self.alice.ask("send - heru again")
        self.assertEqual(len(phone.replies()), 1)
        self.assertEqual(laptop.replies(), [])

    def test_group_members_get_group_messages(self):
        cy = self.client()
        cy.login("cy")
        for connection in (self.heru, cy):
            connection.ask("subscribe -")
        self.alice.ask("creategroup - team heru")
        self.alice.ask("sendgroup - team hello team")
        created, event = self.heru.replies()  # the group's creation, then its post
        self.assertEqual((created["event"], created["change"]), ("member", "created"))
        self.assertEqual((event["message"]["msg_to"], event["message"]["msg"]),
                         ("team", "hello team"))
        self.assertEqual(cy.replies(), [])  # not a member

    @defer.inlineCallbacks
    def test_a_file_is_an_event_too(self):
        self.heru.ask("subscribe -")
        self.alice.raw(b"sendfile - heru a.txt \r\n\r\naGk=\r\n\r\n")
        for _ in range(500):  # stored in a thread: up to 5 s
            got = self.heru.replies()
            if got:
                break
            yield task.deferLater(reactor, 0.01)
        (event,) = got
        self.assertEqual((event["message"]["file"], event["message"]["size"]), ("a.txt", 2))

    def test_events_come_after_replies_already_queued_and_never_inside_one(self):
        self.heru.ask("subscribe -")
        # heru pipelines requests; alice's message is stored meanwhile.
        self.heru.send("ping", "listusers")
        self.alice.ask("send - heru between")
        self.heru.send("ping")
        out = self.heru.replies()  # parse_replies fails on a cut or mixed reply
        kinds = [r.get("event") or r.get("message") or "users" for r in out]
        self.assertEqual(kinds, ["pong", "users", "message", "pong"])

    def test_a_subscriber_that_does_not_read_is_told_once_and_catches_up(self):
        self.realm.limits = Limits(event_buffer_bytes=4096)
        factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        transport = BoundedTransport()
        transport.size = 1024  # a small socket: it fills at once
        slow = Client(self.realm, factory=factory, transport=transport)
        slow.send("auth heru pw", "subscribe -")
        sender = Client(self.realm, factory=factory)
        sender.ask("auth alice pw")
        ids = [sender.ask(f"send - heru message {n:03} " + "x" * 200)["id"] for n in range(100)]
        # Memory stays bounded: about the budget, not 100 events.
        self.assertLess(slow.protocol._outbound.pending_bytes, 4096 + 512)
        stream = events(read_all(transport))
        self.assertEqual(stream[-1], {"event": "overflow"})
        self.assertEqual(sum(e == {"event": "overflow"} for e in stream), 1)
        seen = [e["message"]["id"] for e in stream[:-1]]
        self.assertEqual(seen, ids[:len(seen)])  # in order, then nothing
        self.assertLess(len(seen), 20)
        # Nothing more comes until it subscribes again ...
        sender.ask("send - heru after the overflow")
        self.assertEqual(read_all(transport), [])
        # ... and history has everything it missed, in order.
        slow.send(f"inbox - {seen[-1]}", "subscribe -")
        inbox, subscribed = read_all(transport)
        missed = [m["id"] for m in inbox["messages"]]
        self.assertEqual(missed[:len(ids) - len(seen)], ids[len(seen):])
        self.assertEqual(subscribed["message"], "subscribed")
        sender.ask("send - heru live again")
        (event,) = read_all(transport)
        self.assertEqual(event["message"]["msg"], "live again")

    def test_logout_ends_the_subscriptions_of_that_session(self):
        token = self.heru.ask("auth heru pw")["tokenid"]
        other = self.client()
        other.ask(f"subscribe {token}")
        self.heru.ask("subscribe -")
        self.heru.ask(f"logout {token}")
        self.alice.ask("send - heru are you there")
        self.assertEqual(other.replies(), [])
        self.assertEqual(self.heru.replies(), [])

    def test_a_closed_connection_is_forgotten(self):
        # It no longer holds one of the user's subscribed places.
        from multirealm.chat.live import LiveDelivery

        self.heru.ask("subscribe -")
        for _ in range(LiveDelivery.MAX_PER_USER - 1):
            other = self.client()
            other.ask("auth heru pw")
            other.ask("subscribe -")
        self.heru.protocol.connectionLost(None)
        late = self.client()
        late.ask("auth heru pw")
        self.assertEqual(late.ask("subscribe -"), {"status": "OK", "message": "subscribed"})


class RemoteEventTests(unittest.TestCase):
    def test_messages_from_another_realm_and_its_groups_are_events(self):
        net = InMemoryNetwork.of_three_users(self)
        one, two = net.realms["1"], net.realms["2"]
        heru = Client(two)
        heru.ask("auth heru pw")
        heru.ask("subscribe -")
        alice = Client(one)
        alice.ask("auth alice pw")
        alice.ask("subscribe -")
        alice.ask("send - heru@2 across")
        alice.ask("creategroup - team heru@2")
        alice.ask("sendgroup - team to the team")
        alice.ask("send - nobody@2 lost")
        net.flush()
        self.assertEqual(
            [(e["message"]["msg_from"], e["message"]["msg"]) if "message" in e
             else (e["by"], e["change"]) for e in heru.replies()],
            [("alice@1", "across"), ("alice@1", "created"), ("alice@1", "to the team")],
        )
        (failure,) = alice.replies()
        self.assertEqual(failure["message"]["failed"]["code"], "no_such_user")
        heru.ask("sendgroup - team@1 back")
        net.flush()
        (event,) = alice.replies()
        self.assertEqual((event["message"]["msg_from"], event["message"]["msg"]), ("heru@2", "back"))


class IdleSubscriberTests(unittest.TestCase):
    def test_a_subscriber_that_pings_stays_and_one_that_does_not_is_closed(self):
        realm = make_realm(self, limits=Limits(idle_timeout=60))
        quiet, pinging = Client(realm), Client(realm)
        for connection in (quiet, pinging):
            connection.login("u" + str(id(connection))[-4:])
            connection.ask("subscribe -")
        for _ in range(3):
            realm.clock.advance(40)
            pinging.ask("ping")
        self.assertTrue(quiet.transport.disconnecting)
        self.assertEqual(quiet.replies()[-1]["code"], "idle_timeout")
        self.assertFalse(pinging.transport.disconnecting)


class BusyReaderTests(unittest.TestCase):
    def test_a_client_that_reads_never_overflows_however_busy(self):
        # A client that always has a request pending, and reads everything.
        realm = make_realm(self, limits=Limits(event_buffer_bytes=2048))
        factory = ChatFactory(realm, realm.limits, realm.clock)
        reader = Client(realm, factory=factory)
        reader.login("heru")
        reader.ask("subscribe -")
        sender = Client(realm, factory=factory)
        sender.login("alice")
        gate = defer.Deferred()
        realm.list_users = lambda after, realm=None: gate  # a request that stays pending
        reader.send("listusers")
        for n in range(50):
            sender.ask(f"send - heru message {n} " + "x" * 100)
        gate.callback((["alice", "heru"], False))
        got = reader.replies()
        self.assertNotIn({"event": "overflow"}, got)
        self.assertEqual(len(events(got)), 50)


class WhoseEventsTests(unittest.TestCase):
    """From a review: events end with the session, and with the user."""

    def setUp(self):
        self.realm = make_realm(self, limits=Limits(session_days=1, idle_timeout=10 * 86400))
        self.factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        self.alice = Client(self.realm, factory=self.factory)
        self.alice.login("alice")
        self.heru = Client(self.realm, factory=self.factory)
        self.heru.login("heru")
        self.heru.ask("subscribe -")

    def test_no_event_once_the_session_has_expired(self):
        self.realm.clock.advance(2 * 86400)
        self.alice.ask("auth alice pw")  # a fresh session for the sender
        self.alice.ask("send - heru after expiry")
        self.assertEqual(self.heru.replies(), [])

    def test_once_the_last_subscription_ends_later_messages_look_up_nobody(self):
        # One message's event ends the last subscription (as a session that
        # has just expired does): the next message of the same report, a
        # group post, asks the store about no one (review: "member IN ()"
        # is an error on PostgreSQL).
        from multirealm.model import GROUP, PRIVATE, Delivery, Message
        from multirealm.names import Address

        live = self.factory.live
        pushed = live.push_to

        def push_then_end(user, event, skip=None):
            pushed(user, event, skip)
            live.unsubscribe(self.heru.protocol)

        live.push_to = push_then_end
        looked_up = []
        self.realm.group_readers = lambda *args, **kwargs: looked_up.append(args)
        alice = Address("alice", "1")
        to_heru = Message("01" * 16, PRIVATE, alice, Address("heru", "1"), "hi", "t")
        to_team = Message("02" * 16, GROUP, alice, Address("team", "1"), "all", "t")
        self.factory.live.messages_committed([
            Delivery(to_heru, "1", frozenset({"alice", "heru"})), Delivery(to_team, "1"),
        ])
        self.assertEqual(looked_up, [])
        self.assertEqual([e["message"]["msg"] for e in events(self.heru.replies())], ["hi"])

    def test_logging_in_as_someone_else_ends_the_events_of_the_first(self):
        self.heru.ask("register mallory pw")
        self.heru.ask("auth mallory pw")
        self.alice.ask("send - heru for heru only")
        self.assertEqual(events(self.heru.replies()), [])

    def test_one_user_subscribes_a_bounded_number_of_connections(self):
        from multirealm.chat.live import LiveDelivery

        extra = [Client(self.realm, factory=self.factory) for _ in range(LiveDelivery.MAX_PER_USER)]
        codes = [c.ask("auth heru pw") and c.ask("subscribe -").get("code") for c in extra]
        self.assertEqual(codes[:-1], [None] * (LiveDelivery.MAX_PER_USER - 1))
        self.assertEqual(codes[-1], "quota_exceeded")


class EventOrderTests(unittest.TestCase):
    def test_an_event_never_cuts_into_a_reply_being_written(self):
        # heru's socket is full in the middle of a long reply: the event
        # waits for the reply's end, and the sender gets none of its own.
        realm = make_realm(self)
        factory = ChatFactory(realm, realm.limits, realm.clock)
        transport = BoundedTransport()
        transport.size = 4096
        heru = Client(realm, factory=factory, transport=transport)
        heru.send("register heru pw", "auth heru pw", "subscribe -")
        alice = Client(realm, factory=factory)
        alice.login("alice")
        alice.ask("subscribe -")
        for n in range(20):
            alice.ask(f"send - heru {'long ' * 100}{n}")
        read_all(transport)
        heru.send("inbox -")  # a reply of about 12 KiB: more than the socket takes
        self.assertTrue(transport.full)
        alice.ask("send - heru in between")
        out = read_all(transport)  # parse_replies fails on a reply cut by an event
        self.assertEqual([r.get("event") or "reply" for r in out], ["reply", "message"])
        self.assertEqual(alice.replies(), [])


class FanOutCostTests(unittest.TestCase):
    def test_a_group_post_looks_up_only_the_subscribed(self):
        from tests.helpers import make_store

        store = make_store(self)
        realm = make_realm(self, store=store)
        factory = ChatFactory(realm, realm.limits, realm.clock)
        alice, heru = Client(realm, factory=factory), Client(realm, factory=factory)
        alice.login("alice")
        heru.login("heru")
        members = " ".join(f"m{n}" for n in range(200))
        for n in range(200):
            self.successResultOf(store.create_user(f"m{n}", "h", "t"))
        alice.ask(f"creategroup - crowd heru {members}")
        heru.ask("subscribe -")
        statements = []
        self.successResultOf(store.submit(lambda db: db.set_trace_callback(statements.append),
                                          writes=False))
        self.addCleanup(store.submit, lambda db: db.set_trace_callback(None), writes=False)
        alice.ask("sendgroup - crowd hello")
        (event,) = heru.replies()
        self.assertEqual(event["message"]["msg"], "hello")
        lookups = [s for s in statements if "FROM members" in s and "IN (" in s]
        self.assertEqual(len(lookups), 1, statements)


class MyGroupsTests(unittest.TestCase):
    def test_a_user_lists_the_groups_it_is_in_here_and_elsewhere(self):
        net = InMemoryNetwork.of_three_users(self)
        alice, heru = Client(net.realms["1"]), Client(net.realms["2"])
        alice.ask("auth alice pw")
        heru.ask("auth heru pw")
        alice.ask("creategroup - team heru@2")
        alice.ask("creategroup - solo")
        heru.ask("creategroup - local")
        net.flush()
        self.assertEqual(alice.ask("mygroups -")["groups"], ["solo", "team"])
        self.assertEqual(heru.ask("mygroups -")["groups"], ["local", "team@1"])
        heru.ask("leavegroup - team@1")
        self.assertEqual(heru.ask("mygroups -")["groups"], ["local"])


class RealmBudgetTests(unittest.TestCase):
    def test_silent_subscribers_never_park_other_peoples_requests(self):
        # From a review: events waiting everywhere once filled the realm's
        # reply budget, and a list request of someone else then waited.
        limits = Limits(realm_reply_buffer_bytes=20_000, event_buffer_bytes=65536)
        realm = make_realm(self, limits=limits)
        factory = ChatFactory(realm, limits, realm.clock)
        silent = []
        for n in range(10):
            transport = BoundedTransport()
            transport.size = 512
            client = Client(realm, factory=factory, transport=transport)
            client.send(f"register s{n} pw", f"auth s{n} pw", "subscribe -")
            silent.append(client)
        sender = Client(realm, factory=factory)
        sender.login("alice")
        for n in range(200):
            sender.ask(f"send - s{n % 10} {'x' * 200}")
        self.assertLessEqual(factory.reply_budget.used, limits.realm_reply_buffer_bytes // 2 + 512)
        other = Client(realm, factory=factory)
        other.login("bob")
        self.assertEqual(other.ask("listusers")["status"], "OK")  # answered, not parked
