"""
What each typed command shows, over a stand-in session that answers as a
realm would (no sockets): help, files (names, the downloads folder,
progress), history pages, realms, conversations, one's own lines.
"""

import asyncio
import os

from twisted.internet import defer
from twisted.trial import unittest

from multirealm.client import commands, render
from multirealm.client.app import Chat
from multirealm.client.commands import Action, parse

TOKEN = "t" * 43
STAMP = "2026-11-25T21:32:15.449+00:00"


class Session:
    """A logged-in session whose realm answers with C{self.answer(line, body, sink)}."""

    user, token = "alice", TOKEN

    def __init__(self, answer=None):
        self.groups = set()
        self.sent = []
        self.answer = answer or (lambda line, body, sink: {"status": "OK", "message": "Message Sent",
                                                          "id": "1", "timestamp": STAMP})

    def request(self, line, body=None, sink=None):
        self.sent.append(line)
        return defer.succeed(self.answer(line, body, sink))

    def follow_group(self, group):
        return self.request(f"groupinbox {TOKEN} {group}")


def type_lines(chat, *lines):
    """Each line handled in turn, with the transfers it starts in the background."""
    async def typing():
        for line in lines:
            await chat.handle(line)
            await asyncio.gather(*chat.background)

    asyncio.run(typing())


def entry(n, sender="heru", to="alice"):
    return {"id": f"{n:032x}", "msg_from": sender, "msg_to": to, "msg": f"m{n}", "timestamp": STAMP}


