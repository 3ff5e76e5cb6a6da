-- Step 006 is the conversations branch's (issue 14): this file holds its
-- number on the members branch only and gives way to it at merge.
SELECT 1;
