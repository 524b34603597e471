//! Jobs, their tasks, and the outbox of root tasks waiting to be
//! published.
//!
//! A job and its root tasks are written in one transaction together with
//! the messages that start them (the outbox); the messages are published
//! after the commit and deleted once the broker confirms them, so a crash
//! or a broker outage between the two loses nothing (a message published
//! twice runs once: its result counts once, see [`super::results`]).

use super::events::{self, NewEvent};
pub use super::files::FileRecord;
use super::files::{FILE_COLUMNS, file_record};
use super::ledger::{add_stat, finish_if_done};
pub use super::sync_run::NewSyncRun;
use super::sync_run::insert_sync_run;
use super::workflows::RecordFiles;
use super::{Statement, Store, StoreError, db, flag, json_col, now_us};
use sqlx::Row;
use sqlx::any::AnyRow;

pub use super::ledger::{state, task_state};

/// Who submitted a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `user`, `system` or `unknown`.
    pub kind: String,
    /// The user's id (−2 system, −1 unknown).
    pub id: i64,
    /// The user's name.
    pub name: String,
}

/// A job row.
#[derive(Clone, Debug)]
pub struct Job {
    /// Row id.
    pub id: i64,
    /// Its workflow's name.
    pub workflow: Option<String>,
    /// Runtime field values.
    pub fields: serde_json::Value,
    /// Its discovery, if any.
    pub discovery: Option<String>,
    /// Site name.
    pub site: String,
    /// Queue name.
    pub queue: String,
    /// E.g. `Premigrate of '/data' on 'site1'`.
    pub friendly_name: String,
    /// Wire state.
    pub state: String,
    /// Times (µs).
    pub created: i64,
    /// When its first task started.
    pub started: Option<i64>,
    /// When it ended.
    pub completed: Option<i64>,
    /// Who submitted it.
    pub owner: Owner,
    /// The client key it came with.
    pub clientkey_id: Option<i64>,
    /// Its input paths (the first thousand).
    pub input_paths: serde_json::Value,
    /// Tasks the hub published for it.
    pub roots: i64,
    /// Of which the broker has confirmed.
    pub roots_published: i64,
    /// Its discovery's result is in.
    pub dir_walk_complete: bool,
    /// Results expected so far: roots plus every child announced.
    pub expected: i64,
    /// Results counted.
    pub received: i64,
    /// Results not counted: children of a discovery that ran again.
    pub orphans: i64,
    /// Counted tasks that failed or had failed files.
    pub tasks_failed: i64,
    /// Files discovery found.
    pub files_found: i64,
    /// Files done.
    pub files_processed: i64,
    /// Files skipped.
    pub files_skipped: i64,
    /// Files aborted.
    pub files_aborted: i64,
    /// Files failed.
    pub files_failures: i64,
    /// The job this one was resubmitted from.
    pub resubmitted_from: Option<i64>,
    /// What its running discovery last reported: files, bytes, children
    /// published, and when (µs).
    pub walk: (i64, i64, i64, Option<i64>),
    /// Which of its files get a row (its workflow's setting when it was
    /// submitted).
    pub record_files: RecordFiles,
    /// It only discovers and reports what it would do.
    pub dry_run: bool,
}

/// A task row.
#[derive(Clone, Debug)]
pub struct Task {
    /// Row id.
    pub id: i64,
    /// Celery task id.
    pub task_id: String,
    /// Job id.
    pub job_id: i64,
    /// Task name.
    pub tasktype: String,
    /// Site name.
    pub site: Option<String>,
    /// Queue (`<site>.<queue>#<function>`).
    pub queue: Option<String>,
    /// The node that ran it.
    pub node: Option<String>,
    /// Wire state.
    pub state: String,
    /// Published by the hub.
    pub is_root: bool,
    /// The task that published it.
    pub parent_task_id: Option<String>,
    /// Children it announced.
    pub children_count: i64,
    /// Times (µs).
    pub created: i64,
    /// Started.
    pub started: Option<i64>,
    /// Finished.
    pub completed: Option<i64>,
    /// Its counts per file state.
    pub summary: Option<serde_json::Value>,
    /// Its result (file lists trimmed to failures).
    pub result: Option<serde_json::Value>,
}

