//! Results into task rows and job counters, and when a job is done.
//!
//! A job is done by counting, not by flags: `expected` starts at the
//! number of tasks the hub published (its roots) and grows by the
//! `children_count` of every result it counts; `received` is the number
//! of results counted; the job ends when the two are equal.
//!
//! Which results count: a root's; and a child's whose parent's result was
//! counted, when the child's id names the parent's execution (`run`) and
//! a place below the parent's `children_count`
//! ([`crate::agent::celery::ChildId`]). A child whose parent's result has
//! not come yet is held (stored, not counted) and counted when it comes.
//! A child of another execution of its parent (the parent ran twice: its
//! agent died mid-walk and the broker redelivered it) is an orphan:
//! stored and shown, never counted, so a re-run discovery cannot make a
//! job count a file twice. The first final result of a task wins; a
//! repeated one (a redelivery, a hub restart before its ack) changes
//! nothing. All of it happens in one transaction per batch, which the
//! ingest acknowledges to the broker only after the commit.

use super::ledger::{add_stat, task_state};
use super::{Store, StoreError, db, now_us};
use crate::agent::celery::{ChildId, run_hex};
use crate::task::TaskName;
use rustc_hash::FxHashMap;
use sqlx::Row;

/// Per-file counts of a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileCounts {
    /// Files a discovery found.
    #[serde(default)]
    pub found: i64,
    /// Done.
    #[serde(default)]
    pub processed: i64,
    /// Skipped.
    #[serde(default)]
    pub skipped: i64,
    /// Aborted (do not fail the job).
    #[serde(default)]
    pub aborted: i64,
    /// Failed.
    #[serde(default)]
    pub failures: i64,
}

impl FileCounts {
    fn add(&mut self, o: &FileCounts) {
        self.found += o.found;
        self.processed += o.processed;
        self.skipped += o.skipped;
        self.aborted += o.aborted;
        self.failures += o.failures;
    }
}

/// A file a task reported as failed or aborted.
#[derive(Clone, Debug, PartialEq)]
pub struct FileFailure {
    /// The path as JSON string text (surrogate escapes kept).
    pub path: String,
    /// `failures` or `aborted`.
    pub state: &'static str,
    /// The error's name, when the message names one (`EACCES`).
    pub code: Option<String>,
    /// The message as JSON text.
    pub message: String,
}

/// A final result, read from its document (see `hub::ingest`).
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Celery task id.
    pub task_id: String,
    /// The task that sent it.
    pub parent_id: Option<String>,
    /// Its job, when the document names it.
    pub jobid: Option<i64>,
    /// Task name.
    pub tasktype: String,
    /// The node that ran it.
    pub node: Option<String>,
    /// The queue it came from.
    pub queue: Option<String>,
    /// Wire state: SUCCESS, ERROR, FAILURE or CANCELLED.
    pub state: &'static str,
    /// Children it published.
    pub children_count: i64,
    /// The execution that published them (16 hex digits).
    pub run: Option<String>,
    /// Its summary object as JSON: the seed's counts per file state
    /// (`processed`, `skipped`, `aborted`, `failures`; a discovery's
    /// `files` and `children`), which the job's counters add up.
    pub summary: String,
    /// Its result, file lists trimmed, as JSON.
    pub result: String,
    /// Failed and aborted files.
    pub failed: Vec<FileFailure>,
    /// When it finished (µs).
    pub completed: i64,
    /// It is a discovery (its result completes the walk).
    pub discovery: bool,
}

/// A task a node started.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// Celery task id.
    pub task_id: String,
    /// The id of its job's root task: events are shared by every hub on a
    /// broker, and job ids are not unique across hubs, root ids are.
    pub root_id: String,
    /// The task that sent it.
    pub parent_id: Option<String>,
    /// Task name.
    pub tasktype: String,
    /// The node.
    pub node: String,
    /// When (µs, hub time).
    pub at: i64,
}

/// What one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Results counted now (including held ones released by a parent).
    pub counted: u64,
    /// Results held for their parent's (counted once it comes).
    pub held: u64,
    /// Results of a parent's other execution.
    pub orphans: u64,
    /// Results seen before.
    pub duplicates: u64,
    /// Results of no job the hub knows (deleted, or not the hub's).
    pub unknown: u64,
    /// Jobs that ended, with their final state.
    pub finished_jobs: Vec<(i64, &'static str)>,
}

/// What counting changes on a job.
#[derive(Default)]
struct JobDelta {
    received: i64,
    expected: i64,
    orphans: i64,
    tasks_failed: i64,
    files: FileCounts,
    walked: bool,
    acted: bool,
}

