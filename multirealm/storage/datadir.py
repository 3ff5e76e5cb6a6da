"""
Which processes use a realm's data directory: each holds a lock
(C{flock}) on its C{realm.lock} while it runs, taken before anything
else is opened or bound.  A realm on SQLite holds it alone (it runs as
one process, whose pid the file names); the processes of a realm on
PostgreSQL share it, so neither kind starts beside the other.  The kernel
drops the lock when its process ends, however it ends.
"""

import fcntl
import os

LOCK_FILE = "realm.lock"


class DataDirInUse(Exception):
    """Another process holds the data directory: the message is the line to print."""


def claim(data_dir, realm, shared):
    """
    Lock the data directory of realm C{realm} (created if missing), shared
    with the other processes of a realm on PostgreSQL if C{shared}, else
    alone.  Returns the open lock file: the lock lasts while it is open.
    L{DataDirInUse} if another process holds it.
    """
    os.makedirs(data_dir, exist_ok=True)
    # Only this user may open it: flock needs no more than read access, so
    # anyone who could read it could lock it and keep the realm from starting.
    fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # one an earlier release made readable by all
    lock = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        who = f" (pid {holder})" if holder.isdigit() else " (processes of it on PostgreSQL)"
        raise DataDirInUse(
            f"realm {realm}: its data directory {data_dir} is in use by another process{who};"
            " a realm on SQLite runs as one process (database = postgresql://... lets several"
            " share one realm)"
        ) from None
    lock.truncate(0)  # whoever held it alone before is gone
    if not shared:
        lock.write(f"{os.getpid()}\n")
        lock.flush()
    return lock
