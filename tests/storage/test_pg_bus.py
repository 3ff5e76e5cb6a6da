"""
The PostgreSQL bus between a realm's processes (L{multirealm.storage.pg_bus}),
against a real server: skipped unless MULTIREALM_TEST_POSTGRES names one.
"""

import json
import os
import secrets
import threading
import time

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from multirealm import config
from multirealm.service import build_realm_service
from multirealm.storage.pg_bus import PostgresBus
from tests import postgres
from tests.helpers import InlineHasher, wait_until
from tests.test_service import REALMS_INI

SERVER = os.environ.get("MULTIREALM_TEST_POSTGRES")

try:
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None




class Heard:
    """An IClusterReceiver that keeps what it hears."""

    def __init__(self):
        self.payloads = []
        self.misses = 0
        self.losses = 0

    def received(self, process, text):
        self.payloads.append((process, text))

    def lost(self):
        self.losses += 1

    def missed(self):
        self.misses += 1


def _run(sql, *args):
    """Run C{sql} on the server (in a thread: it blocks)."""
    def run():
        with psycopg.connect(SERVER, autocommit=True) as conn:
            cursor = conn.execute(sql, args)
            return cursor.fetchall() if cursor.description else None
    return deferToThread(run)


class PostgresBusTests(unittest.TestCase):
    if SERVER is None or psycopg is None:
        skip = "MULTIREALM_TEST_POSTGRES is not set"

    def setUp(self):
        self.conninfo = postgres.database(self, "bus")  # dropped at cleanup
        self.realm = "t" + secrets.token_hex(4)  # a channel of this test's own

    def bus(self):
        bus = PostgresBus(self.conninfo, self.realm, reactor)
        bus.DELAYS = (0.05, 0.1)
        bus.WAIT_SECONDS = 0.1
        heard = Heard()
        bus.start(heard)
        self.addCleanup(bus.stop)
        return bus, heard

    @defer.inlineCallbacks
    def listening(self, *buses):
        yield wait_until(lambda: all(b.listener_pid is not None for b in buses))

    @defer.inlineCallbacks
    def test_two_processes_hear_each_other_and_not_themselves(self):
        (a, heard_a), (b, heard_b) = self.bus(), self.bus()
        yield self.listening(a, b)
        a.publish("m 1")
        a.publish("m 2")
        b.publish("h 7")
        yield wait_until(lambda: len(heard_b.payloads) == 2 and len(heard_a.payloads) == 1)
        self.assertEqual(heard_b.payloads, [(a.process, "m 1"), (a.process, "m 2")])
        self.assertEqual(heard_a.payloads, [(b.process, "h 7")])
        yield a.stop()
        yield b.stop()
        self.assertEqual((heard_a.misses, heard_b.misses), (0, 0))

    @defer.inlineCallbacks
    def test_a_payload_arrives_as_it_comes_not_when_the_listeners_wait_ends(self):
        (a, _), (b, heard_b) = self.bus(), self.bus()
        yield self.listening(a, b)
        b.WAIT_SECONDS = 3600  # read at its next wait: what is waited on now is 0.1 s
        yield task.deferLater(reactor, 0.2)
        a.publish("m 1")
        yield wait_until(lambda: heard_b.payloads, timeout=5)
        self.assertEqual(heard_b.payloads, [(a.process, "m 1")])
        stopped = b.stop()
        a.publish("m 2")  # it ends B's wait of an hour
        yield stopped

    @defer.inlineCallbacks
    def test_what_one_turn_publishes_goes_in_bounded_statements_all_in_order(self):
        (a, _), (b, heard_b) = self.bus(), self.bus()
        yield self.listening(a, b)
        sent = [f"m {n}" for n in range(2 * a.BATCH_PAYLOADS + 10)]  # PostgreSQL: <= 1664 a SELECT
        for text in sent:
            a.publish(text)
        yield wait_until(lambda: len(heard_b.payloads) >= len(sent))
        self.assertEqual([text for _, text in heard_b.payloads], sent)
        big = ["x" * 7000 + str(n) for n in range(200)]  # past BATCH_BYTES
        del heard_b.payloads[:]
        for text in big:
            a.publish(text)
        yield wait_until(lambda: len(heard_b.payloads) >= len(big))
        self.assertEqual([text for _, text in heard_b.payloads], big)

    @defer.inlineCallbacks
    def test_a_payload_is_at_most_max_bytes(self):
        (a, _), (b, heard_b) = self.bus(), self.bus()
        yield self.listening(a, b)
        self.assertRaises(ValueError, a.publish, "x" * (a.MAX_BYTES + 1))
        self.assertRaises(ValueError, a.publish, "é" * (a.MAX_BYTES // 2 + 1))  # bytes, not characters
        a.publish("y" * a.MAX_BYTES)  # the server takes it (its limit: under 8000 bytes)
        yield wait_until(lambda: heard_b.payloads)
        self.assertEqual(heard_b.payloads, [(a.process, "y" * a.MAX_BYTES)])

    @defer.inlineCallbacks
    def test_a_reactor_that_fell_behind_gets_at_most_max_handed_then_is_told_it_missed(self):
        (a, _), (b, heard_b) = self.bus(), self.bus()
        yield self.listening(a, b)
        b.MAX_HANDED = 5
        b._room = threading.Semaphore(b.MAX_HANDED)  # as start() makes it
        # The reactor (this thread) is busy while another process publishes 50.
        with psycopg.connect(self.conninfo, autocommit=True) as other:
            other.execute(
                "SELECT " + ", ".join(["pg_notify(%s, %s)"] * 50),
                [v for n in range(50) for v in (b.channel, f"elsewhere m {n}")],
            )
            deadline = time.monotonic() + 10
            while getattr(b, "dropped", 0) < 45 and time.monotonic() < deadline:
                time.sleep(0.01)
        yield wait_until(lambda: heard_b.misses or len(heard_b.payloads) == 50)
        # 5 waited on the reactor, not 50; it catches up from the database.
        self.assertEqual(heard_b.payloads, [("elsewhere", f"m {n}") for n in range(5)])
        self.assertEqual((heard_b.misses, b.dropped), (1, 45))
        a.publish("m 50")  # room again
        yield wait_until(lambda: len(heard_b.payloads) == 6)
        self.assertEqual(heard_b.payloads[-1], (a.process, "m 50"))

    @defer.inlineCallbacks
    def test_a_listener_whose_backend_ends_says_it_missed_then_connects_again(self):
        (a, _), (b, heard_b) = self.bus(), self.bus()
        b.DELAYS = (1.0,)  # time to see it told before it connects again
        yield self.listening(a, b)
        pid = b.listener_pid
        yield _run("SELECT pg_terminate_backend(%s)", pid)
        # Told at the break (cached sessions go at once), before connecting
        # again (DELAYS[0] later), and that it missed things when back.
        yield wait_until(lambda: heard_b.losses == 1)
        self.assertEqual((b.listener_pid, heard_b.misses), (pid, 0))
        yield wait_until(lambda: heard_b.misses == 1)
        self.assertNotEqual(b.listener_pid, pid)
        a.publish("m 3")
        yield wait_until(lambda: heard_b.payloads)
        self.assertEqual(heard_b.payloads, [(a.process, "m 3")])
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_a_publisher_whose_backend_ends_connects_again_and_says_it_missed(self):
        (a, heard_a), (b, heard_b) = self.bus(), self.bus()
        yield self.listening(a, b)
        a.publish("m 1")
        yield wait_until(lambda: heard_b.payloads)
        yield _run("SELECT pg_terminate_backend(%s)", a.publisher_pid)
        a.publish("m 2")  # lost with the connection
        yield wait_until(lambda: not a._sending)
        a.publish("m 3")
        yield wait_until(lambda: heard_a.misses == 1)
        yield wait_until(lambda: len(heard_b.payloads) == 2)
        self.assertEqual(heard_b.payloads, [(a.process, "m 1"), (a.process, "m 3")])


class Talker(LineReceiver):
    """A chat connection: C{ask} sends a line and fires with its reply; events are kept."""

    delimiter = b"\r\n\r\n"

    def __init__(self):
        self.waiting = []
        self.events = []

    def ask(self, line):
        d = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(line.encode() + b"\r\n")
        return d

    def lineReceived(self, line):
        reply = json.loads(line)
        if "event" in reply:
            self.events.append(reply)
        else:
            self.waiting.pop(0).callback(reply)


class TwoServicesTests(unittest.TestCase):
    """Two processes of one realm whose realms.ini names a PostgreSQL database."""

    if SERVER is None or psycopg is None:
        skip = "MULTIREALM_TEST_POSTGRES is not set"

    def setUp(self):
        self.conninfo = postgres.database(self, "bus")

    def service(self, path):
        service = build_realm_service(config.load(path), "1", reactor, hasher=InlineHasher())
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def connect(self, service):
        port = service.getServiceNamed("chat").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        talker = yield endpoints.connectProtocol(endpoint, Talker())
        self.addCleanup(talker.transport.loseConnection)
        return talker

    @defer.inlineCallbacks
    def test_a_message_sent_on_one_process_is_live_on_the_other(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI + f"database = {self.conninfo}\n")
        a, b = self.service(path), self.service(path)
        self.assertIsInstance(a.getServiceNamed("core").realm.cluster._bus, PostgresBus)
        alice = yield self.connect(a)
        bob = yield self.connect(b)
        yield alice.ask("register alice pw")
        yield alice.ask("auth alice pw")
        yield bob.ask("register bob pw")
        yield bob.ask("auth bob pw")
        for realm in (a, b):  # both listen
            bus = realm.getServiceNamed("core").realm.cluster._bus
            yield wait_until(lambda: bus.listener_pid is not None)
        yield alice.ask("subscribe -")
        sent = yield bob.ask("send - alice hello")
        yield wait_until(lambda: alice.events)
        self.assertEqual([(e["event"], e["message"]["id"]) for e in alice.events],
                         [("message", sent["id"])])
