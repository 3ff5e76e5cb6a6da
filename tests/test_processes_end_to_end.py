"""
Several C{twistd} processes of one realm, started the way a user starts
them, on one data directory: on SQLite the second is refused before it
touches anything; on PostgreSQL (MULTIREALM_TEST_POSTGRES) they share the
ports, the files folder and the admin tool.  Every wait is bounded; every
process is killed at cleanup.
"""

import base64
import os
import shutil
import signal
import subprocess
import tempfile

from tests.admin.test_console import admin_command
from tests.postgres import database
from tests.test_end_to_end import DEADLINE, REALMS_INI, Connection, TwistdTestCase, free_port
from tests.test_federation_end_to_end import wait_for


class ProcessesTestCase(TwistdTestCase):
    def setUp(self):
        # A short folder: the admin sockets' paths must fit a UNIX address.
        self.folder = tempfile.mkdtemp(prefix="mrp-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.folder)
        self.ports = {
            key: free_port() for key in ["chat1", "realm1", "http1", "chat2", "realm2", "http2"]
        }
        self.config = os.path.join(self.folder, "realms.ini")
        self.data = os.path.join(self.folder, "data", "realm1")
        self.incoming = os.path.join(self.data, "files", "incoming")

    def write_config(self, extra=""):
        with open(self.config, "w") as f:
            f.write(REALMS_INI.format(**self.ports).replace(
                "data_dir = data/realm1", "data_dir = data/realm1\n" + extra
            ))

    def admin(self, *words):
        done = subprocess.run(
            [admin_command(), "--config", self.config, "--realm", "1", *words],
            capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
        )
        return done.returncode, done.stdout, done.stderr

    def upload_in_flight(self, client):
        """Begin a file upload on C{client} and leave it unfinished: its part file."""
        client.ask("register alice pw", "register heru pw", "auth alice pw")
        client.sock.sendall(b"sendfile - heru big.bin \r\n\r\n"
                            + base64.b64encode(os.urandom(600_000)))
        (part,) = wait_for("the upload's part file", lambda: os.listdir(self.incoming))
        return part


class SQLiteTests(ProcessesTestCase):
    def test_a_second_process_is_refused_before_it_touches_anything(self):
        self.write_config()
        first, client = self.start_realm()
        self.addCleanup(client.close)
        part = self.upload_in_flight(client)
        second = self.run_twistd("--realm=1", f"--config={self.config}")
        _, err = second.communicate(timeout=DEADLINE)
        self.assertEqual(second.returncode, 1)
        self.assertEqual(err.decode().count("\n"), 1, err)
        self.assertIn(f"in use by another process (pid {first.pid})", err.decode())
        self.assertEqual(os.listdir(self.incoming), [part])  # not swept
        self.assertEqual(self.admin("users")[0], 0)  # its admin socket is the first's still


class PostgreSQLTests(ProcessesTestCase):
    def setUp(self):
        super().setUp()
        self.write_config(f"database = {database(self)}")

    def test_two_processes_share_the_ports_the_files_and_the_admin_tool(self):
        first, client = self.start_realm()
        self.addCleanup(client.close)
        part = self.upload_in_flight(client)
        second = self.run_twistd("--realm=1", f"--config={self.config}")
        own = os.path.join(self.data, "admin", f"admin-{second.pid}.sock")

        def started():
            if second.poll() is not None:
                raise AssertionError(f"the second process exited: {self.stop(second)}")
            return os.path.exists(own)

        wait_for("the second process's admin socket", started)
        # Its start swept nothing the first is receiving: the upload ends well.
        self.assertEqual(os.listdir(self.incoming), [part])
        client.sock.sendall(b"\r\n\r\n")
        self.assertEqual(client.read()["status"], "OK")
        self.assertEqual(self.admin("users")[0], 0)
        self.stop(first, signal.SIGKILL)
        status, out, err = self.admin("users")
        self.assertEqual((status, err), (0, ""))  # the second's socket answers
        self.assertEqual(out.splitlines()[-1], "2 users")
        # The chat port is the second's alone now.
        connection = Connection(self.ports["chat1"])
        self.addCleanup(connection.close)
        self.assertEqual(connection.ask("auth heru pw")["status"], "OK")
