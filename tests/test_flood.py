"""
A realm held at a low open-files limit (a C{twistd} subprocess started
with C{RLIMIT_NOFILE} 128/256) flooded with HTTP connections that never
finish their headers: a bystander from another address is served on chat
and HTTP, and the realm never runs out of descriptors.
"""

import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import time

from twisted.trial import unittest

from tests.test_end_to_end import DEADLINE, Connection, free_port, listens, twistd

REALMS_INI = """
[network]
secret = test-secret

[realm:1]
host = 127.0.0.1
chat_port = {chat}
realm_port = {realm}
http_port = {http}
data_dir = data/realm1
"""

HEADER_START = b"GET / HTTP/1.1\r\nHost: realm\r\n"  # never ended


def low_descriptor_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))


class FloodTests(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.ports = {key: free_port() for key in ("chat", "realm", "http")}
        with open(os.path.join(self.folder, "realms.ini"), "w") as f:
            f.write(REALMS_INI.format(**self.ports))
        self.process = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "multirealm", "--realm=1", "--config=realms.ini"],
            cwd=self.folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=low_descriptor_limit,
        )
        self.addCleanup(self.kill)
        self.flood = []
        self.reset_at_once = []  # of the flood: reset before connect or send returned
        self.addCleanup(lambda: [s.close() for s in self.flood])
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                Connection(self.ports["chat"]).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.fail(f"realm did not start: {self.log()}")
                time.sleep(0.05)
        # The chat port answers as soon as it is bound, which may be before
        # the HTTP port is: wait for that one too, without a connection (a
        # probe would count against the caps the tests measure).
        while not listens(self.process, self.ports["http"]):
            if time.monotonic() > deadline:
                self.fail(f"the HTTP port is not listening: {self.log()}")
            time.sleep(0.05)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=DEADLINE)

    def log(self):
        """Stop the realm; what it logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.communicate(timeout=DEADLINE)[0].decode()

    def open_flood(self, source, count):
        for _ in range(count):
            sock = socket.socket()
            self.flood.append(sock)
            sock.settimeout(DEADLINE)
            sock.bind((source, 0))
            try:
                sock.connect(("127.0.0.1", self.ports["http"]))
                sock.sendall(HEADER_START)
            except (ConnectionResetError, BrokenPipeError):
                # A refusal past the most that linger is a reset, which can
                # come before this side's connect or send has returned.
                self.reset_at_once.append(sock)

    def refusals(self, expected):
        """
        The flood's answers, once C{expected} came: (head, _, body) for each,
        or C{None} for a reset (a refusal past the most that linger).
        """
        answers = dict.fromkeys(self.reset_at_once)
        with selectors.DefaultSelector() as selector:
            for sock in self.flood:
                if sock not in answers:
                    selector.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + DEADLINE
            while len(answers) < expected and time.monotonic() < deadline:
                for key, _ in selector.select(0.5):
                    try:
                        data = key.fileobj.recv(4096).partition(b"\r\n\r\n")
                    except ConnectionResetError:
                        data = None
                    selector.unregister(key.fileobj)
                    answers[key.fileobj] = data
        return list(answers.values())

    def assertRefused(self, answers, code):
        told = [answer for answer in answers if answer is not None]
        self.assertTrue(told)  # those past the most that linger may see a reset instead
        for head, _, body in told:
            self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
            self.assertEqual(json.loads(body)["code"], code)

    def assertBystanderServed(self):
        chat = Connection(self.ports["chat"])
        self.assertEqual(chat.ask("ping"), {"status": "OK", "message": "pong"})
        chat.close()
        with socket.create_connection(("127.0.0.1", self.ports["http"]), DEADLINE) as http:
            http.sendall(b"GET / HTTP/1.1\r\nHost: realm\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := http.recv(65536):
                response += chunk
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response[:200])

    def test_one_address_flooding_http_leaves_the_others_served(self):
        self.open_flood("127.0.0.2", 150)
        refused = self.refusals(50)
        self.assertEqual(len(refused), 50)  # the 100 admitted wait for their deadline
        self.assertRefused(refused, "too_many_connections")
        self.assertBystanderServed()
        log = self.log()
        self.assertIn("raised from 128; hard limit 256", log)
        self.assertNotIn("Too many open files", log)

    def test_past_the_process_cap_new_connections_are_told_and_none_fails_to_accept(self):
        # 256 descriptors less a reserve of 64: 192 connections at most.
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            self.open_flood(source, 100)
        refused = self.refusals(300 - 192)
        # The probe that saw the realm up may still count for an instant
        # (its end not yet seen): one more refusal then.
        self.assertIn(len(refused), (300 - 192, 300 - 192 + 1))
        self.assertRefused(refused, "unavailable")
        for sock in self.flood:
            sock.close()
        self.flood, self.reset_at_once = [], []
        deadline = time.monotonic() + DEADLINE
        while True:  # served once the realm has seen the flood's ends
            try:
                self.assertBystanderServed()
                break
            except (AssertionError, OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertNotIn("Too many open files", self.log())
