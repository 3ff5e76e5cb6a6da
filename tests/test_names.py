"""
The naming rule and addresses, with what is kept of the answers: the same
answers as the rule, and bounded memory whatever a client or a peer sends.
"""

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from multirealm.errors import InvalidName
from multirealm.names import (
    Address,
    ParsedAddresses,
    _is_valid_short_name,
    check_name,
    is_valid_name,
)

RULE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
names = st.one_of(
    st.text(alphabet="abZ09_.-", max_size=40),
    st.text(max_size=40),
)


class NameRuleTests(unittest.TestCase):
    @given(names)
    def test_the_rule_asked_twice_answers_as_the_pattern(self, name):
        for _ in range(2):  # the second answer is the one kept
            self.assertEqual(is_valid_name(name), RULE.fullmatch(name) is not None)
            if RULE.fullmatch(name):
                self.assertEqual(check_name(name), name)
            else:
                self.assertRaises(InvalidName, check_name, name)

    def test_a_long_name_is_refused_and_not_kept(self):
        # What is kept is bounded in entries and in bytes: a 64 KiB "name"
        # from a request line is refused without being kept.
        long = "a" * 65536
        kept = _is_valid_short_name.cache_info().currsize
        self.assertFalse(is_valid_name(long))
        self.assertRaises(InvalidName, check_name, long)
        self.assertEqual(_is_valid_short_name.cache_info().currsize, kept)
        self.assertLessEqual(_is_valid_short_name.cache_info().maxsize, 4096)


class ParsedAddressesTests(unittest.TestCase):
    @given(st.lists(st.tuples(names, st.sampled_from(["1", "2"])), max_size=20))
    def test_the_same_addresses_as_address_parse(self, texts):
        parsed = ParsedAddresses(size=4)
        for text, default in texts + texts:
            try:
                expected = Address.parse(text, default)
            except InvalidName:
                self.assertRaises(InvalidName, parsed.parse, text, default)
            else:
                self.assertEqual(parsed.parse(text, default), expected)
            self.assertLessEqual(len(parsed._parsed), 4)

    def test_a_bare_name_is_of_the_realm_asked_each_time(self):
        parsed = ParsedAddresses()
        self.assertEqual(parsed.parse("bob", "1"), Address("bob", "1"))
        self.assertEqual(parsed.parse("bob", "2"), Address("bob", "2"))
        self.assertEqual(parsed.parse("bob@3", "2"), Address("bob", "3"))

    def test_a_name_that_breaks_the_rule_is_refused_every_time_and_not_kept(self):
        parsed = ParsedAddresses()
        for _ in range(2):
            self.assertRaises(InvalidName, parsed.parse, "b!b", "1")
            self.assertRaises(InvalidName, parsed.parse, "bob@r!", "1")
        self.assertEqual(parsed._parsed, {})
