-- Who may fetch a file sent to a group: its members when it was sent
-- (a member who leaves keeps access; one who joins later has none).
CREATE TABLE file_readers (
    file_id TEXT NOT NULL,
    reader TEXT NOT NULL,   -- qualified address, user@realm
    PRIMARY KEY (file_id, reader)
) WITHOUT ROWID;
