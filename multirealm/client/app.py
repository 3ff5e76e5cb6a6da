"""
C{multirealm-chat}: the terminal.  prompt_toolkit edits the line being
typed (history, Ctrl-R search, the usual keys) and, with C{patch_stdout},
prints incoming messages above it without garbling it; Twisted runs on the
same asyncio loop (its asyncio reactor), so the connection and the prompt
share one thread.

    multirealm-chat --host 127.0.0.1 --port 8889
"""

import argparse
import asyncio
import os
import sys

from multirealm import errors
from multirealm.client import commands, render
from multirealm.client.connection import ChatSession, NotConnected
from multirealm.client.transfers import LARGE, FileSink, Upload, wire_file_name
from multirealm.client.unread import Unread

DOWNLOADS = os.path.join("~", "Downloads")


class Chat:
    """What each typed command does, over a L{ChatSession}."""

    HISTORY_PAGE = 20

    def __init__(self, session, show, downloads=DOWNLOADS):
        self.session = session
        self.show = show
        self.downloads = os.path.abspath(os.path.expanduser(downloads))  # where /get saves
        self.conversation = None  # "heru" or "#team": where plain lines go
        self._history = None  # (conversation, entries, how many shown, older kept back)
        self.transfers = []  # Uploads and FileSinks under way
        self.background = set()  # their tasks: the person types on meanwhile
        # async (question) -> a line typed without being shown (read_lines sets it)
        self.hidden = None
        self.unread = Unread()  # counts per conversation, kept from events

    @property
    def prompt(self):
        """The prompt, under a progress bar for each large transfer under way."""
        who = self.session.user or "not logged in"
        unread = self.unread.total()
        if unread:
            who += f" ({unread} unread)"
        bars = [render.progress(t.label, t.done, t.total) for t in self.transfers
                if t.total >= LARGE]
        return "\n".join(bars + [f"{who}{' > ' + self.conversation if self.conversation else ''}> "])

    async def handle(self, line):
        """Do what C{line} says; False once the person wants to leave."""
        try:
            action = commands.parse(line, self.conversation)
        except commands.UsageError as e:
            self.show(str(e))
            return True
        if action is None:
            return True
        if action.name == "quit":
            return False
        await self._said(getattr(self, "do_" + action.name.replace("-", "_"))(*action.args))
        return True

    async def _said(self, work):
        """Await C{work}; what goes wrong is said in words, and the prompt goes on."""
        try:
            await work
        except NotConnected as e:
            self.show(f"not sent: {e}")
        except OSError as e:
            self.show(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}")
        except Exception as e:  # an odd reply: said, and the prompt goes on
            self.show(f"error: the realm's reply could not be used ({type(e).__name__})")

    async def ask(self, line, body=None, sink=None):
        """The reply to one request; an error reply is shown and returns None."""
        return await self._reply(self.session.request(line, body, sink))

    async def _reply(self, d):
        reply = await d.asFuture(asyncio.get_running_loop())
        if reply.get("status") != "OK":
            self.show(render.error(reply))
            return None
        return reply

    def token(self):
        if self.session.token is None:
            self.show("log in first: /login NAME PASSWORD")
        return self.session.token

    # -- accounts ---------------------------------------------------------------

    async def do_help(self):
        for line in commands.HELP.splitlines():  # each line made safe on its own
            self.show(line)

    async def do_register(self, name, password):
        if await self.ask(f"register {name} {password}"):
            self.show(f"registered {name}: now /login {name} PASSWORD")

    async def do_login(self, name, password):
        loop = asyncio.get_running_loop()
        reply = await self.session.login(name, password).asFuture(loop)
        if reply.get("status") != "OK":
            self.show(render.error(reply))
            return
        self.show(f"logged in as {name}; messages for you appear as they arrive")

    async def do_passwd(self):
        token = self.token()
        if not token:
            return
        if self.hidden is None:
            self.show("/passwd needs the terminal to ask for the passwords")
            return
        try:
            old = await self.hidden("old password: ")
            new = await self.hidden("new password: ")
            again = await self.hidden("new password again: ")
        except (EOFError, KeyboardInterrupt):
            self.show("password not changed")
            return
        if new != again:
            self.show("the two new passwords differ: password not changed")
        elif old.split() != [old] or new.split() != [new]:
            self.show("a password is one word, without spaces: password not changed")
        elif await self.ask(f"passwd {token} {old} {new}"):
            self.show("password changed; your other sessions (other devices) are logged out")

    # -- messages -----------------------------------------------------------------

    async def do_msg(self, to, text):
        reply = self.token() and await self.ask(f"send {self.session.token} {to} {text}")
        if reply:
            self.show_sent(reply, to, text)

    async def do_group(self, group, text):
        reply = self.token() and await self.ask(f"sendgroup {self.session.token} {group} {text}")
        if reply:
            self.show_sent(reply, group, text, group=group)

    def show_sent(self, reply, to, text, group=None):
        """One's own message, as history shows it."""
        entry = {"id": reply.get("id"), "msg_from": self.session.user, "msg_to": to, "msg": text,
                 "timestamp": reply.get("timestamp")}
        self.unread.message("group" if group else "private", entry, self.session.user)
        self.show(render.message(entry, self.session.user, group))

    def event(self, item):
        """The line of an event (or None); the unread counts follow it."""
        kind = item.get("event")
        if kind == "message":
            self.unread.message(item.get("kind"), item.get("message", {}), self.session.user)
        elif kind == "read" and not self.unread.read(str(item.get("with")), item.get("up_to")):
            task = asyncio.ensure_future(self._recount())
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        return render.event(item, self.session.user)

    async def _recount(self):
        """The counts of the newest conversations, asked again (a read event said they moved)."""
        try:
            reply = await self.session.request(f"conversations {self.session.token}").asFuture(
                asyncio.get_running_loop())
        except NotConnected:
            return
        if reply.get("status") == "OK":
            self.unread.listed(reply["conversations"])

    async def do_open(self, conversation):
        if not self.token():
            return
        if conversation.startswith("#"):
            loop = asyncio.get_running_loop()
            reply = await self.session.follow_group(conversation[1:]).asFuture(loop)
            if reply.get("status") != "OK":
                self.show(render.error(reply))  # the open conversation stays open
                return
        self.conversation = conversation
        self.show(f"talking to {conversation}: type a line to send it, /history to look back")

    async def do_create(self, group, *members):
        token = self.token()
        if token and await self.ask(f"creategroup {token} {group} {' '.join(members)}".strip()):
            self.session.groups.add(group)
            self.show(f"created #{group}; /open #{group} to talk there")

    async def do_leave(self, group):
        token = self.token()
        if token and await self.ask(f"leavegroup {token} {group}"):
            self.session.groups.discard(group)
            if self.conversation == "#" + group:
                self.conversation = None
            self.show(f"left #{group}")

    async def do_add(self, group, *members):
        token = self.token()
        if token and await self.ask(f"addmember {token} {group.lstrip('#')} {' '.join(members)}"):
            self.show(f"added to #{group.lstrip('#')}: {', '.join(members)}")

    async def do_remove(self, group, *members):
        token = self.token()
        if token and await self.ask(
            f"removemember {token} {group.lstrip('#')} {' '.join(members)}"
        ):
            self.show(f"removed from #{group.lstrip('#')}: {', '.join(members)}")

    async def do_members(self, group):
        token = self.token()
        reply = token and await self.ask(f"groupinfo {token} {group.lstrip('#')}")
        if reply:
            states = await self._presence(reply.get("members", []))
            self.show(render.members(reply, self.session.user, states))

    # Names one presence request asks about (the realm takes at most 100).
    PRESENCE_AT_ONCE = 100

    async def _presence(self, names):
        """
        {name: {"online", "last_seen"}} of C{names} as the realm answers
        (bare for its own users), {} when not logged in: marks, not news,
        so a refusal is not shown.
        """
        states = {}
        if self.session.token is None:
            return states
        for start in range(0, len(names), self.PRESENCE_AT_ONCE):
            line = " ".join(names[start:start + self.PRESENCE_AT_ONCE])
            d = self.session.request(f"presence {self.session.token} {line}")
            reply = await d.asFuture(asyncio.get_running_loop())
            if reply.get("status") == "OK":
                states.update(reply.get("presence", {}))
        return states

    # -- files --------------------------------------------------------------------

    async def do_send_file(self, to, path, command="sendfile", shown_to=None):
        token = self.token()
        if not token:
            return
        name = os.path.basename(path)
        try:
            sent_as = wire_file_name(path)
        except errors.BadFilename as e:
            self.show(f"error: {e}; rename the file to send it")
            return
        upload = Upload(path, f"sending {name}")  # OSError: shown in words by handle()
        renamed = f" as {sent_as} (a name on the wire has no spaces)" if sent_as != name else ""
        self._transfer(
            upload, f"{command} {token} {to} {sent_as}", dict(body=upload),
            lambda reply: self.show(
                f"sent {name} to {shown_to or to}{renamed} ({render.size(upload.total)})"),
        )

    async def do_send_group_file(self, group, path):
        await self.do_send_file(group, path, command="sendgroupfile", shown_to="#" + group)

    async def do_get(self, file_id, folder=None):
        token = self.token()
        if not token:
            return
        if folder is None:
            folder = self.downloads
            os.makedirs(folder, exist_ok=True)  # OSError: shown in words by handle()
        elif not os.path.isdir(folder):
            self.show(f"error: {folder} is not a folder (/get FILE_ID [FOLDER])")
            return
        # Streamed to disk as it arrives, under a plain name, never over a file.
        sink = FileSink(folder, file_id)
        self._transfer(sink, f"getfile {token} {file_id}", dict(sink=sink),
                       lambda reply: self.show(f"saved {sink.path} ({render.size(sink.done)})"))

    def _transfer(self, transfer, line, file, done):
        """
        Request C{line} (C{file}: its body or sink) now; the person types on
        while C{transfer} runs, its progress above the prompt, and
        C{done(reply)} once the realm answers OK.
        """
        self.transfers.append(transfer)
        d = self.session.request(line, **file)

        async def answered():
            try:
                reply = await self._reply(d)
            finally:
                self.transfers.remove(transfer)
            if reply:
                done(reply)

        task = asyncio.ensure_future(self._said(answered()))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def do_downloads(self, folder=None):
        if folder is not None:
            folder = os.path.abspath(os.path.expanduser(folder))
            os.makedirs(folder, exist_ok=True)  # OSError: shown in words by handle()
            self.downloads = folder
        self.show(f"/get saves files in {self.downloads} (/downloads FOLDER to change it)")

    # -- reading ------------------------------------------------------------------

    async def do_history(self, which=None):
        if not self.token():
            return
        if which == "more":
            return await self._more_history()
        conversation = which or self.conversation
        if conversation is None:
            self.show("/history USER or /history #GROUP (or /open one first)")
            return
        kind, name = _kind_and_name(conversation)
        reply = await self.ask(f"history {self.session.token} {kind} {name}")
        if reply is None:
            return
        entries = reply["messages"]
        if not entries:
            self.show(f"nothing with {conversation} yet")
            return
        self._history = (conversation, entries, 0, reply["more"])
        await self._more_history()
        # What is shown is read, on every device of this user (the realm tells them).
        last = entries[-1]["id"]
        if await self.ask(f"markread {self.session.token} {name} {last}"):
            self.unread.read(name, last)

    async def do_conversations(self, after=None):
        token = self.token()
        reply = token and await self.ask(f"conversations {token}" + (f" {after}" if after else ""))
        if not reply:
            return
        entries = reply["conversations"]
        self.unread.listed(entries)
        if not entries:
            self.show("no conversations yet")
        # People are marked online or not; a realm's failures (@2) are no one.
        people = [e["with"] for e in entries
                  if e.get("kind") == "private" and not str(e.get("with", "@")).startswith("@")]
        states = await self._presence(people)
        for entry in entries:
            self.show(render.conversation(entry, self.session.user, states.get(entry.get("with"))))
        if reply["more"]:
            self.show(f"(more: /conversations {reply['conversations'][-1]['with']})")

    async def _more_history(self):
        if self._history is None:
            self.show("/history USER or /history #GROUP first; then /history more")
            return
        conversation, entries, shown, older_on_realm = self._history
        if shown == len(entries) and older_on_realm:
            # Shown all the realm gave: ask it for the page before the oldest.
            kind, name = _kind_and_name(conversation)
            reply = await self.ask(
                f"history {self.session.token} {kind} {name} {entries[0]['id']}"
            )
            if reply is None:
                return
            entries = reply["messages"] + entries
            older_on_realm = reply["more"]
        page = entries[max(0, len(entries) - shown - self.HISTORY_PAGE):len(entries) - shown]
        if not page:
            self.show(f"(that is the whole conversation with {conversation})")
            return
        group = conversation[1:] if conversation.startswith("#") else None
        for entry in page:
            self.show(render.message(entry, self.session.user, group))
        shown += len(page)
        self._history = (conversation, entries, shown, older_on_realm)
        older = len(entries) - shown
        if older_on_realm:
            self.show(f"({older}+ older: /history more)" if older else "(older: /history more)")
        elif older:
            self.show(f"({older} older: /history more)")

    async def do_who(self, realm=None):
        reply = await self.ask("listusers" + (f" {realm}" if realm else ""))
        if reply:
            asked = [f"{name}@{realm}" if realm else name for name in reply["users"]]
            states = await self._presence(asked)
            names = ", ".join(
                render.marked(name, states.get(a) or states.get(name))
                for name, a in zip(reply["users"], asked)
            ) or "nobody yet"
            self.show(f"users{' of realm ' + realm if realm else ''}: {names}"
                      + (" (and more)" if reply.get("more") else ""))

    async def do_realms(self):
        reply = await self.ask("listrealms")
        if not reply:
            return
        if not reply["realms"]:
            self.show("this realm has no linked realms")
        for realm in reply["realms"]:
            state = "linked" if realm["linked"] else "not linked"
            line = f"realm {realm['name']}: {state}, {realm['pending']} waiting"
            if realm.get("last_error") and not realm["linked"]:  # past errors are no news
                line += f" (last error: {realm['last_error']})"
            self.show(line)


