"""
One realm on several processes sharing one PostgreSQL database, end to end
over real loopback sockets (issue 17): realm 1 runs as two C{twistd}
processes, A and B, and realm 2 as one process on SQLite.

A and B stand for two machines: their realms.ini files differ only in
realm 1's C{host} (127.0.0.1 for A, 127.0.0.2 for B), so a test knows which
process a connection reaches.  Realm 2 links to realm 1 at 127.0.0.1 (A);
realm 1's link to realm 2 is run by whichever process holds its lease.
One test starts both processes with the same command and the same
realms.ini, the way one machine runs them (SO_REUSEPORT).

Skipped unless MULTIREALM_TEST_POSTGRES names a PostgreSQL server (CI
always sets it).  Every wait is bounded; every process is killed at
cleanup and every database dropped.
"""

import os
import signal
import socket
import urllib.request

from tests import postgres
from tests.test_end_to_end import DEADLINE, Connection, TwistdTestCase, free_port, listens
from tests.test_federation_end_to_end import everything, wait_for

NETWORK = """
[network]
secret = test-secret
history_limit = 5000
"""

REALM = """
[realm:{name}]
host = {host}
chat_port = {chat}
realm_port = {realm}
http_port = {http}
data_dir = data/realm{name}
"""


class HostConnection(Connection):
    """A L{Connection} to C{host}, not only 127.0.0.1."""

    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=DEADLINE)
        self.buffer = b""


def next_event(connection, kind):
    """The next event of C{kind} on a subscribed connection (others are skipped)."""
    while True:
        reply = connection.read()
        if reply.get("event") == kind:
            return reply


