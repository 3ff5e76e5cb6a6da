"""
ChatProtocol over a StringTransport: framing, commands, every error code a
single realm can give, reply order, flow control.
"""

import json

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from multirealm import wire
from multirealm.chat import protocol as chat_protocol
from multirealm.commands import COMMANDS
from multirealm.config import Limits
from multirealm.core.logins import LoginGuard
from tests.helpers import Client, make_realm, make_store, parse_replies, wait_until


def codes(replies):
    return [r.get("code", r["status"]) for r in replies]


class ChatTestCase(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.alice = Client(self.realm)
        self.token = self.alice.login("alice", "secret")
        self.heru = Client(self.realm)
        self.heru_token = self.heru.login("heru", "progjar")

    def error(self, client, line):
        reply = client.ask(line)
        self.assertEqual(reply["status"], "ERROR", reply)
        self.assertTrue(reply["message"])
        return reply["code"]


class AccountTests(ChatTestCase):
    def test_register_then_auth_gives_a_long_token(self):
        client = Client(self.realm)
        self.assertEqual(client.ask("register bob pw")["status"], "OK")
        token = client.ask("auth bob pw")["tokenid"]
        self.assertGreaterEqual(len(token), 22)  # >= 128 bits in base64

    def test_tokens_differ_between_logins(self):
        self.assertNotEqual(self.alice.login("carol"), self.alice.ask("auth carol pw")["tokenid"])

    def test_register_taken_name(self):
        self.assertEqual(self.error(self.alice, "register alice other"), "user_exists")

    def test_register_bad_names(self):
        for name in ["a@b", "x" * 33, "é", "a/b"]:
            self.assertEqual(self.error(self.alice, f"register {name} pw"), "invalid_name")

    def test_wrong_password_and_unknown_user_look_the_same(self):
        wrong = self.alice.ask("auth alice nope")
        self.alice.send("auth nobody nope")
        self.realm.clock.advance(LoginGuard.MAX_DELAY)  # a second failure is answered late
        (unknown,) = self.alice.replies()
        self.assertEqual(wrong["code"], "bad_credentials")
        self.assertEqual(wrong, unknown)

    def test_listusers(self):
        self.assertEqual(self.alice.ask("listusers")["users"], ["alice", "heru"])

    def test_logout_ends_the_session_on_every_connection(self):
        self.assertEqual(self.alice.ask(f"logout {self.token}")["status"], "OK")
        self.assertEqual(self.error(self.heru, f"inbox {self.token}"), "invalid_session")
        self.assertEqual(self.error(self.alice, "inbox -"), "invalid_session")

    def test_session_shorthand(self):
        self.assertEqual(self.alice.ask("inbox -")["status"], "OK")
        self.assertEqual(self.error(Client(self.realm), "inbox -"), "invalid_session")

    def test_session_expires(self):
        clock = self.realm.clock
        lifetime = self.realm.limits.session_days * 86400
        fresh = Client(self.realm)  # a connection made just now: not idle
        for _ in range(int(lifetime // 300)):
            clock.advance(300)
            fresh.ask("ping")  # keeps it open across the idle timeout
        clock.advance(lifetime % 300 - 1)
        self.assertEqual(fresh.ask(f"inbox {self.token}")["status"], "OK")
        clock.advance(2)
        self.assertEqual(self.error(fresh, f"inbox {self.token}"), "invalid_session")

    def test_unknown_session(self):
        self.assertEqual(self.error(self.alice, "inbox nosuchtoken"), "invalid_session")

    def test_help_lists_every_command(self):
        lines = self.alice.ask("help")["commands"]
        self.assertEqual(len(lines), len(COMMANDS))
        self.assertIn("send <sessionid> <to> <message>", " ".join(lines))

    def test_quit_replies_then_closes(self):
        self.alice.send("quit", "listusers")
        self.assertEqual(codes(self.alice.replies()), ["OK"])
        self.assertTrue(self.alice.transport.disconnecting)

    def test_a_line_too_long_after_quit_is_ignored_too(self):
        stored = defer.Deferred()
        real_send = self.alice.protocol.realm.send
        self.patch(self.alice.protocol.realm, "send",
                   lambda *a, then=None: stored.addCallback(lambda _: real_send(*a, then=then)))  # a slow commit
        self.alice.raw(b"send - heru hi\nquit\n" + b"x" * 70_000 + b"\n")
        stored.callback(None)
        self.assertEqual(codes(self.alice.replies()), ["OK", "OK"])
        self.assertTrue(self.alice.transport.disconnecting)


class MessageTests(ChatTestCase):
    def test_private_message_in_both_inboxes(self):
        sent = self.alice.ask(f"send {self.token} heru Hello,  how are  you?")
        self.assertEqual(sent["status"], "OK")
        self.assertRegex(sent["id"], "^[0-9a-f]{32}$")
        for client in [self.alice, self.heru]:
            (message,) = client.ask("inbox -")["messages"]
            self.assertEqual(
                message,
                {
                    "id": sent["id"],
                    "msg_from": "alice",
                    "msg_to": "heru",
                    "msg": "Hello,  how are  you?",
                    "timestamp": sent["timestamp"],
                },
            )
        self.assertTrue(sent["timestamp"].endswith("+00:00"))

    def test_sent_reply_is_exactly_what_json_gives(self):
        self.alice.send("send - heru hi")
        raw = self.alice.transport.value()[self.alice._read :]
        reply = self.alice.replies()[0]
        self.assertEqual(raw, json.dumps(reply).encode("ascii") + b"\r\n\r\n")
        self.assertEqual(list(reply), ["status", "message", "id", "timestamp"])

    def test_inbox_holds_both_directions_oldest_first(self):
        self.alice.ask("send - heru one")
        self.heru.ask("send - alice two")
        texts = [m["msg"] for m in self.alice.ask("inbox -")["messages"]]
        self.assertEqual(texts, ["one", "two"])

    def test_inbox_is_private(self):
        carol = Client(self.realm)
        carol.login("carol")
        carol.ask("send - heru for heru only")
        self.assertEqual(self.alice.ask("inbox -")["messages"], [])
        self.assertEqual(len(self.heru.ask("inbox -")["messages"]), 1)

    def test_send_to_unknown_user(self):
        self.assertEqual(self.error(self.alice, "send - nobody hi"), "no_such_user")

    def test_send_to_own_realm_qualified(self):
        self.assertEqual(self.alice.ask("send - heru@1 hi")["status"], "OK")
        self.assertEqual(self.heru.ask("inbox -")["messages"][0]["msg_from"], "alice")

    def test_send_without_text(self):
        self.assertEqual(self.error(self.alice, "send - heru"), "bad_request")
        self.assertEqual(self.error(self.alice, "send - heru    "), "bad_request")

    def test_bad_session_is_reported_before_bad_arguments(self):
        self.assertEqual(self.error(self.alice, "send wrongtoken"), "invalid_session")
        self.assertEqual(self.error(self.alice, "send"), "invalid_session")
        self.assertEqual(self.error(self.alice, "creategroup wrong b@d!"), "invalid_session")

    def test_history_is_capped_and_pages_forward(self):
        realm = make_realm(self, limits=attrs.evolve(Limits(), history_limit=3))
        client = Client(realm)
        client.login("alice")
        ids = [client.ask(f"send - alice m{i}")["id"] for i in range(7)]
        newest = client.ask("inbox -")
        self.assertEqual([m["msg"] for m in newest["messages"]], ["m4", "m5", "m6"])
        self.assertTrue(newest["more"])
        page = client.ask(f"inbox - {ids[0]}")
        self.assertEqual([m["id"] for m in page["messages"]], ids[1:4])
        self.assertTrue(page["more"])
        last = client.ask(f"inbox - {ids[4]}")
        self.assertEqual([m["id"] for m in last["messages"]], ids[5:])
        self.assertFalse(last["more"])

    def test_inbox_after_unknown_id(self):
        self.assertEqual(self.error(self.alice, "inbox - NOSUCHID"), "bad_request")

    def test_inbox_with_extra_words(self):
        self.assertEqual(self.error(self.alice, "inbox - a b"), "bad_request")


class RemoteAddressTests(ChatTestCase):
    def test_message_to_a_linked_realm_is_queued(self):
        reply = self.alice.ask("send - heru@2 hello there")
        self.assertEqual(reply["status"], "OK")
        (realm,) = self.alice.ask("listrealms")["realms"]
        self.assertEqual(
            (realm["name"], realm["linked"], realm["pending"]), ("2", False, 1)
        )
        self.assertEqual(realm["oldest_pending_seconds"], 0)
        (message,) = self.alice.ask("inbox -")["messages"]
        self.assertEqual(message["msg_to"], "heru@2")

    def test_unknown_realm(self):
        self.assertEqual(self.error(self.alice, "send - heru@9 hi"), "no_such_realm")
        self.assertEqual(self.error(self.alice, "sendgroup - g@9 hi"), "no_such_realm")

    def test_sendrealm_bare_name_goes_to_the_only_peer(self):
        self.assertEqual(self.alice.ask("sendrealm - heru hi")["status"], "OK")
        self.assertEqual(self.alice.ask("inbox -")["messages"][0]["msg_to"], "heru@2")

    def test_sendrealm_bare_name_with_several_peers(self):
        realm = make_realm(self, peers=("2", "3"))
        client = Client(realm)
        client.login("alice")
        self.assertEqual(self.error(client, "sendrealm - heru hi"), "ambiguous_realm")
        self.assertEqual(self.error(client, "sendgrouprealm - g hi"), "ambiguous_realm")
        self.assertEqual(client.ask("sendrealm - heru@3 hi")["status"], "OK")

    def test_malformed_address(self):
        for to in ["heru@", "@2", "a@b@c", "he!ru"]:
            self.assertEqual(self.error(self.alice, f"send - {to} hi"), "invalid_name")

    def test_a_remote_group_is_served_only_to_the_members_its_home_announced(self):
        # Realm 2 never said alice is in team@2: nothing is stored or sent.
        self.assertEqual(self.error(self.alice, "sendgroup - team@2 hi"), "not_a_member")
        self.assertEqual(self.error(self.alice, "sendgrouprealm - team hi"), "not_a_member")
        self.assertEqual(self.alice.ask("listrealms")["realms"][0]["pending"], 0)
        self.assertEqual(self.error(self.alice, "groupinbox - team@2"), "not_a_member")
        self.assertEqual(self.error(self.alice, "leavegroup - team@2"), "not_a_member")


class GroupTests(ChatTestCase):
    def setUp(self):
        super().setUp()
        self.outsider = Client(self.realm)
        self.outsider.login("eve")
        self.assertEqual(self.alice.ask("creategroup - team heru")["status"], "OK")

    def test_members_post_and_read(self):
        sent = self.heru.ask("sendgroup - team hi team")
        (message,) = self.alice.ask("groupinbox - team")["messages"]
        self.assertEqual(message["id"], sent["id"])
        self.assertEqual((message["msg_from"], message["msg_to"]), ("heru", "team"))
        self.assertEqual(self.alice.ask("listgroups")["groups"], ["team"])

    def test_outsiders_can_neither_post_nor_read(self):
        self.assertEqual(self.error(self.outsider, "sendgroup - team hi"), "not_a_member")
        self.assertEqual(self.error(self.outsider, "groupinbox - team"), "not_a_member")

    def test_unknown_group(self):
        self.assertEqual(self.error(self.alice, "sendgroup - nope hi"), "no_such_group")
        self.assertEqual(self.error(self.alice, "groupinbox - nope"), "no_such_group")
        self.assertEqual(self.error(self.alice, "leavegroup - nope"), "no_such_group")

    def test_group_name_taken(self):
        self.assertEqual(self.error(self.heru, "creategroup - team"), "group_exists")

    def test_group_name_invalid(self):
        self.assertEqual(self.error(self.alice, "creategroup - t/m heru"), "invalid_name")

    def test_group_with_unknown_member_is_not_created(self):
        self.assertEqual(self.error(self.alice, "creategroup - g2 heru nobody"), "no_such_user")
        self.assertEqual(self.alice.ask("listgroups")["groups"], ["team"])

    def test_group_on_another_realm_cannot_be_created_here(self):
        self.assertEqual(self.error(self.alice, "creategroup - g@2"), "bad_request")
        self.assertEqual(self.error(self.alice, "creategroup - g@x"), "no_such_realm")

    def test_leaving(self):
        self.assertEqual(self.heru.ask("leavegroup - team")["status"], "OK")
        self.assertEqual(self.error(self.heru, "groupinbox - team"), "not_a_member")
        self.assertEqual(self.error(self.heru, "leavegroup - team"), "not_a_member")

    def test_group_history_pages(self):
        ids = [self.alice.ask(f"sendgroup - team m{i}")["id"] for i in range(3)]
        page = self.heru.ask(f"groupinbox - team {ids[0]}")
        self.assertEqual([m["id"] for m in page["messages"]], ids[1:])

    def test_group_with_remote_member_queues_for_its_realm(self):
        self.assertEqual(self.alice.ask("creategroup - mixed heru@2")["status"], "OK")
        # heru's realm is told heru was added, then every member: two frames.
        self.assertEqual(self.alice.ask("listrealms")["realms"][0]["pending"], 2)
        self.realm.clock.advance(2)  # the count is at most a second old
        self.alice.ask("sendgroup - mixed hi")
        self.assertEqual(self.alice.ask("listrealms")["realms"][0]["pending"], 3)
        self.realm.clock.advance(2)
        self.alice.ask("sendgroup - team local only")
        self.assertEqual(self.alice.ask("listrealms")["realms"][0]["pending"], 3)


class FramingTests(unittest.TestCase):
    def setUp(self):
        self.realm = make_realm(self)
        self.client = Client(self.realm)

    def test_bytes_split_at_every_position(self):
        session = (
            b"register alice pw\r\nregister heru pw\nauth alice pw \t\r\n\r\n"
            b"send - heru caf\xc3\xa9  time\r\ninbox -\r\n"
        )
        for step in [1, 2, 3, 7]:
            realm = make_realm(self)
            client = Client(realm)
            for i in range(0, len(session), step):
                client.raw(session[i : i + step])
            replies = client.replies()
            self.assertEqual(codes(replies), ["OK"] * 5)
            self.assertEqual(replies[4]["messages"][0]["msg"], "caf\u00e9  time")

    def test_replies_end_with_an_empty_line(self):
        self.client.send("listusers")
        self.assertTrue(self.client.transport.value().endswith(b"}\r\n\r\n"))

    def test_blank_lines_get_no_reply(self):
        self.client.raw(b"\r\n\n   \r\nlistusers\r\n")
        self.assertEqual(codes(self.client.replies()), ["OK"])

    def test_non_utf8_line_and_the_connection_goes_on(self):
        self.client.raw(b"send \xff\xfe x\r\nlistusers\r\n")
        self.assertEqual(codes(self.client.replies()), ["bad_encoding", "OK"])

    def test_line_too_long_in_one_chunk_and_the_connection_goes_on(self):
        limit = self.realm.limits.max_line_bytes
        self.client.raw(b"x" * (limit + 10) + b"\r\nlistusers\r\n")
        self.assertEqual(codes(self.client.replies()), ["line_too_long", "OK"])

    def test_line_too_long_across_chunks_answered_once(self):
        limit = self.realm.limits.max_line_bytes
        for _ in range(5):
            self.client.raw(b"y" * (limit // 2))
        self.assertEqual(codes(self.client.replies()), ["line_too_long"])
        self.client.raw(b"yyy\nlistusers\n")
        self.assertEqual(codes(self.client.replies()), ["OK"])
        self.assertFalse(self.client.transport.disconnecting)

    def test_line_at_the_limit_is_accepted(self):
        limit = self.realm.limits.max_line_bytes
        line = b"listusers" + b" " * (limit - 9)
        self.client.raw(line + b"\r\n" + line + b"\n")
        self.assertEqual(codes(self.client.replies()), ["OK", "OK"])

    def test_unknown_command(self):
        self.assertEqual(self.client.ask("frobnicate now")["code"], "unknown_command")

    def test_verbs_are_case_insensitive(self):
        self.assertEqual(self.client.ask("LISTUSERS")["status"], "OK")


class OrderTests(unittest.TestCase):
    """Replies keep request order when the store answers asynchronously."""

    @defer.inlineCallbacks
    def test_pipelined_replies_come_in_request_order(self):
        realm = make_realm(self, store=make_store(self, inline=False))
        client = Client(realm)
        lines = ["register alice pw", "register heru pw", "auth alice pw"]
        lines += [f"send - heru n{i}" for i in range(200)]
        lines += ["listusers", "frob", "inbox -", "send - nobody x", "help"]
        client.send(*lines)
        yield wait_until(lambda: client.transport.value().count(b"\r\n\r\n") >= len(lines))
        replies = client.replies()
        self.assertEqual(len(replies), len(lines))
        self.assertEqual(codes(replies[:203]), ["OK"] * 203)
        self.assertEqual(
            codes(replies[203:]), ["OK", "unknown_command", "OK", "no_such_user", "OK"]
        )
        inbox = replies[205]["messages"]
        self.assertEqual([m["msg"] for m in inbox], [f"n{i}" for i in range(200)])
        self.assertEqual([m["id"] for m in inbox], [r["id"] for r in replies[3:203]])

    def test_a_late_answer_holds_back_later_ones(self):
        realm = make_realm(self)
        client = Client(realm)
        gate = defer.Deferred()
        realm.list_users = lambda after, realm=None: gate
        client.send("listusers", "help", "listgroups")
        self.assertEqual(client.replies(), [])
        gate.callback((["zed"], False))
        replies = client.replies()
        self.assertEqual(replies[0]["users"], ["zed"])
        self.assertEqual(codes(replies), ["OK", "OK", "OK"])


class FlowControlTests(unittest.TestCase):
    def test_rate_limit_refuses_then_refills(self):
        limits = attrs.evolve(Limits(), rate_limit_burst=3, rate_limit_per_second=2.0)
        realm = make_realm(self, limits=limits)
        client = Client(realm)
        client.send(*["listusers"] * 5)
        self.assertEqual(codes(client.replies()), ["OK"] * 3 + ["rate_limited"] * 2)
        realm.clock.advance(1)
        client.send(*["listusers"] * 3)
        self.assertEqual(codes(client.replies()), ["OK", "OK", "rate_limited"])

    def test_default_limits_never_refuse_a_burst_of_hundreds(self):
        client = Client(make_realm(self))
        client.login("alice")
        client.send(*["send - alice x"] * 800)
        self.assertEqual(codes(client.replies()), ["OK"] * 800)

    def test_too_many_pending_replies_stop_reading_until_answered(self):
        realm = make_realm(self)
        client = Client(realm)
        gates = []

        def slow():
            gates.append(defer.Deferred())
            return gates[-1]

        realm.list_realms = slow
        pending = client.protocol.MAX_PENDING
        client.send(*["listrealms"] * (pending + 50))
        self.assertEqual(len(gates), pending)
        self.assertEqual(client.transport.producerState, "paused")
        for gate in gates[:]:
            gate.callback([])
        self.assertEqual(client.transport.producerState, "producing")
        for gate in gates[pending:]:
            gate.callback([])
        self.assertEqual(len(client.replies()), pending + 50)

    def test_full_write_buffer_stops_reading(self):
        client = Client(make_realm(self))
        client.transport.producer.pauseProducing()  # what the transport does when full
        client.send("listusers", "help")
        self.assertEqual(client.transport.producerState, "paused")  # reading stopped
        self.assertEqual(client.replies(), [])
        client.transport.producer.resumeProducing()
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(codes(client.replies()), ["OK", "OK"])


class HalfCloseTests(unittest.TestCase):
    """A client that ends its side after its requests still gets every reply."""

    def test_pending_and_held_requests_are_answered_then_closed(self):
        realm = make_realm(self)
        client = Client(realm)
        gate = defer.Deferred()
        realm.list_users = lambda after, realm=None: gate
        hashing = defer.Deferred()  # a register whose password is hashing
        realm.register = lambda username, password, peer: hashing
        client.send("register zed pw", "listusers", "help")
        client.protocol.readConnectionLost()  # the client's EOF
        self.assertFalse(client.transport.disconnecting)
        hashing.callback(None)
        self.assertFalse(client.transport.disconnecting)  # listusers pending
        gate.callback((["zed"], False))
        self.assertEqual(codes(client.replies()), ["OK", "OK", "OK"])
        self.assertTrue(client.transport.disconnecting)

    def test_nothing_pending_closes_at_once(self):
        client = Client(make_realm(self))
        client.send("listusers")
        client.protocol.readConnectionLost()
        self.assertEqual(codes(client.replies()), ["OK"])
        self.assertTrue(client.transport.disconnecting)


class QuitTests(unittest.TestCase):
    def test_quit_closes_even_while_the_transport_is_full(self):
        # Twisted does not close a transport whose paused producer is still
        # registered: the queue must unregister before closing.
        client = Client(make_realm(self))
        client.transport.producer.pauseProducing()  # the client reads nothing yet
        client.send("help", "quit")
        client.transport.producer.resumeProducing()
        self.assertEqual(codes(client.replies()), ["OK", "OK"])
        self.assertIsNone(client.transport.producer)
        self.assertTrue(client.transport.disconnecting)


class InternalErrorTests(unittest.TestCase):
    def test_a_bug_answers_internal_and_the_connection_goes_on(self):
        realm = make_realm(self)
        client = Client(realm)
        realm.list_groups = lambda after: 1 / 0
        realm.list_users = lambda after, realm=None: defer.fail(ZeroDivisionError())
        client.send("listgroups", "listusers", "help")
        self.assertEqual(codes(client.replies()), ["internal", "internal", "OK"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def boom_alone_is_internal(self, break_on_boom):
        """
        With C{break_on_boom(realm)}'s bug on the message "boom": its send
        is answered internal in its place, the sends after it go on.
        """
        realm = make_realm(self)
        client = Client(realm)
        client.ask("register heru pw")
        client.login("alice")
        break_on_boom(realm)
        client.send("send - heru boom", "send - heru fine", "ping")
        self.assertEqual(codes(client.replies()), ["internal", "OK", "OK"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_bug_while_minting_a_message_answers_internal_and_the_connection_goes_on(self):
        # A sending command's reply comes without a Deferred (Stored): a bug
        # before its message reaches the store is still its own reply.
        def broken(realm):
            real = realm.new_message
            self.patch(realm, "new_message", lambda kind, sender, recipient, text: (
                1 / 0 if text == "boom" else real(kind, sender, recipient, text)))

        self.boom_alone_is_internal(broken)

    def test_a_bug_in_the_reply_of_a_stored_message_answers_internal_and_the_connection_goes_on(self):
        # The reply is made by _StoredReply, not a Deferred's callback: a bug
        # there must still fill the request's place (found in review).
        real = wire.sent
        self.boom_alone_is_internal(lambda realm: self.patch(wire, "sent", lambda delivery: (
            1 / 0 if delivery.message.text == "boom" else real(delivery))))

    def test_any_bug_in_one_request_is_its_internal_reply_and_the_connection_goes_on(self):
        # A bug anywhere in one request (its parsing, its reply's encoding,
        # at once or later, the start of an upload) is that request's
        # internal reply, in its place: the pipelined requests around it are
        # answered (and what they stored is said), the connection stays.
        realm = make_realm(self)
        client = Client(realm)
        client.login("alice")
        real_parse = chat_protocol.parse_request

        def parse(text):
            if text.startswith("boom"):
                raise TypeError("a bug in parsing")
            return real_parse(text)

        self.patch(chat_protocol, "parse_request", parse)
        client.protocol.handlers.command_ping = lambda: {"not json": object()}
        client.protocol.handlers.command_help = lambda: defer.succeed({"not json": object()})

        def begin():
            raise TypeError("a bug in starting an upload")

        realm.files.begin = begin
        client.raw(
            b"send - alice before\r\nboom\r\nping\r\nhelp\r\n"
            b" sendfile - alice x.txt\r\n\r\nQUJD\r\n\r\nsend - alice after\r\n"
        )
        self.assertEqual(codes(client.replies()), ["OK"] + ["internal"] * 4 + ["OK"])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 4)
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(codes([client.ask("listusers")]), ["OK"])
        inbox = client.ask("inbox -")["messages"]
        self.assertEqual([m["msg"] for m in inbox], ["before", "after"])

    def test_replies_are_parsed_by_the_helper_strictly(self):
        self.assertRaises(AssertionError, parse_replies, b'{"status": "OK"}\r\n')
