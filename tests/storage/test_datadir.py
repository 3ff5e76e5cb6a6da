"""
The lock on a realm's data directory (storage/datadir.py).  flock locks
of two opens conflict within one process too: each claim here stands for
a process.
"""

import os
import stat

from twisted.trial import unittest

from multirealm.storage.datadir import DataDirInUse, claim


class ClaimTests(unittest.TestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())

    def claim(self, shared):
        lock = claim(self.data, "1", shared)
        self.addCleanup(lock.close)
        return lock

    def test_a_realm_on_sqlite_is_one_process(self):
        self.claim(shared=False)
        with self.assertRaises(DataDirInUse) as refused:
            claim(self.data, "1", shared=False)
        self.assertEqual(str(refused.exception), (
            f"realm 1: its data directory {self.data} is in use by another process"
            f" (pid {os.getpid()}); a realm on SQLite runs as one process"
            " (database = postgresql://... lets several share one realm)"
        ))

    def test_the_processes_of_a_realm_on_postgresql_share_it(self):
        self.claim(shared=True)
        self.claim(shared=True)
        with self.assertRaises(DataDirInUse) as refused:
            claim(self.data, "1", shared=False)
        self.assertIn("in use by another process (processes of it on PostgreSQL)",
                      str(refused.exception))

    def test_a_realm_on_sqlite_keeps_the_processes_of_postgresql_out(self):
        self.claim(shared=False)
        self.assertRaises(DataDirInUse, claim, self.data, "1", True)

    def test_the_lock_ends_with_its_process(self):
        self.claim(shared=False).close()  # as the kernel does for a process that ends
        self.claim(shared=False)

    def test_only_the_realms_user_may_open_the_lock_file(self):
        # Anyone who may open it for reading may flock it, and keep the realm from starting.
        os.makedirs(self.data)
        path = os.path.join(self.data, "realm.lock")
        with open(path, "w"):
            pass
        os.chmod(path, 0o644)  # as an earlier release left it
        self.claim(shared=False)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
