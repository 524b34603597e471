-- A job keeps the submission that made it, to be submitted again
-- (resubmit), and the job it was resubmitted from; `parked` marks a job
-- that has been paused, whose parking queue the hub still has to empty
-- and eventually delete.
ALTER TABLE jobs ADD COLUMN request TEXT;
ALTER TABLE jobs ADD COLUMN resubmitted_from BIGINT;
ALTER TABLE jobs ADD COLUMN parked BIGINT NOT NULL DEFAULT 0;
