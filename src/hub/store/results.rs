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

use super::batch::{self, Known};
use super::events::{self, NewEvent, kind};
use super::files::{FileFailure, completed_files, write_failures};
use super::ledger::{add_stat, state, task_state};
use super::{Engine, Store, StoreError, db, now_us};
use crate::agent::celery::{ChildId, run_hex};
use crate::task::TaskName;
use rustc_hash::FxHashMap;
use sqlx::Row;

/// A running discovery's report (`PROGRESS`): what its walk found so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The job.
    pub jobid: i64,
    /// Files found.
    pub files: i64,
    /// Bytes of those files (0 when the walk does not stat).
    pub bytes: i64,
    /// Children published.
    pub children: i64,
}

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
    /// Walks of a split discovery this result opens less the one it
    /// closes: a discovery's pieces, less one when it is itself a piece.
    /// The job's walk is complete when its sum comes back to zero.
    #[serde(default)]
    pub walks: i64,
}

impl FileCounts {
    fn add(&mut self, o: &FileCounts) {
        self.walks += o.walks;
        self.found += o.found;
        self.processed += o.processed;
        self.skipped += o.skipped;
        self.aborted += o.aborted;
        self.failures += o.failures;
    }
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
    /// The files it failed and aborted (a row is kept for those its
    /// job's `record_files` asks for).
    pub failed: Vec<FileFailure>,
    /// The lists of files it processed and skipped, by state, as their
    /// JSON text (`details.processed`, `details.skipped`; empty lists left
    /// out). A worker's result lists every file of its batch, and most
    /// jobs keep no row of them (`record_files` other than `all`), so they
    /// are read into rows only for a job that does
    /// ([`super::files::completed_files`]).
    pub completed_lists: Vec<(&'static str, String)>,
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

impl Ingested {
    /// Adds what another batch did.
    pub fn absorb(&mut self, o: Ingested) {
        self.counted += o.counted;
        self.held += o.held;
        self.orphans += o.orphans;
        self.duplicates += o.duplicates;
        self.unknown += o.unknown;
        self.finished_jobs.extend(o.finished_jobs);
    }
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

/// A task counting has a verdict for, as the verdict needs it.
struct Counted {
    task_id: String,
    job_id: i64,
    state: String,
    children_count: i64,
    run: Option<String>,
    files: FileCounts,
    discovery: bool,
    /// A `recursive_navigate`: its children that are walks too are the
    /// pieces of a split walk.
    walk: bool,
}

/// A result of the batch that will be written, and its verdict so far.
struct Pending<'a> {
    r: &'a Finished,
    job_id: i64,
    /// 0 while held, then `COUNTED` or `ORPHAN`.
    counted: i64,
}

/// What one batch decides before it writes: the rows to write, the
/// results held for a parent, and what the job counters gain.
#[derive(Default)]
struct Tally<'a> {
    rows: Vec<Pending<'a>>,
    /// Parent task id → rows of this batch held for it.
    held: FxHashMap<String, Vec<usize>>,
    deltas: FxHashMap<i64, JobDelta>,
    out: Ingested,
}

impl Tally<'_> {
    /// Adds a task with verdict `v` to its job's counters.
    fn count(&mut self, t: &Counted, v: i64) {
        let d = self.deltas.entry(t.job_id).or_default();
        if v == COUNTED {
            self.out.counted += 1;
            d.received += 1;
            d.expected += t.children_count;
            d.files.add(&t.files);
            d.tasks_failed += failed_state(&t.state) as i64;
            d.walked |= t.discovery;
            d.acted |= !t.discovery;
        } else {
            self.out.orphans += 1;
            d.orphans += 1;
        }
    }
}

const COUNTED: i64 = 1;
const ORPHAN: i64 = 2;

/// Whether a task is a walk whose result ends a job's discovery.
pub fn is_discovery(tasktype: &str) -> bool {
    TaskName::parse(tasktype).is_some_and(|t| DISCOVERY_TASKS.contains(&t))
}

