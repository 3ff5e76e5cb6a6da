-- Each local user's conversations (conversations, markread): one row per
-- private peer and per group the user is in, kept up to date in the
-- transaction of every message and membership change, so that listing
-- them reads this table and never the history.
CREATE TABLE conversations (
    user TEXT NOT NULL,            -- a local user, as registered
    kind TEXT NOT NULL,            -- private or group
    with_key TEXT NOT NULL,        -- name@realm; lower case for another realm's (one identity in any case)
    with_address TEXT NOT NULL,    -- name@realm as first seen
    last_seq INTEGER,              -- the last message; NULL for a group with none yet
    activity REAL NOT NULL,        -- the order, newest first: last_seq, or a join (the seq before it + 0.5)
    read_seq INTEGER NOT NULL DEFAULT 0,  -- the read marker: read up to this seq
    unread INTEGER NOT NULL DEFAULT 0,    -- messages from others after the marker
    PRIMARY KEY (user, kind, with_key)
) WITHOUT ROWID;
CREATE INDEX conversations_by_activity ON conversations (user, activity, kind, with_key);
-- A group's rows, updated together by each message to the group.
CREATE INDEX conversations_of_groups ON conversations (with_key) WHERE kind = 'group';
-- A peer's private messages to a user: unread recounted after a marker.
CREATE INDEX messages_by_pair ON messages (recipient, sender) WHERE kind = 'private';  -- and seq, the rowid

-- Existing databases: rows from the history and the memberships, once.
-- temp.this_realm holds the realm's name (schema.migrate writes it).  A
-- user's marker is their own last message in each conversation (sending
-- one moves it), so unread counts what others wrote after it; a group
-- with no message is ordered as the oldest activity.  A delivery failure
-- counts in the conversation with the private peer its message was for.
CREATE TEMP TABLE private_entries AS
SELECT substr(b.owner, 6, length(b.owner) - 6 - length(r.name)) AS me, t.seq AS seq,
       m.sender = substr(b.owner, 6) AS own,
       m.kind = 'private' AND m.sender != substr(b.owner, 6) AS from_peer,
       CASE
           WHEN m.kind = 'failure' THEN (
               SELECT f.recipient FROM messages f
               WHERE f.id = m.failed_id AND f.origin = r.name AND f.kind = 'private'
               ORDER BY f.seq LIMIT 1)
           WHEN m.sender = substr(b.owner, 6) THEN m.recipient
           ELSE m.sender
       END AS other
FROM temp.this_realm r
JOIN mailboxes b ON b.owner LIKE 'user:%' AND substr(b.owner, -1 - length(r.name)) = '@' || r.name
JOIN timeline t ON t.mailbox = b.id
JOIN messages m ON m.seq = t.seq
WHERE m.kind IN ('private', 'failure');

INSERT INTO conversations (user, kind, with_key, with_address, last_seq, activity, read_seq, unread)
SELECT me, 'private', with_key, coalesce(max(CASE WHEN from_peer THEN other END), min(other)),
       max(seq), max(seq), read_seq,
       sum(NOT own AND seq > read_seq)
FROM (
    SELECT e.*,
           CASE WHEN substr(other, -1 - length((SELECT name FROM temp.this_realm))) = '@' || (SELECT name FROM temp.this_realm) THEN other
                ELSE lower(other) END AS with_key,
           coalesce(max(CASE WHEN own THEN seq END) OVER (
               PARTITION BY me, CASE WHEN substr(other, -1 - length((SELECT name FROM temp.this_realm))) = '@' || (SELECT name FROM temp.this_realm)
                                     THEN other ELSE lower(other) END), 0) AS read_seq
    FROM private_entries e WHERE other IS NOT NULL
)
GROUP BY me, with_key;

-- Members of this realm's groups, and this realm's users in others'.
INSERT INTO conversations (user, kind, with_key, with_address, last_seq, activity)
SELECT substr(mb.member, 1, length(mb.member) - 1 - length(r.name)), 'group',
       mb.group_name || '@' || r.name, mb.group_name || '@' || r.name, NULL, 0.5
FROM temp.this_realm r JOIN members mb ON substr(mb.member, -1 - length(r.name)) = '@' || r.name;
INSERT OR IGNORE INTO conversations (user, kind, with_key, with_address, last_seq, activity)
SELECT member, 'group', group_key, group_address, NULL, 0.5 FROM remote_members;

-- Then each group row's last message, marker and unread.
CREATE TEMP TABLE group_entries AS
SELECT substr(b.owner, 7) AS group_address, t.seq AS seq, m.sender AS sender
FROM mailboxes b JOIN timeline t ON t.mailbox = b.id JOIN messages m ON m.seq = t.seq
WHERE b.owner LIKE 'group:%';
CREATE INDEX temp.group_entries_by_group ON group_entries (group_address, sender, seq);

UPDATE conversations AS c SET
    last_seq = g.last_seq,
    activity = g.last_seq,
    read_seq = coalesce((
        SELECT max(seq) FROM group_entries e
        WHERE e.group_address = c.with_address
          AND e.sender = c.user || '@' || (SELECT name FROM temp.this_realm)), 0)
FROM (SELECT group_address, max(seq) AS last_seq FROM group_entries GROUP BY group_address) AS g
WHERE c.kind = 'group' AND g.group_address = c.with_address;

UPDATE conversations AS c SET unread = (
    SELECT count(*) FROM group_entries e
    WHERE e.group_address = c.with_address AND e.seq > c.read_seq
      AND e.sender != c.user || '@' || (SELECT name FROM temp.this_realm))
WHERE c.kind = 'group' AND c.last_seq IS NOT NULL;

DROP TABLE private_entries;
DROP TABLE group_entries;
