-- How much of a local group's history each other realm was sent, kept
-- when that realm's last member goes: adding one of its users again sends
-- only what came since, not the whole history once more.
CREATE TABLE history_sent (
    group_name TEXT NOT NULL,
    realm TEXT NOT NULL,
    up_to INTEGER NOT NULL,        -- the group's last message (seq) when the realm lost its members
    PRIMARY KEY (group_name, realm)
) WITHOUT ROWID;
