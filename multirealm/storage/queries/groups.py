"""
Groups: this realm's groups and their members (with, per group, the realms
that have members), posting to a group (here or to another realm's), and
who reads a group here.  This realm's copy of other realms' groups is
L{multirealm.storage.queries.remote_groups}.

Membership is read in the transaction of what it allows (a post, a leave,
a history page): a member who left earlier in the same batch is no longer
one, whatever was checked before.
"""


from multirealm import errors
from multirealm.core import policy
from multirealm.core.policy import NOBODY, NOWHERE
from multirealm.model import ADDED, KNOWN, Deliveries, group_mailbox
from multirealm.names import Address
from multirealm.storage.queries import conversations, file_access
from multirealm.storage.queries.accounts import local_user
from multirealm.storage.queries.common import address, first_column
from multirealm.storage.queries.messages import history, insert_message, mailbox_number
from multirealm.storage.queries.remote_groups import remote_group


def list_groups(db, after, limit):
    return first_column(
        db, "SELECT name FROM groups WHERE name > ? ORDER BY name LIMIT ?", after, limit
    )


def local_group(db, group):
    """The name of local group C{group} (any case) as created; L{errors.NoSuchGroup}."""
    row = db.execute(
        "SELECT name FROM groups WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
        (group, group),
    ).fetchone()
    if row is None:
        raise errors.NoSuchGroup(f"no group {group!r}")
    return row[0]


def member_as_stored(db, group, member, any_case=False):
    """
    C{member} (an Address) as local group C{group} lists it, or
    L{errors.NotAMember}; C{any_case}: see L{policy.member_in_any_case}.
    """
    text = str(member)
    found = db.execute(
        "SELECT member FROM members WHERE group_name = ? AND member = ?", (group, text)
    ).fetchone()
    if found is None and any_case:
        found = db.execute(
            "SELECT member FROM members WHERE group_name = ? AND member = ? COLLATE NOCASE"
            " LIMIT 1",
            (group, text),
        ).fetchone()
    if found is None:
        raise errors.NotAMember(f"{member} is not a member of group {group!r}")
    return found[0]


def require_member(db, realm, group, member):
    """The name of local group C{group} as created, if C{member} is a member."""
    group = local_group(db, group)
    member_as_stored(db, group, member, policy.member_in_any_case(realm, member))
    return group


def member_realms(db, group):
    """The realms with members in local group C{group}."""
    return first_column(db, "SELECT realm FROM group_realms WHERE group_name = ?", group)


def add_group_message(db, cache, realm, origin, message):
    """
    Store a message to a group, minted here (C{origin} is C{realm}) or
    handed over by peer C{origin}: into the group's history, queued as
    L{policy.group_outbox} says.  Its Delivery names no local users (live
    delivery asks who is in the group).  A file it carries may be fetched
    by the members the group has now.
    """
    group = message.recipient
    if group.realm == realm:
        name = require_member(db, realm, group.name, message.sender)
        if name != group.name:
            message = message._replace(recipient=Address(name, realm))
        outbox = policy.group_outbox(realm, origin, group, member_realms(db, name))
        if message.file is not None:
            file_access.snapshot_group_readers(db, message.file.id, name)
    else:
        if origin == realm:
            # Posted here: by a member as the home announced (the home
            # checks again); one the home forwards it has checked.
            home_spelling = remote_group(db, group, message.sender.name)
            if home_spelling != group:
                message = message._replace(recipient=home_spelling)
        outbox = policy.group_outbox(realm, origin, message.recipient)
        if message.file is not None:
            file_access.snapshot_remote_group_readers(
                db, realm, message.file.id, message.recipient, message.timestamp
            )
    delivery = insert_message(
        db, cache, origin, message, (group_mailbox(message.recipient),), outbox, NOBODY
    )
    conversations.group_posted(db, cache, realm, delivery.message, delivery.seq)
    return delivery


