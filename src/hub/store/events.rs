//! The event feed: what changed, in the order readers may rely on.
//!
//! An event is written by the transaction that makes the change it
//! reports, as that transaction's last statement ([`commit`]), so it is
//! seen exactly when the change is. Readers poll with the last id they
//! saw (`after`) and must never miss an event, which asks more than
//! increasing ids: an id must not become visible before every smaller one
//! has. SQLite gives that by itself (one writer at a time, ids taken
//! under its lock). On PostgreSQL two transactions take ids side by side
//! and may commit in the other order: a reader between the two commits
//! sees id 6 without id 5, moves past 5 and never sees it. So there the
//! events of a transaction are written under a transaction-scoped
//! advisory lock, held from taking the ids until the commit, whose
//! visibility PostgreSQL makes effective before it releases the lock:
//! the next writer takes its ids only after this one is visible. Only
//! the event insert and the commit run under the lock (the insert waits
//! on no other lock: the table has no foreign keys), so writers queue for
//! the length of a commit, and readers never wait.

use super::{Engine, StoreError, db, iso, now_us};
use sqlx::Row;

/// Kinds of event.
pub mod kind {
    /// A job entered `state` (`PENDING` when created, then as it runs).
    pub const JOB: &str = "job";
    /// A task ended `FAILURE` or `ERROR` (at most [`super::TASKS_PER_BATCH`]
    /// per batch of results; the batch's `tasks` event counts them all).
    pub const TASK: &str = "task";
    /// A batch of results finished tasks of a job: counts by state.
    pub const TASKS: &str = "tasks";
    /// A node came `ONLINE` or went `OFFLINE`.
    pub const NODE: &str = "node";
    /// An alert was `RAISED` or `CLEARED`.
    pub const ALERT: &str = "alert";
    /// Every kind, for validating filters.
    pub const ALL: &[&str] = &[JOB, TASK, TASKS, NODE, ALERT];
}

/// Most `task` events one batch of results writes: a failure storm of a
/// million tasks must not write a million events; the batch's `tasks`
/// event has the full counts.
pub const TASKS_PER_BATCH: usize = 100;

/// An event to write with the change it reports.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// One of [`kind`].
    pub kind: &'static str,
    /// The job it concerns.
    pub job: Option<i64>,
    /// The node it concerns.
    pub node: Option<String>,
    /// The new state (`STARTED`, `ONLINE`, `RAISED`...).
    pub state: String,
    /// What else there is to know, as JSON.
    pub detail: serde_json::Value,
}

impl NewEvent {
    /// Job `job` entered `state`.
    pub fn job(job: i64, state: &str) -> NewEvent {
        NewEvent {
            kind: kind::JOB,
            job: Some(job),
            node: None,
            state: state.to_string(),
            detail: serde_json::json!({}),
        }
    }
}

/// An event as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Its place in the feed.
    pub id: i64,
    /// When it was written (µs).
    pub at: i64,
    /// One of [`kind`].
    pub kind: String,
    /// The job it concerns.
    pub job: Option<i64>,
    /// The node it concerns.
    pub node: Option<String>,
    /// The new state.
    pub state: String,
    /// The rest, as JSON.
    pub detail: serde_json::Value,
}

impl Event {
    /// When it was written, as the API writes times.
    pub fn at_iso(&self) -> String {
        iso(self.at)
    }
}

/// Which events to read.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only those after this id.
    pub after: i64,
    /// Only these kinds (all when empty).
    pub kinds: Vec<String>,
    /// Only those of this job.
    pub job: Option<i64>,
    /// Only those of this node.
    pub node: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// The lock every event writer on PostgreSQL holds from taking its ids to
/// its commit ("ferry ev" in ASCII).
const EVENTS_LOCK: i64 = 0x6665_7272_7920_6576;

/// Writes `events` as the last statements of `tx`, then commits it (see
/// the module documentation for why both together).
pub(crate) async fn commit(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    engine: Engine,
    events: &[NewEvent],
    context: &'static str,
) -> Result<(), StoreError> {
    if !events.is_empty() {
        if engine == Engine::Postgres {
            sqlx::query(&format!("SELECT pg_advisory_xact_lock({EVENTS_LOCK})"))
                .execute(&mut *tx)
                .await
                .map_err(db("lock the event feed"))?;
        }
        let at = now_us();
        for chunk in events.chunks(super::batch::CHUNK) {
            let sql = format!(
                "INSERT INTO events (at, kind, job_id, node, state, detail) VALUES {}",
                super::batch::tuples(engine, chunk.len(), 6)
            );
            let mut q = super::batch::statement(&sql, chunk.len());
            for e in chunk {
                q = q
                    .bind(at)
                    .bind(e.kind)
                    .bind(e.job)
                    .bind(&e.node)
                    .bind(&e.state)
                    .bind(e.detail.to_string());
            }
            q.execute(&mut *tx).await.map_err(db("record events"))?;
        }
    }
    tx.commit().await.map_err(db(context))
}

impl super::Store {
    /// Events matching `f`, in id order.
    pub async fn events(&self, f: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let mut sql = String::from("SELECT id, at, kind, job_id, node, state, detail FROM events WHERE id > $1");
        let mut n = 1;
        if !f.kinds.is_empty() {
            let marks: Vec<String> = (0..f.kinds.len()).map(|i| format!("${}", n + 1 + i)).collect();
            sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
            n += f.kinds.len();
        }
        if f.job.is_some() {
            n += 1;
            sql.push_str(&format!(" AND job_id = ${n}"));
        }
        if f.node.is_some() {
            n += 1;
            sql.push_str(&format!(" AND node = ${n}"));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql).bind(f.after);
        for k in &f.kinds {
            q = q.bind(k);
        }
        if let Some(j) = f.job {
            q = q.bind(j);
        }
        if let Some(node) = &f.node {
            q = q.bind(node);
        }
        let rows = q.bind(f.limit).fetch_all(&self.pool).await.map_err(db("read events"))?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: r.get(0),
                    at: r.get(1),
                    kind: r.get(2),
                    job: r.get(3),
                    node: r.get(4),
                    state: r.get(5),
                    detail: super::json_col(r, "events", "detail")?,
                })
            })
            .collect()
    }

    /// Deletes up to `limit` events written before `before` (µs); how many.
    pub async fn trim_events(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 ORDER BY at LIMIT $2)")
                .bind(before)
                .bind(limit)
                .execute(&self.pool)
                .await
                .map_err(db("trim events"))?;
        Ok(done.rows_affected())
    }
}
