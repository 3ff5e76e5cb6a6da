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
  3. C{INSERT INTO mailboxes}, whose rows the database numbers, gets
     C{RETURNING id}, which the cursor's C{lastrowid} reads, as sqlite3's
     does.  In a pipelined batch they are numbered here instead
     (L{numbered}): see L{Connection.start_pipeline}.  (Messages are
     numbered by the store's thread: L{multirealm.storage.queries.messages.next_seq}.)
  4. C{%} becomes C{%%}, then C{?} becomes C{%s} (psycopg's placeholder).
  5. C{INSERT OR FAIL INTO} becomes C{INSERT INTO}.  OR FAIL tells SQLite
     that a statement which fails need not be undone alone (the batch
     undoes it with its transaction or savepoint), so it keeps no journal
     of the pages the statement changes; a PostgreSQL statement that fails
     fails its transaction or savepoint anyway.  At a statement's start
     only, and never on C{mailboxes} (rule 3 looks for C{INSERT INTO}).

The SQL here holds no C{?} nor C{%} inside a string literal; the rules do
not look for quotes.  Each distinct string is translated once (cached).

A statement of more than L{RAW_FROM} parameters (the rows of a batch's
messages, L{multirealm.storage.queries.messages.write_rows}) goes as a
raw query, its placeholders C{$1, $2...} (L{translate_raw}): psycopg
parses the placeholders of a statement that long at every call, not once
(measured: about 1 us a parameter).

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
_NUMBERED = re.compile(r"INSERT INTO (mailboxes) ")
_NUMBER = {"mailboxes": "id"}
_DML = ("INSERT", "UPDATE", "DELETE")
_OR_FAIL = "INSERT OR FAIL INTO"


@functools.lru_cache(maxsize=4096)
def translate(sql):
    """C{sql} as the queries write it, in PostgreSQL's words (see the module)."""
    numbered = _NUMBERED.match(sql)
    if numbered and "RETURNING" not in sql:
        sql += f" RETURNING {_NUMBER[numbered.group(1)]}"
    return _words(sql)


def _words(sql):
    return _rules(sql).replace("%", "%%").replace("?", "%s")


def _rules(sql):
    sql = _NOCASE.sub(r"lower(\1) = lower(?)", sql)
    sql = _IS_NOT.sub("IS DISTINCT FROM ?", sql)
    if sql.startswith(_OR_FAIL):
        sql = "INSERT INTO" + sql[len(_OR_FAIL):]
    return sql


# psycopg caches how it parses a statement of at most this many parameters
# (psycopg._queries.MAX_CACHED_STATEMENT_PARAMS), and parses longer ones
# at every call.
RAW_FROM = 50


@functools.lru_cache(maxsize=256)
def translate_raw(sql):
    """C{sql} (no numbered insert) in PostgreSQL's words, its placeholders C{$1, $2...}."""
    parts = _rules(sql).split("?")
    return "".join([f"{part}${n}" for n, part in enumerate(parts[:-1], 1)]) + parts[-1]


@functools.lru_cache(maxsize=64)
def numbered(sql):
    """
    (table, statement) for C{sql}, an C{INSERT INTO mailboxes} (columns, then C{VALUES (?, ...)}), rewritten to take the
    row's number as its first parameter; None for any other statement.
    """
    match = _NUMBERED.match(sql)
    if match is None or "RETURNING" in sql or ") VALUES (" not in sql:
        return None
    table = match.group(1)
    head = f"INSERT INTO {table} ("
    sql = sql.replace(head, f"{head}{_NUMBER[table]}, ", 1).replace(") VALUES (", ") VALUES (?, ", 1)
    return table, _words(sql)


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
        """The number of the row an C{INSERT INTO mailboxes} made (rule 3)."""
        return self.fetchone()[0]


class _Numbered:
    """What a numbered insert in a pipeline answers: its row's number, known at once."""

    __slots__ = ("lastrowid",)
    rowcount = 1

    def __init__(self, number):
        self.lastrowid = number


class _Written:
    """A write sent in a pipeline: its row count is read (waited for) only if asked."""

    __slots__ = ("_cursor", "_connection")

    def __init__(self, cursor, connection):
        self._cursor = cursor
        self._connection = connection

    @property
    def rowcount(self):
        self._connection.pipeline.sync()
        return self._cursor.rowcount


class TransactionLost(Exception):
    """A COMMIT that PostgreSQL answered with a rollback: nothing was stored."""


class Connection:
    """
    A psycopg connection in autocommit mode (transactions are the store's
    own C{BEGIN}/C{COMMIT}) as the query modules use an sqlite3 one.

    A batch that writes runs in a pipeline (L{start_pipeline}): its
    statements go to the server without waiting for each answer, and only
    a read waits (the pipeline is synced for it).  A batch of private
    messages so costs a few round trips in all, not two a message, and the
    realm's write lock is held that much shorter (measured in
    benchmarks/README.md).  An error in a pipeline surfaces at the next
    read or at the commit, not at its statement: the store then runs the
    batch again, unpipelined, each operation in a savepoint.
    """

    def __init__(self, connection):
        self.connection = connection
        self._changes = 0  # rows written, as sqlite3's total_changes
        self._pipeline = None  # psycopg's Pipeline of a writing batch
        self._pipeline_context = None
        self._numbers = None  # in a pipeline: {table: its last row number}
        self._first_numbers = None

    @property
    def total_changes(self):
        """
        "Was anything changed?": rows written, as sqlite3's; in a pipeline,
        writes sent (their row counts are not read back: each counts one).
        """
        return self._changes

    @property
    def pipeline(self):
        return self._pipeline

    def start_pipeline(self):
        """
        Send what follows without waiting for answers, numbering the rows
        of mailboxes here (L{read_numbers}, under the realm's
        write lock, so that no other process numbers rows meanwhile).
        """
        self._pipeline_context = self.connection.pipeline()
        self._pipeline = self._pipeline_context.__enter__()
        self._numbers = None

    def read_numbers(self):
        """
        Where the numbers of mailboxes are, once the write lock is held;
        return the last seq of messages (read in the same round trip).
        """
        row = self.connection.execute(
            "SELECT (SELECT coalesce(max(seq), 0) FROM messages),"
            " (SELECT coalesce(max(id), 0) FROM mailboxes)"
        ).fetchone()
        self._numbers = {"mailboxes": row[1]}
        self._first_numbers = dict(self._numbers)
        return row[0]

    def commit_pipeline(self):
        """
        Commit a pipelined batch, its identity sequences moved past the
        rows numbered here (an insert that lets PostgreSQL number a row,
        as an unpipelined batch does, must not take one of them).
        """
        for table, number in self._numbers.items():
            if number != self._first_numbers[table]:
                self.connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{_NUMBER[table]}'), %s)",
                    (number,),
                )
        cursor = self.connection.execute("COMMIT")
        self._end_pipeline()
        if cursor.statusmessage != "COMMIT":
            raise TransactionLost(f"PostgreSQL answered COMMIT with {cursor.statusmessage!r}")

    def _end_pipeline(self):
        context, self._pipeline, self._numbers = self._pipeline_context, None, None
        context.__exit__(None, None, None)  # syncs: raises the error of any statement

    def abandon_pipeline(self):
        """Leave a failed pipeline (its errors are the batch's, already raised)."""
        if self._pipeline is not None:
            try:
                self._end_pipeline()
            except psycopg.Error:
                pass

    def execute(self, sql, parameters=()):
        if len(parameters) > RAW_FROM:
            cursor = psycopg.RawCursor(self.connection)
            cursor.execute(translate_raw(sql), parameters)
            # A read's rows are fetched (in a pipeline, that syncs it).
            return self._written(cursor) if sql.startswith(_DML) else cursor
        if self._pipeline is not None:
            if sql != "ROLLBACK":
                return self._send(sql, parameters)
            self.abandon_pipeline()
        cursor = self.connection.execute(translate(sql), parameters)
        status = cursor.statusmessage or ""
        if status.startswith(_DML):
            self._changes += max(cursor.rowcount, 0)
        elif sql == "COMMIT" and status != "COMMIT":
            # A transaction in error commits as a rollback, without an error.
            raise TransactionLost(f"PostgreSQL answered COMMIT with {status!r}")
        return cursor

    def _send(self, sql, parameters):
        """L{execute} in a pipeline: a write is sent, not waited for."""
        number = numbered(sql)
        if number is not None:
            table, statement = number
            self._numbers[table] += 1
            self.connection.execute(statement, (self._numbers[table], *parameters))
            self._changes += 1
            return _Numbered(self._numbers[table])
        statement = translate(sql)
        cursor = self.connection.execute(statement, parameters)
        if statement.startswith(_DML):
            self._changes += 1
            return _Written(cursor, self)
        return cursor  # a read: fetching it syncs the pipeline

    def executemany(self, sql, rows):
        if 0 < len(rows) <= MANY_ROWS:
            statement = many_rows(sql, len(rows))
            if statement is not None:
                return self._written(
                    self.connection.execute(statement, [v for row in rows for v in row])
                )
        cursor = self.connection.cursor()
        cursor.executemany(translate(sql), rows)
        return self._written(cursor)

    def _written(self, cursor):
        """The cursor of a write, counted (in a pipeline: as one, its count not waited for)."""
        if self._pipeline is not None:
            self._changes += 1
            return _Written(cursor, self)
        self._changes += max(cursor.rowcount, 0)
        return cursor

    @property
    def in_transaction(self):
        """Inside a transaction (even one in error); False once the connection is lost."""
        if self._pipeline is not None:
            try:
                self._pipeline.sync()  # the status is the server's once it has answered
            except psycopg.Error:
                pass
        status = self.connection.info.transaction_status
        return status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

    @property
    def broken(self):
        return self.connection.closed or self.connection.broken

    def close(self):
        self.connection.close()
