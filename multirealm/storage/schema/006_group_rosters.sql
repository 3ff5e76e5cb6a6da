-- Groups of other realms that have members here: their owner and whole
-- member list as their home announced (membergrouprealm frames), so that
-- groupinfo answers while the link is down.  Kept only while this realm
-- has members in the group.
CREATE TABLE remote_groups (
    group_key TEXT PRIMARY KEY,    -- lower(group@home)
    group_address TEXT NOT NULL,   -- group@home as its home spells it
    owner TEXT NOT NULL            -- user@home
);
CREATE TABLE remote_rosters (
    group_key TEXT NOT NULL,
    member TEXT NOT NULL,          -- user@realm
    PRIMARY KEY (group_key, member)
) WITHOUT ROWID;
