"""What a person types, parsed; replies and events, rendered."""

from twisted.trial import unittest

from multirealm.client import commands, render
from multirealm.client.commands import Action, UsageError, parse


class ParseTests(unittest.TestCase):
    def test_commands_and_their_words(self):
        # Inner spacing kept; trailing spaces go (the realm strips them too).
        self.assertEqual(parse("/msg heru@2 hi  there "), Action("msg", ("heru@2", "hi  there")))
        self.assertEqual(parse("/group team hello"), Action("group", ("team", "hello")))
        self.assertEqual(parse("/create team heru bob@2"),
                         Action("create", ("team", "heru", "bob@2")))
        self.assertEqual(parse("/send-file heru ./my photo.jpg"),
                         Action("send-file", ("heru", "./my photo.jpg")))
        self.assertEqual(parse("/send-file #team a.txt"), Action("send-group-file", ("team", "a.txt")))
        self.assertEqual(parse("/get abc"), Action("get", ("abc",)))
        self.assertEqual(parse("/get abc /tmp/x"), Action("get", ("abc", "/tmp/x")))
        self.assertEqual(parse("/WHO 2"), Action("who", ("2",)))
        self.assertEqual(parse("/history"), Action("history", ()))
        self.assertEqual(parse("/quit"), Action("quit", ()))
        self.assertIsNone(parse("   "))

    def test_a_plain_line_goes_to_the_open_conversation(self):
        self.assertEqual(parse("hi there", "heru@2"), Action("msg", ("heru@2", "hi there")))
        self.assertEqual(parse("hi all", "#team"), Action("group", ("team", "hi all")))
        with self.assertRaises(UsageError) as caught:
            parse("hi")
        self.assertIn("/open", str(caught.exception))

    def test_wrong_lines_say_what_to_type(self):
        for line, hint in [("/msg heru", "/msg USER[@REALM] TEXT"), ("/frob", "/help"),
                           ("/login alice", "/login NAME PASSWORD"), ("/realms 2", "/realms"),
                           ("/open", "/open USER")]:
            with self.assertRaises(UsageError) as caught:
                parse(line)
            self.assertIn(hint, str(caught.exception))

    def test_help_names_every_command(self):
        for name in commands._SHAPES:
            self.assertIn(f"/{name}", commands.HELP)


class RenderTests(unittest.TestCase):
    ENTRY = {"id": "1", "msg_from": "alice@1", "msg_to": "heru", "msg": "hi",
             "timestamp": "2026-11-25T21:32:15.449+00:00"}

    def test_messages_files_groups_and_failures(self):
        self.assertRegex(render.message(self.ENTRY, "heru"), r"^\[\d\d:\d\d\] alice@1 → you: hi$")
        self.assertRegex(render.message(dict(self.ENTRY, msg_to="team"), "heru", "team"),
                         r"\] #team alice@1: hi$")
        file = dict(self.ENTRY, file="a.jpg", file_id="f00", size=2048)
        del file["msg"]
        self.assertIn("sent a file: a.jpg (2.0 KiB) /get f00", render.message(file, "heru"))
        failed = {"id": "2", "msg_from": "@2", "msg_to": "alice", "timestamp": "x",
                  "msg": "not delivered to nobody@2: no user 'nobody'",
                  "failed": {"id": "1", "code": "no_such_user"}}
        self.assertEqual(render.message(failed, "alice"),
                         "[??:??] ! not delivered to nobody@2: no user 'nobody' (no_such_user)")

    def test_events(self):
        group = {"event": "message", "kind": "group", "message": dict(self.ENTRY, msg_to="team")}
        self.assertIn("#team alice@1: hi", render.event(group, "heru"))
        self.assertIn("catching up", render.event({"event": "overflow"}, "heru"))
        self.assertIsNone(render.event({"event": "something new"}, "heru"))

    def test_errors_in_words(self):
        self.assertEqual(
            render.error({"status": "ERROR", "code": "no_such_user", "message": "no user 'x'"}),
            "error: no user 'x' (no_such_user)",
        )


class PromptTests(unittest.TestCase):
    """The prompt loop on prompt_toolkit's own pipe input and dummy output."""

    def test_typed_lines_become_requests_until_quit(self):
        import asyncio

        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output import DummyOutput
        from twisted.internet import defer

        from multirealm.client.app import Chat, read_lines

        class Session:
            user, token, groups = "alice", "t" * 43, set()

            def __init__(self):
                self.sent = []

            def request(self, line, body=None, sink=None):
                self.sent.append(line)
                return defer.succeed({"status": "OK", "message": "Message Sent"})

        session, shown = Session(), []
        chat = Chat(session, shown.append)

        async def scenario():
            with create_pipe_input() as pipe:
                pipe.send_text("/open heru\rhello heru\r/msg bob@2 hi bob\r/frob\r/quit\r")
                await read_lines(chat, input=pipe, output=DummyOutput())

        asyncio.run(scenario())
        self.assertEqual(session.sent, [f"inbox {'t' * 43}",  # /open shows the latest
                                        f"send {'t' * 43} heru hello heru",
                                        f"send {'t' * 43} bob@2 hi bob"])
        self.assertIn("unknown command /frob: /help lists them", shown)
        self.assertFalse(any("t" * 43 in line for line in shown))


class HostileRealmTests(unittest.TestCase):
    """From a review: what a realm (or a peer behind it) sends cannot harm the client."""

    def test_control_characters_never_reach_the_terminal(self):
        shown = render.safe("hi\x1b]52;c;ZXZpbA==\x07\x1b[2J\rforged\u202e line")
        self.assertNotIn("\x1b", shown)
        self.assertNotIn("\r", shown)
        self.assertNotIn("\u202e", shown)
        self.assertIn("\\x1b[2J", shown)

    def test_an_odd_timestamp_is_no_crash(self):
        self.assertEqual(render.clock("0001-01-01T00:00:00+14:00"), "??:??")
        self.assertEqual(render.clock(None), "??:??")

    def test_a_file_is_saved_under_a_plain_name_only(self):
        import base64
        import os

        from twisted.internet import defer

        from multirealm.client.app import Chat
        from tests.client.test_chat import type_lines

        folder = self.mktemp()
        os.makedirs(os.path.join(folder, "downloads"))

        class Session:
            user, token, groups = "alice", "t" * 43, set()

            def request(self, line, body=None, sink=None):
                head = {"status": "OK", "filename": "..", "size": 2}
                sink.start(head)  # as ReplyProtocol streams a getfile
                sink.write(base64.b64decode(base64.b64encode(b"hi")))
                sink.finish()
                return defer.succeed(head)

        shown = []
        chat = Chat(Session(), shown.append)
        target = os.path.join(folder, "downloads")
        type_lines(chat, f"/get f00 {target}")
        self.assertEqual(os.listdir(folder), ["downloads"])  # nothing above it
        self.assertEqual(os.listdir(target), ["f00"])  # named by its id instead
