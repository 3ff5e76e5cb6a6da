"""The HTTP status of each error code the HTTP port answers with."""

_STATUS = {
    "invalid_session": 401,
    "forbidden": 403,
    "no_such_file": 404,
    "no_such_user": 404,
    "no_such_group": 404,
    "no_such_realm": 404,
    "file_too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "storage_full": 507,
    "internal": 500,
}


def status_of(error):
    """The HTTP status for L{multirealm.errors.ChatError} C{error} (400 by default)."""
    return _STATUS.get(error.code, 400)