/// A parent's row as counting its children needs it.
#[derive(Clone)]
struct Parent {
    job_id: i64,
    /// Final, and counted or orphaned: it will not change again.
    settled: bool,
    counted: i64,
    run: Option<String>,
    children_count: i64,
}

/// A task row as counting needs it.
struct Counted {
    task_id: String,
    job_id: i64,
    state: String,
    children_count: i64,
    run: Option<String>,
    files: FileCounts,
    discovery: bool,
}

const COUNTED: i64 = 1;
const ORPHAN: i64 = 2;

/// Whether a task is a walk whose result ends a job's discovery.
pub fn is_discovery(tasktype: &str) -> bool {
    matches!(
        TaskName::parse(tasktype),
        Some(TaskName::RecursiveNavigate | TaskName::Snapdiff)
    )
}

fn failed_state(s: &str) -> bool {
    s == task_state::FAILURE || s == task_state::ERROR
}

/// Whether `child` (a task id) is one its parent's counted result
/// announced.
fn announced(child: &str, parent_run: Option<&str>, parent_children: i64) -> bool {
    match ChildId::parse(child) {
        Some(c) => parent_run == Some(run_hex(c.run).as_str()) && (c.seq as i64) < parent_children,
        // An id that is no child id (a Celery client's, an older agent's)
        // cannot be checked; it counts under a counted parent.
        None => true,
    }
}

