"""
The log: every line of a realm names it, a link's story is one line an
event on each side, nothing secret is logged, and the JSON observer writes
one parseable object a line (multirealm.logs).
"""

import ast
import io
import json
import os
import pathlib
import signal
import subprocess
import time

from twisted.internet import defer, endpoints, protocol, reactor, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, formatEventAsClassicLogText, globalLogPublisher
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.trial import unittest

import multirealm
from multirealm import config
from multirealm.federation.frames import Ack
from multirealm.federation.link import LinkFactory
from multirealm.federation.queue import PeerQueue
from multirealm.federation.server import RealmServerFactory
from multirealm.federation.story import LinkStory
from multirealm.logs import RealmLogger, json_lines
from multirealm.names import Address
from multirealm.service import build_realm_service
from tests.helpers import Client, InlineHasher, make_realm, wait_until
from tests.test_end_to_end import DEADLINE, Connection, TwistdTestCase, free_port, twistd

# Modules whose lines are about the whole process, not one realm.
PROCESS_WIDE = {"connections.py", "tap.py"}
LEVELS = {"debug", "info", "warn", "error", "critical", "failure"}


def _log_calls(path):
    """The (line, keyword names) of each log.<level>(...) call in the module at C{path}."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"):
            yield node.lineno, {k.arg for k in node.keywords}


class EveryCallNamesItsRealmTests(unittest.TestCase):
    def test_every_log_call_of_the_server_passes_its_realm(self):
        package = pathlib.Path(multirealm.__file__).parent
        missing = []
        for path in sorted(package.rglob("*.py")):
            relative = path.relative_to(package)
            if str(relative) in PROCESS_WIDE or relative.parts[0] == "client":
                continue
            text = path.read_text()
            if "Logger()" in text:
                self.assertIn("log = RealmLogger()", text, f"{relative}: a plain Logger")
            missing += [f"{relative}:{line}" for line, keywords in _log_calls(path)
                        if "realm" not in keywords]
        self.assertEqual(missing, [])

    def test_a_realm_logger_names_the_realm_in_its_fields_and_its_system(self):
        events = []
        log = RealmLogger(observer=events.append)
        realm = make_realm(self, name="7")
        log.info("hello {peer}", peer="2", realm=realm)
        (event,) = events
        self.assertEqual((event["realm"], event["log_system"]), ("7", "realm 7"))
        self.assertIn("[realm 7] hello 2", formatEventAsClassicLogText(event))


class Captured:
    """Every event published while a test runs."""

    def __init__(self, test):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def story(self, realm, kind, way=""):
        """The link lines of C{realm} of kind C{kind}, as text (C{way}: "to", "from")."""
        texts = [formatEvent(e) for e in self.events
                 if e.get("realm") == realm and e.get("link_event") == kind]
        return [text for text in texts if text.startswith(f"link {way}")]

    def of_multirealm(self):
        return [e for e in self.events if e.get("log_namespace", "").startswith("multirealm")]


TWO_REALMS_INI = """
[network]
secret = {secret}
link_max_delay = 0.1

[realm:{name}]
host = 127.0.0.1
chat_port = 0
realm_port = {mine}
http_port = 0
data_dir = {data}

