"""
What the core expects of the adapters around it: the store (L{IStore}) and
the subscribers of the notifier (L{IMessageObserver}).
"""

from zope.interface import Attribute, Interface


class IMessageObserver(Interface):
    """Hears of every message a realm stores, after its commit."""

    def messages_committed(deliveries):
        """
        The L{multirealm.model.Delivery} values of C{deliveries} (a
        sequence, in commit order: the new messages of one store
        operation, a run's all together) were committed.  Called on the
        reactor thread, in commit order, once for each stored message;
        never for a duplicate or for a message whose transaction rolled
        back.  One call for many messages: what an observer does once (a
        check that nobody listens) is done once a run, not once a message
        (issue 18).  Must not block; its return value is ignored.
        """


class IStore(Interface):
    """
    Durable state of one realm.  Every method returns a Deferred that fires
    once the effect is committed; refusals fail with an
    L{multirealm.errors.ChatError}.  Addresses are
    L{multirealm.names.Address} values, stored qualified (C{user@realm}).
    The rules an operation must apply atomically with its write (where a
    message goes, membership, quotas) are L{multirealm.core.policy}'s:
    every engine calls those functions inside its transactions.
    """

    def start():
        """Start serving operations."""

    def stop():
        """Finish queued operations, close; Deferred fires when done."""

    def report_deliveries_to(listener):
        """
        Call C{listener(deliveries)} with the Deliveries of the messages
        each operation stored (a sequence, in commit order), once its
        transaction has committed, just before that operation's Deferred
        fires (after those of the operations before it); never for a
        duplicate or for anything rolled back.  A later call replaces the
        listener.
        """

    commit_operations = Attribute(
        "A L{multirealm.core.metrics.Histogram} of the operations in each committed"
        " transaction (GET /metrics)."
    )
    commit_seconds = Attribute(
        "A L{multirealm.core.metrics.Histogram} of each committed transaction's seconds."
    )

    def create_user(name, password_hash, created):
        """Add a local user; L{errors.UserExists} if taken."""

    def password_hash(name):
        """
        (name as registered, stored hash) of local user C{name}, looked up
        without case, or None.
        """

    def list_users(after="", limit=-1):
        """
        Sorted names of this realm's users, those after C{after} only, at
        most C{limit} of them (-1: all).
        """

    def list_remote_users(realm, after="", limit=-1):
        """As L{list_users}, for the users peer C{realm} announced."""

    def users_to_announce(peer, limit):
        """
        [(cursor, name)] of up to C{limit} local users not yet
        acknowledged by C{peer}, in the order they registered.
        """

    def users_announced(peer, up_to):
        """C{peer} acknowledged every local user up to cursor C{up_to}."""

    def receive_users(origin, names, most):
        """
        Peer C{origin} announced its users C{names} (kept, once each);
        L{errors.QuotaExceeded} if it would fill more than C{most} rows.
        """

    def create_session(token_hash, user, expires, checked_hash=None):
        """
        Record a session of C{user} valid until C{expires} (epoch s); with
        C{checked_hash}, only if that is still the user's password hash
        (else L{errors.BadCredentials}): a login never outlives a passwd.
        """

    def session_user(token_hash, now):
        """(user, expires) of a live session, or None (an expired one is removed)."""

    def delete_session(token_hash):
        """End a session; True if it existed."""

    def change_password(name, password_hash, keep_hash):
        """
        Local user C{name}'s password hash becomes C{password_hash}, and
        every session of theirs but the one of hash C{keep_hash} ends, in
        one transaction; L{errors.InvalidSession} (nothing changed) if that
        one has ended.
        """

    def purge_sessions(now):
        """Remove every session expired by C{now}; fires with how many."""

    def set_last_seen(stamps):
        """Local users went offline: C{stamps} is [(name as registered, timestamp)]."""

    def last_seen(names):
        """
        {name as asked: (name as registered, last_seen or None)} of the
        local users C{names} (any case); a name with no user is left out.
        """

    def local_contacts(person):
        """
        The names of this realm's users who share a group or a private
        conversation with C{person} (an Address, of this realm or
        another), C{person} left out; indexed reads, never a scan of users.
        """

    def add_private_message(message, then=None):
        """
        Store a private message minted here in the history of each party of
        this realm, and queue it for the recipient's realm if that is
        another; fires with a L{multirealm.model.Delivery}.  A recipient of
        this realm must exist (L{errors.NoSuchUser}).

        With C{then}, returns None and calls C{then} once, on the reactor
        thread, with the Delivery or a L{twisted.python.failure.Failure}
        instead (the send path: no Deferred a message).
        """

    def add_private_messages(messages, then):
        """
        L{add_private_message} for each of C{messages}, a run one connection
        sent, in one operation; calls C{then} once, on the reactor thread,
        with a L{multirealm.model.Sent} (each message's Delivery or the
        L{errors.ChatError} that refused it alone) or, if the run could
        not be stored, a Failure.
        """

    def add_group_message(message, then=None):
        """
        Store a group message minted here; fires with a
        L{multirealm.model.Delivery} (or calls C{then}, as
        L{add_private_message}).  For a group of this realm: the group
        must exist (L{errors.NoSuchGroup}) and have the sender as a member
        (L{errors.NotAMember}); the message goes into its history and is
        queued once for every other realm with members.  For a group of
        another realm: it goes into this realm's copy of that group's
        history and is queued for the group's realm.
        """

    def receive_private_messages(origin, messages, then):
        """
        L{receive_message} for each of C{messages}, private messages that
        peer realm C{origin} handed over in one read of its link, in one
        operation; calls C{then} once, on the reactor thread, with a
        L{multirealm.model.Sent} (each message's Delivery, C{duplicate} or
        not, or the L{errors.ChatError} that refused it alone) or, if the
        run could not be stored, a Failure.
        """

    def receive_message(origin, message, most, notice=None):
        """
        Store a message that peer realm C{origin} handed over, keeping its
        id and timestamp; fires with a L{multirealm.model.Delivery}.  Keyed
        by (C{origin}, id): a second delivery stores nothing and reports
        C{duplicate}.  A private message goes to its local recipient
        (L{errors.NoSuchUser}); a message to a group of this realm needs a
        member sender and is queued for every other realm with members
        except C{origin}; a message to a group of C{origin} goes into this
        realm's copy of its history.  A L{multirealm.model.JOINED} from a
        group's home is kept as long as C{origin} fills at most C{most}
        memberships (L{errors.QuotaExceeded}); so is a
        L{multirealm.model.MEMBER} change, kept in this realm's copy of the
        group's membership.  A L{multirealm.model.LEFT} sends C{notice} (a
        MEMBER message) on to every realm with members.
        """

    def history(mailbox, after_id, limit, max_bytes, before_id=None):
        """
        A L{multirealm.model.History} page of C{mailbox} (named by
        L{multirealm.model.user_mailbox} or L{multirealm.model.group_mailbox}):
        without C{after_id} its newest C{limit} messages (before
        C{before_id} if given), with it the oldest
        C{limit} after that id, fewer if their reply would take more than
        C{max_bytes} (L{multirealm.wire.message_bytes}; at least one);
        L{errors.BadRequest} for an unknown id.
        """

    def create_group(name, creator, members, created, max_created, joined=(), roster=None):
        """
        Create local group C{name} (L{errors.GroupExists} if taken in any
        case); C{members} (addresses, the creator among them) whose realm is
        C{creator.realm} must be users here; L{errors.QuotaExceeded} if
        C{creator} has created C{max_created} groups already.  C{joined}:
        (realm, L{multirealm.model.JOINED} message) pairs queued with it,
        telling other realms which of their users were added; C{roster}:
        the MEMBER message whose KNOWN copies then list every member to them.
        """

    def add_members(name, owner, members, notices, roster, most):
        """
        Owner C{owner} (an Address) adds C{members} (Addresses) to local
        group C{name}: L{errors.Forbidden} for another member,
        L{errors.NotAMember} for a non-member, L{errors.NoSuchUser} for an
        unknown local user, L{errors.QuotaExceeded} past C{most} members.
        One already a member is left as is.  Each one added sends its
        C{notices} MEMBER message (same place) to every realm with members;
        a realm with its first member also gets C{roster}'s KNOWN copies.
        Fires with the L{multirealm.model.Deliveries}.
        """

    def remove_members(name, owner, members, notices):
        """As L{add_members}, taking C{members} out (a non-member is left as is)."""

    def group_info(name, reader):
        """(name, creator, members) of local group C{name} for member C{reader}."""

    def remote_group_info(group, reader):
        """
        (group, owner or None, members) of group C{group} of another realm
        as its home announced, for local member C{reader} (a name).
        """

    def groups_of(user, limit):
        """
        The groups local user C{user} is in (at most C{limit} of each
        kind): this realm's by name, the others' as C{group@home}.
        """

    def group_readers(group, among=None, sent=None):
        """
        The names of this realm's users who read group C{group} (an
        Address): its members here, or, for a group of another realm, the
        ones its home announced (with C{sent}, a message's timestamp: who
        were members then); only those in C{among} if given.
        """

    def conversations(user, after, limit, max_bytes):
        """
        Fires with ([(Address, kind, last L{multirealm.model.Message} or
        None, unread)], more): at most C{limit} of local user C{user}'s
        conversations (fewer if their reply would pass C{max_bytes}),
        newest activity first, after the one with C{after} (an Address, or
        None for the first page); from counters kept with each message,
        never from a history.  L{errors.BadRequest} for an unknown C{after}.
        """

    def mark_read(user, other, message_id):
        """
        Move C{user}'s read marker in the conversation with C{other} (an
        Address) forward to message C{message_id}; fires with (the
        conversation's Address, whether the marker moved).
        L{errors.NotAMember} for a group C{user} is not in,
        L{errors.BadRequest} if the conversation holds no such message.
        """

    def private_history(user, other, before_id, limit, max_bytes):
        """
        A L{multirealm.model.History} page of local C{user}'s private
        conversation with C{other} (an Address; C{@realm}: that realm's
        delivery failures): its newest messages, or the newest before
        C{before_id}; C{more} if older ones exist.  L{errors.BadRequest}
        if the conversation does not hold C{before_id}.
        """

    def remote_group_history(group, reader, after_id, limit, max_bytes, before_id=None):
        """
        A L{multirealm.model.History} page of group C{group} of another
        realm (an Address) as stored here, if local user C{reader} is a
        member as its home announced; L{errors.NotAMember} otherwise.
        """

    def leave_remote_group(group, left):
        """
        Local user C{left.sender} leaves C{group} of another realm: here at
        once, and the L{multirealm.model.LEFT} message C{left} is queued
        for the group's home.  Fires with its Delivery.
        """

    def group_history(name, reader, after_id, limit, max_bytes, before_id=None):
        """
        L{history} of local group C{name}, if C{reader} (an address) is a
        member: L{errors.NoSuchGroup} / L{errors.NotAMember} otherwise.
        """

    def leave_group(name, member, notice=None):
        """
        Remove C{member} from local group C{name}; C{notice} (a MEMBER
        message) tells every realm that had members (its Delivery).
        """

    def list_groups(after="", limit=-1):
        """Sorted names of this realm's groups; as L{list_users}."""

    def last_seq():
        """The seq of the newest message stored (0: none)."""

    def deliveries_after(peers, after_seq, up_to, limit):
        """
        The L{multirealm.model.Delivery} of each message stored with
        C{after_seq} < seq <= C{up_to} (None: no bound), oldest first, at
        most C{limit}, as its operation reported it (another process's,
        L{multirealm.core.cluster}): C{queued_for} the C{peers} whose
        outbox still holds it.
        """

    def file_entry(file_id, reader):
        """
        The L{multirealm.core.policy.FileEntry} of stored file C{file_id}
        for C{reader} (an address): its first message, and whether
        C{reader} was a member of its group when it was sent;
        L{errors.NoSuchFile} if no message carries it.
        """

    def outbox_batch(peer, after_seq, limit, max_bytes=2**62):
        """
        (entries, complete): up to C{limit} (seq, L{multirealm.model.Message})
        waiting for realm C{peer} after C{after_seq}, oldest first, stopping
        after the one whose text reaches C{max_bytes} in all; C{complete} if
        they are all there is.
        """

    def outbox_done(peer, seqs):
        """Forget the outbox entries of C{peer} numbered C{seqs} (answered)."""

    def pending_counts():
        """{realm: (messages waiting in its outbox, timestamp of the oldest)}."""

    def record_failure(peer, seq, failure, removed=None, notice=None):
        """
        C{peer} refused outbox entry C{seq} for good: forget it and store
        the L{multirealm.model.FAILURE} message C{failure} in its
        recipient's (the failed message's sender's) history, atomically.
        C{removed}: an Address that C{peer} refused to add to the group of
        that entry (a L{multirealm.model.JOINED} or an added MEMBER), taken
        out of it, C{notice} telling the realms with members.  Fires with
        its Delivery (or Deliveries).
        """

    # -- the operator (multirealm-admin) --

    def operator_users(now, after, limit):
        """
        [(name, locked, sessions live at C{now}, created)] of up to
        C{limit} local users after C{after}, by name.
        """

    def registered_name(name):
        """Local user C{name} (any case) as registered; L{errors.NoSuchUser}."""

    def set_locked(name, locked):
        """
        Lock local user C{name} (as registered) at C{locked} (a timestamp)
        or, with None, unlock them; locking ends every session of theirs in
        the same transaction.  Fires with the number of sessions ended.
        """

    def reset_password(name, password_hash):
        """User C{name}'s hash becomes C{password_hash}; every session ends (their number)."""

    def group_roster(name):
        """(name as created, creator, [member as text]) of local group C{name}."""

    def delete_group(name, creator, members, notices, deleted):
        """
        Local group C{name} loses C{members} as if its creator removed them
        (one MEMBER notice each, queued for the realms with members), then
        is deleted and its name never given again; L{errors.Unavailable}
        (nothing changed) if it has members beyond C{members}.  Fires with
        the notices' Deliveries.
        """


