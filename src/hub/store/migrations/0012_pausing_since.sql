-- When a job was last asked to pause (microseconds). A `PAUSING` job
-- becomes `PAUSED` only some seconds after it: a task an agent took just
-- before the pause reached it reports its start a moment later, and until
-- then the job looks idle.
ALTER TABLE jobs ADD COLUMN pausing_since BIGINT;
