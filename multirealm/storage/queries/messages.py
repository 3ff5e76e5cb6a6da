"""
Messages: the message rows, the mailboxes (one per conversation) whose
timeline lists them, private messages, and history pages.

L{gather_message} (L{_gather} for the private messages' fast path) is
the one place a message is numbered and its rows made; whatever must change with every message (its outbox entries, each
reader's conversation and unread count) changes there or right after it,
in the same transaction.  A private message's rows wait in the thread's
cache and a batch's are written together, a few multi-row statements
(L{write_gathered}), before the batch's next reader and its commit.
"""

import functools


from multirealm import errors, wire
from multirealm.core.policy import private_route
from multirealm.model import Delivery, History, Sent
from multirealm.names import Address
from multirealm.storage.queries.accounts import local_user
from multirealm.storage.queries.common import MESSAGE_COLUMNS, message_of


def mailbox_number(db, cache, owner, create):
    """The number of C{owner}'s mailbox; with C{create}, made if missing."""
    number = cache.mailboxes.get(owner)
    if number is None:
        row = db.execute("SELECT id FROM mailboxes WHERE owner = ?", (owner,)).fetchone()
        if row is not None:
            number = row[0]
        elif create:
            number = db.execute("INSERT INTO mailboxes (owner) VALUES (?)", (owner,)).lastrowid
        else:
            return None
        if len(cache.mailboxes) >= cache.MAX:
            cache.mailboxes.clear()
        cache.mailboxes[owner] = number
    return number


# The rows a batch gathers (L{gather_message}), by table, in the order
# L{write_gathered} writes them: each an INSERT's head and its row's width.
_TEXT, _FILE, _FAILURE, _TIMELINE, _OUTBOX = range(5)
# OR FAIL: a statement that fails is not undone alone.  The batch undoes
# it with its transaction, or its operation's savepoint (storage.batching),
# so SQLite need not keep a journal of the pages each statement changes
# (past 64 KiB, a temporary file written page by page: issue 18).
# PostgreSQL spells it INSERT INTO (storage.pg_sql).
_GATHERED = (
    # Text messages apart: binding NULLs costs a measurable 1 us a message.
    ("INSERT OR FAIL INTO messages (seq, origin, id, kind, sender, recipient, body, timestamp)", 8),
    ("INSERT OR FAIL INTO messages (seq, origin, id, kind, sender, recipient, body, timestamp,"
     " file_name, file_id, file_size)", 11),
    ("INSERT OR FAIL INTO messages (seq, origin, id, kind, sender, recipient, body, timestamp,"
     " failed_id, failed_code)", 10),
    # On SQLite into timeline_recent instead (L{stage_timeline}).
    ("INSERT OR FAIL INTO timeline_settled (mailbox, seq)", 2),
    ("INSERT OR FAIL INTO outbox (realm, seq)", 2),
)
# Rows of one statement, at most: a power of two, its values under SQLite's
# limit of variables (32766 since 3.32; PostgreSQL's is 65535).  A batch's
# rows go as statements of powers of two rows, so few distinct statements
# are ever prepared (each is cached by the driver).
_MOST_ROWS = 1024

# Rows that timeline_recent holds, about (step 013, L{stage_timeline}).  A
# commit writes the pages of the recent table its rows land on (a dozen
# for this size) instead of one page per mailbox, and a mailbox's page in
# timeline_settled is written once for all its rows of a sweep.  A reader
# of the view pays for the recent table's size: a search in a B-tree of
# this many rows.
SETTLE_ROWS = 4096


_new_tuple = tuple.__new__


def next_seq(db, cache):
    """The seq of the next message (L{ThreadCache.last_seq}, read if not known)."""
    seq = cache.last_seq
    if seq is None:
        seq = db.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    cache.last_seq = seq = seq + 1
    return seq


@functools.lru_cache(maxsize=None)
def _rows_statement(head, width, count, tail):
    return head + " VALUES " + ", ".join(["(" + ", ".join("?" * width) + ")"] * count) + tail


