-- One private conversation's history, paged backwards (the history
-- command): the messages between two parties in arrival order, found in
-- any case (another realm's user is one identity in any case).
CREATE INDEX messages_by_parties ON messages (
    sender COLLATE NOCASE, recipient COLLATE NOCASE, seq
) WHERE kind IN ('private', 'failure');
