"""
Other realms' groups, as this realm keeps them for its users who are
members: which of its users are in which (C{remote_members}, with when
each membership began), each group's owner and whole roster as the home
announced them (C{remote_groups}, C{remote_rosters}), kept by the
frames the home sends (joined, member changes) and forgotten with the
last local member.  The home decides; this is its copy.
"""


from multirealm import errors
from multirealm.core import policy
from multirealm.core.policy import NOBODY, NOWHERE
from multirealm.model import ADDED, KNOWN, group_mailbox
from multirealm.names import Address
from multirealm.storage.queries import conversations
from multirealm.storage.queries.accounts import check_remote_room, count_remote, local_user
from multirealm.storage.queries.common import address, first_column
from multirealm.storage.queries.messages import history, insert_message


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


def remote_group_info(db, realm, group, reader):
    """
    (group, owner or None, members) of another realm's group as its home
    announced, for local member C{reader} (with this realm's members
    always: a group announced before rosters existed has no full list).
    """
    group = remote_group(db, group, reader)
    key = str(group).lower()
    owner = db.execute("SELECT owner FROM remote_groups WHERE group_key = ?", (key,)).fetchone()
    members = set(first_column(db, "SELECT member FROM remote_rosters WHERE group_key = ?", key))
    members.update(
        f"{m}@{realm}"
        for m in first_column(db, "SELECT member FROM remote_members WHERE group_key = ?", key)
    )
    return group, address(owner[0]) if owner else None, [address(m) for m in members]


def group_history_remote(db, cache, group, reader, after_id, limit, max_bytes, before_id=None):
    """The history of another realm's group as stored here, for a local member."""
    group = remote_group(db, group, reader)
    return history(db, cache, group_mailbox(group), after_id, limit, max_bytes, before_id)


def leave_remote_group(db, cache, realm, group, left):
    """
    Local user C{left.sender} leaves group C{group} of another realm: at
    once here, and the L{LEFT} message C{left} tells the group's home.
    """
    user = left.sender.name
    group = remote_group(db, group, user)
    _forget_member(db, cache, group, user, f"{user}@{realm}")
    left = left._replace(recipient=group)
    return insert_message(
        db, cache, realm, left, (), policy.group_outbox(realm, realm, group), NOBODY
    )


def receive_joined(db, cache, origin, message, most):
    """
    Home realm C{origin} added local user C{message.text} to its group
    C{message.recipient}: remember it (the message row keeps the frame
    from being applied twice).  L{errors.NoSuchUser} if there is no such
    user: the home realm then takes them out again.
    """
    name = local_user(db, cache, message.text)
    if name is None:
        raise errors.NoSuchUser(f"no user {message.text!r}")
    _join(db, cache, origin, message, name, most)
    # No history receives it; its user is named for the live event.
    return insert_message(db, cache, origin, message, (), NOWHERE, frozenset((name,)))


def receive_member(db, cache, realm, origin, message, most):
    """
    Home realm C{origin} tells that membership of its group
    C{message.recipient} changed (a MEMBER message): kept in this realm's
    copy of the group (its users' memberships and the whole roster, the
    roster only while a local user is a member).  An added local user
    who does not exist: L{errors.NoSuchUser}, and the home takes them out.
    """
    change, *names = message.text.split(" ")
    members = [Address.parse(name, origin) for name in names]
    group = message.recipient
    key = str(group).lower()
    local = NOBODY
    if change == ADDED and members[0].realm == realm:
        name = local_user(db, cache, members[0].name)
        if name is None:
            raise errors.NoSuchUser(f"no user {members[0].name!r}")
        members = [Address(name, realm)]
        local = frozenset((name,))
        _join(db, cache, origin, message, name, most)
    if change in (ADDED, KNOWN):
        has_members = db.execute(
            "SELECT 1 FROM remote_members WHERE group_key = ? LIMIT 1", (key,)
        ).fetchone()
        if has_members:
            db.execute(
                "INSERT INTO remote_groups (group_key, group_address, owner) VALUES (?, ?, ?)"
                " ON CONFLICT (group_key) DO UPDATE SET owner = excluded.owner",
                (key, str(group), str(message.sender)),
            )
            # This realm's users as registered, whatever spelling the home keeps.
            members = [
                m if m.realm != realm else Address(local_user(db, cache, m.name) or m.name, realm)
                for m in members
            ]
            check_remote_room(db, origin, "memberships", len(members), most)
            added = db.executemany(
                "INSERT INTO remote_rosters (group_key, member) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                [(key, str(m)) for m in members],
            ).rowcount
            count_remote(db, origin, "memberships", added)
    else:
        member = members[0]
        if member.realm == realm:
            row = db.execute(
                "SELECT member FROM remote_members WHERE group_key = ? AND member = ?"
                " COLLATE NOCASE", (key, member.name),
            ).fetchone()
            name = row[0] if row else member.name
            local = frozenset((name,))
            _forget_member(db, cache, group, name, f"{name}@{realm}")
        else:
            _forget_member(db, cache, group, None, str(member))
    return insert_message(db, cache, origin, message, (), NOWHERE, local)


def _forget_member(db, cache, group, name, member):
    """
    Local user C{name} (C{member}: user@realm) is no longer in group
    C{group} of another realm: with the last local member, this realm
    forgets the group's roster.
    """
    key = str(group).lower()
    gone = db.execute(
        "DELETE FROM remote_members WHERE group_key = ? AND member = ?", (key, name)
    ).rowcount
    if gone:
        conversations.left(db, cache, name, group)
    gone += db.execute(
        "DELETE FROM remote_rosters WHERE group_key = ? AND member = ? COLLATE NOCASE",
        (key, member),
    ).rowcount
    if db.execute("SELECT 1 FROM remote_members WHERE group_key = ? LIMIT 1", (key,)).fetchone():
        count_remote(db, group.realm, "memberships", -gone)
        return
    gone += db.execute("DELETE FROM remote_rosters WHERE group_key = ?", (key,)).rowcount
    db.execute("DELETE FROM remote_groups WHERE group_key = ?", (key,))
    count_remote(db, group.realm, "memberships", -gone)


def _join(db, cache, origin, message, name, most):
    """
    Local user C{name} is in group C{message.recipient} of realm C{origin}
    since C{message} (a joined or added notice) said so; a row its home
    fills, counted against its quota.
    """
    group = str(message.recipient)
    check_remote_room(db, origin, "memberships", 1, most)
    added = db.execute(
        "INSERT INTO remote_members (group_key, group_address, member, since)"
        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (group.lower(), group, name, message.timestamp),
    ).rowcount
    count_remote(db, origin, "memberships", added)
    conversations.joined(db, cache, name, message.recipient, message.timestamp)
