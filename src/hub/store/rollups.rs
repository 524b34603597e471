//! Roll-ups for operators: the work not yet done, by queue and task type
//! with the oldest waiting and longest running task of each, and the
//! failed files grouped by error.
//!
//! Neither reads the task table whole: the work roll-up reads the tasks
//! not yet final through a partial index (`tasks_open`, the in-flight
//! handful of millions of rows), and the failure roll-up reads the failed
//! files (`jobstats`, failures only), by job through its key or by time
//! through `jobstats_at`.

use super::{Store, StoreError, db};
use crate::task::errors::category;
use sqlx::Row;

/// A task that has waited or run longest in its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oldest {
    /// Celery task id.
    pub task_id: String,
    /// Its job.
    pub job: i64,
    /// The node running it (none while it waits).
    pub node: Option<String>,
    /// Since when it waits (created) or runs (started), µs.
    pub since: i64,
}

/// The unfinished tasks of one queue and task type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkGroup {
    /// The site.
    pub site: String,
    /// The queue's name (`default`...).
    pub queue: String,
    /// The task name.
    pub tasktype: String,
    /// Tasks waiting (`PENDING`).
    pub pending: i64,
    /// Tasks running (`STARTED`).
    pub started: i64,
    /// The task waiting longest.
    pub longest_pending: Option<Oldest>,
    /// The task running longest.
    pub longest_running: Option<Oldest>,
}

/// The site and queue name of a task's queue as stored
/// (`<site>.<queue>#<function>`, or a job's `<site>.<queue>`).
fn site_queue(q: &str) -> (String, String) {
    let q = q.split('#').next().unwrap_or(q);
    match q.split_once('.') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => (String::new(), q.to_string()),
    }
}

/// One error's failed files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureGroup {
    /// The error's name (`EACCES`), when the message gives one.
    pub code: Option<String>,
    /// The message without paths and numbers.
    pub reason: String,
    /// `transient` or `permanent` ([`crate::task::errors::Category`]).
    pub category: &'static str,
    /// Files.
    pub count: i64,
    /// When the first was reported (µs), if known.
    pub first: Option<i64>,
    /// When the last was reported (µs), if known.
    pub last: Option<i64>,
    /// One of the files (JSON string text).
    pub sample_path: String,
    /// The jobs with files failing so, in id order.
    pub jobs: Vec<i64>,
}

/// Which failures to roll up.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailureFilter {
    /// Only this job's.
    pub job: Option<i64>,
    /// Only those reported at or after this time (µs).
    pub since: Option<i64>,
}

impl Store {
    /// The unfinished tasks by site, queue and task type, with the task
    /// waiting and the one running longest in each; by site, queue, type.
    pub async fn work_rollup(&self) -> Result<Vec<WorkGroup>, StoreError> {
        // The oldest of each (queue, type, state) and the count, in one
        // pass over the open tasks. A task heard of only by its start has
        // no queue yet: its job's is taken.
        let rows = sqlx::query(
            "SELECT q, tasktype, state, task_id, job_id, node, since, n FROM (
               SELECT COALESCE(t.queue, j.site || '.' || j.queue) AS q, t.tasktype, t.state, t.task_id, t.job_id, t.node,
                 COALESCE(t.started, t.created) AS since,
                 ROW_NUMBER() OVER (PARTITION BY COALESCE(t.queue, j.site || '.' || j.queue), t.tasktype, t.state
                                    ORDER BY COALESCE(t.started, t.created), t.id) AS rn,
                 COUNT(*) OVER (PARTITION BY COALESCE(t.queue, j.site || '.' || j.queue), t.tasktype, t.state) AS n
               FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.final = 0
             ) g WHERE rn = 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("roll up open tasks"))?;
        let mut out: Vec<WorkGroup> = Vec::new();
        for r in &rows {
            let (site, queue) = site_queue(&r.get::<String, _>(0));
            let tasktype: String = r.get(1);
            let state: String = r.get(2);
            let oldest = Oldest {
                task_id: r.get(3),
                job: r.get(4),
                node: r.get(5),
                since: r.get(6),
            };
            let n: i64 = r.get(7);
            let at = match out
                .iter()
                .position(|g| g.site == site && g.queue == queue && g.tasktype == tasktype)
            {
                Some(i) => i,
                None => {
                    out.push(WorkGroup {
                        site,
                        queue,
                        tasktype,
                        pending: 0,
                        started: 0,
                        longest_pending: None,
                        longest_running: None,
                    });
                    out.len() - 1
                }
            };
            let g = &mut out[at];
            let (count, longest) = if state == super::ledger::task_state::STARTED {
                (&mut g.started, &mut g.longest_running)
            } else {
                (&mut g.pending, &mut g.longest_pending)
            };
            *count += n;
            if longest.as_ref().is_none_or(|o| oldest.since < o.since) {
                *longest = Some(oldest);
            }
        }
        out.sort_by(|a, b| (&a.site, &a.queue, &a.tasktype).cmp(&(&b.site, &b.queue, &b.tasktype)));
        Ok(out)
    }

    /// Failed files grouped by error (code and message without paths),
    /// most files first.
    pub async fn failure_rollup(&self, f: FailureFilter) -> Result<Vec<FailureGroup>, StoreError> {
        let mut sql = String::from(
            "SELECT code, reason, job_id, COUNT(*), MIN(at), MAX(at), MIN(path) FROM jobstats WHERE state = 'failures'",
        );
        let mut n = 0;
        if f.job.is_some() {
            n += 1;
            sql.push_str(&format!(" AND job_id = ${n}"));
        }
        if f.since.is_some() {
            n += 1;
            sql.push_str(&format!(" AND at >= ${n}"));
        }
        sql.push_str(" GROUP BY code, reason, job_id ORDER BY job_id");
        let mut q = sqlx::query(&sql);
        if let Some(j) = f.job {
            q = q.bind(j);
        }
        if let Some(s) = f.since {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db("roll up failures"))?;
        let mut out: Vec<FailureGroup> = Vec::new();
        for r in &rows {
            let code: Option<String> = r.get(0);
            let reason: String = r.get::<Option<String>, _>(1).unwrap_or_default();
            let (job, count, first, last, path): (i64, i64, Option<i64>, Option<i64>, String) =
                (r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
            match out.iter_mut().find(|g| g.code == code && g.reason == reason) {
                Some(g) => {
                    g.count += count;
                    g.first = min_some(g.first, first);
                    g.last = g.last.max(last);
                    g.sample_path = g.sample_path.clone().min(path);
                    g.jobs.push(job);
                }
                None => out.push(FailureGroup {
                    category: category(&reason).as_str(),
                    code,
                    reason,
                    count,
                    first,
                    last,
                    sample_path: path,
                    jobs: vec![job],
                }),
            }
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.last.cmp(&b.last).reverse()));
        Ok(out)
    }
}

/// The earlier of two times that may be unknown.
fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
