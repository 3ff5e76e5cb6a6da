"""
multirealm-admin end to end: realms built as twistd builds them, running
in this process on loopback ports, and the tool's own code (L{tool.run})
talking to them over their real UNIX admin sockets.  Chat clients are
real TCP connections.  Data directories are under /tmp (a UNIX socket's
path is short).
"""

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import types

from twisted.internet import defer, endpoints, reactor, task
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from multirealm import config, errors
from multirealm.admin import commands, server, tool
from multirealm.service import build_realm_service
from multirealm.model import MEMBER, REMOVED
from multirealm.names import Address
from tests.helpers import InlineHasher, make_realm
from tests.test_end_to_end import free_port

REALMS_INI = """
[network]
secret = s
"""
REALM = """
[realm:{name}]
host = 127.0.0.1
chat_port = 0
realm_port = {realm_port}
http_port = 0
data_dir = data/realm{name}
"""
TIMEOUT = 10


class ChatClient(LineReceiver):
    """A live chat connection: replies in order, events kept apart."""

    delimiter = b"\r\n\r\n"

    def __init__(self):
        self.waiting = []
        self.events = []

    def lineReceived(self, line):
        item = json.loads(line)
        if "event" in item:
            self.events.append(item)
        else:
            self.waiting.pop(0).callback(item)

    def ask(self, line):
        answer = defer.Deferred()
        self.waiting.append(answer)
        self.transport.write(line.encode() + b"\r\n")
        return answer.addTimeout(TIMEOUT, reactor)


class AdminTestCase(unittest.TestCase):
    NAMES = ("1", "2")

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="mra-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.folder)
        text = REALMS_INI + "".join(
            REALM.format(name=name, realm_port=free_port()) for name in self.NAMES
        )
        self.config = os.path.join(self.folder, "realms.ini")
        with open(self.config, "w") as f:
            f.write(text)
        self.network = config.load(self.config)
        self.services = {}

    def start(self, name):
        service = build_realm_service(self.network, name, reactor, hasher=InlineHasher())
        # No sweep of orphan files: it runs in a thread that stopping does
        # not wait for, and these tests remove their folder at cleanup.
        service.getServiceNamed("core").files = None
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.services[name] = service
        return service

    @defer.inlineCallbacks
    def connect(self, realm, user=None, password="pw", register=True):
        """A chat connection to C{realm}; registered and logged in as C{user} if given."""
        port = self.services[realm].getServiceNamed("chat").endpoint.port.getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
        client = yield endpoints.connectProtocol(endpoint, ChatClient())
        self.addCleanup(client.transport.loseConnection)
        if user is not None:
            if register:
                yield client.ask(f"register {user} {password}")
            reply = yield client.ask(f"auth {user} {password}")
            self.assertEqual(reply["status"], "OK", reply)
        return client

    @defer.inlineCallbacks
    def admin(self, *words, realm="1"):
        """Run multirealm-admin: (exit status, stdout, stderr)."""
        options = tool.parse_arguments(["--config", self.config, "--realm", realm, *words])
        out, err = io.StringIO(), io.StringIO()
        status = yield defer.ensureDeferred(tool.run(reactor, options, out, err))
        return status, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def wait_for(self, check):
        """Until C{check()} (a Deferred) gives true; at most TIMEOUT seconds."""
        deadline = reactor.seconds() + TIMEOUT
        while not (yield check()):
            if reactor.seconds() > deadline:
                self.fail(f"still not true after {TIMEOUT} s: {check}")
            yield task.deferLater(reactor, 0.05)


