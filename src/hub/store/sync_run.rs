//! The row a bidirectional sync's job gets beside it when it is written
//! ([`super::jobs`]); the rest of a run's rows are [`super::bisync`]'s.

use super::{StoreError, db};

/// What a new bidirectional job records beside the job: its second site
/// and the fileset (site 1 is the job's own site and queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSyncRun {
    /// The workflow's `destinationsite`.
    pub site2: String,
    /// The queue there.
    pub queue2: String,
    /// The fileset's (wire) path.
    pub fileset: String,
}

/// Records the run of new job `job` (on `site` and `queue`).
pub(super) async fn insert_sync_run(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: i64,
    site: &str,
    queue: &str,
    sync: &NewSyncRun,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sync_runs (job_id, site1, queue1, site2, queue2, fileset) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job)
    .bind(site)
    .bind(queue)
    .bind(&sync.site2)
    .bind(&sync.queue2)
    .bind(&sync.fileset)
    .execute(&mut **tx)
    .await
    .map_err(db("record a sync run"))?;
    Ok(())
}
