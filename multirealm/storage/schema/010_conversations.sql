-- Conversations and read markers (conversations, markread), kept in the
-- transaction of each message and membership change so that listing them
-- and moving a marker never scan a history.  unread = received - read
-- (private) or posts - read (group): counters, not a row per message.

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

-- Existing databases, once (temp.this_realm names the realm): a user's
-- marker in a conversation is their own last message there (sending one
-- moves it), so what others wrote after it is unread; a membership made
-- before this step is ordered as the oldest activity.
CREATE TEMP TABLE private_entries AS
SELECT user, seq, own,
       CASE WHEN substr(other, -1 - length(realm)) = '@' || realm THEN other ELSE lower(other) END
           AS peer
FROM (
    SELECT substr(b.me, 1, length(b.me) - 1 - length(r.name)) AS user, r.name AS realm,
           t.seq AS seq, m.sender = b.me AS own,
           CASE WHEN m.sender = b.me THEN m.recipient ELSE m.sender END AS other
    FROM temp.this_realm r
    JOIN (SELECT id, substr(owner, 6) AS me FROM mailboxes WHERE owner LIKE 'user:%') b
    JOIN timeline t ON t.mailbox = b.id
    JOIN messages m ON m.seq = t.seq
    WHERE m.kind IN ('private', 'failure') AND r.name IS NOT NULL
);
CREATE TEMP TABLE private_marks AS
SELECT user, peer, max(CASE WHEN own THEN seq ELSE 0 END) AS read_seq
FROM private_entries GROUP BY user, peer;
INSERT INTO private_conversations (user, peer, last_seq, read_seq, received, read)
SELECT e.user, e.peer, max(e.seq), k.read_seq, sum(NOT e.own), sum(NOT e.own AND e.seq < k.read_seq)
FROM private_entries e JOIN private_marks k ON k.user = e.user AND k.peer = e.peer
GROUP BY e.user, e.peer;
DROP TABLE private_entries;
DROP TABLE private_marks;

INSERT INTO group_activity (mailbox, posts, last_seq)
SELECT t.mailbox, count(*), max(t.seq)
FROM mailboxes b JOIN timeline t ON t.mailbox = b.id
WHERE b.owner LIKE 'group:%' GROUP BY t.mailbox;

-- Every membership of a local user: in this realm's groups, and in other
-- realms' as their homes announced.
CREATE TEMP TABLE memberships AS
SELECT substr(m.member, 1, length(m.member) - 1 - length(r.name)) AS user, m.member AS address,
       'group:' || m.group_name || '@' || r.name AS owner
FROM temp.this_realm r JOIN members m ON substr(m.member, -1 - length(r.name)) = '@' || r.name
UNION ALL
SELECT m.member, m.member || '@' || r.name, 'group:' || m.group_address
FROM temp.this_realm r JOIN remote_members m;
INSERT OR IGNORE INTO mailboxes (owner) SELECT DISTINCT owner FROM memberships;
INSERT INTO group_activity (mailbox, posts, last_seq, joined)
SELECT b.id, 0, 0, max(m.since) FROM remote_members m
JOIN mailboxes b ON b.owner = 'group:' || m.group_address
WHERE m.since IS NOT NULL GROUP BY b.id
ON CONFLICT (mailbox) DO UPDATE SET joined = excluded.joined;
-- Each sender's last post in each group, and its rank there (the posts so far).
CREATE TEMP TABLE own_last AS
SELECT mailbox, sender, max(seq) AS seq, max(n) AS n FROM (
    SELECT t.mailbox, p.sender, t.seq, row_number() OVER (PARTITION BY t.mailbox ORDER BY t.seq) AS n
    FROM mailboxes b JOIN timeline t ON t.mailbox = b.id JOIN messages p ON p.seq = t.seq
    WHERE b.owner LIKE 'group:%'
) GROUP BY mailbox, sender;
CREATE INDEX temp.own_last_by_sender ON own_last (mailbox, sender);
INSERT OR IGNORE INTO group_markers (user, mailbox, read_seq, read, since)
SELECT s.user, b.id, coalesce(o.seq, 0), coalesce(o.n, 0), 0
FROM memberships s JOIN mailboxes b ON b.owner = s.owner
LEFT JOIN own_last o ON o.mailbox = b.id AND o.sender = s.address;
DROP TABLE memberships;
DROP TABLE own_last;