/// A root task to write with its job, and its message.
#[derive(Clone, Debug)]
pub struct RootTask {
    /// Celery task id.
    pub task_id: String,
    /// Task name.
    pub tasktype: String,
    /// Site name.
    pub site: String,
    /// The queue it goes to (`<site>.<queue>#<function>`).
    pub queue: String,
    /// AMQP headers, as JSON (see `hub::submit`).
    pub headers: String,
    /// The message body.
    pub body: String,
}

/// A job to create.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Its workflow's name.
    pub workflow: String,
    /// Runtime field values.
    pub fields: serde_json::Value,
    /// Its discovery.
    pub discovery: Option<String>,
    /// Site name.
    pub site: String,
    /// Queue name.
    pub queue: String,
    /// Display name.
    pub friendly_name: String,
    /// Who submits it.
    pub owner: Owner,
    /// With which client key.
    pub clientkey_id: Option<i64>,
    /// The first thousand input paths.
    pub input_paths: serde_json::Value,
    /// The submission, as JSON, kept to submit it again.
    pub request: Option<String>,
    /// The job this one resubmits.
    pub resubmitted_from: Option<i64>,
    /// Which of its files get a row.
    pub record_files: RecordFiles,
    /// Discover and report only.
    pub dry_run: bool,
    /// A bidirectional sync run's other site and fileset.
    pub sync: Option<NewSyncRun>,
}

/// A message waiting in the outbox.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// Row id.
    pub id: i64,
    /// Its job.
    pub job_id: i64,
    /// Its task id.
    pub task_id: String,
    /// Target queue.
    pub queue: String,
    /// AMQP headers as JSON.
    pub headers: String,
    /// Body.
    pub body: String,
}

/// A value bound to a dynamic filter.
#[derive(Clone, Debug)]
pub enum Bind {
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

/// A WHERE clause built from optional filters, with `$N` placeholders.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    clauses: Vec<String>,
    binds: Vec<Bind>,
}

