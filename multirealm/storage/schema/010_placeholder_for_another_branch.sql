-- A placeholder: step 010 is another branch's (issue 14), merged beside
-- this one; the merge replaces this file with it.
SELECT 1;
