//! The hub's own upkeep, on its own timer (seed §7.5: `expire_old_jobs`,
//! `delete_removed_queues`): jobs older than `jobs_ttl` are deleted, a
//! hundred at a time so no transaction grows with the database, and
//! queues no node has heart-beaten on for a day are forgotten with their
//! alerts. Tasks STARTED on no live node past `task_invalidation_timeout`
//! are failed by the monitor (`hub::monitor`), which sees nodes die.

use crate::hub::configs::Live;
use crate::hub::store::{Store, StoreError, now_us};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often housekeeping runs (the seed's hourly `expire_old_jobs`); the
/// first run is a minute after the hub starts.
pub const EVERY: Duration = Duration::from_secs(3600);

/// A queue with no heartbeat this long is removed (the seed's
/// `REMOVED_QUEUE_CLEANUP_INTERVAL`, 1 day).
pub const QUEUE_SILENCE: Duration = Duration::from_secs(86_400);

/// Jobs deleted per round of [`expire`].
const JOBS_PER_ROUND: i64 = 100;

/// Events deleted per statement (the feed keeps them as long as jobs).
const EVENTS_PER_ROUND: i64 = 10_000;

/// What one housekeeping pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Jobs deleted.
    pub jobs: u64,
    /// `(site, queue)` forgotten.
    pub queues: Vec<(String, String)>,
    /// Events deleted.
    pub events: u64,
}

/// One pass at time `now` (µs): every job that ended more than
/// `jobs_ttl` ago, every event written before then, and every queue
/// silent for [`QUEUE_SILENCE`].
pub async fn sweep(store: &Store, configs: &Live, now: i64) -> Result<Swept, StoreError> {
    let before = now - configs.get().jobs_ttl().as_micros() as i64;
    let mut jobs = 0;
    loop {
        let n = store.expire_jobs(before, JOBS_PER_ROUND).await?;
        jobs += n;
        if n < JOBS_PER_ROUND as u64 {
            break;
        }
    }
    let mut events = 0;
    loop {
        let n = store.trim_events(before, EVENTS_PER_ROUND).await?;
        events += n;
        if n < EVENTS_PER_ROUND as u64 {
            break;
        }
    }
    let queues = store.remove_dead_queues(now - QUEUE_SILENCE.as_micros() as i64).await?;
    Ok(Swept { jobs, queues, events })
}

/// Runs [`sweep`] a minute after start, then every [`EVERY`].
pub async fn run(store: Store, configs: Arc<Live>) {
    tokio::time::sleep(Duration::from_secs(60)).await;
    loop {
        match sweep(&store, &configs, now_us()).await {
            Ok(s) if s.jobs > 0 || s.events > 0 || !s.queues.is_empty() => {
                info!(jobs = s.jobs, events = s.events, queues = ?s.queues, "housekeeping: expired jobs and events, silent queues removed")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "housekeeping failed; next time"),
        }
        tokio::time::sleep(EVERY).await;
    }
}
