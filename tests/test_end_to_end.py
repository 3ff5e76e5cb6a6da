"""
End to end: C{twistd -n multirealm} started as a subprocess the way a user
starts it, on free loopback ports from a temporary realms.ini, driven over a
real socket.  Every wait is bounded; every process is killed at cleanup.
"""

import base64
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

from twisted.trial import unittest

DEADLINE = 20.0  # seconds any one wait may take


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_handed_out = set()


def free_port():
    """
    A port free now on 127.0.0.1 for a realm started as a subprocess, which
    binds it a moment later.  Chosen at random below the ephemeral range:
    a port there (what binding port 0 gives) may meanwhile become the
    source port of an outgoing connection, a realm link of the process
    being started among them, and the realm then fails to listen on it.
    """
    low, _ = _ephemeral_range()
    for _ in range(1000):
        port = random.randrange(max(1024, low - 20000), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError("no free port below the ephemeral range")


def twistd():
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return beside if os.path.exists(beside) else shutil.which("twistd")


def listens(process, port):
    """True once C{process} has a socket listening on TCP C{port} (read from /proc)."""
    if process.poll() is not None:
        raise AssertionError(f"process {process.pid} exited")
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    folder = f"/proc/{process.pid}/fd"
    for fd in os.listdir(folder):
        try:
            target = os.readlink(os.path.join(folder, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


REALMS_INI = """
[network]
secret = test-secret
history_limit = 50

[realm:1]
host = 127.0.0.1
chat_port = {chat1}
realm_port = {realm1}
http_port = {http1}
data_dir = data/realm1

[realm:2]
host = 127.0.0.1
chat_port = {chat2}
realm_port = {realm2}
http_port = {http2}
data_dir = data/realm2
"""


class Connection:
    """A blocking client socket that reads replies ended by CRLF CRLF."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.buffer = b""

    def ask(self, *lines):
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        replies = [self.read() for _ in lines]
        return replies if len(lines) > 1 else replies[0]

    def read(self):
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        reply, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return json.loads(reply)

    def close(self):
        self.sock.close()


class TwistdTestCase(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.ports = {
            key: free_port() for key in ["chat1", "realm1", "http1", "chat2", "realm2", "http2"]
        }
        self.config = os.path.join(self.folder, "realms.ini")
        with open(self.config, "w") as f:
            f.write(REALMS_INI.format(**self.ports))

    def run_twistd(self, *args):
        """Start twistd; return the Popen, killed at cleanup."""
        process = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "multirealm", *args],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(self.kill, process)
        return process

    def kill(self, process):
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=DEADLINE)

    def start_realm(self, realm="1"):
        process = self.run_twistd(f"--realm={realm}", f"--config={self.config}")
        port = self.ports[f"chat{realm}"]
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                return process, Connection(port)
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    out, err = process.communicate(timeout=DEADLINE)
                    self.fail(f"realm did not start: {err.decode()} {out.decode()[-2000:]}")
                time.sleep(0.05)

    def stop(self, process, sig=signal.SIGTERM):
        """Signal the realm; return what it logged."""
        process.send_signal(sig)
        out, err = process.communicate(timeout=DEADLINE)
        return out.decode() + err.decode()


class SessionTests(TwistdTestCase):
    def test_a_whole_session_over_a_socket(self):
        process, alice = self.start_realm()
        self.addCleanup(alice.close)
        heru = Connection(self.ports["chat1"])
        self.addCleanup(heru.close)
        replies = alice.ask(
            "register alice secret",
            "register heru progjar",
            "auth alice secret",
            "send - heru Hello, how are you?",
            "creategroup - team heru",
            "sendgroup - team Hello, everyone!",
        )
        self.assertEqual([r["status"] for r in replies], ["OK"] * 6, replies)
        self.assertEqual(heru.ask("auth heru progjar")["status"], "OK")
        (private,) = heru.ask("inbox -")["messages"]
        self.assertEqual(
            (private["msg_from"], private["msg"]), ("alice", "Hello, how are you?")
        )
        (group,) = heru.ask("groupinbox - team")["messages"]
        self.assertEqual(group["msg"], "Hello, everyone!")
        self.assertEqual(heru.ask("inbox -")["messages"], [private])
        self.assertEqual(alice.ask("listgroups")["groups"], ["team"])
        self.assertEqual(alice.ask("quit")["message"], "bye")
        self.assertEqual(alice.sock.recv(10), b"")

    def test_a_10_mib_file_goes_up_and_comes_back_the_same(self):
        process, alice = self.start_realm()
        self.addCleanup(alice.close)
        alice.ask("register alice pw", "register heru pw", "auth alice pw")
        payload = os.urandom(10 * 2**20)
        encoded = base64.b64encode(payload)
        # The original client's bytes, the body as one 14 MB line.
        alice.sock.sendall(b"sendfile - heru big.bin \r\n\r\n" + encoded + b"\r\n\r\n")
        sent = alice.read()
        self.assertEqual(sent["message"], "Message Sent", sent)
        heru = Connection(self.ports["chat1"])
        self.addCleanup(heru.close)
        heru.ask("auth heru pw")
        (entry,) = heru.ask("inbox -")["messages"]
        self.assertEqual((entry["file"], entry["size"]), ("big.bin", len(payload)))
        got = heru.ask(f"getfile - {entry['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), payload)
        self.assertEqual(heru.ask("ping")["message"], "pong")  # in step after it

    def test_a_client_that_half_closes_gets_every_reply(self):
        # As "printf ... | nc -q 5": the requests, then the client's end.
        process, client = self.start_realm()
        self.addCleanup(client.close)
        lines = ["register h pw", "auth h pw", "send - h hi", "inbox -", "listusers"]
        client.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        client.sock.shutdown(socket.SHUT_WR)
        replies = [client.read() for _ in lines]
        self.assertEqual([r["status"] for r in replies], ["OK"] * len(lines))
        self.assertEqual(client.sock.recv(10), b"")  # then the server closed

    def test_acknowledged_messages_and_sessions_survive_kill_9(self):
        process, client = self.start_realm()
        replies = client.ask(
            "register alice pw", "auth alice pw", *[f"send - alice note {i}" for i in range(50)]
        )
        self.assertEqual({r["status"] for r in replies}, {"OK"})
        token = replies[1]["tokenid"]
        client.close()
        self.stop(process, signal.SIGKILL)

        process, client = self.start_realm()
        self.addCleanup(client.close)
        history = client.ask(f"inbox {token}")
        self.assertEqual([m["msg"] for m in history["messages"]], [f"note {i}" for i in range(50)])
        log = self.stop(process)
        self.assertIn("Server Shut Down", log)
        self.assertNotIn("Traceback", log)


class StartupErrorTests(TwistdTestCase):
    def assertFailsWith(self, args, *fragments):
        process = self.run_twistd(*args)
        out, err = process.communicate(timeout=DEADLINE)
        err = err.decode()
        self.assertNotEqual(process.returncode, 0)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertNotIn("Traceback", err + out.decode())
        for fragment in fragments:
            self.assertIn(fragment, err)

    def test_unknown_realm(self):
        self.assertFailsWith(["--realm=3", f"--config={self.config}"], "[realm:3]")

    def test_missing_config(self):
        missing = os.path.join(self.folder, "nope.ini")
        self.assertFailsWith(["--realm=1", f"--config={missing}"], missing)

    def test_bad_key(self):
        with open(self.config, "a") as f:
            f.write("[realm:3]\nhost = 127.0.0.1\nchat_port = x\n")
        self.assertFailsWith(["--realm=1", f"--config={self.config}"], "[realm:3]", "chat_port")

    def test_port_in_use(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", self.ports["chat1"]))
            busy.listen()
            self.assertFailsWith(
                ["--realm=1", f"--config={self.config}"], str(self.ports["chat1"])
            )

    def database(self):
        """The path of realm 1's database, its folder made."""
        folder = os.path.join(self.folder, "data", "realm1")
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, "realm.sqlite3")

    def test_database_newer_than_the_code(self):
        path = self.database()
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA user_version = 999")
        self.assertFailsWith(["--realm=1", f"--config={self.config}"], path, "999")

    def test_database_that_cannot_be_opened(self):
        with open(self.database(), "wb") as f:
            f.write(b"this is not an SQLite database, it is a text file." * 100)
        self.assertFailsWith(["--realm=1", f"--config={self.config}"], "realm 1")


class FederationTests(TwistdTestCase):
    def inbox_until(self, client, count):
        """Heru's inbox once it holds C{count} messages (polled, with a deadline)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            messages = client.ask("inbox -")["messages"]
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.1)

    def test_two_realms_exchange_messages_and_nothing_is_lost_while_one_is_down(self):
        one, alice = self.start_realm("1")
        self.addCleanup(alice.close)
        two, heru = self.start_realm("2")
        self.addCleanup(heru.close)
        alice.ask("register alice pw", "auth alice pw")
        heru.ask("register heru pw", "auth heru pw")
        self.assertEqual(alice.ask("send - heru@2 hello across")["status"], "OK")
        (first,) = self.inbox_until(heru, 1)
        self.assertEqual((first["msg_from"], first["msg"]), ("alice@1", "hello across"))
        # Realm 2 goes down; what is sent meanwhile waits, then arrives once.
        self.stop(two)
        heru.close()
        for n in range(3):
            self.assertEqual(alice.ask(f"send - heru@2 while down {n}")["status"], "OK")
        two, heru = self.start_realm("2")
        self.addCleanup(heru.close)
        heru.ask("auth heru pw")
        messages = self.inbox_until(heru, 4)
        self.assertEqual([m["msg"] for m in messages],
                         ["hello across"] + [f"while down {n}" for n in range(3)])
