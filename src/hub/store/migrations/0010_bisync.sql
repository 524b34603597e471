-- Bidirectional sync runs: one row per job of the `bidirectional_snapdiff`
-- discovery, with the stage the job is at (`crate::hub::bisync::Stage`):
-- the job ends only once its last stage is done. `rotate1`/`rotate2`: the
-- run asked that site to rotate (1) rather than roll back (0).
CREATE TABLE sync_runs (
    job_id BIGINT PRIMARY KEY,
    site1 TEXT NOT NULL,
    queue1 TEXT NOT NULL,
    site2 TEXT NOT NULL,
    queue2 TEXT NOT NULL,
    fileset TEXT NOT NULL,
    stage BIGINT NOT NULL DEFAULT 0,
    rotate1 BIGINT NOT NULL DEFAULT 0,
    rotate2 BIGINT NOT NULL DEFAULT 0
);
-- The changes each site's snapdiff reported (the seed's snapdiff events),
-- as the agent sent them (`obj`, a path object) with what the hub
-- decided for each (`decision`, and the path it was applied at,
-- `target`, when that is not its own). Paths are JSON string text.
CREATE TABLE sync_events (
    id {serial},
    job_id BIGINT NOT NULL,
    site TEXT NOT NULL,
    run TEXT NOT NULL,
    seq BIGINT NOT NULL,
    n BIGINT NOT NULL,
    obj TEXT NOT NULL,
    decision TEXT,
    target TEXT,
    note TEXT
);
CREATE UNIQUE INDEX sync_events_place ON sync_events (job_id, site, run, seq, n)