def write_rows(db, head, width, values, tail=""):
    """
    Write rows of C{width} values each, given one after the other in
    C{values}, with C{head} (C{INSERT INTO table (columns)}) and C{tail}
    (an C{ON CONFLICT} clause: no two of the rows may have one key): a
    few statements of many rows (one statement runs in the driver at
    once, and lets the reactor's thread take the GIL once, not per row).
    """
    rows, start = len(values) // width, 0
    while rows:
        count = min(_MOST_ROWS, 1 << (rows.bit_length() - 1))
        end = start + count * width
        db.execute(_rows_statement(head, width, count, tail), values[start:end])
        rows -= count
        start = end


def write_gathered(db, cache):
    """
    Write the rows gathered since the last call (L{gather_message}), then
    the conversations' counts (L{write_private_counts}).
    """
    if cache.gathered_keys:
        for table, (head, width) in enumerate(_GATHERED):
            values = cache.gathered[table]
            if values:
                if table == _TIMELINE and cache.stage_timeline:
                    stage_timeline(db, cache, values)
                else:
                    write_rows(db, head, width, values)
                values.clear()
        cache.gathered_keys.clear()
    write_private_counts(db, cache)


def stage_timeline(db, cache, values):
    """
    Write timeline rows (C{values}: mailbox, seq, mailbox, seq...) to
    timeline_recent: SQLite's store (step 013).  Its WAL takes whole pages,
    and in timeline_settled a batch's rows fall on as many pages as it has
    mailboxes; in the small recent table they share a few.  Past
    L{SETTLE_ROWS} rows, the batch moves twice as many as it wrote to
    timeline_settled: the next mailboxes of a sweep through them all, so
    each batch does a part (no batch writes every page at once) and the
    table shrinks back.
    """
    write_rows(db, "INSERT OR FAIL INTO timeline_recent (mailbox, seq)", 2, values)
    recent = cache.recent_timeline_rows
    if recent is None:  # not known (started, or a rollback): count them, these included
        recent = db.execute("SELECT count(*) FROM timeline_recent").fetchone()[0]
    else:
        recent += len(values) // 2
    if recent > SETTLE_ROWS:
        recent -= _settle_some(db, cache, len(values))
    cache.recent_timeline_rows = recent


def _settle_some(db, cache, rows):
    """
    Move at least C{rows} rows of timeline_recent (all of the mailboxes
    they are in; all it holds if fewer) to timeline_settled: those of the
    mailboxes after C{cache.settled_up_to}, in key order, and past the last
    mailbox on from the first again.  Returns how many moved.
    """
    after, moved = cache.settled_up_to, 0
    while True:
        last = _settle_bound(db, after, rows - moved)
        if last is None:  # every row after it: the end of a sweep
            where, bounds = "mailbox > ?", (after,)
        else:
            where, bounds = "mailbox > ? AND mailbox <= ?", (after, last)
        db.execute(  # OR FAIL: no statement journal (see _GATHERED)
            f"INSERT OR FAIL INTO timeline_settled (mailbox, seq) SELECT mailbox, seq FROM timeline_recent"
            f" WHERE {where}", bounds,
        )
        moved += db.execute(f"DELETE FROM timeline_recent WHERE {where}", bounds).rowcount
        if last is not None:
            cache.settled_up_to = last
            return moved
        if after == 0 or moved >= rows:  # the table is empty, or enough moved
            cache.settled_up_to = 0
            return moved
        after = 0  # the next sweep, from the first mailbox


def _settle_bound(db, after, rows):
    """The mailbox of the C{rows}th row of timeline_recent after mailbox C{after}, or None."""
    last = db.execute(
        "SELECT mailbox FROM timeline_recent WHERE mailbox > ? ORDER BY mailbox LIMIT 1 OFFSET ?",
        (after, rows - 1),
    ).fetchone()
    return None if last is None else last[0]


def gathered(cache, origin, message_id):
    """Whether message (C{origin}, C{message_id}) is gathered, not yet written."""
    return (message_id, origin) in cache.gathered_keys


# A conversation's counts of one batch: user, peer, the last seq, the
# user's own last seq (0: none; no message has seq 0), messages from the
# peer, messages from the peer before the user's own last one.  SET reads
# the row as it was: read = received + those before counts up to read_seq.
_PRIVATE_COUNTS = 'INSERT INTO private_conversations ("user", peer, last_seq, read_seq, received, read)'
_PRIVATE_COUNTS_ADDED = (
    ' ON CONFLICT ("user", peer) DO UPDATE SET last_seq = excluded.last_seq,'
    " received = private_conversations.received + excluded.received,"
    " read_seq = CASE WHEN excluded.read_seq = 0 THEN private_conversations.read_seq"
    " ELSE excluded.read_seq END,"
    " read = CASE WHEN excluded.read_seq = 0 THEN private_conversations.read"
    " ELSE private_conversations.received + excluded.read END"
)


