"""
GET /metrics: scraped over real loopback sockets from realms running in
this process, and parsed with prometheus_client's own parser.
"""

import json
import os

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.address import IPv4Address
from twisted.trial import unittest
from twisted.web import server
from twisted.web.client import Agent, readBody
from twisted.web.test.requesthelper import DummyRequest

from multirealm import config
from multirealm.commands import COMMANDS
from multirealm.service import build_realm_service
from multirealm.web.metrics import MetricsResource, is_allowed
from tests import test_service
from tests.helpers import InlineHasher, make_realm, make_store
from tests.test_end_to_end import free_port

NETWORK = """
[network]
secret = s
link_max_delay = 0.2

[realm:1]
host = 127.0.0.1
chat_port = 0
realm_port = {realm1}
http_port = 0
data_dir = data/realm1
{allow}

[realm:2]
host = 127.0.0.1
chat_port = 0
realm_port = {realm2}
http_port = 0
data_dir = data/realm2
"""


class Scrape:
    """One scrape, parsed: C{value(name, **labels)} and every sample's labels."""

    def __init__(self, text):
        self.samples = [
            sample
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name, **labels):
        """The sample C{name} with exactly C{labels}; 0 when there is none."""
        for sample in self.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
        return 0

    def labels(self, label):
        """Every value label C{label} takes."""
        return {s.labels[label] for s in self.samples if label in s.labels}


class _Collector(test_service.Collector):
    """Sends lines, some of which (a file body's) get no reply of their own."""

    def __init__(self, lines, replies):
        super().__init__(lines)
        self.replies = replies

    def dataReceived(self, data):
        self.data += data
        if self.data.count(b"\r\n\r\n") == self.replies:
            self.transport.loseConnection()
            self.done.callback(None)


class MetricsTestCase(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)

    def network(self, allow=""):
        path = os.path.join(self.folder, "realms.ini")
        with open(path, "w") as f:
            f.write(NETWORK.format(realm1=free_port(), realm2=free_port(), allow=allow))
        return config.load(path)

    def start(self, network, name, clock=None):
        service = build_realm_service(network, name, reactor, InlineHasher(), clock=clock)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def talk(self, service, *lines, replies=None):
        """Send C{lines} to the chat port; fires once C{replies} (one a line) came."""
        port = service.getServiceNamed("chat").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        client = _Collector([line.encode() for line in lines], replies or len(lines))
        yield endpoints.connectProtocol(endpoint, client)
        yield client.done.addTimeout(10, reactor)

    @defer.inlineCallbacks
    def get(self, service, source="127.0.0.1"):
        """(status, body) of GET /metrics from address C{source}."""
        port = service.getServiceNamed("http").endpoint.port.getHost().port
        agent = Agent(reactor, connectTimeout=10, bindAddress=(source, 0))
        response = yield agent.request(
            b"GET", b"http://127.0.0.1:%d/metrics" % port
        ).addTimeout(10, reactor)
        body = yield readBody(response)
        return response.code, body.decode("utf-8")

    @defer.inlineCallbacks
    def scrape(self, service):
        code, body = yield self.get(service)
        self.assertEqual(code, 200, body)
        return Scrape(body)


class OutboxTests(MetricsTestCase):
    @defer.inlineCallbacks
    def test_a_peers_outbox_rises_while_its_link_is_down_and_falls_to_zero_after(self):
        network = self.network()
        two = self.start(network, "2")  # heru exists on realm 2, which then goes down
        yield two.getServiceNamed("core").realm.register("heru", "pw")
        yield two.stopService()
        # Realm 1's time (the outbox's age, its count's cache, its retries) is a Clock.
        clock = task.Clock()
        clock.advance(1_700_000_000)
        one = self.start(network, "1", clock)

        def outbox(scrape):
            return (scrape.value("multirealm_peer_link_up", peer="2"),
                    scrape.value("multirealm_peer_outbox_messages", peer="2"),
                    scrape.value("multirealm_peer_outbox_oldest_seconds", peer="2"))

        self.assertEqual(outbox((yield self.scrape(one))), (0, 0, 0))
        yield self.talk(one, "register alice pw", "auth alice pw", "send - heru@2 one")
        clock.advance(2)  # the count is at most a second old
        self.assertEqual(outbox((yield self.scrape(one))), (0, 1, 2))
        yield self.talk(one, "auth alice pw", "send - heru@2 two", "send - heru@2 three")
        clock.advance(2)
        self.assertEqual(outbox((yield self.scrape(one))), (0, 3, 4))

        two = self.start(network, "2")  # back: its link to realm 1 brings realm 1's at once
        for _ in range(200):  # 10 s at most
            clock.advance(2)
            scrape = yield self.scrape(one)
            if outbox(scrape) == (1, 0, 0):
                break
            yield task.deferLater(reactor, 0.05)
        self.assertEqual(outbox(scrape), (1, 0, 0))
        self.assertEqual(scrape.value("multirealm_peer_link_here", peer="2"), 1)  # one process
        counts = [scrape.value(f"multirealm_peer_frames_{what}_total", peer="2")
                  for what in ("sent", "acknowledged", "refused")]
        self.assertEqual(counts, [3, 3, 0])
        self.assertGreaterEqual(scrape.value("multirealm_peer_reconnects_total", peer="2"), 1)
        self.assertEqual(scrape.value("multirealm_connections_open", kind="realm_out"), 1)
        self.assertEqual(scrape.value("multirealm_connections_open", kind="realm_in"), 1)
        self.assertEqual(
            scrape.value("multirealm_messages_stored_total", kind="private", origin="local"), 3
        )
        # Realm 2, in the same process, has numbers of its own (as under --realm=all).
        theirs = yield self.scrape(two)
        self.assertEqual(theirs.labels("peer"), {"1"})
        self.assertEqual(
            theirs.value("multirealm_messages_stored_total", kind="private", origin="peer"), 3
        )
        self.assertEqual(theirs.value("multirealm_messages_stored_total",
                                      kind="private", origin="local"), 0)


