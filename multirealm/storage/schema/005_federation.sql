-- A delivery failure is a message of kind 'failure' in its sender's
-- history: from the realm that refused ('@2'), naming the message that
-- failed and the refusal's code.  Columns added, not a new table: history
-- reads one row per entry whatever its kind.
ALTER TABLE messages ADD COLUMN failed_id TEXT;
ALTER TABLE messages ADD COLUMN failed_code TEXT;
-- Which users of this realm belong to which groups of other realms, as the
-- groups' home realms announced (federation): lets a member read the
-- group's history here, and post to it, while the link is down.
CREATE TABLE remote_members (
    group_key TEXT NOT NULL,       -- lower(group@home): names are one identity in any case
    group_address TEXT NOT NULL,   -- group@home as its home spells it
    member TEXT NOT NULL,          -- a local user, as registered
    PRIMARY KEY (group_key, member)
) WITHOUT ROWID;
-- The users of other realms, as each announced them (listusers <realm>).
CREATE TABLE remote_users (
    realm TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (realm, name)
) WITHOUT ROWID;
-- How far each peer has acknowledged this realm's user list: users are
-- never deleted, so the users' rowid is a cursor, and a realm added to the
-- network later still learns every user.
CREATE TABLE announced_users (
    realm TEXT PRIMARY KEY,
    up_to INTEGER NOT NULL
);
-- How many rows of remote_users and remote_members each peer has filled:
-- both are bounded per peer (a peer is trusted to speak for its own users,
-- not to fill this realm's disk).
CREATE TABLE remote_counts (
    realm TEXT PRIMARY KEY,
    users INTEGER NOT NULL DEFAULT 0,
    memberships INTEGER NOT NULL DEFAULT 0
);
-- A user's own groups (mygroups), here and on other realms.
CREATE INDEX members_by_member ON members (member);
CREATE INDEX remote_members_by_member ON remote_members (member);