impl Store {
    /// Files a batch of final results in one transaction (see the module
    /// documentation for what counts).
    pub async fn ingest(&self, batch: &[Finished]) -> Result<Ingested, StoreError> {
        let mut out = Ingested::default();
        // Parents whose verdict is in, and jobs known to exist: looked up
        // once per batch, not once per result (most results of a batch
        // share a parent and a job).
        let mut settled: FxHashMap<String, Parent> = FxHashMap::default();
        let mut jobs: rustc_hash::FxHashSet<i64> = rustc_hash::FxHashSet::default();
        let mut deltas: FxHashMap<i64, JobDelta> = FxHashMap::default();
        let mut stats: FxHashMap<(i64, String, String), i64> = FxHashMap::default();
        let mut tx = self.write().await?;
        for r in batch {
            let existing =
                sqlx::query("SELECT id, job_id, final, is_root, state, tasktype FROM tasks WHERE task_id = $1")
                    .bind(&r.task_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("read a task"))?;
            let parent = match &r.parent_id {
                Some(p) => match settled.get(p) {
                    Some(known) => Some(known.clone()),
                    None => {
                        let row = sqlx::query(
                            "SELECT job_id, final, counted, run, children_count FROM tasks WHERE task_id = $1",
                        )
                        .bind(p)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("read a parent task"))?
                        .map(|row| Parent {
                            job_id: row.get(0),
                            settled: row.get::<i64, _>(1) != 0 && row.get::<i64, _>(2) != 0,
                            counted: row.get(2),
                            run: row.get(3),
                            children_count: row.get(4),
                        });
                        // A settled parent never changes again: keep it
                        // for its siblings in this batch.
                        if let Some(found) = row.as_ref().filter(|f| f.settled) {
                            settled.insert(p.clone(), found.clone());
                        }
                        row
                    }
                },
                None => None,
            };
            let (job_id, is_root) = match &existing {
                Some(row) if row.get::<i64, _>("final") != 0 => {
                    out.duplicates += 1;
                    continue;
                }
                Some(row) => (row.get::<i64, _>("job_id"), row.get::<i64, _>("is_root") != 0),
                None => {
                    let from_parent = parent.as_ref().map(|p| p.job_id);
                    let job = match r.jobid.or(from_parent) {
                        Some(j) if jobs.contains(&j) => Some(j),
                        Some(j) => {
                            let found = sqlx::query("SELECT id FROM jobs WHERE id = $1")
                                .bind(j)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(db("read a job"))?
                                .map(|row| row.get::<i64, _>(0));
                            jobs.extend(found);
                            found
                        }
                        None => None,
                    };
                    match job {
                        Some(j) => (j, false),
                        None => {
                            out.unknown += 1;
                            continue;
                        }
                    }
                }
            };
            let summary = r.summary.as_str();
            match &existing {
                Some(row) => {
                    let old_state: String = row.get("state");
                    let old_type: String = row.get("tasktype");
                    *stats.entry((job_id, old_type, old_state)).or_default() -= 1;
                    sqlx::query(
                        "UPDATE tasks SET state = $2, final = 1, node = COALESCE($3, node), children_count = $4, run = $5,
                           completed = $6, started = CASE WHEN $2 = 'CANCELLED' THEN started ELSE COALESCE(started, $6) END, summary = $7, result = $8, tasktype = $9,
                           queue = COALESCE(queue, $10), site = COALESCE(site, $11) WHERE task_id = $1",
                    )
                    .bind(&r.task_id)
                    .bind(r.state)
                    .bind(&r.node)
                    .bind(r.children_count)
                    .bind(&r.run)
                    .bind(r.completed)
                    .bind(summary)
                    .bind(&r.result)
                    .bind(&r.tasktype)
                    .bind(&r.queue)
                    .bind(r.queue.as_deref().and_then(|q| q.split('.').next()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("finish a task"))?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO tasks (task_id, job_id, tasktype, site, queue, node, state, parent_task_id, children_count, run,
                           final, created, started, completed, summary, result)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, CASE WHEN $7 = 'CANCELLED' THEN NULL ELSE $11 END, $11, $12, $13)",
                    )
                    .bind(&r.task_id)
                    .bind(job_id)
                    .bind(&r.tasktype)
                    .bind(r.queue.as_deref().and_then(|q| q.split('.').next()))
                    .bind(&r.queue)
                    .bind(&r.node)
                    .bind(r.state)
                    .bind(&r.parent_id)
                    .bind(r.children_count)
                    .bind(&r.run)
                    .bind(r.completed)
                    .bind(summary)
                    .bind(&r.result)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("record a task"))?;
                }
            }
            *stats
                .entry((job_id, r.tasktype.clone(), r.state.to_string()))
                .or_default() += 1;
            for f in &r.failed {
                sqlx::query(
                    "INSERT INTO jobstats (job_id, path, state, code, message, task_id) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (job_id, path) DO UPDATE SET state = excluded.state, code = excluded.code,
                       message = excluded.message, task_id = excluded.task_id",
                )
                .bind(job_id)
                .bind(&f.path)
                .bind(f.state)
                .bind(&f.code)
                .bind(&f.message)
                .bind(&r.task_id)
                .execute(&mut *tx)
                .await
                .map_err(db("record a failed file"))?;
            }
            let me = Counted {
                task_id: r.task_id.clone(),
                job_id,
                state: r.state.to_string(),
                children_count: r.children_count,
                run: r.run.clone(),
                files: counts(summary),
                discovery: r.discovery,
            };
            let verdict = if is_root {
                Some(COUNTED)
            } else {
                parent.as_ref().filter(|p| p.settled).map(|p| match p.counted {
                    COUNTED if announced(&r.task_id, p.run.as_deref(), p.children_count) => COUNTED,
                    _ => ORPHAN,
                })
            };
            match verdict {
                None => out.held += 1,
                Some(v) => settle(&mut tx, me, v, &mut deltas, &mut out).await?,
            }
        }
        for ((job, tasktype, st), n) in &stats {
            if *n != 0 {
                add_stat(&mut tx, *job, tasktype, st, *n).await?;
            }
        }
        let now = now_us();
        for (job, d) in &deltas {
            sqlx::query(
                "UPDATE jobs SET received = received + $2, expected = expected + $3, orphans = orphans + $4,
                   tasks_failed = tasks_failed + $5, files_found = files_found + $6, files_processed = files_processed + $7,
                   files_skipped = files_skipped + $8, files_aborted = files_aborted + $9, files_failures = files_failures + $10,
                   dir_walk_complete = CASE WHEN $11 = 1 THEN 1 ELSE dir_walk_complete END,
                   state = CASE WHEN state = 'PENDING' AND $12 = 1 THEN 'STARTED' ELSE state END,
                   started = CASE WHEN started IS NULL AND $12 = 1 THEN $13 ELSE started END
                 WHERE id = $1",
            )
            .bind(job)
            .bind(d.received)
            .bind(d.expected)
            .bind(d.orphans)
            .bind(d.tasks_failed)
            .bind(d.files.found)
            .bind(d.files.processed)
            .bind(d.files.skipped)
            .bind(d.files.aborted)
            .bind(d.files.failures)
            .bind(d.walked as i64)
            .bind(d.acted as i64)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("count a job's results"))?;
            if let Some(end) = super::ledger::finish_if_done(&mut tx, *job, now).await? {
                out.finished_jobs.push((*job, end));
            }
        }
        tx.commit().await.map_err(db("commit ingest"))?;
        Ok(out)
    }

    /// Records tasks as started on a node (monitoring events): a task not
    /// yet final becomes STARTED; an unknown one whose root is one of this
    /// hub's is added to that root's job.
    pub async fn mark_started(&self, batch: &[Started]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let mut stats: FxHashMap<(i64, String, String), i64> = FxHashMap::default();
        let mut jobs: Vec<i64> = Vec::new();
        for s in batch {
            let existing = sqlx::query("SELECT job_id, final, state, tasktype, is_root FROM tasks WHERE task_id = $1")
                .bind(&s.task_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("read a task"))?;
            match existing {
                Some(row) => {
                    let (job, old, tasktype): (i64, String, String) = (row.get(0), row.get(2), row.get(3));
                    if row.get::<i64, _>(1) != 0 || old == task_state::STARTED {
                        continue;
                    }
                    sqlx::query("UPDATE tasks SET state = 'STARTED', node = $2, started = $3 WHERE task_id = $1")
                        .bind(&s.task_id)
                        .bind(&s.node)
                        .bind(s.at)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("start a task"))?;
                    *stats.entry((job, tasktype.clone(), old)).or_default() -= 1;
                    *stats.entry((job, tasktype, task_state::STARTED.into())).or_default() += 1;
                    if row.get::<i64, _>(4) == 0 {
                        jobs.push(job);
                    }
                }
                None => {
                    // Only tasks of this hub's jobs: their root is one of its rows.
                    let root = sqlx::query("SELECT job_id FROM tasks WHERE task_id = $1 AND is_root = 1")
                        .bind(&s.root_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("read a root task"))?;
                    let Some(job) = root.map(|r| r.get::<i64, _>(0)) else {
                        continue;
                    };
                    sqlx::query(
                        "INSERT INTO tasks (task_id, job_id, tasktype, node, state, parent_task_id, created, started)
                         VALUES ($1, $2, $3, $4, 'STARTED', $5, $6, $6)",
                    )
                    .bind(&s.task_id)
                    .bind(job)
                    .bind(&s.tasktype)
                    .bind(&s.node)
                    .bind(&s.parent_id)
                    .bind(s.at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("record a started task"))?;
                    *stats
                        .entry((job, s.tasktype.clone(), task_state::STARTED.into()))
                        .or_default() += 1;
                    jobs.push(job);
                }
            }
        }
        for ((job, tasktype, st), n) in &stats {
            if *n != 0 {
                add_stat(&mut tx, *job, tasktype, st, *n).await?;
            }
        }
        jobs.sort_unstable();
        jobs.dedup();
        let now = now_us();
        for job in jobs {
            sqlx::query("UPDATE jobs SET state = 'STARTED', started = COALESCE(started, $2) WHERE id = $1 AND state = 'PENDING'")
                .bind(job)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db("start a job"))?;
        }
        tx.commit().await.map_err(db("commit"))?;
        Ok(())
    }

    /// Tasks STARTED before `before` (µs), not finished, on no node that
    /// has beaten since `alive_since`, as failures to file: the seed's
    /// `task_invalidation_timeout` ("STARTED tasks not running in any
    /// queue"). A node seen dying has its tasks set back to PENDING
    /// instead ([`Store::requeue_node`]); this catches the rest (a task
    /// whose node the hub never knew, or forgot).
    pub async fn lost_tasks(&self, before: i64, alive_since: i64, limit: i64) -> Result<Vec<Finished>, StoreError> {
        let rows = sqlx::query(
            "SELECT task_id, job_id, parent_task_id, tasktype, node, queue FROM tasks
             WHERE final = 0 AND state = 'STARTED' AND started < $1
               AND (node IS NULL OR node NOT IN (SELECT name FROM nodes WHERE offline = 0 AND last_heartbeat >= $3))
             ORDER BY id LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .bind(alive_since)
        .fetch_all(&self.pool)
        .await
        .map_err(db("find lost tasks"))?;
        let now = now_us();
        Ok(rows
            .iter()
            .map(|r| Finished {
                task_id: r.get(0),
                jobid: Some(r.get(1)),
                parent_id: r.get(2),
                tasktype: r.get(3),
                node: r.get(4),
                queue: r.get(5),
                state: task_state::FAILURE,
                children_count: 0,
                run: None,
                summary: "{}".into(),
                result: serde_json::json!({
                    "exc_type": "TaskLost",
                    "exc_message": ["no result within task_invalidation_timeout of its start"],
                    "exc_module": "ferry.hub",
                })
                .to_string(),
                failed: Vec::new(),
                completed: now,
                discovery: false,
            })
            .collect())
    }

    /// Sets the STARTED tasks of `node` back to PENDING: the node is gone
    /// and the broker gives their messages (acknowledged late) to another.
    /// Returns how many.
    pub async fn requeue_node(&self, node: &str) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let groups = sqlx::query(
            "SELECT job_id, tasktype, COUNT(*) FROM tasks WHERE node = $1 AND state = 'STARTED' AND final = 0 GROUP BY job_id, tasktype",
        )
        .bind(node)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("find a node's tasks"))?;
        let mut total = 0;
        for g in &groups {
            let (job, tasktype, n): (i64, String, i64) = (g.get(0), g.get(1), g.get(2));
            add_stat(&mut tx, job, &tasktype, task_state::STARTED, -n).await?;
            add_stat(&mut tx, job, &tasktype, task_state::PENDING, n).await?;
            total += n as u64;
        }
        sqlx::query(
            "UPDATE tasks SET state = 'PENDING', node = NULL WHERE node = $1 AND state = 'STARTED' AND final = 0",
        )
        .bind(node)
        .execute(&mut *tx)
        .await
        .map_err(db("requeue a node's tasks"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(total)
    }
}

