"""
The chat commands and the pure parser of request lines (docs/protocol.md).

The table L{COMMANDS} is the one place a command is declared: its words,
whether it takes a session, its usage line for C{help}.  L{parse_request}
turns a decoded line into a L{Request} and never raises.  A request whose
arguments are wrong still carries its session word, because a bad session
is reported before bad arguments.
"""

from typing import NamedTuple

import attrs

from multirealm import errors

SESSION = "sessionid"


@attrs.frozen
class Command:
    """
    C{name} then, in order: the session id (if C{session}), the fixed
    words C{words}, then either the free text C{text} (the rest of the
    line, required), the list C{variadic} (all remaining words), or the
    optional words C{optional}.

    C{serial}: later requests on the same connection wait until this one
    is answered (C{register}, C{auth} and C{passwd} hash a password in a
    thread pool, and a pipelined C{auth} then C{send - ...} must see the
    session).
    C{closes}: the connection closes once this request is answered.
    C{heavy}: its reply may be long: C{"history"} (a page bounded by
    C{history_reply_bytes}) or C{"list"} (bounded by C{list_limit} names);
    it counts as that long until answered.
    C{upload}: a file body follows the line (an empty line, base64, an
    empty line), whatever the words of the line were.
    """

    name: str
    summary: str
    session: bool = False
    words: tuple = ()
    text: str | None = None
    variadic: str | None = None
    optional: tuple = ()
    serial: bool = False
    closes: bool = False
    heavy: str | None = None
    upload: bool = False
    # The name of its handler method (multirealm.chat.handlers), made once.
    method: str = attrs.field(init=False)

    @method.default
    def _method(self):
        return "command_" + self.name

    @property
    def fields(self):
        """The names of its arguments, in the order a L{Request} holds them."""
        return (
            self.words + ((self.text,) if self.text else ())
            + ((self.variadic,) if self.variadic else ()) + self.optional
        )

    @property
    def usage(self):
        parts = [self.name]
        if self.session:
            parts.append(f"<{SESSION}>")
        parts += [f"<{w}>" for w in self.words]
        if self.text:
            parts.append(f"<{self.text}>")
        if self.variadic:
            parts.append(f"<{self.variadic}> ...")
        parts += [f"[<{w}>]" for w in self.optional]
        return " ".join(parts)


COMMANDS = {
    c.name: c
    for c in [
        Command("register", "create an account", words=("username", "password"), serial=True),
        Command(
            "auth", "log in; replies with a session id", words=("username", "password"),
            serial=True,
        ),
        Command("logout", "end a session everywhere", session=True),
        Command(
            "listusers", "this realm's users, a page at a time", optional=("realm", "after"),
            heavy="list",
        ),
        Command(
            "listgroups", "this realm's groups, a page at a time", optional=("realm", "after"),
            heavy="list",
        ),
        Command("listrealms", "the linked realms and their queues"),
        Command("send", "private message; <to> may be user@realm", True, ("to",), "message"),
        Command(
            "sendgroup", "message to a group; <group> may be group@realm", True, ("group",), "message"
        ),
        Command(
            "sendrealm", "private message to a user of another realm", True, ("to",), "message"
        ),
        Command(
            "sendgrouprealm", "message to a group of another realm", True, ("group",), "message"
        ),
        Command(
            "inbox", "your private messages, oldest first", True, optional=("after_id",),
            heavy="history",
        ),
        Command(
            "groupinbox", "a group's messages, oldest first", True, ("group",),
            optional=("after_id",), heavy="history",
        ),
        Command(
            "creategroup", "create a group; you are always a member", True, ("group",),
            variadic="member",
        ),
        Command("leavegroup", "leave a group", True, ("group",)),
        Command(
            "sendfile", "send a file: then an empty line, its base64, an empty line", True,
            ("to", "filename"), upload=True,
        ),
        Command(
            "sendgroupfile", "send a file to a group, as sendfile", True,
            ("group", "filename"), upload=True,
        ),
        Command("getfile", "fetch a file you sent or received", True, ("file_id",)),
        Command("mygroups", "the groups you are in, here and on other realms", True,
                heavy="list"),
        Command("subscribe", "receive events as messages arrive, on this connection", True),
        Command("unsubscribe", "stop the events on this connection", True),
        Command(
            "passwd", "change your password; your other sessions end", True, ("old", "new"),
            serial=True,
        ),
        Command(
            "addmember", "add members to a group you created (user or user@realm)", True,
            ("group",), variadic="member",
        ),
        Command(
            "removemember", "take members out of a group you created", True, ("group",),
            variadic="member",
        ),
        Command("groupinfo", "a group's owner and members (for its members)", True, ("group",)),
        Command(
            "conversations", "your conversations, newest first, with unread counts", True,
            optional=("after",), heavy="history",
        ),
        Command(
            "markread", "mark a conversation read up to a message", True,
            ("peer_or_group", "id"),
        ),
        Command(
            "history", "one conversation's messages, newest page, or the page before an id",
            True, ("kind", "peer_or_group"), optional=("before_id",), heavy="history",
        ),
        Command(
            "presence", "whether users (user or user@realm) are online, and when last seen",
            True, variadic="user",
        ),
        Command("help", "this list"),
        Command("ping", "keep an idle connection open"),
        Command("quit", "close the connection", closes=True),
    ]
}