/// Whether a task is a `recursive_navigate`, the discovery that splits
/// into pieces (walks sent by a walk).
fn is_walk(tasktype: &str) -> bool {
    TaskName::parse(tasktype) == Some(TaskName::RecursiveNavigate)
}

/// The tasks that discover (walk or diff) rather than act.
pub const DISCOVERY_TASKS: [TaskName; 2] = [TaskName::RecursiveNavigate, TaskName::Snapdiff];

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
    /// documentation for what counts). The rows it needs are read at once
    /// and the verdicts given in memory, in the batch's order; then every
    /// row is written with its verdict by a few multi-row statements
    /// ([`super::batch`]).
    pub async fn ingest(&self, batch: &[Finished]) -> Result<Ingested, StoreError> {
        let _filing = self.filing.lock().await;
        let mut tx = self.write().await?;
        // The results' own rows and their parents' (a parent's row implies
        // its job); then the jobs the other results name.
        let ids = batch
            .iter()
            .flat_map(|r| std::iter::once(r.task_id.as_str()).chain(r.parent_id.as_deref()))
            .collect();
        let mut known = batch::known_tasks(&mut tx, self.engine, ids).await?;
        // Which jobs exist, and the files each keeps a row for.
        let mut named: Vec<i64> = batch
            .iter()
            .filter(|r| !known.contains_key(&r.task_id))
            .filter_map(|r| r.jobid)
            .chain(known.values().map(|k| k.job_id))
            .collect();
        named.sort_unstable();
        named.dedup();
        let jobs = batch::existing_jobs(&mut tx, self.engine, &named).await?;

        let mut t = Tally::default();
        let mut stats: FxHashMap<(i64, String, String), i64> = FxHashMap::default();
        // Each result's job, when it is filed.
        let mut filed: Vec<Option<i64>> = Vec::with_capacity(batch.len());
        for r in batch {
            filed.push(None);
            let parent = r.parent_id.as_ref().and_then(|p| known.get(p));
            let (job_id, is_root) = match known.get(&r.task_id) {
                Some(k) if k.fin => {
                    t.out.duplicates += 1;
                    continue;
                }
                Some(k) => {
                    *stats
                        .entry((k.job_id, k.tasktype.clone(), k.state.clone()))
                        .or_default() -= 1;
                    (k.job_id, k.is_root)
                }
                None => {
                    let from_parent = parent.map(|p| p.job_id);
                    match r.jobid.or(from_parent) {
                        Some(j) if jobs.contains_key(&j) || Some(j) == from_parent => (j, false),
                        _ => {
                            t.out.unknown += 1;
                            continue;
                        }
                    }
                }
            };
            *stats
                .entry((job_id, r.tasktype.clone(), r.state.to_string()))
                .or_default() += 1;
            *filed.last_mut().expect("pushed") = Some(job_id);
            let verdict = if is_root {
                Some(COUNTED)
            } else {
                parent.filter(|p| p.settled()).map(|p| match p.counted {
                    COUNTED if announced(&r.task_id, p.run.as_deref(), p.children_count) => COUNTED,
                    _ => ORPHAN,
                })
            };
            let below_walk = parent.is_some_and(|p| is_walk(&p.tasktype));
            let row = t.rows.len();
            t.rows.push(Pending { r, job_id, counted: 0 });
            known.insert(
                r.task_id.clone(),
                Known {
                    job_id,
                    fin: true,
                    is_root,
                    state: r.state.to_string(),
                    tasktype: r.tasktype.clone(),
                    counted: 0,
                    run: r.run.clone(),
                    children_count: r.children_count,
                },
            );
            match verdict {
                Some(v) => settle(&mut tx, self.engine, (row, v, below_walk), &mut t, &mut known).await?,
                None => {
                    t.out.held += 1;
                    if let Some(p) = &r.parent_id {
                        t.held.entry(p.clone()).or_default().push(row);
                    }
                }
            }
        }

        write_tasks(&mut tx, self.engine, &t.rows).await?;
        // The files each job keeps a row for; processed and skipped ones
        // are read only for a job that keeps them.
        let completed: Vec<Vec<FileFailure>> = batch
            .iter()
            .zip(&filed)
            .map(|(r, job)| match job.and_then(|j| jobs.get(&j)) {
                Some(rec) => completed_files(&r.completed_lists, |state| rec.keeps(state)),
                None => Vec::new(),
            })
            .collect();
        // Failed files by (job, path): the last report of a path wins.
        let mut failed: FxHashMap<(i64, &str), (&FileFailure, &str)> = FxHashMap::default();
        let mut failed_order: Vec<(i64, &str)> = Vec::new();
        for ((r, job), more) in batch.iter().zip(&filed).zip(&completed) {
            let Some(job_id) = *job else { continue };
            let recording = jobs.get(&job_id).copied().unwrap_or_default();
            for f in r.failed.iter().chain(more).filter(|f| recording.keeps(f.state)) {
                let key = (job_id, f.path.as_str());
                if failed.insert(key, (f, &r.task_id)).is_none() {
                    failed_order.push(key);
                }
            }
        }
        write_failures(&mut tx, self.engine, &failed_order, &failed, now_us()).await?;
        for ((job, tasktype, st), n) in &stats {
            if *n != 0 {
                add_stat(&mut tx, *job, tasktype, st, *n).await?;
            }
        }
        let now = now_us();
        let mut out = t.out;
        let mut changes = task_events(&t.rows);
        for (job, d) in &t.deltas {
            if d.acted {
                let started =
                    sqlx::query("UPDATE jobs SET state = 'STARTED' WHERE id = $1 AND state = 'PENDING' RETURNING id")
                        .bind(job)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("start a job"))?;
                if started.is_some() {
                    changes.push(NewEvent::job(*job, state::STARTED));
                }
            }
            sqlx::query(
                "UPDATE jobs SET received = received + $2, expected = expected + $3, orphans = orphans + $4,
                   tasks_failed = tasks_failed + $5, files_found = files_found + $6, files_processed = files_processed + $7,
                   files_skipped = files_skipped + $8, files_aborted = files_aborted + $9, files_failures = files_failures + $10,
                   dir_walk_complete = CASE WHEN $11 = 1 AND walks_open + $14 = 0 THEN 1 ELSE dir_walk_complete END,
                   started = CASE WHEN started IS NULL AND $12 = 1 THEN $13 ELSE started END,
                   walks_open = walks_open + $14
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
            .bind(d.files.walks)
            .execute(&mut *tx)
            .await
            .map_err(db("count a job's results"))?;
            if let Some(end) = super::ledger::finish_if_done(&mut tx, *job, now).await? {
                out.finished_jobs.push((*job, end));
                changes.push(NewEvent::job(*job, end));
            }
        }
        events::commit(tx, self.engine, &changes, "commit ingest").await?;
        Ok(out)
    }

    /// Records tasks as started on a node (monitoring events): a task not
    /// yet final becomes STARTED; an unknown one whose root is one of this
    /// hub's is added to that root's job.
    pub async fn mark_started(&self, batch: &[Started]) -> Result<(), StoreError> {
        // Both this and [`Store::ingest`] read a task's row and change the
        // counters by what they read: side by side on PostgreSQL each
        // would move the same task from the state it saw, and the job's
        // task counters would drift from its rows.
        let _filing = self.filing.lock().await;
        let mut tx = self.write().await?;
        let ids = batch
            .iter()
            .flat_map(|s| [s.task_id.as_str(), s.root_id.as_str()])
            .collect();
        let mut known = batch::known_tasks(&mut tx, self.engine, ids).await?;
        let mut stats: FxHashMap<(i64, String, String), i64> = FxHashMap::default();
        let mut jobs: Vec<i64> = Vec::new();
        let mut rows: Vec<(&Started, i64)> = Vec::new();
        for s in batch {
            match known.get_mut(&s.task_id) {
                Some(k) => {
                    if k.fin || k.state == task_state::STARTED {
                        continue;
                    }
                    let old = std::mem::replace(&mut k.state, task_state::STARTED.into());
                    *stats.entry((k.job_id, k.tasktype.clone(), old)).or_default() -= 1;
                    *stats
                        .entry((k.job_id, k.tasktype.clone(), task_state::STARTED.into()))
                        .or_default() += 1;
                    if !k.is_root {
                        jobs.push(k.job_id);
                    }
                    rows.push((s, k.job_id));
                }
                None => {
                    // Only tasks of this hub's jobs: their root is one of its rows.
                    let Some(job) = known.get(&s.root_id).filter(|k| k.is_root).map(|k| k.job_id) else {
                        continue;
                    };
                    *stats
                        .entry((job, s.tasktype.clone(), task_state::STARTED.into()))
                        .or_default() += 1;
                    jobs.push(job);
                    rows.push((s, job));
                    known.insert(
                        s.task_id.clone(),
                        Known {
                            job_id: job,
                            fin: false,
                            is_root: false,
                            state: task_state::STARTED.into(),
                            tasktype: s.tasktype.clone(),
                            counted: 0,
                            run: None,
                            children_count: 0,
                        },
                    );
                }
            }
        }
        for chunk in rows.chunks(batch::CHUNK) {
            // A row already there (a root, or a task requeued to PENDING)
            // keeps its type and parent; a final one is never touched.
            let sql = format!(
                "INSERT INTO tasks (task_id, job_id, tasktype, node, state, parent_task_id, created, started) VALUES {}
                 ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, node = excluded.node, started = excluded.started
                 WHERE tasks.final = 0",
                batch::tuples(self.engine, chunk.len(), 8)
            );
            let mut q = batch::statement(&sql, chunk.len());
            for (s, job) in chunk {
                q = q
                    .bind(&s.task_id)
                    .bind(*job)
                    .bind(&s.tasktype)
                    .bind(&s.node)
                    .bind(task_state::STARTED)
                    .bind(&s.parent_id)
                    .bind(s.at)
                    .bind(s.at);
            }
            q.execute(&mut *tx).await.map_err(db("record started tasks"))?;
        }
        for ((job, tasktype, st), n) in &stats {
            if *n != 0 {
                add_stat(&mut tx, *job, tasktype, st, *n).await?;
            }
        }
        jobs.sort_unstable();
        jobs.dedup();
        let now = now_us();
        let mut changes = Vec::new();
        for job in jobs {
            let started = sqlx::query(
                "UPDATE jobs SET state = 'STARTED', started = COALESCE(started, $2) WHERE id = $1 AND state = 'PENDING' RETURNING id",
            )
            .bind(job)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("start a job"))?;
            if started.is_some() {
                changes.push(NewEvent::job(job, state::STARTED));
            }
        }
        events::commit(tx, self.engine, &changes, "commit started tasks").await
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
                completed_lists: Vec::new(),
                completed: now,
                discovery: false,
            })
            .collect())
    }

    /// Sets the STARTED tasks of `node` back to PENDING: the node is gone
    /// and the broker gives their messages (acknowledged late) to another.
    /// The first time after the node was online, an `OFFLINE` event says
    /// so. Returns how many tasks.
    pub async fn requeue_node(&self, node: &str) -> Result<u64, StoreError> {
        // Counted, then changed: no result may be filed in between.
        let _filing = self.filing.lock().await;
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
        // Reported once: a node found gone again after a restart of the
        // hub, before any heartbeat, is not news.
        let news = sqlx::query("UPDATE nodes SET gone = 1 WHERE name = $1 AND gone = 0 RETURNING id")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("take a node for gone"))?;
        let gone: Vec<NewEvent> = news
            .map(|_| NewEvent {
                kind: kind::NODE,
                job: None,
                node: Some(node.to_string()),
                state: "OFFLINE".into(),
                detail: serde_json::json!({"requeued": total}),
            })
            .into_iter()
            .collect();
        events::commit(tx, self.engine, &gone, "commit a node's requeue").await?;
        Ok(total)
    }
}

