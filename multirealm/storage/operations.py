"""
Every operation of L{multirealm.core.interfaces.IStore}, the same on both
engines: each names its query (L{multirealm.storage.queries}) and submits
it to the engine's database thread (L{multirealm.storage.batching}).
"""

from multirealm.core import policy
from multirealm.storage.queries import (
    accounts, conversations, file_access, groups, messages, operator, outbox, presence,
    private_history, received, remote_groups, replication,
)
from multirealm.storage.queries.common import Later


def _limit(limit):
    """A listing's limit, -1 being all: PostgreSQL takes no LIMIT -1."""
    return 2**62 if limit < 0 else limit


class StoreOperations:
    """The IStore methods, for a class that has C{submit} and C{realm}."""

    # -- accounts and sessions ----------------------------------------------

    def create_user(self, name, password_hash, created):
        return self.submit(accounts.create_user, name, password_hash, created)

    def password_hash(self, name):
        return self.submit(accounts.password_hash, name, writes=False)

    def list_users(self, after="", limit=-1):
        return self.submit(accounts.list_users, after, _limit(limit), writes=False)

    def list_remote_users(self, realm, after="", limit=-1):
        return self.submit(
            accounts.list_remote_users, realm, after, _limit(limit), writes=False
        )

    def users_to_announce(self, peer, limit):
        return self.submit(accounts.users_to_announce, peer, limit, writes=False)

    def users_announced(self, peer, up_to):
        return self.submit(accounts.users_announced, peer, up_to)

    def receive_users(self, origin, names, most=policy.REMOTE_ROWS_PER_PEER):
        return self.submit(accounts.receive_users, origin, tuple(names), most)

    def create_session(self, token_hash, user, expires, checked_hash=None):
        return self.submit(accounts.create_session, token_hash, user, expires, checked_hash)

    def session_user(self, token_hash, now):
        return self.submit(accounts.session_user, token_hash, now)

    def delete_session(self, token_hash):
        return self.submit(accounts.delete_session, token_hash)

    def change_password(self, name, password_hash, keep_hash):
        return self.submit(accounts.change_password, name, password_hash, keep_hash)

    def purge_sessions(self, now):
        return self.submit(accounts.purge_sessions, now)

    # -- presence -----------------------------------------------------------

    def set_last_seen(self, stamps):
        return self.submit(presence.set_last_seen, tuple(stamps))

    def last_seen(self, names):
        return self.submit(presence.last_seen, tuple(names), writes=False)

    def local_contacts(self, person):
        return self.submit(presence.local_contacts, self.realm, str(person), writes=False)

    # -- messages -----------------------------------------------------------

    def add_private_message(self, message, then=None):
        return self._add(messages.add_private_message, message, then)

    def add_private_messages(self, messages_, then):
        return self.submit_run(
            then, len(messages_), messages.add_private_messages, self.thread_cache, self.realm,
            self.realm, messages_,
        )

    def add_group_message(self, message, then=None):
        return self._add(groups.add_group_message, message, then)

    def _add(self, function, message, then):
        """A message minted here: a Deferred of its Delivery, or (C{then}) a call with it."""
        if then is None:
            return self.submit(function, self.thread_cache, self.realm, self.realm, message)
        return self.submit_then(then, function, self.thread_cache, self.realm, self.realm, message)

    def receive_message(self, origin, message, most=policy.REMOTE_ROWS_PER_PEER, notice=None):
        return self.submit(
            received.receive_message, self.thread_cache, self.realm, origin, message, most,
            notice,
        )

    def receive_private_messages(self, origin, messages_, then):
        return self.submit_run(
            then, len(messages_), received.receive_private_messages, self.thread_cache,
            self.realm, origin, messages_,
        )

    def history(self, mailbox, after_id, limit, max_bytes=2**62, before_id=None):
        return self.submit(
            messages.history, self.thread_cache, mailbox, after_id, limit, max_bytes, before_id,
            writes=False,
        )

    def private_history(self, user, other, before_id, limit, max_bytes=2**62):
        return self._in_steps(
            private_history.private_history, self.thread_cache, self.realm, user, other,
            before_id, limit, max_bytes, writes=False,
        )

    # -- groups -------------------------------------------------------------

    def create_group(self, name, creator, members, created, max_created=2**62, joined=(),
                     roster=None):
        return self.submit(
            groups.create_group, self.thread_cache, name, creator, members, created, max_created,
            tuple(joined), roster,
        )

    def add_members(self, name, owner, members, notices, roster, most=2**62):
        return self.submit(
            groups.add_members, self.thread_cache, self.realm, name, owner, tuple(members),
            tuple(notices), roster, most,
        )

    def remove_members(self, name, owner, members, notices):
        return self.submit(
            groups.remove_members, self.thread_cache, self.realm, name, owner, tuple(members),
            tuple(notices),
        )

    def group_info(self, name, reader):
        return self.submit(groups.group_info, self.realm, name, reader, writes=False)

    def remote_group_info(self, group, reader):
        return self.submit(remote_groups.remote_group_info, self.realm, group, reader, writes=False)

    def groups_of(self, user, limit):
        return self.submit(groups.groups_of, self.realm, user, limit, writes=False)

    def group_readers(self, group, among=None, sent=None):
        return self.submit(groups.group_readers, self.realm, group, among, sent, writes=False)

    def remote_group_history(self, group, reader, after_id, limit, max_bytes=2**62,
                             before_id=None):
        return self.submit(
            remote_groups.group_history_remote, self.thread_cache, group, reader, after_id, limit,
            max_bytes, before_id, writes=False,
        )

    def leave_remote_group(self, group, left):
        return self.submit(
            remote_groups.leave_remote_group, self.thread_cache, self.realm, group, left
        )

    def group_history(self, name, reader, after_id, limit, max_bytes=2**62, before_id=None):
        return self.submit(
            groups.group_history, self.thread_cache, self.realm, name, reader, after_id, limit,
            max_bytes, before_id, writes=False,
        )

    def leave_group(self, name, member, notice=None):
        return self.submit(
            groups.leave_group, self.realm, name, member, self.thread_cache, notice
        )

    def list_groups(self, after="", limit=-1):
        return self.submit(groups.list_groups, after, _limit(limit), writes=False)

    # -- conversations --------------------------------------------------------

    def conversations(self, user, after, limit, max_bytes=2**62):
        return self.submit(
            conversations.conversations_of, self.realm, user, after, limit, max_bytes,
            writes=False,
        )

    def mark_read(self, user, other, message_id):
        return self._in_steps(
            conversations.mark_read, self.thread_cache, self.realm, user, other, message_id
        )

    def _in_steps(self, function, *args, writes=True):
        """L{submit}, and again each L{Later} it answers, in later batches."""
        def step(result):
            if isinstance(result, Later):
                return self.submit(result.function, *result.args, writes=writes).addCallback(step)
            return result

        return self.submit(function, *args, writes=writes).addCallback(step)

    # -- replication between the processes of one realm ----------------------

    def last_seq(self):
        return self.submit(replication.last_seq, writes=False)

    def deliveries_after(self, peers, after_seq, up_to, limit):
        return self.submit(
            replication.deliveries_after, self.thread_cache, self.realm, tuple(peers),
            after_seq, up_to, limit, writes=False,
        )

    # -- files --------------------------------------------------------------

    def file_ids(self):
        """Every file id that a stored message carries (for the sweep at start)."""
        return self.submit(file_access.file_ids, writes=False)

    def file_entry(self, file_id, reader):
        return self.submit(file_access.file_entry, file_id, reader, writes=False)

    # -- the outbox ---------------------------------------------------------

    def outbox_batch(self, peer, after_seq, limit, max_bytes=2**62):
        return self.submit(outbox.outbox_batch, peer, after_seq, limit, max_bytes, writes=False)

    def outbox_done(self, peer, seqs):
        return self.submit(outbox.outbox_done, peer, tuple(seqs))

    def pending_counts(self):
        return self.submit(outbox.pending_counts, writes=False)

    def record_failure(self, peer, seq, failure, removed=None, notice=None):
        return self.submit(
            outbox.record_failure, self.thread_cache, self.realm, peer, seq, failure, removed,
            notice,
        )

    # -- the operator (multirealm-admin) ------------------------------------

    def operator_users(self, now, after, limit):
        return self.submit(operator.users, now, after, limit, writes=False)

    def registered_name(self, name):
        return self.submit(operator.registered_name, name, writes=False)

    def set_locked(self, name, locked):
        return self.submit(operator.set_locked, name, locked)

    def reset_password(self, name, password_hash):
        return self.submit(operator.reset_password, name, password_hash)

    def group_roster(self, name):
        return self.submit(operator.group_roster, name, writes=False)

    def delete_group(self, name, creator, members, notices, deleted):
        return self.submit(
            operator.delete_group, self.thread_cache, self.realm, name, creator, tuple(members),
            tuple(notices), deleted,
        )
