"""
The realm's end of the admin channel: L{admin_service} serves the AMP
commands of L{multirealm.admin.commands} on a UNIX socket in the realm's
data directory, to its owner only, by calling the core's
L{multirealm.core.operator.Operator}.

Only the user the realm runs as may connect: the socket is in a folder
of its own (C{admin/}, mode 0700, owned by that user, checked at start)
and is itself mode 0600.  Its lock file (C{admin.sock.lock}, Twisted's
C{wantPID}) lets a realm that restarts after a crash take over the stale
socket.

The processes of a realm on PostgreSQL share its data directory: each
serves its own socket, C{admin-PID.sock} (any of them administers the
realm), and removes at start those whose process is gone.
"""

import os
import re
import stat

from twisted.application import strports
from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory
from twisted.protocols import amp
from twisted.python import lockfile

from multirealm import errors
from multirealm.admin import commands
from multirealm.logs import RealmLogger

log = RealmLogger()

class AdminSocketError(OSError):
    """The admin socket cannot be served safely; the message says why and where."""


def prepare_folder(data_dir):
    """
    Make (or check) the folder of the admin socket: a directory, not a
    link, owned by this process's user and closed to everyone else.
    Returns the socket's path.  L{AdminSocketError} if it cannot be made so.
    """
    path = commands.socket_path(data_dir)
    folder = os.path.dirname(path)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    found = os.lstat(folder)
    if not stat.S_ISDIR(found.st_mode):
        raise AdminSocketError(f"{folder}: not a directory (the admin socket's folder)")
    if found.st_uid != os.getuid():
        raise AdminSocketError(
            f"{folder}: owned by uid {found.st_uid}, not by this realm's user ({os.getuid()})"
        )
    if stat.S_IMODE(found.st_mode) != 0o700:
        os.chmod(folder, 0o700)  # ours: only we may reach the socket
    return path


class AdminProtocol(amp.AMP):
    """One connection of the admin tool: each command calls the L{Operator}."""

    def __init__(self, operator):
        super().__init__()
        self._operator = operator

    def _call(self, function, *args):
        return defer.maybeDeferred(function, *args).addErrback(self._refused)

    @staticmethod
    def _refused(failure):
        failure.trap(errors.ChatError)
        raise commands.Refused(f"{failure.value.code}: {failure.value.message}")

    @commands.Users.responder
    def users(self, after):
        return self._call(self._operator.users, after).addCallback(
            lambda page: {"users": page[0], "more": page[1]}
        )

    @commands.ResetPassword.responder
    def reset_password(self, user):
        return self._call(self._operator.reset_password, user).addCallback(
            lambda done: dict(zip(("user", "password", "ended"), done))
        )

    @commands.Lock.responder
    def lock(self, user):
        return self._call(self._operator.lock, user).addCallback(
            lambda done: dict(zip(("user", "ended"), done))
        )

    @commands.Unlock.responder
    def unlock(self, user):
        return self._call(self._operator.unlock, user).addCallback(lambda name: {"user": name})

    @commands.DeleteGroup.responder
    def delete_group(self, group):
        return self._call(self._operator.delete_group, group).addCallback(
            lambda done: dict(zip(("group", "removed", "realms"), done))
        )

    @commands.Queues.responder
    def queues(self):
        fields = ("name", "linked", "pending", "oldest_pending_seconds", "last_error")
        return self._call(self._operator.queues).addCallback(
            lambda states: {"peers": [{k: state[k] for k in fields} for state in states]}
        )


class AdminFactory(Factory):
    noisy = False

    def logPrefix(self):
        return f"realm {self.operator.realm_name} admin"

    def __init__(self, operator):
        self.operator = operator

    def buildProtocol(self, addr):
        return AdminProtocol(self.operator)


def remove_stale(data_dir):
    """Remove the sockets of processes gone (their lock is free, or names this pid)."""
    folder = os.path.dirname(commands.socket_path(data_dir))
    for name in os.listdir(folder):
        found = re.fullmatch(r"admin-(\d+)\.sock", name)
        if found is None:
            continue
        path = os.path.join(folder, name)
        if int(found.group(1)) != os.getpid():  # else a process before this one had its pid
            lock = lockfile.FilesystemLock(path + ".lock")
            if not lock.lock():
                continue  # its process runs
            lock.unlock()
        for stale in (path, path + ".lock"):
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass


def admin_service(data_dir, operator, reactor, shared=False):
    """
    The service serving the admin channel of the realm whose data
    directory is C{data_dir} (C{shared} with other processes of a realm
    on PostgreSQL: a socket of this process's own).  L{AdminSocketError}
    if its folder is unsafe.  None (and a warning) if the socket's path
    is too long for a UNIX socket: the realm runs without one, and the
    tool says why.
    """
    path = commands.socket_path(data_dir, os.getpid() if shared else None)
    if not commands.path_fits(path):
        log.warn(
            "no admin channel: {path} is longer than a UNIX socket's path may be"
            " ({most} bytes); use a shorter data_dir",
            path=path, most=commands.MAX_SOCKET_PATH, realm=operator.realm_name,
        )
        return None
    prepare_folder(data_dir)
    if shared:
        remove_stale(data_dir)
    service = strports.service(
        f"unix:{endpoints.quoteStringArgument(path)}:mode=600:lockfile=1",
        AdminFactory(operator), reactor=reactor,
    )
    service.path = path
    return service
