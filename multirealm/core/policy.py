"""
The realm's rules as pure functions of facts: where a message goes
(fan-out), whose membership counts in which spelling, who may fetch a
file, how much one user or one peer may fill (quotas).

The core applies a rule itself when it has the facts before it asks the
store (L{fetchable}).  The store applies the others inside the
transaction of the write they guard, on facts read in that same
transaction: a check made apart, in an earlier transaction, could be
outrun by a write queued between the two (a member who left, a second
group created in the same batch, a retried frame).  Every engine of
L{multirealm.core.interfaces.IStore} calls these same functions, so each
rule is written once.
"""

from typing import NamedTuple

from multirealm import errors
from multirealm.model import GROUP, FileRef, user_mailbox

NOBODY = frozenset()  # no local users
NOWHERE = frozenset()  # no peer realms

# The most rows of remote users, and of remote memberships, one peer may
# fill: a peer speaks for its own users, it does not fill this realm's disk.
REMOTE_ROWS_PER_PEER = 1_000_000

# The most of a group's earlier messages queued for a realm that gets its
# first member: one addmember must not queue a million rows in one
# transaction (every sender waits for it) nor let an owner who adds and
# removes the same user flood a link.  The newest are sent.
HISTORY_FOR_A_NEW_REALM = 10_000


def private_route(realm, origin, message):
    """
    Where private message C{message} goes, its recipient spelled as
    registered: (names of the mailboxes whose history gets it, peer realms
    to queue it for, names of the local users it reaches).  Minted here
    (C{origin} is C{realm}): the sender's history, and the recipient's if
    local, else queued for the recipient's realm.  Handed over by a peer:
    the recipient's history only.
    """
    sender, recipient = message.sender, message.recipient
    if origin != realm:
        return (user_mailbox(recipient),), NOWHERE, frozenset((recipient.name,))
    if recipient.realm == realm:
        # A set: a note to oneself is in one history once.
        return ({user_mailbox(sender), user_mailbox(recipient)}, NOWHERE,
                frozenset((sender.name, recipient.name)))
    return (user_mailbox(sender),), frozenset((recipient.realm,)), frozenset((sender.name,))


def group_outbox(realm, origin, group, member_realms=NOWHERE):
    """
    The peer realms a message to C{group} (an Address) is queued for.  A
    group of this realm: once for each other realm with members
    (C{member_realms}), so the cost does not grow with the members; never
    back to C{origin}, which has it.  Another realm's group: its home,
    which checks membership again and forwards it, unless it came from
    there.
    """
    if group.realm == realm:
        return frozenset(member_realms) - {realm, origin}
    return NOWHERE if origin == group.realm else frozenset((group.realm,))


def member_in_any_case(realm, member):
    """
    Whether C{member} (an Address) is looked up in a member list in any
    case.  A member of another realm is listed as the group's creator
    wrote it (C{Heru@2}) while that realm names its user as registered
    (C{heru@2}); local members are listed as registered, and old local
    names that differ only in case stay apart.
    """
    return member.realm != realm


def check_groups_created(created, most):
    """A user who has created C{created} groups may create one more?"""
    if created >= most:
        raise errors.QuotaExceeded(
            f"you have created {created} groups, the most one user may create"
        )


def check_remote_room(origin, what, filled, wanted, most=REMOTE_ROWS_PER_PEER):
    """Peer C{origin} has C{filled} rows of C{what}: may it add C{wanted}?"""
    if filled + wanted > most:
        raise errors.QuotaExceeded(f"this realm keeps at most {most} {what} of realm {origin}")


class FileEntry(NamedTuple):
    """
    The facts L{fetchable} decides on, read by the store: the first
    message that carried a file, and whether the reader was among the
    members of its group when it was sent (C{listed}).  Addresses are
    qualified text (C{user@realm}), as stored.
    """

    file: FileRef
    kind: str
    sender: str
    recipient: str
    listed: bool


def fetchable(entry, reader):
    """
    The L{FileRef} of C{entry} if C{reader} (an Address) may fetch it: its
    sender, its private recipient, or one of the members its group had
    when it was sent (one who joins later may not, one who leaves still
    may).  L{errors.Forbidden} otherwise.
    """
    reader = str(reader)
    if entry.kind == GROUP:
        allowed = reader == entry.sender or entry.listed
    else:
        allowed = reader in (entry.sender, entry.recipient)
    if not allowed:
        raise errors.Forbidden("only the sender and the recipients may fetch this file")
    return entry.file
