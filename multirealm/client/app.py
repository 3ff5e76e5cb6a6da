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

from multirealm.client import commands, render
from multirealm.client.connection import ChatSession, FileSink, NotConnected
from multirealm import errors
from multirealm.names import check_filename


class Chat:
    """What each typed command does, over a L{ChatSession}."""

    HISTORY_PAGE = 20

    def __init__(self, session, show):
        self.session = session
        self.show = show
        self.conversation = None  # "heru" or "#team": where plain lines go
        self._history = None  # (conversation, entries, how many shown)

    @property
    def prompt(self):
        who = self.session.user or "not logged in"
        return f"{who}{' > ' + self.conversation if self.conversation else ''}> "

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
        try:
            await getattr(self, "do_" + action.name.replace("-", "_"))(*action.args)
        except NotConnected as e:
            self.show(f"not sent: {e}")
        except OSError as e:
            self.show(f"error: {e.strerror or e}")
        except Exception as e:  # an odd reply: said, and the prompt goes on
            self.show(f"error: the realm's reply could not be used ({type(e).__name__})")
        return True

    async def ask(self, line, body=None, sink=None):
        """The reply to one request; an error reply is shown and returns None."""
        d = self.session.request(line, body, sink)
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
        self.show(commands.HELP)

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

    # -- messages -----------------------------------------------------------------

    async def do_msg(self, to, text):
        if self.token() and await self.ask(f"send {self.session.token} {to} {text}"):
            self.show(f"[sent] you → {to}: {text}")

    async def do_group(self, group, text):
        if self.token() and await self.ask(f"sendgroup {self.session.token} {group} {text}"):
            self.show(f"[sent] #{group} you: {text}")

    async def do_open(self, conversation):
        if not self.token():
            return
        self.conversation = conversation
        if conversation.startswith("#"):
            loop = asyncio.get_running_loop()
            reply = await self.session.follow_group(conversation[1:]).asFuture(loop)
            if reply.get("status") != "OK":
                self.show(render.error(reply))
                self.conversation = None
                return
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

    # -- files --------------------------------------------------------------------

    async def do_send_file(self, to, path, command="sendfile"):
        token = self.token()
        if not token:
            return
        name = os.path.basename(path)
        opened = open(path, "rb")  # OSError: shown in words by handle()
        reply = await self.ask(f"{command} {token} {to} {name}", body=opened)
        if reply:
            self.show(f"sent {name} to {to}")

    async def do_send_group_file(self, group, path):
        await self.do_send_file(group, path, command="sendgroupfile")

    async def do_get(self, file_id, path=None):
        token = self.token()
        if not token:
            return
        folder = path or "."
        if not os.path.isdir(folder):
            self.show(f"error: {folder} is not a folder (/get FILE_ID [FOLDER])")
            return
        # Streamed to disk as it arrives, under a plain name, never over a file.
        sink = FileSink(folder, file_id, plain_file_name)
        reply = await self.ask(f"getfile {token} {file_id}", sink=sink)
        if reply:
            self.show(f"saved {sink.path} ({render.size(sink.size)})")

    # -- reading ------------------------------------------------------------------

    async def do_history(self, which=None):
        if not self.token():
            return
        if which == "more":
            return self._more_history()
        conversation = which or self.conversation
        if conversation is None:
            self.show("/history USER or /history #GROUP (or /open one first)")
            return
        token = self.session.token
        if conversation.startswith("#"):
            group = conversation[1:]
            reply = await self.ask(f"groupinbox {token} {group}")
            entries = reply["messages"] if reply else None
        else:
            reply = await self.ask(f"inbox {token}")
            entries = None if reply is None else [
                m for m in reply["messages"]
                if conversation in (m.get("msg_from"), m.get("msg_to"))
            ]
        if entries is None:
            return
        if not entries:
            self.show(f"nothing with {conversation} yet")
            return
        self._history = (conversation, entries, 0)
        self._more_history()

    def _more_history(self):
        if self._history is None:
            self.show("/history USER first")
            return
        conversation, entries, shown = self._history
        page = entries[max(0, len(entries) - shown - self.HISTORY_PAGE):len(entries) - shown]
        if not page:
            self.show("(that is all the realm keeps in one reply)")
            return
        group = conversation[1:] if conversation.startswith("#") else None
        for entry in page:
            self.show(render.message(entry, self.session.user, group))
        shown += len(page)
        self._history = (conversation, entries, shown)
        if shown < len(entries):
            self.show("(/history more: older ones)")

    async def do_who(self, realm=None):
        reply = await self.ask("listusers" + (f" {realm}" if realm else ""))
        if reply:
            names = ", ".join(reply["users"]) or "nobody yet"
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
            if realm.get("last_error"):
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

    prompt = PromptSession(history=InMemoryHistory(), **io)  # history kept in memory only
    while True:
        try:
            line = await prompt.prompt_async(lambda: chat.prompt)
        except (EOFError, KeyboardInterrupt):
            return
        if not await chat.handle(line):
            return


def plain_file_name(name):
    """C{name} if it can name a file here as it is (the realm's own rule), else None."""
    try:
        return check_filename(name) if isinstance(name, str) else None
    except errors.ChatError:
        return None


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="multirealm-chat", description="Chat on a multirealm realm from a terminal."
    )
    parser.add_argument("--host", default="127.0.0.1", help="the realm's address")
    parser.add_argument("--port", type=int, default=8889, help="its chat port (realm 1: 8889)")
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
        options.host, options.port, reactor, show,
        lambda item: render.event(item, session.user),
    )
    chat = Chat(session, show)

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
