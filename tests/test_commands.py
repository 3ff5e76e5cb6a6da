"""
The pure request parser, with examples and with hypothesis.
"""

import inspect

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from multirealm import errors
from multirealm.chat.handlers import Handlers
from multirealm.commands import COMMANDS, Request, _parse_words, parse_request, split_command
from tests.helpers import Client, make_realm


def named(request):
    """A request's arguments by the names of its command's fields."""
    return dict(zip(request.command.fields, request.args, strict=True))


class ParseExamples(unittest.TestCase):
    def test_free_text_keeps_inner_spacing(self):
        request = parse_request("send   tok   heru   a  b   c")
        self.assertEqual(request.session, "tok")
        self.assertEqual(named(request), {"to": "heru", "message": "a  b   c"})
        self.assertIsNone(request.error)

    def test_free_text_as_sent(self):
        request = parse_request("send tok heru@2 hello  there ")
        self.assertEqual(named(request), {"to": "heru@2", "message": "hello  there "})

    def test_optional_word(self):
        self.assertEqual(named(parse_request("inbox tok")), {"after_id": None})
        self.assertEqual(named(parse_request("inbox tok X1")), {"after_id": "X1"})

    def test_variadic_members(self):
        request = parse_request("creategroup tok team a  b@2 c")
        self.assertEqual(named(request), {"group": "team", "member": ("a", "b@2", "c")})
        self.assertEqual(named(parse_request("creategroup tok team"))["member"], ())

    def test_handlers_take_the_fields_in_order(self):
        # A handler is called with a request's arguments positionally: its
        # parameters must be its command's fields, in the table's order.
        for command in COMMANDS.values():
            parameters = list(inspect.signature(getattr(Handlers, command.method)).parameters)
            self.assertEqual(
                parameters, ["self"] + ["caller"] * command.session + list(command.fields),
                command.name,
            )

    def test_missing_session_is_an_invalid_session(self):
        request = parse_request("inbox")
        self.assertIsInstance(request.error, errors.InvalidSession)

    def test_bad_arguments_keep_the_session_word(self):
        request = parse_request("send tok")
        self.assertEqual(request.session, "tok")
        self.assertIsInstance(request.error, errors.BadRequest)

    def test_too_many_words(self):
        self.assertIsInstance(parse_request("listusers 1 alice more").error, errors.BadRequest)
        self.assertIsInstance(parse_request("register a b c").error, errors.BadRequest)

    def test_unknown(self):
        request = parse_request("nope x")
        self.assertIsNone(request.command)
        self.assertIsInstance(request.error, errors.UnknownCommand)

    def test_usage_lines(self):
        self.assertEqual(COMMANDS["send"].usage, "send <sessionid> <to> <message>")
        self.assertEqual(COMMANDS["inbox"].usage, "inbox <sessionid> [<after_id>]")
        self.assertEqual(
            COMMANDS["creategroup"].usage, "creategroup <sessionid> <group> <member> ..."
        )


words = st.one_of(st.sampled_from(sorted(COMMANDS) + ["-", "tok", "heru@2", ""]), st.text())


class ParseProperties(unittest.TestCase):
    @given(st.text())
    def test_any_text_parses_to_a_request(self, line):
        request = parse_request(line.rstrip(" \t") or "x")
        self.assertIsInstance(request, Request)
        self.assertTrue(request.command is not None or request.error is not None)

    @given(st.lists(words, max_size=8))
    def test_command_like_lines_parse_without_raising(self, parts):
        line = " ".join(parts).rstrip(" \t")
        if line:
            request = parse_request(line)
            if request.error is None:
                self.assertIsNotNone(request.command)
                for word in request.args[: len(request.command.words)]:
                    self.assertTrue(word)
                    self.assertNotIn(" ", word)

    @given(st.sampled_from(["send", "sendgroup", "SEND", "sendrealm", "sendgrouprealm", "help"]),
           st.lists(st.tuples(st.sampled_from([" ", "  ", "", "\t "]), words), max_size=5))
    def test_the_fast_path_of_messages_parses_as_word_by_word(self, name, spaced):
        # parse_request reads a message line in one split; every line must
        # come out as the word-by-word parser has it, errors included.
        line = (name + "".join(space + word for space, word in spaced)).rstrip(" \t")

        def seen(request):
            error = request.error
            return (request.command, request.session, request.args,
                    None if error is None else (type(error), str(error)))

        self.assertEqual(seen(parse_request(line)), seen(_parse_words(line)))

    @given(st.lists(words, max_size=4), st.integers(0, 3))
    def test_the_bytes_as_read_name_the_command_the_parser_finds(self, parts, spaces):
        # The protocol decides that a file body follows from the bytes, the
        # parser from the text: one splitting, so they never disagree.
        line = (" " * spaces + " ".join(parts)).rstrip(" \t")
        if line:
            self.assertIs(split_command(line.encode("utf-8"))[0], parse_request(line).command)

    def test_uploads_are_the_commands_the_table_marks(self):
        for line in ["sendfile - bob x.txt", "   SendGroupFile - g x", "sendfile"]:
            self.assertTrue(split_command(line.encode())[0].upload, line)
        for line in ["send - bob sendfile", "sendfiles - bob x", "\tsendfile - bob x"]:
            command = split_command(line.encode())[0]
            self.assertFalse(command is not None and command.upload, line)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=60), min_size=1, max_size=6))
    def test_random_lines_get_exactly_one_reply_each(self, lines):
        realm = make_realm(self)
        client = Client(realm)
        lines = [line.replace(b"\n", b"") for line in lines]
        client.raw(b"".join(line + b"\r\n" for line in lines))
        expected = sum(1 for line in lines if line.rstrip(b" \t\r"))
        if any(line.rstrip(b" \t\r").lower() == b"quit" for line in lines):
            expected = None  # quit ends the session early
        replies = client.replies()
        if expected is not None:
            self.assertEqual(len(replies), expected)
        for reply in replies:
            self.assertIn(reply["status"], ("OK", "ERROR"))
            self.assertNotEqual(reply.get("code"), "internal")
