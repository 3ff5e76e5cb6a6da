"""
What the realm's operator may do to it while it runs (the verbs of
C{multirealm-admin}, served by L{multirealm.admin.server}): list the
users, give one a new password, lock one out or let them in again,
delete a group, and see what waits for each peer.  No sockets, no SQL.

Sessions end as after C{passwd}: through L{Sessions.end_all_of}, so no
connection of the user goes on with one (the next request of each is
C{invalid_session}, and its event subscription ends at once).
"""

import secrets

from multirealm.core.realm import returns_deferred
from multirealm.model import MEMBER, REMOVED, format_timestamp
from multirealm.names import Address, check_name
from multirealm.logs import RealmLogger

log = RealmLogger()


class Operator:
    """
    @param realm: the L{multirealm.core.realm.Realm}.
    @param store: its L{multirealm.core.interfaces.IStore}.
    @param hasher: its L{multirealm.core.passwords.PasswordHasher}.
    """

    USERS_PAGE = 200  # users in one answer: well within an AMP value
    PASSWORD_BYTES = 12  # 96 random bits, 16 characters

    def __init__(self, realm, store, hasher):
        self.realm_name = realm.name  # what its log lines name
        self._realm = realm
        self._store = store
        self._hasher = hasher

    def users(self, after=""):
        """
        Fires with (users, more): up to L{USERS_PAGE} local users after
        C{after}, each a dict of name, locked, sessions (live now), created.
        """
        limit = self.USERS_PAGE

        def page(rows):
            users = [
                {"name": name, "locked": bool(locked), "sessions": sessions, "created": created}
                for name, locked, sessions, created in rows[:limit]
            ]
            return users, len(rows) > limit

        return self._store.operator_users(
            self._realm.clock.seconds(), after, limit + 1
        ).addCallback(page)

    async def _end_sessions(self, name, write):
        """Every session of C{name} ends, in C{write}'s transaction; their number."""
        ended = []
        await self._realm.sessions.end_all_of(
            name, None, lambda keep: write().addCallback(ended.append)
        )
        return ended[0]

    @returns_deferred
    async def reset_password(self, user):
        """A new random password for C{user}: fires with (name, password, sessions ended)."""
        name = await self._store.registered_name(user)
        password = secrets.token_urlsafe(self.PASSWORD_BYTES)
        password_hash = await self._hasher.hash(password)
        ended = await self._end_sessions(
            name, lambda: self._store.reset_password(name, password_hash)
        )
        log.info(
            "the operator reset the password of {user} on realm {realm} ({ended} sessions ended)",
            user=name, realm=self._realm.name, ended=ended,
        )
        return name, password, ended

    @returns_deferred
    async def lock(self, user):
        """C{user} may not log in; every session ends: fires with (name, sessions ended)."""
        name = await self._store.registered_name(user)
        ended = await self._end_sessions(name, lambda: self._store.set_locked(
            name, format_timestamp(self._realm.clock.seconds())
        ))
        log.info(
            "the operator locked {user} out of realm {realm} ({ended} sessions ended)",
            user=name, realm=self._realm.name, ended=ended,
        )
        return name, ended

    @returns_deferred
    async def unlock(self, user):
        """C{user} may log in again: fires with their name."""
        name = await self._store.registered_name(user)
        await self._store.set_locked(name, None)
        log.info("the operator unlocked {user} on realm {realm}", user=name, realm=self._realm.name)
        return name

    @returns_deferred
    async def delete_group(self, group):
        """
        Local group C{group} loses every member, as if its creator removed
        each (other realms learn it through their links), and is deleted;
        its name is never given again.  Fires with (name, members removed,
        the other realms told).
        """
        check_name(group, "group name")
        realm = self._realm
        name, creator, members = await self._store.group_roster(group)
        creator = Address.parse(creator, realm.name)
        members = [Address.parse(member, realm.name) for member in members]
        address = Address(name, realm.name)
        notices = [realm.new_message(MEMBER, creator.name, address, REMOVED) for _ in members]
        await self._store.delete_group(
            name, creator, members, notices, format_timestamp(realm.clock.seconds())
        )
        told = sorted({member.realm for member in members} - {realm.name})
        log.info(
            "the operator deleted group {group} of realm {realm} ({count} members removed)",
            group=name, realm=realm.name, count=len(members),
        )
        return name, len(members), told

    def queues(self):
        """Fires with each peer's link state and outbox (L{Realm.list_realms})."""
        return self._realm.list_realms()