def create_group(db, cache, name, creator, members, created, max_created, joined=(),
                 roster=None):
    """
    Create local group C{name} (its members' local users must exist, in
    any case), unless C{creator} has created C{max_created} already
    (counted in this transaction: two creations in one batch count each
    other).  C{joined} are (realm, L{JOINED} message) that tell each other
    realm which of its users were added: queued with the group, they make
    the L{Deliveries} returned.
    """
    taken = db.execute(
        "SELECT name FROM groups WHERE name = ? COLLATE NOCASE LIMIT 1", (name,)
    ).fetchone()
    if taken is not None:
        raise errors.GroupExists(f"group {taken[0]!r} already exists")
    deleted = db.execute(
        "SELECT name FROM deleted_groups WHERE name = ? COLLATE NOCASE LIMIT 1", (name,)
    ).fetchone()
    if deleted is not None:
        raise errors.GroupExists(f"group {deleted[0]!r} was deleted: its name is not given again")
    policy.check_groups_created(
        db.execute("SELECT count(*) FROM groups WHERE creator = ?", (str(creator),)).fetchone()[0],
        max_created,
    )
    spelled = {}  # address -> itself, local users spelled as registered, once each
    for member in members:
        if member.realm == creator.realm:
            registered = local_user(db, cache, member.name)
            if registered is None:
                raise errors.NoSuchUser(f"no user {member.name!r}")
            member = Address(registered, member.realm)
        spelled.setdefault(_once(creator.realm, member), member)
    db.execute(
        "INSERT INTO groups (name, creator, created) VALUES (?, ?, ?)",
        (name, str(creator), created),
    )
    db.executemany(
        "INSERT INTO members (group_name, member) VALUES (?, ?)",
        [(name, str(m)) for m in spelled.values()],
    )
    realms = {}
    for member in spelled.values():
        realms[member.realm] = realms.get(member.realm, 0) + 1
        if member.realm == creator.realm:
            conversations.joined(db, cache, member.name, Address(name, creator.realm))
    db.executemany(
        "INSERT INTO group_realms (group_name, realm, members) VALUES (?, ?, ?)",
        [(name, realm, count) for realm, count in realms.items()],
    )
    deliveries = [
        insert_message(db, cache, creator.realm, message, (), frozenset((realm,)), NOBODY)
        for realm, message in joined
    ]
    if roster is not None:
        everyone = [str(m) for m in spelled.values()]
        for n, realm in enumerate(sorted({realm for realm, _ in joined})):
            deliveries += _queue_roster(db, cache, creator.realm, roster, f"k{n}", realm, everyone)
    return Deliveries(deliveries)


# The most bytes of member names in one KNOWN frame: well within a frame line.
_ROSTER_BYTES = 2000


def _queue_roster(db, cache, realm, template, suffix, peer, members):
    """
    Queue for C{peer} the L{KNOWN} frames that list C{members} (text),
    a few hundred per frame; their ids are C{template}'s id, C{suffix} and
    a number (not hex: no id minted here looks like them).
    """
    chunks, chunk, size = [], [], 0
    for member in members:
        if chunk and size + len(member) + 1 > _ROSTER_BYTES:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(member)
        size += len(member) + 1
    if chunk:
        chunks.append(chunk)
    return [
        insert_message(
            db, cache, realm,
            template._replace(id=f"{template.id}{suffix}x{i}", text=" ".join((KNOWN, *chunk))),
            (), frozenset((peer,)), NOBODY,
        )
        for i, chunk in enumerate(chunks)
    ]


def _members_of(db, name):
    return first_column(
        db, "SELECT member FROM members WHERE group_name = ? ORDER BY member", name
    )


def _check_owner(db, realm, name, owner):
    """L{errors.Forbidden} unless C{owner} created local group C{name}: a member who did not."""
    creator = db.execute("SELECT creator FROM groups WHERE name = ?", (name,)).fetchone()[0]
    if creator != str(owner):
        member_as_stored(db, name, owner, policy.member_in_any_case(realm, owner))
        raise errors.Forbidden(f"only {creator} adds and removes members of group {name}")


def _notify(db, cache, realm, notice, member, realms):
    """Queue member notice C{notice} for C{realms}; its event reaches C{member} if local."""
    local = frozenset((member.name,)) if member.realm == realm else NOBODY
    return insert_message(
        db, cache, realm, notice, (), policy.group_outbox(realm, realm, notice.recipient, realms),
        local,
    )


def _once(realm, member):
    """
    What makes C{member} (an Address) one member of a group of C{realm}:
    a user of another realm in any case (L{policy.member_in_any_case}),
    so that heru@2 and HERU@2 named together are added once.
    """
    return str(member).lower() if policy.member_in_any_case(realm, member) else member


