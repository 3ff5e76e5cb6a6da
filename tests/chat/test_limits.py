"""
Memory bounded by bytes: history and list pages are cut, a connection is
not read while its replies wait, the realm as a whole has a budget.
"""

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from multirealm.config import Limits
from tests.helpers import BoundedTransport, Client, make_realm, make_store

NOISE = "\x01" * 2000  # 2,000 characters that JSON writes as 12,000 bytes


def codes(replies):
    return [r.get("code", r["status"]) for r in replies]


class HistoryPagesTests(unittest.TestCase):
    def setUp(self):
        limits = attrs.evolve(Limits(), history_reply_bytes=40_000)
        self.realm = make_realm(self, limits=limits)
        self.alice = Client(self.realm)
        self.alice.login("alice")
        self.alice.send(*[f"send - alice {n} {NOISE}" for n in range(10)])
        sent = self.alice.replies()
        self.assertEqual(codes(sent), ["OK"] * 10)
        self.ids = [reply["id"] for reply in sent]

    def test_a_page_is_cut_by_bytes_and_pages_on(self):
        newest = self.alice.ask("inbox -")
        self.assertEqual([m["msg"][0] for m in newest["messages"]], ["7", "8", "9"])
        self.assertTrue(newest["more"])  # 3 x 12 KB fit in 40 KB, older ones exist
        seen, after = [], self.ids[0]
        for _ in range(10):
            page = self.alice.ask(f"inbox - {after}")
            seen += [m["msg"][0] for m in page["messages"]]
            after = page["messages"][-1]["id"]
            if not page["more"]:
                break
        self.assertEqual(seen, [str(n) for n in range(1, 10)])
        replies = self.alice.transport.value().split(b"\r\n\r\n")
        self.assertLess(max(len(r) for r in replies), 40_000)

    def test_one_message_longer_than_the_budget_is_still_given(self):
        limits = attrs.evolve(Limits(), history_reply_bytes=5_000)
        realm = make_realm(self, limits=limits)
        client = Client(realm)
        client.login("bob")
        client.ask(f"send - bob {NOISE}")
        page = client.ask("inbox -")
        self.assertEqual(len(page["messages"]), 1)
        self.assertFalse(page["more"])


class ListPagesTests(unittest.TestCase):
    def test_listusers_and_listgroups_page(self):
        realm = make_realm(self, limits=attrs.evolve(Limits(), list_limit=2))
        client = Client(realm)
        for name in ("dan", "bea", "cy", "al"):
            token = client.login(name)
        first = client.ask("listusers")
        self.assertEqual((first["users"], first["more"]), (["al", "bea"], True))
        second = client.ask("listusers 1 bea")
        self.assertEqual((second["users"], second["more"]), (["cy", "dan"], False))
        for group in ("g1", "g2", "g3"):
            client.ask(f"creategroup {token} {group}")
        self.assertEqual(client.ask("listgroups")["groups"], ["g1", "g2"])
        self.assertEqual(client.ask("listgroups 1 g2")["groups"], ["g3"])
        self.assertEqual(client.ask("listusers 9")["code"], "no_such_realm")
        # Realm 2 announced nobody yet; its groups are not announced at all.
        self.assertEqual(client.ask("listusers 2")["users"], [])
        self.assertEqual(client.ask("listgroups 2")["code"], "bad_request")


class ListRealmsTests(unittest.TestCase):
    def test_the_outbox_is_counted_at_most_once_a_second(self):
        store = make_store(self)
        realm = make_realm(self, store=store)
        counted = []
        real = store.pending_counts

        def counting():
            counted.append(realm.clock.seconds())
            return real()

        store.pending_counts = counting
        client = Client(realm)
        client.send(*["listrealms"] * 500)
        self.assertEqual(len(client.replies()), 500)
        self.assertEqual(len(counted), 1)
        realm.clock.advance(1)
        client.ask("listrealms")
        self.assertEqual(len(counted), 2)


class ReadingStopsByBytesTests(unittest.TestCase):
    """
    Clients that pipeline history requests, answered later (as a busy
    database does), and do not read their replies.
    """

    def setUp(self):
        self.limits = attrs.evolve(
            Limits(), history_reply_bytes=20_000, reply_buffer_bytes=100_000,
            realm_reply_buffer_bytes=250_000,
        )
        self.realm = make_realm(self, limits=self.limits)
        writer = Client(self.realm)
        writer.login("alice")
        writer.send(*[f"send - alice {NOISE}" for n in range(5)])
        self.factory = writer.factory
        self.waiting = []  # (deferred, answer) of inbox requests not answered yet
        real_inbox = self.realm.inbox

        def later(user, after_id=None):
            d = defer.Deferred()
            self.waiting.append((d, real_inbox(user, after_id)))
            return d

        self.realm.inbox = later

    def answer_all(self):
        waiting, self.waiting = self.waiting, []
        for d, answer in waiting:
            answer.chainDeferred(d)
        return len(waiting)

    def non_reader(self, requests):
        """A client that sends C{requests} inbox requests and reads nothing."""
        client = Client(self.realm, transport=BoundedTransport(), factory=self.factory)
        client.transport.size = 1000  # room for the auth reply, not for a history page
        client.send("auth alice pw", *["inbox -"] * requests)
        return client

    def test_a_non_reader_is_read_only_up_to_its_reply_budget(self):
        client = self.non_reader(200)
        # 100 KB of budget, 20 KB per inbox: reading stops once more than
        # 100 KB is counted, at the sixth.
        self.assertEqual(len(self.waiting), 6)
        self.assertEqual(client.transport.producerState, "paused")
        answered = self.answer_all()
        self.assertLessEqual(client.protocol._outbound.pending_bytes, 120_000)
        for _ in range(1000):  # the client reads at last: all 200 are answered
            answered += self.answer_all()
            if not client.transport.drain() and not self.waiting:
                break
        self.assertEqual(answered, 200)
        self.assertEqual(client.transport.out.count(b"\r\n\r\n"), 201)

    def test_the_realm_budget_holds_every_connection_with_replies_waiting(self):
        clients = [self.non_reader(50) for _ in range(4)]
        budget = self.factory.reply_budget
        # Each connection alone could take six (100 KB); the realm's 250 KB
        # stops them all once 13 are counted (260 KB): the last connection's
        # first history request waits for room too.
        self.assertTrue(budget.exhausted)
        self.assertEqual(len(self.waiting), 13)
        self.assertLessEqual(budget.used, 250_000 + 20_000)
        # A bystander with nothing waiting is still answered.
        bystander = Client(self.realm, factory=self.factory)
        self.assertEqual(bystander.ask("listrealms")["status"], "OK")
        # Answers are shorter than the most they could be (12 KB, not
        # 20 KB): the realm has room again and the held ones read on.
        self.answer_all()
        self.assertGreater(len(self.waiting), 0)
        self.assertLessEqual(budget.used, 250_000 + 20_000)
        for _ in range(10_000):  # everyone reads at last: all is answered
            for client in clients:
                client.transport.drain()
            if not self.answer_all() and not any(c.protocol._outbound.waiting for c in clients):
                break
        for client in clients:
            client.transport.drain()
        self.assertEqual([c.transport.out.count(b"\r\n\r\n") for c in clients], [51] * 4)
        self.assertEqual(budget.used, 0)
