-- Names are one identity whatever their case: 'Alice' cannot be registered
-- when 'alice' exists, and lookups find either.  The indexes are not
-- UNIQUE because a database of an earlier release may hold both 'alice'
-- and 'Alice' (or groups 'team' and 'Team'): those stay distinct, the code
-- refuses new ones and prefers the exact spelling.  Members keep the
-- spelling given (local users as registered), so no two old identities
-- are merged.
CREATE INDEX users_by_folded_name ON users (name COLLATE NOCASE);
CREATE INDEX groups_by_folded_name ON groups (name COLLATE NOCASE);
-- How many groups each user created (a per-user quota).
CREATE INDEX groups_by_creator ON groups (creator);
-- The hourly purge of expired sessions.
CREATE INDEX sessions_by_expiry ON sessions (expires);
-- For each group, the realms that have members and how many: a message
-- is queued once per realm without reading the member list.
CREATE TABLE group_realms (
    group_name TEXT NOT NULL,
    realm TEXT NOT NULL,
    members INTEGER NOT NULL,
    PRIMARY KEY (group_name, realm)
) WITHOUT ROWID;
INSERT INTO group_realms
    SELECT group_name, substr(member, instr(member, '@') + 1), count(*)
    FROM members GROUP BY 1, 2;
