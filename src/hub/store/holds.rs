//! Pausing and resuming jobs, as the database sees it. A paused job's
//! queued tasks are parked by the agents in a queue of the job's own
//! (`hub::control`); here are the states (`PAUSING` while tasks of the
//! job still run, `PAUSED` once none does), the roots the agents are
//! told to hold, and which jobs still have a parking queue to empty.

use super::events::{self, NewEvent};
use super::jobs::state;
use super::{Store, StoreError, db, now_us};
use sqlx::Row;

/// What a pause or resume found.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// Done: the job's root task ids (what the agents match tasks by).
    Done(Vec<String>),
    /// The job's state does not allow it.
    Refused(String),
    /// No such job.
    Missing,
}

impl Store {
    /// Pauses job `id`: `PAUSING` (it becomes `PAUSED` once none of its
    /// tasks runs, [`Store::settle_pauses`]). Only a `PENDING` or
    /// `STARTED` job pauses.
    pub async fn pause_job(&self, id: i64) -> Result<Hold, StoreError> {
        self.change_hold(
            id,
            "UPDATE jobs SET state = 'PAUSING', parked = 1, pausing_since = $2
             WHERE id = $1 AND state IN ('PENDING', 'STARTED') RETURNING state",
            Some(super::now_us()),
        )
        .await
    }

    /// Resumes job `id`: back to `STARTED` (`PENDING` if nothing of it
    /// has started). Only a `PAUSING` or `PAUSED` job resumes.
    pub async fn resume_job(&self, id: i64) -> Result<Hold, StoreError> {
        self.change_hold(
            id,
            "UPDATE jobs SET state = CASE WHEN started IS NULL THEN 'PENDING' ELSE 'STARTED' END
             WHERE id = $1 AND state IN ('PAUSING', 'PAUSED') RETURNING state",
            None,
        )
        .await
    }

    /// Runs `update` on job `id` (`$1`), with `at` as `$2` when given.
    async fn change_hold(&self, id: i64, update: &str, at: Option<i64>) -> Result<Hold, StoreError> {
        let mut tx = self.write().await?;
        let mut query = sqlx::query(update).bind(id);
        if let Some(at) = at {
            query = query.bind(at);
        }
        let changed = query
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("change a job's hold"))?;
        let Some(changed) = changed else {
            let st = sqlx::query("SELECT state FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("read a job"))?;
            return Ok(st.map_or(Hold::Missing, |r| Hold::Refused(r.get(0))));
        };
        let to: String = changed.get(0);
        let roots = sqlx::query("SELECT task_id FROM tasks WHERE job_id = $1 AND is_root = 1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("read a job's roots"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        events::commit(tx, self.engine, &[NewEvent::job(id, &to)], "commit a hold").await?;
        Ok(Hold::Done(roots))
    }

    /// `(job id, root task id)` of every paused job (`PAUSING` or
    /// `PAUSED`): what the agents must keep parking.
    pub async fn held_roots(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.job_id, t.task_id FROM tasks t JOIN jobs j ON j.id = t.job_id
             WHERE t.is_root = 1 AND j.state IN ('PAUSING', 'PAUSED')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read paused roots"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// `PAUSING` jobs asked to pause at or before `asked_by` (microseconds)
    /// none of whose tasks runs any more become `PAUSED` (a task that
    /// started is counted `STARTED` until its result is in). The caller
    /// leaves time for the starts of tasks taken just before the pause to
    /// come in: without it a job between two tasks looks idle. Returns how
    /// many did.
    pub async fn settle_pauses(&self, asked_by: i64) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let done: Vec<NewEvent> = sqlx::query(
            "UPDATE jobs SET state = 'PAUSED' WHERE state = 'PAUSING' AND COALESCE(pausing_since, 0) <= $1 AND NOT EXISTS
               (SELECT 1 FROM job_task_stats s WHERE s.job_id = jobs.id AND s.state = 'STARTED' AND s.n > 0)
             RETURNING id",
        )
        .bind(asked_by)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("settle pauses"))?
        .iter()
        .map(|r| NewEvent::job(r.get(0), state::PAUSED))
        .collect();
        events::commit(tx, self.engine, &done, "commit settled pauses").await?;
        Ok(done.len() as u64)
    }

    /// Jobs that were paused and are not any more (resumed, cancelled or
    /// ended), whose parking queues may still hold tasks: `(id, ended
    /// before now − keep)`.
    pub async fn unparked_jobs(&self, keep_us: i64) -> Result<Vec<(i64, bool)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state, completed FROM jobs WHERE parked = 1 AND state NOT IN ('PAUSING', 'PAUSED')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read parked jobs"))?;
        let before = now_us() - keep_us;
        Ok(rows
            .iter()
            .map(|r| {
                let st: String = r.get(1);
                let completed: Option<i64> = r.get(2);
                let old = state::FINAL.contains(&st.as_str()) && completed.is_some_and(|c| c < before);
                (r.get(0), old)
            })
            .collect())
    }

    /// Records discovery progress reports: each job keeps the largest
    /// counts reported (reports of one walk only grow), while it runs.
    pub async fn record_progress(&self, reports: &[super::results::Progress]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let now = now_us();
        for p in reports {
            sqlx::query(
                "UPDATE jobs SET walk_files = CASE WHEN $2 > walk_files THEN $2 ELSE walk_files END,
                   walk_bytes = CASE WHEN $3 > walk_bytes THEN $3 ELSE walk_bytes END,
                   walk_children = CASE WHEN $4 > walk_children THEN $4 ELSE walk_children END,
                   walk_at = $5
                 WHERE id = $1 AND state NOT IN ('SUCCESS', 'FAILURE', 'CANCELLED')",
            )
            .bind(p.jobid)
            .bind(p.files)
            .bind(p.bytes)
            .bind(p.children)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("record progress"))?;
        }
        tx.commit().await.map_err(db("commit progress"))?;
        Ok(())
    }

    /// Job `id` has no parking queue any more.
    pub async fn forget_parking(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET parked = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("forget a parking queue"))?;
        Ok(())
    }
}
