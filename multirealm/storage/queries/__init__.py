"""
The SQL of the store, one module per aggregate (as Synapse splits
C{storage/databases/main/}): L{accounts} (users, sessions, the users
peers announced), L{messages} (the message rows, mailboxes, history),
L{private_history} (one private conversation, paged backwards),
L{groups} (groups, members, posting to a group), L{remote_groups}
(this realm's copy of other realms' groups its users are in),
L{file_access} (who may fetch a file sent to a group), L{outbox} (what
waits for each peer), L{received} (what a peer hands over, stored
once).  L{common} holds what they share.  Nothing outside
this package writes SQL.

Every operation runs on the store's database thread inside a transaction
(L{multirealm.storage.store} batches and answers them) and takes the
sqlite3 connection first.  An operation refuses with a
L{multirealm.errors.ChatError} only before it changes any row, or
gathers one in the thread's cache to be written later
(L{messages.gather_message}); the store relies on that to run batches
without savepoints.

The decisions (who may post or fetch, where a message goes, quotas) are
the core's, in L{multirealm.core.policy}: an operation reads the facts and
asks the policy inside its transaction when the answer must hold
atomically with the write it guards.
"""
