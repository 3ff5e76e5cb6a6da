-- The whole schema as the numbered steps leave it, in one file to read.
-- New databases are still made by the steps; a test applies them to an
-- empty database and checks that they give exactly this (every table,
-- column, key and index): a new step updates this file in the same commit.
PRAGMA user_version = 13;

-- Accounts ------------------------------------------------------------

-- Names are one identity in any case ('Alice' cannot register when
-- 'alice' exists); the folded indexes are not UNIQUE because a database
-- of the first release may hold both, which stay distinct.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX users_by_folded_name ON users (name COLLATE NOCASE);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,   -- sha256 of the token: a stolen file holds no usable token
    user TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires);
CREATE INDEX sessions_by_user ON sessions (user);     -- passwd ends a user's other sessions

-- When each local user was last online (presence), written when their
-- last subscribed connection ends.
CREATE TABLE last_seen (
    user TEXT PRIMARY KEY,         -- a local user, as registered
    at TEXT NOT NULL
) WITHOUT ROWID;

-- Users an operator locked out (multirealm-admin lock): no login.
CREATE TABLE locked_users (
    name TEXT PRIMARY KEY,         -- as registered
    locked TEXT NOT NULL           -- when
);

-- The users of other realms, as each announced them (listusers <realm>).
CREATE TABLE remote_users (
    realm TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (realm, name)
) WITHOUT ROWID;

-- How far each peer has acknowledged this realm's users: users are never
-- deleted, so the users' rowid is a cursor.
CREATE TABLE announced_users (
    realm TEXT PRIMARY KEY,
    up_to INTEGER NOT NULL
);

-- Rows of remote_users and remote_members each peer has filled (bounded).
CREATE TABLE remote_counts (
    realm TEXT PRIMARY KEY,
    users INTEGER NOT NULL DEFAULT 0,
    memberships INTEGER NOT NULL DEFAULT 0
);

-- Messages ------------------------------------------------------------

-- seq is this realm's arrival order (never reused: messages are never
-- deleted).  A message is keyed by (id, origin), origin being the realm
-- that minted or handed it over.  A file message carries its file's
-- label, id and size; a delivery failure (kind 'failure') names the
-- message that failed and the refusal's code.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,            -- private, group, failure, joined, left
    sender TEXT NOT NULL,          -- user@realm
    recipient TEXT NOT NULL,       -- user@realm or group@realm
    body TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    file_name TEXT,
    file_id TEXT,
    file_size INTEGER,
    failed_id TEXT,
    failed_code TEXT,
    UNIQUE (id, origin)
);
CREATE INDEX messages_by_file ON messages (file_id) WHERE file_id IS NOT NULL;

-- One mailbox per conversation: 'user:alice@1' for a user's private
-- history, 'group:team@1' for a group's.
CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE
);