def add_members(db, cache, realm, name, owner, members, notices, roster, most):
    """
    Owner C{owner} adds C{members} (Addresses) to local group C{name}:
    local users must exist; one already a member is left as is.  Each one
    added gets its notice (the MEMBER message of C{notices} at the same
    place), queued for every realm with members now; a realm that gets
    its first member here gets the group's history and the L{KNOWN}
    roster (C{roster}) with it.
    L{errors.QuotaExceeded} past C{most} members.
    """
    name = local_group(db, name)
    _check_owner(db, realm, name, owner)
    new = {}
    for member, notice in zip(members, notices):
        if member.realm == realm:
            registered = local_user(db, cache, member.name)
            if registered is None:
                raise errors.NoSuchUser(f"no user {member.name!r}")
            member = Address(registered, realm)
        try:
            member_as_stored(db, name, member, policy.member_in_any_case(realm, member))
        except errors.NotAMember:
            new.setdefault(_once(realm, member), (member, notice))
    count = db.execute("SELECT count(*) FROM members WHERE group_name = ?", (name,)).fetchone()[0]
    if count + len(new) > most:
        raise errors.QuotaExceeded(f"a group has at most {most} members")
    deliveries = []
    for n, (member, notice) in enumerate(new.values()):
        before = member_realms(db, name)
        db.execute("INSERT INTO members (group_name, member) VALUES (?, ?)", (name, str(member)))
        db.execute(
            "INSERT INTO group_realms (group_name, realm, members) VALUES (?, ?, 1)"
            " ON CONFLICT (group_name, realm) DO UPDATE"
            " SET members = group_realms.members + 1",
            (name, member.realm),
        )
        if member.realm == realm:
            conversations.joined(db, cache, member.name, Address(name, realm))
        notice = notice._replace(recipient=Address(name, realm), text=f"{ADDED} {member}")
        deliveries.append(_notify(db, cache, realm, notice, member, member_realms(db, name)))
        if member.realm != realm and member.realm not in before:
            _queue_history(db, cache, member.realm, name, realm)
            deliveries += _queue_roster(
                db, cache, realm, roster._replace(recipient=Address(name, realm)),
                f"k{n}", member.realm, _members_of(db, name),
            )
    return Deliveries(deliveries)


def _queue_history(db, cache, peer, name, realm):
    """
    Queue local group C{name}'s history (its newest
    L{policy.HISTORY_FOR_A_NEW_REALM} messages) for C{peer}, which gets its
    first member: at the messages' own (older) places in the outbox, so
    that the L{KNOWN} roster queued next makes the link read it again
    (L{multirealm.model.rereads_outbox}).
    """
    number = mailbox_number(db, cache, group_mailbox(Address(name, realm)), create=False)
    if number is None:
        return
    sent = db.execute(
        "SELECT up_to FROM history_sent WHERE group_name = ? AND realm = ?", (name, peer)
    ).fetchone()
    # Not what it was sent before it lost its members (removing and adding
    # one user again must not send the history again), nor the posts that
    # came from that realm: it holds them already.
    db.execute(
        "INSERT INTO outbox (realm, seq) SELECT ?, t.seq FROM timeline t"
        " WHERE t.mailbox = ? AND t.seq > ?"
        " AND (SELECT m.origin FROM messages m WHERE m.seq = t.seq) != ?"
        " ORDER BY t.seq DESC LIMIT ? ON CONFLICT DO NOTHING",
        (peer, number, sent[0] if sent else 0, peer, policy.HISTORY_FOR_A_NEW_REALM),
    )


def _history_sent(db, realm, name, peer):
    """Realm C{peer} lost its last member of local group C{name}: it was sent all so far."""
    db.execute(
        "INSERT INTO history_sent (group_name, realm, up_to)"
        " SELECT ?, ?, coalesce((SELECT seq FROM timeline WHERE mailbox ="
        " (SELECT id FROM mailboxes WHERE owner = ?) ORDER BY seq DESC LIMIT 1), 0) WHERE true"
        " ON CONFLICT (group_name, realm) DO UPDATE SET up_to = excluded.up_to",
        (name, peer, group_mailbox(Address(name, realm))),
    )


def remove_members(db, cache, realm, name, owner, members, notices):
    """
    Owner C{owner} takes C{members} out of local group C{name} (one who is
    no member is left as is); each notice is queued for the realms that
    had members, the removed one's included.
    """
    name = local_group(db, name)
    _check_owner(db, realm, name, owner)
    deliveries = []
    for member, notice in zip(members, notices):
        try:
            delivery = leave_group(db, realm, name, member, cache, notice)
        except errors.NotAMember:
            continue
        deliveries.append(delivery)
    return Deliveries(deliveries)


