-- Schedules (seed §1.10): a crontab in Celery's five fields, read in the
-- time zone of the site named by `site`, and the paths its runs work on.
-- `last_run_at` is the latest due time the scheduler has dealt with
-- (run, skipped, or passed over while disabled), written in the same
-- transaction as the run's record, so a restart neither runs a due time
-- again nor misses one.
CREATE TABLE schedules (
    id {pk},
    name TEXT NOT NULL,
    site TEXT NOT NULL,
    space TEXT,
    enabled BIGINT NOT NULL DEFAULT 1,
    discovery TEXT,
    discovery_options TEXT NOT NULL DEFAULT '{}',
    managed_paths TEXT NOT NULL DEFAULT '[]',
    minute TEXT NOT NULL,
    hour TEXT NOT NULL,
    day_of_week TEXT NOT NULL,
    day_of_month TEXT NOT NULL,
    month_of_year TEXT NOT NULL,
    last_run_at BIGINT,
    created BIGINT NOT NULL
);
-- The workflows a schedule runs: one job each per run.
CREATE TABLE schedule_workflows (
    id {pk},
    schedule_id BIGINT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    workflow TEXT NOT NULL,
    site TEXT NOT NULL,
    queue TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX schedule_workflows_schedule ON schedule_workflows (schedule_id, id);
-- What each firing did: one row per subscribed workflow (`pending` until
-- its job is committed, then `started` with the job; or `failed` with the
-- reason), or one `skipped` row, or one `failed` row when the schedule
-- has no workflow. `manual` marks POST /run/. `missed` counts the due
-- times collapsed into this one.
CREATE TABLE schedule_runs (
    id {pk},
    schedule_id BIGINT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    schedule_workflow_id BIGINT,
    workflow TEXT,
    due_at BIGINT NOT NULL,
    at BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    job_id BIGINT,
    detail TEXT NOT NULL DEFAULT '',
    manual BIGINT NOT NULL DEFAULT 0,
    missed BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX schedule_runs_schedule ON schedule_runs (schedule_id, id);
CREATE INDEX schedule_runs_outcome ON schedule_runs (outcome, at);
-- The schedule a job was started by (the jobs list's `schedule_ids`).
ALTER TABLE jobs ADD COLUMN schedule_id BIGINT;
CREATE INDEX jobs_schedule ON jobs (schedule_id, state)
