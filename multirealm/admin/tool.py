"""
C{multirealm-admin}: the operator's tool, run on the realm's machine as
the realm's user.  It asks the running realm, over its admin socket
(L{multirealm.admin.commands}); it never opens a realm's database
itself, so it is safe while the realm runs, and a realm that is not
running is named as such and left alone.

Imports only leaves (config) and the channel's contract: never the server.
"""

import argparse
import functools
import os
import sys

from twisted.internet import defer, endpoints, error, task
from twisted.protocols import amp

from multirealm import config as configuration
from multirealm.admin import commands

# Verbs: (help, the word it takes or None).
VERBS = {
    "users": ("each local user: locked or not, live sessions, when registered", None),
    "resetpassword": ("a new random password for USER (printed); their sessions end", "user"),
    "lock": ("USER may not log in; their sessions end (their messages stay)", "user"),
    "unlock": ("USER may log in again", "user"),
    "deletegroup": ("GROUP loses its members on every realm and is deleted", "group"),
    "queues": ("per peer realm: link, outbox depth, age of the oldest entry", None),
}
CONNECT_SECONDS = 10
ANSWER_SECONDS = 60  # a hung realm accepts (the kernel does) but never answers


class Failed(Exception):
    """One line for the operator: what went wrong and what to do."""


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="multirealm-admin",
        description="Administer a running realm, over its admin socket.",
    )
    parser.add_argument("--config", "-c", default=configuration.DEFAULT_CONFIG,
                        help="path of realms.ini (default: %(default)s)")
    parser.add_argument("--realm", "-r", required=True,
                        help="the realm to administer, or 'all' for every realm of the file")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (summary, word) in VERBS.items():
        sub = verbs.add_parser(verb, help=summary, description=summary)
        if word:
            sub.add_argument(word, metavar=word.upper())
    return parser.parse_args(argv)


async def _connect(reactor, realm):
    """An AMP connection to one of C{realm}'s admin sockets, or L{Failed}."""
    path = commands.socket_path(realm.data_dir)
    not_running = (
        f"realm {realm.name} is not running: start it (twistd -n multirealm"
        f" --realm={realm.name}), then try again; nothing was changed"
    )
    if not commands.path_fits(path):
        raise Failed(
            f"realm {realm.name} has no admin socket: {path} is too long for one"
            f" (at most {commands.MAX_SOCKET_PATH} bytes): use a shorter data_dir"
        )
    try:
        owner = os.stat(os.path.dirname(path)).st_uid
    except FileNotFoundError:
        raise Failed(f"{not_running} (no {path})") from None
    except PermissionError:
        raise Failed(f"{path}: permission denied: run as the user realm {realm.name} runs as")
    if owner != os.getuid():
        raise Failed(
            f"{path}: its folder is owned by uid {owner}, not by you ({os.getuid()}):"
            f" run as the user realm {realm.name} runs as"
        )
    failures = []
    # admin.sock, then those of the processes of a realm on PostgreSQL: any answers.
    for candidate in commands.socket_paths(realm.data_dir):
        endpoint = endpoints.UNIXClientEndpoint(reactor, candidate, timeout=CONNECT_SECONDS)
        try:
            return await endpoints.connectProtocol(endpoint, amp.AMP())
        except (error.ConnectError, OSError) as e:
            failures.append(f"{candidate}: {e}")
    raise Failed(f"{not_running} ({'; '.join(failures)})")


async def _ask(reactor, protocol, command, **arguments):
    try:
        return await protocol.callRemote(command, **arguments).addTimeout(
            ANSWER_SECONDS, reactor
        )
    except defer.TimeoutError:
        raise Failed(
            f"no answer within {ANSWER_SECONDS} s (the realm is overloaded or hung;"
            " the request may still be carried out: check before trying again)"
        ) from None
    except commands.Refused as e:
        raise Failed(str(e)) from None
    except amp.UnknownRemoteError:
        raise Failed("internal: the realm failed on this request (its log says why)") from None
    except error.ConnectionDone:
        raise Failed("the realm closed the admin connection before answering") from None


def _sessions(count):
    return f"{count} session{'' if count == 1 else 's'}"


def _table(header, rows):
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    ]


async def _users(ask, options):
    rows, after = [], ""
    while True:
        page = await ask(commands.Users, after=after)
        rows += [
            (u["name"], "locked" if u["locked"] else "-", u["sessions"], u["created"])
            for u in page["users"]
        ]
        if not page["more"] or not page["users"]:
            break
        after = page["users"][-1]["name"]
    lines = _table(("user", "locked", "sessions", "registered"), rows)
    return lines + [f"{len(rows)} user{'' if len(rows) == 1 else 's'}"]


async def _resetpassword(ask, options):
    done = await ask(commands.ResetPassword, user=options.user)
    return [
        f"new password of {done['user']}: {done['password']}",
        f"{_sessions(done['ended'])} of {done['user']} ended",
    ]


async def _lock(ask, options):
    done = await ask(commands.Lock, user=options.user)
    return [f"{done['user']} is locked out: {_sessions(done['ended'])} ended; messages kept"]


async def _unlock(ask, options):
    done = await ask(commands.Unlock, user=options.user)
    return [f"{done['user']} may log in again"]


async def _deletegroup(ask, options):
    done = await ask(commands.DeleteGroup, group=options.group)
    told = ", ".join(done["realms"]) or "none"
    return [
        f"group {done['group']} deleted: {done['removed']} members removed"
        f" (other realms told through their links: {told});"
        " its name will not be given again"
    ]


def _age(seconds):
    return "-" if seconds is None else f"{seconds}s"


async def _queues(ask, options):
    done = await ask(commands.Queues)
    rows = [
        (p["name"], "up" if p["linked"] else "down", p["pending"],
         _age(p.get("oldest_pending_seconds")), p.get("last_error") or "-")
        for p in done["peers"]
    ]
    if not rows:
        return ["no peer realms"]
    return _table(("peer", "link", "pending", "oldest", "last error"), rows)


_DO = {
    "users": _users, "resetpassword": _resetpassword, "lock": _lock, "unlock": _unlock,
    "deletegroup": _deletegroup, "queues": _queues,
}


async def _run_one(reactor, realm, options):
    protocol = await _connect(reactor, realm)
    try:
        ask = functools.partial(_ask, reactor, protocol)
        return await _DO[options.verb](ask, options)
    except Failed as e:
        raise Failed(f"realm {realm.name}: {e}") from None
    finally:
        protocol.transport.loseConnection()


async def run(reactor, options, out, err):
    """Run the verb on each realm named; returns the exit status."""
    try:
        network = configuration.load(options.config)
        if options.realm == configuration.ALL_REALMS:
            realms = list(network.realms.values())
        else:
            realms = [network.realm(options.realm)]
    except configuration.ConfigError as e:
        err.write(f"multirealm-admin: {e}\n")
        return 1
    status = 0
    for realm in realms:
        try:
            lines = await _run_one(reactor, realm, options)
        except Failed as e:
            err.write(f"multirealm-admin: {e}\n")
            status = 1
            continue
        if len(realms) > 1:
            out.write(f"realm {realm.name}:\n")
            lines = ["  " + line for line in lines]
        out.write("".join(line + "\n" for line in lines))
    return status


def main(argv=None):
    options = parse_arguments(sys.argv[1:] if argv is None else argv)

    def start(reactor):
        return defer.ensureDeferred(run(reactor, options, sys.stdout, sys.stderr)).addCallback(
            _exit_status
        )

    task.react(start)


def _exit_status(status):
    if status:
        raise SystemExit(status)
