"""
The C{Range} header of a file download (RFC 9110, section 14), read here
rather than by C{twisted.web.static.File}, which trusts its numbers.

One range is served: C{first-last}, C{first-} or C{-suffix}, digits in
ASCII only.  A header that is not one such range (invalid, another unit,
several ranges) is ignored, as RFC 9110 allows: the whole file is sent.
A range no byte of the file is in is L{Unsatisfiable} (416).
"""

import re

_ONE_RANGE = re.compile(rb"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)

# Any number of more digits is past every file (and int() of thousands of
# digits is slow, or refused).
_MOST_DIGITS = 18


class Unsatisfiable(Exception):
    """No byte of the file is in the range asked for."""


def _number(digits):
    digits = digits.lstrip(b"0")  # 0002 is 2: only the digits that count are counted
    return int(digits or b"0") if len(digits) <= _MOST_DIGITS else 10**_MOST_DIGITS


def byte_range(header, size):
    """
    The bytes a C{Range} C{header} (bytes, or None) asks of a file of
    C{size} bytes: (first, last), both included; None for the whole file.
    """
    if header is None:
        return None
    match = _ONE_RANGE.fullmatch(header.strip(b" \t"))
    if match is None:
        return None
    first, last = match.groups()
    if first:
        first = _number(first)
        last = _number(last) if last else None
        if last is not None and last < first:
            return None  # invalid: ignored
        if first >= size:
            raise Unsatisfiable()
        return first, size - 1 if last is None else min(last, size - 1)
    if not last:
        return None  # "bytes=-": invalid
    suffix = _number(last)
    if suffix == 0:
        raise Unsatisfiable()
    if size == 0:
        return None  # an empty file: the whole of it
    return max(0, size - suffix), size - 1
