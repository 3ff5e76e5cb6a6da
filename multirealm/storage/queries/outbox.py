"""
The outbox: what waits for each peer realm, written with its message
(L{messages.insert_message}), read in order, forgotten once answered; and
a refusal for good, turned into a failure entry for the sender.
"""

from multirealm import errors
from multirealm.core.policy import NOWHERE
from multirealm.model import GROUP, Deliveries, group_mailbox, user_mailbox
from multirealm.storage.queries.common import MESSAGE_COLUMNS, address, message_of
from multirealm.storage.queries.groups import leave_group
from multirealm.storage.queries import conversations
from multirealm.storage.queries.messages import insert_message, mailbox_number, private_added


def outbox_batch(db, peer, after_seq, limit, max_bytes=2**62):
    """
    (entries, complete): up to C{limit} (seq, L{Message}) waiting for realm
    C{peer}, after C{after_seq}, oldest first; the read stops after the
    message whose text reaches C{max_bytes} in all (rows are read one at a
    time: a batch, not the outbox, is held).  C{complete}: nothing more waits.
    """
    rows = db.execute(
        "SELECT o.seq, " + MESSAGE_COLUMNS + " FROM outbox o JOIN messages m ON m.seq = o.seq"
        " WHERE o.realm = ? AND o.seq > ? ORDER BY o.seq LIMIT ?",
        (peer, after_seq, limit + 1),
    )
    entries = []
    complete = True
    for row in rows:
        if len(entries) == limit or max_bytes <= 0:
            complete = False
            break
        message = message_of(row, 1)
        max_bytes -= len(message.text)
        entries.append((row[0], message))
    rows.close()
    return entries, complete


def outbox_done(db, peer, seqs):
    """Forget the entries of C{peer}'s outbox that it answered."""
    db.executemany("DELETE FROM outbox WHERE realm = ? AND seq = ?", [(peer, s) for s in seqs])


def pending_counts(db):
    """{realm: (messages waiting, timestamp of the oldest)} of every realm with some."""
    return {
        realm: (count, db.execute("SELECT timestamp FROM messages WHERE seq = ?", (oldest,))
                .fetchone()[0])
        for realm, count, oldest in db.execute(
            "SELECT realm, count(*), min(seq) FROM outbox GROUP BY realm"
        ).fetchall()
    }


def record_failure(db, cache, realm, peer, seq, failure, removed=None, notice=None):
    """
    C{peer} refused outbox entry C{seq} for good: forget the entry and add
    the L{FAILURE} message C{failure} to its sender's history, in one
    transaction (a crash never loses the failure nor reports it twice).
    C{removed}: the member of the group the refused entry was about that
    C{peer} refused to add, taken out of the group; C{notice} (a MEMBER
    message) tells the realms with members.
    """
    told = None
    kind, recipient = db.execute(
        "SELECT kind, recipient FROM messages WHERE seq = ?", (seq,)
    ).fetchone()
    if removed is not None:
        group = address(recipient).name
        try:
            told = leave_group(db, realm, group, removed, cache, notice)
        except (errors.NotAMember, errors.NoSuchGroup):
            pass  # already gone: nothing was changed
    db.execute("DELETE FROM outbox WHERE realm = ? AND seq = ?", (peer, seq))
    # A post to another realm's group that its home refused (its author
    # was no longer a member, say) is no post of that group: out of this
    # realm's copy, where the group's other members here would read it.
    if kind == GROUP and address(recipient).realm == peer:
        mailbox = mailbox_number(db, cache, group_mailbox(address(recipient)), create=False)
        # The view timeline is two tables (schema step 013): the row is in one.
        withdrawn = 0
        for table in ("timeline_settled", "timeline_recent"):
            withdrawn += db.execute(
                f"DELETE FROM {table} WHERE mailbox = ? AND seq = ?", (mailbox, seq)
            ).rowcount
        if withdrawn:
            cache.recent_timeline_rows = None  # counted again when next needed
            conversations.post_withdrawn(db, mailbox, seq)
    stored = private_added(cache, realm, insert_message(
        db, cache, realm, failure, (user_mailbox(failure.recipient),), NOWHERE,
        frozenset((failure.recipient.name,)),
    ))
    return stored if told is None else Deliveries((stored, told))
