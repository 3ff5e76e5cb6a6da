"""
A realm on SQLite needs no psycopg: the README's one command installs
without it (psycopg is the `postgresql` extra).  Checked in a fresh
interpreter where importing psycopg fails.
"""

import os
import subprocess
import sys

from twisted.trial import unittest

from tests.test_service import REALMS_INI

SCRIPT = """
import sys
sys.modules["psycopg"] = None  # any import of it fails, as when it is not installed
from twisted.internet import reactor
from multirealm import config
from multirealm.service import build_realm_service
import multirealm.tap
service = build_realm_service(config.load(sys.argv[1]), "1", reactor)
service.privilegedStartService()
service.startService()
reactor.callLater(0.2, lambda: service.stopService().addBoth(lambda _: reactor.stop()))
reactor.run()
print("psycopg" in sys.modules and sys.modules["psycopg"] is not None)
"""



class WithoutPsycopgTests(unittest.TestCase):
    def test_a_realm_on_sqlite_starts_and_stops_without_psycopg(self):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "realms.ini")
        with open(path, "w") as f:
            f.write(REALMS_INI)
        done = subprocess.run([sys.executable, "-c", SCRIPT, path], capture_output=True,
                              text=True, timeout=60, cwd=folder)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertEqual(done.stdout.strip(), "False")
