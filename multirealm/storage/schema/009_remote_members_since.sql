-- When a local user's membership of another realm's group began, as its
-- home stamped the notice: a file sent to the group before that is not
-- theirs to fetch (the rule the home keeps with file_readers).  NULL: a
-- membership kept before this step, taken as always.
ALTER TABLE remote_members ADD COLUMN since TEXT;
