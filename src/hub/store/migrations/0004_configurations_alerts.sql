-- Global configurations changed through the API (name → JSON value);
-- the `[hub]` file gives the values of those not here.
CREATE TABLE configurations (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Alerts the hub raises: one row per (name, site, node, queue), kept
-- while the condition holds (`cleared` null), then cleared.
CREATE TABLE alerts (
    id {pk},
    name TEXT NOT NULL,
    site TEXT,
    node TEXT,
    queue TEXT,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    created BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    suppressed BIGINT NOT NULL DEFAULT 0,
    cleared BIGINT,
    subject TEXT NOT NULL
);
CREATE UNIQUE INDEX alerts_active ON alerts (subject) WHERE cleared IS NULL;
-- A node drained by an operator (`PATCH /api/nodes/{id}/ {"paused": true}`):
-- it finishes what it runs and takes nothing new until resumed.
ALTER TABLE nodes ADD COLUMN paused BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN pause_reason TEXT;
-- What a running discovery reported last (`PROGRESS` messages): files,
-- directories and bytes found, children published, and when.
ALTER TABLE jobs ADD COLUMN walk_files BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN walk_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN walk_children BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN walk_at BIGINT;
