"""
The admin sockets of the processes of a realm on PostgreSQL, one each in
the shared data directory: stale ones are removed at start, and the tool
tries each.
"""

import os
import shutil
import socket
import subprocess
import tempfile

from twisted.trial import unittest

from multirealm.admin import commands, server


class StaleSocketTests(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="mra-", dir="/tmp")  # short: a UNIX address
        self.addCleanup(shutil.rmtree, self.data)
        server.prepare_folder(self.data)

    def left(self, pid):
        """The socket and lock process C{pid} left (or holds, if it runs)."""
        path = commands.socket_path(self.data, pid)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)
        os.symlink(str(pid), path + ".lock")
        return path

    def test_the_sockets_of_processes_gone_are_removed_the_others_kept(self):
        dead = subprocess.Popen(["true"])
        dead.wait()
        gone = self.left(dead.pid)
        running = self.left(os.getppid())
        before = self.left(os.getpid())  # a process before this one, with this pid
        server.remove_stale(self.data)
        self.assertEqual(
            sorted(os.listdir(os.path.dirname(gone))),
            sorted([os.path.basename(running), os.path.basename(running) + ".lock"]),
        )
        self.assertFalse(os.path.exists(before))

    def test_the_tool_tries_admin_sock_then_each_process_newest_first(self):
        older = self.left(os.getppid())
        os.utime(older, (1, 1), follow_symlinks=False)
        newer = self.left(os.getpid())
        self.assertEqual(commands.socket_paths(self.data),
                         [commands.socket_path(self.data), newer, older])
