"""
Files over HTTP, on a real loopback port: who may fetch, Range, the
headers that keep a browser from running a file, uploads by POST.
"""

import errno
import io
import json
import os
import socket

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.http_headers import Headers

from multirealm import config
from multirealm.service import build_realm_service
from tests.helpers import InlineHasher
from tests import test_service


# A peer that is never started: what is sent to it waits in realm 1's outbox.
REALM_2 = """
[realm:2]
host = 127.0.0.1
chat_port = 0
realm_port = 0
http_port = 0
data_dir = data/realm2
"""


class HTTPFileTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(test_service.REALMS_INI.replace(
                "secret = s", "secret = s\nmax_file_bytes = 100000"
            ) + REALM_2)
        network = config.load(path)
        self.service = build_realm_service(network, "1", reactor, hasher=InlineHasher())
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.realm = self.service.getServiceNamed("core").realm
        port = self.service.getServiceNamed("http").endpoint.port.getHost().port
        self.base = f"http://127.0.0.1:{port}".encode()
        self.agent = Agent(reactor)
        replies = yield test_service.ServiceTests.talk(  # the chat port, as a client
            self,
            self.service, "register alice pw", "register heru pw", "register eve pw",
            "auth alice pw", "auth heru pw", "auth eve pw",
        )
        self.alice, self.heru, self.eve = (r["tokenid"] for r in replies[3:])
        self.payload = os.urandom(50_000)
        response, body = yield self.post(self.alice, b"to=heru&name=r%C3%A9sum%C3%A9.pdf",
                                         self.payload)
        self.assertEqual(response.code, 200, body)
        self.assertEqual(json.loads(body)["message"], "Message Sent")
        history = yield self.realm.inbox("heru")
        self.file_id = history.messages[0].file.id

    def on_disk(self):
        """The stored files (by id), and what is being received."""
        files = self.realm.files.folder
        return (sorted(n for n in os.listdir(files) if n != "incoming"),
                os.listdir(os.path.join(files, "incoming")))

    @defer.inlineCallbacks
    def request(self, method, path, token=None, headers=None, body=None):
        headers = Headers(headers or {})
        if token:
            headers.addRawHeader(b"authorization", b"Bearer " + token.encode())
        producer = FileBodyProducer(io.BytesIO(body)) if body is not None else None
        response = yield self.agent.request(method, self.base + path, headers, producer)
        content = yield readBody(response)
        return response, content

    def post(self, token, query, body):
        return self.request(b"POST", b"/files?" + query, token, body=body)

    def get(self, token=None, headers=None, path=None):
        return self.request(b"GET", path or b"/files/" + self.file_id.encode(), token, headers)

    @defer.inlineCallbacks
    def test_the_recipient_and_the_sender_get_it_safely_labelled(self):
        for token in (self.heru, self.alice):
            response, body = yield self.get(token)
            self.assertEqual((response.code, body), (200, self.payload))
            raw = response.headers.getRawHeaders
            self.assertEqual(raw(b"content-type"), [b"application/octet-stream"])
            self.assertEqual(raw(b"x-content-type-options"), [b"nosniff"])
            self.assertEqual(raw(b"content-disposition"),
                             [b"attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"])

    @defer.inlineCallbacks
    def test_a_plain_link_with_the_session(self):
        path = b"/files/" + self.file_id.encode() + b"?session=" + self.heru.encode()
        response, body = yield self.get(path=path)
        self.assertEqual((response.code, body), (200, self.payload))

    @defer.inlineCallbacks
    def test_401_403_404(self):
        self.assertEqual((yield self.get())[0].code, 401)
        self.assertEqual((yield self.get("not-a-session"))[0].code, 401)
        self.assertEqual((yield self.get(self.eve))[0].code, 403)
        response, body = yield self.get(self.heru, path=b"/files/" + b"0" * 32)
        self.assertEqual((response.code, json.loads(body)["code"]), (404, "no_such_file"))
        response, _ = yield self.get(self.heru, path=b"/files/..%2F..%2Frealm.sqlite3")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_a_download_resumes_with_range(self):
        response, body = yield self.get(self.heru, {b"range": [b"bytes=1000-"]})
        self.assertEqual((response.code, body), (206, self.payload[1000:]))
        response, body = yield self.get(self.heru, {b"range": [b"bytes=10-19"]})
        self.assertEqual((response.code, body), (206, self.payload[10:20]))

    @defer.inlineCallbacks
    def test_the_bytes_sent_are_counted_for_the_metrics(self):
        yield self.get(self.heru)
        yield self.get(self.heru, {b"range": [b"bytes=10-19"]})
        yield self.request(b"HEAD", b"/files/" + self.file_id.encode(), self.heru)  # no body
        self.assertEqual(self.realm.metrics.file_bytes_out["http"], len(self.payload) + 10)
        self.assertEqual(self.realm.metrics.file_bytes_in["local"], len(self.payload))

    @defer.inlineCallbacks
    def test_ranges_by_rfc_9110(self):
        size = len(self.payload)
        for header, status, first, last in [
            (b"bytes=-100", 206, size - 100, size - 1),
            (b"bytes=49990-60000", 206, 49990, size - 1),
            (b"bytes=-99999999999999999999", 206, 0, size - 1),  # all of it, truly counted
            (b"bytes=5-2", 200, 0, size - 1),  # invalid: ignored
            ("bytes=\u00b2-5".encode(), 200, 0, size - 1),  # digits are ASCII digits
            (b"bytes=0-1,5-6", 200, 0, size - 1),  # several: the whole file
        ]:
            response, body = yield self.get(self.heru, {b"range": [header]})
            raw = response.headers.getRawHeaders
            self.assertEqual((response.code, body), (status, self.payload[first:last + 1]), header)
            self.assertEqual(response.length, last + 1 - first, header)  # Content-Length
            expected = [b"bytes %d-%d/%d" % (first, last, size)] if status == 206 else None
            self.assertEqual(raw(b"content-range"), expected, header)
            self.assertEqual((raw(b"content-type"), raw(b"x-content-type-options")),
                             ([b"application/octet-stream"], [b"nosniff"]), header)
            self.assertTrue(raw(b"content-disposition")[0].startswith(b"attachment;"), header)

    @defer.inlineCallbacks
    def test_a_range_past_the_end_is_416_with_the_size(self):
        for header in (b"bytes=50000-", b"bytes=99999999999999999999-", b"bytes=-0"):
            response, body = yield self.get(self.heru, {b"range": [header]})
            self.assertEqual(response.code, 416, header)
            self.assertEqual(response.headers.getRawHeaders(b"content-range"),
                             [b"bytes */50000"], header)
            self.assertEqual(json.loads(body)["code"], "bad_request")

    @defer.inlineCallbacks
    def test_if_modified_since_comes_before_the_range(self):
        # RFC 9110, 13.2.2: a file not modified since is 304, whatever its range.
        later = {b"if-modified-since": [b"Sat, 01 Jan 2050 00:00:00 GMT"]}
        for header in (b"bytes=50000-", b"bytes=0-9"):
            response, body = yield self.get(self.heru, {b"range": [header], **later})
            self.assertEqual((response.code, body), (304, b""), header)

    @defer.inlineCallbacks
    def test_head_says_what_get_would_send(self):
        for extra, status, length in [(b"", b"200", b"50000"),
                                      (b"Range: bytes=100-199\r\n", b"206", b"100")]:
            head = yield threads.deferToThread(self.raw, (
                b"HEAD /files/" + self.file_id.encode() + b" HTTP/1.0\r\n"
                b"Authorization: Bearer " + self.heru.encode() + b"\r\n" + extra + b"\r\n"
            ))
            lines = head.split(b"\r\n")
            self.assertEqual(lines[0].split()[1], status)
            self.assertIn(b"Content-Length: " + length, lines)
            self.assertIn(b"Content-Type: application/octet-stream", lines)
            self.assertTrue(head.endswith(b"\r\n\r\n"))  # and no body

    def raw(self, request):
        """What the HTTP port answers to C{request} (bytes), read to its close (in a thread)."""
        port = int(self.base.rsplit(b":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(request)
            answer = b""
            while data := connection.recv(65536):
                answer += data
        return answer

    def converse(self, head, body=None):
        """
        Send C{head}, read an answer before sending anything more (in a
        thread); send C{body} then if given, and read on to the close.
        """
        port = int(self.base.rsplit(b":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(head)
            first = connection.recv(65536)
            rest = b""
            if body is not None:
                connection.sendall(body)
            while data := connection.recv(65536):
                rest += data
        return first, rest

    @defer.inlineCallbacks
    def test_a_refused_upload_is_answered_before_its_body(self):
        # As curl --data-binary @big sends it: the headers, then the body only
        # after 100 Continue (or a second).  Never a 100 for a body refused.
        for token, length, status, code in [
            (self.alice, 60_000_000, b"413", "file_too_large"),
            (None, 10, b"401", "invalid_session"),
            ("not-a-session", 10, b"401", "invalid_session"),
        ]:
            auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
            first, rest = yield threads.deferToThread(self.converse, (
                b"POST /files?to=heru&name=big.bin HTTP/1.1\r\nHost: x\r\n" + auth
                + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length
            ))
            answer = first + rest
            self.assertEqual(answer.split(b" ", 2)[1], status, answer)
            self.assertIn(b"Connection: close", answer)
            self.assertEqual(json.loads(answer.partition(b"\r\n\r\n")[2])["code"], code)
        self.assertEqual(self.on_disk(), ([self.file_id], []))  # setUp's only

    @defer.inlineCallbacks
    def test_an_upload_that_expects_100_continue_gets_it_then_is_stored(self):
        payload = os.urandom(99_000)  # max_file_bytes is 100,000 here
        first, rest = yield threads.deferToThread(self.converse, (
            b"POST /files?to=heru&name=c.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + self.alice.encode() + b"\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(payload)
        ), payload)
        self.assertEqual(first, b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), rest)
        file = (yield self.realm.inbox("heru")).messages[-1].file
        with self.realm.files.open(file.id) as f:
            self.assertEqual(f.read(), payload)

    @defer.inlineCallbacks
    def test_bad_uploads_answer_their_codes(self):
        cases = [
            (self.alice, b"to=heru&name=a%2Fb", b"x", 400, "bad_filename"),
            (self.alice, b"to=nobody&name=a.txt", b"x", 404, "no_such_user"),
            (self.alice, b"to=heru&name=big.bin", os.urandom(100_001), 413, "file_too_large"),
            (None, b"to=heru&name=a.txt", b"x", 401, "invalid_session"),
            (self.alice, b"name=a.txt", b"x", 400, "bad_request"),
        ]
        for token, query, body, status, code in cases:
            response, content = yield self.post(token, query, body)
            self.assertEqual((response.code, json.loads(content)["code"]), (status, code), query)
        files = self.realm.files.folder
        self.assertEqual(len([n for n in os.listdir(files) if n != "incoming"]), 1)  # setUp's

    @defer.inlineCallbacks
    def test_a_file_to_a_user_of_another_realm_is_queued_as_by_sendfile(self):
        response, body = yield self.post(self.alice, b"to=heru@2&name=far.txt", b"far away")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(json.loads(body)["message"], "Message Sent")
        (realm_2,) = yield self.realm.list_realms()
        self.assertEqual(realm_2["pending"], 1)
        ((_, message),), _ = yield self.realm.outbox_batch("2", 0, 10)
        self.assertEqual((str(message.recipient), message.file.name, message.file.size),
                         ("heru@2", "far.txt", 8))
        response, body = yield self.post(self.alice, b"to=heru@9&name=far.txt", b"x")
        self.assertEqual((response.code, json.loads(body)["code"]), (404, "no_such_realm"))

    @defer.inlineCallbacks
    def test_a_full_disk_is_507_storage_full_as_on_the_chat_port(self):
        real_begin = self.realm.files.begin

        def begin_on_a_full_disk():
            incoming = real_begin()

            def full(rest=b""):
                raise OSError(errno.ENOSPC, "No space left on device")

            incoming.commit_now = full  # the thread's last write, its flush or its fsync
            return incoming

        self.patch(self.realm.files, "begin", begin_on_a_full_disk)
        response, body = yield self.post(self.alice, b"to=heru&name=a.bin", b"x" * 1000)
        self.assertEqual((response.code, json.loads(body)["code"]), (507, "storage_full"))
        files = self.realm.files.folder
        self.assertEqual(len([n for n in os.listdir(files) if n != "incoming"]), 1)  # setUp's
        self.assertEqual(os.listdir(os.path.join(files, "incoming")), [])

    @defer.inlineCallbacks
    def test_to_may_name_a_group(self):
        yield self.realm.create_group("alice", self.realm.address("team"), [])
        response, body = yield self.post(self.alice, b"to=team&name=plan.txt", b"plan")
        self.assertEqual(response.code, 200, body)
        history = yield self.realm.group_inbox("alice", self.realm.address("team"))
        self.assertEqual(history.messages[0].file.name, "plan.txt")

    @defer.inlineCallbacks
    def test_a_form_cannot_redirect_a_file(self):
        # A page elsewhere posting a form: its fields must not override the URL.
        response, body = yield self.request(
            b"POST", b"/files?to=heru&name=x.bin", self.alice,
            {b"content-type": [b"application/x-www-form-urlencoded"]}, b"to=eve&name=evil.html",
        )
        self.assertEqual(response.code, 200, body)
        self.assertEqual((yield self.realm.inbox("eve")).messages, ())
        got = (yield self.realm.inbox("heru")).messages[-1].file
        self.assertEqual((got.name, got.size), ("x.bin", len(b"to=eve&name=evil.html")))

    @defer.inlineCallbacks
    def test_the_body_is_the_file_whatever_its_type_but_a_multipart_form(self):
        # curl --data-binary @file says application/x-www-form-urlencoded.
        payload = b"a=1&b=%41\x00\xff" * 10
        for kind in (b"application/x-www-form-urlencoded", b"text/plain", b"image/png", None):
            headers = {b"content-type": [kind]} if kind else {}
            response, body = yield self.request(
                b"POST", b"/files?to=heru&name=f.bin", self.alice, headers, payload)
            self.assertEqual(response.code, 200, (kind, body))
            file = (yield self.realm.inbox("heru")).messages[-1].file
            with self.realm.files.open(file.id) as f:
                self.assertEqual(f.read(), payload, kind)
        response, body = yield self.request(
            b"POST", b"/files?to=heru&name=f.bin", self.alice,
            {b"content-type": [b"multipart/form-data; boundary=x"]},
            b"--x\r\nContent-Disposition: form-data; name=f\r\n\r\nhi\r\n--x--\r\n",
        )
        self.assertEqual((response.code, json.loads(body)["code"]), (415, "bad_request"))
        self.assertIn("--data-binary", json.loads(body)["message"])

    @defer.inlineCallbacks
    def test_a_chunked_upload_past_the_limit_is_not_kept(self):
        producer = FileBodyProducer(io.BytesIO(os.urandom(300_000)))
        producer.length = UNKNOWN_LENGTH  # sent chunked: no Content-Length
        headers = Headers({b"authorization": [b"Bearer " + self.alice.encode()]})
        response = yield self.agent.request(
            b"POST", self.base + b"/files?to=heru&name=big.bin", headers, producer
        )
        body = yield readBody(response)
        self.assertEqual((response.code, json.loads(body)["code"]), (413, "file_too_large"))
        self.assertEqual(self.on_disk(), ([self.file_id], []))  # setUp's only

    @defer.inlineCallbacks
    def test_many_ranges_are_not_an_amplifier(self):
        response, body = yield self.get(self.heru, {b"range": [b"bytes=" + b"0-," * 300 + b"0-"]})
        self.assertEqual((response.code, len(body)), (200, len(self.payload)))

    @defer.inlineCallbacks
    def test_the_access_log_keeps_no_session(self):
        lines = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        path = b"/files/" + self.file_id.encode() + b"?session=" + self.heru.encode()
        yield self.get(path=path)
        logged = " ".join(str(event.get("log_io", "")) for event in lines)
        self.assertIn(self.file_id, logged)  # the request was logged ...
        self.assertIn(f"realm {self.realm.name} \"127.0.0.1\" - ", logged)  # by its realm
        self.assertNotIn(self.heru, logged)  # ... without its session

    @defer.inlineCallbacks
    def test_what_went_up_by_http_comes_down_by_getfile_too(self):
        history = yield self.realm.inbox("heru")
        self.assertEqual(history.messages[0].file.name, "résumé.pdf")