def peer_key(realm, other):
    """
    How a private conversation with C{other} (an Address) is keyed: as
    registered for this realm's users, lower case for another realm's
    (names are one identity in any case there, as C{remote_members.group_key}).
    """
    text = str(other)
    return text if other.realm == realm else text.lower()


def private_added(cache, realm, delivery):
    """
    Private message or failure C{delivery} (a L{Delivery}) is in the
    history of its C{local_users}: each one's conversation with the other
    party (L{multirealm.storage.queries.conversations}) counts it, and the
    sender's marker moves to it.  Counted in C{cache.private_counts}, and
    written by L{write_private_counts} before the transaction's next
    reader and its commit: one row per conversation per batch, however
    many of the batch's messages it holds.
    """
    _count(cache.private_counts, _counted(realm, delivery.message, delivery.local_users),
           delivery.seq)
    return delivery


def _counted(realm, message, local_users):
    """The conversations that count a private C{message}: ((user, peer key), own) pairs."""
    sender = message.sender
    own = sender.name if sender.realm == realm else None
    counted = []
    for user in local_users:
        other = message.recipient if user == own else sender
        counted.append(((user, peer_key(realm, other)), user == own))
    return tuple(counted)


def _count(counts, counted, seq, messages=1):
    """
    Count C{messages} messages of one sender to one recipient, the last
    of them C{seq}, in the conversations C{counted} (L{_counted}).
    """
    for row, own in counted:
        # [last seq, own last seq, from the peer, from the peer before it]
        count = counts.get(row)
        if count is None:
            count = counts[row] = [seq, 0, 0, 0]
        count[0] = seq
        if own:
            count[1] = seq
            count[3] = count[2]
        else:
            count[2] += messages


def write_private_counts(db, cache):
    """Write what L{private_added} counted since the last call."""
    counts = cache.private_counts
    if counts:
        values = []
        for key, count in counts.items():
            values += key
            values += count
        write_rows(db, _PRIVATE_COUNTS, 6, values, _PRIVATE_COUNTS_ADDED)
        counts.clear()


def gather_message(db, cache, origin, message, mailboxes, outbox_realms, local_users):
    """
    Number C{message} and gather its rows: the message, its place in the
    C{mailboxes} named and in the outbox of each of C{outbox_realms} (a
    frozenset), written by L{write_gathered} before the transaction's next
    reader and its commit.  Return the L{Delivery}, whose C{local_users} (a
    frozenset of names) are the users of those mailboxes.
    """
    numbers = [mailbox_number(db, cache, owner, create=True) for owner in mailboxes]
    seq = _gather(db, cache, origin, message, str(message.sender), str(message.recipient),
                  numbers, outbox_realms)
    return Delivery(message, origin, local_users, outbox_realms, False, seq)


def _gather(db, cache, origin, message, sender, recipient, mailboxes, outbox_realms):
    """
    L{gather_message} of a message whose C{sender} and C{recipient} are
    written out, and C{mailboxes} numbered; return its seq.
    """
    seq = cache.last_seq
    if seq is None:
        seq = next_seq(db, cache)
    else:
        cache.last_seq = seq = seq + 1  # next_seq inlined: this runs for every message
    rows = cache.gathered
    message_id = message.id
    file = message.file
    if file is None and message.failed is None:
        rows[_TEXT].extend((seq, origin, message_id, message.kind, sender, recipient,
                            message.text, message.timestamp))
    else:
        values = (seq, origin, message_id, message.kind, sender, recipient, message.text,
                  message.timestamp)
        if file is not None:
            rows[_FILE].extend(values + (file.name, file.id, file.size))
        else:
            failed = message.failed
            rows[_FAILURE].extend(values + (failed.id, failed.code))
    cache.gathered_keys.add((message_id, origin))
    timeline = rows[_TIMELINE]
    for number in mailboxes:
        timeline += (number, seq)
    if outbox_realms:
        outbox = rows[_OUTBOX]
        for realm in outbox_realms:
            outbox += (realm, seq)
    return seq