/// Where orphaned ids go in a release's ids by verdict.
const ORPHAN_AT: usize = 1;

/// Most held children read and released by one statement.
const RELEASE_CHUNK: i64 = 5_000;

/// Gives row `first.0` of the batch verdict `first.1`, and every result
/// held below it theirs: rows of this batch in memory (they are written
/// after), rows of earlier batches in the database, a chunk at a time
/// (a walk's result can release millions of children that finished
/// before it). `first.2`: the row's parent is a walk ([`is_walk`]).
async fn settle(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    engine: Engine,
    first: (usize, i64, bool),
    t: &mut Tally<'_>,
    known: &mut FxHashMap<String, Known>,
) -> Result<(), StoreError> {
    // Tasks with a verdict whose held children are still to be found.
    let mut stack: Vec<(Counted, i64)> = Vec::new();
    let mut rows = vec![first];
    loop {
        while let Some((i, v, below_walk)) = rows.pop() {
            t.rows[i].counted = v;
            let r = t.rows[i].r;
            let walk = is_walk(&r.tasktype);
            let me = Counted {
                task_id: r.task_id.clone(),
                job_id: t.rows[i].job_id,
                state: r.state.to_string(),
                children_count: r.children_count,
                run: r.run.clone(),
                files: task_counts(&r.summary, below_walk && walk),
                discovery: r.discovery,
                walk,
            };
            if let Some(k) = known.get_mut(&r.task_id) {
                k.counted = v;
            }
            t.count(&me, v);
            if me.children_count > 0 {
                stack.push((me, v));
            }
        }
        let Some((parent, v)) = stack.pop() else {
            return Ok(());
        };
        // Its children held in this batch.
        for i in t.held.remove(&parent.task_id).unwrap_or_default() {
            rows.push((i, verdict_below(&parent, v, &t.rows[i].r.task_id), parent.walk));
        }
        // And in earlier ones.
        let mut after = String::new();
        loop {
            let held = sqlx::query(
                "SELECT task_id, job_id, state, children_count, run, summary, tasktype FROM tasks
                 WHERE parent_task_id = $1 AND final = 1 AND counted = 0 AND task_id > $2
                 ORDER BY task_id LIMIT $3",
            )
            .bind(&parent.task_id)
            .bind(&after)
            .bind(RELEASE_CHUNK)
            .fetch_all(&mut **tx)
            .await
            .map_err(db("find held children"))?;
            let Some(last) = held.last() else { break };
            let first: String = held[0].get(0);
            let last: String = last.get(0);
            // Ids counted, then ids orphaned.
            let mut by_verdict: [Vec<String>; 2] = [Vec::new(), Vec::new()];
            for h in &held {
                let tasktype = h.get::<String, _>(6);
                let summary = h.get::<Option<String>, _>(5);
                let walk = is_walk(&tasktype);
                let child = Counted {
                    task_id: h.get(0),
                    job_id: h.get(1),
                    state: h.get(2),
                    children_count: h.get(3),
                    run: h.get(4),
                    files: task_counts(summary.as_deref().unwrap_or("{}"), parent.walk && walk),
                    discovery: is_discovery(&tasktype),
                    walk,
                };
                let cv = verdict_below(&parent, v, &child.task_id);
                t.count(&child, cv);
                by_verdict[if cv == ORPHAN { ORPHAN_AT } else { 0 }].push(child.task_id.clone());
                if child.children_count > 0 {
                    // A result of this batch may name it as parent.
                    known.insert(
                        child.task_id.clone(),
                        Known {
                            job_id: child.job_id,
                            fin: true,
                            is_root: false,
                            state: child.state.clone(),
                            tasktype: h.get(6),
                            counted: cv,
                            run: child.run.clone(),
                            children_count: child.children_count,
                        },
                    );
                    stack.push((child, cv));
                }
            }
            if by_verdict[ORPHAN_AT].is_empty() {
                // All counted (the usual case): the chunk is exactly the
                // held children of this parent in [first, last], which one
                // range update through the held index releases.
                sqlx::query(
                    "UPDATE tasks SET counted = $1 WHERE parent_task_id = $2 AND final = 1 AND counted = 0
                       AND task_id >= $3 AND task_id <= $4",
                )
                .bind(COUNTED)
                .bind(&parent.task_id)
                .bind(&first)
                .bind(&last)
                .execute(&mut **tx)
                .await
                .map_err(db("count held children"))?;
            } else {
                for (ids, cv) in by_verdict.iter().zip([COUNTED, ORPHAN]) {
                    for chunk in ids.chunks(batch::CHUNK) {
                        let sql = format!(
                            "UPDATE tasks SET counted = {} WHERE task_id IN ({})",
                            batch::placeholders(engine, 1, 1),
                            batch::placeholders(engine, 2, chunk.len())
                        );
                        let mut q = batch::statement(&sql, chunk.len()).bind(cv);
                        for id in chunk {
                            q = q.bind(id);
                        }
                        q.execute(&mut **tx).await.map_err(db("count held children"))?;
                    }
                }
            }
            after = last;
            if (held.len() as i64) < RELEASE_CHUNK {
                break;
            }
        }
    }
}

