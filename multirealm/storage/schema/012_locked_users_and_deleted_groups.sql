-- An operator locks a user out (multirealm-admin lock): no login, and
-- every session of theirs ended in the transaction that locks.
CREATE TABLE locked_users (
    name TEXT PRIMARY KEY,         -- as registered
    locked TEXT NOT NULL           -- when
);

-- Groups an operator deleted (multirealm-admin deletegroup): their names
-- are never given again, since their history stays (unreachable) here
-- and in the copies member realms keep.
CREATE TABLE deleted_groups (
    name TEXT PRIMARY KEY,
    deleted TEXT NOT NULL
);
CREATE INDEX deleted_groups_by_folded_name ON deleted_groups (name COLLATE NOCASE);
