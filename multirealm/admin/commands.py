"""
The admin channel's contract, shared by the realm (L{multirealm.admin.server})
and the tool (L{multirealm.admin.tool}): where its UNIX socket is, and
its AMP commands.  A refusal is L{Refused}, its text C{code: message}
with a code of docs/protocol.md.
"""

import os
import re

from twisted.protocols import amp

FOLDER = "admin"  # in the realm's data directory, mode 0700
SOCKET = "admin.sock"  # in it, mode 0600


# sockaddr_un.sun_path is 108 bytes on Linux (104 on BSDs), NUL included.
MAX_SOCKET_PATH = 103


def socket_path(data_dir, pid=None):
    """
    The admin socket of the realm whose data directory is C{data_dir}:
    C{admin.sock}, or, for process C{pid} of a realm on PostgreSQL (one
    socket each), C{admin-PID.sock}.
    """
    name = SOCKET if pid is None else f"admin-{pid}.sock"
    return os.path.join(data_dir, FOLDER, name)


def socket_paths(data_dir):
    """
    The admin sockets in C{data_dir} to try, in turn: C{admin.sock}, then
    each process's (a realm on PostgreSQL), the newest first.
    """
    folder = os.path.dirname(socket_path(data_dir))
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    processes = [os.path.join(folder, name) for name in names
                 if re.fullmatch(r"admin-\d+\.sock", name)]
    processes.sort(key=_changed, reverse=True)
    return [socket_path(data_dir)] + processes


def _changed(path):
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def path_fits(path):
    """Whether C{path} fits in a UNIX socket's address."""
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH


class Refused(Exception):
    """The realm refused the request: C{code: message}."""


_ERRORS = {Refused: b"REFUSED"}


class Users(amp.Command):
    """A page of local users, after C{after}, by name."""

    arguments = [(b"after", amp.Unicode())]
    response = [
        (b"users", amp.AmpList([
            (b"name", amp.Unicode()),
            (b"locked", amp.Boolean()),
            (b"sessions", amp.Integer()),
            (b"created", amp.Unicode()),
        ])),
        (b"more", amp.Boolean()),
    ]
    errors = _ERRORS


class ResetPassword(amp.Command):
    """A new random password for C{user}; every session of theirs ends."""

    arguments = [(b"user", amp.Unicode())]
    response = [(b"user", amp.Unicode()), (b"password", amp.Unicode()), (b"ended", amp.Integer())]
    errors = _ERRORS


class Lock(amp.Command):
    """C{user} may not log in; every session of theirs ends."""

    arguments = [(b"user", amp.Unicode())]
    response = [(b"user", amp.Unicode()), (b"ended", amp.Integer())]
    errors = _ERRORS


class Unlock(amp.Command):
    """C{user} may log in again."""

    arguments = [(b"user", amp.Unicode())]
    response = [(b"user", amp.Unicode())]
    errors = _ERRORS


class DeleteGroup(amp.Command):
    """Local group C{group} loses every member (on every realm) and is deleted."""

    arguments = [(b"group", amp.Unicode())]
    response = [
        (b"group", amp.Unicode()),
        (b"removed", amp.Integer()),
        (b"realms", amp.ListOf(amp.Unicode())),
    ]
    errors = _ERRORS


class Queues(amp.Command):
    """Per peer realm: its link, its outbox depth and the age of the oldest entry."""

    arguments = []
    response = [
        (b"peers", amp.AmpList([
            (b"name", amp.Unicode()),
            (b"linked", amp.Boolean()),
            (b"pending", amp.Integer()),
            (b"oldest_pending_seconds", amp.Integer(optional=True)),
            (b"last_error", amp.Unicode(optional=True)),
        ])),
    ]
    errors = _ERRORS