async def read_lines(chat, **io):
    """
    Read what the person types, line by line, until /quit, Ctrl-D or
    Ctrl-C.  C{io}: prompt_toolkit's C{input} and C{output} (tests pass
    its pipe input and dummy output).
    """
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import InMemoryHistory

    # History kept in memory only; redrawn twice a second for progress bars.
    prompt = PromptSession(history=InMemoryHistory(), refresh_interval=0.5, **io)

    async def hidden(question):
        # A prompt of its own: what is typed shows as *, and never enters the line history.
        return await PromptSession(is_password=True, **io).prompt_async(question)

    chat.hidden = hidden
    try:
        while True:
            try:
                line = await prompt.prompt_async(lambda: chat.prompt)
            except (EOFError, KeyboardInterrupt):
                return
            if not await chat.handle(line):
                return
    finally:
        for task in list(chat.background):  # transfers under way stop with the client
            task.cancel()


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="multirealm-chat", description="Chat on a multirealm realm from a terminal."
    )
    parser.add_argument("--host", default="127.0.0.1", help="the realm's address")
    parser.add_argument("--port", type=int, default=8889, help="its chat port (realm 1: 8889)")
    parser.add_argument("--downloads", default=DOWNLOADS, metavar="FOLDER",
                        help="where /get saves files (default: ~/Downloads)")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    # Twisted on asyncio's loop, so that prompt_toolkit and the connection
    # share it; the reactor is installed before anything imports it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from prompt_toolkit.patch_stdout import patch_stdout
    from twisted.internet import reactor

    def show(line):
        print(render.safe(line), flush=True)

    session = ChatSession(
        options.host, options.port, reactor, show, lambda item: chat.event(item),
    )
    chat = Chat(session, show, options.downloads)

    async def typing():
        try:
            with patch_stdout(raw=True):  # our lines hold no escapes: show() made them safe
                await read_lines(chat)
        finally:
            session.close()
            reactor.stop()

    def start():
        session.connect()
        loop.create_task(typing())

    reactor.callWhenRunning(start)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _kind_and_name(conversation):
    """("group", name) for C{#name}, else ("private", the peer): as C{history} takes them."""
    if conversation.startswith("#"):
        return "group", conversation[1:]
    return "private", conversation
