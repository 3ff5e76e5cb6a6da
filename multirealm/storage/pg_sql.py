"""
The query modules' SQL on PostgreSQL: L{translate} turns what stays
SQLite-flavoured into PostgreSQL's words, and L{Connection} gives a
psycopg connection the face of an sqlite3 one that the queries and the
batching store use (C{execute}, C{executemany}, C{in_transaction},
C{total_changes}).

The queries are written to run on both engines where both accept the same
SQL (L{multirealm.storage.queries}); the translator keeps only what one
spelling cannot say on both:

  1. C{x = ? COLLATE NOCASE} becomes C{lower(x) = lower(%s)}: a name
     matched in any case (the PostgreSQL schema has C{lower()} indexes,
     and its text is C{COLLATE "C"}, whose C{lower()} folds ASCII only,
     as NOCASE does).
  2. C{IS NOT ?} becomes C{IS DISTINCT FROM %s} (SQLite spells it so only
     since 3.39).
  3. C{INSERT INTO messages} and C{INSERT INTO mailboxes}, the tables that
     number their rows, get C{RETURNING seq} and C{RETURNING id}, which
     the cursor's C{lastrowid} reads, as sqlite3's does.  (In SQLite,
     C{lastrowid} costs 2 us less than a C{RETURNING} of the hot path's
     insert: measured.)
  4. C{%} becomes C{%%}, then C{?} becomes C{%s} (psycopg's placeholder).

The SQL here holds no C{?} nor C{%} inside a string literal; the rules do
not look for quotes.  Each distinct string is translated once (cached).

C{executemany} of an C{INSERT ... VALUES (?, ...)} with a few rows (the
hot path's two timeline rows of a message) runs as one statement of that
many rows (L{many_rows}): psycopg runs an C{executemany} as a pipeline of
its own, which costs more than the statements it saves (measured: two rows
take 66 us of CPU that way, 28 us as one statement).
"""

import functools
import re

import psycopg
from psycopg import pq

_NOCASE = re.compile(r"([\w.]+) = \? COLLATE NOCASE\b")
_IS_NOT = re.compile(r"\bIS NOT \?")
_NUMBERED = re.compile(r"INSERT INTO (messages|mailboxes) ")
_NUMBER = {"messages": "seq", "mailboxes": "id"}
_DML = ("INSERT", "UPDATE", "DELETE")


@functools.lru_cache(maxsize=4096)
def translate(sql):
    """C{sql} as the queries write it, in PostgreSQL's words (see the module)."""
    sql = _NOCASE.sub(r"lower(\1) = lower(?)", sql)
    sql = _IS_NOT.sub("IS DISTINCT FROM ?", sql)
    numbered = _NUMBERED.match(sql)
    if numbered and "RETURNING" not in sql:
        sql += f" RETURNING {_NUMBER[numbered.group(1)]}"
    return sql.replace("%", "%%").replace("?", "%s")


_ONE_ROW = re.compile(r"(INSERT INTO \w+ \([^)]*\) VALUES )(\([?, ]+\))(.*)", re.S)
MANY_ROWS = 64  # rows an executemany sends as one statement, at most


@functools.lru_cache(maxsize=1024)
def many_rows(sql, count):
    """
    C{sql}, an C{INSERT ... VALUES (?, ...)} of one row, as one statement
    of C{count} rows, translated; None if C{sql} is not of that form, or
    is an upsert (C{ON CONFLICT ... DO UPDATE}: two of its rows with one
    key fail as one statement, not as two).
    """
    match = _ONE_ROW.fullmatch(sql)
    if match is None or "DO UPDATE" in sql:
        # An upsert of two rows with one key fails as one statement.
        return None
    head, row, tail = match.groups()
    return translate(head + ", ".join([row] * count) + tail)


class Cursor(psycopg.Cursor):
    @property
    def lastrowid(self):
        """The number of the row an C{INSERT INTO messages} or C{mailboxes} made (rule 3)."""
        return self.fetchone()[0]


class TransactionLost(Exception):
    """A COMMIT that PostgreSQL answered with a rollback: nothing was stored."""


class Connection:
    """
    A psycopg connection in autocommit mode (transactions are the store's
    own C{BEGIN}/C{COMMIT}) as the query modules use an sqlite3 one.
    """

    def __init__(self, connection):
        self.connection = connection
        self.total_changes = 0  # rows written, as sqlite3's: "was anything changed?"

    def execute(self, sql, parameters=()):
        cursor = self.connection.execute(translate(sql), parameters)
        status = cursor.statusmessage or ""
        if status.startswith(_DML):
            self.total_changes += max(cursor.rowcount, 0)
        elif sql == "COMMIT" and status != "COMMIT":
            # A transaction in error commits as a rollback, without an error.
            raise TransactionLost(f"PostgreSQL answered COMMIT with {status!r}")
        return cursor

    def executemany(self, sql, rows):
        if 0 < len(rows) <= MANY_ROWS:
            statement = many_rows(sql, len(rows))
            if statement is not None:
                cursor = self.connection.execute(statement, [v for row in rows for v in row])
                self.total_changes += max(cursor.rowcount, 0)
                return cursor
        cursor = self.connection.cursor()
        cursor.executemany(translate(sql), rows)
        self.total_changes += max(cursor.rowcount, 0)
        return cursor

    @property
    def in_transaction(self):
        """Inside a transaction (even one in error); False once the connection is lost."""
        status = self.connection.info.transaction_status
        return status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

    @property
    def broken(self):
        return self.connection.closed or self.connection.broken

    def close(self):
        self.connection.close()
