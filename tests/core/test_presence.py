"""Presence in the core, with a store that answers when told to."""

from twisted.internet import defer, task
from twisted.trial import unittest

from multirealm.core.presence import Presence
from multirealm.names import Address


class HeldStore:
    """Contact lookups wait until the test fires them."""

    def __init__(self):
        self.lookups = []

    def local_contacts(self, person):
        d = defer.Deferred()
        self.lookups.append((person, d))
        return d

    def set_last_seen(self, stamps):
        return defer.succeed(None)


class Pushes:
    def __init__(self):
        self.pushed = []

    def push_to(self, user, event):
        self.pushed.append(user)


class FanOutTests(unittest.TestCase):
    def test_a_storm_of_changes_holds_few_lookups_in_the_store_at_once(self):
        store, pushes = HeldStore(), Pushes()
        presence = Presence("1", ("2",), store, task.Clock())
        presence.listen(pushes)
        presence.connected("alice")
        for n in range(100):
            presence.fan_out(Address(f"u{n}", "2"), False, None)
        self.assertEqual(len(store.lookups), Presence.LOOKUPS)
        while store.lookups:
            _, d = store.lookups.pop(0)
            d.callback({"alice"})
        self.assertEqual(len(pushes.pushed), 100)  # every one answered in turn
