"""
/passwd in the terminal: the passwords are asked for on prompts of their
own and never shown (not on screen, not in what /passwd prints), the new
one twice; then one passwd request.  Last, on a pseudo-terminal against
a real realm.
"""

import asyncio
import io

from twisted.trial import unittest

from tests.client.test_chat import TOKEN, Session
from tests.client.test_terminal import Terminal, chat_command
from tests.test_end_to_end import DEADLINE, TwistdTestCase

OLD, NEW = "Old-s3cret", "N3w-s3cret"


class Screen(io.StringIO):
    """What prompt_toolkit writes, as a terminal would get it."""

    encoding = "utf-8"


class PasswdTests(unittest.TestCase):
    def type(self, text, answer=None):
        """C{text} typed at the prompt; returns what the realm got and what the screen had."""
        from prompt_toolkit.data_structures import Size
        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output.vt100 import Vt100_Output

        from multirealm.client.app import Chat, read_lines

        session = Session(answer or (lambda line, body, sink: {
            "status": "OK", "message": "password changed; your other sessions have ended"}))
        self.shown = []
        screen = Screen()
        output = Vt100_Output(screen, lambda: Size(rows=24, columns=100), term="xterm")

        async def scenario():
            with create_pipe_input() as pipe:
                pipe.send_text(text + "/quit\r")
                await asyncio.wait_for(read_lines(Chat(session, self.shown.append), input=pipe,
                                                  output=output), 10)

        asyncio.run(scenario())
        self.screen = screen.getvalue()
        return session.sent

    def assertNeverShown(self, *secrets):
        for secret in secrets:
            self.assertNotIn(secret, self.screen)
            self.assertFalse([line for line in self.shown if secret in line])

    def test_the_passwords_are_asked_for_unseen_then_sent_once(self):
        sent = self.type(f"/passwd\r{OLD}\r{NEW}\r{NEW}\r")
        self.assertEqual(sent, [f"passwd {TOKEN} {OLD} {NEW}"])
        self.assertIn("old password: ", self.screen)
        self.assertIn("new password again: ", self.screen)
        self.assertEqual(self.shown, [
            "password changed; your other sessions (other devices) are logged out"])
        self.assertNeverShown(OLD, NEW)

    def test_two_different_new_passwords_send_nothing(self):
        sent = self.type(f"/passwd\r{OLD}\r{NEW}\r{NEW}x\r")
        self.assertEqual(sent, [])
        self.assertEqual(self.shown, ["the two new passwords differ: password not changed"])
        self.assertNeverShown(OLD, NEW)

    def test_a_password_with_a_space_or_none_sends_nothing(self):
        for typed in (f"{OLD}\rtwo words\rtwo words\r", f"\r{NEW}\r{NEW}\r"):
            self.assertEqual(self.type("/passwd\r" + typed), [])
            self.assertEqual(self.shown,
                             ["a password is one word, without spaces: password not changed"])

    def test_a_wrong_old_password_is_said_in_words(self):
        self.type(f"/passwd\rwrong\r{NEW}\r{NEW}\r", lambda line, body, sink: {
            "status": "ERROR", "code": "bad_credentials", "message": "wrong password"})
        self.assertEqual(self.shown, ["error: wrong password (bad_credentials)"])

    def test_passwords_typed_after_it_are_refused_with_what_to_do(self):
        self.assertEqual(self.type(f"/passwd {OLD} {NEW}\r"), [])
        self.assertEqual(self.shown, [
            "usage: /passwd alone: it asks for the passwords without showing them"])

    def test_without_a_terminal_to_ask_on_it_says_so(self):
        from multirealm.client.app import Chat

        session, shown = Session(), []
        asyncio.run(Chat(session, shown.append).handle("/passwd"))
        self.assertEqual((session.sent, shown),
                         ([], ["/passwd needs the terminal to ask for the passwords"]))


class TerminalPasswdTests(TwistdTestCase):
    def test_on_a_terminal_the_password_changes_and_is_never_on_screen(self):
        process, phone = self.start_realm("1")
        self.addCleanup(phone.close)
        phone.ask("register alice " + OLD, "auth alice " + OLD)
        terminal = Terminal([chat_command(), "--port", str(self.ports["chat1"])])
        self.addCleanup(terminal.stop)
        terminal.wait_for("connected to 127.0.0.1")
        terminal.type(f"/login alice {OLD}\r")
        at = terminal.wait_for("logged in as alice")
        terminal.type("/passwd\r")
        for question in ("old password:", "new password:", "new password again:"):
            at = terminal.wait_for(question, at)
            terminal.type((OLD if question.startswith("old") else NEW) + "\r")
        terminal.wait_for("password changed", at)
        self.assertNotIn(NEW, terminal.text)
        self.assertNotIn(OLD, terminal.text[at:])  # (/login showed it, as typed)
        self.assertEqual(phone.ask("inbox -")["code"], "invalid_session")
        self.assertEqual(phone.ask(f"auth alice {NEW}")["status"], "OK")
        terminal.type("/quit\r")
        self.assertEqual(terminal.process.wait(DEADLINE), 0)
