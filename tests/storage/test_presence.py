"""
Presence in the store: last_seen, and a user's contacts here (who shares
a group or a private conversation with them), by indexed reads only.
"""

from multirealm.names import Address
from multirealm.storage.queries import presence
from tests.storage.base import StoreTestCase, sqlite_only


def add_private_conversations(testcase, *pairs):
    """A row of private_conversations for each (local user, peer) of C{pairs}."""
    testcase.sql(
        "INSERT INTO private_conversations VALUES (?, ?, 1, 1, 0, 0) ON CONFLICT DO NOTHING",
        *pairs,
    )


def populate(testcase, store):
    """
    Realm 1: alice, bob, cy, dan.  team (here): alice, bob, heru@2.
    crew@2 (heru's realm) has here cy and dan, with heru@2 and zed@3.
    """
    for name in ("alice", "bob", "cy", "dan"):
        testcase.successResultOf(store.create_user(name, "h", "t"))
    testcase.successResultOf(store.create_group(
        "team", Address("alice", "1"), [Address("alice", "1"), Address("bob", "1"),
                                        Address("heru", "2")], "t",
    ))
    testcase.sql("""
        INSERT INTO remote_members VALUES ('crew@2', 'crew@2', 'cy', NULL),
                                          ('crew@2', 'crew@2', 'dan', NULL);
        INSERT INTO remote_rosters VALUES ('crew@2', 'cy@1'), ('crew@2', 'dan@1'),
                                          ('crew@2', 'heru@2'), ('crew@2', 'zed@3');
    """)


class ContactsTests(StoreTestCase):
    def setUp(self):
        super().setUp()
        self.store = self.open(inline=True)
        populate(self, self.store)

    def contacts(self, person):
        return self.successResultOf(self.store.local_contacts(Address.parse(person, "1")))

    def test_contacts_share_a_group_here_or_on_another_realm(self):
        self.assertEqual(self.contacts("alice@1"), {"bob"})
        self.assertEqual(self.contacts("heru@2"), {"alice", "bob", "cy", "dan"})
        self.assertEqual(self.contacts("zed@3"), {"cy", "dan"})
        self.assertEqual(self.contacts("cy@1"), {"dan"})
        self.assertEqual(self.contacts("nobody@2"), set())

    def test_contacts_share_a_private_conversation(self):
        add_private_conversations(self, ("alice", "cy@1"), ("cy", "alice@1"),
                                  ("dan", "zed@3"), ("bob", "ann@3"))
        self.assertEqual(self.contacts("alice@1"), {"bob", "cy"})
        self.assertEqual(self.contacts("cy@1"), {"alice", "dan"})
        self.assertEqual(self.contacts("zed@3"), {"cy", "dan"})
        # Another realm's peer is keyed in lower case (one identity in any case).
        self.assertEqual(self.contacts("Ann@3"), {"bob"})

    def test_another_realms_members_are_matched_in_any_case(self):
        # The creator wrote them in another case than their realms register them.
        self.successResultOf(self.store.create_group(
            "pals", Address("bob", "1"), [Address("bob", "1"), Address("ZED", "3")], "t",
        ))
        self.sql("""
            INSERT INTO remote_members VALUES ('lab@2', 'lab@2', 'bob', NULL);
            INSERT INTO remote_rosters VALUES ('lab@2', 'bob@1'), ('lab@2', 'CY@1');
        """)
        self.assertEqual(self.contacts("zed@3"), {"bob", "cy", "dan"})
        self.assertEqual(self.contacts("cy@1"), {"bob", "dan"})

    @sqlite_only
    def test_contacts_are_found_by_indexes_never_by_a_scan(self):
        plans = []
        real_execute = self.store._db.execute

        class Spy:
            def execute(self, sql, args=()):
                if sql.startswith("SELECT") and "sqlite_master" not in sql:
                    plans.extend(row[3] for row in real_execute("EXPLAIN QUERY PLAN " + sql, args))
                return real_execute(sql, args)

        presence.local_contacts(Spy(), "1", "heru@2")
        self.assertEqual(len([p for p in plans if p.startswith("SEARCH")]), 5, plans)
        self.assertEqual([p for p in plans if p.startswith("SCAN")], [], plans)


class LastSeenTests(StoreTestCase):
    def test_last_seen_is_kept_per_user_and_read_in_any_case(self):
        store = self.open(inline=True)
        populate(self, store)
        self.successResultOf(store.set_last_seen([("alice", "2026-01-01T00:00:00.000+00:00")]))
        self.successResultOf(store.set_last_seen([("alice", "2026-01-02T00:00:00.000+00:00")]))
        self.assertEqual(
            self.successResultOf(store.last_seen(["ALICE", "bob", "nobody"])),
            {"ALICE": ("alice", "2026-01-02T00:00:00.000+00:00"), "bob": ("bob", None)},
        )
