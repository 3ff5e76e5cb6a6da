"""
What the realm's operator does (multirealm-admin): list the users with
their state, lock or unlock one, give one a new password, delete a group.
"""

from multirealm import errors
from multirealm.storage.queries.accounts import end_sessions
from multirealm.storage.queries.common import first_column
from multirealm.storage.queries.groups import local_group, remove_members


def users(db, now, after, limit):
    """(name, locked, live sessions, created) of up to C{limit} users after C{after}."""
    return db.execute(
        "SELECT name,"
        " CASE WHEN EXISTS (SELECT 1 FROM locked_users l WHERE l.name = users.name)"
        " THEN 1 ELSE 0 END,"
        ' (SELECT count(*) FROM sessions s WHERE s."user" = users.name AND s.expires > ?),'
        " created FROM users WHERE name > ? ORDER BY name LIMIT ?",
        (now, after, limit),
    ).fetchall()


def registered_name(db, name):
    """The name of local user C{name} (any case) as registered; L{errors.NoSuchUser}."""
    row = db.execute(
        "SELECT name FROM users WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
        (name, name),
    ).fetchone()
    if row is None:
        raise errors.NoSuchUser(f"no user {name!r}")
    return row[0]


def set_locked(db, name, locked):
    """
    Lock local user C{name} (C{locked}: when) or, with None, unlock them;
    locking ends every session of theirs.  Returns the number ended.
    """
    if locked is None:
        db.execute("DELETE FROM locked_users WHERE name = ?", (name,))
        return 0
    db.execute(
        "INSERT INTO locked_users (name, locked) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (name, locked),
    )
    return end_sessions(db, name, None)


def reset_password(db, name, password_hash):
    """Local user C{name}'s password hash is C{password_hash}; every session ends."""
    db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))
    return end_sessions(db, name, None)


def members_of(db, name):
    return first_column(db, "SELECT member FROM members WHERE group_name = ?", name)


def group_roster(db, name):
    """(name as created, creator, member addresses as text) of local group C{name}."""
    name = local_group(db, name)
    creator = db.execute("SELECT creator FROM groups WHERE name = ?", (name,)).fetchone()[0]
    return name, creator, members_of(db, name)


def delete_group(db, cache, realm, name, creator, members, notices, deleted):
    """
    Local group C{name} loses every member through the path of
    C{removemember} by its creator (each notice queued for the realms that
    had members, so they learn it through their links), then is deleted;
    its name is kept in C{deleted_groups}, never given again.  Refused
    (nothing changed) if a member was added since C{members} was read.
    """
    removed = remove_members(db, cache, realm, name, creator, members, notices)
    if members_of(db, name):
        raise errors.Unavailable(f"group {name!r} changed meanwhile: try again")
    db.execute("DELETE FROM groups WHERE name = ?", (name,))
    db.execute("DELETE FROM history_sent WHERE group_name = ?", (name,))
    db.execute("INSERT INTO deleted_groups (name, deleted) VALUES (?, ?)", (name, deleted))
    return removed