def insert_message(db, cache, origin, message, mailboxes, outbox_realms, local_users):
    """
    L{gather_message}, its rows written at once (and whatever was gathered
    before them): for an operation that reads after it writes.
    """
    delivery = gather_message(db, cache, origin, message, mailboxes, outbox_realms, local_users)
    write_gathered(db, cache)
    return delivery


def to_local_user(db, cache, message):
    """C{message} with its local recipient spelled as registered; L{errors.NoSuchUser}."""
    recipient = message.recipient
    name = local_user(db, cache, recipient.name)
    if name is None:
        raise errors.NoSuchUser(f"no user {recipient.name!r}")
    if name != recipient.name:
        message = message._replace(recipient=Address(name, recipient.realm))
    return message


def add_private_message(db, cache, realm, origin, message):
    """
    Store private message C{message}, minted here (C{origin} is C{realm})
    or handed over by peer C{origin}, where L{private_route} sends it.
    Its rows are gathered (L{gather_message}): the store writes them.
    """
    message, route = _routed(db, cache, realm, origin, message)
    sender_text, recipient_text, mailboxes, outbox, local, counted = route
    seq = _gather(db, cache, origin, message, sender_text, recipient_text, mailboxes, outbox)
    _count(cache.private_counts, counted, seq)
    # Delivery(message, origin, local, outbox, False, seq) without the
    # named tuple's __new__, a Python function: this runs for every message.
    return _new_tuple(Delivery, (message, origin, local, outbox, False, seq))


def add_private_messages(db, cache, realm, origin, messages):
    """
    L{add_private_message} for each of C{messages} (a run one connection
    sent): a L{Sent} of each one's Delivery or refusal.  A message refused
    before it changed a row (as every refusal here is) leaves the others
    stored; anything else (a refusal after a change, a bug, a text the
    engine refuses) fails the run, which the store then runs again a
    message at a time, each in a savepoint of its own
    (L{multirealm.storage.batching}).

    Consecutive messages from one sender to one recipient (the same
    Address objects: the realm's caches hand out one for each name) are
    one conversation's: routed and counted once (L{_add_conversation}).
    Whatever refuses a message here depends on its sender and recipient
    only, so it refuses all of them alike.
    """
    results = []
    start, total = 0, len(messages)
    while start < total:
        sender, recipient = messages[start].sender, messages[start].recipient
        end = start + 1
        while end < total and messages[end].sender is sender and messages[end].recipient is recipient:
            end += 1
        changes, gathered = db.total_changes, len(cache.gathered_keys)
        try:
            results += _add_conversation(db, cache, realm, origin, messages[start:end])
        except errors.ChatError as refused:
            if db.total_changes != changes or len(cache.gathered_keys) != gathered:
                raise
            results += [refused.with_traceback(None)] * (end - start)  # no frame: no cycle
        start = end
    return Sent(results)


def _add_conversation(db, cache, realm, origin, messages):
    """
    L{add_private_message} for C{messages} of one sender to one recipient,
    in order: their Deliveries.  The route is worked out and the
    conversations' counts kept once for all of them.  (add_private_message
    is this for one message, written out: through here, a lone message,
    the closed loop's, costs 0.3 us more: store_cost.py --shape next.)
    """
    first, route = _routed(db, cache, realm, origin, messages[0])
    # The recipient as registered, if it was spelled otherwise.
    respelled = None if first is messages[0] else first.recipient
    sender_text, recipient_text, mailboxes, outbox, local, counted = route
    deliveries = []
    for message in messages:
        if respelled is not None:
            message = message._replace(recipient=respelled)
        seq = _gather(db, cache, origin, message, sender_text, recipient_text, mailboxes, outbox)
        deliveries.append(_new_tuple(Delivery, (message, origin, local, outbox, False, seq)))
    _count(cache.private_counts, counted, seq, len(messages))
    return deliveries


