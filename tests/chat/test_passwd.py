"""
C{passwd} (docs/protocol.md, "Accounts"): the old password is checked and
throttled as C{auth} checks it, the new one holds from the reply on, and
every other session of the user ends at once: its token on every
connection, and the events of the connections subscribed with it.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from multirealm import errors
from multirealm.chat.protocol import ChatFactory
from multirealm.core.logins import LoginGuard
from multirealm.storage.queries import accounts
from tests.helpers import Client, InlineHasher, make_realm, make_store


def codes(replies):
    return [r.get("code", r.get("status")) for r in replies]


class SlowHasher(InlineHasher):
    """The real hashing, answered one second (of C{clock}) later, as a thread pool would."""

    def __init__(self, clock):
        self.clock = clock

    def hash(self, password, peer=None, suspect=False):
        return task.deferLater(self.clock, 1, lambda: super(SlowHasher, self).hash(password))

    def verify(self, password, stored, peer=None, suspect=False):
        return task.deferLater(
            self.clock, 1, lambda: super(SlowHasher, self).verify(password, stored)
        )


class PasswdTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.factory = ChatFactory(self.realm, self.realm.limits, self.realm.clock)
        self.alice = self.client()
        self.token = self.alice.login("alice", "old")
        self.heru = self.client()
        self.heru.login("heru")

    def client(self):
        return Client(self.realm, factory=self.factory)

    def test_the_new_password_works_and_the_old_one_no_longer(self):
        self.assertEqual(
            self.alice.ask("passwd - old new"),
            {"status": "OK", "message": "password changed; your other sessions have ended"},
        )
        self.assertEqual(self.alice.ask("auth alice old")["code"], "bad_credentials")
        self.assertEqual(self.alice.ask("auth alice new")["status"], "OK")

    def test_a_wrong_old_password_changes_nothing_and_the_connection_goes_on(self):
        other = self.client()
        other.ask("auth alice old")
        self.assertEqual(
            self.alice.ask("passwd - wrong new"),
            {"status": "ERROR", "code": "bad_credentials", "message": "wrong password"},
        )
        self.assertEqual(self.alice.ask("ping")["message"], "pong")
        self.assertEqual(other.ask("inbox -")["status"], "OK")  # no session ended
        self.assertEqual(self.client().ask("auth alice old")["status"], "OK")

    def test_missing_words_and_a_bad_session(self):
        self.assertEqual(self.alice.ask("passwd - old")["code"], "bad_request")
        self.assertEqual(self.alice.ask("passwd nosuchtoken old new")["code"], "invalid_session")
        self.assertEqual(self.client().ask("auth alice old")["status"], "OK")

    def test_wrong_old_passwords_are_failed_logins_throttled_as_auths(self):
        # The second failure of the address is answered late, as auth's is.
        self.alice.ask("passwd - wrong1 new")
        self.alice.send("passwd - wrong2 new")
        self.assertEqual(self.alice.replies(), [])
        self.realm.clock.advance(LoginGuard.MAX_DELAY)
        self.assertEqual(codes(self.alice.replies()), ["bad_credentials"])
        for n in range(3, LoginGuard.PER_PAIR + 1):
            self.alice.send(f"passwd - wrong{n} new")
            self.realm.clock.advance(LoginGuard.MAX_DELAY)
        self.assertEqual(codes(self.alice.replies()), ["bad_credentials"] * (LoginGuard.PER_PAIR - 2))
        # Past them, the account is refused to this address: passwd and auth.
        self.assertEqual(self.alice.ask("passwd - old new")["code"], "rate_limited")
        self.assertEqual(self.alice.ask("auth alice old")["code"], "rate_limited")
        # Until the failures are forgotten.
        self.realm.clock.advance(LoginGuard.WINDOW + 1)
        later = self.client()
        later.ask("auth alice old")
        self.assertEqual(later.ask("passwd - old new")["status"], "OK")

    def test_the_other_sessions_end_at_once_and_this_one_goes_on(self):
        phone = self.client()
        phone_token = phone.ask("auth alice old")["tokenid"]
        laptop = self.client()
        laptop.ask("auth alice old")
        heru_token = self.heru.ask("auth heru pw")["tokenid"]
        self.alice.ask("passwd - old new")
        for connection in (phone, laptop):
            self.assertEqual(connection.ask("inbox -")["code"], "invalid_session")
        self.assertEqual(self.heru.ask(f"inbox {phone_token}")["code"], "invalid_session")
        self.assertEqual(self.alice.ask(f"send {self.token} heru still here")["status"], "OK")
        self.assertEqual(self.alice.ask("inbox -")["status"], "OK")
        self.assertEqual(self.heru.ask(f"inbox {heru_token}")["status"], "OK")  # not his

    def test_a_connection_subscribed_with_another_session_gets_no_more_events(self):
        phone = self.client()
        phone.ask("auth alice old")
        phone.ask("subscribe -")
        self.alice.ask("subscribe -")
        self.alice.ask("passwd - old new")
        self.heru.ask("send - alice after the change")
        self.assertEqual(phone.replies(), [])
        (event,) = self.alice.replies()  # the session that changed it still gets them
        self.assertEqual(event["message"]["msg"], "after the change")

    def test_requests_pipelined_after_passwd_wait_for_it(self):
        realm = make_realm(self)
        realm._hasher = SlowHasher(realm.clock)
        client = Client(realm)
        client.send("register alice old", "auth alice old")
        realm.clock.advance(1)  # hashed
        realm.clock.advance(1)  # verified
        client.replies()
        client.send("passwd - old new", "auth alice new")
        realm.clock.advance(1)  # the old password verified
        self.assertEqual(client.replies(), [])
        realm.clock.advance(1)  # the new one hashed: passwd answered, and auth read
        self.assertEqual(codes(client.replies()), ["OK"])
        realm.clock.advance(1)  # auth's verified, with the new password
        self.assertEqual(codes(client.replies()), ["OK"])


class PasswdStoreTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_change_is_stored_and_ends_sessions_this_core_never_saw(self):
        store = make_store(self, inline=False)
        first = make_realm(self, store=store)
        yield first.register("alice", "old")
        token = yield first.login("alice", "old")
        unseen = yield first.login("alice", "old")
        core = make_realm(self, store=store)  # a restart: knows no session yet
        yield core.change_password("alice", token, "old", "new")
        with self.assertRaises(errors.InvalidSession):
            yield defer.maybeDeferred(core.sessions.user_of, unseen)
        self.assertEqual((yield core.sessions.user_of(token)), "alice")
        again = make_realm(self, store=store)
        with self.assertRaises(errors.BadCredentials):
            yield again.login("alice", "old")
        yield again.login("alice", "new")

    @defer.inlineCallbacks
    def test_a_session_ended_meanwhile_changes_nothing(self):
        realm = make_realm(self)
        yield realm.register("alice", "old")
        token = yield realm.login("alice", "old")
        other = yield realm.login("alice", "old")
        yield realm.logout(token)
        with self.assertRaises(errors.InvalidSession):
            yield realm.change_password("alice", token, "old", "new")
        self.assertEqual((yield realm.sessions.user_of(other)), "alice")
        yield realm.login("alice", "old")

    @defer.inlineCallbacks
    def test_a_lookup_queued_before_the_end_does_not_bring_a_session_back(self):
        store = make_store(self, inline=False)
        first = make_realm(self, store=store)
        yield first.register("alice", "old")
        token = yield first.login("alice", "old")
        other = yield first.login("alice", "old")
        core = make_realm(self, store=store)  # knows no session yet
        lookup = core.sessions.user_of(other)  # a database lookup, queued first
        end = core.sessions.end_all_of(
            "alice", token, lambda keep: store.submit(accounts.end_sessions, "alice", keep)
        )
        user, _ = yield defer.gatherResults([lookup, defer.ensureDeferred(end)])
        self.assertEqual(user, "alice")  # that lookup still saw the session
        with self.assertRaises(errors.InvalidSession):
            yield defer.maybeDeferred(core.sessions.user_of, other)
        self.assertEqual((yield core.sessions.user_of(token)), "alice")

    @defer.inlineCallbacks
    def test_a_listener_that_fails_is_logged_and_the_change_stands(self):
        realm = make_realm(self)
        heard = []
        realm.sessions.on_user_sessions_ended(lambda user, keep: 1 / 0)
        realm.sessions.on_user_sessions_ended(lambda user, keep: heard.append((user, keep)))
        yield realm.register("alice", "old")
        token = yield realm.login("alice", "old")
        yield realm.change_password("alice", token, "old", "new")
        self.assertEqual(heard, [("alice", token)])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        yield realm.login("alice", "new")


class LoginRacingPasswdTests(unittest.TestCase):
    def test_a_login_with_the_old_password_racing_passwd_gets_no_session(self):
        # The old password leaked: the victim changes it while someone logs
        # in with it.  The login checked the old hash before passwd
        # committed; its session must not outlive passwd all the same.
        realm = make_realm(self)
        realm._hasher = SlowHasher(realm.clock)
        realm.register("alice", "old")
        realm.clock.advance(1)
        d = realm.login("alice", "old")
        realm.clock.advance(1)
        victim = self.successResultOf(d)
        change = realm.change_password("alice", victim, "old", "new")
        realm.clock.advance(1.5)  # passwd's check done, its new hash being made
        racing = realm.login("alice", "old")  # reads the hash before passwd commits
        for _ in range(20):
            realm.clock.advance(0.25)
        self.successResultOf(change)
        self.failureResultOf(racing, errors.BadCredentials)
        fresh = realm.login("alice", "new")
        realm.clock.advance(2)
        self.assertEqual(realm.sessions.user_of(self.successResultOf(fresh)), "alice")
