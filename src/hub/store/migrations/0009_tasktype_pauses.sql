-- Task types paused cluster-wide (`POST /api/tasktypes/{name}/pause/`):
-- one row per task name that is paused (`paused` 1), or was resumed at
-- `resumed` and whose parking queue the hub still empties (`paused` 0;
-- the row goes once the queue is deleted). `since`, `reason` and
-- `paused_by` describe the pause in force, or the last one.
CREATE TABLE tasktype_pauses (
    task TEXT PRIMARY KEY,
    paused BIGINT NOT NULL DEFAULT 1,
    reason TEXT NOT NULL DEFAULT '',
    paused_by TEXT NOT NULL DEFAULT '',
    since BIGINT NOT NULL,
    resumed BIGINT
)
