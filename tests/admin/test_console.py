"""
The multirealm-admin command as an operator runs it, against a realm run
by twistd as a user runs it: a separate process each, every wait bounded,
every process killed at cleanup.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from tests.test_end_to_end import DEADLINE, REALMS_INI, TwistdTestCase, free_port


def admin_command():
    return os.path.join(os.path.dirname(sys.executable), "multirealm-admin")


class ConsoleTests(TwistdTestCase):
    def setUp(self):
        # A short folder: the admin socket's path must fit a UNIX address.
        self.folder = tempfile.mkdtemp(prefix="mra-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.folder)
        self.ports = {
            key: free_port() for key in ["chat1", "realm1", "http1", "chat2", "realm2", "http2"]
        }
        self.config = os.path.join(self.folder, "realms.ini")
        with open(self.config, "w") as f:
            f.write(REALMS_INI.format(**self.ports))

    def admin(self, *words):
        done = subprocess.run(
            [admin_command(), "--config", self.config, "--realm", "1", *words],
            capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
        )
        return done.returncode, done.stdout, done.stderr

    def test_the_command_administers_a_running_realm_and_names_a_stopped_one(self):
        process, alice = self.start_realm()
        self.addCleanup(alice.close)
        self.assertEqual(alice.ask("register alice pw", "auth alice pw")[1]["status"], "OK")
        status, out, err = self.admin("lock", "alice")
        self.assertEqual((status, out, err),
                         (0, "alice is locked out: 1 session ended; messages kept\n", ""))
        self.assertEqual(alice.ask("auth alice pw")["code"], "locked")

        # A second realm process on the same data directory is refused, in one line.
        second = self.run_twistd("--realm=1", f"--config={self.config}")
        _, second_err = second.communicate(timeout=DEADLINE)
        self.assertEqual(second.returncode, 1)
        data = os.path.join(self.folder, "data", "realm1")
        self.assertEqual(second_err.decode(), (
            f"multirealm: realm 1: its data directory {data} is in use by another process"
            f" (pid {process.pid}); a realm on SQLite runs as one process"
            " (database = postgresql://... lets several share one realm)\n"
        ))

        self.stop(process, signal.SIGKILL)  # a crash leaves the socket behind
        status, out, err = self.admin("users")
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith("multirealm-admin: realm 1 is not running: start it"), err)
        self.assertEqual(err.count("\n"), 1)

        process, again = self.start_realm()  # and takes it over when it starts again
        self.addCleanup(again.close)
        status, out, err = self.admin("users")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[1].split()[:3], ["alice", "locked", "0"])

    def test_a_bad_verb_or_realm_is_one_line_and_a_failure(self):
        status, _, err = self.admin("nosuchverb")
        self.assertEqual(status, 2)  # argparse's usage error
        self.assertIn("invalid choice: 'nosuchverb'", err)
        done = subprocess.run(
            [admin_command(), "--config", self.config, "--realm", "9", "users"],
            capture_output=True, text=True, timeout=DEADLINE,
        )
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr.count("\n"), 1)
        self.assertIn("no [realm:9] section", done.stderr)
