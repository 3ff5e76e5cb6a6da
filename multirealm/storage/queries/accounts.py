"""
Accounts: this realm's users and their sessions, and the users each peer
announced (with how far each peer has acknowledged ours).
"""

from multirealm import errors
from multirealm.core import policy
from multirealm.storage.queries.common import first_column


def create_user(db, name, password_hash, created):
    # Checked in the transaction of the insert: names are one identity in
    # any case, and an index that old databases may break cannot say so.
    taken = db.execute(
        "SELECT name FROM users WHERE name = ? COLLATE NOCASE LIMIT 1", (name,)
    ).fetchone()
    if taken is not None:
        raise errors.UserExists(f"user {taken[0]!r} already exists")
    db.execute(
        "INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?)",
        (name, password_hash, created),
    )


def password_hash(db, name):
    """(the user's name as registered, stored hash) of C{name} in any case, or None."""
    return db.execute(
        "SELECT name, password_hash FROM users WHERE name = ? COLLATE NOCASE"
        " ORDER BY name = ? DESC LIMIT 1",
        (name, name),
    ).fetchone()


def local_user(db, cache, name):
    """The name of local user C{name} (any case) as registered, or None."""
    known = cache.users.get(name)
    if known is not None:
        return known
    row = db.execute(
        "SELECT name FROM users WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
        (name, name),
    ).fetchone()
    if row is None:
        return None
    if len(cache.users) >= cache.MAX:
        cache.users.clear()
    cache.users[name] = row[0]
    return row[0]


def list_users(db, after, limit):
    return first_column(
        db, "SELECT name FROM users WHERE name > ? ORDER BY name LIMIT ?", after, limit
    )


def create_session(db, token_hash, user, expires, checked_hash=None):
    """
    Record a session of C{user}.  With C{checked_hash} (the password hash
    a login checked), only while it is still the user's: a passwd that
    committed since (and ended every other session) refuses this login.
    A locked user gets none (L{errors.Locked}), however they logged in.
    """
    if db.execute("SELECT 1 FROM locked_users WHERE name = ?", (user,)).fetchone():
        raise errors.Locked(f"user {user!r} is locked out of this realm: ask its operator")
    if checked_hash is None:
        db.execute(
            'INSERT INTO sessions (token_hash, "user", expires) VALUES (?, ?, ?)',
            (token_hash, user, expires),
        )
        return
    made = db.execute(
        'INSERT INTO sessions (token_hash, "user", expires) SELECT ?, ?, ?'
        " WHERE EXISTS (SELECT 1 FROM users WHERE name = ? AND password_hash = ?)",
        (token_hash, user, expires, user, checked_hash),
    ).rowcount
    if not made:
        raise errors.BadCredentials("the password changed meanwhile: log in with the new one")


def session_user(db, token_hash, now):
    row = db.execute(
        'SELECT "user", expires FROM sessions WHERE token_hash = ?', (token_hash,)
    ).fetchone()
    if row is None:
        return None
    if row[1] <= now:
        db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
        return None
    return row[0], row[1]


def delete_session(db, token_hash):
    return db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)).rowcount > 0


def end_sessions(db, user, keep_hash):
    """Every session of local user C{user} ends but C{keep_hash}'s (None: all)."""
    return db.execute(
        'DELETE FROM sessions WHERE "user" = ? AND token_hash IS NOT ?', (user, keep_hash)
    ).rowcount


def change_password(db, name, password_hash, keep_hash):
    """
    Local user C{name}'s password hash becomes C{password_hash}, and every
    session of theirs but C{keep_hash}'s ends.  Refused (nothing changed)
    if that session ended meanwhile: it is the one that asked.
    """
    kept = db.execute(
        'SELECT 1 FROM sessions WHERE token_hash = ? AND "user" = ?', (keep_hash, name)
    ).fetchone()
    if kept is None:
        raise errors.InvalidSession("your session has ended: log in again with auth")
    db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))
    end_sessions(db, name, keep_hash)


def purge_sessions(db, now):
    return db.execute("DELETE FROM sessions WHERE expires <= ?", (now,)).rowcount


# -- the users of other realms ---------------------------------------------


def list_remote_users(db, realm, after, limit):
    """The users of peer C{realm} as it announced them: as L{list_users}."""
    return first_column(
        db, "SELECT name FROM remote_users WHERE realm = ? AND name > ? ORDER BY name LIMIT ?",
        realm, after, limit,
    )


def users_to_announce(db, peer, limit):
    """
    (rowid, name) of up to C{limit} users C{peer} has not acknowledged
    yet, in the order they registered.
    """
    row = db.execute("SELECT up_to FROM announced_users WHERE realm = ?", (peer,)).fetchone()
    return db.execute(
        "SELECT rowid, name FROM users WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (row[0] if row else 0, limit),
    ).fetchall()


def users_announced(db, peer, up_to):
    """C{peer} acknowledged every user up to rowid C{up_to}."""
    db.execute(
        "INSERT INTO announced_users (realm, up_to) VALUES (?, ?)"
        " ON CONFLICT (realm) DO UPDATE"
        " SET up_to = CASE WHEN excluded.up_to > announced_users.up_to THEN excluded.up_to"
        " ELSE announced_users.up_to END",
        (peer, up_to),
    )


def check_remote_room(db, origin, column, wanted, most):
    """
    Refuse (L{errors.QuotaExceeded}) before anything changes if peer
    C{origin} would fill more than C{most} rows of C{column}'s table
    (counted in the transaction that adds them).
    """
    row = db.execute(f"SELECT {column} FROM remote_counts WHERE realm = ?", (origin,)).fetchone()
    policy.check_remote_room(origin, column, row[0] if row else 0, wanted, most)


def count_remote(db, origin, column, added):
    """Peer C{origin} filled C{added} more rows of C{column}'s table (or fewer)."""
    if added:
        db.execute(
            f"INSERT INTO remote_counts (realm, {column}) VALUES (?, ?)"
            f" ON CONFLICT (realm) DO UPDATE"
            f" SET {column} = remote_counts.{column} + excluded.{column}",
            (origin, added),
        )


def receive_users(db, origin, names, most):
    """Peer C{origin} announced its users C{names} (it fills at most C{most} rows)."""
    names = set(names)
    known = db.execute(
        "SELECT count(*) FROM remote_users WHERE realm = ? AND name IN"
        f" ({', '.join('?' * len(names))})",
        (origin, *names),
    ).fetchone()[0] if names else 0
    check_remote_room(db, origin, "users", len(names) - known, most)
    added = db.executemany(
        "INSERT INTO remote_users (realm, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(origin, name) for name in names],
    ).rowcount
    count_remote(db, origin, "users", added)
