"""
The C{twistd multirealm} command: L{Options} and L{makeService}.

At start the soft open-files limit is raised to the hard one, and one
L{ConnectionLimits} sized from it admits the connections of every realm
of the process (they share its descriptors).

Start-up problems (a wrong realms.ini, an unknown realm, a data directory
that cannot be opened or that another process uses, a port in use) print
one line on stderr and exit with status 1, never a traceback.
"""

import os
import sqlite3
import sys

from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from multirealm import config as configuration
from multirealm import connections
from multirealm.collector import CollectorTuning
from multirealm.service import build_realm_service
from multirealm.storage.datadir import DataDirInUse
from multirealm.storage.schema import SchemaError

log = Logger()


class Options(usage.Options):
    synopsis = "--realm=NAME|all [--config=realms.ini]"
    longdesc = (
        "Run one realm of a multirealm chat network, as described in realms.ini;"
        " --realm=all runs every realm of the file in this one process."
        " Every line of a realm's log names it ([realm 1]). For log shippers, one"
        " JSON object a line on standard output (with its realm and peer fields):"
        " twistd -n --logger=multirealm.logs.json_lines multirealm --realm=..."
    )
    optParameters = [
        ["realm", "r", None,
         "Name of the realm to run (a [realm:NAME] section), or 'all' for every realm."],
        ["config", "c", configuration.DEFAULT_CONFIG, "Path of realms.ini."],
    ]

    def postOptions(self):
        if not self["realm"]:
            raise usage.UsageError("--realm is required, e.g. --realm=1")


def _fail(message):
    # twistd has redirected sys.stderr into its log by the time services
    # start; the line is for the person at the terminal, so use the real one.
    stderr = sys.__stderr__ or sys.stderr
    stderr.write(f"multirealm: {message}\n")
    stderr.flush()
    raise SystemExit(1)


class _ExitOnStartupError(MultiService):
    """Turns a port that cannot be bound into one line and exit status 1."""

    def privilegedStartService(self):
        try:
            MultiService.privilegedStartService(self)
        except CannotListenError as e:
            if isinstance(e.port, bytes):  # the path of a realm's admin socket
                _fail(
                    f"cannot serve the admin socket {os.fsdecode(e.port)}: {e.socketError}"
                    " (is this realm running already?)"
                )
            _fail(f"cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}")


def makeService(options):
    try:
        network = configuration.load(options["config"])
    except configuration.ConfigError as e:
        _fail(str(e))
    if options["realm"] == configuration.ALL_REALMS:
        names = list(network.realms)  # a local network in one process
    else:
        names = [options["realm"]]
    before, soft, hard = connections.raise_descriptor_limit()
    shared = connections.for_this_process(network.limits)
    log.info(
        "realm {realms}: open-files limit {soft} (raised from {before}; hard limit {hard}):"
        " at most {most} connections, {per_address} from one address",
        realms=", ".join(names), soft=soft, before=before, hard=hard,
        most=shared.most, per_address=shared.per_address,
    )
    top = _ExitOnStartupError()
    for name in names:
        try:
            realm_service = build_realm_service(network, name, connections=shared)
        except configuration.ConfigError as e:
            _fail(str(e))
        except DataDirInUse as e:
            _fail(str(e))
        except SchemaError as e:
            _fail(f"cannot use the data of realm {name}: {e}")
        except (OSError, sqlite3.Error) as e:
            _fail(f"cannot open the data of realm {name}: {e}")
        realm_service.setName(f"realm-{name}")
        realm_service.setServiceParent(top)
    # Last: it freezes what the realms built as they started.
    CollectorTuning().setServiceParent(top)
    return top
