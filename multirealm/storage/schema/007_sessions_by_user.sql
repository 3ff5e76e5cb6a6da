-- passwd (and, later, an operator's lock) ends every other session of a
-- user at once: found by an index, not a scan of every session.
CREATE INDEX sessions_by_user ON sessions (user);
