-- When each local user was last online (presence's last_seen): written
-- when their last subscribed connection ends.  No row: never seen since
-- this step.
CREATE TABLE last_seen (
    user TEXT PRIMARY KEY,         -- a local user, as registered
    at TEXT NOT NULL
) WITHOUT ROWID;
-- A user's contacts in other realms' groups (presence events): the
-- groups whose roster names them.
CREATE INDEX remote_rosters_by_member ON remote_rosters (member);