class ChatTests(unittest.TestCase):
    def chat(self, answer=None, **options):
        self.session = Session(answer)
        self.shown = []
        return Chat(self.session, self.shown.append, **options)

    def type(self, chat, *lines):
        type_lines(chat, *lines)

    def test_help_is_shown_line_by_line_as_written(self):
        chat = self.chat()
        self.type(chat, "/help")
        self.assertEqual(self.shown, commands.HELP.splitlines())
        # The terminal shows each line through render.safe: nothing escaped.
        self.assertEqual([render.safe(line) for line in self.shown], self.shown)

    def test_a_file_name_with_spaces_goes_with_underscores_and_says_so(self):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "my photo.jpg")
        with open(path, "wb") as f:
            f.write(b"jpeg")
        bodies = []
        chat = self.chat(lambda line, body, sink: bodies.append(body.read(100)) or
                         {"status": "OK", "message": "Message Sent"})
        self.type(chat, f"/send-file heru {path}", f"/send-file #team {path}")
        self.assertEqual(self.session.sent, [f"sendfile {TOKEN} heru my_photo.jpg",
                                             f"sendgroupfile {TOKEN} team my_photo.jpg"])
        self.assertEqual(bodies, [b"jpeg", b"jpeg"])
        self.assertEqual(self.shown, [
            "sent my photo.jpg to heru as my_photo.jpg (a name on the wire has no spaces) (4 bytes)",
            "sent my photo.jpg to #team as my_photo.jpg (a name on the wire has no spaces) (4 bytes)",
        ])

    def test_a_file_name_the_realm_refuses_is_said_before_sending(self):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "notes..txt")
        open(path, "wb").close()
        chat = self.chat()
        self.type(chat, f"/send-file heru {path}", f"/send-file heru {folder}/none.txt")
        self.assertEqual(self.session.sent, [])
        self.assertIn("file name 'notes..txt' is not a plain name", self.shown[0])
        self.assertIn("rename the file", self.shown[0])
        self.assertEqual(self.shown[1], f"error: {folder}/none.txt: No such file or directory")

    def fetched(self, line, body, sink):
        sink.start({"status": "OK", "filename": "notes.txt", "size": 2})
        sink.write(b"hi")
        sink.finish()
        return {"status": "OK", "filename": "notes.txt", "size": 2}

    def test_get_saves_in_the_downloads_folder_which_can_be_changed(self):
        base = os.path.abspath(self.mktemp())
        chat = self.chat(self.fetched, downloads=os.path.join(base, "dl"))
        self.type(chat, "/get f00")  # the folder is made on first use
        self.assertEqual(os.listdir(os.path.join(base, "dl")), ["notes.txt"])
        self.assertEqual(self.shown[-1], f"saved {base}/dl/notes.txt (2 bytes)")
        self.type(chat, f"/downloads {base}/my files", "/get f00", "/downloads")
        self.assertEqual(os.listdir(os.path.join(base, "my files")), ["notes.txt"])
        self.assertEqual(self.shown[-1],
                         f"/get saves files in {base}/my files (/downloads FOLDER to change it)")
        self.assertEqual(Chat(Session(), print).downloads, os.path.expanduser("~/Downloads"))

    def test_folders_may_hold_spaces(self):
        self.assertEqual(parse("/downloads ~/my files"), Action("downloads", ("~/my files",)))
        self.assertEqual(parse("/get f00 /tmp/my files"), Action("get", ("f00", "/tmp/my files")))
        self.assertEqual(parse("/downloads"), Action("downloads", ()))

    def history(self, count, more):
        messages = [entry(n) if n % 2 else entry(n, "alice", "heru") for n in range(count)]
        return lambda line, body, sink: {"status": "OK", "messages": messages, "more": more}

    def test_history_pages_say_how_many_older_and_where_it_ends(self):
        chat = self.chat(self.history(25, more=False))
        self.type(chat, "/history heru")
        self.assertEqual(len(self.shown), 21)
        self.assertEqual(self.shown[-1], "(5 older: /history more)")
        self.type(chat, "/history more")
        self.assertEqual(len(self.shown), 26)
        self.assertIn("m0", self.shown[21])
        self.type(chat, "/history more")
        self.assertEqual(self.shown[-1], "(that is the whole conversation with heru)")

    def test_history_more_pages_back_on_the_realm_when_all_it_gave_is_shown(self):
        pages = {
            None: {"status": "OK", "messages": [entry(n) for n in (3, 4)], "more": True},
            entry(3)["id"]: {"status": "OK", "messages": [entry(n) for n in (1, 2)],
                             "more": False},
        }

        def realm(line, body, sink):
            words = line.split()
            if words[0] == "history":
                return pages[words[4] if len(words) > 4 else None]
            return {"status": "OK", "message": "read"}

        chat = self.chat(realm)
        self.type(chat, "/history heru")
        self.assertEqual(self.shown[-1], "(older: /history more)")
        self.type(chat, "/history more")
        self.assertEqual(self.session.sent[-1], f"history {TOKEN} private heru {entry(3)['id']}")
        self.assertIn("m1", self.shown[-2])
        self.assertIn("m2", self.shown[-1])
        self.type(chat, "/history more")
        self.assertEqual(self.shown[-1], "(that is the whole conversation with heru)")

    def test_own_lines_look_the_same_live_and_in_history(self):
        chat = self.chat()
        self.type(chat, "/msg heru m1", "/group team m1")
        self.assertEqual(self.shown, [
            render.message(entry(1, "alice", "heru"), "alice"),
            render.message(entry(1, "alice", "team"), "alice", "team"),
        ])
        self.assertRegex(self.shown[0], r"^\[\d\d:\d\d\] you → heru: m1$")
        self.assertRegex(self.shown[1], r"^\[\d\d:\d\d\] #team you: m1$")
        # Logged in as ALICE: the realm's alice all the same.
        self.assertIn("] you → heru: m1", render.message(entry(1, "alice", "heru"), "ALICE"))

    def test_realms_show_an_error_only_while_not_linked(self):
        realms = [{"name": "2", "linked": True, "pending": 0, "last_error": "old news"},
                  {"name": "3", "linked": False, "pending": 4, "last_error": "refused"}]
        chat = self.chat(lambda line, body, sink: {"status": "OK", "realms": realms})
        self.type(chat, "/realms")
        self.assertEqual(self.shown, ["realm 2: linked, 0 waiting",
                                      "realm 3: not linked, 4 waiting (last error: refused)"])

    def test_a_failed_open_keeps_the_open_conversation(self):
        refused = {"status": "ERROR", "code": "no_such_group", "message": "no group 'nope'"}
        chat = self.chat(lambda line, body, sink: refused)
        self.type(chat, "/open heru", "/open #nope")
        self.assertEqual(chat.conversation, "heru")
        self.assertEqual(self.shown[-1], "error: no group 'nope' (no_such_group)")


