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
        self.events = []

    def push_to(self, user, event):
        self.pushed.append(user)
        self.events.append(event)


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

    def test_waiting_changes_of_one_person_are_one_lookup_with_the_latest_state(self):
        store, pushes = HeldStore(), Pushes()
        presence = Presence("1", ("2",), store, task.Clock())
        presence.listen(pushes)
        presence.connected("alice")
        for n in range(Presence.LOOKUPS):  # the store is busy with these
            presence.fan_out(Address(f"u{n}", "2"), True, None)
        for n in range(1000):  # heru flaps while they wait
            presence.fan_out(Address("heru", "2"), n % 2 == 0, None)
        self.assertEqual(len(presence._waiting), 1)
        while store.lookups:
            _, d = store.lookups.pop(0)
            d.callback({"alice"})
        self.assertEqual(len(pushes.pushed), Presence.LOOKUPS + 1)
        self.assertIn(b'"user": "heru@2", "online": false', pushes.events[-1])
