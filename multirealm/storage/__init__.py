"""
Durable state: the database thread with group commit (L{store}), the SQL
(L{queries}), the numbered schema steps (L{schema}).
"""