class LockTests(AdminTestCase):
    @defer.inlineCallbacks
    def test_a_locked_user_is_refused_at_once_on_every_connection_and_cannot_log_in(self):
        self.start("1")
        bob = yield self.connect("1", "bob")
        subscribed = yield self.connect("1", "alice")
        self.assertEqual((yield subscribed.ask("subscribe -"))["status"], "OK")
        other = yield self.connect("1", "alice", register=False)

        status, out, err = yield self.admin("lock", "ALICE")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, "alice is locked out: 2 sessions ended; messages kept\n")

        for connection in (subscribed, other):
            reply = yield connection.ask("inbox -")
            self.assertEqual(reply["code"], "invalid_session", reply)
        # No more events: bob's message is stored (and announced) before his OK.
        self.assertEqual((yield bob.ask("send - alice while locked"))["status"], "OK")
        yield subscribed.ask("ping")
        self.assertEqual(subscribed.events, [])
        reply = yield other.ask("auth alice pw")
        self.assertEqual(reply["code"], "locked", reply)
        # A wrong password tells nothing more than before.
        reply = yield other.ask("auth alice wrong")
        self.assertEqual(reply["code"], "bad_credentials", reply)

        status, out, err = yield self.admin("unlock", "alice")
        self.assertEqual((status, out, err), (0, "alice may log in again\n", ""))
        self.assertEqual((yield other.ask("auth alice pw"))["status"], "OK")
        inbox = yield other.ask("inbox -")
        self.assertEqual([m["msg"] for m in inbox["messages"]], ["while locked"])

    @defer.inlineCallbacks
    def test_the_lock_survives_a_restart(self):
        service = self.start("1")
        yield self.connect("1", "alice")
        yield self.admin("lock", "alice")
        yield service.stopService()
        self.start("1")
        client = yield self.connect("1")
        self.assertEqual((yield client.ask("auth alice pw"))["code"], "locked")
        status, out, _ = yield self.admin("users")
        self.assertIn("alice  locked  0", out)

    @defer.inlineCallbacks
    def test_a_login_being_checked_when_the_lock_commits_gets_no_session(self):
        service = self.start("1")
        realm = service.getServiceNamed("core").realm
        yield realm.register("alice", "pw")
        verified = defer.Deferred()
        checking = InlineHasher()
        checking.verify = lambda *args, **kwargs: verified
        realm._hasher = checking
        login = realm.login("alice", "pw")
        yield self.admin("lock", "alice")
        verified.callback(True)
        failure = yield self.assertFailure(login, Exception)
        self.assertEqual(failure.code, "locked")

    @defer.inlineCallbacks
    def test_users_shows_who_is_locked_and_their_sessions(self):
        self.start("1")
        yield self.connect("1", "alice")
        yield self.connect("1", "alice", register=False)
        yield self.connect("1", "bob")
        yield self.admin("lock", "bob")
        status, out, err = yield self.admin("users")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["user", "locked", "sessions", "registered"])
        self.assertEqual([line.split()[:3] for line in lines[1:3]],
                         [["alice", "-", "2"], ["bob", "locked", "0"]])
        self.assertEqual(lines[3], "2 users")

    @defer.inlineCallbacks
    def test_users_come_page_after_page(self):
        service = self.start("1")
        self.patch(type(service.getServiceNamed("admin").factory.operator), "USERS_PAGE", 2)
        realm = service.getServiceNamed("core").realm
        for name in ("a", "b", "c", "d", "e"):
            yield realm.register(name, "pw")
        _, out, _ = yield self.admin("users")
        self.assertEqual([line.split()[0] for line in out.splitlines()[1:-1]],
                         ["a", "b", "c", "d", "e"])

    @defer.inlineCallbacks
    def test_an_unknown_user_is_one_line_and_a_failure(self):
        self.start("1")
        status, out, err = yield self.admin("lock", "nobody")
        self.assertEqual(
            (status, out, err),
            (1, "", "multirealm-admin: realm 1: no_such_user: no user 'nobody'\n"),
        )


class ResetPasswordTests(AdminTestCase):
    @defer.inlineCallbacks
    def test_the_new_password_works_and_the_old_one_and_old_sessions_do_not(self):
        self.start("1")
        old = yield self.connect("1", "alice", password="old-pw")
        status, out, err = yield self.admin("resetpassword", "alice")
        self.assertEqual((status, err), (0, ""))
        first, second = out.splitlines()
        self.assertTrue(first.startswith("new password of alice: "), first)
        password = first.rsplit(" ", 1)[1]
        self.assertGreaterEqual(len(password), 16)
        self.assertEqual(second, "1 session of alice ended")

        self.assertEqual((yield old.ask("inbox -"))["code"], "invalid_session")
        self.assertEqual((yield old.ask("auth alice old-pw"))["code"], "bad_credentials")
        self.assertEqual((yield old.ask(f"auth alice {password}"))["status"], "OK")

    @defer.inlineCallbacks
    def test_each_reset_gives_another_password(self):
        self.start("1")
        yield self.connect("1", "alice")
        _, first, _ = yield self.admin("resetpassword", "alice")
        _, second, _ = yield self.admin("resetpassword", "alice")
        self.assertNotEqual(first.splitlines()[0], second.splitlines()[0])


