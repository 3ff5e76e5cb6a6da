"""
One private conversation read backwards (storage/queries/private_history.py):
only the two parties' messages, only what the reader's own history holds,
by the parties' index.
"""

import sqlite3

import attrs
from twisted.internet import defer

from multirealm import errors
from multirealm.model import FAILURE, Failed, Message
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


class PagingTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_paging_back_gives_each_message_once_in_order(self):
        # Both directions, another realm's user in two cases, failures and
        # another conversation interleaved; pages cut by count and by bytes.
        store = self.open()
        yield self.populate(store)
        sent, failed = [], []
        for n in range(60):
            text = "x" * (n * 37 % 400)
            if n % 5 == 0:
                mine = attrs.evolve(message(n, "alice", "bob", realm="2"), text=text)
                yield store.add_private_message(mine)
                sent.append(mine.id)
            elif n % 5 == 1:
                yield store.receive_message("2", attrs.evolve(
                    message(n, "BOB" if n % 2 else "bob", "alice", sender_realm="2"), text=text,
                ))
                sent.append(f"ID{n:04d}")
            elif n % 5 in (2, 4):
                yield store.add_private_message(message(n, "heru", "alice"))
            else:
                (seq, out), = (yield store.outbox_batch("2", 0, 1))[0]
                failure = Message(f"F{n:04d}", FAILURE, Address("", "2"), Address("alice", "1"),
                                  "no", out.timestamp, failed=Failed(out.id, "no_such_user"))
                yield store.record_failure("2", seq, failure)
                failed.append(failure.id)

        def read_back(peer, limit, max_bytes):
            ids, before = [], None
            while True:
                page = yield store.private_history("alice", peer, before, limit, max_bytes)
                ids[:0] = [m.id for m in page.messages]
                if not page.more:
                    return ids
                before = page.messages[0].id

        for limit, max_bytes in [(1, 2**62), (4, 2**62), (7, 2000), (50, 1500)]:
            got = yield defer.inlineCallbacks(read_back)(Address("Bob", "2"), limit, max_bytes)
            self.assertEqual(got, sent, (limit, max_bytes))
            got = yield defer.inlineCallbacks(read_back)(Address("", "2"), limit, max_bytes)
            self.assertEqual(got, failed, (limit, max_bytes))