class RequestTests(MetricsTestCase):
    @defer.inlineCallbacks
    def test_requests_are_counted_by_command_and_code_and_timed(self):
        one = self.start(self.network(), "1")
        yield self.talk(one, "register bob pw")
        before = yield self.scrape(one)
        yield self.talk(one, "auth bob pw", "send - bob hi", "send - nobody hi", "frobnicate x")
        after = yield self.scrape(one)

        def moved(name, **labels):
            return after.value(name, **labels) - before.value(name, **labels)

        self.assertEqual(moved("multirealm_requests_total", command="send", code="OK"), 1)
        self.assertEqual(
            moved("multirealm_requests_total", command="send", code="no_such_user"), 1
        )
        self.assertEqual(moved("multirealm_requests_total", command="auth", code="OK"), 1)
        self.assertEqual(
            moved("multirealm_requests_total", command="unknown", code="unknown_command"), 1
        )
        self.assertEqual(moved("multirealm_request_seconds_count", command="send"), 2)
        self.assertEqual(
            moved("multirealm_request_seconds_bucket", command="send", le="+Inf"), 2
        )
        self.assertGreater(moved("multirealm_request_seconds_sum", command="send"), 0)
        self.assertEqual(
            moved("multirealm_messages_stored_total", kind="private", origin="local"), 1
        )
        self.assertGreater(moved("multirealm_commit_operations_count"), 0)
        self.assertGreater(moved("multirealm_commit_seconds_count"), 0)
        self.assertGreater(after.value("process_resident_memory_bytes"), 0)

    @defer.inlineCallbacks
    def test_a_label_never_holds_a_user_name_even_one_named_like_a_command(self):
        one = self.start(self.network(), "1")
        yield self.talk(
            one, "register ping pw", "register help pw", "auth ping pw", "send - help hi",
            "sendfile - help ping.txt", "", "cGluZw==", "", "listusers", "zork ping",
            replies=7,
        )
        scrape = yield self.scrape(one)
        commands = scrape.labels("command")
        self.assertTrue(commands <= set(COMMANDS) | {"unknown"}, commands)
        self.assertEqual(
            commands, {"register", "auth", "send", "sendfile", "listusers", "unknown"}
        )
        self.assertEqual(scrape.labels("peer"), {"2"})
        every_value = {v for s in scrape.samples for k, v in s.labels.items() if k != "le"}
        self.assertFalse(every_value & {"ping", "help", "ping.txt", "zork", "127.0.0.1"},
                         every_value)
        self.assertEqual(scrape.value("multirealm_file_bytes_in_total", origin="local"), 4)


class AccessTests(MetricsTestCase):
    @defer.inlineCallbacks
    def test_only_the_addresses_of_metrics_allow_may_scrape(self):
        one = self.start(self.network(allow="metrics_allow = 127.0.0.2, 10.0.0.0/8"), "1")
        code, body = yield self.get(one, source="127.0.0.1")
        self.assertEqual((code, json.loads(body)["code"]), (403, "forbidden"))
        code, body = yield self.get(one, source="127.0.0.2")
        self.assertEqual(code, 200)
        self.assertIn("multirealm_requests_total", body)

    def render(self, host, method=b"GET"):
        """C{method} /metrics of a realm with the default allow-list, from C{host}."""
        store = make_store(self)
        resource = MetricsResource(
            make_realm(self, store=store), store, InlineHasher(), config.METRICS_ALLOW_DEFAULT
        )
        request = DummyRequest([b""])
        request.method = method
        request.client = IPv4Address("TCP", host, 40000)
        body = resource.render(request)
        if body is not server.NOT_DONE_YET:
            request.write(body)
        return request.responseCode or 200, b"".join(request.written)

    def test_by_default_loopback_only(self):
        code, body = self.render("10.0.0.1")
        self.assertEqual((code, json.loads(body)["code"]), (403, "forbidden"))
        code, body = self.render("127.0.0.1")
        self.assertEqual(code, 200)
        self.assertIn(b"multirealm_peer_link_up", body)

    def test_any_method_from_another_address_is_forbidden(self):
        # Not a 405 telling what /metrics answers: the address is checked first.
        for method in (b"GET", b"HEAD", b"POST", b"DELETE"):
            code, body = self.render("10.0.0.1", method)
            self.assertEqual((code, json.loads(body)["code"]), (403, "forbidden"), method)

    def test_allowed_addresses(self):
        networks = config.METRICS_ALLOW_DEFAULT
        for host, allowed in [
            ("127.0.0.1", True), ("127.5.0.1", True), ("::1", True),
            ("::ffff:127.0.0.1", True),  # a dual-stack port's IPv4 client
            ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("fe80::1", False),
            ("localhost", False), (None, False),
        ]:
            self.assertEqual(is_allowed(host, networks), allowed, host)
