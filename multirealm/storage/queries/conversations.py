"""
Conversations and read markers: counters kept in the transaction of each
message and membership change, so that listing a user's conversations
and moving a marker never scan a history (schema step 010).

  - A private message: one upsert per local party's conversation, written
    once per batch however many of its messages the batch holds
    (L{multirealm.storage.queries.messages.private_added}).  The
    conversation of a message in a user's private history is the other
    party: the sender if it is not the user, else the recipient (a
    delivery failure's is the refusing realm, C{@realm}).
    C{unread = received - read}; one's own message moves one's marker.
  - A group post: one upsert of the group's C{group_activity} and, if its
    sender is local, that member's marker moved to it (L{group_posted}).
    C{unread = posts - read}.  Joining makes the marker with everything so
    far read (L{joined}); leaving deletes it (L{left}).

C{read} always counts the conversation's messages from others at or
before C{read_seq} (for a group: every post), which is what lets
L{mark_read} move a marker by counting only what it passes.
"""

from multirealm import errors, wire
from multirealm.model import GROUP, PRIVATE, group_mailbox, user_mailbox
from multirealm.names import Address
from multirealm.storage.queries.common import MESSAGE_COLUMNS, Later, address, message_of
from multirealm.storage.queries.messages import mailbox_number, peer_key

_POSTED = (
    "INSERT INTO group_activity (mailbox, posts, last_seq) VALUES (?, 1, ?)"
    " ON CONFLICT (mailbox) DO UPDATE SET posts = group_activity.posts + 1, last_seq = excluded.last_seq"
    " RETURNING posts, joined"
)

# The keys and separators of one entry around its last message.
_ENTRY_OVERHEAD = 70


def group_posted(db, cache, realm, message, seq):
    """C{message}, stored as C{seq}, is a post of group C{message.recipient}."""
    mailbox = mailbox_number(db, cache, group_mailbox(message.recipient), create=False)
    posts, joined = db.execute(_POSTED, (mailbox, seq)).fetchone()
    sender = message.sender
    if sender.realm == realm:
        db.execute(
            'UPDATE group_markers SET read_seq = ?, read = ? WHERE "user" = ? AND mailbox = ?',
            (seq, posts, sender.name, mailbox),
        )
    elif joined is not None and message.timestamp < joined:
        # Of the history a realm is sent with its first member of a group:
        # no news to those who joined after it was posted (and had read
        # everything before), as live delivery decides (group_readers).
        db.execute(
            "UPDATE group_markers SET read_seq = ?, read = ? WHERE mailbox = ? AND read = ?"
            ' AND "user" IN (SELECT member FROM remote_members WHERE group_key = ? AND since > ?)',
            (seq, posts, mailbox, posts - 1, str(message.recipient).lower(), message.timestamp),
        )


def post_withdrawn(db, mailbox, seq):
    """Post C{seq} was taken out of group mailbox C{mailbox} (its home refused it)."""
    db.execute(
        "UPDATE group_activity SET posts = posts - 1,"
        " last_seq = coalesce((SELECT seq FROM timeline WHERE mailbox = ? ORDER BY seq DESC LIMIT 1), 0)"
        " WHERE mailbox = ?",
        (mailbox, mailbox),
    )
    db.execute(
        "UPDATE group_markers SET read = read - 1 WHERE mailbox = ? AND read_seq >= ?",
        (mailbox, seq),
    )


def joined(db, cache, user, group, stamped=None):
    """
    Local C{user} joined C{group} (an Address, as its home spells it):
    everything so far is read, and the join is the group's place in the
    order until a post.  Nothing changes for a member already.
    C{stamped}: when the home of another realm's group says the
    membership began (the history it sends next predates it).
    """
    mailbox = mailbox_number(db, cache, group_mailbox(group), create=True)
    if stamped is not None:
        db.execute(
            "INSERT INTO group_activity (mailbox, posts, last_seq, joined) VALUES (?, 0, 0, ?)"
            " ON CONFLICT (mailbox) DO UPDATE"
            " SET joined = CASE WHEN group_activity.joined >= excluded.joined"
            " THEN group_activity.joined"
            " ELSE excluded.joined END",
            (mailbox, stamped),
        )
    db.execute(
        'INSERT INTO group_markers ("user", mailbox, read_seq, read, since)'
        " SELECT ?, ?, coalesce(a.last_seq, 0), coalesce(a.posts, 0),"
        " (SELECT coalesce(max(seq), 0) FROM messages)"
        " FROM (SELECT 1) AS one LEFT JOIN group_activity a ON a.mailbox = ?"
        ' ON CONFLICT ("user", mailbox) DO NOTHING',
        (user, mailbox, mailbox),
    )


