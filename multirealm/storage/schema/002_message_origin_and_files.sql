-- Messages from other realms keep their own ids: a message is keyed by
-- (id, origin), origin being the realm that minted or handed it over, so no
-- realm can block or overwrite another's message by reusing its id.  Every
-- message stored before this step was minted here, by its sender's realm.
-- A file message carries its file's label, id and size (64-bit).
CREATE TABLE messages_v2 (
    seq INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    file_name TEXT,
    file_id TEXT,
    file_size INTEGER,
    UNIQUE (id, origin)
);
INSERT INTO messages_v2 (seq, origin, id, kind, sender, recipient, body, timestamp)
    SELECT seq, substr(sender, instr(sender, '@') + 1), id, kind, sender, recipient, body,
           timestamp
    FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE INDEX messages_by_file ON messages (file_id) WHERE file_id IS NOT NULL;