impl Filter {
    fn next(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// `column op value`.
    pub fn cmp(&mut self, column: &str, op: &str, b: Bind) -> &mut Self {
        let p = self.next(b);
        self.clauses.push(format!("{column} {op} {p}"));
        self
    }

    /// `column IN (values)`; nothing when `values` is empty.
    pub fn any_of(&mut self, column: &str, values: Vec<Bind>) -> &mut Self {
        if values.is_empty() {
            return self;
        }
        let ps: Vec<String> = values.into_iter().map(|v| self.next(v)).collect();
        self.clauses.push(format!("{column} IN ({})", ps.join(", ")));
        self
    }

    /// Whether every clause is on one of `columns`.
    fn only_on(&self, columns: &[&str]) -> bool {
        self.clauses.iter().all(|c| {
            columns
                .iter()
                .any(|col| c.split_once(' ').is_some_and(|(name, _)| name == *col))
        })
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn bind<'q>(&'q self, mut q: Statement<'q>) -> Statement<'q> {
        for b in &self.binds {
            q = match b {
                Bind::Int(i) => q.bind(*i),
                Bind::Text(s) => q.bind(s.as_str()),
            };
        }
        q
    }
}

/// A page: at most `limit` rows after `offset` (no limit when `None`).
#[derive(Clone, Copy, Debug)]
pub struct Page {
    /// Rows skipped.
    pub offset: i64,
    /// Rows returned at most.
    pub limit: Option<i64>,
}

impl Page {
    fn sql(&self) -> String {
        match self.limit {
            Some(l) => format!(" LIMIT {l} OFFSET {}", self.offset),
            None => String::new(),
        }
    }
}

const JOB_COLUMNS: &str = "id, workflow, fields, discovery, site, queue, friendly_name, state, created, started, completed, owner_type, owner_id, owner_name, clientkey_id, input_paths, roots, roots_published, dir_walk_complete, expected, received, orphans, tasks_failed, files_found, files_processed, files_skipped, files_aborted, files_failures, resubmitted_from, walk_files, walk_bytes, walk_children, walk_at, record_files, dry_run";

/// [`JOB_COLUMNS`] without the input paths (a job keeps up to 1,000):
/// what a table of jobs reads.
const JOB_BRIEF_COLUMNS: &str = "id, workflow, fields, discovery, site, queue, friendly_name, state, created, started, completed, owner_type, owner_id, owner_name, clientkey_id, '[]' AS input_paths, roots, roots_published, dir_walk_complete, expected, received, orphans, tasks_failed, files_found, files_processed, files_skipped, files_aborted, files_failures, resubmitted_from, walk_files, walk_bytes, walk_children, walk_at, record_files, dry_run";

fn job(r: &AnyRow) -> Result<Job, StoreError> {
    Ok(Job {
        id: r.get("id"),
        workflow: r.get("workflow"),
        fields: json_col(r, "jobs", "fields")?,
        discovery: r.get("discovery"),
        site: r.get("site"),
        queue: r.get("queue"),
        friendly_name: r.get("friendly_name"),
        state: r.get("state"),
        created: r.get("created"),
        started: r.get("started"),
        completed: r.get("completed"),
        owner: Owner {
            kind: r.get("owner_type"),
            id: r.get("owner_id"),
            name: r.get("owner_name"),
        },
        clientkey_id: r.get("clientkey_id"),
        input_paths: json_col(r, "jobs", "input_paths")?,
        roots: r.get("roots"),
        roots_published: r.get("roots_published"),
        dir_walk_complete: flag(r, "dir_walk_complete"),
        expected: r.get("expected"),
        received: r.get("received"),
        orphans: r.get("orphans"),
        tasks_failed: r.get("tasks_failed"),
        files_found: r.get("files_found"),
        files_processed: r.get("files_processed"),
        files_skipped: r.get("files_skipped"),
        files_aborted: r.get("files_aborted"),
        files_failures: r.get("files_failures"),
        resubmitted_from: r.get("resubmitted_from"),
        walk: (
            r.get("walk_files"),
            r.get("walk_bytes"),
            r.get("walk_children"),
            r.get("walk_at"),
        ),
        record_files: RecordFiles::read(r, "jobs")?,
        dry_run: flag(r, "dry_run"),
    })
}

const TASK_COLUMNS: &str = "id, task_id, job_id, tasktype, site, queue, node, state, is_root, parent_task_id, children_count, created, started, completed, summary, result";

fn task(r: &AnyRow) -> Result<Task, StoreError> {
    let opt_json = |c: &'static str| -> Result<Option<serde_json::Value>, StoreError> {
        match r.get::<Option<String>, _>(c) {
            None => Ok(None),
            Some(_) => json_col(r, "tasks", c).map(Some),
        }
    };
    Ok(Task {
        id: r.get("id"),
        task_id: r.get("task_id"),
        job_id: r.get("job_id"),
        tasktype: r.get("tasktype"),
        site: r.get("site"),
        queue: r.get("queue"),
        node: r.get("node"),
        state: r.get("state"),
        is_root: flag(r, "is_root"),
        parent_task_id: r.get("parent_task_id"),
        children_count: r.get("children_count"),
        created: r.get("created"),
        started: r.get("started"),
        completed: r.get("completed"),
        summary: opt_json("summary")?,
        result: opt_json("result")?,
    })
}

impl Store {
    /// Writes a job, its root tasks and their messages in one
    /// transaction; `roots` builds the tasks from the new job's id.
    pub async fn create_job(&self, new: &NewJob, roots: impl FnOnce(i64) -> Vec<RootTask>) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let id = insert_job(&mut tx, new, roots).await?;
        let created = [NewEvent::job(id, state::PENDING)];
        events::commit(tx, self.engine, &created, "commit a job").await?;
        Ok(id)
    }