def left(db, cache, user, group):
    """Local C{user} is no longer in C{group}: its marker goes."""
    mailbox = mailbox_number(db, cache, group_mailbox(group), create=False)
    if mailbox is not None:
        db.execute('DELETE FROM group_markers WHERE "user" = ? AND mailbox = ?', (user, mailbox))


def _groups(db, user):
    """
    [(order, kind, key, unread, last_seq)] of every group of C{user}: a
    join orders just after the message before it (its C{since}).
    """
    return [
        (max(last_seq or 0, since + 0.5), GROUP, owner[len("group:"):], (posts or 0) - read,
         last_seq)
        for owner, read, since, posts, last_seq in db.execute(
            "SELECT b.owner, g.read, g.since, a.posts, a.last_seq FROM group_markers g"
            " JOIN mailboxes b ON b.id = g.mailbox"
            ' LEFT JOIN group_activity a ON a.mailbox = g.mailbox WHERE g."user" = ?',
            (user,),
        )
    ]


def peer_of(db, realm, other):
    """
    The key of the private conversation with C{other} (L{peer_key}), a
    user of this realm as registered (asked in any case, as C{send} is).
    """
    if other.realm == realm and other.name:
        row = db.execute(
            "SELECT name FROM users WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
            (other.name, other.name),
        ).fetchone()
        if row is not None:
            other = Address(row[0], realm)
    return peer_key(realm, other)


def _cursor(db, realm, user, after, groups):
    """The place in the order of C{user}'s conversation with C{after}; L{errors.BadRequest}."""
    places = []
    row = db.execute(
        'SELECT last_seq, peer FROM private_conversations WHERE "user" = ? AND peer = ?',
        (user, peer_of(db, realm, after)),
    ).fetchone()
    if row is not None:
        places.append((row[0], PRIVATE, row[1]))
    wanted = str(after)
    same = [g for g in groups if g[2] == wanted] or [
        g for g in groups if g[2].lower() == wanted.lower()
    ]
    places += [g[:3] for g in same]
    if not places:
        raise errors.BadRequest(f"you have no conversation with {after.relative_to(realm)}")
    # Named both a peer and a group: after the first of them, so that a
    # page may repeat an entry but never skips one.
    return max(places)


def conversations_of(db, realm, user, after, limit, max_bytes):
    """
    A page of local C{user}'s conversations, newest activity first, after
    the one with C{after} (an Address, or None): ([(Address, kind, last
    L{Message} or None, unread)], more), at most C{limit} whose reply
    takes at most C{max_bytes} (one entry is always given).  The user's
    private rows (together in the primary key) are sorted, newest first,
    keeping only a page's worth; the user's groups are merged
    in; then the page's last messages, by seq.
    """
    groups = _groups(db, user)
    cursor = None if after is None else _cursor(db, realm, user, after, groups)
    if cursor is None:
        rows = db.execute(
            'SELECT last_seq, peer, received - read FROM private_conversations WHERE "user" = ?'
            " ORDER BY last_seq DESC LIMIT ?",
            (user, limit + 1),
        )
    else:
        # last_seq is one message's: no two of one user's rows share it.
        rows = db.execute(
            'SELECT last_seq, peer, received - read FROM private_conversations WHERE "user" = ?'
            " AND last_seq <= ? ORDER BY last_seq DESC LIMIT ?",
            (user, cursor[0], limit + 2),
        )
    private = [(seq, PRIVATE, peer, unread, seq) for seq, peer, unread in rows]
    candidates = sorted(
        (c for c in private + groups if cursor is None or c[:3] < cursor), reverse=True
    )[:limit + 1]
    lasts = {}
    parsed = {}  # a page names the same few addresses many times (the user's above all)

    def parse(text):
        known = parsed.get(text)
        if known is None:
            known = parsed[text] = address(text)
        return known

    seqs = [c[4] for c in candidates if c[4]]
    if seqs:
        marks = ", ".join("?" * len(seqs))
        for row in db.execute(
            f"SELECT m.seq, {MESSAGE_COLUMNS} FROM messages m WHERE m.seq IN ({marks})", seqs
        ):
            lasts[row[0]] = message_of(row, 1, parse)
    page = []
    budget = max_bytes - wire.HISTORY_REPLY_OVERHEAD
    for _, kind, key, unread, seq in candidates:
        last = lasts.get(seq)
        budget -= _ENTRY_OVERHEAD + len(key) + (0 if last is None else wire.message_bytes(last))
        if page and (len(page) == limit or budget < 0):
            return page, True
        page.append((parse(key), kind, last, unread))
    return page, False


