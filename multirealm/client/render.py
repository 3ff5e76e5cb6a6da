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
    sender = _you(entry.get("msg_from", "?"), me)
    if "failed" in entry:
        failed = entry["failed"]
        return f"[{when}] ! {entry.get('msg', '')} ({failed.get('code')})"
    if group is not None:
        where = f"#{group} {sender}"
    else:
        to = entry.get("msg_to", "?")
        where = f"{sender} → {_you(to, me)}"
    if "file_id" in entry:
        body = f"sent a file: {entry.get('file')} ({size(entry.get('size', 0))}) /get {entry['file_id']}"
    else:
        body = entry.get("msg", "")
    return f"[{when}] {where}: {body}"


def conversation(entry, me, state=None):
    """
    One line of a C{conversations} entry: C{#team (2 unread): [12:01] heru: hi},
    a person marked with their presence C{state} (L{marked}).
    """
    name = str(entry.get("with", "?"))
    name = f"#{name}" if entry.get("kind") == "group" else marked(name, state)
    unread = entry.get("unread", 0)
    line = f"{name} ({unread} unread)" if unread else name
    last = entry.get("last")
    if last is None:
        return f"{line}: no message yet"
    text = f"a file: {last.get('file')}" if "file_id" in last else last.get("msg", "")
    return f"{line}: [{clock(last.get('timestamp'))}] {_you(last.get('msg_from', '?'), me)}: {text}"


def _you(name, me):
    """C{"you"} for this user's own name (whatever its case, as the realm sees it)."""
    return "you" if me is not None and str(name).lower() == me.lower() else name


def event(item, me):
    """The line of an event, or None for an event this client does not show."""
    kind = item.get("event")
    if kind == "message":
        entry = item.get("message", {})
        group = entry.get("msg_to") if item.get("kind") == "group" else None
        return message(entry, me, group)
    if kind == "overflow":
        return "(too many messages at once: catching up from history)"
    if kind == "presence":
        user = item.get("user")
        if item.get("online"):
            return f"● {user} is online"
        return f"○ {user} went offline"
    if kind == "member":
        member, by = _you(item.get("member"), me), _you(item.get("by"), me)
        group = f"#{item.get('group')}"
        change = item.get("change")
        if change == "left":
            return f"{member} left {group}"
        if change == "created":
            return f"{by} created {group}"
        if change in ("added", "removed"):
            return f"{by} {change} {member} {'to' if change == 'added' else 'from'} {group}"
    return None


def marked(name, state):
    """
    C{name} with its presence mark: C{● name} online, C{○ name} offline
    (then when last seen, if known); as it is without a C{state}.
    """
    if not state:
        return name
    if state.get("online"):
        return f"● {name}"
    seen = state.get("last_seen")
    return f"○ {name}" + (f" (seen {clock(seen)})" if seen else "")


def members(reply, me, states=None):
    """The groupinfo reply: who owns the group and who is in it (marked with C{states})."""
    states = states or {}
    names = ", ".join(marked(_you(m, me), states.get(m)) for m in reply.get("members", []))
    owner = reply.get("owner")
    owned = f" (owner: {_you(owner, me)})" if owner else ""
    return f"#{reply.get('group')}{owned}: {names}"


def error(reply):
    """An ERROR reply in words: its sentence, then its code."""
    return f"error: {reply.get('message', 'the realm refused')} ({reply.get('code', '?')})"


def progress(label, done, total, width=24):
    """A transfer's progress bar: C{label [#####-----]  40% 4.0 MiB of 10.0 MiB}."""
    share = min(done / total, 1.0) if total else 0.0
    filled = int(share * width)
    return (f"{label} [{'#' * filled}{'-' * (width - filled)}] {int(share * 100):3d}% "
            f"{size(done)} of {size(total)}")


def not_a_chat_port(host, port, answer):
    """
    Words for a person who pointed the client at a port that is no chat
    port: what answered there (C{answer}: its first bytes), and what to give.
    """
    if answer.startswith(b"HTTP/"):
        what = "an HTTP server (a realm's http_port, for files)"
    elif b"HELLO" in answer:
        what = "a realm port (realm_port, where realms link to each other)"
    elif answer[:1] in (b"\x15", b"\x16"):
        what = "a TLS server (a tls_port: this client speaks plain TCP)"
    else:
        what = "something that does not speak the chat protocol"
    return f"({host}:{port} is not a chat port: it answered like {what}. {_CHAT_PORT} /quit to leave.)"


def silent_port(host, port, seconds):
    """Words for a port that took a connection but has not answered a first request."""
    return (f"({host}:{port} has not answered in {seconds:g} s, where a chat port answers at "
            f"once: a tls_port (this client speaks plain TCP) or another program? {_CHAT_PORT})")


_CHAT_PORT = ("Give the realm's chat_port from realms.ini: --port 8889 for realm 1 of the "
              "shipped file, 8888 for realm 2.")
