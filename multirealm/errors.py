"""
The errors a request can end in, one class per stable code of
docs/protocol.md ("Error codes").

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


class BadRequest(ChatError):
    """Wrong or missing arguments."""

    code = "bad_request"


class UnknownCommand(ChatError):
    """No such command."""

    code = "unknown_command"


class LineTooLong(ChatError):
    """A request line over the limit."""

    code = "line_too_long"


class BadEncoding(ChatError):
    """A request line that is not UTF-8."""

    code = "bad_encoding"


class BadCredentials(ChatError):
    """Wrong user or password."""

    code = "bad_credentials"


class UserExists(ChatError):
    """That username is taken."""

    code = "user_exists"


class InvalidName(ChatError):
    """A name breaking the naming rule."""

    code = "invalid_name"


class InvalidSession(ChatError):
    """A bad or unknown session."""

    code = "invalid_session"


class NoSuchUser(ChatError):
    """No user of that name."""

    code = "no_such_user"


class NoSuchGroup(ChatError):
    """No group of that name."""

    code = "no_such_group"


class NoSuchRealm(ChatError):
    """No realm of that name."""

    code = "no_such_realm"


class AmbiguousRealm(ChatError):
    """A bare name where several realms could be meant."""

    code = "ambiguous_realm"


class GroupExists(ChatError):
    """That group name is taken."""

    code = "group_exists"


class NotAMember(ChatError):
    """Only members may do that."""

    code = "not_a_member"


class Forbidden(ChatError):
    """Not allowed for this user (or, on a realm link, for this realm)."""

    code = "forbidden"


class RateLimited(ChatError):
    """Too many requests."""

    code = "rate_limited"


class Unavailable(ChatError):
    """The realm is shutting down (or otherwise cannot serve now): try again later."""

    code = "unavailable"


class StorageFull(ChatError):
    """The realm's disk is full: nothing was stored."""

    code = "storage_full"


class TooManyConnections(ChatError):
    """Too many connections from one address."""

    code = "too_many_connections"


class QuotaExceeded(ChatError):
    """A per-user or per-address quota (groups created, registrations) is used up."""

    code = "quota_exceeded"


class IdleTimeout(ChatError):
    """The connection was idle too long and is being closed."""

    code = "idle_timeout"


class BadFilename(ChatError):
    """A file name that is not a plain label."""

    code = "bad_filename"


class BadFileEncoding(ChatError):
    """A file body that is not base64."""

    code = "bad_file_encoding"


class FileTooLarge(ChatError):
    """A file over the size limit."""

    code = "file_too_large"


class NoSuchFile(ChatError):
    """No file of that id."""

    code = "no_such_file"


class Locked(ChatError):
    """The account is locked by the realm's operator: no login."""

    code = "locked"
