"""
Presence: when local users were last online, and who a user's contacts
here are (those who get their presence events).
"""


def set_last_seen(db, stamps):
    """Local users went offline: C{stamps} is [(name as registered, timestamp)]."""
    db.executemany(
        'INSERT INTO last_seen ("user", at) VALUES (?, ?)'
        ' ON CONFLICT ("user") DO UPDATE SET at = excluded.at',
        stamps,
    )


def last_seen(db, names):
    """
    {name as asked: (name as registered, last_seen or None)} of the local
    users C{names} (any case); a name with no user is left out.
    """
    found = {}
    for name in names:
        row = db.execute(
            'SELECT name, (SELECT at FROM last_seen WHERE "user" = name) FROM users'
            " WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
            (name, name),
        ).fetchone()
        if row is not None:
            found[name] = row
    return found


def local_contacts(db, realm, person):
    """
    The names (as registered) of this realm's users who are contacts of
    C{person} (C{user@realm}, of this realm or another), C{person} left
    out: they share a group with them (a group of this realm by
    C{members}; a group of another realm by its roster as its home
    announced it, C{remote_rosters}, joined to this realm's members of it,
    C{remote_members}), or a private conversation
    (C{private_conversations}: one row per local user and peer, the peer
    keyed C{user@realm} as registered here, C{lower(user@realm)} for
    another realm's).

    Indexed reads only, never a scan of the users: C{members_by_member}
    (or C{members_by_folded_member}), C{remote_rosters_by_member} (in any
    case) and C{private_conversations_by_peer} lead
    from C{person} to their groups and conversations; the rows read are
    those groups' members.
    """
    suffix = "@" + realm
    names = set()
    # A member of another realm is listed as the group's creator wrote it
    # (HERU@2), and so is every member in a roster another realm announced:
    # matched in any case there (policy.member_in_any_case).
    in_any_case = "" if person.endswith(suffix) else " COLLATE NOCASE"
    for (member,) in db.execute(
        "SELECT DISTINCT them.member FROM members AS me"
        " JOIN members AS them ON them.group_name = me.group_name"
        " WHERE me.member = ?" + in_any_case,
        (person,),
    ):
        if member.endswith(suffix):
            names.add(member[:-len(suffix)])
    for (member,) in db.execute(
        "SELECT DISTINCT local.member FROM remote_rosters AS roster"
        " JOIN remote_members AS local ON local.group_key = roster.group_key"
        " WHERE roster.member = ? COLLATE NOCASE",
        (person,),
    ):
        names.add(member)
    names.update(
        row[0] for row in db.execute(
            'SELECT "user" FROM private_conversations WHERE peer = ?',
            (person if person.endswith(suffix) else person.lower(),),
        )
    )
    if person.endswith(suffix):
        names.discard(person[:-len(suffix)])
    return names