class ClusterTestCase(TwistdTestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.database = postgres.database(self, "cluster")  # SkipTest without a server
        self.ports = {f"{kind}{name}": free_port()
                      for kind in ("chat", "realm", "http") for name in ("1", "2")}
        self.configs = {
            host: self.write_config(f"realms-{host}.ini", host)
            for host in ("127.0.0.1", "127.0.0.2")
        }

    def write_config(self, file_name, host_of_1):
        text = NETWORK
        for name, host in (("1", host_of_1), ("2", "127.0.0.1")):
            text += REALM.format(name=name, host=host, chat=self.ports[f"chat{name}"],
                                 realm=self.ports[f"realm{name}"], http=self.ports[f"http{name}"])
            if name == "1":
                text += f"database = {self.database}\n"
        path = os.path.join(self.folder, file_name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self, realm, host="127.0.0.1"):
        """Start one process of C{realm}; (the process, a connection to it once it listens)."""
        process = self.run_twistd(f"--realm={realm}", f"--config={self.configs[host]}")

        def attempt():
            if process.poll() is not None:
                raise AssertionError(f"realm {realm} at {host} exited: {self.stop(process)}")
            try:
                return HostConnection(self.ports[f"chat{realm}"], host)
            except OSError:
                return None

        connection = wait_for(f"realm {realm} at {host}", attempt)
        self.addCleanup(connection.close)
        return process, connection

    def connect(self, realm, host="127.0.0.1"):
        connection = HostConnection(self.ports[f"chat{realm}"], host)
        self.addCleanup(connection.close)
        return connection

    def linked(self, connection):
        return all(r["linked"] for r in connection.ask("listrealms")["realms"])

    def link_here(self, host):
        """Whether the process of realm 1 at C{host} runs its link to realm 2 (/metrics)."""
        url = f"http://{host}:{self.ports['http1']}/metrics"
        with urllib.request.urlopen(url, timeout=DEADLINE) as response:
            return 'multirealm_peer_link_here{peer="2"} 1.0' in response.read().decode()


class TwoProcessesTests(ClusterTestCase):
    def test_a_user_on_each_process_chat_live(self):
        a, on_a = self.start("1", "127.0.0.1")
        b, on_b = self.start("1", "127.0.0.2")
        self.assertEqual(on_a.ask("register alice pw")["status"], "OK")
        self.assertEqual(on_b.ask("register bob pw")["status"], "OK")
        # A session made on one process works on the other.
        token = on_a.ask("auth alice pw")["tokenid"]
        self.assertEqual(on_b.ask(f"inbox {token}")["status"], "OK")
        self.assertEqual(on_b.ask("auth bob pw")["status"], "OK")
        alice_events = self.connect("1", "127.0.0.1")
        bob_events = self.connect("1", "127.0.0.2")
        alice_events.ask("auth alice pw", "subscribe -")
        bob_events.ask("auth bob pw", "subscribe -")
        self.assertEqual(on_b.ask("send - alice hello from B")["status"], "OK")
        self.assertEqual(next_event(alice_events, "message")["message"]["msg"], "hello from B")
        self.assertEqual(on_a.ask("send - bob hello from A")["status"], "OK")
        self.assertEqual(next_event(bob_events, "message")["message"]["msg"], "hello from A")
        # A read marker set on A reaches alice's connection on B.
        alice_on_b = self.connect("1", "127.0.0.2")
        alice_on_b.ask("auth alice pw", "subscribe -")
        self.assertEqual(on_b.ask("send - alice again")["status"], "OK")
        message_id = on_a.ask("inbox -")["messages"][-1]["id"]  # "again" (alice's own
        # message would already be read: sending marks the conversation read)
        self.assertEqual(on_a.ask(f"markread - bob {message_id}")["status"], "OK")
        self.assertEqual(next_event(alice_on_b, "read")["with"], "bob")
        # A logout on A ends the session on B as soon as the bus tells B
        # (a fraction of a millisecond: benchmarks/README.md).
        self.assertEqual(on_a.ask(f"logout {token}")["status"], "OK")
        wait_for("the session to end on B",
                 lambda: on_b.ask(f"inbox {token}").get("code") == "invalid_session", deadline=2)

    def test_pipelined_sends_to_both_are_each_stored_once_in_order(self):
        count = 500
        a, on_a = self.start("1", "127.0.0.1")
        b, on_b = self.start("1", "127.0.0.2")
        on_a.ask("register alice pw", "register bob pw", "register carol pw")
        on_a.ask("auth alice pw")
        on_b.ask("auth bob pw")
        for sender, connection in (("alice", on_a), ("bob", on_b)):
            lines = [f"send - carol {sender}{i}" for i in range(count)]
            connection.sock.sendall("".join(line + "\r\n" for line in lines).encode())
        for connection in (on_a, on_b):
            replies = [connection.read() for _ in range(count)]
            self.assertEqual({r["status"] for r in replies}, {"OK"})
        carol = self.connect("1", "127.0.0.2")
        carol.ask("auth carol pw")
        got = [m["msg"] for m in everything(carol, "inbox -")]
        self.assertEqual(len(got), 2 * count)
        for sender in ("alice", "bob"):
            self.assertEqual([m for m in got if m.startswith(sender)],
                             [f"{sender}{i}" for i in range(count)])
        ids = [m["id"] for m in everything(carol, "inbox -")]
        self.assertEqual(len(set(ids)), len(ids))

    def test_the_outbox_moves_to_the_other_process_when_its_holder_is_killed(self):
        count = 400
        two, heru = self.start("2")
        heru.ask("register heru pw", "auth heru pw")
        a, on_a = self.start("1", "127.0.0.1")
        b, on_b = self.start("1", "127.0.0.2")
        on_a.ask("register alice pw", "register bob pw")
        on_a.ask("auth alice pw")
        on_b.ask("auth bob pw")
        holder = wait_for("a process to hold realm 2's link", lambda: (
            "a" if self.link_here("127.0.0.1") else "b" if self.link_here("127.0.0.2")
            else None))
        processes = {"a": (a, on_a), "b": (b, on_b)}
        survivor = processes["b" if holder == "a" else "a"][1]
        survivor_host = "127.0.0.2" if holder == "a" else "127.0.0.1"
        # The process without the link answers with the realm's view.
        wait_for("listrealms on the other process to say linked",
                 lambda: self.linked(survivor), deadline=2)
        # Realm 2's link lands on A (127.0.0.1): B knows heru's presence from A.
        self.connect("2").ask("auth heru pw", "subscribe -")
        wait_for("heru@2 online on B", lambda: on_b.ask("presence - heru@2")["presence"]
                 ["heru@2"]["online"], deadline=10)
        # Both stream to heru@2; the holder dies once its first is answered.
        for sender, connection in (("alice", on_a), ("bob", on_b)):
            lines = [f"send - heru@2 {sender}{i}" for i in range(count)]
            connection.sock.sendall("".join(line + "\r\n" for line in lines).encode())
        victim, victim_connection = processes[holder]
        answered = {"alice": 0, "bob": 0}
        for sender, connection in (("alice", on_a), ("bob", on_b)):
            if connection is victim_connection:
                first = connection.read()
                self.assertEqual(first["status"], "OK")
                answered[sender] = 1
                victim.send_signal(signal.SIGKILL)
                victim.communicate(timeout=DEADLINE)
                # What was answered before the kill: read whatever arrived.
                try:
                    while True:
                        reply = connection.read()
                        if reply.get("status") == "OK":
                            answered[sender] += 1
                except (ConnectionError, OSError):
                    pass
            else:
                replies = [connection.read() for _ in range(count)]
                self.assertEqual({r["status"] for r in replies}, {"OK"})
                answered[sender] = count
        wait_for("the survivor to take realm 2's link",
                 lambda: self.link_here(survivor_host), deadline=30)
        expected = {s: [f"{s}{i}" for i in range(n)] for s, n in answered.items()}

        def arrived():
            got = [m["msg"] for m in everything(heru, "inbox -")]
            per_sender = {s: [m for m in got if m.startswith(s)] for s in expected}
            done = all(len(per_sender[s]) >= len(expected[s]) for s in expected)
            return per_sender if done else None

        per_sender = wait_for("every acknowledged message at realm 2", arrived, deadline=60)
        for sender, messages in per_sender.items():
            # Every acknowledged message, once, in order (and possibly more of
            # the killed process's: stored, but its answer was lost with it).
            self.assertEqual(messages[:len(expected[sender])], expected[sender])
            self.assertEqual(len(set(messages)), len(messages))
        wait_for("an empty outbox",
                 lambda: survivor.ask("listrealms")["realms"][0]["pending"] == 0)


class OneMachineTests(ClusterTestCase):
    def test_the_same_command_twice_shares_the_ports(self):
        """
        Both processes bind realm 1's ports (SO_REUSEPORT); the kernel
        spreads connections between them: killing one drops only the
        connections it held, and the other serves every new one.
        """
        a, first = self.start("1", "127.0.0.1")
        first.ask("register alice pw")
        b = self.run_twistd("--realm=1", f"--config={self.configs['127.0.0.1']}")
        self.addCleanup(self.kill, b)

        wait_for("process B to listen", lambda: listens(b, self.ports["chat1"]))
        connections = self.spread(40)
        a.send_signal(signal.SIGKILL)
        a.communicate(timeout=DEADLINE)
        alive = 0
        for connection in connections:
            try:
                alive += connection.ask("auth alice pw")["status"] == "OK"
            except (ConnectionError, OSError):
                pass
        # Some connections were on A (dropped), some on B (still served).
        self.assertTrue(0 < alive < len(connections), alive)
        for _ in range(10):
            self.assertEqual(self.connect("1").ask("auth alice pw")["status"], "OK")

    def spread(self, count):
        connections = []
        for _ in range(count):
            connection = self.connect("1")
            connection.sock.settimeout(DEADLINE)
            connections.append(connection)
        return connections
