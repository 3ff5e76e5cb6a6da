"""
How multirealm logs: L{RealmLogger}, whose every event names its realm,
and L{json_lines}, a log observer for log shippers.

Several realms can run in one process (C{--realm=all}), so every line of
a realm says which: each event carries a C{realm} field, and its
C{log_system} is C{realm NAME}, which twistd's text format prints as
C{[realm NAME]}.  Modules of the server log through a L{RealmLogger} and
pass C{realm=} on every call (tests/test_logs.py checks every call site).

C{twistd --logger=multirealm.logs.json_lines ...} writes one JSON object a
line on standard output instead of twistd's text.
"""

import json
import sys
from datetime import datetime, timezone

from twisted.logger import ILogObserver, Logger, formatEvent
from zope.interface import provider


class RealmLogger(Logger):
    """
    A L{Logger} for the modules of a realm: every call passes C{realm=}
    (the L{multirealm.core.realm.Realm} or its name), which the event
    keeps as its C{realm} field (the name) and shows as its system.
    """

    def emit(self, level, format=None, **kwargs):
        realm = kwargs.get("realm")
        realm = getattr(realm, "name", realm)
        kwargs["realm"] = realm
        kwargs.setdefault("log_system", f"realm {realm}")
        Logger.emit(self, level, format, **kwargs)


def plain(text):
    """
    C{text} (a peer's words) as one line of a log says it: each character
    that is not printable (line breaks, terminal escapes) a space.
    """
    return "".join(c if c.isprintable() else " " for c in text)


# The fields of an event from twisted.python.log, said above in other words.
_LEGACY = frozenset(("message", "format", "system", "isError", "why", "failure"))


def _value(value):
    """A field's value as JSON has it (what JSON cannot say, as text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def event_as_json(event):
    """
    One event as a flat JSON object: its time (ISO 8601, UTC), level,
    system, namespace, the text a person reads, a failure's traceback, and
    every field of its own (C{realm}, C{peer}, ...).
    """
    record = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(),
        "level": getattr(event.get("log_level"), "name", None),
        "system": event.get("log_system"),
        "namespace": event.get("log_namespace"),
        "text": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and key not in _LEGACY:
            record[key] = _value(value)
    return json.dumps(record, ensure_ascii=False)


def json_lines(out=None):
    """
    A log observer writing each event as one line of JSON to C{out}
    (default: standard output): a log observer factory for twistd's
    C{--logger}.
    """
    out = out or sys.stdout

    @provider(ILogObserver)
    def observe(event):
        out.write(event_as_json(event) + "\n")
        out.flush()

    return observe
