"""
The core on its own, with the threaded store where ordering matters.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from multirealm import errors
from multirealm.model import GROUP, PRIVATE, FileRef, Message, MessageIds
from multirealm.names import Address
from tests.helpers import Recorder, make_realm, make_store


class SessionTests(unittest.TestCase):
    @defer.inlineCallbacks
    def alice_session(self):
        """A threaded store holding user alice and a session of hers."""
        store = make_store(self, inline=False)
        first = make_realm(self, store=store)
        yield first.register("alice", "pw")
        token = yield first.login("alice", "pw")
        return store, token

    @defer.inlineCallbacks
    def test_sessions_survive_a_new_core_on_the_same_store(self):
        store, token = yield self.alice_session()
        again = make_realm(self, store=store)
        self.assertEqual((yield again.sessions.user_of(token)), "alice")

    @defer.inlineCallbacks
    def test_logout_wins_over_a_lookup_queued_before_it(self):
        store, token = yield self.alice_session()
        core = make_realm(self, store=store)  # knows no session yet
        lookup = core.sessions.user_of(token)  # a database lookup, queued first
        user, _ = yield defer.gatherResults([lookup, core.logout(token)])
        self.assertEqual(user, "alice")  # that lookup still saw the session
        with self.assertRaises(errors.InvalidSession):
            yield defer.maybeDeferred(core.sessions.user_of, token)

    @defer.inlineCallbacks
    def test_expired_sessions_are_purged_here_and_in_the_store(self):
        realm = make_realm(self)
        yield realm.register("alice", "pw")
        old = yield realm.login("alice", "pw")
        realm.clock.advance(realm.limits.session_days * 86400 - 10)
        fresh = yield realm.login("alice", "pw")
        realm.clock.advance(20)
        self.assertEqual((yield realm.purge_expired_sessions()), 1)
        self.assertIsNone(realm.sessions.expires(old))  # forgotten here
        with self.assertRaises(errors.InvalidSession):  # and in the store
            yield defer.maybeDeferred(realm.sessions.user_of, old)
        self.assertEqual(realm.sessions.user_of(fresh), "alice")

    @defer.inlineCallbacks
    def test_unknown_token(self):
        realm = make_realm(self)
        with self.assertRaises(errors.InvalidSession):
            yield defer.maybeDeferred(realm.sessions.user_of, "nope")


class MessageIdTests(unittest.TestCase):
    def test_ids_are_unique_hex_start_with_the_time_and_sort_in_mint_order(self):
        ids = MessageIds()
        minted = [ids.new(1_700_000_000_123 + n // 10) for n in range(5000)]
        self.assertEqual(len(set(minted)), 5000)  # 500 milliseconds: two urandom pools
        self.assertEqual(minted, sorted(minted))  # 10 a millisecond, still in order
        for n, message_id in enumerate(minted):
            self.assertRegex(message_id, "^[0-9a-f]{32}$")
            self.assertEqual(int(message_id[:12], 16), 1_700_000_000_123 + n // 10)
        # A clock that steps back does not make an id sort before earlier ones.
        self.assertGreater(ids.new(1_600_000_000_000), minted[-1])

    def test_ids_still_sort_once_a_milliseconds_random_part_is_spent(self):
        ids = MessageIds()
        first = ids.new(1_000)
        ids._last_random = 2**80 - 2  # as if 2**80 ids had been minted in it (review)
        last = ids.new(1_000)
        self.assertEqual(last, f"{1_000:012x}" + "f" * 20)
        after = [ids.new(1_000), ids.new(999), ids.new(1_001)]
        self.assertEqual([first, last] + after, sorted([first, last] + after))
        self.assertEqual(int(after[0][:12], 16), 1_001)
        self.assertEqual(len(set(after)), 3)

    def test_one_senders_messages_share_one_address(self):
        # The store groups a run's messages of one conversation by the
        # identity of their addresses (review): a sender nobody wrote to
        # gets one Address too.
        realm = make_realm(self)
        one, two = (realm.new_message("private", "alice", realm.address("heru"), text)
                    for text in "ab")
        self.assertIs(one.sender, two.sender)
        self.assertIs(one.recipient, two.recipient)
        self.assertEqual(one.sender, Address("alice", realm.name))
        notices = [realm.new_message("member", "", realm.address("heru"), "n") for _ in "ab"]
        self.assertEqual(notices[0].sender, Address("", realm.name))
        self.assertIsNot(notices[0].sender, notices[1].sender)  # "" is no name: never kept

    def test_timestamps_are_utc_iso_with_milliseconds(self):
        clock = task.Clock()
        clock.advance(1_700_000_000.25)
        realm = make_realm(self, clock=clock)
        message = realm.new_message("private", "alice", realm.address("heru"), "hi")
        self.assertEqual(message.timestamp, "2023-11-14T22:13:20.250+00:00")
        # Made without the named tuple's __new__: every field, in order.
        self.assertEqual(message, Message(message.id, "private", Address("alice", realm.name),
                                          realm.address("heru"), "hi", message.timestamp))
        clock.advance(0.001)
        later = realm.new_message("private", "alice", realm.address("heru"), "hi")
        self.assertEqual(later.timestamp, "2023-11-14T22:13:20.251+00:00")


class ReceiveTests(unittest.TestCase):
    """Realm.receive: messages minted by peers, checked, stored once."""

    @defer.inlineCallbacks
    def setUp(self):
        self.realm = make_realm(self, peers=("2", "3"))
        yield self.realm.register("heru", "pw")
        yield self.realm.create_group(
            "heru", Address("team", "1"), [Address("bob", "2"), Address("cy", "3")]
        )
        self.recorder = Recorder()
        self.realm.notifier.subscribe(self.recorder)

    def from_peer(self, sender, recipient, kind=PRIVATE, id="a" * 32):
        return Message(id, kind, sender, recipient, "hi", "2020-02-02T02:02:02.000+00:00")

    @defer.inlineCallbacks
    def test_stored_once_announced_once_answered_ok_twice(self):
        message = self.from_peer(Address("bob", "2"), Address("heru", "1"))
        first = yield self.realm.receive("2", message)
        second = yield self.realm.receive("2", message)
        self.assertEqual((first.duplicate, second.duplicate), (False, True))
        self.assertEqual([d.message for d in self.recorder.deliveries], [message])
        self.assertEqual((yield self.realm.inbox("heru")).messages, (message,))

    @defer.inlineCallbacks
    def test_a_timestamp_no_reader_can_show_is_refused(self):
        for stamp in ("0001-01-01T00:00:00+14:00", "2026-11-25T21:32:15", "9999-12-31T23:59:59+00:00"):
            odd = self.from_peer(Address("bob", "2"), Address("heru", "1"))._replace(timestamp=stamp)
            yield self.assertFailure(self.realm.receive("2", odd), errors.BadRequest)

    @defer.inlineCallbacks
    def test_a_link_cannot_speak_for_another_realms_user(self):
        forged = self.from_peer(Address("cy", "3"), Address("heru", "1"))
        yield self.assertFailure(self.realm.receive("2", forged), errors.Forbidden)
        local = self.from_peer(Address("heru", "1"), Address("heru", "1"))
        yield self.assertFailure(self.realm.receive("2", local), errors.Forbidden)
        self.assertEqual((yield self.realm.inbox("heru")).messages, ())

    @defer.inlineCallbacks
    def test_only_linked_realms_and_only_for_this_realm(self):
        stranger = self.from_peer(Address("x", "9"), Address("heru", "1"))
        yield self.assertFailure(self.realm.receive("9", stranger), errors.NoSuchRealm)
        elsewhere = self.from_peer(Address("bob", "2"), Address("cy", "3"))
        yield self.assertFailure(self.realm.receive("2", elsewhere), errors.BadRequest)

    @defer.inlineCallbacks
    def test_a_members_group_message_goes_to_the_other_realms_only(self):
        post = self.from_peer(Address("bob", "2"), Address("team", "1"), GROUP)
        delivery = yield self.realm.receive("2", post)
        self.assertEqual(delivery.queued_for, {"3"})
        self.assertEqual([(r["name"], r["pending"]) for r in (yield self.realm.list_realms())],
                         [("2", 2), ("3", 3)])  # and the frames adding bob and cy, rosters

    @defer.inlineCallbacks
    def test_the_home_realm_forwards_for_members_of_any_realm(self):
        forwarded = self.from_peer(Address("cy", "3"), Address("club", "2"), GROUP)
        delivery = yield self.realm.receive("2", forwarded)
        self.assertEqual(delivery.queued_for, frozenset())
        not_home = self.from_peer(Address("cy", "3"), Address("club", "3"), GROUP, id="b" * 32)
        yield self.assertFailure(self.realm.receive("2", not_home), errors.Forbidden)

    @defer.inlineCallbacks
    def test_the_home_realm_cannot_forward_a_post_by_a_user_of_this_realm(self):
        forged = self.from_peer(Address("heru", "1"), Address("club", "2"), GROUP)
        yield self.assertFailure(self.realm.receive("2", forged), errors.Forbidden)

    @defer.inlineCallbacks
    def test_every_value_from_a_peer_is_checked(self):
        good = self.from_peer(Address("bob", "2"), Address("heru", "1"))
        bad = [
            good._replace(sender=Address("bob@1", "2")),
            good._replace(recipient=Address("he ru", "1")),
            good._replace(id="x" * 65),
            good._replace(id="no/slash"),
            good._replace(timestamp="yesterday"),
            good._replace(timestamp=None),
            good._replace(text=None),
            good._replace(text="x" * 70_000),
            good._replace(file=FileRef("a.txt", "f" * 32, 2**63)),
            good._replace(file=FileRef("", "f" * 32, 1)),
        ]
        for message in bad:  # a refusal with a code, never internal
            yield self.assertFailure(
                self.realm.receive("2", message), errors.BadRequest, errors.InvalidName
            )
        self.assertEqual((yield self.realm.inbox("heru")).messages, ())
        yield self.realm.receive("2", good)


class SessionMemoryTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_sessions_in_memory_are_bounded_and_the_store_stays_the_truth(self):
        realm = make_realm(self)
        self.patch(realm.sessions, "MAX_KNOWN", 3)
        yield realm.register("alice", "pw")
        tokens = []
        for _ in range(5):
            tokens.append((yield realm.login("alice", "pw")))
        def known():
            return [realm.sessions.expires(t) is not None for t in tokens]

        self.assertEqual(known(), [False, False, True, True, True])
        # A forgotten session still works: the store has it.
        self.assertEqual((yield realm.sessions.user_of(tokens[0])), "alice")
        self.assertEqual(known(), [True, False, False, True, True])  # least recently used went
        self.assertEqual(realm.sessions.user_of(tokens[3]), "alice")  # used: now the latest
        self.assertEqual((yield realm.sessions.user_of(tokens[1])), "alice")
        self.assertEqual(known(), [True, True, False, True, False])