-- Which mailboxes a message appears in, by the mailbox's number: the
-- view timeline over two tables (step 013).  New rows go to the small
-- timeline_recent, whose pages a commit's messages share, and move on to
-- timeline_settled a range of mailboxes at a time
-- (multirealm.storage.queries.messages.stage_timeline).
CREATE TABLE timeline_settled (
    mailbox INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;
CREATE TABLE timeline_recent (
    mailbox INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;
CREATE VIEW timeline (mailbox, seq) AS
    SELECT mailbox, seq FROM timeline_settled UNION ALL SELECT mailbox, seq FROM timeline_recent;

-- Groups --------------------------------------------------------------

CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    creator TEXT NOT NULL,         -- user@realm
    created TEXT NOT NULL
);
CREATE INDEX groups_by_folded_name ON groups (name COLLATE NOCASE);
CREATE INDEX groups_by_creator ON groups (creator);   -- groups per creator (a quota)

-- Groups an operator deleted: their names are not given again (their
-- history stays, unreachable, here and in member realms' copies).
CREATE TABLE deleted_groups (
    name TEXT PRIMARY KEY,
    deleted TEXT NOT NULL
);
CREATE INDEX deleted_groups_by_folded_name ON deleted_groups (name COLLATE NOCASE);

CREATE TABLE members (
    group_name TEXT NOT NULL,
    member TEXT NOT NULL,          -- user@realm; local users as registered
    PRIMARY KEY (group_name, member)
) WITHOUT ROWID;
CREATE INDEX members_by_member ON members (member);
CREATE INDEX members_by_folded_member ON members (member COLLATE NOCASE);  -- contacts of another realm's user

-- For each group, the realms with members and how many: a message is
-- queued once per realm without reading the member list.
CREATE TABLE group_realms (
    group_name TEXT NOT NULL,
    realm TEXT NOT NULL,
    members INTEGER NOT NULL,
    PRIMARY KEY (group_name, realm)
) WITHOUT ROWID;

-- How much of a local group's history each other realm was sent, kept
-- when that realm's last member goes (adding one again sends only the rest).
CREATE TABLE history_sent (
    group_name TEXT NOT NULL,
    realm TEXT NOT NULL,
    up_to INTEGER NOT NULL,        -- the group's last message (seq) when the realm lost its members
    PRIMARY KEY (group_name, realm)
) WITHOUT ROWID;

-- This realm's users in groups of other realms, as their homes announced.
CREATE TABLE remote_members (
    group_key TEXT NOT NULL,       -- lower(group@home): names are one identity in any case
    group_address TEXT NOT NULL,   -- group@home as its home spells it
    member TEXT NOT NULL,          -- a local user, as registered
    since TEXT,                    -- when the home says it began (NULL: kept before step 009)
    PRIMARY KEY (group_key, member)
) WITHOUT ROWID;
CREATE INDEX remote_members_by_member ON remote_members (member);

-- Groups of other realms with members here: owner and whole member list
-- as their home announced (groupinfo while the link is down).
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
CREATE INDEX remote_rosters_by_member ON remote_rosters (member COLLATE NOCASE);  -- contacts (presence)

-- Conversations ---------------------------------------------------------

-- Counters kept with each message and membership change, so that
-- conversations and markread never scan a history:
-- unread = received - read (private), posts - read (group).

-- One row per local user and private peer: the other party of each
-- message in the user's private history (a delivery failure's is its
-- sender, the refusing realm @realm).
CREATE TABLE private_conversations (
    user TEXT NOT NULL,            -- a local user, as registered
    peer TEXT NOT NULL,            -- user@realm: as registered here, lower(user@realm) for another realm's
    last_seq INTEGER NOT NULL,     -- the conversation's last message
    read_seq INTEGER NOT NULL,     -- the read marker: read up to this seq
    received INTEGER NOT NULL,     -- messages from the peer, ever
    read INTEGER NOT NULL,         -- of those, how many are at or before the marker
    PRIMARY KEY (user, peer)
) WITHOUT ROWID;
-- No index by last_seq: each message would move two entries of it (the
-- dearest part of the bookkeeping, measured); a page sorts the user's rows,
-- which lie together in the primary key.
CREATE INDEX private_conversations_by_peer ON private_conversations (peer);  -- contacts (presence)

-- One row per group mailbox (this realm's groups, and its copies of other
-- realms'): every message of its history counts.
CREATE TABLE group_activity (
    mailbox INTEGER PRIMARY KEY,   -- mailboxes.id
    posts INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,     -- 0: no post yet
    joined TEXT                    -- another realm's group: when a local user last joined, as its home stamped it
);

-- Each local member's marker in a group, made when they join (read: the
-- posts so far) and deleted when they leave.
CREATE TABLE group_markers (
    user TEXT NOT NULL,            -- a local user, as registered
    mailbox INTEGER NOT NULL,      -- the group's mailboxes.id
    read_seq INTEGER NOT NULL,
    read INTEGER NOT NULL,         -- posts at or before the marker
    since INTEGER NOT NULL,        -- the join's place in the order (the last seq then)
    PRIMARY KEY (user, mailbox)
) WITHOUT ROWID;
CREATE INDEX group_markers_by_mailbox ON group_markers (mailbox);

-- Files ---------------------------------------------------------------

-- Who may fetch a file sent to a group: its members when it was sent.
CREATE TABLE file_readers (
    file_id TEXT NOT NULL,
    reader TEXT NOT NULL,          -- user@realm
    PRIMARY KEY (file_id, reader)
) WITHOUT ROWID;

-- Outbox --------------------------------------------------------------

-- Messages waiting for another realm, written in the message's transaction.
CREATE TABLE outbox (
    realm TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (realm, seq)
) WITHOUT ROWID;
