-- Which files a workflow's jobs keep a row for (`failures`: failed and
-- aborted ones; `all`: every file; `none`: counts only), copied onto each
-- job when it is submitted; and jobs that only discover and report what
-- they would do (`dry_run`).
ALTER TABLE workflows ADD COLUMN record_files TEXT NOT NULL DEFAULT 'failures';
ALTER TABLE jobs ADD COLUMN record_files TEXT NOT NULL DEFAULT 'failures';
ALTER TABLE jobs ADD COLUMN dry_run BIGINT NOT NULL DEFAULT 0;