[realm:{other}]
host = 127.0.0.1
chat_port = 0
realm_port = {theirs}
http_port = 0
data_dir = {data}-unused
"""


class LinkStoryTests(unittest.TestCase):
    """Two realms in this process, on real loopback sockets."""

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.realm_ports = {"1": free_port(), "2": free_port()}
        self.log = Captured(self)

    def network(self, name, secret="s"):
        """The realms.ini realm C{name} reads (each its own: secrets may differ)."""
        other = "2" if name == "1" else "1"
        path = os.path.join(self.folder, f"realms-{name}.ini")
        with open(path, "w") as f:
            f.write(TWO_REALMS_INI.format(
                secret=secret, name=name, other=other, mine=self.realm_ports[name],
                theirs=self.realm_ports[other], data=os.path.join(self.folder, f"realm{name}"),
            ))
        return config.load(path)

    def start(self, name, secret="s"):
        service = build_realm_service(self.network(name, secret), name, reactor,
                                      hasher=InlineHasher())
        service.privilegedStartService()
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def lines(self, realm, kind, way=""):
        return self.log.story(realm, kind, way)

    @defer.inlineCallbacks
    def test_a_link_that_fails_comes_up_drains_its_backlog_and_drops(self):
        one = self.start("1")
        realm = one.getServiceNamed("core").realm
        yield realm.register("alice", "pw")
        for n in range(3):
            yield realm.send("alice", realm.address("heru@2"), f"note {n}")
        # Realm 2 is not running: many attempts, one line.
        attempts = one.getServiceNamed("link-2").service.factory
        yield wait_until(lambda: attempts.retries >= 3)
        (failing,) = self.lines("1", "failing")
        self.assertRegex(failing, r"^link to realm 2 failing: cannot connect: .*;"
                                  r" \d+ messages queued")

        two = self.start("2")
        yield two.getServiceNamed("core").realm.register("heru", "pw")  # before the link is up
        yield wait_until(lambda: self.lines("1", "drained") and len(self.lines("2", "up")) == 2)
        (up,) = self.lines("1", "up", "to")
        self.assertRegex(up, r"^link to realm 2 up after \d+ failed attempts in \d+ s:"
                             r" 3 messages queued$")
        self.assertEqual(self.lines("1", "backlog"),
                         ["link to realm 2: sending a backlog of 3 messages"])
        (drained,) = self.lines("1", "drained")
        self.assertRegex(drained, r"^link to realm 2: backlog of 3 messages drained in [\d.]+ s$")
        (incoming,) = self.lines("2", "up", "from")
        self.assertRegex(incoming, r"^link from realm 1 \(127\.0\.0\.1:\d+\) up$")

        # Realm 2 stops (the links it accepted end, as when its process ends).
        yield two.stopService()
        _cut_accepted(self.realm_ports["2"])
        yield wait_until(lambda: self.lines("1", "down", "to")
                              and len(self.lines("1", "failing")) >= 2)
        (down,) = self.lines("1", "down", "to")
        self.assertRegex(down, r"^link to realm 2 down after [\d.]+ s: link lost: .*;"
                               r" 0 frames unanswered, 0 messages queued$")
        (closed,) = self.lines("2", "down", "to")  # the side that stopped
        self.assertRegex(closed, r"^link to realm 1 closed after [\d.]+ s: this realm stops")
        (cut,) = self.lines("2", "down", "from")
        self.assertRegex(cut, r"^link from realm 1 closed after [\d.]+ s: this realm stops;"
                              r" 0 frames unanswered$")
        # Failing again, said again once.
        self.assertRegex(self.lines("1", "failing")[1],
                         r"^link to realm 2 failing: cannot connect")
        yield wait_until(lambda: self.lines("1", "down", "from"))
        (lost,) = self.lines("1", "down", "from")  # realm 2's link to realm 1
        self.assertRegex(lost, r"^link from realm 2 down after [\d.]+ s: .*; 0 frames unanswered$")

    @defer.inlineCallbacks
    def test_every_line_of_two_realms_in_one_process_names_its_own(self):
        self.start("1")
        self.start("2")
        yield wait_until(lambda: len(self.log.story("1", "up")) >= 2
                              and len(self.log.story("2", "up")) >= 2)
        events = self.log.of_multirealm()
        self.assertTrue(events)
        for event in events:
            self.assertIn(event.get("realm"), ("1", "2"), event)
            self.assertEqual(event["log_system"], f"realm {event['realm']}")
            peer = event.get("peer")
            if peer is not None:  # a line about a link names the other end as its peer
                self.assertEqual({event["realm"], peer}, {"1", "2"}, event)

    @defer.inlineCallbacks
    def test_a_handshake_that_fails_says_why_once_on_each_side(self):
        one, two = self.start("1", secret="one secret"), self.start("2", secret="another secret")
        links = [service.getServiceNamed(name).service.factory
                 for service, name in ((one, "link-2"), (two, "link-1"))]
        yield wait_until(lambda: all(link.retries >= 4 for link in links))
        for side, peer in (("1", "2"), ("2", "1")):
            (failing,) = self.lines(side, "failing")
            self.assertIn(f"link to realm {peer} failing: handshake failed: the peer could not"
                          " prove its realm (another link secret?)", failing)
            # Each sees the other hang up on its challenge: said once (or
            # twice, if a hang-up was once not clean), not once an attempt.
            hung_up = self.lines(side, "handshake_failed")
            self.assertIn(len(hung_up), (1, 2), hung_up)
            for line in hung_up:
                self.assertRegex(line, rf"^link from realm {peer} \(127\.0\.0\.1:\d+\) failing:"
                                       r" hung up in the handshake: ")

    @defer.inlineCallbacks
    def test_a_realm_that_is_not_a_peer_is_refused_with_its_reason(self):
        self.start("2")
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.realm_ports["2"])
        connection = (yield endpoints.connectProtocol(endpoint, protocol.Protocol())).transport
        connection.write(b"HELLO 9 " + b"0" * 32 + b"\r\n")
        yield wait_until(lambda: self.lines("2", "handshake_failed"))
        (refused,) = self.lines("2", "handshake_failed")
        self.assertIn("link from an unknown realm (127.0.0.1:", refused)
        self.assertIn("failing: handshake refused: a realm that is not linked to this realm",
                      refused)
        connection.loseConnection()


class UnknownRealmTests(unittest.TestCase):
    def test_realms_that_are_no_peer_are_one_line_whatever_names_they_claim(self):
        # Anyone may reach the realm port: a new name each attempt is no new line.
        log = Captured(self)
        realm = make_realm(self, name="2", peers=("1",))
        factory = RealmServerFactory(realm, lambda realm, peer: "s", 65536, realm.clock)
        for n in range(20):
            link = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + n))
            transport = StringTransport()
            link.makeConnection(transport)
            link.dataReceived(b"HELLO x%d %s\r\n" % (n, b"0" * 32))
            self.assertIn(b"'x%d' is not linked" % n, transport.value())
            link.connectionLost(Failure(ConnectionDone()))
        (refused,) = log.story("2", "handshake_failed")
        self.assertIn("failing: handshake refused: a realm that is not linked to this realm",
                      refused)

    def test_reasons_that_take_turns_are_each_said_once(self):
        # Garbage, then a stranger's HELLO, again and again: two lines, not one an attempt.
        log = Captured(self)
        realm = make_realm(self, name="2", peers=("1",))
        factory = RealmServerFactory(realm, lambda realm, peer: "s", 65536, realm.clock)
        for n in range(20):
            link = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + n))
            link.makeConnection(StringTransport())
            link.dataReceived(b"HELLO 9 %s\r\n" % (b"0" * 32) if n % 2 else b"GET /\r\n")
            link.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(log.story("2", "handshake_failed")), 2)


def _cut_accepted(port):
    """Abort every connection accepted on loopback port C{port}."""
    for reader in reactor.getReaders():
        if isinstance(reader, tcp.Server) and reader.getHost().port == port:
            reader.abortConnection()


class FlappingLinkTests(unittest.TestCase):
    """A peer that closes each link as soon as it is up ("not now", at once)."""

    def setUp(self):
        self.log = Captured(self)
        self.realm = make_realm(self, name="1", peers=("2",))
        self.clock = self.realm.clock
        self.queue = PeerQueue(self.realm, "2")
        self.links = LinkFactory(self.realm, "2", "s", self.queue, 65536, self.clock)
        self.addCleanup(self.links.stopTrying)

    def link_up(self):
        link = self.links.buildProtocol(None)
        link.makeConnection(StringTransport())
        link._welcome('{"status": "OK", "message": "linked"}')
        return link

    def test_links_lost_as_soon_as_up_say_one_line_until_one_stays_up(self):
        for _ in range(5):
            link = self.link_up()
            self.clock.advance(1)
            link.close("storage_full: the disk is full")
            link.connectionLost(Failure(ConnectionDone()))
            self.clock.advance(1)
        # The first link lost early is said (a peer restarted, maybe), up and
        # down; from the second on, one line.
        self.assertEqual(len(self.log.story("1", "up")), 2)
        self.assertEqual(len(self.log.story("1", "down")), 1)
        self.assertEqual(self.log.story("1", "failing"), [
            "link to realm 2 failing: lost within 10 s of coming up: storage_full: the disk"
            " is full; 0 messages queued; retrying at most 5 s apart (said again only for a"
            " new reason)",
        ])
        self.link_up()
        self.clock.advance(LinkStory.STEADY_SECONDS)
        self.assertEqual(self.log.story("1", "up")[2],
                         "link to realm 2 up after 4 failed attempts in 17 s: 0 messages queued")


class PeerTextTests(unittest.TestCase):
    """What a peer says is logged on one line, without control characters."""

    FORGED = "no\r\n2026-12-06T07:00:00+0000 [realm 1] forged\u001b[2J\u2028"

    def assertPlain(self, text):
        self.assertEqual([c for c in text if not c.isprintable()], [], text)

    def test_a_peers_refusal_of_the_handshake(self):
        log = Captured(self)
        realm = make_realm(self, name="1", peers=("2",))
        links = LinkFactory(realm, "2", "s", PeerQueue(realm, "2"), 65536, realm.clock)
        self.addCleanup(links.stopTrying)
        link = links.buildProtocol(None)
        link.makeConnection(StringTransport())
        link._welcome(json.dumps({"status": "ERROR", "code": "forbidden", "message": self.FORGED}))
        (failing,) = log.story("1", "failing")
        self.assertIn("refused by the peer: no  2026-12-06", failing)
        self.assertPlain(failing)

    def test_a_peers_refusal_for_now_that_closes_the_link(self):
        log = Captured(self)
        realm = make_realm(self, name="1", peers=("2",))
        queue = PeerQueue(realm, "2")
        links = LinkFactory(realm, "2", "s", queue, 65536, realm.clock)
        self.addCleanup(links.stopTrying)
        link = links.buildProtocol(None)
        link.makeConnection(StringTransport())
        link._welcome('{"status": "OK", "message": "linked"}')
        realm.clock.advance(60)
        message = realm.new_message("private", "heru", Address("bob", "2"), "hi")
        queue._in_flight[message.id] = (1, message)  # as sent
        queue.acked(Ack(message.id, "storage_full", self.FORGED))
        link.connectionLost(Failure(ConnectionDone()))
        (down,) = log.story("1", "down")
        self.assertIn("storage_full: no  2026-12-06", down)
        self.assertPlain(down)

    def test_lines_that_are_no_answer_are_said_once_a_link(self):
        log = Captured(self)
        realm = make_realm(self, name="1", peers=("2",))
        links = LinkFactory(realm, "2", "s", PeerQueue(realm, "2"), 65536, realm.clock)
        self.addCleanup(links.stopTrying)
        link = links.buildProtocol(None)
        link.makeConnection(StringTransport())
        link._welcome('{"status": "OK", "message": "linked"}')
        link.dataReceived(b"".join(b"garbage %d\r\n" % n for n in range(100)))
        said = [formatEvent(e) for e in log.of_multirealm() if "garbage" in formatEvent(e)]
        self.assertEqual(said, ["realm 2 sent 'garbage 0' (more lines that are no answer"
                                " on this link are not logged)"])

    def test_a_peers_refusal_of_a_forwarded_message(self):
        log = Captured(self)
        realm = make_realm(self, name="1", peers=("2",))
        message = realm.new_message("group", "heru", Address("team", "2"), "hi")._replace(
            sender=Address("heru", "3"))
        self.successResultOf(realm.delivery_failed("2", 1, message, self.FORGED, self.FORGED))
        (refused,) = [formatEvent(e) for e in log.of_multirealm() if "refused" in formatEvent(e)]
        self.assertPlain(refused)


class NoSecretsTests(unittest.TestCase):
    def test_a_failed_login_logs_no_password(self):
        log = Captured(self)
        realm = make_realm(self, name="1")
        client = Client(realm)
        client.ask("register alice correct-horse-battery")
        reply = client.ask("auth alice wrong-staple-9731")
        self.assertEqual(reply["status"], "ERROR", reply)
        texts = [formatEventAsClassicLogText(e) + repr(e) for e in log.events]
        self.assertTrue(any("failed login" in t for t in texts), texts)
        for text in texts:
            self.assertNotIn("wrong-staple-9731", text)
            self.assertNotIn("correct-horse-battery", text)


class HotPathTests(unittest.TestCase):
    def test_sending_logs_nothing(self):
        realm = make_realm(self, name="1")
        client = Client(realm)
        token = client.login("alice")
        client.login("bob")
        log = Captured(self)
        for n in range(20):
            self.assertEqual(client.ask(f"send {token} bob note {n}")["status"], "OK")
            self.assertEqual(client.ask(f"send {token} heru@2 note {n}")["status"], "OK")
        self.assertEqual([formatEvent(e) for e in log.events], [])


class JSONTests(unittest.TestCase):
    def observe(self, emit):
        out = io.StringIO()
        observer = json_lines(out)
        globalLogPublisher.addObserver(observer)
        try:
            emit()
        finally:
            globalLogPublisher.removeObserver(observer)
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def test_each_event_is_one_line_of_json_with_its_fields(self):
        log = RealmLogger()

        def emit():
            log.warn("link to realm {peer} down", peer="2", realm="1", link_event="down")
            log.failure("it broke", Failure(ValueError("boom")), realm="1")
            legacy_log.msg("Twisted's own line")

        down, broke, legacy = self.observe(emit)
        self.flushLoggedErrors(ValueError)
        self.assertEqual(
            {k: down[k] for k in ("level", "system", "realm", "peer", "link_event", "text")},
            {"level": "warn", "system": "realm 1", "realm": "1", "peer": "2",
             "link_event": "down", "text": "link to realm 2 down"},
        )
        self.assertRegex(down["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
        self.assertIn("ValueError: boom", broke["traceback"])
        self.assertEqual(legacy["text"], "Twisted's own line")
        self.assertNotIn("realm", legacy)


class TwistdJSONTests(TwistdTestCase):
    def test_twistd_with_the_json_logger_writes_json_lines(self):
        process = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "--logger=multirealm.logs.json_lines",
             "multirealm", "--realm=all", f"--config={self.config}"],
            cwd=self.folder, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.addCleanup(self.kill, process)
        deadline = time.monotonic() + DEADLINE
        while True:  # both realms up: realm 1 listening, realm 2 too
            try:
                Connection(self.ports["chat2"]).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.fail(f"did not start: {self.stop(process)}")
                time.sleep(0.05)
        time.sleep(0.5)  # let the links come up (not required: only more lines)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=DEADLINE)
        records = [json.loads(line) for line in out.decode().splitlines()]
        starting = [r["text"] for r in records if "starting on" in r["text"]]
        self.assertIn(f"realm 2 chat starting on {self.ports['chat2']}", starting)
        self.assertTrue({r.get("realm") for r in records} >= {"1", "2"}, records)
