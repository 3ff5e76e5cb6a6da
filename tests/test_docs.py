"""
The docs follow the server: docs/protocol.md's command table and every
`help` reply it shows are what the server's command table says, and its
tables are whole markdown.
"""

import json
import os
import re
from fnmatch import fnmatch

from twisted.trial import unittest

from multirealm.commands import COMMANDS
from tests.helpers import Client, make_realm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


class ProtocolDocsTests(unittest.TestCase):
    def setUp(self):
        self.docs = read("docs/protocol.md")

    def test_the_command_table_is_the_server_s(self):
        section = self.docs.split("\n## Commands\n", 1)[1].split("\n#", 1)[0]
        rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.MULTILINE)
        documented = {usage: summary.replace("`", "") for usage, summary in rows}
        self.assertEqual(documented, {c.usage: c.summary for c in COMMANDS.values()})

    def test_every_help_reply_shown_is_the_server_s(self):
        answered = Client(make_realm(self)).ask("help")
        shown = re.findall(r'\{"status": "OK", "commands": \[.*?\]\}', self.docs)
        self.assertEqual(len(shown), 2)  # the Listing table's row and its example
        for reply in shown:
            self.assertEqual(json.loads(reply), answered)

    def test_every_table_row_is_whole(self):
        for name in ("docs/protocol.md", "README.md"):
            for number, line in enumerate(read(name).splitlines(), 1):
                if line.startswith("|"):
                    where = f"{name}:{number}"
                    self.assertTrue(line.endswith("|"), where)
                    self.assertEqual(line.count("`") % 2, 0, f"{where}: a code span not closed")


class ReadmeTests(unittest.TestCase):
    def test_every_command_is_named(self):
        readme = read("README.md")
        for name in COMMANDS:
            self.assertRegex(readme, f"`{name}[` ]", name)

    def test_realms_start_as_written_side_by_side_and_leave_git_clean(self):
        shell = "\n".join(re.findall(r"```sh\n(.*?)```", read("README.md"), re.DOTALL))
        starts = re.findall(r"\S*twistd .*", shell)
        self.assertGreaterEqual(len(starts), 4)  # realm 1, realm 2, all, three realms
        ignored = [line.lstrip("/") for line in read(".gitignore").splitlines()]
        pidfiles = set()
        for start in starts:
            self.assertTrue(start.startswith(".venv/bin/twistd "), start)  # no venv to activate
            (pidfile,) = re.findall(r"--pidfile=(\S+)", start) or ["twistd.pid"]
            self.assertNotIn(pidfile, pidfiles, f"{start}: a pidfile another start uses")
            pidfiles.add(pidfile)
            self.assertTrue(any(fnmatch(pidfile, pattern) for pattern in ignored), pidfile)


class ConfigCommentTests(unittest.TestCase):
    def test_the_shipped_ini_files_cite_files_that_exist(self):
        for name in ("realms.ini", "examples/three-realms.ini"):
            for cited in re.findall(r"[\w./-]+\.md\b", read(name)):
                self.assertTrue(os.path.exists(os.path.join(ROOT, cited)), f"{name} cites {cited}")