/// Counts (or orphans) a final task and everything held below it.
async fn settle(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    first: Counted,
    verdict: i64,
    deltas: &mut FxHashMap<i64, JobDelta>,
    out: &mut Ingested,
) -> Result<(), StoreError> {
    let mut stack = vec![(first, verdict)];
    while let Some((t, v)) = stack.pop() {
        sqlx::query("UPDATE tasks SET counted = $2 WHERE task_id = $1")
            .bind(&t.task_id)
            .bind(v)
            .execute(&mut **tx)
            .await
            .map_err(db("count a task"))?;
        let d = deltas.entry(t.job_id).or_default();
        if v == COUNTED {
            out.counted += 1;
            d.received += 1;
            d.expected += t.children_count;
            d.files.add(&t.files);
            d.tasks_failed += failed_state(&t.state) as i64;
            d.walked |= t.discovery;
            d.acted |= !t.discovery;
        } else {
            out.orphans += 1;
            d.orphans += 1;
        }
        if t.children_count == 0 {
            // Nothing it announced can be held for it.
            continue;
        }
        let held = sqlx::query(
            "SELECT task_id, job_id, state, children_count, run, summary, tasktype FROM tasks
             WHERE parent_task_id = $1 AND final = 1 AND counted = 0",
        )
        .bind(&t.task_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("find held children"))?;
        for h in &held {
            let child = Counted {
                task_id: h.get(0),
                job_id: h.get(1),
                state: h.get(2),
                children_count: h.get(3),
                run: h.get(4),
                files: counts(h.get::<Option<String>, _>(5).as_deref().unwrap_or("{}")),
                discovery: is_discovery(&h.get::<String, _>(6)),
            };
            let cv = match v {
                COUNTED if announced(&child.task_id, t.run.as_deref(), t.children_count) => COUNTED,
                _ => ORPHAN,
            };
            stack.push((child, cv));
        }
    }
    Ok(())
}

