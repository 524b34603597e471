//! Bidirectional sync runs and their snapdiff events: the rows behind
//! [`crate::hub::bisync`]. A run's job goes through stages; each stage's
//! tasks are added to the job when the previous stage's are all counted,
//! and the job ends only after the last ([`DONE`]).

use super::events::{self, NewEvent};
use super::jobs::RootTask;
use super::ledger::finish_if_done;
pub use super::sync_run::NewSyncRun;
use super::{Store, StoreError, batch, db, now_us};
use rustc_hash::FxHashMap;
use sqlx::Row;

/// The stage a run's job is at once every stage is done: the ingest may
/// end it.
pub use super::ledger::SYNC_DONE as DONE;

/// How many runs' events the hub keeps per fileset and pair of sites (the
/// seed's `cleanup_old_events`: "all but the latest 2 jobs", 003:L12482).
pub const EVENTS_KEPT: i64 = 2;

/// A bidirectional run as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRun {
    /// Its job.
    pub job_id: i64,
    /// The schedule's site, and its queue.
    pub site1: String,
    /// The queue on site 1.
    pub queue1: String,
    /// The other site.
    pub site2: String,
    /// The queue on site 2.
    pub queue2: String,
    /// The fileset's (wire) path.
    pub fileset: String,
    /// The stage whose tasks are in the job.
    pub stage: i64,
}

/// One `EVENTS` document of a collecting snapdiff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsDoc {
    /// The job.
    pub job: i64,
    /// The site that diffed.
    pub site: String,
    /// The execution that diffed (hex, as in its result's `run`).
    pub run: String,
    /// The document's place among the execution's documents.
    pub seq: i64,
    /// The changes, as path objects (JSON text).
    pub events: Vec<String>,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its row.
    pub id: i64,
    /// The site that reported it.
    pub site: String,
    /// The path object (JSON text).
    pub obj: String,
    /// What the hub decided ([`crate::hub::bisync::Decision`]'s names).
    pub decision: Option<String>,
    /// The path it was applied at (JSON string text), when not its own.
    pub target: Option<String>,
    /// Why, in words.
    pub note: Option<String>,
}

/// A collecting snapdiff of a run: its site, end state and execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collected {
    /// The task.
    pub task_id: String,
    /// Its site.
    pub site: String,
    /// Its state (`PENDING` until its result is in).
    pub state: String,
    /// The execution whose result counted.
    pub run: Option<String>,
    /// How many changes its result says it sent.
    pub events: Option<u64>,
}

/// A decision to record on an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The event's row.
    pub id: i64,
    /// The decision's name.
    pub decision: &'static str,
    /// Where it applies, when not at its own path (JSON string text).
    pub target: Option<String>,
    /// Why.
    pub note: Option<String>,
}

/// A path a run lists in its job's files: a conflict it settled against
/// one site's wishes, or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// JSON string text.
    pub path: String,
    /// `failures` (the job fails) or `skipped`.
    pub state: &'static str,
    /// What happened, in words.
    pub message: String,
}

/// What one step of a run writes, all in one transaction.
#[derive(Debug, Default)]
pub struct Advance<'a> {
    /// Decisions to record.
    pub decided: &'a [Decided],
    /// The next stage's tasks.
    pub roots: &'a [RootTask],
    /// Paths the job lists.
    pub listed: &'a [Listed],
    /// Entering the rotation: whether each site is asked to rotate (rather
    /// than roll back).
    pub rotating: Option<[bool; 2]>,
}

/// An earlier run between the same sites on the same fileset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastRun {
    /// Its job.
    pub job_id: i64,
    /// The sites whose snapshot it committed: asked to rotate, and the
    /// rotation succeeded. Changes since are diffed against that one.
    pub committed: Vec<String>,
}

impl Store {
    /// Records events documents (a redelivered one changes nothing), in
    /// multi-row inserts ([`super::batch`]): a document is a thousand rows.
    pub async fn record_sync_events(&self, docs: &[EventsDoc]) -> Result<(), StoreError> {
        let rows: Vec<(&EventsDoc, usize, &String)> = docs
            .iter()
            .flat_map(|d| d.events.iter().enumerate().map(move |(n, obj)| (d, n, obj)))
            .collect();
        let mut tx = self.write().await?;
        for chunk in rows.chunks(batch::CHUNK) {
            let sql = format!(
                "INSERT INTO sync_events (job_id, site, run, seq, n, obj) VALUES {}
                 ON CONFLICT (job_id, site, run, seq, n) DO NOTHING",
                batch::tuples(self.engine, chunk.len(), 6)
            );
            let mut q = batch::statement(&sql, chunk.len());
            for (d, n, obj) in chunk {
                q = q
                    .bind(d.job)
                    .bind(&d.site)
                    .bind(&d.run)
                    .bind(d.seq)
                    .bind(*n as i64)
                    .bind(*obj);
            }
            q.execute(&mut *tx).await.map_err(db("record sync events"))?;
        }
        tx.commit().await.map_err(db("commit sync events"))
    }

