"""
What the person types, parsed (pure: no I/O).  A line starting with C{/}
is a command; any other line is a message to the open conversation.
"""

import attrs

HELP = """\
/register NAME PASSWORD      create an account
/login NAME PASSWORD         log in (the session stays in memory, never shown)
/passwd                      change your password (asked for, never shown)
/msg USER[@REALM] TEXT       private message
/group GROUP[@REALM] TEXT    message to a group
/open USER | /open #GROUP    talk to one person or group: plain lines go there
/create GROUP MEMBER ...     create a group (members may be user@realm)
/leave GROUP[@REALM]         leave a group
/add GROUP MEMBER ...        add members to a group you created
/remove GROUP MEMBER ...     take members out of a group you created
/members GROUP[@REALM]       a group's owner and members (● online, ○ offline)
/send-file TO PATH           send a file (TO: a user, or #group)
/get FILE_ID [FOLDER]        save a file you received (in /downloads, or FOLDER)
/downloads [FOLDER]          the folder /get saves in: shown, or set
/history [USER | #GROUP]     its latest messages, marked read (then /history more: older ones)
/conversations [AFTER]       your conversations, newest first, with unread counts
/who [REALM]                 users of this realm, or of a linked one (● online, ○ offline)
/realms                      linked realms and their queues
/help                        this list
/quit                        leave (Ctrl-D too)"""


class UsageError(ValueError):
    """A line that is no valid command; the message says what to type."""


@attrs.frozen
class Action:
    """One thing to do: C{name} and its words."""

    name: str
    args: tuple = ()


# command -> (fewest words, most words (None: any), usage)
_SHAPES = {
    "register": (2, 2, "/register NAME PASSWORD"),
    "login": (2, 2, "/login NAME PASSWORD"),
    # Alone: the passwords are asked for, unseen; typed after it they would stay on screen.
    "passwd": (0, 0, "/passwd alone: it asks for the passwords without showing them"),
    "msg": (2, 2, "/msg USER[@REALM] TEXT"),
    "group": (2, 2, "/group GROUP[@REALM] TEXT"),
    "open": (1, 1, "/open USER or /open #GROUP"),
    "create": (1, None, "/create GROUP MEMBER ..."),
    "leave": (1, 1, "/leave GROUP[@REALM]"),
    "add": (2, None, "/add GROUP MEMBER ..."),
    "remove": (2, None, "/remove GROUP MEMBER ..."),
    "members": (1, 1, "/members GROUP[@REALM]"),
    "send-file": (2, 2, "/send-file TO PATH"),
    "get": (1, 2, "/get FILE_ID [FOLDER]"),
    "downloads": (0, 1, "/downloads [FOLDER]"),
    "history": (0, 1, "/history [USER | #GROUP | more]"),
    "conversations": (0, 1, "/conversations [AFTER]"),
    "who": (0, 1, "/who [REALM]"),
    "realms": (0, 0, "/realms"),
    "help": (0, 0, "/help"),
    "quit": (0, 0, "/quit"),
}
# Commands whose last word is free text or a path (spaces kept).
_TEXT_LAST = {"msg", "group", "send-file", "get", "downloads"}


def parse(line, conversation=None):
    """
    The L{Action} of one typed line.  C{conversation} is the open one
    (C{"heru"} or C{"#team"}): a plain line is sent there.
    @raise UsageError: with what to type instead.
    """
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if not line.startswith("/"):
        if conversation is None:
            raise UsageError("no conversation is open: /open USER or /open #GROUP first")
        return _message_to(conversation, line)
    name, _, rest = line[1:].partition(" ")
    name = name.lower()
    if name not in _SHAPES:
        raise UsageError(f"unknown command /{name}: /help lists them")
    fewest, most, usage = _SHAPES[name]
    if name in _TEXT_LAST:
        words = [w for w in rest.strip(" ").split(" ", most - 1) if w]
    else:
        words = rest.split()
    if len(words) < fewest or (most is not None and len(words) > most):
        raise UsageError(f"usage: {usage}")
    if name == "send-file" and words[0].startswith("#"):
        return Action("send-group-file", (words[0][1:], words[1]))
    return Action(name, tuple(words))


def _message_to(conversation, text):
    if conversation.startswith("#"):
        return Action("group", (conversation[1:], text))
    return Action("msg", (conversation, text))
