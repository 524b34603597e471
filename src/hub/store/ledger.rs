//! The counters every write keeps in step: a job's task counts by type
//! and state (so lists show them without counting rows), the wire names
//! of the states, and the end of a job whose results are all in.

use super::{StoreError, db};
use sqlx::Row;

/// Job states on the wire.
pub mod state {
    /// Populated by its discovery; nothing has run yet.
    pub const PENDING: &str = "PENDING";
    /// Tasks are running.
    pub const STARTED: &str = "STARTED";
    /// Every task done, no file failed.
    pub const SUCCESS: &str = "SUCCESS";
    /// Done, and a task or a file failed.
    pub const FAILURE: &str = "FAILURE";
    /// Being cancelled: queued tasks are dropped, running ones finish.
    pub const DEQUEUING: &str = "DEQUEUING";
    /// Cancelled, every task terminal.
    pub const CANCELLED: &str = "CANCELLED";
    /// Paused while some of its tasks still run.
    pub const PAUSING: &str = "PAUSING";
    /// Paused: none of its tasks runs.
    pub const PAUSED: &str = "PAUSED";
    /// Every job state, for validating filters.
    pub const ALL: &[&str] = &[
        PENDING, STARTED, SUCCESS, FAILURE, DEQUEUING, CANCELLED, PAUSING, PAUSED,
    ];
    /// States a job does not leave.
    pub const FINAL: &[&str] = &[SUCCESS, FAILURE, CANCELLED];
}

/// Task states on the wire.
pub mod task_state {
    /// Published, not known to have started.
    pub const PENDING: &str = "PENDING";
    /// A node is running it.
    pub const STARTED: &str = "STARTED";
    /// Done, every file done.
    pub const SUCCESS: &str = "SUCCESS";
    /// Done, some files failed.
    pub const ERROR: &str = "ERROR";
    /// The task failed as a whole.
    pub const FAILURE: &str = "FAILURE";
    /// Skipped.
    pub const SKIPPED: &str = "SKIPPED";
    /// Cancelled before it ran.
    pub const CANCELLED: &str = "CANCELLED";
    /// Every task state.
    pub const ALL: &[&str] = &[PENDING, STARTED, SUCCESS, ERROR, FAILURE, SKIPPED, CANCELLED];
}

/// Adds `n` to a job's count of `tasktype` tasks in `state`.
pub async fn add_stat(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: i64,
    tasktype: &str,
    state: &str,
    n: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO job_task_stats (job_id, tasktype, state, n) VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id, tasktype, state) DO UPDATE SET n = job_task_stats.n + excluded.n",
    )
    .bind(job_id)
    .bind(tasktype)
    .bind(state)
    .bind(n)
    .execute(&mut **tx)
    .await
    .map_err(db("count a task state"))?;
    Ok(())
}

/// The stage a bidirectional sync run's job is at once every stage is
/// done (`crate::hub::bisync`): only then may it end.
pub const SYNC_DONE: i64 = 10;

/// Ends a job whose counted results equal those expected: CANCELLED if
/// it was being cancelled, FAILURE if a task or file failed, else SUCCESS.
pub async fn finish_if_done(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job: i64,
    now: i64,
) -> Result<Option<&'static str>, StoreError> {
    let row = sqlx::query("SELECT state, expected, received, tasks_failed, files_failures FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("read a job"))?;
    let (st, expected, received, tasks_failed, files_failed): (String, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if state::FINAL.contains(&st.as_str()) || received < expected {
        return Ok(None);
    }
    // A bidirectional sync's job goes on to its next stage instead
    // (`crate::hub::bisync`).
    let syncing = sqlx::query("SELECT stage FROM sync_runs WHERE job_id = $1")
        .bind(job)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("read a sync run"))?;
    if syncing.is_some_and(|r| r.get::<i64, _>(0) < SYNC_DONE) {
        return Ok(None);
    }
    let end = if st == state::DEQUEUING {
        state::CANCELLED
    } else if tasks_failed > 0 || files_failed > 0 {
        state::FAILURE
    } else {
        state::SUCCESS
    };
    sqlx::query("UPDATE jobs SET state = $2, completed = $3, started = COALESCE(started, $3), dir_walk_complete = 1 WHERE id = $1")
        .bind(job)
        .bind(end)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db("end a job"))?;
    Ok(Some(end))
}