    /// Adds a submission's first tasks to job `id` (the `job` field of a
    /// submission): they are published and counted like the job's own,
    /// so it ends only once they are done too. Only a job still running
    /// (`PENDING`, `STARTED`, or paused: they are parked like its own) takes them; the check and the counters
    /// change in one statement, so a job cannot end in between.
    pub async fn append_to_job(&self, id: i64, walks: bool, roots: &[RootTask]) -> Result<Append, StoreError> {
        let now = now_us();
        let mut tx = self.write().await?;
        let taken = sqlx::query(
            "UPDATE jobs SET roots = roots + $2, expected = expected + $2,
               dir_walk_complete = CASE WHEN $3 = 1 THEN 0 ELSE dir_walk_complete END
             WHERE id = $1 AND state IN ('PENDING', 'STARTED', 'PAUSING', 'PAUSED') RETURNING id",
        )
        .bind(id)
        .bind(roots.len() as i64)
        .bind((walks && !roots.is_empty()) as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("add to a job"))?;
        if taken.is_none() {
            let state = sqlx::query("SELECT state FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("read a job"))?;
            return Ok(match state {
                Some(row) => Append::Ended(row.get(0)),
                None => Append::Missing,
            });
        }
        insert_roots(&mut tx, id, roots, now).await?;
        tx.commit().await.map_err(db("commit an addition to a job"))?;
        Ok(Append::Added)
    }

    /// Messages waiting to be published, oldest first.
    pub async fn outbox(&self, limit: i64) -> Result<Vec<Outbound>, StoreError> {
        let rows = sqlx::query("SELECT id, job_id, task_id, queue, headers, body FROM outbox ORDER BY id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db("read the outbox"))?;
        Ok(rows
            .iter()
            .map(|r| Outbound {
                id: r.get("id"),
                job_id: r.get("job_id"),
                task_id: r.get("task_id"),
                queue: r.get("queue"),
                headers: r.get("headers"),
                body: r.get("body"),
            })
            .collect())
    }

    /// A message the broker confirmed: out of the outbox, counted on its job.
    pub async fn published(&self, outbound: &Outbound) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let gone = sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(outbound.id)
            .execute(&mut *tx)
            .await
            .map_err(db("clear the outbox"))?;
        if gone.rows_affected() > 0 {
            sqlx::query("UPDATE jobs SET roots_published = roots_published + 1 WHERE id = $1")
                .bind(outbound.job_id)
                .execute(&mut *tx)
                .await
                .map_err(db("count a published root"))?;
        }
        tx.commit().await.map_err(db("commit"))?;
        Ok(())
    }

    /// Ends a job that has nothing to run (no input path went to any
    /// rule) as a success.
    pub async fn end_empty_job(&self, id: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let ended = sqlx::query(
            "UPDATE jobs SET state = 'SUCCESS', completed = $2, dir_walk_complete = 1 WHERE id = $1 AND roots = 0",
        )
        .bind(id)
        .bind(now_us())
        .execute(&mut *tx)
        .await
        .map_err(db("end an empty job"))?;
        let ended: Vec<NewEvent> = (ended.rows_affected() > 0)
            .then(|| NewEvent::job(id, state::SUCCESS))
            .into_iter()
            .collect();
        events::commit(tx, self.engine, &ended, "commit an empty job's end").await
    }

    /// Starts cancelling a job: DEQUEUING, and its root tasks still in
    /// the outbox are dropped and counted as CANCELLED (they never ran).
    /// Returns the ids of its roots the broker has (to cancel on the
    /// agents), or `None` when the job is already final.
    pub async fn cancel_job(&self, id: i64) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.write().await?;
        let Some(row) = sqlx::query("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("read a job"))?
        else {
            return Ok(None);
        };
        let st: String = row.get(0);
        if state::FINAL.contains(&st.as_str()) {
            return Ok(None);
        }
        let unsent = sqlx::query(
            "SELECT o.task_id, t.tasktype FROM outbox o JOIN tasks t ON t.task_id = o.task_id WHERE o.job_id = $1",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("read the outbox"))?;
        let now = now_us();
        for u in &unsent {
            let (task_id, tasktype): (String, String) = (u.get(0), u.get(1));
            sqlx::query(
                "UPDATE tasks SET state = 'CANCELLED', final = 1, counted = 1, completed = $2 WHERE task_id = $1 AND final = 0",
            )
            .bind(&task_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("cancel an unsent task"))?;
            add_stat(&mut tx, id, &tasktype, task_state::PENDING, -1).await?;
            add_stat(&mut tx, id, &tasktype, task_state::CANCELLED, 1).await?;
        }
        sqlx::query("DELETE FROM outbox WHERE job_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("clear a job's outbox"))?;
        sqlx::query("UPDATE jobs SET state = 'DEQUEUING', received = received + $2 WHERE id = $1")
            .bind(id)
            .bind(unsent.len() as i64)
            .execute(&mut *tx)
            .await
            .map_err(db("cancel a job"))?;
        // A second cancel changes nothing to report.
        let mut changes: Vec<NewEvent> = (st != state::DEQUEUING)
            .then(|| NewEvent::job(id, state::DEQUEUING))
            .into_iter()
            .collect();
        if let Some(end) = finish_if_done(&mut tx, id, now).await? {
            changes.push(NewEvent::job(id, end));
        }
        let roots = sqlx::query("SELECT task_id FROM tasks WHERE job_id = $1 AND is_root = 1 AND state <> 'CANCELLED'")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("read a job's roots"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        events::commit(tx, self.engine, &changes, "commit a cancel").await?;
        Ok(Some(roots))
    }

    /// The roots of jobs being cancelled, or cancelled since `since`
    /// (µs): what agents must keep refusing.
    pub async fn cancelled_roots(&self, since: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.task_id FROM tasks t JOIN jobs j ON j.id = t.job_id
             WHERE t.is_root = 1 AND (j.state = 'DEQUEUING' OR (j.state = 'CANCELLED' AND j.completed >= $1))",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read cancelled roots"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// How many jobs are in each state.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db("count jobs"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The job with id `id`.
    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a job"))?;
        row.as_ref().map(job).transpose()
    }

    /// Jobs matching `filter`, newest first, and how many match.
    pub async fn jobs(&self, filter: &Filter, page: Page) -> Result<(i64, Vec<Job>), StoreError> {
        let (count, rows) = self.listed("jobs", JOB_COLUMNS, "id DESC", filter, page).await?;
        Ok((count, rows.iter().map(job).collect::<Result<_, _>>()?))
    }

    /// As [`Store::jobs`], without their input paths (`input_paths` is
    /// empty): a page of a table of jobs, which does not show them, does
    /// not read up to 1,000 paths a row.
    pub async fn jobs_brief(&self, filter: &Filter, page: Page) -> Result<(i64, Vec<Job>), StoreError> {
        let (count, rows) = self.listed("jobs", JOB_BRIEF_COLUMNS, "id DESC", filter, page).await?;
        Ok((count, rows.iter().map(job).collect::<Result<_, _>>()?))
    }

    /// How many tasks a job has, and the first `limit` task row ids. The
    /// count is the sum of the job's per-state counters (every task row is
    /// in exactly one), not a scan of a job that may have millions.
    pub async fn job_task_ids(&self, job_id: i64, limit: i64) -> Result<(i64, Vec<i64>), StoreError> {
        let count: i64 =
            sqlx::query("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_task_stats WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db("count tasks"))?
                .get(0);
        let ids = sqlx::query("SELECT id FROM tasks WHERE job_id = $1 ORDER BY id LIMIT $2")
            .bind(job_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db("list task ids"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok((count, ids))
    }

    /// Deletes a job and everything of it, tasks in chunks so that no
    /// transaction grows with the job.
    pub async fn delete_job(&self, id: i64) -> Result<bool, StoreError> {
        loop {
            let gone =
                sqlx::query("DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE job_id = $1 LIMIT 10000)")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(db("delete a job's tasks"))?;
            if gone.rows_affected() == 0 {
                break;
            }
        }
        for table in ["jobstats", "job_task_stats", "outbox"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE job_id = $1"))
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db("delete a job's records"))?;
        }
        let done = sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("delete a job"))?;
        Ok(done.rows_affected() > 0)
    }

    /// A page of the tasks matching `filter`, by id, without counting
    /// them ([`Store::task_count`] does, from the counters).
    pub async fn tasks_page(&self, filter: &Filter, page: Page) -> Result<Vec<Task>, StoreError> {
        let rows = self.rows("tasks", TASK_COLUMNS, "id", filter, page).await?;
        rows.iter().map(task).collect()
    }

    /// How many tasks match `filter`. A filter on `job_id`, `tasktype`
    /// and `state` alone is answered from the jobs' task counters
    /// (`job_task_stats`, which count every task row once), so a list of
    /// millions costs a sum over a few counter rows, not a scan; one
    /// naming a task (`task_id`, unique) counts rows through its index.
    pub async fn task_count(&self, filter: &Filter) -> Result<i64, StoreError> {
        if !filter.only_on(&["job_id", "tasktype", "state"]) {
            return self.count("tasks", filter).await;
        }
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_task_stats{}",
            filter.sql()
        );
        Ok(filter
            .bind(sqlx::query(&sql))
            .fetch_one(&self.pool)
            .await
            .map_err(db("count tasks"))?
            .get(0))
    }

    /// A page of job `job_id`'s tasks, by id, without counting them (the
    /// job's task counters say how many, [`Store::task_stats`]): a job may
    /// have millions, and the web page shows them a page at a time.
    pub async fn job_tasks(&self, job_id: i64, page: Page) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 ORDER BY id{}",
            page.sql()
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read a job's tasks"))?;
        rows.iter().map(task).collect()
    }

    /// The task with row id or Celery id `key`.
    pub async fn task(&self, key: &str) -> Result<Option<Task>, StoreError> {
        let row = match key.parse::<i64>() {
            Ok(id) => {
                sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
            }
            Err(_) => {
                sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1"))
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(db("read a task"))?;
        row.as_ref().map(task).transpose()
    }

    /// Task counts by state and by task type, of one job or of all.
    pub async fn task_stats(&self, job_id: Option<i64>) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tasktype, state, CAST(SUM(n) AS BIGINT) AS n FROM job_task_stats WHERE $1 < 0 OR job_id = $1 GROUP BY tasktype, state HAVING SUM(n) > 0",
        )
        .bind(job_id.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await
        .map_err(db("read task counts"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Jobs matching `filter` by state, with their file counts summed:
    /// `(state, jobs, [found, processed, skipped, aborted, failures])`.
    pub async fn job_totals(&self, filter: &Filter) -> Result<Vec<(String, i64, [i64; 5])>, StoreError> {
        let sql = format!(
            "SELECT state, COUNT(*), CAST(SUM(files_found) AS BIGINT), CAST(SUM(files_processed) AS BIGINT),
               CAST(SUM(files_skipped) AS BIGINT), CAST(SUM(files_aborted) AS BIGINT), CAST(SUM(files_failures) AS BIGINT)
             FROM jobs{} GROUP BY state ORDER BY state",
            filter.sql()
        );
        let rows = filter
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db("sum jobs"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), [r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)]))
            .collect())
    }

    /// A page of the per-file records matching `filter`, by id, without
    /// counting them (a keyset page: its caller counts without the
    /// page's `id >` bound).
    pub async fn file_records_page(&self, filter: &Filter, page: Page) -> Result<Vec<FileRecord>, StoreError> {
        let rows = self.rows("jobstats", FILE_COLUMNS, "id", filter, page).await?;
        rows.iter().map(file_record).collect()
    }

    /// How many per-file records match `filter`.
    pub async fn file_record_count(&self, filter: &Filter) -> Result<i64, StoreError> {
        self.count("jobstats", filter).await
    }

    /// Per-file records matching `filter`, by id, and how many match.
    pub async fn file_records(&self, filter: &Filter, page: Page) -> Result<(i64, Vec<FileRecord>), StoreError> {
        let (count, rows) = self.listed("jobstats", FILE_COLUMNS, "id", filter, page).await?;
        Ok((count, rows.iter().map(file_record).collect::<Result<_, _>>()?))
    }

    /// Every job matching `filter`, newest first, as they are read
    /// (`page_size=0`), and how many.
    pub async fn jobs_all(&self, filter: Filter) -> Result<(i64, Rows<Job>), StoreError> {
        self.streamed("jobs", JOB_COLUMNS, "id DESC", filter, job).await
    }

    /// Every task matching `filter`, by id, as they are read, and how many.
    pub async fn tasks_all(&self, filter: Filter) -> Result<(i64, Rows<Task>), StoreError> {
        self.streamed("tasks", TASK_COLUMNS, "id", filter, task).await
    }

    /// Every per-file record matching `filter`, by id, as they are read,
    /// and how many.
    pub async fn file_records_all(&self, filter: Filter) -> Result<(i64, Rows<FileRecord>), StoreError> {
        self.streamed("jobstats", FILE_COLUMNS, "id", filter, file_record).await
    }

    /// How many rows of `table` match `filter`, and a reader of at most
    /// that many of them in `order` (rows added meanwhile never make the
    /// list longer than its count).
    async fn streamed<T: Send + 'static>(
        &self,
        table: &'static str,
        columns: &'static str,
        order: &'static str,
        filter: Filter,
        map: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<(i64, Rows<T>), StoreError> {
        let count = self.count(table, &filter).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_ROWS);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let sql = format!(
                "SELECT {columns} FROM {table}{} ORDER BY {order} LIMIT {count}",
                filter.sql()
            );
            let mut rows = filter.bind(sqlx::query(&sql)).fetch(&pool);
            while let Some(r) = rows.next().await {
                let item = r.map_err(db("read a list")).and_then(|r| map(&r));
                let failed = item.is_err();
                // A reader gone (the client hung up) ends the read.
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok((count, rx))
    }

    async fn count(&self, table: &str, filter: &Filter) -> Result<i64, StoreError> {
        let count_sql = format!("SELECT COUNT(*) FROM {table}{}", filter.sql());
        Ok(filter
            .bind(sqlx::query(&count_sql))
            .fetch_one(&self.pool)
            .await
            .map_err(db("count a list"))?
            .get(0))
    }

    /// One page of the rows of `table` (`columns`) that match `filter`, in
    /// `order`, and how many match in all: what every paged list reads.
    async fn listed(
        &self,
        table: &str,
        columns: &str,
        order: &str,
        filter: &Filter,
        page: Page,
    ) -> Result<(i64, Vec<AnyRow>), StoreError> {
        let count = self.count(table, filter).await?;
        Ok((count, self.rows(table, columns, order, filter, page).await?))
    }

    /// One page of the rows of `table` (`columns`) that match `filter`, in
    /// `order`, uncounted.
    async fn rows(
        &self,
        table: &str,
        columns: &str,
        order: &str,
        filter: &Filter,
        page: Page,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let sql = format!(
            "SELECT {columns} FROM {table}{} ORDER BY {order}{}",
            filter.sql(),
            page.sql()
        );
        filter
            .bind(sqlx::query(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db("read a list"))
    }
}

/// What [`Store::append_to_job`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Append {
    /// The tasks are the job's now.
    Added,
    /// The job is no longer running; its state.
    Ended(String),
    /// No such job.
    Missing,
}

/// Writes a job, its root tasks and their messages within `tx`;
/// `roots` builds the tasks from the new job's id. Returns the job's id.
pub(super) async fn insert_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    new: &NewJob,
    roots: impl FnOnce(i64) -> Vec<RootTask>,
) -> Result<i64, StoreError> {
    let now = now_us();
    let id: i64 = sqlx::query(
            "INSERT INTO jobs (workflow, fields, discovery, site, queue, friendly_name, state, created, owner_type, owner_id,
               owner_name, clientkey_id, input_paths, dir_walk_complete, request, resubmitted_from, record_files, dry_run)
             VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id",
        )
        .bind(&new.workflow)
        .bind(new.fields.to_string())
        .bind(&new.discovery)
        .bind(&new.site)
        .bind(&new.queue)
        .bind(&new.friendly_name)
        .bind(now)
        .bind(&new.owner.kind)
        .bind(new.owner.id)
        .bind(&new.owner.name)
        .bind(new.clientkey_id)
        .bind(new.input_paths.to_string())
        .bind(new.discovery.is_none() as i64)
        .bind(&new.request)
        .bind(new.resubmitted_from)
        .bind(new.record_files.as_str())
        .bind(new.dry_run as i64)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("create a job"))?
        .get(0);
    if let Some(sync) = &new.sync {
        insert_sync_run(tx, id, &new.site, &new.queue, sync).await?;
    }
    let roots = roots(id);
    insert_roots(tx, id, &roots, now).await?;
    sqlx::query("UPDATE jobs SET roots = $2, expected = $2 WHERE id = $1")
        .bind(id)
        .bind(roots.len() as i64)
        .execute(&mut **tx)
        .await
        .map_err(db("count a job's roots"))?;
    Ok(id)
}

