-- Names are one identity whatever their case: 'Alice' cannot be registered
-- when 'alice' exists, and lookups find either.  The indexes are not
-- UNIQUE because a database of an earlier release may hold both 'alice'
-- and 'Alice'; the code refuses new ones and prefers the exact spelling.
CREATE INDEX users_by_folded_name ON users (name COLLATE NOCASE);
CREATE INDEX groups_by_folded_name ON groups (name COLLATE NOCASE);
-- How many groups each user created (a per-user quota).
CREATE INDEX groups_by_creator ON groups (creator);
-- Members compared without case (bob@2 and Bob@2 are one member).
CREATE TABLE members_v3 (
    group_name TEXT NOT NULL COLLATE NOCASE,
    member TEXT NOT NULL COLLATE NOCASE,   -- qualified address, user@realm
    PRIMARY KEY (group_name, member)
) WITHOUT ROWID;
INSERT OR IGNORE INTO members_v3 SELECT group_name, member FROM members;
DROP TABLE members;
ALTER TABLE members_v3 RENAME TO members;
-- For each group, the realms that have members and how many: a message
-- is queued once per realm without reading the member list.
CREATE TABLE group_realms (
    group_name TEXT NOT NULL COLLATE NOCASE,
    realm TEXT NOT NULL COLLATE NOCASE,
    members INTEGER NOT NULL,
    PRIMARY KEY (group_name, realm)
) WITHOUT ROWID;
INSERT INTO group_realms
    SELECT group_name, substr(member, instr(member, '@') + 1), count(*)
    FROM members GROUP BY 1, 2;
