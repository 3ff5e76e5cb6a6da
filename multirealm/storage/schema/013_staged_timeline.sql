-- The timeline in two tables (issue 18): a B-tree keyed by mailbox takes
-- each message's rows on two distinct pages (its sender's and its
-- recipient's mailbox), and SQLite writes every page a commit touches to
-- the WAL whole (4 KiB), and again at the checkpoint.  New rows go first
-- to timeline_recent, a few thousand rows (a few pages, hot in the cache,
-- that a commit of a hundred messages shares), and the database thread
-- moves them on to timeline_settled a range of mailboxes at a time
-- (multirealm.storage.queries.messages.stage_timeline), each mailbox's
-- page written once for all its rows.  Readers read the view timeline,
-- both tables.
ALTER TABLE timeline RENAME TO timeline_settled;
CREATE TABLE timeline_recent (
    mailbox INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;
CREATE VIEW timeline (mailbox, seq) AS
    SELECT mailbox, seq FROM timeline_settled UNION ALL SELECT mailbox, seq FROM timeline_recent;