/// Writes a job's first tasks, their messages to publish and their counts.
pub(super) async fn insert_roots(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    roots: &[RootTask],
    now: i64,
) -> Result<(), StoreError> {
    for r in roots {
        sqlx::query(
            "INSERT INTO tasks (task_id, job_id, tasktype, site, queue, state, is_root, created) VALUES ($1, $2, $3, $4, $5, 'PENDING', 1, $6)",
        )
        .bind(&r.task_id)
        .bind(id)
        .bind(&r.tasktype)
        .bind(&r.site)
        .bind(&r.queue)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db("create a root task"))?;
        sqlx::query("INSERT INTO outbox (job_id, task_id, queue, headers, body) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(&r.task_id)
            .bind(&r.queue)
            .bind(&r.headers)
            .bind(&r.body)
            .execute(&mut **tx)
            .await
            .map_err(db("queue a root task"))?;
        add_stat(tx, id, &r.tasktype, "PENDING", 1).await?;
    }
    Ok(())
}

/// Rows of a list read whole (`page_size=0`), as they are read: a
/// bounded channel, so a list of millions holds [`STREAM_ROWS`] at a time.
/// It ends after the last row, or after the first error.
pub type Rows<T> = tokio::sync::mpsc::Receiver<Result<T, StoreError>>;

/// Rows read ahead of the writer of a streamed list.
const STREAM_ROWS: usize = 256;

impl Store {
    /// The submission that made job `id` (JSON), when the hub kept it
    /// (jobs made before it did have none).
    pub async fn job_request(&self, id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT request FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a job's submission"))?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// The paths of job `id`'s failed files, as JSON string text, in
    /// the order they were recorded.
    pub async fn failed_paths(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT path FROM jobstats WHERE job_id = $1 AND state = 'failures' ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(db("read a job's failed files"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
