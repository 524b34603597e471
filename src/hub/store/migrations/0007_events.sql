-- The event feed (`GET /api/events/?after=`): job states, failed tasks
-- and each batch's finished tasks, nodes online and offline, alerts
-- raised and cleared. Ids only grow, in commit order (`store::events`):
-- `{serial}` never reuses an id, even once housekeeping has trimmed every
-- row. No foreign keys: an event outlives its job until `jobs_ttl`, and
-- writing one takes no lock on another table (see `store::events`).
CREATE TABLE events (
    id {serial},
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    job_id BIGINT,
    node TEXT,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_kind ON events (kind, id);
CREATE INDEX events_job ON events (job_id, id) WHERE job_id IS NOT NULL;
CREATE INDEX events_at ON events (at);
-- Nodes the hub has taken for gone (an OFFLINE event written): the next
-- heartbeat of one writes ONLINE, and a restart does not repeat OFFLINE.
ALTER TABLE nodes ADD COLUMN gone BIGINT NOT NULL DEFAULT 0;
-- The stuck-work roll-up reads the tasks not yet final: a handful of the
-- millions of rows, found through this partial index.
CREATE INDEX tasks_open ON tasks (job_id) WHERE final = 0;
-- The failure roll-up groups failed files by error: when each was
-- reported, and its message with paths and numbers taken out.
ALTER TABLE jobstats ADD COLUMN at BIGINT;
ALTER TABLE jobstats ADD COLUMN reason TEXT;
CREATE INDEX jobstats_at ON jobstats (at) WHERE state = 'failures';
