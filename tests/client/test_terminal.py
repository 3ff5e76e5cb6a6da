"""
multirealm-chat driven like a person, on a pseudo-terminal, against a real
realm (twistd on free loopback ports): it types, and a message from
another user appears while a line is half typed, without eating it.
Every wait is bounded; the realm and the client are killed at cleanup.
"""

import base64
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

from tests.test_end_to_end import DEADLINE, TwistdTestCase

# CSI / OSC escape sequences and lone control characters, as a terminal
# would interpret them: what is left is the text a person reads.
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b.")


def chat_command():
    beside = os.path.join(os.path.dirname(sys.executable), "multirealm-chat")
    return beside if os.path.exists(beside) else shutil.which("multirealm-chat")


class Terminal:
    """A program on a pseudo-terminal of 100x30; what it shows, as text."""

    def __init__(self, argv):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        # A pseudo-terminal does not answer cursor-position requests as a
        # terminal does: prompt_toolkit is told not to ask.
        env = dict(os.environ, TERM="xterm", LANG="C.UTF-8", LC_ALL="C.UTF-8",
                   PROMPT_TOOLKIT_NO_CPR="1")
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.fd = master
        self.raw = b""

    def type(self, text):
        os.write(self.fd, text.encode())

    def read(self, seconds=0.2):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.raw += os.read(self.fd, 65536)
                except OSError:
                    return

    @property
    def text(self):
        return _ESCAPES.sub(b"", self.raw).decode("utf-8", "replace")

    def wait_for(self, what, after=0):
        """Until C{what} is on screen (past offset C{after} of the text); its offset."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            self.read(0.1)
            found = self.text.find(what, after)
            if found != -1:
                return found
        raise AssertionError(f"{what!r} never showed; the screen had:\n{self.text[-2000:]}")

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(DEADLINE)
        os.close(self.fd)


class TerminalClientTests(TwistdTestCase):
    def test_two_people_chat_and_a_message_arrives_while_typing(self):
        process, bob = self.start_realm("1")
        self.addCleanup(bob.close)
        bob.ask("register bob pw", "auth bob pw")
        folder = os.path.abspath(self.mktemp())
        downloads = os.path.join(folder, "downloads")  # made by the first /get
        terminal = Terminal([chat_command(), "--host", "127.0.0.1",
                             "--port", str(self.ports["chat1"]), "--downloads", downloads])
        self.addCleanup(terminal.stop)
        terminal.wait_for("connected to 127.0.0.1")
        terminal.type("/register alice secret\r")
        terminal.wait_for("registered alice")
        terminal.type("/login alice secret\r")
        at = terminal.wait_for("logged in as alice")
        terminal.type("/open bob\r")
        terminal.wait_for("talking to bob", at)
        terminal.type("hello bob\r")
        sent = terminal.wait_for("you → bob: hello bob", at)
        (message,) = bob.ask("inbox -")["messages"]
        self.assertEqual((message["msg_from"], message["msg"]), ("alice", "hello bob"))
        # Alice starts a line; bob's answer arrives before she ends it.
        terminal.type("half a li")
        terminal.wait_for("half a li", sent)
        self.assertEqual(bob.ask("send - alice hi alice, welcome")["status"], "OK")
        shown = terminal.wait_for("bob → you: hi alice, welcome", sent)
        # Her line is still there after it, and ends as she types on.
        terminal.type("ne\r")
        terminal.wait_for("half a line", shown)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            texts = [m["msg"] for m in bob.ask("inbox -")["messages"]]
            if "half a line" in texts:
                break
            time.sleep(0.1)
        self.assertIn("half a line", texts)
        # Errors are words, and the session id is never on screen.
        terminal.type("/msg nobody hi\r")
        terminal.wait_for("error: no user 'nobody' (no_such_user)", shown)
        self.assertIsNone(re.search(r"[A-Za-z0-9_-]{43}", terminal.text))  # a session id's shape
        if os.environ.get("TERMINAL_DUMP"):  # to see the screen: TERMINAL_DUMP=FILE
            with open(os.environ["TERMINAL_DUMP"], "w") as f:
                f.write(terminal.text)
        # Files both ways: streamed up by /send-file, down by /get.
        os.makedirs(folder)
        photo = os.urandom(200_000)
        with open(os.path.join(folder, "photo.jpg"), "wb") as f:
            f.write(photo)
        terminal.type(f"/send-file bob {os.path.join(folder, 'photo.jpg')}\r")
        terminal.wait_for("sent photo.jpg to bob", shown)
        entry = [m for m in bob.ask("inbox -")["messages"] if "file_id" in m][-1]
        got = bob.ask(f"getfile - {entry['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), photo)
        bob.sock.sendall(b"sendfile - alice notes.txt \r\n\r\n"
                         + base64.b64encode(b"meeting at noon") + b"\r\n\r\n")
        self.assertEqual(bob.read()["message"], "Message Sent")
        line = terminal.wait_for("bob → you: sent a file: notes.txt", shown)
        file_id = re.search(r"/get ([0-9a-f]{32})", terminal.text[line:]).group(1)
        terminal.type(f"/get {file_id}\r")
        terminal.wait_for("saved", line)
        with open(os.path.join(downloads, "notes.txt"), "rb") as f:
            self.assertEqual(f.read(), b"meeting at noon")
        # The realm restarts: the client connects again by itself, and a
        # message sent while it was away is shown once it is back.
        self.stop(process)
        terminal.wait_for("reconnecting", shown)
        process, bob = self.start_realm("1")
        self.addCleanup(bob.close)
        bob.ask("auth bob pw")
        self.assertEqual(bob.ask("send - alice while you were away")["status"], "OK")
        back = terminal.wait_for("connected again", shown)
        terminal.wait_for("bob → you: while you were away", back)
        terminal.type("/quit\r")
        self.assertEqual(terminal.process.wait(DEADLINE), 0)
        self.assertNotIn("Traceback", terminal.text)

    def test_a_port_that_is_no_chat_port_is_named(self):
        process, bob = self.start_realm("1")
        self.addCleanup(bob.close)
        for port, what in [("http1", "an HTTP server"), ("realm1", "a realm port")]:
            terminal = Terminal([chat_command(), "--port", str(self.ports[port])])
            self.addCleanup(terminal.stop)
            terminal.wait_for(f"127.0.0.1:{self.ports[port]} is not a chat port: "
                              f"it answered like {what}")
            terminal.type("/quit\r")
            self.assertEqual(terminal.process.wait(DEADLINE), 0)
            self.assertNotIn("connected to", terminal.text)
