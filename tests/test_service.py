"""
The realm's service tree in this process, on a real loopback port.
"""

import json
import os

from twisted.internet import defer, endpoints, reactor, task
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from multirealm import config, tap
from multirealm.connections import listen_backlog
from multirealm.service import build_realm_service
from tests.helpers import InlineHasher, parse_replies, wait_until

REALMS_INI = """
[network]
secret = s

[realm:1]
host = 127.0.0.1
chat_port = 0
realm_port = 0
http_port = 0
data_dir = data/realm1
"""


class Collector(LineReceiver):
    """Sends request lines; fires C{done} with the replies once all came."""

    def __init__(self, lines):
        self.lines = lines
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(b"".join(line + b"\r\n" for line in self.lines))

    def dataReceived(self, data):
        self.data += data
        if self.data.count(b"\r\n\r\n") == len(self.lines):
            self.transport.loseConnection()
            self.done.callback(parse_replies(self.data))


def started_realm(testcase, extra=""):
    """
    Realm 1 of L{REALMS_INI} (with C{extra} settings of its network) started
    in this process on free loopback ports, stopped at C{testcase}'s cleanup.
    """
    folder = os.path.abspath(testcase.mktemp())
    os.makedirs(folder)
    path = os.path.join(folder, "realms.ini")
    with open(path, "w") as f:
        f.write(REALMS_INI.replace("secret = s", "secret = s\n" + extra))
    service = build_realm_service(config.load(path), "1", reactor, hasher=InlineHasher())
    service.privilegedStartService()
    service.startService()
    testcase.addCleanup(service.stopService)
    return service


class ServiceTests(unittest.TestCase):
    def setUp(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI)
        self.network = config.load(path)

    def start(self):
        service = build_realm_service(self.network, "1", reactor, hasher=InlineHasher())
        service.privilegedStartService()
        service.startService()
        return service

    @defer.inlineCallbacks
    def talk(self, service, *lines):
        port = service.getServiceNamed("chat").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        client = Collector([line.encode() for line in lines])
        yield endpoints.connectProtocol(endpoint, client)
        replies = yield client.done.addTimeout(10, reactor)
        return replies

    @defer.inlineCallbacks
    def test_serves_then_stops_and_keeps_everything(self):
        service = self.start()
        replies = yield self.talk(service, "register a pw", "auth a pw", "send - a note to self")
        self.assertEqual([r["status"] for r in replies], ["OK"] * 3)
        token = replies[1]["tokenid"]
        yield service.stopService()

        again = self.start()
        self.addCleanup(again.stopService)
        (inbox,) = yield self.talk(again, f"inbox {token}")
        self.assertEqual([m["msg"] for m in inbox["messages"]], ["note to self"])

    @defer.inlineCallbacks
    def test_expired_sessions_are_purged_hourly(self):
        clock = task.Clock()
        clock.advance(1_700_000_000)
        service = build_realm_service(self.network, "1", reactor, InlineHasher(), clock=clock)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        core = service.getServiceNamed("core")
        yield core.realm.register("alice", "pw")
        yield core.realm.login("alice", "pw")

        def stored_sessions():
            return core.store.submit(
                lambda db: db.execute("SELECT count(*) FROM sessions").fetchone()[0],
                writes=False,
            )

        clock.advance(self.network.limits.session_days * 86400 - 3600)
        self.assertEqual((yield stored_sessions()), 1)  # not expired yet
        clock.advance(2 * 3600)  # expired, and the hourly purge has run since
        self.assertEqual((yield stored_sessions()), 0)

    @defer.inlineCallbacks
    def test_files_left_without_a_message_are_swept_at_start(self):
        files = os.path.join(self.network.realm("1").data_dir, "files")
        os.makedirs(os.path.join(files, "incoming"))
        orphan = os.path.join(files, "0" * 32)
        half = os.path.join(files, "incoming", "1" * 32 + ".part")
        for path in (orphan, half):
            with open(path, "wb") as f:
                f.write(b"left by a crash")
            os.utime(path, (1, 1))
        service = self.start()
        self.addCleanup(service.stopService)
        self.assertFalse(os.path.exists(half))  # swept before anything listens
        yield wait_until(lambda: not os.path.exists(orphan))

    def test_links_reconnect_within_link_max_delay(self):
        path = os.path.join(self.network.path.rsplit("/", 1)[0], "two.ini")
        with open(path, "w") as f:
            f.write(
                REALMS_INI.replace("secret = s", "secret = s\nlink_max_delay = 2.5")
                + "[realm:2]\nhost = 127.0.0.1\nchat_port = 0\nrealm_port = 0\n"
                "http_port = 0\ndata_dir = data/realm2\n"
            )
        service = build_realm_service(config.load(path), "1", reactor, hasher=InlineHasher())
        self.assertEqual(service.getServiceNamed("link-2").service.factory.maxDelay, 2.5)

    @defer.inlineCallbacks
    def test_the_realm_port_refuses_a_link_without_the_secret(self):
        service = self.start()
        self.addCleanup(service.stopService)
        port = service.getServiceNamed("realm-port").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        client = Collector([b"@id=a1;ts=2026-11-25T00:00:00+00:00 sendrealm eve alice hi"])
        client.dataReceived = lambda data: setattr(client, "data", client.data + data)
        client.connectionLost = lambda reason: client.done.callback(client.data)
        yield endpoints.connectProtocol(endpoint, client)
        data = yield client.done.addTimeout(10, reactor)
        self.assertEqual(json.loads(data)["code"], "forbidden")


class BacklogTests(unittest.TestCase):
    def service(self, extra=""):
        return started_realm(self, extra)

    def backlogs(self, service):
        return {
            name: service.getServiceNamed(name).endpoint.port.backlog
            for name in ("chat", "http", "realm-port")
        }

    def test_every_port_listens_with_the_system_maximum(self):
        expected = listen_backlog(0)
        self.assertGreater(expected, 50)  # Twisted's default, which drops a reconnect storm
        self.assertEqual(self.backlogs(self.service()),
                         {"chat": expected, "http": expected, "realm-port": expected})

    def test_the_backlog_is_a_setting(self):
        self.assertEqual(self.backlogs(self.service("listen_backlog = 77")),
                         {"chat": 77, "http": 77, "realm-port": 77})


class OneProcessTests(unittest.TestCase):
    def test_every_port_of_every_realm_of_a_process_shares_one_count(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI + "\n[realm:2]\nhost = 127.0.0.1\nchat_port = 0\n"
                    "realm_port = 0\nhttp_port = 0\ndata_dir = data/realm2\n")
        options = tap.Options()
        options.parseOptions(["--realm=all", f"--config={path}"])
        top = tap.makeService(options)
        realms = [top.getServiceNamed("realm-1"), top.getServiceNamed("realm-2")]
        counts = {
            id(realm.getServiceNamed(port).factory.connections)
            for realm in realms for port in ("chat", "http", "realm-port")
        }
        self.assertEqual(len(counts), 1)
        self.assertEqual(len(list(top)), 3)  # the two realms and the collector's tuning
        self.assertIsNotNone(top.getServiceNamed("collector-tuning"))
