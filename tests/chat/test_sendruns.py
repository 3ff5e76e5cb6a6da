"""
The private messages of one read are stored as a run (chat.protocol's
_SendRun): one store operation and one reply slot for them all, each
message still its own reply, in request order, and its own refusal.
"""

import sqlite3

from twisted.trial import unittest

from multirealm.chat import protocol as chat_protocol
from multirealm.storage.queries import messages as message_queries
from tests.chat.test_protocol import codes
from tests.helpers import Client, make_realm


class SendRunTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.alice = Client(self.realm)
        self.token = self.alice.login("alice")
        self.heru = Client(self.realm)
        self.heru.login("heru")
        self.runs = []  # the messages of each run the store was given
        real = self.realm.send_run

        def send_run(messages, then):
            self.runs.append([m.text for m in messages])
            real(messages, then)

        self.patch(self.realm, "send_run", send_run)

    def heru_has(self):
        return [m["msg"] for m in self.heru.ask("inbox -")["messages"]]

    def test_the_sends_of_one_read_are_one_operation_each_answered_in_order(self):
        self.alice.send(*(f"send - heru m{i}" for i in range(5)))
        replies = self.alice.replies()
        self.assertEqual(codes(replies), ["OK"] * 5)
        ids = [r["id"] for r in replies]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(self.runs, [[f"m{i}" for i in range(5)]])
        self.assertEqual(self.heru_has(), [f"m{i}" for i in range(5)])
        self.assertEqual(self.realm.metrics.requests["send", "OK"].count, 5)

    def test_a_refused_message_is_its_own_error_and_its_neighbours_are_stored(self):
        self.alice.send("send - heru a", "send - nobody b", "send - heru c")
        self.assertEqual(codes(self.alice.replies()), ["OK", "no_such_user", "OK"])
        self.assertEqual(self.runs, [["a", "b", "c"]])
        self.assertEqual(self.heru_has(), ["a", "c"])
        self.assertEqual(self.realm.metrics.requests["send", "no_such_user"].count, 1)

    def test_a_reply_between_sends_keeps_its_place(self):
        # A reply queued while a run is open (a send refused by its
        # handler, a line that is not UTF-8, a line too long) ends the run:
        # the sends after it are in a run of their own, after it (review).
        long = b"x" * (self.alice.protocol.MAX_LENGTH + 10)
        for between, code in [
            (b"send - bad/name b", "invalid_name"), (b"\xff\xfe", "bad_encoding"),
            (long, "line_too_long"),
        ]:
            self.alice.raw(b"send - heru a\n" + between + b"\nsend - heru c\nsend - heru d\n")
            self.assertEqual(codes(self.alice.replies()), ["OK", code, "OK", "OK"])
        self.assertEqual(self.runs, [["a"], ["c", "d"]] * 3)

    def test_a_request_after_the_sends_sees_them(self):
        # The run is stored before the next request that is not a send is
        # handled, not at the end of the read: alice's own history has them.
        self.alice.send("send - heru a", "send - heru b", "inbox -", "send - heru c")
        inbox = self.alice.replies()[2]
        self.assertEqual([m["msg"] for m in inbox["messages"]], ["a", "b"])
        self.assertEqual(self.runs, [["a", "b"]])  # "c", the last line, alone

    def test_a_run_is_bounded_in_messages_and_in_text(self):
        self.alice.send(*(f"send - heru {i}" for i in range(chat_protocol.RUN_MOST + 1)))
        self.assertEqual([len(run) for run in self.runs], [chat_protocol.RUN_MOST, 1])
        long = "x" * (chat_protocol.RUN_TEXT // 2)
        self.alice.send(f"send - heru {long}", f"send - heru {long}", f"send - heru {long}")
        self.assertEqual([len(run) for run in self.runs[2:]], [2, 1])
        longer = "x" * (chat_protocol.RUN_TEXT + 1)  # a run of its own, but still a run
        self.alice.send(f"send - heru {longer}", f"send - heru {longer}", "send - heru y")
        self.assertEqual([len(run) for run in self.runs[4:]], [1, 1, 1])
        self.assertEqual(codes(self.alice.replies()), ["OK"] * (chat_protocol.RUN_MOST + 7))

    def test_a_bug_in_one_message_is_its_own_internal_reply(self):
        # docs/protocol.md: a bug in one request is that request's own
        # internal reply; the others are stored and answered (review).
        real = message_queries._gather  # what every message's path calls, run or not

        def buggy(db, cache, origin, message, *route):
            if message.text == "b":
                raise ValueError("a bug in one message")
            return real(db, cache, origin, message, *route)

        self.patch(message_queries, "_gather", buggy)
        self.alice.send("send - heru a", "send - heru b", "send - heru c")
        self.assertEqual(codes(self.alice.replies()), ["OK", "internal", "OK"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.heru_has(), ["a", "c"])

    def test_a_full_disk_met_by_one_message_alone_is_storage_full(self):
        # A bug isolates the run; in the isolated pass the disk is full for
        # the messages after it: each of those is storage_full ("try
        # later"), not a bug of its own (the receive runs' review).
        real = message_queries._gather

        def failing(db, cache, origin, message, *route):
            if message.text == "a":
                raise ValueError("a bug in one message")
            if message.text == "b":
                raise sqlite3.OperationalError("database or disk is full")
            return real(db, cache, origin, message, *route)

        self.patch(message_queries, "_gather", failing)
        self.alice.send("send - heru a", "send - heru b", "send - heru c")
        self.assertEqual(codes(self.alice.replies()), ["internal", "storage_full", "OK"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.heru_has(), ["c"])

    def test_a_run_the_store_cannot_take_answers_each_message(self):
        self.realm._store.stop()  # what a realm shutting down answers
        self.alice.send("send - heru a", "send - heru b", "ping")
        self.assertEqual(codes(self.alice.replies()), ["unavailable", "unavailable", "OK"])

    def test_a_send_whose_session_is_looked_up_comes_after_the_run(self):
        # The second session is not known to the connection's realm cache:
        # its message is stored when the lookup fires (at once, on this
        # inline store), and the run's messages must be stored first.
        other = Client(self.realm).ask("auth alice pw")["tokenid"]
        self.realm.sessions._known.pop(other)
        self.alice.send("send - heru a", f"send {other} heru b", "send - heru c")
        self.assertEqual(codes(self.alice.replies()), ["OK"] * 3)
        self.assertEqual(self.heru_has(), ["a", "b", "c"])

    def test_a_lone_line_is_not_a_run(self):
        # A read of one line (the closed loop's) takes the plain path: a
        # run of one would cost more than it saves.
        self.alice.send("send - heru a")
        self.alice.send("send - heru b", "send - heru c")
        self.assertEqual(codes(self.alice.replies()), ["OK"] * 3)
        self.assertEqual(self.runs, [["b", "c"]])
        self.assertEqual(self.heru_has(), ["a", "b", "c"])

    def test_a_line_handled_outside_a_read_is_stored_at_once(self):
        # lineReceived called directly (not from dataReceived): nothing
        # ends a read that would store a run, so it is stored now.
        self.alice.protocol.lineReceived(b"send - heru a")
        self.assertEqual(codes(self.alice.replies()), ["OK"])
        self.assertEqual(self.heru_has(), ["a"])
