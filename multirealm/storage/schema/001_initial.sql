-- The schema of the first release (user_version 1).
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,   -- sha256 of the token: a stolen file holds no usable token
    user TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    creator TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE members (
    group_name TEXT NOT NULL,
    member TEXT NOT NULL,          -- qualified address, user@realm
    PRIMARY KEY (group_name, member)
) WITHOUT ROWID;
-- seq is the realm's own arrival order; messages are never deleted, so an
-- INTEGER PRIMARY KEY never reuses a value.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
-- One mailbox per conversation: 'user:alice@1' for a user's private
-- history, 'group:team@1' for a group's.
CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE
);
-- Which mailboxes a message appears in.  Keyed by the mailbox's number, not
-- its name: smaller index pages, fewer of them written per commit.
CREATE TABLE timeline (
    mailbox INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;
-- Messages waiting to be handed to another realm, written in the same
-- transaction as the message.
CREATE TABLE outbox (
    realm TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (realm, seq)
) WITHOUT ROWID;
