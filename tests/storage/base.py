"""
What the store tests share: one place that opens a store (a second
engine parametrises it here), and messages to store.
"""

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from multirealm.model import PRIVATE, Message
from multirealm.names import Address
from multirealm.storage.store import SQLiteStore


def message(n, sender="alice", recipient="heru", kind=PRIVATE, realm="1", sender_realm="1"):
    return Message(
        id=f"ID{n:04d}",
        kind=kind,
        sender=Address(sender, sender_realm),
        recipient=Address(recipient, realm),
        text=f"text {n}",
        timestamp="2026-01-01T00:00:00.000+00:00",
    )


def counts(pending):
    """{realm: messages waiting} of L{SQLiteStore.pending_counts}."""
    return {realm: count for realm, (count, _oldest) in pending.items()}


class StoreTestCase(unittest.TestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "realm.sqlite3")

    def open(self, start=True):
        store = SQLiteStore(self.path, "1", reactor)
        if start:
            store.start()
        self.addCleanup(store.stop)
        return store

    def populate_inline_free(self, store):
        """Add alice and heru before the store's thread starts."""
        return defer.gatherResults(
            [store.create_user("alice", "h", "t"), store.create_user("heru", "h", "t")]
        )

    @defer.inlineCallbacks
    def populate(self, store):
        yield store.create_user("alice", "hash-a", "t")
        yield store.create_user("heru", "hash-h", "t")
