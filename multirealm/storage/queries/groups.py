"""
Groups: this realm's groups and their members (with, per group, the realms
that have members), posting to a group, and the memberships of this
realm's users in other realms' groups as those announced them.

Membership is read in the transaction of what it allows (a post, a leave,
a history page): a member who left earlier in the same batch is no longer
one, whatever was checked before.
"""

import attrs

from multirealm import errors
from multirealm.core import policy
from multirealm.core.policy import NOBODY, NOWHERE
from multirealm.model import Deliveries, group_mailbox
from multirealm.names import Address
from multirealm.storage.queries import conversations, file_access
from multirealm.storage.queries.accounts import check_remote_room, count_remote, local_user
from multirealm.storage.queries.common import address, first_column
from multirealm.storage.queries.messages import history, insert_message


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


def remote_group(db, group, member):
    """
    Group C{group} of another realm (an L{Address}) as its home spells it,
    if local user C{member} belongs to it (as that realm announced);
    L{errors.NotAMember} otherwise.
    """
    row = db.execute(
        "SELECT group_address FROM remote_members WHERE group_key = ? AND member = ?",
        (str(group).lower(), member),
    ).fetchone()
    if row is None:
        raise errors.NotAMember(f"you are not a member of group {group}")
    return address(row[0])


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
            message = attrs.evolve(message, recipient=Address(name, realm))
        outbox = policy.group_outbox(realm, origin, group, member_realms(db, name))
        if message.file is not None:
            file_access.snapshot_group_readers(db, message.file.id, name)
    else:
        if origin == realm:
            # Posted here: by a member as the home announced (the home
            # checks again); one the home forwards it has checked.
            home_spelling = remote_group(db, group, message.sender.name)
            if home_spelling != group:
                message = attrs.evolve(message, recipient=home_spelling)
        outbox = policy.group_outbox(realm, origin, message.recipient)
        if message.file is not None:
            file_access.snapshot_remote_group_readers(
                db, realm, message.file.id, message.recipient
            )
    return insert_message(
        db, cache, realm, origin, message, (group_mailbox(message.recipient),), outbox, NOBODY
    )


def create_group(db, cache, name, creator, members, created, max_created, joined=()):
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
        spelled.setdefault(member, member)
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
    db.executemany(
        "INSERT INTO group_realms (group_name, realm, members) VALUES (?, ?, ?)",
        [(name, realm, count) for realm, count in realms.items()],
    )
    here = creator.realm
    conversations.joined(
        db, here, [m.name for m in spelled.values() if m.realm == here], Address(name, here)
    )
    return Deliveries(
        insert_message(db, cache, here, here, message, (), frozenset((realm,)), NOBODY)
        for realm, message in joined
    )


def group_history(db, cache, realm, name, reader, after_id, limit, max_bytes):
    name = require_member(db, realm, name, reader)
    return history(db, cache, group_mailbox(Address(name, realm)), after_id, limit, max_bytes)


def group_history_remote(db, cache, group, reader, after_id, limit, max_bytes):
    """The history of another realm's group as stored here, for a local member."""
    group = remote_group(db, group, reader)
    return history(db, cache, group_mailbox(group), after_id, limit, max_bytes)


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


def group_readers(db, realm, group, among=None):
    """
    The names of this realm's users who read group C{group} (an Address):
    its local members if the group is of this realm, else those its home
    announced.  C{among}: only these names are wanted (point lookups, not
    the whole member list, when they are few).
    """
    local = group.realm == realm
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
                f"SELECT member FROM remote_members WHERE group_key = ? AND member IN ({marks})",
                (str(group).lower(), *wanted),
            )
    elif local:
        rows = db.execute("SELECT member FROM members WHERE group_name = ?", (group.name,))
    else:
        rows = db.execute(
            "SELECT member FROM remote_members WHERE group_key = ?", (str(group).lower(),)
        )
    if not local:
        return [member for (member,) in rows]
    suffix = "@" + realm
    return [member[:-len(suffix)] for (member,) in rows if member.endswith(suffix)]


def leave_group(db, realm, name, member):
    """C{member} (an Address) leaves local group C{name}."""
    name = local_group(db, name)
    stored = member_as_stored(db, name, member, policy.member_in_any_case(realm, member))
    db.execute(
        "DELETE FROM members WHERE group_name = ? AND member = ?", (name, stored)
    )
    db.execute(
        "UPDATE group_realms SET members = members - 1 WHERE group_name = ? AND realm = ?",
        (name, member.realm),
    )
    db.execute("DELETE FROM group_realms WHERE group_name = ? AND members <= 0", (name,))
    if member.realm == realm:
        conversations.left(db, realm, address(stored).name, Address(name, realm))


def leave_remote_group(db, cache, realm, group, left):
    """
    Local user C{left.sender} leaves group C{group} of another realm: at
    once here, and the L{LEFT} message C{left} tells the group's home.
    """
    user = left.sender.name
    group = remote_group(db, group, user)
    db.execute(
        "DELETE FROM remote_members WHERE group_key = ? AND member = ?",
        (str(group).lower(), user),
    )
    count_remote(db, group.realm, "memberships", -1)
    conversations.left(db, realm, user, group)
    left = attrs.evolve(left, recipient=group)
    return insert_message(
        db, cache, realm, realm, left, (), policy.group_outbox(realm, realm, group), NOBODY
    )


def receive_joined(db, cache, realm, origin, message, most):
    """
    Home realm C{origin} added local user C{message.text} to its group
    C{message.recipient}: remember it (the message row keeps the frame
    from being applied twice).  L{errors.NoSuchUser} if there is no such
    user: the home realm then takes them out again.
    """
    name = local_user(db, cache, message.text)
    if name is None:
        raise errors.NoSuchUser(f"no user {message.text!r}")
    check_remote_room(db, origin, "memberships", 1, most)
    group = str(message.recipient)
    before = db.total_changes
    db.execute(
        "INSERT OR IGNORE INTO remote_members (group_key, group_address, member)"
        " VALUES (?, ?, ?)",
        (group.lower(), group, name),
    )
    count_remote(db, origin, "memberships", db.total_changes - before)
    delivery = insert_message(db, cache, realm, origin, message, (), NOWHERE, NOBODY)
    conversations.joined(db, realm, (name,), message.recipient, delivery.seq)
    return delivery


def receive_left(db, cache, realm, origin, message):
    """User C{message.sender} of realm C{origin} left local group C{message.recipient}."""
    leave_group(db, realm, message.recipient.name, message.sender)
    return insert_message(db, cache, realm, origin, message, (), NOWHERE, NOBODY)
