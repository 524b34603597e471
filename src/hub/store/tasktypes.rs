//! Task types paused cluster-wide, as the database sees it: which task
//! names are paused, why, by whom and since when, and which were resumed
//! recently enough that their parking queue (`hub::control`) may still
//! hold tasks to move back.

use super::{Store, StoreError, db, now_us};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A task type's pause: in force (`paused`), or resumed at `resumed`
/// with its parking queue not yet deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypePause {
    /// The task name (`dynamo.tasks.delete_paths_from_gpfs`).
    pub task: String,
    /// In force.
    pub paused: bool,
    /// Why (as the operator wrote it; may be empty).
    pub reason: String,
    /// The user who paused it.
    pub paused_by: String,
    /// When it was paused (µs).
    pub since: i64,
    /// When it was resumed (µs), once it was.
    pub resumed: Option<i64>,
}

fn pause_of(r: &AnyRow) -> TypePause {
    TypePause {
        task: r.get("task"),
        paused: super::flag(r, "paused"),
        reason: r.get("reason"),
        paused_by: r.get("paused_by"),
        since: r.get("since"),
        resumed: r.get("resumed"),
    }
}

impl Store {
    /// Pauses task type `task` for `reason`, by user `by`. Returns the
    /// pause, or `None` when the type is paused already (the pause in
    /// force is left as it is).
    pub async fn pause_tasktype(&self, task: &str, reason: &str, by: &str) -> Result<Option<TypePause>, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "INSERT INTO tasktype_pauses (task, paused, reason, paused_by, since, resumed)
             VALUES ($1, 1, $2, $3, $4, NULL)
             ON CONFLICT (task) DO UPDATE SET paused = 1, reason = excluded.reason,
               paused_by = excluded.paused_by, since = excluded.since, resumed = NULL
             WHERE tasktype_pauses.paused = 0
             RETURNING task, paused, reason, paused_by, since, resumed",
        )
        .bind(task)
        .bind(reason)
        .bind(by)
        .bind(now_us())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("pause a task type"))?;
        tx.commit().await.map_err(db("commit a task type pause"))?;
        Ok(row.as_ref().map(pause_of))
    }

    /// Resumes task type `task`; false when it is not paused.
    pub async fn resume_tasktype(&self, task: &str) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "UPDATE tasktype_pauses SET paused = 0, resumed = $2 WHERE task = $1 AND paused = 1 RETURNING task",
        )
        .bind(task)
        .bind(now_us())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("resume a task type"))?;
        tx.commit().await.map_err(db("commit a task type resume"))?;
        Ok(row.is_some())
    }

    /// Every task type paused, or resumed with a parking queue still to
    /// empty, by name.
    pub async fn tasktype_pauses(&self) -> Result<Vec<TypePause>, StoreError> {
        let rows =
            sqlx::query("SELECT task, paused, reason, paused_by, since, resumed FROM tasktype_pauses ORDER BY task")
                .fetch_all(&self.pool)
                .await
                .map_err(db("read task type pauses"))?;
        Ok(rows.iter().map(pause_of).collect())
    }

    /// Task type `task`, resumed, has no parking queue any more: its row
    /// goes (unless it was paused again meanwhile).
    pub async fn forget_tasktype(&self, task: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM tasktype_pauses WHERE task = $1 AND paused = 0")
            .bind(task)
            .execute(&self.pool)
            .await
            .map_err(db("forget a task type's parking queue"))?;
        Ok(())
    }
}
