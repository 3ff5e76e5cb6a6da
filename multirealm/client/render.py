"""
Replies and events as lines for a person (pure: no I/O).  Times are
shown in the local time zone; a session id is never part of a line.
"""

import unicodedata
from datetime import datetime


def safe(text):
    """
    C{text} with every control and format character (newlines too) shown
    as an escape (C{\\x1b}): what others write can never move the
    cursor, clear the screen, fake a line or reach the terminal's clipboard.
    """
    return "".join(_shown(c) for c in str(text))


def _shown(c):
    if unicodedata.category(c) not in ("Cc", "Cf"):
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"


def clock(timestamp):
    """C{HH:MM} of an ISO 8601 timestamp, in local time ("??:??" if unreadable)."""
    try:
        return datetime.fromisoformat(timestamp).astimezone().strftime("%H:%M")
    except Exception:  # a peer's odd date: not this client's problem
        return "??:??"


def size(count):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024


def message(entry, me, group=None):
    """
    One line for a message object (history or event).  C{me}: this
    user's name.  C{group}: the group it was posted to, for a group
    message (an event's kind says so; a group's history is all of one).
    """
    when = clock(entry.get("timestamp"))
    sender = entry.get("msg_from", "?")
    if "failed" in entry:
        failed = entry["failed"]
        return f"[{when}] ! {entry.get('msg', '')} ({failed.get('code')})"
    if group is not None:
        where = f"#{group} {sender}"
    else:
        to = entry.get("msg_to", "?")
        where = f"{sender} → {'you' if to == me else to}"
    if "file_id" in entry:
        body = f"sent a file: {entry.get('file')} ({size(entry.get('size', 0))}) /get {entry['file_id']}"
    else:
        body = entry.get("msg", "")
    return f"[{when}] {where}: {body}"


def event(item, me):
    """The line of an event, or None for an event this client does not show."""
    kind = item.get("event")
    if kind == "message":
        entry = item.get("message", {})
        group = entry.get("msg_to") if item.get("kind") == "group" else None
        return message(entry, me, group)
    if kind == "overflow":
        return "(too many messages at once: catching up from history)"
    return None


def error(reply):
    """An ERROR reply in words: its sentence, then its code."""
    return f"error: {reply.get('message', 'the realm refused')} ({reply.get('code', '?')})"
