-- Step 013 (the SQLite step says why): the timeline in two tables behind
-- the view timeline.  PostgreSQL writes rows in place (its WAL logs the
-- row, not the page), so its store writes timeline_settled directly and
-- timeline_recent stays empty; the tables are the same on both engines.
ALTER TABLE timeline RENAME TO timeline_settled;
ALTER INDEX timeline_pkey RENAME TO timeline_settled_pkey;
CREATE TABLE timeline_recent (
    mailbox BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (mailbox, seq)
);
CREATE VIEW timeline (mailbox, seq) AS
    SELECT mailbox, seq FROM timeline_settled UNION ALL SELECT mailbox, seq FROM timeline_recent;
