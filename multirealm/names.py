"""
User, group and realm names, and C{name@realm} addresses (docs/protocol.md,
"Names and addresses"); file names; the numbers a line carries.
"""

import functools
import re
import unicodedata

import attrs

from multirealm import errors
from multirealm.errors import InvalidName

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
# A new name also needs a letter, digit or _: "-" is the session
# shorthand, and "." or ".." look like paths.  (Names made before this rule
# stay usable: the rule is checked only where a name is made.)
_NEW_NAME = re.compile(r"(?=.*[A-Za-z0-9_])[A-Za-z0-9_.\-]{1,32}")

NAME_RULE = "1-32 characters of A-Z a-z 0-9 _ . -"
NEW_NAME_RULE = "1-32 characters of A-Z a-z 0-9 _ . -, not only dots and dashes"


def is_valid_name(name):
    """
    The naming rule.  Names are one identity whatever their case (the
    store compares them without case and keeps the case given first).
    """
    return len(name) <= 32 and _is_valid_short_name(name)


# The same few names come back with every request and every frame: the
# answers for the last ones are kept (at most 4,096 of at most 32
# characters each: about 1 MiB at worst).
@functools.lru_cache(maxsize=4096)
def _is_valid_short_name(name):
    return _NAME.fullmatch(name) is not None


def check_new_name(name, what="name"):
    """C{name} if it may name a new user or group, else L{InvalidName}."""
    if _NEW_NAME.fullmatch(name) is None:
        raise InvalidName(f"{what} {name!r} is not valid: use {NEW_NAME_RULE}")
    return name


def check_name(name, what="name"):
    """
    Return C{name} if it follows the naming rule, else raise L{InvalidName}.
    """
    if len(name) > 32 or not _is_valid_short_name(name):  # is_valid_name, one call less
        raise InvalidName(f"{what} {name!r} is not valid: use {NAME_RULE}")
    return name


@attrs.frozen
class Address:
    """
    A user or group on some realm: C{heru@2} is C{Address("heru", "2")}.
    """

    name: str
    realm: str

    def __str__(self):
        return f"{self.name}@{self.realm}"

    def relative_to(self, realm):
        """
        The wire form seen from C{realm}: bare for its own names, else
        C{name@realm}.
        """
        return self.name if self.realm == realm else str(self)

    @classmethod
    def parse(cls, text, default_realm, what="name"):
        """
        Parse C{name} or C{name@realm}; a bare name is on C{default_realm}.

        @raise InvalidName: if either part breaks the naming rule.
        """
        name, at, realm = text.partition("@")
        check_name(name, what)
        if at:
            check_name(realm, "realm name")
        else:
            realm = default_realm
        return cls(name, realm)


class ParsedAddresses:
    """
    L{Address.parse} for a realm link's frames, whose few names come back
    with every message: what it parsed last is kept (at most C{size}
    addresses, forgotten all at once when full); a name that breaks the
    rule is never kept, and raises every time.
    """

    def __init__(self, size=4096):
        self._size = size
        self._parsed = {}

    def parse(self, text, default_realm, what="name"):
        key = (text, default_realm)
        address = self._parsed.get(key)
        if address is None:
            address = Address.parse(text, default_realm, what)
            if len(self._parsed) >= self._size:
                self._parsed.clear()
            self._parsed[key] = address
        return address


def check_filename(name):
    """
    C{name} if it may label a file: 1-255 bytes of UTF-8, no C{/}, C{\\},
    C{..}, NUL or control character (it is never used as a path, but
    clients save files under it).  L{errors.BadFilename} otherwise.
    """
    if not 0 < len(name.encode("utf-8")) <= 255:
        raise errors.BadFilename("a file name is 1-255 bytes")
    if "/" in name or "\\" in name or ".." in name or name == "." or any(
        unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name
    ):
        raise errors.BadFilename(
            f"file name {name!r} is not a plain name: no / \\ .. or control characters"
        )
    return name


_NUMBER = re.compile(r"[0-9]{1,19}")


def parse_number(text):
    """
    The number C{text} writes in 1-19 ASCII digits, else None.  Every
    number that comes from the wire is read here: C{int()} also takes
    other scripts' digits (C{"\u0663"} is 3) and C{str.isdigit()} is true
    for C{"\u00b2"}, which C{int()} then refuses.
    """
    return int(text) if _NUMBER.fullmatch(text) else None