def _group_mailbox(db, cache, realm, user, other):
    """
    (mailbox number or None, whether C{user} is a member) of group C{other}
    as this realm keeps it; (None, False) if there is no such group here.
    """
    if other.realm == realm:
        row = db.execute(
            "SELECT name FROM groups WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
            (other.name, other.name),
        ).fetchone()
        if row is None:
            return None, False
        group = Address(row[0], realm)
    else:
        row = db.execute(
            "SELECT group_address FROM remote_members WHERE group_key = ? AND member = ?",
            (str(other).lower(), user),
        ).fetchone()
        if row is None:
            return None, False
        group = address(row[0])
    mailbox = mailbox_number(db, cache, group_mailbox(group), create=False)
    member = mailbox is not None and db.execute(
        'SELECT 1 FROM group_markers WHERE "user" = ? AND mailbox = ?', (user, mailbox)
    ).fetchone() is not None
    return mailbox, member


def _in_timeline(db, mailbox, seq):
    return mailbox is not None and db.execute(
        "SELECT 1 FROM timeline WHERE mailbox = ? AND seq = ?", (mailbox, seq)
    ).fetchone() is not None


def mark_read(db, cache, realm, user, other, message_id):
    """
    Local C{user} has read their conversation with C{other} (an Address,
    a peer or a group) up to and including message C{message_id}: the
    marker moves forward, never back.  Returns (the conversation's
    Address, whether the marker moved).  L{errors.NotAMember} for a group
    the user is not in; L{errors.BadRequest} if the conversation holds no
    such message.
    """
    me = f"{user}@{realm}"
    peer = peer_of(db, realm, other)
    box = mailbox_number(db, cache, user_mailbox(Address(user, realm)), create=False)
    group_box, member = _group_mailbox(db, cache, realm, user, other)
    found = None
    for seq, kind, sender, recipient in db.execute(
        "SELECT seq, kind, sender, recipient FROM messages WHERE id = ?", (message_id,)
    ).fetchall():
        if kind == GROUP:
            if member and _in_timeline(db, group_box, seq):
                found = GROUP, seq
                break
        elif _in_timeline(db, box, seq):
            party = address(recipient if sender == me else sender)
            if peer_key(realm, party) == peer:
                found = PRIVATE, seq
                break
    if found is None:
        if group_box is not None and not member:
            raise errors.NotAMember(f"you are not a member of group {other.relative_to(realm)}")
        raise errors.BadRequest(
            f"no message {message_id!r} in your conversation with {other.relative_to(realm)}"
        )
    kind, seq = found
    if kind == GROUP:
        owner = db.execute("SELECT owner FROM mailboxes WHERE id = ?", (group_box,)).fetchone()[0]
        return address(owner[len("group:"):]), _move_group(db, user, group_box, seq)
    return _move_private(db, address(peer), user, box, peer, me, seq)


def _move_group(db, user, mailbox, seq):
    read_seq, read, posts, last_seq = db.execute(
        "SELECT g.read_seq, g.read, a.posts, a.last_seq FROM group_markers g"
        ' JOIN group_activity a ON a.mailbox = g.mailbox WHERE g."user" = ? AND g.mailbox = ?',
        (user, mailbox),
    ).fetchone()
    move = _marker_move(seq, read_seq, read, posts, last_seq)
    if move is None:
        return False
    base, sign, after, up_to = move
    read = base + sign * _count_posts(db, mailbox, after, up_to)
    db.execute(
        'UPDATE group_markers SET read_seq = ?, read = ? WHERE "user" = ? AND mailbox = ?',
        (seq, read, user, mailbox),
    )
    return True


