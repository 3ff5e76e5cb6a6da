"""The Range header read by the rules of RFC 9110 (multirealm.web.ranges)."""

from twisted.trial import unittest

from multirealm.web.ranges import Unsatisfiable, byte_range


class ByteRangeTests(unittest.TestCase):
    def test_one_range_in_each_form(self):
        for header, expected in [
            (b"bytes=0-9", (0, 9)),
            (b"bytes=10-", (10, 99)),
            (b"bytes=-10", (90, 99)),
            (b"bytes=90-1000", (90, 99)),  # past the end: to the end
            (b"BYTES=5-5", (5, 5)),  # the unit in any case
            (b" bytes=1-2 ", (1, 2)),
            (b"bytes=-99999999999999999999", (0, 99)),  # more than the file: all of it
            (b"bytes=0-99999999999999999999", (0, 99)),
            (b"bytes=0-" + b"9" * 5000, (0, 99)),  # a long number is not a slow one
            (b"bytes=0000000000000000000002-4", (2, 4)),  # leading zeros count for nothing
            (b"bytes=2-0000000000000000000004", (2, 4)),
            (b"bytes=-" + b"0" * 30 + b"5", (95, 99)),
        ]:
            self.assertEqual(byte_range(header, 100), expected, header)

    def test_what_is_not_one_range_is_ignored(self):
        for header in [
            None, b"", b"bytes=", b"bytes=-", b"bytes=5-2", b"bytes=0-1,5-6", b"bytes=0-1,",
            b"items=0-5", b"bytes 0-5", b"bytes=a-b", b"bytes=+1-2", b"bytes=1 -2",
            "bytes=²-5".encode(), "bytes=١-٥".encode(), "bytes=-\uff15".encode(),
        ]:
            self.assertIsNone(byte_range(header, 100), header)

    def test_a_range_without_a_byte_of_the_file_is_unsatisfiable(self):
        for header, size in [
            (b"bytes=100-", 100), (b"bytes=100-200", 100), (b"bytes=-0", 100),
            (b"bytes=99999999999999999999-", 100), (b"bytes=" + b"9" * 5000 + b"-", 100),
            (b"bytes=0-", 0), (b"bytes=-0", 0),
        ]:
            self.assertRaises(Unsatisfiable, byte_range, header, size)

    def test_a_suffix_of_an_empty_file_is_the_whole_empty_file(self):
        self.assertIsNone(byte_range(b"bytes=-5", 0))
