"""
The PostgreSQL translation of the queries' SQL (storage/pg_sql.py): each
rule on its own, and every other spelling left as it is.
"""

from twisted.trial import unittest

from multirealm.storage.pg_sql import many_rows, translate, translate_raw


class TranslateTests(unittest.TestCase):
    def test_placeholders(self):
        self.assertEqual(
            translate("SELECT name FROM users WHERE name > ? LIMIT ?"),
            "SELECT name FROM users WHERE name > %s LIMIT %s",
        )

    def test_a_percent_sign_is_kept(self):
        self.assertEqual(translate("SELECT 5 % 2, ?"), "SELECT 5 %% 2, %s")

    def test_a_match_in_any_case_folds_both_sides(self):
        self.assertEqual(
            translate("SELECT 1 FROM members AS me WHERE me.member = ? COLLATE NOCASE LIMIT 1"),
            "SELECT 1 FROM members AS me WHERE lower(me.member) = lower(%s) LIMIT 1",
        )
        self.assertEqual(
            translate("WHERE group_key = ? AND member = ? COLLATE NOCASE"),
            "WHERE group_key = %s AND lower(member) = lower(%s)",
        )

    def test_is_not_a_parameter_is_distinct_from(self):
        self.assertEqual(
            translate('DELETE FROM sessions WHERE "user" = ? AND token_hash IS NOT ?'),
            'DELETE FROM sessions WHERE "user" = %s AND token_hash IS DISTINCT FROM %s',
        )

    def test_an_insert_of_a_numbered_row_returns_its_number(self):
        self.assertEqual(
            translate("INSERT INTO mailboxes (owner) VALUES (?)"),
            "INSERT INTO mailboxes (owner) VALUES (%s) RETURNING id",
        )
        # Messages come numbered by the store's thread (messages.next_seq).
        self.assertEqual(
            translate("INSERT INTO messages (seq, origin) VALUES (?, ?)"),
            "INSERT INTO messages (seq, origin) VALUES (%s, %s)",
        )
        self.assertEqual(
            translate("INSERT INTO mailboxes_x (a) VALUES (?)"),
            "INSERT INTO mailboxes_x (a) VALUES (%s)",
        )

    def test_insert_or_fail_is_an_insert(self):
        # A failed statement fails its transaction or savepoint whole on
        # PostgreSQL: what OR FAIL tells SQLite it may do (messages.py).
        self.assertEqual(
            translate("INSERT OR FAIL INTO outbox (realm, seq) VALUES (?, ?)"),
            "INSERT INTO outbox (realm, seq) VALUES (%s, %s)",
        )
        self.assertEqual(
            translate_raw("INSERT OR FAIL INTO t (a) VALUES (?), (?) ON CONFLICT (a) DO UPDATE SET a = 1"),
            "INSERT INTO t (a) VALUES ($1), ($2) ON CONFLICT (a) DO UPDATE SET a = 1",
        )

    def test_the_rest_is_left_as_it_is(self):
        sql = (
            "INSERT INTO outbox (realm, seq) SELECT ?, t.seq FROM timeline t WHERE x IS NOT NULL"
            " ORDER BY t.seq DESC LIMIT ? ON CONFLICT DO NOTHING"
        )
        self.assertEqual(translate(sql), sql.replace("?", "%s"))


class TranslateRawTests(unittest.TestCase):
    def test_placeholders_are_numbered_and_percent_is_left_alone(self):
        self.assertEqual(
            translate_raw("SELECT 1 FROM users WHERE name = ? COLLATE NOCASE AND x LIKE '%' || ?"),
            "SELECT 1 FROM users WHERE lower(name) = lower($1) AND x LIKE '%' || $2",
        )


class ManyRowsTests(unittest.TestCase):
    def test_an_insert_of_one_row_becomes_one_of_many(self):
        self.assertEqual(
            many_rows("INSERT INTO timeline (mailbox, seq) VALUES (?, ?)", 3),
            "INSERT INTO timeline (mailbox, seq) VALUES (%s, %s), (%s, %s), (%s, %s)",
        )

    def test_what_follows_the_row_is_kept(self):
        self.assertEqual(
            many_rows('INSERT INTO remote_users (realm, name) VALUES (?, ?) ON CONFLICT DO NOTHING', 2),
            "INSERT INTO remote_users (realm, name) VALUES (%s, %s), (%s, %s) ON CONFLICT DO NOTHING",
        )

    def test_an_upsert_is_not_rewritten(self):
        self.assertIsNone(many_rows(
            'INSERT INTO last_seen ("user", at) VALUES (?, ?)'
            ' ON CONFLICT ("user") DO UPDATE SET at = excluded.at', 2))

    def test_anything_else_is_not_rewritten(self):
        self.assertIsNone(many_rows("DELETE FROM outbox WHERE realm = ? AND seq = ?", 2))
        self.assertIsNone(many_rows(
            "INSERT INTO outbox (realm, seq) SELECT ?, seq FROM timeline WHERE mailbox = ?", 2))