/// The per-file counts of a summary (zero for what it lacks or cannot
/// be read: the agent writes summaries, so that is a bug, not input).
pub fn counts(summary: &str) -> FileCounts {
    serde_json::from_str::<Summary>(summary)
        .map(|s| s.counts())
        .unwrap_or_default()
}

/// A summary's counts, as the agent writes them.
#[derive(serde::Deserialize)]
struct Summary {
    #[serde(default)]
    files: i64,
    #[serde(default)]
    processed: i64,
    #[serde(default)]
    skipped: i64,
    #[serde(default)]
    aborted: i64,
    #[serde(default)]
    failures: i64,
    #[serde(default)]
    children: Option<i64>,
}

impl Summary {
    /// A discovery's `files` are files found (its `children` key marks
    /// it); an operation's are not.
    fn counts(&self) -> FileCounts {
        let discovery = self.children.is_some();
        FileCounts {
            found: if discovery { self.files } else { 0 },
            processed: self.processed,
            skipped: self.skipped,
            aborted: self.aborted,
            failures: self.failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_announced_children_of_the_counted_run_count() {
        let run = ChildId::new_run();
        let other = ChildId::new_run();
        let hex = run_hex(run);
        let id = |r, seq| ChildId { run: r, seq }.to_uuid();
        assert!(announced(&id(run, 0), Some(&hex), 2));
        assert!(announced(&id(run, 1), Some(&hex), 2));
        assert!(!announced(&id(run, 2), Some(&hex), 2));
        assert!(!announced(&id(other, 0), Some(&hex), 2));
        assert!(!announced(&id(run, 0), None, 2));
        assert!(announced(&uuid::Uuid::new_v4().to_string(), Some(&hex), 0));
    }
}