class DeleteGroupTests(AdminTestCase):
    @defer.inlineCallbacks
    def test_its_members_here_and_on_another_realm_lose_it_and_its_name_stays_taken(self):
        self.start("1")
        self.start("2")
        alice = yield self.connect("1", "alice")
        bob = yield self.connect("1", "bob")
        heru = yield self.connect("2", "heru")
        self.assertEqual((yield alice.ask("creategroup - team bob heru@2"))["status"], "OK")

        @defer.inlineCallbacks
        def heru_in_team():
            return (yield heru.ask("groupinbox - team@1"))["status"] == "OK"

        yield self.wait_for(heru_in_team)
        self.assertEqual((yield heru.ask("sendgroup - team@1 hello"))["status"], "OK")

        status, out, err = yield self.admin("deletegroup", "TEAM")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out,
            "group team deleted: 3 members removed (other realms told through their links: 2);"
            " its name will not be given again\n",
        )
        for member in (alice, bob):
            self.assertEqual((yield member.ask("groupinbox - team"))["code"], "no_such_group")
            self.assertEqual((yield member.ask("mygroups -"))["groups"], [])

        @defer.inlineCallbacks
        def heru_out():
            return (yield heru.ask("mygroups -"))["groups"] == []

        yield self.wait_for(heru_out)
        self.assertEqual((yield heru.ask("groupinbox - team@1"))["code"], "not_a_member")
        reply = yield alice.ask("creategroup - Team bob")
        self.assertEqual(
            (reply["code"], reply["message"]),
            ("group_exists", "group 'team' was deleted: its name is not given again"),
        )

    @defer.inlineCallbacks
    def test_an_unknown_group_is_refused(self):
        self.start("1")
        status, _, err = yield self.admin("deletegroup", "nogroup")
        self.assertEqual((status, err),
                         (1, "multirealm-admin: realm 1: no_such_group: no group 'nogroup'\n"))


class QueuesTests(AdminTestCase):
    @defer.inlineCallbacks
    def test_a_peers_depth_shows_while_its_link_is_down(self):
        self.start("1")
        alice = yield self.connect("1", "alice")
        for n in range(3):
            self.assertEqual((yield alice.ask(f"send - heru@2 hi {n}"))["status"], "OK")
        status, out, err = yield self.admin("queues")
        self.assertEqual((status, err), (0, ""))
        header, row = out.splitlines()
        self.assertEqual(header.split(), ["peer", "link", "pending", "oldest", "last", "error"])
        peer, link, pending, oldest, *error = row.split()
        self.assertEqual((peer, link, pending), ("2", "down", "3"))
        self.assertRegex(oldest, r"^\d+s$")


class ChannelTests(AdminTestCase):
    @defer.inlineCallbacks
    def test_a_realm_not_running_is_said_so_and_left_alone(self):
        status, out, err = yield self.admin("users")
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith(
            "multirealm-admin: realm 1 is not running: start it (twistd -n multirealm --realm=1),"
            " then try again; nothing was changed"
        ), err)
        self.assertEqual(err.count("\n"), 1)
        self.assertFalse(os.path.exists(self.network.realm("1").data_dir))

    @defer.inlineCallbacks
    def test_a_realm_stopped_since_is_said_to_be_not_running(self):
        service = self.start("1")
        yield service.stopService()
        status, _, err = yield self.admin("users")
        self.assertEqual(status, 1)
        self.assertIn("realm 1 is not running", err)

    @defer.inlineCallbacks
    def test_all_asks_each_realm_on_its_own_socket(self):
        self.start("1")
        self.start("2")
        self.assertNotEqual(self.services["1"].getServiceNamed("admin").path,
                            self.services["2"].getServiceNamed("admin").path)
        status, out, err = yield self.admin("queues", realm="all")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual([line for line in out.splitlines() if line.startswith("realm")],
                         ["realm 1:", "realm 2:"])

    def test_the_socket_is_its_owner_s_alone(self):
        self.start("1")
        path = self.services["1"].getServiceNamed("admin").path
        self.assertEqual(path, commands.socket_path(self.network.realm("1").data_dir))
        found = os.stat(path)
        self.assertTrue(stat.S_ISSOCK(found.st_mode))
        self.assertEqual(stat.S_IMODE(found.st_mode), 0o600)
        folder = os.stat(os.path.dirname(path))
        self.assertEqual(stat.S_IMODE(folder.st_mode), 0o700)
        self.assertEqual((found.st_uid, folder.st_uid), (os.getuid(), os.getuid()))