class Request(NamedTuple):
    """
    A parsed line.  C{args} are its arguments in the order of
    L{Command.fields} (its handler's parameters: the handler is called
    with them positionally, no dict made).  C{error}, if set, is the
    L{errors.ChatError} to answer with, after the session (if any) has
    been checked.  (A named tuple: one is made for every line, and
    L{parse_request} makes a message's with C{tuple.__new__}, a fraction
    of an attrs class's C{__init__}.)
    """

    command: Command | None
    session: str | None = None
    args: tuple | list = ()
    error: errors.ChatError | None = None


_new_tuple = tuple.__new__


def _next_word(text):
    """Split off the first space-separated word: (word, rest)."""
    text = text.lstrip(" ")
    word, _, rest = text.partition(" ")
    return word, rest.lstrip(" ")


# The messages' commands (send, sendgroup, sendrealm, sendgrouprealm): a
# session, one word, then the text.
_WITH_TEXT = {
    name: command for name, command in COMMANDS.items()
    if command.text is not None and command.session and len(command.words) == 1
}


def split_command(line):
    """
    (the L{Command} or None, its word, the rest of the line): the first
    word of a request line, in any case, split off as L{parse_request}
    splits every word.  C{line} may be the bytes as read, so that whether
    a file body follows (C{Command.upload}) is known for a line refused
    before it is parsed, even one that is not UTF-8: command names are
    ASCII, so the bytes name the command the text would.
    """
    if type(line) is bytes:
        line = line.decode("latin-1")
    name, rest = _next_word(line)
    command = COMMANDS.get(name.lower()) if name.isascii() else None
    return command, name, rest


def parse_request(line):
    """
    Parse one request line (decoded, trailing whitespace stripped, not
    empty) into a L{Request}.  Never raises.
    """
    # The messages' shape first (send, sendgroup...: the hottest lines
    # there are): a lower-case name, then the session and the word each
    # after one space, then the text.  Anything else, right or wrong, is
    # parsed word by word below.
    name, _, rest = line.partition(" ")
    command = _WITH_TEXT.get(name)
    if command is not None:
        parts = rest.split(" ", 2)
        if len(parts) == 3 and parts[0] and parts[1]:
            text = parts[2]
            if text[:1] == " ":  # spaces before the text are no part of it
                text = parts[2] = text.lstrip(" ")
            if text:
                return _new_tuple(Request, (command, parts[0], parts[1:], None))
    return _parse_words(line)


def _parse_words(line):
    command, name, rest = split_command(line)
    if command is None:
        return Request(None, error=errors.UnknownCommand(f"unknown command {name!r}; try help"))

    session = None
    if command.session:
        session, rest = _next_word(rest)
        if not session:
            return Request(command, error=errors.InvalidSession(_usage("no session id", command)))

    args = []
    for word in command.words:
        value, rest = _next_word(rest)
        if not value:
            return Request(command, session, error=errors.BadRequest(_usage(f"missing <{word}>", command)))
        args.append(value)
    if command.text:
        if not rest:
            problem = f"empty <{command.text}>"
            return Request(command, session, error=errors.BadRequest(_usage(problem, command)))
        args.append(rest)
        rest = ""
    elif command.variadic:
        args.append(tuple(w for w in rest.split(" ") if w))
        rest = ""
    for word in command.optional:
        value, rest = _next_word(rest)
        args.append(value or None)
    if rest:
        return Request(command, session, error=errors.BadRequest(_usage("too many words", command)))
    return Request(command, session, args)


def _usage(problem, command):
    return f"{problem}; usage: {command.usage}"
