"""
Federation end to end over real loopback sockets: three realms in one
C{twistd --realm=all} process, and two realms as separate processes that
are killed (-9) and restarted while a thousand messages are in flight.
Every wait is bounded; every process is killed at cleanup.
"""

import base64
import os
import signal
import time

from tests.test_end_to_end import DEADLINE, Connection, TwistdTestCase, free_port

THREE_REALMS_INI = """
[network]
secret = test-secret
# every message of a test in one history reply: without an id, a reply
# holds the newest ones
history_limit = 5000
"""

REALM = """
[realm:{name}]
host = 127.0.0.1
chat_port = {chat}
realm_port = {realm}
http_port = {http}
data_dir = data/realm{name}
"""


def wait_for(what, check, deadline=DEADLINE):
    """Poll C{check()} until it returns something true; fail after C{deadline}."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result or time.monotonic() > end:
            if not result:
                raise AssertionError(f"timed out waiting for {what}: {result!r}")
            return result
        time.sleep(0.05)


def write_realms_ini(folder, network, names):
    """
    A realms.ini in C{folder}: the C{network} section, then one realm per
    name on free loopback ports.  (its path, {"chat1": port, "http1": ...}).
    """
    ports, text = {}, network
    for name in names:
        mine = {kind: free_port() for kind in ("chat", "realm", "http")}
        ports.update({f"{kind}{name}": port for kind, port in mine.items()})
        text += REALM.format(name=name, **mine)
    path = os.path.join(folder, "realms.ini")
    with open(path, "w") as f:
        f.write(text)
    return path, ports


class FederationTestCase(TwistdTestCase):
    NAMES = ("1", "2", "3")

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.config, self.ports = write_realms_ini(self.folder, THREE_REALMS_INI, self.NAMES)

    def client(self, realm, user):
        """A connection to C{realm}, registered and logged in as C{user}."""
        connection = Connection(self.ports[f"chat{realm}"])
        self.addCleanup(connection.close)
        replies = connection.ask(f"register {user} pw", f"auth {user} pw")
        assert replies[1]["status"] == "OK", replies
        return connection

    def start(self, name):
        """Start realm C{name} as its own twistd; (process, a client once it is up)."""
        process = self.run_twistd(f"--realm={name}", f"--config={self.config}")
        return process, self.connect_when_up(name, process)

    def connect_when_up(self, realm, process):
        def attempt():
            if process.poll() is not None:
                raise AssertionError(f"realm {realm} exited: {self.stop(process)}")
            try:
                return Connection(self.ports[f"chat{realm}"])
            except OSError:
                return None

        connection = wait_for(f"realm {realm} to listen", attempt)
        self.addCleanup(connection.close)
        return connection

    def all_linked(self, client):
        return all(r["linked"] for r in client.ask("listrealms")["realms"])

    def three_linked_in_one_process(self):
        """
        Realms 1, 2 and 3 in one twistd (--realm=all), every link up:
        (the process, clients of alice@1, heru@2 and cy@3, registered and
        logged in).
        """
        process = self.run_twistd("--realm=all", f"--config={self.config}")
        for name in self.NAMES:
            self.connect_when_up(name, process)
        clients = tuple(self.client(n, u) for n, u in (("1", "alice"), ("2", "heru"), ("3", "cy")))
        for client in clients:
            wait_for("every link", lambda c=client: self.all_linked(c))
        return (process,) + clients


def everything(client, command):
    """Every message of C{command} (inbox -), in one reply (see history_limit)."""
    reply = client.ask(command)
    assert not reply["more"], "raise history_limit"
    return reply["messages"]


class LocalNetworkTests(FederationTestCase):
    def test_one_command_runs_three_linked_realms(self):
        process = self.run_twistd("--realm=all", f"--config={self.config}")
        for name in self.NAMES:
            self.connect_when_up(name, process)
        users = {"1": "alice", "2": "heru", "3": "cy"}
        clients = {name: self.client(name, user) for name, user in users.items()}
        for client in clients.values():
            wait_for("every link", lambda c=client: self.all_linked(c))
        # Every pair, both ways.
        for name, client in clients.items():
            for other, user in users.items():
                if other != name:
                    reply = client.ask(f"send - {user}@{other} hi from {name}")
                    self.assertEqual(reply["status"], "OK", reply)
        for name, client in clients.items():
            got = wait_for(
                f"two messages at realm {name}",
                lambda c=client: [m for m in c.ask("inbox -")["messages"]
                                  if m["msg"].startswith("hi from") and "@" in m["msg_from"]
                                  ] if len(c.ask("inbox -")["messages"]) >= 4 else None,
            )
            self.assertEqual(
                sorted(m["msg"] for m in got),
                sorted(f"hi from {o}" for o in self.NAMES if o != name),
            )
        # Each realm lists the others' users as they announced them.
        self.assertEqual(
            wait_for("realm 3's users", lambda: clients["1"].ask("listusers 3")["users"]), ["cy"]
        )
        # A group of realm 1 with a member on each realm.
        alice, heru, cy = clients["1"], clients["2"], clients["3"]
        self.assertEqual(alice.ask("creategroup - team heru@2 cy@3")["status"], "OK")
        wait_for("heru to be in team@1",
                 lambda: heru.ask("groupinbox - team@1")["status"] == "OK")
        self.assertEqual(heru.ask("sendgroup - team@1 from heru")["status"], "OK")
        wait_for("cy to be in team@1", lambda: cy.ask("groupinbox - team@1")["status"] == "OK")
        self.assertEqual(cy.ask("sendgroup - team@1 from cy")["status"], "OK")
        self.assertEqual(alice.ask("sendgroup - team from alice")["status"], "OK")
        for client, me in ((alice, "team"), (heru, "team@1"), (cy, "team@1")):
            texts = wait_for(
                "three posts everywhere",
                lambda c=client, g=me: (lambda t: t if len(t) == 3 else None)(
                    sorted(m["msg"] for m in c.ask(f"groupinbox - {g}")["messages"])
                ),
            )
            self.assertEqual(texts, ["from alice", "from cy", "from heru"])
        # A file crosses, as the original client sends it, and comes back whole.
        payload = os.urandom(3 * 2**20)
        alice.sock.sendall(
            b"sendfile - cy@3 big.bin \r\n\r\n" + base64.b64encode(payload) + b"\r\n\r\n"
        )
        self.assertEqual(alice.read()["message"], "Message Sent")
        entry = wait_for("the file at realm 3", lambda: [
            m for m in cy.ask("inbox -")["messages"] if "file_id" in m
        ])[0]
        self.assertEqual((entry["msg_from"], entry["file"], entry["size"]),
                         ("alice@1", "big.bin", len(payload)))
        got = cy.ask(f"getfile - {entry['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), payload)
        # A message to nobody comes back as a failure.
        sent = alice.ask("send - nobody@3 hello?")
        failure = wait_for(
            "the failure",
            lambda: [m for m in alice.ask("inbox -")["messages"] if "failed" in m],
        )[0]
        self.assertEqual(failure["failed"], {"id": sent["id"], "code": "no_such_user"})
        self.assertEqual(failure["msg_from"], "@3")
        log = self.stop(process)
        self.assertNotIn("Traceback", log)


class RestartTests(FederationTestCase):
    NAMES = ("1", "2")
    COUNT = 1000

    def send_all(self, client, first, sig_process=None):
        """
        Pipeline C{COUNT} sends; the moment the first is answered, kill -9
        C{sig_process}.  Every send must be answered OK (acknowledged).
        """
        lines = [f"send - heru@2 n{first + i}" for i in range(self.COUNT)]
        client.sock.sendall("".join(line + "\r\n" for line in lines).encode())
        replies = [client.read()]
        if sig_process is not None:
            sig_process.send_signal(signal.SIGKILL)
            sig_process.communicate(timeout=DEADLINE)
        replies += [client.read() for _ in range(self.COUNT - 1)]
        self.assertEqual({r["status"] for r in replies}, {"OK"})

    def test_every_acknowledged_message_arrives_once_and_in_order_across_kill_9(self):
        one, alice = self.start("1")
        two, heru = self.start("2")
        alice.ask("register alice pw", "auth alice pw")
        heru.ask("register heru pw")
        wait_for("the link", lambda: self.all_linked(alice))
        # The receiver dies while the first thousand stream to it.
        self.send_all(alice, 0, sig_process=two)
        two, heru = self.start("2")
        heru.ask("auth heru pw")
        # The sender dies while the second thousand are still in its outbox.
        wait_for("the link again", lambda: self.all_linked(alice))
        self.send_all(alice, self.COUNT)
        one.send_signal(signal.SIGKILL)
        one.communicate(timeout=DEADLINE)
        one, alice = self.start("1")
        expected = [f"n{i}" for i in range(2 * self.COUNT)]
        got = wait_for(
            "every message at realm 2",
            lambda: (lambda m: m if len(m) >= len(expected) else None)(
                everything(heru, "inbox -")
            ),
            deadline=30,
        )
        self.assertEqual([m["msg"] for m in got], expected)  # once each, in order
        alice.ask("auth alice pw")
        wait_for("an empty outbox",
                 lambda: alice.ask("listrealms")["realms"][0]["pending"] == 0)