class FolderTests(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mra-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.data)
        self.folder = os.path.join(self.data, commands.FOLDER)

    def test_a_folder_open_to_others_is_closed(self):
        os.mkdir(self.folder, 0o755)
        server.prepare_folder(self.data)
        self.assertEqual(stat.S_IMODE(os.stat(self.folder).st_mode), 0o700)

    def test_a_link_in_its_place_is_refused(self):
        elsewhere = tempfile.mkdtemp(prefix="mra-", dir="/tmp")
        self.addCleanup(shutil.rmtree, elsewhere)
        os.symlink(elsewhere, self.folder)
        error = self.assertRaises(server.AdminSocketError, server.prepare_folder, self.data)
        self.assertIn("not a directory", str(error))

    def test_a_folder_of_another_user_is_refused(self):
        if os.getuid() != 0:
            raise unittest.SkipTest("giving a folder to another user needs root")
        os.mkdir(self.folder, 0o700)
        os.chown(self.folder, 65534, 65534)
        error = self.assertRaises(server.AdminSocketError, server.prepare_folder, self.data)
        self.assertIn("owned by uid 65534", str(error))

    def test_a_path_too_long_for_a_socket_serves_none(self):
        deep = os.path.join(self.data, "d" * 100)
        operator = types.SimpleNamespace(realm_name="1")  # its name is all it is asked
        self.assertIsNone(server.admin_service(deep, operator, reactor))
        self.assertFalse(os.path.exists(deep))

    def test_the_tool_will_not_talk_to_another_user_s_socket(self):
        if os.getuid() != 0:
            raise unittest.SkipTest("giving a folder to another user needs root")
        config_path = os.path.join(self.data, "realms.ini")
        with open(config_path, "w") as f:
            f.write(REALMS_INI + REALM.format(name="1", realm_port=free_port())
                    .replace("data/realm1", self.data))
        os.mkdir(self.folder, 0o700)
        os.chown(self.folder, 65534, 65534)
        options = tool.parse_arguments(["--config", config_path, "--realm", "1", "users"])
        err = io.StringIO()
        status = self.successResultOf(
            defer.ensureDeferred(tool.run(reactor, options, io.StringIO(), err))
        )
        self.assertEqual(status, 1)
        self.assertIn("owned by uid 65534, not by you", err.getvalue())


class StaleSocketTests(AdminTestCase):
    @defer.inlineCallbacks
    def test_a_socket_a_crash_left_is_no_running_realm_and_is_taken_over(self):
        path = commands.socket_path(self.network.realm("1").data_dir)
        os.makedirs(os.path.dirname(path), 0o700)
        left = socket.socket(socket.AF_UNIX)
        left.bind(path)
        left.close()  # the file stays, nobody listens: as after kill -9,
        dead = subprocess.Popen(["true"])
        dead.wait()
        os.symlink(str(dead.pid), path + ".lock")  # with the lock of a process gone
        status, _, err = yield self.admin("users")
        self.assertEqual(status, 1)
        self.assertIn("realm 1 is not running", err)
        self.start("1")
        status, out, _ = yield self.admin("users")
        self.assertEqual((status, out.splitlines()[-1]), (0, "0 users"))


class DeleteRaceTests(unittest.TestCase):
    def test_a_member_added_since_the_roster_was_read_refuses_the_delete(self):
        realm = make_realm(self)
        store = realm._store
        self.successResultOf(realm.register("alice", "pw"))
        self.successResultOf(realm.register("bob", "pw"))
        alice = Address("alice", "1")
        self.successResultOf(realm.create_group("alice", Address("team", "1"), [alice]))
        name, creator, members = self.successResultOf(store.group_roster("team"))
        self.successResultOf(
            realm.add_members("alice", Address("team", "1"), [Address("bob", "1")])
        )
        notices = [realm.new_message(MEMBER, "alice", Address("team", "1"), REMOVED)]
        failure = self.failureResultOf(
            store.delete_group(name, alice, [alice], notices, "now"), errors.Unavailable
        )
        self.assertIn("changed meanwhile", failure.value.message)
        self.assertEqual(self.successResultOf(store.group_roster("team"))[2],
                         ["alice@1", "bob@1"])


class HungRealmTests(unittest.TestCase):
    def test_a_realm_that_accepts_but_never_answers_is_given_up_on(self):
        clock = task.Clock()

        class Silent:
            def callRemote(self, command, **arguments):
                return defer.Deferred()

        asked = defer.ensureDeferred(tool._ask(clock, Silent(), commands.Users, after=""))
        clock.advance(tool.ANSWER_SECONDS - 1)
        self.assertNoResult(asked)
        clock.advance(1)
        failure = self.failureResultOf(asked, tool.Failed)
        self.assertIn(f"no answer within {tool.ANSWER_SECONDS} s", str(failure.value))
