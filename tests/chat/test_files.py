"""
Files over the chat protocol: the original client's sendfile bytes, the
entry in history, getfile streamed back, who may fetch it, and every bad
case answered with nothing left on disk and the connection in step.
"""

import base64
import errno
import os

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from multirealm.config import Limits
from multirealm.storage.files import FileStore
from tests.helpers import BoundedTransport, Client, make_realm, slow_disk, wait_until


def sendfile(token, to, name, payload, command="sendfile"):
    """The original client's bytes: header with a trailing space, empty line, body, empty line."""
    return (
        f"{command} {token} {to} {name} \r\n\r\n".encode()
        + base64.b64encode(payload)
        + b"\r\n\r\n"
    )


class FileTests(unittest.TestCase):
    def setUp(self):
        self.folder = self.mktemp()
        self.files = FileStore(self.folder)
        self.realm = make_realm(
            self, files=self.files, limits=attrs.evolve(Limits(), max_file_bytes=100_000)
        )
        self.alice, self.heru, self.eve = Client(self.realm), Client(self.realm), Client(self.realm)
        self.alice_token = self.alice.login("alice")
        self.heru.login("heru")
        self.eve.login("eve")

    @defer.inlineCallbacks
    def replies(self, client, count):
        """The next C{count} replies, waiting (on the real reactor) for the disk."""
        yield wait_until(
            lambda: client.transport.value()[client._read :].count(b"\r\n\r\n") >= count
        )
        return client.replies()

    def stored(self):
        """Names in the files folder and in its incoming folder."""
        return (
            sorted(n for n in os.listdir(self.folder) if n != "incoming"),
            os.listdir(os.path.join(self.folder, "incoming")),
        )

    @defer.inlineCallbacks
    def test_a_file_from_the_original_client_reaches_its_recipient(self):
        payload = os.urandom(50_000)
        self.alice.raw(sendfile(self.alice_token, "heru", "report.pdf", payload) + b"help\r\n")
        sent, helped = yield self.replies(self.alice, 2)
        self.assertEqual(sent["message"], "Message Sent")
        self.assertIn("commands", helped)  # the next command, in step
        (entry,) = self.heru.ask("inbox -")["messages"]
        self.assertEqual(
            (entry["msg_from"], entry["msg_to"], entry["file"], entry["size"]),
            ("alice", "heru", "report.pdf", 50_000),
        )
        self.assertEqual(self.stored(), ([entry["file_id"]], []))  # named by id, not by name
        for client in (self.heru, self.alice):  # the recipient and the sender
            got = client.ask(f"getfile - {entry['file_id']}")
            self.assertEqual((got["filename"], got["size"]), ("report.pdf", 50_000))
            self.assertEqual(base64.b64decode(got["content"]), payload)
        self.assertEqual(self.eve.ask(f"getfile - {entry['file_id']}")["code"], "forbidden")
        self.assertEqual(self.eve.ask("getfile - " + "0" * 32)["code"], "no_such_file")

    @defer.inlineCallbacks
    def test_the_body_may_arrive_in_any_pieces(self):
        payload = os.urandom(9_999)
        data = sendfile(self.alice_token, "heru", "a.bin", payload) + b"ping\r\n"
        for start in range(0, len(data), 7):  # 7 bytes at a time: groups split everywhere
            self.alice.raw(data[start : start + 7])
        sent, pong = yield self.replies(self.alice, 2)
        self.assertEqual((sent["status"], pong["message"]), ("OK", "pong"))
        (entry,) = self.heru.ask("inbox -")["messages"]
        got = self.heru.ask(f"getfile - {entry['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), payload)

    @defer.inlineCallbacks
    def test_same_names_never_collide(self):
        for payload in (b"first", b"second"):
            self.alice.raw(sendfile(self.alice_token, "heru", "same.txt", payload))
        yield self.replies(self.alice, 2)
        entries = self.heru.ask("inbox -")["messages"]
        contents = [
            base64.b64decode(self.heru.ask(f"getfile - {e['file_id']}")["content"])
            for e in entries
        ]
        self.assertEqual(contents, [b"first", b"second"])

    @defer.inlineCallbacks
    def test_group_files_reach_members_only(self):
        self.alice.ask("creategroup - team heru")
        self.alice.raw(sendfile(self.alice_token, "team", "notes.txt", b"for the team", "sendgroupfile"))
        (sent,) = yield self.replies(self.alice, 1)
        self.assertEqual(sent["status"], "OK")
        (entry,) = self.heru.ask("groupinbox - team")["messages"]
        self.assertEqual(entry["file"], "notes.txt")
        got = self.heru.ask(f"getfile - {entry['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), b"for the team")
        self.assertEqual(self.eve.ask(f"getfile - {entry['file_id']}")["code"], "forbidden")

    @defer.inlineCallbacks
    def test_every_bad_upload_keeps_nothing_and_the_connection_goes_on(self):
        token = self.alice_token
        cases = [
            (sendfile(token, "heru", "a/b.txt", b"x"), "bad_filename"),
            (sendfile(token, "heru", "..", b"x"), "bad_filename"),
            (sendfile(token, "heru", "x" * 256, b"x"), "bad_filename"),
            (b"sendfile " + token.encode() + b" heru a.txt \r\n\r\n!!!notbase64!!!\r\n\r\n",
             "bad_file_encoding"),
            (sendfile(token, "heru", "big.bin", os.urandom(100_001)), "file_too_large"),
            (sendfile(token, "nobody", "a.txt", b"x"), "no_such_user"),
            (sendfile(token, "nogroup", "a.txt", b"x", "sendgroupfile"), "no_such_group"),
            (sendfile(token, "team@2", "a.txt", b"x", "sendgroupfile"), "not_a_member"),
            (sendfile("wrongtoken", "heru", "a.txt", b"x"), "invalid_session"),
            (b"sendfile - \r\n\r\nQUJD\r\n\r\n", "bad_request"),
        ]
        self.eve.ask("creategroup - nogroup2")
        for data, code in cases:
            self.alice.raw(data + b"ping\r\n")
            reply, pong = yield self.replies(self.alice, 2)
            self.assertEqual((reply.get("code"), pong.get("message")), (code, "pong"), data[:40])
        self.assertEqual(self.stored(), ([], []))
        self.assertEqual(self.heru.ask("inbox -")["messages"], [])

    @defer.inlineCallbacks
    def test_a_non_member_cannot_send_to_a_group(self):
        self.eve.ask("creategroup - private")
        self.alice.raw(sendfile(self.alice_token, "private", "a.txt", b"x", "sendgroupfile"))
        (reply,) = yield self.replies(self.alice, 1)
        self.assertEqual(reply["code"], "not_a_member")
        self.assertEqual(self.stored(), ([], []))

    def test_a_client_that_leaves_mid_upload_leaves_nothing(self):
        data = sendfile(self.alice_token, "heru", "half.bin", os.urandom(60_000))
        self.alice.raw(data[: len(data) // 2])
        self.assertEqual(len(self.stored()[1]), 1)  # being received
        self.alice.protocol.connectionLost(None)
        self.assertEqual(self.stored(), ([], []))

    @defer.inlineCallbacks
    def test_a_session_ended_mid_upload_stores_no_message(self):
        data = sendfile(self.alice_token, "heru", "late.bin", os.urandom(60_000))
        self.alice.raw(data[: len(data) // 2])
        other = Client(self.realm)  # her other device logs the session out meanwhile
        self.assertEqual(other.ask(f"logout {self.alice_token}")["status"], "OK")
        self.alice.raw(data[len(data) // 2:])
        (reply,) = yield self.replies(self.alice, 1)
        self.assertEqual(reply["code"], "invalid_session", reply)
        self.assertEqual(self.heru.ask("inbox -")["messages"], [])

    def test_leftovers_of_a_crash_are_swept(self):
        incoming = self.files.begin()
        incoming.write(b"half a file")
        again = FileStore(self.folder)
        self.assertEqual(again.sweep(), 1)
        self.assertEqual(self.stored(), ([], []))

    @defer.inlineCallbacks
    def test_a_refused_header_still_has_its_body_skipped(self):
        # Refused before it is even parsed: not UTF-8, or over the rate.
        bad = b"sendfile - heru \xff.bin \r\n\r\nQUJD\r\n\r\nping\r\n"
        self.alice.raw(bad)
        refused, pong = yield self.replies(self.alice, 2)
        self.assertEqual((refused["code"], pong["message"]), ("bad_encoding", "pong"))
        limited = Client(make_realm(self, limits=attrs.evolve(Limits(), rate_limit_burst=1,
                                                               rate_limit_per_second=0.001)))
        limited.raw(b"ping\r\n" + sendfile("-", "heru", "a.txt", b"x") + b"help\r\n")
        replies = limited.replies()
        self.assertEqual([r.get("code", r["status"]) for r in replies],
                         ["OK", "rate_limited", "rate_limited"])  # three requests, three replies

    @defer.inlineCallbacks
    def test_a_header_with_leading_spaces_is_an_upload_and_nothing_before_it_is_lost(self):
        # The attack run's line: it was not seen as an upload, its reply
        # could not be encoded, and the connection dropped with the replies
        # to the requests stored before it.
        Client(self.realm).login("bob")
        self.alice.raw(
            b"send - bob one\r\nsend - bob two\r\n"
            b" sendfile - bob x.txt\r\n\r\n" + base64.b64encode(b"hello") + b"\r\n\r\n"
            b"send - bob three\r\n"
            # Refused before it is parsed: its body is skipped all the same.
            b"  sendfile - bob \xff.txt\r\n\r\nQUJD\r\n\r\nping\r\n"
        )
        replies = yield self.replies(self.alice, 6)
        self.assertEqual(
            [r.get("code", r["status"]) for r in replies], ["OK"] * 4 + ["bad_encoding", "OK"]
        )
        self.assertFalse(self.alice.transport.disconnecting)
        bob = Client(self.realm)
        bob.ask("auth bob pw")
        inbox = bob.ask("inbox -")["messages"]
        self.assertEqual(
            [m.get("file", m.get("msg")) for m in inbox], ["one", "two", "x.txt", "three"]
        )
        got = bob.ask(f"getfile - {inbox[2]['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), b"hello")

    @defer.inlineCallbacks
    def test_a_message_sent_after_a_file_is_stored_after_it(self):
        self.alice.raw(sendfile(self.alice_token, "heru", "first.txt", b"x")
                       + b"send - heru second\r\n")
        yield self.replies(self.alice, 2)
        inbox = self.heru.ask("inbox -")["messages"]
        self.assertEqual([m.get("file", m.get("msg")) for m in inbox], ["first.txt", "second"])
        self.assertLess(inbox[0]["id"], inbox[1]["id"])

    def test_a_body_that_stops_coming_ends_the_connection_and_leaves_nothing(self):
        self.alice.raw(b"sendfile - heru slow.bin \r\n\r\nQUJD")
        self.assertEqual(len(self.stored()[1]), 1)
        self.realm.clock.advance(self.realm.limits.idle_timeout + 1)
        self.assertTrue(self.alice.transport.disconnecting)
        self.alice.protocol.connectionLost(None)
        self.assertEqual(self.stored(), ([], []))

    def test_a_body_trickled_a_few_bytes_at_a_time_is_dropped_after_idle_timeout(self):
        idle = self.realm.limits.idle_timeout
        self.alice.send("ping")
        self.alice.raw(b"sendfile - heru slow.bin \r\n\r\n")
        for _ in range(3):  # four base64 characters just before each timeout
            self.realm.clock.advance(idle - 1)
            if self.alice.transport.disconnecting:
                break
            self.alice.raw(b"QUJD")
        self.assertTrue(self.alice.transport.disconnecting)
        pong, dropped, idle_reply = self.alice.replies()
        self.assertEqual((pong["message"], dropped["code"], idle_reply["code"]),
                         ("pong", "bad_file_encoding", "idle_timeout"))
        self.assertIn("64 KiB", dropped["message"])
        self.alice.protocol.connectionLost(None)
        self.assertEqual(self.stored(), ([], []))

    @defer.inlineCallbacks
    def test_a_body_that_makes_progress_is_not_idle(self):
        idle = self.realm.limits.idle_timeout
        payload = base64.b64encode(os.urandom(96 * 1024))  # two 64 KiB pieces of base64
        self.alice.raw(b"sendfile - heru slow.bin \r\n\r\n")
        for piece in (payload[:65536], payload[65536:]):
            self.realm.clock.advance(idle - 1)
            self.alice.raw(piece)
            yield wait_until(lambda: not self.alice.protocol.paused)  # the disk's thread
        self.realm.clock.advance(idle - 1)
        self.alice.raw(b"\r\n\r\n")
        (stored,) = yield self.replies(self.alice, 1)
        self.assertEqual(stored["status"], "OK", stored)
        self.assertFalse(self.alice.transport.disconnecting)

    @defer.inlineCallbacks
    def test_a_half_close_mid_file_answers_it_after_the_replies_before_it(self):
        aborted = []
        self.alice.transport.abortConnection = lambda: aborted.append(True)  # a reset
        stored = defer.Deferred()
        real_send = self.realm.send_run  # the path of a private message (a run)
        self.realm.send_run = lambda *a: stored.addCallback(  # a slow commit
            lambda _: real_send(*a))
        self.alice.raw(b"send - heru hello\nsendfile - heru x.txt\n\nQUJD")
        self.alice.protocol.readConnectionLost()
        self.assertFalse(self.alice.transport.disconnecting)  # hello's reply is not out yet
        stored.callback(None)
        sent, dropped = yield self.replies(self.alice, 2)
        self.assertEqual((sent["status"], dropped["code"]), ("OK", "bad_file_encoding"))
        self.assertIn("ended in the middle of a file", dropped["message"])
        self.assertTrue(self.alice.transport.disconnecting)
        self.assertEqual(aborted, [])
        self.assertEqual([m["msg"] for m in self.heru.ask("inbox -")["messages"]], ["hello"])
        self.assertEqual(self.stored(), ([], []))

    def test_a_half_close_mid_file_from_a_client_that_does_not_read_is_cut(self):
        transport = BoundedTransport()
        client = Client(self.realm, transport=transport)
        client.login("bob")
        client.raw(b"sendfile - heru x.txt\n\nQUJD")
        transport.full = True
        transport.producer.pauseProducing()  # the socket's buffer is full: it does not read
        client.protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)  # its answer waits to be read
        self.realm.clock.advance(self.realm.limits.idle_timeout + 1)
        self.assertTrue(transport.disconnected)  # aborted
        self.assertEqual(self.stored(), ([], []))

    @defer.inlineCallbacks
    def pipelined_getfiles(self, count, open_file=None):
        """
        Bob, who reads nothing yet, pipelines C{count} getfile of one
        90 kB file, their lookups answered together later (as the
        database's thread does); returns bob's client and the files opened.
        """
        bob = Client(self.realm, transport=BoundedTransport())
        bob_token = bob.login("bob")
        self.alice.raw(sendfile(self.alice_token, "bob", "f.bin", os.urandom(90_000)))
        (sent,) = yield self.replies(self.alice, 1)
        self.assertEqual(sent["status"], "OK", sent)
        file_id = bob.ask("inbox -")["messages"][-1]["file_id"]
        opened = []
        real_open = self.files.open

        def counting_open(file_id):
            f = (open_file or real_open)(file_id)
            opened.append(f)
            return f

        self.patch(self.files, "open", counting_open)
        looked_up = []
        real_file_for = self.realm.file_for
        self.patch(self.realm, "file_for", lambda *a: looked_up.append(defer.Deferred())
                   or looked_up[-1].addCallback(lambda _: real_file_for(*a)))
        bob.raw(f"getfile {bob_token} {file_id}\n".encode() * count)
        for d in looked_up:
            d.callback(None)
        return bob, opened

    @defer.inlineCallbacks
    def test_pipelined_getfiles_hold_one_open_file_at_a_time(self):
        bob, opened = yield self.pipelined_getfiles(200)
        self.assertTrue(bob.transport.full)
        self.assertEqual(len(opened), 1)  # the one being written; 199 wait, not opened
        most_open = 1
        while bob.transport.drain():
            most_open = max(most_open, sum(1 for f in opened if not f.closed))
        self.assertEqual(most_open, 1)
        self.assertEqual(len(opened), 200)
        self.assertTrue(all(f.closed for f in opened))
        bob._read = 0
        bob.transport.io.write(bob.transport.out)
        replies = [r for r in bob.replies() if "content" in r]
        self.assertEqual(len(replies), 200)

    @defer.inlineCallbacks
    def test_a_file_gone_before_its_turn_is_no_such_file_in_its_place(self):
        calls = []

        def gone_the_second_time(file_id):
            calls.append(file_id)
            if len(calls) == 2:
                raise FileNotFoundError(file_id)
            if len(calls) == 3:
                raise OSError(errno.EMFILE, "Too many open files")
            return FileStore.open(self.files, file_id)

        bob, opened = yield self.pipelined_getfiles(4, gone_the_second_time)
        while bob.transport.drain():
            pass
        bob.transport.io.write(bob.transport.out)
        bob._read = 0
        replies = bob.replies()[-4:]
        self.assertEqual([r.get("code", r["status"]) for r in replies],
                         ["OK", "no_such_file", "unavailable", "OK"])
        self.assertFalse(bob.transport.disconnecting)

    def test_a_client_that_half_closes_mid_body_leaves_nothing(self):
        self.alice.raw(b"sendfile - heru half.bin \r\n\r\nQUJD")
        self.alice.protocol.readConnectionLost()
        self.assertTrue(self.alice.transport.disconnecting)
        self.assertEqual(self.stored(), ([], []))

    @defer.inlineCallbacks
    def test_a_file_to_another_realm_is_queued_for_it(self):
        self.alice.raw(sendfile(self.alice_token, "bob@2", "a.txt", b"x"))
        (sent,) = yield self.replies(self.alice, 1)
        self.assertEqual(sent["message"], "Message Sent")
        self.assertEqual(self.alice.ask("listrealms")["realms"][0]["pending"], 1)
        (entry,) = self.alice.ask("inbox -")["messages"]
        self.assertEqual((entry["msg_to"], entry["file"], entry["size"]), ("bob@2", "a.txt", 1))

    @defer.inlineCallbacks
    def test_a_group_file_is_for_the_members_of_when_it_was_sent(self):
        self.alice.ask("creategroup - team heru")
        self.alice.raw(sendfile(self.alice_token, "team", "then.txt", b"then", "sendgroupfile"))
        yield self.replies(self.alice, 1)
        (entry,) = self.heru.ask("groupinbox - team")["messages"]
        self.heru.ask("leavegroup - team")  # a member who leaves keeps the file
        self.assertEqual(self.heru.ask(f"getfile - {entry['file_id']}")["status"], "OK")

    def test_disk_full_mid_upload_is_storage_full_and_keeps_nothing(self):
        real_begin = self.files.begin

        def begin_on_a_full_disk():
            incoming = real_begin()

            def full(data):
                raise OSError(28, "No space left on device")

            incoming.write = full
            return incoming

        self.patch(self.files, "begin", begin_on_a_full_disk)
        self.alice.raw(sendfile(self.alice_token, "heru", "a.bin", b"x" * 300) + b"ping\r\n")
        full_reply, pong = self.alice.replies()
        self.assertEqual((full_reply["code"], pong["message"]), ("storage_full", "pong"))
        self.assertEqual(self.stored(), ([], []))

    def test_a_full_quota_is_storage_full_and_another_disk_error_unavailable(self):
        # The one mapping of disk errors that every port shares (core.incoming).
        real_begin = self.files.begin
        for number, code in ((errno.EDQUOT, "storage_full"), (errno.EIO, "unavailable")):

            def begin_on_a_bad_disk(number=number):
                incoming = real_begin()

                def fails(data):
                    raise OSError(number, os.strerror(number))

                incoming.write = fails
                return incoming

            self.patch(self.files, "begin", begin_on_a_bad_disk)
            self.alice.raw(sendfile(self.alice_token, "heru", "a.bin", b"x" * 300) + b"ping\r\n")
            refused, pong = self.alice.replies()
            self.assertEqual((refused["code"], pong["message"]), (code, "pong"))
            self.assertEqual(self.stored(), ([], []))

    @defer.inlineCallbacks
    def test_a_file_a_crash_left_without_its_message_is_removed(self):
        incoming = self.files.begin()
        incoming.write(b"renamed, then the crash: no message names it")
        yield incoming.finish()
        kept = self.files.begin()
        kept.write(b"an upload being stored right now")
        yield kept.finish()
        old = os.path.getmtime(os.path.join(self.folder, incoming.id))
        os.utime(os.path.join(self.folder, kept.id), (old + 10, old + 10))
        self.assertEqual(self.files.remove_orphans(known=set(), before=old + 5), 1)
        self.assertEqual(self.stored(), ([kept.id], []))


class LargeUploadTests(unittest.TestCase):
    """Bodies larger than a batch: written in a thread, a batch at a time."""

    def setUp(self):
        self.folder = self.mktemp()
        self.files = FileStore(self.folder)
        self.realm = make_realm(self, files=self.files)
        self.alice, self.heru = Client(self.realm), Client(self.realm)
        self.token = self.alice.login("alice")
        self.heru.login("heru")

    @defer.inlineCallbacks
    def test_a_megabyte_in_pieces_comes_back_the_same(self):
        payload = os.urandom(2**20 + 5)
        data = sendfile(self.token, "heru", "big.bin", payload) + b"ping\r\n"
        for start in range(0, len(data), 65536):
            self.alice.raw(data[start : start + 65536])
        sent, pong = yield FileTests.replies(self, self.alice, 2)
        self.assertEqual((sent["message"], pong["message"]), ("Message Sent", "pong"))
        (entry,) = self.heru.ask("inbox -")["messages"]
        got = self.heru.ask(f"getfile - {entry['file_id']}")
        self.assertEqual(base64.b64decode(got["content"]), payload)

    @defer.inlineCallbacks
    def test_a_disk_that_fills_during_a_batch_is_storage_full(self):
        real_begin = self.files.begin

        def begin_on_a_filling_disk():
            incoming = real_begin()

            def full(data):
                raise OSError(28, "No space left on device")

            incoming.write_now = full  # the thread's write fails
            return incoming

        self.patch(self.files, "begin", begin_on_a_filling_disk)
        self.alice.raw(sendfile(self.token, "heru", "big.bin", os.urandom(2**20)) + b"ping\r\n")
        full, pong = yield FileTests.replies(self, self.alice, 2)
        self.assertEqual((full["code"], pong["message"]), ("storage_full", "pong"))
        incoming = os.path.join(self.folder, "incoming")
        self.assertEqual(
            (sorted(n for n in os.listdir(self.folder) if n != "incoming"), os.listdir(incoming)),
            ([], []),
        )

    @defer.inlineCallbacks
    def test_the_connection_is_not_read_while_a_batch_is_written(self):
        # Memory stays bounded: a client faster than the disk waits.
        release = slow_disk(self, self.files)
        data = sendfile(self.token, "heru", "big.bin", os.urandom(2**20)) + b"ping\r\n"
        self.alice.raw(data[:600_000])  # more than a batch, not the whole body
        self.assertEqual(self.alice.transport.producerState, "paused")
        release.set()
        yield wait_until(lambda: self.alice.transport.producerState == "producing")
        self.alice.raw(data[600_000:])
        sent, pong = yield FileTests.replies(self, self.alice, 2)
        self.assertEqual((sent["message"], pong["message"]), ("Message Sent", "pong"))