    /// The bidirectional run of `job`, if it is one.
    pub async fn sync_run(&self, job: i64) -> Result<Option<SyncRun>, StoreError> {
        let row =
            sqlx::query("SELECT job_id, site1, queue1, site2, queue2, fileset, stage FROM sync_runs WHERE job_id = $1")
                .bind(job)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("read a sync run"))?;
        Ok(row.map(|r| SyncRun {
            job_id: r.get(0),
            site1: r.get(1),
            queue1: r.get(2),
            site2: r.get(3),
            queue2: r.get(4),
            fileset: r.get(5),
            stage: r.get(6),
        }))
    }

    /// Runs whose current stage is done: every task of their job counted,
    /// the job running or being cancelled (a paused job waits).
    pub async fn sync_runs_due(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.job_id FROM sync_runs r JOIN jobs j ON j.id = r.job_id
             WHERE r.stage < $1 AND j.received >= j.expected AND j.state IN ('PENDING', 'STARTED', 'DEQUEUING')
             ORDER BY r.job_id",
        )
        .bind(DONE)
        .fetch_all(&self.pool)
        .await
        .map_err(db("find sync runs due"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The collecting snapdiffs of a run (its job's root snapdiff tasks).
    pub async fn collected(&self, job: i64) -> Result<Vec<Collected>, StoreError> {
        let rows = sqlx::query(
            "SELECT task_id, site, state, run, summary FROM tasks WHERE job_id = $1 AND is_root = 1 AND tasktype = $2
             ORDER BY created, task_id",
        )
        .bind(job)
        .bind(crate::task::TaskName::Snapdiff.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("read a sync run's snapdiffs"))?;
        Ok(rows
            .iter()
            .map(|r| Collected {
                task_id: r.get(0),
                site: r.get(1),
                state: r.get(2),
                run: r.get(3),
                events: r
                    .get::<Option<String>, _>(4)
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    .and_then(|v| v["events"].as_u64()),
            })
            .collect())
    }

    /// The events of `job` from `site`: those of execution `run`, or with
    /// `None` every one the hub decided on. In the order reported.
    pub async fn sync_events(&self, job: i64, site: &str, run: Option<&str>) -> Result<Vec<StoredEvent>, StoreError> {
        // One execution's events, or the decided ones.
        let which = match run {
            Some(_) => "run = $3",
            None => "decision IS NOT NULL",
        };
        let sql = format!(
            "SELECT id, site, obj, decision, target, note FROM sync_events
             WHERE job_id = $1 AND site = $2 AND {which} ORDER BY seq, n"
        );
        let mut q = sqlx::query(&sql).bind(job).bind(site);
        if let Some(run) = run {
            q = q.bind(run);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db("read sync events"))?;
        Ok(rows
            .iter()
            .map(|r| StoredEvent {
                id: r.get(0),
                site: r.get(1),
                obj: r.get(2),
                decision: r.get(3),
                target: r.get(4),
                note: r.get(5),
            })
            .collect())
    }

    /// Every change a bidirectional job compared, both sites', with its
    /// decision; before the job decided, every change as reported. `None`
    /// for a job that is not a bidirectional run.
    pub async fn job_sync_events(&self, job: i64) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        let Some(run) = self.sync_run(job).await? else {
            return Ok(None);
        };
        let mut all = Vec::new();
        for site in [&run.site1, &run.site2] {
            all.extend(self.sync_events(job, site, None).await?);
        }
        if all.is_empty() {
            for c in self.collected(job).await? {
                all.extend(self.sync_events(job, &c.site, c.run.as_deref()).await?);
            }
        }
        Ok(Some(all))
    }

    /// The runs before `run` between the same sites on the same fileset
    /// (either way round) that got as far as deciding, newest first.
    pub async fn previous_sync_runs(&self, run: &SyncRun) -> Result<Vec<PastRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_id, site1, site2, rotate1, rotate2 FROM sync_runs WHERE job_id < $1 AND fileset = $2 AND stage > 0
               AND ((site1 = $3 AND site2 = $4) OR (site1 = $4 AND site2 = $3))
             ORDER BY job_id DESC",
        )
        .bind(run.job_id)
        .bind(&run.fileset)
        .bind(&run.site1)
        .bind(&run.site2)
        .fetch_all(&self.pool)
        .await
        .map_err(db("find earlier sync runs"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let job: i64 = r.get(0);
            out.push(PastRun {
                job_id: job,
                committed: self
                    .committed(
                        job,
                        [r.get(1), r.get(2)],
                        [r.get::<i64, _>(3) == 1, r.get::<i64, _>(4) == 1],
                    )
                    .await?,
            });
        }
        Ok(out)
    }

    /// The sites of `sites` whose snapshot run `job` committed.
    async fn committed(&self, job: i64, sites: [String; 2], asked: [bool; 2]) -> Result<Vec<String>, StoreError> {
        let rotated: Vec<String> =
            sqlx::query("SELECT site FROM tasks WHERE job_id = $1 AND tasktype = $2 AND state = 'SUCCESS'")
                .bind(job)
                .bind(crate::task::TaskName::RotateSnapshot.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db("read a sync run's rotations"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
        Ok(sites
            .into_iter()
            .zip(asked)
            .filter(|(s, asked)| *asked && rotated.contains(s))
            .map(|(s, _)| s)
            .collect())
    }

    /// A bidirectional run still going on `fileset` between sites `a` and
    /// `b` (either way round): its job's id.
    pub async fn sync_run_going(&self, fileset: &str, a: &str, b: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT r.job_id FROM sync_runs r JOIN jobs j ON j.id = r.job_id
             WHERE r.fileset = $1 AND ((r.site1 = $2 AND r.site2 = $3) OR (r.site1 = $3 AND r.site2 = $2))
               AND r.stage < $4 AND j.state NOT IN ('SUCCESS', 'FAILURE', 'CANCELLED')
             ORDER BY r.job_id LIMIT 1",
        )
        .bind(fileset)
        .bind(a)
        .bind(b)
        .bind(DONE)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("find a running sync"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Moves a run from stage `from` to `to`, writing what the step
    /// decided, the next stage's tasks and the paths the job lists; at
    /// [`DONE`] the job ends. `false` when the run was not at `from`
    /// (another hub process advanced it) or its job is no longer running
    /// (paused, or cancelled and `to` is not [`DONE`]).
    pub async fn advance_sync(&self, job: i64, from: i64, to: i64, step: &Advance<'_>) -> Result<bool, StoreError> {
        let _filing = self.filing.lock().await;
        let now = now_us();
        let mut tx = self.write().await?;
        // Only a running job gets a next stage (a job cancelled or paused
        // meanwhile gets none); a cancelled one may only end.
        let moved = sqlx::query(
            "UPDATE sync_runs SET stage = $3 WHERE job_id = $1 AND stage = $2
               AND EXISTS (SELECT 1 FROM jobs WHERE id = $1
                 AND (state IN ('PENDING', 'STARTED') OR (state = 'DEQUEUING' AND $3 = $4)))
             RETURNING job_id",
        )
        .bind(job)
        .bind(from)
        .bind(to)
        .bind(DONE)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("advance a sync run"))?;
        if moved.is_none() {
            return Ok(false);
        }
        if let Some([one, two]) = step.rotating {
            sqlx::query("UPDATE sync_runs SET rotate1 = $2, rotate2 = $3 WHERE job_id = $1")
                .bind(job)
                .bind(one as i64)
                .bind(two as i64)
                .execute(&mut *tx)
                .await
                .map_err(db("record a sync run's rotation"))?;
        }
        // A statement per chunk of decisions, not per event: a run of a
        // million changes decides a million events.
        for chunk in step.decided.chunks(batch::CHUNK) {
            let sql = format!(
                "UPDATE sync_events SET decision = v.column2, target = v.column3, note = v.column4
                 FROM (VALUES {}) AS v WHERE sync_events.id = v.column1",
                batch::typed_tuples(self.engine, chunk.len(), &["BIGINT", "TEXT", "TEXT", "TEXT"])
            );
            let mut q = batch::statement(&sql, chunk.len());
            for d in chunk {
                q = q.bind(d.id).bind(d.decision).bind(&d.target).bind(&d.note);
            }
            q.execute(&mut *tx).await.map_err(db("record sync decisions"))?;
        }
        super::jobs::insert_roots(&mut tx, job, step.roots, now).await?;
        let failures = step.listed.iter().filter(|l| l.state == "failures").count() as i64;
        // One row per path, the last listing winning as it would one
        // upsert at a time (PostgreSQL refuses an upsert that meets one key
        // twice), in multi-row statements: a run can list a conflict for
        // each of its changes.
        let mut last: FxHashMap<&str, &Listed> = FxHashMap::default();
        let mut order = Vec::with_capacity(step.listed.len());
        for l in step.listed {
            if last.insert(&l.path, l).is_none() {
                order.push(l.path.as_str());
            }
        }
        for chunk in order.chunks(batch::CHUNK) {
            let sql = format!(
                "INSERT INTO jobstats (job_id, path, state, code, message, task_id, at, reason) VALUES {}
                 ON CONFLICT (job_id, path) DO UPDATE SET state = excluded.state, message = excluded.message,
                   at = excluded.at, reason = excluded.reason",
                batch::tuples(self.engine, chunk.len(), 8)
            );
            let mut q = batch::statement(&sql, chunk.len());
            for path in chunk {
                let l = last[path];
                q = q
                    .bind(job)
                    .bind(&l.path)
                    .bind(l.state)
                    .bind(None::<String>)
                    .bind(serde_json::to_string(&[&l.message]).expect("json"))
                    .bind("")
                    .bind(now)
                    .bind(&l.message);
            }
            q.execute(&mut *tx).await.map_err(db("list sync conflicts"))?;
        }
        sqlx::query(
            "UPDATE jobs SET roots = roots + $2, expected = expected + $2, files_failures = files_failures + $3,
               files_skipped = files_skipped + $4 WHERE id = $1",
        )
        .bind(job)
        .bind(step.roots.len() as i64)
        .bind(failures)
        .bind(step.listed.len() as i64 - failures)
        .execute(&mut *tx)
        .await
        .map_err(db("count a sync stage"))?;
        let mut changes = Vec::new();
        if to == DONE
            && let Some(end) = finish_if_done(&mut tx, job, now).await?
        {
            changes.push(NewEvent::job(job, end));
        }
        events::commit(tx, self.engine, &changes, "commit a sync stage").await?;
        Ok(true)
    }

    /// Deletes the events of runs no later run needs (the seed's
    /// `cleanup_old_events`): of each fileset and pair of sites, the latest
    /// [`EVENTS_KEPT`] runs' events stay, and so do those of every run back
    /// to the last that committed each site's snapshot (the next run's
    /// diff of that site holds their echoes), whatever their end. A run
    /// whose job was deleted goes, with its events. Returns the events
    /// deleted.
    pub async fn cleanup_sync_events(&self) -> Result<u64, StoreError> {
        let runs = sqlx::query(
            "SELECT r.job_id, r.fileset, r.site1, r.site2, r.rotate1, r.rotate2, j.id FROM sync_runs r
               LEFT JOIN jobs j ON j.id = r.job_id
             ORDER BY r.job_id DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read sync runs"))?;
        // Per pair: runs kept, and the sites whose committing run is not
        // reached yet.
        let mut pairs: std::collections::HashMap<(String, String, String), (i64, Vec<String>)> = Default::default();
        let mut drop = Vec::new();
        let mut orphaned = Vec::new();
        for r in &runs {
            let (job, fileset, a, b): (i64, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
            let asked = [r.get::<i64, _>(4) == 1, r.get::<i64, _>(5) == 1];
            let key = if a < b {
                (fileset, a.clone(), b.clone())
            } else {
                (fileset, b.clone(), a.clone())
            };
            let (kept, open) = pairs.entry(key).or_insert_with(|| (0, vec![a.clone(), b.clone()]));
            if r.get::<Option<i64>, _>(6).is_none() {
                // Its job was deleted: the run's row goes too.
                orphaned.push(job);
                drop.push(job);
                continue;
            }
            if *kept >= EVENTS_KEPT && open.is_empty() {
                drop.push(job);
                continue;
            }
            *kept += 1;
            let committed = self.committed(job, [a, b], asked).await?;
            open.retain(|s| !committed.contains(s));
        }
        let mut tx = self.write().await?;
        let mut gone = 0;
        for job in drop {
            gone += sqlx::query("DELETE FROM sync_events WHERE job_id = $1")
                .bind(job)
                .execute(&mut *tx)
                .await
                .map_err(db("clean up sync events"))?
                .rows_affected();
        }
        for job in orphaned {
            sqlx::query("DELETE FROM sync_runs WHERE job_id = $1")
                .bind(job)
                .execute(&mut *tx)
                .await
                .map_err(db("forget a deleted job's sync run"))?;
        }
        tx.commit().await.map_err(db("commit a sync events clean-up"))?;
        Ok(gone)
    }
}