class ProgressTests(unittest.TestCase):
    MIB = 2**20

    def test_the_person_types_on_while_a_file_comes(self):
        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output import DummyOutput

        from multirealm.client.app import read_lines

        folder = self.mktemp()
        os.makedirs(folder)
        coming = defer.Deferred()

        def answer(line, body, sink):
            if line.startswith("getfile"):
                sink.start({"status": "OK", "filename": "a.bin", "size": 3 * self.MIB})
                return coming
            coming.callback({"status": "OK", "filename": "a.bin"})  # once a line went meanwhile
            return {"status": "OK", "message": "Message Sent", "timestamp": STAMP}

        session = Session()
        session.request = lambda line, body=None, sink=None: (
            session.sent.append(line) or defer.maybeDeferred(answer, line, body, sink))
        shown = []
        chat = Chat(session, shown.append)

        async def scenario():
            with create_pipe_input() as pipe:
                pipe.send_text(f"/get f00 {folder}\r")
                typing = asyncio.ensure_future(read_lines(chat, input=pipe, output=DummyOutput()))
                while not chat.transfers:
                    await asyncio.sleep(0.01)
                self.assertIn("fetching a.bin [", chat.prompt)
                pipe.send_text("/msg heru meanwhile\r")
                await asyncio.wait_for(asyncio.gather(*chat.background), 10)
                pipe.send_text("/quit\r")
                await asyncio.wait_for(typing, 10)

        asyncio.run(scenario())
        self.assertEqual(session.sent, [f"getfile {TOKEN} f00", f"send {TOKEN} heru meanwhile"])
        self.assertIn("you → heru: meanwhile", shown[0])
        self.assertTrue(shown[1].startswith("saved "), shown)

    def test_a_large_upload_shows_a_bar_above_the_prompt(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * (4 * self.MIB))
        prompts = []

        def answer(line, body, sink):
            body.read(self.MIB)
            prompts.append(chat.prompt)
            return {"status": "OK", "message": "Message Sent"}

        chat = Chat(Session(answer), [].append)
        type_lines(chat, f"/send-file heru {path}")
        bar, prompt = prompts[0].split("\n")
        self.assertIn("sending ", bar)
        self.assertIn(" 25% 1.0 MiB of 4.0 MiB", bar)
        self.assertEqual(prompt, "alice> ")
        self.assertEqual(chat.prompt, "alice> ")  # gone once done

    def test_a_large_download_shows_a_bar_a_small_one_none(self):
        folder = self.mktemp()
        os.makedirs(folder)
        prompts = []

        def answer(line, body, sink):
            size = self.MIB * 2 if "big" in line else 1000
            sink.start({"status": "OK", "filename": "a.bin", "size": size})
            sink.write(b"x" * (size // 2))
            prompts.append(chat.prompt)
            sink.write(b"x" * (size // 2))
            sink.finish()
            return {"status": "OK", "filename": "a.bin", "size": size}

        chat = Chat(Session(answer), [].append)
        type_lines(chat, f"/get big {folder}", f"/get small {folder}")
        self.assertEqual(prompts[0], render.progress("fetching a.bin", self.MIB, 2 * self.MIB)
                         + "\nalice> ")
        self.assertEqual(prompts[1], "alice> ")

    def test_the_bar(self):
        self.assertEqual(render.progress("x", 5, 10, width=10),
                         "x [#####-----]  50% 5 bytes of 10 bytes")
        self.assertEqual(render.progress("x", 0, 0, width=4), "x [----]   0% 0 bytes of 0 bytes")