/// The verdict of `child` (a task id) below a parent with verdict `v`.
fn verdict_below(parent: &Counted, v: i64, child: &str) -> i64 {
    match v {
        COUNTED if announced(child, parent.run.as_deref(), parent.children_count) => COUNTED,
        _ => ORPHAN,
    }
}

/// The events a batch's results make: each task that failed (`FAILURE`,
/// `ERROR`), up to [`events::TASKS_PER_BATCH`], then one per job with
/// the batch's finished tasks counted by state. Not one per task: at ten
/// thousand results a second that would double what the hub writes
/// (docs/decisions.md, "Event feed").
fn task_events(rows: &[Pending<'_>]) -> Vec<NewEvent> {
    let mut out: Vec<NewEvent> = rows
        .iter()
        .filter(|p| failed_state(p.r.state))
        .take(events::TASKS_PER_BATCH)
        .map(|p| NewEvent {
            kind: kind::TASK,
            job: Some(p.job_id),
            node: p.r.node.clone(),
            state: p.r.state.to_string(),
            detail: serde_json::json!({"task_id": p.r.task_id, "tasktype": p.r.tasktype, "queue": p.r.queue}),
        })
        .collect();
    let mut by_job: Vec<(i64, std::collections::BTreeMap<&str, i64>)> = Vec::new();
    for p in rows {
        let at = match by_job.iter().position(|(j, _)| *j == p.job_id) {
            Some(i) => i,
            None => {
                by_job.push((p.job_id, Default::default()));
                by_job.len() - 1
            }
        };
        *by_job[at].1.entry(p.r.state).or_default() += 1;
    }
    out.extend(by_job.into_iter().map(|(job, counts)| NewEvent {
        kind: kind::TASKS,
        job: Some(job),
        node: None,
        state: "FINISHED".into(),
        detail: serde_json::json!({ "counts": counts }),
    }));
    out
}

/// Files the batch's rows: new ones inserted, those a start event made
/// updated, each with its verdict (multi-row upserts).
async fn write_tasks(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    engine: Engine,
    rows: &[Pending<'_>],
) -> Result<(), StoreError> {
    const COLS: usize = 17;
    for chunk in rows.chunks(batch::CHUNK) {
        let sql = format!(
            "INSERT INTO tasks (task_id, job_id, tasktype, site, queue, node, state, parent_task_id, children_count, run,
               final, counted, created, started, completed, summary, result)
             VALUES {}
             ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, final = 1, counted = excluded.counted,
               node = COALESCE(excluded.node, tasks.node), children_count = excluded.children_count, run = excluded.run,
               completed = excluded.completed,
               started = CASE WHEN excluded.state = 'CANCELLED' THEN tasks.started ELSE COALESCE(tasks.started, excluded.completed) END,
               summary = excluded.summary, result = excluded.result, tasktype = excluded.tasktype,
               queue = COALESCE(tasks.queue, excluded.queue), site = COALESCE(tasks.site, excluded.site)",
            batch::tuples(engine, chunk.len(), COLS)
        );
        let mut q = batch::statement(&sql, chunk.len());
        for p in chunk {
            let r = p.r;
            let site = r.queue.as_deref().and_then(|q| q.split('.').next());
            let started = (r.state != task_state::CANCELLED).then_some(r.completed);
            q = q
                .bind(&r.task_id)
                .bind(p.job_id)
                .bind(&r.tasktype)
                .bind(site)
                .bind(&r.queue)
                .bind(&r.node)
                .bind(r.state)
                .bind(&r.parent_id)
                .bind(r.children_count)
                .bind(&r.run)
                // Every row written is final.
                .bind(1i64)
                .bind(p.counted)
                .bind(r.completed)
                .bind(started)
                .bind(r.completed)
                .bind(&r.summary)
                .bind(&r.result);
        }
        q.execute(&mut **tx).await.map_err(db("record tasks"))?;
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

/// A counted task's file counts: its summary's, and for a piece of a
/// split walk (`piece`: a walk sent by a walk) that failed or
/// was revoked, and so wrote no summary, the walk it closes all the same:
/// otherwise the job's walk would stay open, and `dir_walk_complete`
/// false, until the job ends.
fn task_counts(summary: &str, piece: bool) -> FileCounts {
    let parsed = serde_json::from_str::<Summary>(summary).ok();
    let mut c = parsed.as_ref().map(Summary::counts).unwrap_or_default();
    if piece && parsed.is_none_or(|s| s.children.is_none()) {
        c.walks = -1;
    }
    c
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
    #[serde(default)]
    pieces: i64,
    #[serde(default)]
    piece: bool,
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
            walks: self.pieces - self.piece as i64,
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

    #[test]
    fn a_split_walk_opens_a_walk_per_piece_and_each_piece_closes_its_own() {
        // A root that sent 2 pieces, one of which sent 1 more, as the
        // agent writes their summaries (navigate.rs).
        let summaries = [
            r#"{"files":5,"children":4,"pieces":2,"piece":false}"#,
            r#"{"files":3,"children":2,"pieces":1,"piece":true}"#,
            r#"{"files":2,"children":1,"pieces":0,"piece":true}"#,
            r#"{"files":4,"children":1,"pieces":0,"piece":true}"#,
        ];
        let walks: Vec<i64> = summaries.iter().map(|s| counts(s).walks).collect();
        assert_eq!(walks, [2, 0, -1, -1]);
        // Open after each result, in the order a hub counts them (a child
        // only after its parent): never zero before the last.
        let open: Vec<i64> = walks
            .iter()
            .scan(0, |o, w| {
                *o += w;
                Some(*o)
            })
            .collect();
        assert_eq!(open, [2, 2, 1, 0]);
        // An unsplit walk and an operation open nothing.
        assert_eq!(counts(r#"{"files":5,"children":1}"#).walks, 0);
        assert_eq!(counts(r#"{"processed":3}"#).walks, 0);
    }
}