def _routed(db, cache, realm, origin, message):
    """
    (C{message} with a local recipient spelled as registered, the route
    of its conversation: L{_route}); L{errors.NoSuchUser}, or what
    L{private_route} refuses.
    """
    recipient = message.recipient
    # A local recipient spelled as registered (in the cache: the common
    # case) is taken as it is; to_local_user looks up the rest.
    if recipient.realm == realm and cache.users.get(recipient.name) != recipient.name:
        message = to_local_user(db, cache, message)
        recipient = message.recipient
    sender = message.sender
    # What the messages of one conversation share is worked out once
    # (L{ThreadCache.routes}): this runs for every message.
    key = (origin, sender.name, sender.realm, recipient.name, recipient.realm)
    route = cache.routes.get(key)
    if route is None:
        route = _route(db, cache, realm, origin, message, key)
    return message, route


def _route(db, cache, realm, origin, message, key):
    """
    Where the private messages of C{key} go (L{private_route}), their
    mailboxes numbered (made if missing), and which conversations count
    them; kept in C{cache.routes}.
    """
    mailboxes, outbox, local = private_route(realm, origin, message)
    route = (
        str(message.sender), str(message.recipient),
        tuple(mailbox_number(db, cache, owner, create=True) for owner in mailboxes),
        outbox, local, _counted(realm, message, local),
    )
    if len(cache.routes) >= cache.MAX_ROUTES:
        cache.routes.clear()
    cache.routes[key] = route
    return route


def history(db, cache, owner, after_id, limit, max_bytes, before_id=None):
    """
    A L{History} page of mailbox C{owner}: at most C{limit} messages whose
    reply takes at most C{max_bytes} (L{wire.message_bytes}; one message
    is always given, however long, so a client can always page on).  The
    newest page; with C{after_id}, the oldest page after it; with
    C{before_id}, the newest page before it.  Rows are read one at a
    time, at most C{limit} + 1 of them, so the page, not the mailbox, is
    what is held in memory.
    """
    mailbox = mailbox_number(db, cache, owner, create=False)
    # The page's seqs first, then their messages: SQLite joins a view of
    # two tables (timeline, step 013) by reading all of it that matches
    # first, here the whole mailbox; the page alone is merged from both.
    if after_id is None and before_id is None:
        rows = db.execute(_page_of("", "DESC"), (mailbox, limit + 1))
    elif after_id is not None:
        rows = db.execute(
            _page_of(" AND seq > ?", ""), (mailbox, _seq_in(db, mailbox, after_id), limit + 1)
        )
    else:
        rows = db.execute(
            _page_of(" AND seq < ?", "DESC"),
            (mailbox, _seq_in(db, mailbox, before_id), limit + 1),
        )
    page = take_page(map(message_of, rows), limit, max_bytes)
    rows.close()
    if after_id is None:
        return History(tuple(reversed(page.messages)), page.more)
    return page


def _page_of(bound, order):
    """
    The SQL of a history page: a mailbox's first seqs in C{order} past
    C{bound}, and their messages.  IN, not a join: SQLite reads the
    messages in the order of the seqs' list, where a join's rows would be
    sorted whole, bodies and all, before the first is read (a page of
    long messages is 64 MB: take_page stops at the reply's bytes).
    """
    return (
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.seq IN (SELECT seq FROM timeline"
        f" WHERE mailbox = ?{bound} ORDER BY seq {order} LIMIT ?) ORDER BY m.seq {order}"
    )


def _seq_in(db, mailbox, message_id):
    """
    Where message C{message_id} is in C{mailbox}: the first row of that id
    there (the store keys a message by (origin, id), so a peer that reuses
    another realm's id stores a second row with it, and a message of
    another conversation is no place to page from); L{errors.BadRequest}.
    """
    row = db.execute(
        "SELECT min(m.seq) FROM messages m WHERE m.id = ?"
        " AND EXISTS (SELECT 1 FROM timeline t WHERE t.mailbox = ? AND t.seq = m.seq)",
        (message_id, mailbox),
    ).fetchone()
    if row[0] is None:
        raise errors.BadRequest(f"no message with id {message_id!r} here")
    return row[0]


def take_page(messages, limit, max_bytes):
    """
    A L{History} of the first of C{messages} (an iterable of L{Message}s,
    read only as far as needed) that fit C{limit} and C{max_bytes}; the
    first always fits.  C{more}: some were left.
    """
    page = []
    budget = max_bytes - wire.HISTORY_REPLY_OVERHEAD
    for message in messages:
        budget -= wire.message_bytes(message)
        if page and (len(page) == limit or budget < 0):
            return History(tuple(page), True)
        page.append(message)
    return History(tuple(page), False)
