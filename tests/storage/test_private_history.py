"""
One private conversation read backwards (storage/queries/private_history.py):
only the two parties' messages, only what the reader's own history holds,
by the parties' index.
"""

import sqlite3

from twisted.internet import defer

from multirealm import errors
from multirealm.names import Address
from multirealm.storage.queries import private_history
from tests.storage.base import StoreTestCase, message


class PrivateHistoryTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_two_users_one_name_in_two_cases_read_apart(self):
        # A first-release database may hold 'Alice' and 'alice': two people.
        store = self.open(start=False)
        store.start()
        for name in ("alice", "heru"):
            yield store.create_user(name, "h", "t")
        yield store.stop()
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT INTO users VALUES ('Alice', 'h', 't')")
        store = self.open()
        yield store.add_private_message(message(1, "Alice", "heru"))
        yield store.add_private_message(message(2, "alice", "heru"))
        yield store.add_private_message(message(3, "heru", "Alice"))

        def texts(user, peer):
            d = store.private_history(user, Address(peer, "1"), None, 10)
            return d.addCallback(lambda page: [m.text for m in page.messages])

        self.assertEqual((yield texts("alice", "heru")), ["text 2"])
        self.assertEqual((yield texts("Alice", "heru")), ["text 1", "text 3"])
        self.assertEqual((yield texts("heru", "alice")), ["text 2"])
        self.assertEqual((yield texts("heru", "Alice")), ["text 1", "text 3"])
        yield self.assertFailure(
            store.private_history("alice", Address("heru", "1"), "ID0001", 10), errors.BadRequest
        )

    def test_each_direction_is_read_by_the_index_probing_the_timeline(self):
        store = self.open()
        db = sqlite3.connect(store.path)
        self.addCleanup(db.close)
        plan = [row[3] for row in db.execute(
            "EXPLAIN QUERY PLAN " + private_history._DIRECTION, (1, "a@1", "b@1", 5)
        )]
        self.assertEqual(plan, [
            "SEARCH m USING INDEX messages_by_parties (sender=? AND recipient=? AND seq<?)",
            "SEARCH t USING PRIMARY KEY (mailbox=? AND seq=?)",
        ])