def group_info(db, realm, name, reader):
    """(name as created, creator, members) of local group C{name}, for a member."""
    name = require_member(db, realm, name, reader)
    creator = db.execute("SELECT creator FROM groups WHERE name = ?", (name,)).fetchone()[0]
    return name, address(creator), [address(m) for m in _members_of(db, name)]


def group_history(db, cache, realm, name, reader, after_id, limit, max_bytes, before_id=None):
    name = require_member(db, realm, name, reader)
    return history(
        db, cache, group_mailbox(Address(name, realm)), after_id, limit, max_bytes, before_id
    )


def groups_of(db, realm, user, limit):
    """
    The groups local user C{user} is in, at most C{limit}: names of this
    realm's groups, C{group@home} for the others (as their homes announced).
    """
    here = first_column(
        db, "SELECT group_name FROM members WHERE member = ? ORDER BY group_name LIMIT ?",
        f"{user}@{realm}", limit,
    )
    there = first_column(
        db, "SELECT group_address FROM remote_members WHERE member = ? ORDER BY group_key LIMIT ?",
        user, limit,
    )
    return here + there


def group_readers(db, realm, group, among=None, sent=None):
    """
    The names of this realm's users who read group C{group} (an Address):
    its local members if the group is of this realm, else those its home
    announced (with C{sent}, a message's timestamp: those who were members
    then, so the history a realm is sent for its first member is no news
    to them).  C{among}: only these names are wanted (point lookups, not
    the whole member list, when they are few).
    """
    local = group.realm == realm
    since = "" if local or sent is None else " AND (since IS NULL OR since <= ?)"
    when = () if local or sent is None else (sent,)
    if among is not None and len(among) <= 500:
        wanted = [f"{name}@{realm}" if local else name for name in among]
        marks = ", ".join("?" * len(wanted))
        if local:
            rows = db.execute(
                f"SELECT member FROM members WHERE group_name = ? AND member IN ({marks})",
                (group.name, *wanted),
            )
        else:
            rows = db.execute(
                f"SELECT member FROM remote_members WHERE group_key = ? AND member IN ({marks})"
                + since,
                (str(group).lower(), *wanted, *when),
            )
    elif local:
        rows = db.execute("SELECT member FROM members WHERE group_name = ?", (group.name,))
    else:
        rows = db.execute(
            "SELECT member FROM remote_members WHERE group_key = ?" + since,
            (str(group).lower(), *when),
        )
    if not local:
        return [member for (member,) in rows]
    suffix = "@" + realm
    return [member[:-len(suffix)] for (member,) in rows if member.endswith(suffix)]


def leave_group(db, realm, name, member, cache=None, notice=None):
    """
    C{member} (an Address) leaves local group C{name}.  C{notice}: the
    MEMBER message that tells it (its L{Delivery} is returned), queued
    for every realm that had members, the member's own included.
    """
    name = local_group(db, name)
    stored = member_as_stored(db, name, member, policy.member_in_any_case(realm, member))
    before = member_realms(db, name) if notice is not None else ()
    db.execute(
        "DELETE FROM members WHERE group_name = ? AND member = ?", (name, stored)
    )
    if member.realm == realm:
        conversations.left(db, cache, address(stored).name, Address(name, realm))
    db.execute(
        "UPDATE group_realms SET members = members - 1 WHERE group_name = ? AND realm = ?",
        (name, member.realm),
    )
    emptied = db.execute(
        "DELETE FROM group_realms WHERE group_name = ? AND members <= 0", (name,)
    ).rowcount
    if emptied and member.realm != realm:
        _history_sent(db, realm, name, member.realm)
    if notice is not None:
        change = notice.text.split(" ", 1)[0]
        notice = notice._replace(
            recipient=Address(name, realm), text=f"{change} {address(stored)}"
        )
        return _notify(db, cache, realm, notice, member, before)
    return None


def receive_left(db, cache, realm, origin, message, notice=None):
    """
    User C{message.sender} of realm C{origin} left local group
    C{message.recipient}; C{notice} (a MEMBER message) tells every realm
    with members, C{origin} included.
    """
    told = leave_group(db, realm, message.recipient.name, message.sender, cache, notice)
    stored = insert_message(db, cache, origin, message, (), NOWHERE, NOBODY)
    return stored if told is None else Deliveries((stored, told))


