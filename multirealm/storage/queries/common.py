"""
What the aggregates share: the database thread's cache, reading names
and message rows.
"""

from multirealm.model import Failed, FileRef, Message
from multirealm.names import Address


class ThreadCache:
    """
    What the database thread remembers between operations so that most
    messages skip a SELECT: local users seen to exist, mailbox numbers, and
    where the messages of a private conversation go.
    Users and mailboxes are never deleted, so an entry stays true, whichever
    process of the realm made the row (on PostgreSQL); all is
    forgotten when a transaction or savepoint rolls back (an entry made
    inside it may be gone), and a part when it grows past C{MAX}.  Only the
    database thread touches it.

    It also holds what the batch's private messages gathered and the store
    has not yet written (L{multirealm.storage.queries.messages.gather_message},
    L{multirealm.storage.queries.messages.private_added}): a few entries
    per message of one batch, and rolled back with it.

    C{last_seq} is the last seq given to a message (None: not known, read
    again when next needed).  The database thread numbers the messages it
    writes: on SQLite it is the only writer; on PostgreSQL the store sets
    it at the start of each batch, under the realm's write lock.
    """

    MAX = 100_000
    # A route is about 1 KiB (tuples, sets, strings; measured with tracemalloc):
    # the conversations active at once, not every one seen, are worth it.
    MAX_ROUTES = 4096

    def __init__(self):
        self.users = {}  # a name as asked -> the name as registered
        self.mailboxes = {}
        self.private_counts = {}  # (user, peer) -> counts not yet written
        self.routes = {}  # a private conversation -> where its messages go (mailbox numbers...)
        self.last_seq = None
        self.gathered = ([], [], [], [], [])  # flat values of rows not yet written, by table
        self.gathered_keys = set()  # (id, origin) of the messages gathered
        # SQLite's store stages timeline rows (messages.stage_timeline): how
        # many timeline_recent holds (None: not known, counted when needed).
        self.stage_timeline = False
        self.recent_timeline_rows = None
        self.settled_up_to = 0  # the mailbox the sweep of timeline_recent moved last

    def clear(self):
        self.users.clear()
        self.mailboxes.clear()
        self.private_counts.clear()
        self.routes.clear()
        self.last_seq = None
        for values in self.gathered:
            values.clear()
        self.gathered_keys.clear()
        self.recent_timeline_rows = None


class Later:
    """
    What an operation answers when it has more to do: the store runs
    C{function(db, *args)} in a later batch (other operations' batches run
    between), and answers with what that finally returns.  A long piece of
    work (a count over a large history) so goes in bounded steps, and no
    one waits behind all of it at once.
    """

    def __init__(self, function, *args):
        self.function = function
        self.args = args


def first_column(db, sql, *args):
    """The first column of every row of C{sql}."""
    return [row[0] for row in db.execute(sql, args)]


def address(text):
    """The L{Address} of a stored C{name@realm}."""
    name, _, realm = text.rpartition("@")
    return Address(name, realm)


_new_tuple = tuple.__new__  # a named tuple without its Python __new__: one a row read

# The columns L{message_of} reads, in its order.
MESSAGE_COLUMNS = (
    "m.id, m.kind, m.sender, m.recipient, m.body, m.timestamp,"
    " m.file_name, m.file_id, m.file_size, m.failed_id, m.failed_code"
)


def message_of(row, offset=0, parse=address):
    """
    The L{Message} of a row of L{MESSAGE_COLUMNS}, starting at C{offset};
    C{parse} reads an address (a cache of them, for many rows).
    """
    (id, kind, sender, recipient, body, timestamp,
     file_name, file_id, file_size, failed_id, failed_code) = row[offset:offset + 11]
    return _new_tuple(Message, (
        id, kind, parse(sender), parse(recipient), body, timestamp,
        None if file_id is None else FileRef(file_name, file_id, file_size),
        None if failed_id is None else Failed(failed_id, failed_code),
    ))
