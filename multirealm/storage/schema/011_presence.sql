-- When each local user was last online (presence's last_seen): written
-- when their last subscribed connection ends.  No row: never seen since
-- this step.
CREATE TABLE last_seen (
    user TEXT PRIMARY KEY,         -- a local user, as registered
    at TEXT NOT NULL
) WITHOUT ROWID;
-- A user's contacts in other realms' groups (presence events): the
-- groups whose roster names them.
CREATE INDEX remote_rosters_by_member ON remote_rosters (member COLLATE NOCASE);
-- ... and in this realm's groups, a member of another realm in any case
-- (listed as the creator wrote it: HERU@2).
CREATE INDEX members_by_folded_member ON members (member COLLATE NOCASE);
-- A user's contacts by private conversation: the local users who have
-- them as a peer (a row's peer never changes: no cost per message).
CREATE INDEX private_conversations_by_peer ON private_conversations (peer);