class ILeases(Interface):
    """
    Named leases shared by the processes of one realm: a lease is held by
    one process at a time (the outbox to a peer is drained by its holder
    alone).  Methods are called on the reactor thread.
    """

    shared = Attribute(
        "Whether other processes take these leases too (else this one holds every lease,"
        " and the log does not say so)."
    )

    def start():
        """Start serving."""

    def stop():
        """Release every lease held; Deferred fires when done."""

    def acquire(name, lost):
        """
        Try to take lease C{name} now.  Deferred firing True (held: until
        L{release}, unless C{lost(why)} is called first, once, when it is
        lost) or False (another process holds it); it fails when that
        cannot be told now (the caller tries again later).
        """

    def release(name):
        """Let go of lease C{name}; Deferred."""

class IClusterReceiver(Interface):
    """What hears the other processes of a realm (L{IClusterBus})."""

    def received(process, text):
        """Process C{process} (its bus id) published C{text}; on the reactor thread."""

    def lost():
        """
        The bus has just lost touch with the others (a broken connection):
        until L{missed}, what they publish is not heard.
        """

    def missed():
        """
        The bus lost touch with the others (a broken connection, now back):
        what was published meanwhile, either way, may be lost.
        """


class IClusterBus(Interface):
    """
    A channel shared by every process of one realm: each payload one
    process publishes reaches every other one (never itself), in the
    order published, at most once.  Payloads are short text (ids, not
    bodies): at most L{MAX_BYTES} bytes of UTF-8.
    """

    process = Attribute("This process's id on the bus: short text, no spaces.")
    MAX_BYTES = Attribute("The most bytes of one payload.")

    def start(receiver):
        """Start listening; C{receiver} (an L{IClusterReceiver}) hears the others."""

    def publish(text):
        """
        Send C{text} to the other processes, later (never blocks); ValueError
        if longer than L{MAX_BYTES}.
        """

    def stop():
        """Stop; a Deferred that fires once the bus is closed."""
