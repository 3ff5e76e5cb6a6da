"""
Accounts on each engine: the users announced to a peer (a cursor on the
order they registered), the users a peer announced (counted against its
quota), passwd ending the other sessions, an operator's lock.
"""

from twisted.internet import defer

from multirealm import errors
from tests.storage.base import StoreTestCase


class AnnouncedUsersTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_a_peer_is_announced_each_user_once_in_order(self):
        store = self.open()
        for name in ("cy", "alice", "bob"):
            yield store.create_user(name, "h", "t")
        first = yield store.users_to_announce("2", 10)
        self.assertEqual([name for _, name in first], ["cy", "alice", "bob"])
        yield store.users_announced("2", first[1][0])
        yield store.users_announced("2", first[0][0])  # a late answer moves nothing back
        self.assertEqual((yield store.users_to_announce("2", 10)), first[2:])
        self.assertEqual(len((yield store.users_to_announce("3", 10))), 3)


class RemoteUsersTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_a_peers_users_are_stored_once_and_counted_against_its_quota(self):
        store = self.open()
        yield store.receive_users("2", [f"u{i}" for i in range(6)], most=8)
        yield store.receive_users("2", ["u0", "u1", "u6"], most=8)
        self.assertEqual((yield store.list_remote_users("2")), [f"u{i}" for i in range(7)])
        # Seven rows are counted, not nine: one more fits, two do not.
        yield self.assertFailure(store.receive_users("2", ["x", "y"], most=8),
                                 errors.QuotaExceeded)
        yield store.receive_users("2", ["x"], most=8)


class SessionTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_passwd_ends_every_other_session_and_a_lock_ends_all(self):
        store = self.open()
        yield store.create_user("alice", "old", "t")
        for token in ("one", "two", "three"):
            yield store.create_session(token, "alice", 2e9)
        yield store.change_password("alice", "new", "two")
        self.assertIsNone((yield store.session_user("one", 1e9)))
        self.assertEqual((yield store.session_user("two", 1e9)), ("alice", 2e9))
        self.assertEqual((yield store.set_locked("alice", "2026-01-01")), 1)
        self.assertEqual((yield store.set_locked("alice", "2026-01-02")), 0)
        users = yield store.operator_users(1e9, "", 10)
        self.assertEqual([tuple(row) for row in users], [("alice", 1, 0, "t")])
        yield self.assertFailure(store.create_session("four", "alice", 2e9), errors.Locked)