def _move_private(db, conversation, user, mailbox, peer, me, seq):
    """
    C{user}'s marker in their conversation with C{peer} moves to C{seq}:
    (C{conversation}, whether it moved), or the L{Later} that counts on.
    """
    read_seq, read, received, last_seq = db.execute(
        "SELECT read_seq, read, received, last_seq FROM private_conversations"
        ' WHERE "user" = ? AND peer = ?',
        (user, peer),
    ).fetchone()
    if peer == me:  # notes to oneself: all one's own
        last_seq = seq
    move = _marker_move(seq, read_seq, read, received, last_seq)
    if move is None:
        return conversation, False
    # The range is one of the user's whole private history (every peer's
    # messages): counted in steps of COUNT_ROWS rows, a batch each.
    base, sign, after, up_to = move
    return _count_private(db, conversation, user, mailbox, peer, me, seq, read_seq,
                          base, sign, after, up_to)


# Rows of a user's private history one step of a private markread's count
# reads: a few milliseconds of the database thread.
COUNT_ROWS = 20_000


def _count_private(db, conversation, user, mailbox, peer, me, seq, read_seq, read, sign,
                   after, up_to):
    """
    Count C{peer}'s messages in C{(after, up_to]} of C{me}'s private history
    C{mailbox}, at most L{COUNT_ROWS} rows a step, into C{read} (added with
    C{sign}); then set the marker to C{seq} if it is still at C{read_seq}
    (a markread or a message of the user's may have moved it meanwhile).
    """
    local = peer.endswith("@" + me.rpartition("@")[2])
    scanned, counted, last = db.execute(
        "SELECT count(*), coalesce(sum(CASE WHEN "
        + ("sender = ?" if local else "lower(sender) = ?")
        + " THEN 1 ELSE 0 END), 0), max(seq) FROM (SELECT t.seq, m.sender FROM"
        " (SELECT seq FROM timeline WHERE mailbox = ? AND seq > ? AND seq <= ?"
        " ORDER BY seq LIMIT ?) AS t JOIN messages m ON m.seq = t.seq) AS step",
        (peer, mailbox, after, up_to, COUNT_ROWS),
    ).fetchone()
    read += sign * counted
    if scanned == COUNT_ROWS and last < up_to:
        return Later(_count_private, conversation, user, mailbox, peer, me, seq, read_seq,
                     read, sign, last, up_to)
    now = db.execute(
        'SELECT read_seq FROM private_conversations WHERE "user" = ? AND peer = ?', (user, peer)
    ).fetchone()[0]
    if now != read_seq:  # moved meanwhile: from where it is now
        return _move_private(db, conversation, user, mailbox, peer, me, seq)
    db.execute(
        'UPDATE private_conversations SET read_seq = ?, read = ? WHERE "user" = ? AND peer = ?',
        (seq, read, user, peer),
    )
    return conversation, True


def _marker_move(seq, read_seq, read, total, last_seq):
    """
    How to count a conversation's messages from others that are read once
    its marker (at C{read_seq}, C{read} of C{total} read) moves to C{seq}:
    (base, sign, after, up_to), read being C{base + sign * (the count in
    seqs (after, up_to])}; None if that is no move forward.  The range is
    what lies between the marker and the message, or between the message
    and the conversation's end (C{last_seq}), whichever is shorter, so that
    marking what one has just scrolled to, near the end, is cheap however
    far behind the marker was; empty when the message is the last.
    """
    if seq <= read_seq:
        return None
    if seq >= last_seq:
        return total, 1, seq, seq
    if seq - read_seq <= last_seq - seq:
        return read, 1, read_seq, seq
    return total, -1, seq, last_seq


def _count_posts(db, mailbox, after, up_to):
    """The posts of group mailbox C{mailbox} in seqs (C{after}, C{up_to}]."""
    return db.execute(
        "SELECT count(*) FROM timeline WHERE mailbox = ? AND seq > ? AND seq <= ?",
        (mailbox, after, up_to),
    ).fetchone()[0]
