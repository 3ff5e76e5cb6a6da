"""
The errors a request can end in, one class per stable code of PROTOCOL.md §4.

Anything that refuses a request raises a L{ChatError}; the chat protocol turns
it into C{{"status": "ERROR", "code": ..., "message": ...}}.  Any other
exception is a bug and becomes C{internal}.
"""


class ChatError(Exception):
    """A request refused for a reason a client can act on."""

    code = "internal"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def _error(name, code, doc):
    return type(name, (ChatError,), {"code": code, "__doc__": doc})


BadRequest = _error("BadRequest", "bad_request", "Wrong or missing arguments.")
UnknownCommand = _error("UnknownCommand", "unknown_command", "No such command.")
LineTooLong = _error("LineTooLong", "line_too_long", "A request line over the limit.")
BadEncoding = _error("BadEncoding", "bad_encoding", "A request line that is not UTF-8.")
BadCredentials = _error("BadCredentials", "bad_credentials", "Wrong user or password.")
UserExists = _error("UserExists", "user_exists", "That username is taken.")
InvalidName = _error("InvalidName", "invalid_name", "A name breaking the naming rule.")
InvalidSession = _error("InvalidSession", "invalid_session", "A bad or unknown session.")
NoSuchUser = _error("NoSuchUser", "no_such_user", "No user of that name.")
NoSuchGroup = _error("NoSuchGroup", "no_such_group", "No group of that name.")
NoSuchRealm = _error("NoSuchRealm", "no_such_realm", "No realm of that name.")
AmbiguousRealm = _error(
    "AmbiguousRealm", "ambiguous_realm", "A bare name where several realms could be meant."
)
GroupExists = _error("GroupExists", "group_exists", "That group name is taken.")
NotAMember = _error("NotAMember", "not_a_member", "Only members may do that.")
Forbidden = _error("Forbidden", "forbidden", "Not allowed for this user.")
RateLimited = _error("RateLimited", "rate_limited", "Too many requests.")
