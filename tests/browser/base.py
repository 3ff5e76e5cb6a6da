"""
The realms and browsers of the browser tests: two realms started as one
C{twistd} subprocess (or one each) on free loopback ports, from a
temporary realms.ini, and pages driven in chromium, each stopped at
cleanup.  Selenium calls block, hence the subprocesses.

Skipped, with the reason, only where no browser can be had; under CI=true
(.ci/run, which installs one) a missing browser fails instead.
"""

import os
import subprocess

from tests.browser.browser import Page, missing, wait_for
from tests.test_end_to_end import DEADLINE, Connection, TwistdTestCase, twistd
from tests.test_federation_end_to_end import write_realms_ini

SCREENSHOTS = os.environ.get("MULTIREALM_SCREENSHOTS")  # where to keep them; else the test's folder

NETWORK = """
[network]
secret = test-secret
# small pages: scrolling up pages the history backwards
history_limit = 20
"""


REASON = missing()


class BrowserTestCase(TwistdTestCase):
    if REASON and os.environ.get("CI") != "true":
        skip = REASON

    def setUp(self):
        if REASON:  # under CI: no skipping
            self.fail(f"CI=true needs a browser: {REASON}")
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.config, self.ports = write_realms_ini(self.folder, NETWORK, ("1", "2"))

    def run_twistd(self, *args):
        """twistd, its log in a file (a pipe nobody reads would fill and stop it)."""
        log = open(os.path.join(self.folder, "twistd.log"), "ab")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "multirealm", *args],
            cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        self.addCleanup(self.kill, process)
        return process

    def kill(self, process):
        if process.poll() is None:
            process.kill()
        process.wait(timeout=DEADLINE)

    def start(self, realm="all"):
        """Start C{realm} (or every realm); return the process once each listens."""
        process = self.run_twistd(f"--realm={realm}", f"--config={self.config}")
        for name in ("1", "2") if realm == "all" else (realm,):
            wait_for(f"realm {name} to listen", lambda n=name: self.listening(process, n))
        return process

    def listening(self, process, name):
        if process.poll() is not None:
            with open(os.path.join(self.folder, "twistd.log")) as f:
                raise AssertionError(f"realm {name} exited: {f.read()[-3000:]}")
        try:
            Connection(self.ports[f"http{name}"]).close()
        except OSError:
            return False
        return True

    def linked(self):
        """Wait until realm 1 and 2 link each other."""
        for name in ("1", "2"):
            connection = Connection(self.ports[f"chat{name}"])
            self.addCleanup(connection.close)
            wait_for(f"realm {name}'s link", lambda c=connection: all(
                r["linked"] for r in c.ask("listrealms")["realms"]))

    def client(self, realm, user):
        """A chat-port connection of C{user} on C{realm}, registered and logged in."""
        connection = Connection(self.ports[f"chat{realm}"])
        self.addCleanup(connection.close)
        replies = connection.ask(f"register {user} pw", f"auth {user} pw")
        self.assertEqual(replies[1]["status"], "OK", replies)
        return connection

    def page(self, realm, width=1280, height=800):
        downloads = os.path.join(self.folder, f"downloads-{realm}-{width}")
        os.makedirs(downloads, exist_ok=True)
        page = Page(f"http://127.0.0.1:{self.ports[f'http{realm}']}/", downloads, width, height)
        self.addCleanup(page.quit)
        self.addCleanup(self.check_console, page)
        return page

    def check_console(self, page):
        """No script error and no Content-Security-Policy refusal in the console."""
        page.logs()
        bad = [entry["message"] for entry in page.console
               if entry["level"] == "SEVERE" and "/ws" not in entry["message"]]
        self.assertEqual(bad, [])

    def screenshot(self, page, name):
        folder = SCREENSHOTS or self.folder
        os.makedirs(folder, exist_ok=True)
        page.screenshot(os.path.join(folder, name))
