//! Schedules, the workflows subscribed to them, and the record of their
//! runs.
//!
//! A run is written in two steps, so that a crash can neither fire a due
//! time twice nor lose it ([`crate::hub::schedule`] says why):
//! [`Store::begin_run`] advances the schedule's `last_run_at` and records
//! the run (one `pending` row per subscribed workflow, or one `skipped`
//! row) in one transaction; then each pending row gets its job from
//! [`Store::start_run_job`], which writes the job and turns the row
//! `started` in one transaction, and only if the row is still `pending`.

use super::events::NewEvent;
use super::jobs::{NewJob, Page, RootTask, insert_job, state};
use super::{Statement, Store, StoreError, db, flag, json_col, now_us};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The outcomes of a run's rows.
pub mod outcome {
    /// Recorded; its job is not written yet.
    pub const PENDING: &str = "pending";
    /// Its job was written (`job_id`).
    pub const STARTED: &str = "started";
    /// Not run: the schedule's previous run was still going.
    pub const SKIPPED: &str = "skipped";
    /// Its job could not be submitted (`detail` says why).
    pub const FAILED: &str = "failed";
}

/// A schedule, in the seed's fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Row id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The site whose time zone its cron fields are read in.
    pub site: String,
    /// The seed's space (kept, unused: ferry has no spaces).
    pub space: Option<String>,
    /// Whether it fires.
    pub enabled: bool,
    /// The discovery its jobs use; none: each workflow's own.
    pub discovery: Option<String>,
    /// Options for the discovery (a JSON object).
    pub discovery_options: serde_json::Value,
    /// The absolute paths its jobs work on (a JSON array of strings).
    pub managed_paths: serde_json::Value,
    /// Cron: minute.
    pub minute: String,
    /// Cron: hour.
    pub hour: String,
    /// Cron: day of the week.
    pub day_of_week: String,
    /// Cron: day of the month.
    pub day_of_month: String,
    /// Cron: month of the year.
    pub month_of_year: String,
    /// The latest due time dealt with (µs): run, skipped, or passed over
    /// while disabled.
    pub last_run_at: Option<i64>,
    /// When it was made (µs).
    pub created: i64,
    /// Its site's time zone (the `sites` row's; none when the site has
    /// none, or is gone).
    pub timezone: Option<String>,
}

/// A workflow subscribed to a schedule: one job of it per run.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleWorkflow {
    /// Row id.
    pub id: i64,
    /// The schedule.
    pub schedule_id: i64,
    /// The workflow's name.
    pub workflow: String,
    /// The site its jobs run on.
    pub site: String,
    /// Their queue.
    pub queue: String,
    /// Their runtime field values (a JSON object).
    pub fields: serde_json::Value,
}

/// One row of a run's record.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Row id.
    pub id: i64,
    /// The schedule.
    pub schedule_id: i64,
    /// The subscription it started a job of (none for a skip).
    pub schedule_workflow_id: Option<i64>,
    /// That subscription's workflow, when it ran.
    pub workflow: Option<String>,
    /// The due time it stands for (µs; for a run asked for by hand, when
    /// it was asked).
    pub due_at: i64,
    /// When it was recorded (µs).
    pub at: i64,
    /// One of [`outcome`].
    pub outcome: String,
    /// The job it started.
    pub job_id: Option<i64>,
    /// Why it was skipped or failed, and how late it ran.
    pub detail: String,
    /// Asked for by hand (`POST /run/`).
    pub manual: bool,
    /// Earlier due times collapsed into this one.
    pub missed: i64,
}

/// A run to record.
#[derive(Clone, Debug)]
pub struct Firing {
    /// The schedule.
    pub schedule_id: i64,
    /// For a due run: the `last_run_at` it was computed from, which must
    /// still be the schedule's (else another writer moved it, and nothing
    /// is written). None for a run asked for by hand, which leaves
    /// `last_run_at` alone.
    pub after: Option<Option<i64>>,
    /// The due time (µs); becomes `last_run_at` for a due run.
    pub due_at: i64,
    /// Now (µs).
    pub at: i64,
    /// Earlier due times collapsed into this one.
    pub missed: i64,
    /// A note for every row (how late the run is), or empty.
    pub note: String,
}

/// What [`Store::begin_run`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Begun {
    /// Recorded: one `pending` row per subscribed workflow (or a single
    /// `failed` row when there is none).
    Recorded(Vec<Run>),
    /// The previous run still goes: a due run is recorded as this
    /// `skipped` row; a run by hand writes nothing (the row is not
    /// stored, `id` 0). With the state of what still goes.
    Skipped(Run, String),
    /// The schedule is gone, or its `last_run_at` is no longer the one
    /// given: nothing written.
    Moved,
}

const SCHEDULE_COLUMNS: &str = "s.id, s.name, s.site, s.space, s.enabled, s.discovery, s.discovery_options, s.managed_paths, s.minute, s.hour, s.day_of_week, s.day_of_month, s.month_of_year, s.last_run_at, s.created, si.timezone";
const SCHEDULE_FROM: &str = "schedules s LEFT JOIN sites si ON si.name = s.site";

fn schedule(r: &AnyRow) -> Result<Schedule, StoreError> {
    Ok(Schedule {
        id: r.get("id"),
        name: r.get("name"),
        site: r.get("site"),
        space: r.get("space"),
        enabled: flag(r, "enabled"),
        discovery: r.get("discovery"),
        discovery_options: json_col(r, "schedules", "discovery_options")?,
        managed_paths: json_col(r, "schedules", "managed_paths")?,
        minute: r.get("minute"),
        hour: r.get("hour"),
        day_of_week: r.get("day_of_week"),
        day_of_month: r.get("day_of_month"),
        month_of_year: r.get("month_of_year"),
        last_run_at: r.get("last_run_at"),
        created: r.get("created"),
        timezone: r.get("timezone"),
    })
}

const SUB_COLUMNS: &str = "id, schedule_id, workflow, site, queue, fields";

fn subscription(r: &AnyRow) -> Result<ScheduleWorkflow, StoreError> {
    Ok(ScheduleWorkflow {
        id: r.get("id"),
        schedule_id: r.get("schedule_id"),
        workflow: r.get("workflow"),
        site: r.get("site"),
        queue: r.get("queue"),
        fields: json_col(r, "schedule_workflows", "fields")?,
    })
}

const RUN_COLUMNS: &str =
    "id, schedule_id, schedule_workflow_id, workflow, due_at, at, outcome, job_id, detail, manual, missed";

fn run(r: &AnyRow) -> Run {
    Run {
        id: r.get("id"),
        schedule_id: r.get("schedule_id"),
        schedule_workflow_id: r.get("schedule_workflow_id"),
        workflow: r.get("workflow"),
        due_at: r.get("due_at"),
        at: r.get("at"),
        outcome: r.get("outcome"),
        job_id: r.get("job_id"),
        detail: r.get("detail"),
        manual: flag(r, "manual"),
        missed: r.get("missed"),
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

async fn insert_run(tx: &mut Tx, r: &Run) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO schedule_runs (schedule_id, schedule_workflow_id, workflow, due_at, at, outcome, job_id, detail, manual, missed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(r.schedule_id)
    .bind(r.schedule_workflow_id)
    .bind(&r.workflow)
    .bind(r.due_at)
    .bind(r.at)
    .bind(&r.outcome)
    .bind(r.job_id)
    .bind(&r.detail)
    .bind(r.manual as i64)
    .bind(r.missed)
    .fetch_one(&mut **tx)
    .await
    .map_err(db("record a schedule's run"))?;
    Ok(row.get(0))
}

/// Why a schedule's previous run still goes, if it does (and the state
/// of what goes): a job of the schedule not final, or a run whose job is
/// not written yet.
async fn still_going(tx: &mut Tx, schedule_id: i64) -> Result<Option<(String, String)>, StoreError> {
    let finals = state::FINAL
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let job = sqlx::query(&format!(
        "SELECT id, state FROM jobs WHERE schedule_id = $1 AND state NOT IN ({finals}) ORDER BY id LIMIT 1"
    ))
    .bind(schedule_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db("read a schedule's jobs"))?;
    if let Some(j) = job {
        let (id, st): (i64, String) = (j.get(0), j.get(1));
        return Ok(Some((format!("the previous run's job {id} is still {st}"), st)));
    }
    let pending = sqlx::query("SELECT id FROM schedule_runs WHERE schedule_id = $1 AND outcome = $2 LIMIT 1")
        .bind(schedule_id)
        .bind(outcome::PENDING)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("read a schedule's runs"))?;
    Ok(pending.map(|r| {
        let id: i64 = r.get(0);
        (
            format!("the previous run (run {id}) has not written its job yet"),
            state::PENDING.to_string(),
        )
    }))
}

/// Binds a schedule's writable fields as `$1` to `$12`.
fn bind_schedule<'q>(q: Statement<'q>, s: &'q Schedule) -> Statement<'q> {
    q.bind(&s.name)
        .bind(&s.site)
        .bind(&s.space)
        .bind(s.enabled as i64)
        .bind(&s.discovery)
        .bind(s.discovery_options.to_string())
        .bind(s.managed_paths.to_string())
        .bind(&s.minute)
        .bind(&s.hour)
        .bind(&s.day_of_week)
        .bind(&s.day_of_month)
        .bind(&s.month_of_year)
}

fn insert_schedule(s: &Schedule) -> Statement<'_> {
    let q = sqlx::query(
        "INSERT INTO schedules (name, site, space, enabled, discovery, discovery_options, managed_paths, minute, hour,
           day_of_week, day_of_month, month_of_year, last_run_at, created)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
    );
    bind_schedule(q, s).bind(s.last_run_at).bind(now_us())
}

fn update_schedule(s: &Schedule, restart_at: Option<i64>) -> Statement<'_> {
    let q = sqlx::query(
        "UPDATE schedules SET name = $1, site = $2, space = $3, enabled = $4, discovery = $5, discovery_options = $6,
           managed_paths = $7, minute = $8, hour = $9, day_of_week = $10, day_of_month = $11, month_of_year = $12,
           last_run_at = COALESCE($13, last_run_at) WHERE id = $14",
    );
    bind_schedule(q, s).bind(restart_at).bind(s.id)
}

fn insert_subscription(w: &ScheduleWorkflow) -> Statement<'_> {
    sqlx::query(
        "INSERT INTO schedule_workflows (schedule_id, workflow, site, queue, fields) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(w.schedule_id)
    .bind(&w.workflow)
    .bind(&w.site)
    .bind(&w.queue)
    .bind(w.fields.to_string())
}

fn delete_subscription(schedule_id: i64, id: i64) -> Statement<'static> {
    sqlx::query("DELETE FROM schedule_workflows WHERE schedule_id = $1 AND id = $2")
        .bind(schedule_id)
        .bind(id)
}

fn update_subscription(w: &ScheduleWorkflow) -> Statement<'_> {
    sqlx::query(
        "UPDATE schedule_workflows SET workflow = $3, site = $4, queue = $5, fields = $6 WHERE schedule_id = $1 AND id = $2",
    )
    .bind(w.schedule_id)
    .bind(w.id)
    .bind(&w.workflow)
    .bind(&w.site)
    .bind(&w.queue)
    .bind(w.fields.to_string())
}

impl Store {
    /// Schedules by id, those of site `site` only when given.
    pub async fn schedules(&self, site: Option<&str>) -> Result<Vec<Schedule>, StoreError> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} WHERE s.site = $1 OR $2 = 0 ORDER BY s.id");
        let rows = sqlx::query(&sql)
            .bind(site.unwrap_or(""))
            .bind(site.is_some() as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db("list schedules"))?;
        rows.iter().map(schedule).collect()
    }

    /// The schedule with id `id`.
    pub async fn schedule(&self, id: i64) -> Result<Option<Schedule>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read a schedule"))?;
        row.as_ref().map(schedule).transpose()
    }

    /// Creates a schedule (its `created` is now); its id.
    pub async fn create_schedule(&self, s: &Schedule) -> Result<i64, StoreError> {
        let row = insert_schedule(s)
            .fetch_one(&self.pool)
            .await
            .map_err(db("create a schedule"))?;
        Ok(row.get(0))
    }

    /// Writes every field of `s` (by its id) but `created` and
    /// `last_run_at`, which only the scheduler moves; `restart_at` (µs),
    /// when given, becomes `last_run_at`: due times are then counted from
    /// it (a changed crontab, a schedule enabled again).
    pub async fn update_schedule(&self, s: &Schedule, restart_at: Option<i64>) -> Result<bool, StoreError> {
        let done = update_schedule(s, restart_at)
            .execute(&self.pool)
            .await
            .map_err(db("update a schedule"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes schedule `s` (a new one when its id is 0; `restart_at` as
    /// [`Store::update_schedule`] takes it) and makes its subscriptions
    /// exactly `subs` (each by id; id 0: a new one; those not listed are
    /// deleted), in one transaction: what the web page's schedule editor
    /// saves. The schedule's id, or `None` when `s` (by id) or one of the
    /// listed subscriptions is no longer there (nothing is written).
    pub async fn save_schedule(
        &self,
        s: &Schedule,
        restart_at: Option<i64>,
        subs: &[ScheduleWorkflow],
    ) -> Result<Option<i64>, StoreError> {
        let what = "save a schedule and its workflows";
        let mut tx = self.write().await?;
        let id = if s.id == 0 {
            insert_schedule(s).fetch_one(&mut *tx).await.map_err(db(what))?.get(0)
        } else if update_schedule(s, restart_at)
            .execute(&mut *tx)
            .await
            .map_err(db(what))?
            .rows_affected()
            == 0
        {
            return Ok(None);
        } else {
            s.id
        };
        let had: Vec<i64> = sqlx::query("SELECT id FROM schedule_workflows WHERE schedule_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(what))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for gone in had.iter().filter(|h| !subs.iter().any(|w| w.id == **h)) {
            delete_subscription(id, *gone)
                .execute(&mut *tx)
                .await
                .map_err(db(what))?;
        }
        for w in subs {
            let w = ScheduleWorkflow {
                schedule_id: id,
                ..w.clone()
            };
            if w.id == 0 {
                insert_subscription(&w).fetch_one(&mut *tx).await.map_err(db(what))?;
            } else if !had.contains(&w.id) {
                return Ok(None);
            } else {
                update_subscription(&w).execute(&mut *tx).await.map_err(db(what))?;
            }
        }
        tx.commit().await.map_err(db(what))?;
        Ok(Some(id))
    }

    /// Deletes a schedule with its subscriptions and its runs' record; its
    /// jobs stay (with its id in `schedule_id`).
    pub async fn delete_schedule(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("delete a schedule"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves `last_run_at` from `after` to `to` without running: a due
    /// time passed while the schedule (or every schedule) was disabled.
    /// False when `last_run_at` was no longer `after`.
    pub async fn pass_over(&self, id: i64, after: Option<i64>, to: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE schedules SET last_run_at = $3 WHERE id = $1 AND COALESCE(last_run_at, -1) = $2")
                .bind(id)
                .bind(after.unwrap_or(-1))
                .bind(to)
                .execute(&self.pool)
                .await
                .map_err(db("pass over a schedule's due time"))?;
        Ok(done.rows_affected() > 0)
    }

    /// The workflows subscribed to schedule `schedule_id`, by id.
    pub async fn schedule_workflows(&self, schedule_id: i64) -> Result<Vec<ScheduleWorkflow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM schedule_workflows WHERE schedule_id = $1 ORDER BY id"
        ))
        .bind(schedule_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("list a schedule's workflows"))?;
        rows.iter().map(subscription).collect()
    }

    /// Subscription `id` of schedule `schedule_id`.
    pub async fn schedule_workflow(&self, schedule_id: i64, id: i64) -> Result<Option<ScheduleWorkflow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM schedule_workflows WHERE schedule_id = $1 AND id = $2"
        ))
        .bind(schedule_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read a schedule's workflow"))?;
        row.as_ref().map(subscription).transpose()
    }

    /// Subscribes a workflow to a schedule; its id.
    pub async fn create_schedule_workflow(&self, w: &ScheduleWorkflow) -> Result<i64, StoreError> {
        let row = insert_subscription(w)
            .fetch_one(&self.pool)
            .await
            .map_err(db("subscribe a workflow"))?;
        Ok(row.get(0))
    }

    /// Writes a subscription's fields (by its schedule and id).
    pub async fn update_schedule_workflow(&self, w: &ScheduleWorkflow) -> Result<bool, StoreError> {
        let done = update_subscription(w)
            .execute(&self.pool)
            .await
            .map_err(db("update a schedule's workflow"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Unsubscribes a workflow.
    pub async fn delete_schedule_workflow(&self, schedule_id: i64, id: i64) -> Result<bool, StoreError> {
        let done = delete_subscription(schedule_id, id)
            .execute(&self.pool)
            .await
            .map_err(db("unsubscribe a workflow"))?;
        Ok(done.rows_affected() > 0)
    }

    /// A page of a schedule's runs, newest first, and how many it has.
    pub async fn schedule_runs(&self, schedule_id: i64, page: Page) -> Result<(i64, Vec<Run>), StoreError> {
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM schedule_runs WHERE schedule_id = $1")
            .bind(schedule_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db("count a schedule's runs"))?
            .get(0);
        let limit = match page.limit {
            Some(l) => format!(" LIMIT {l} OFFSET {}", page.offset),
            None => String::new(),
        };
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM schedule_runs WHERE schedule_id = $1 ORDER BY id DESC{limit}"
        ))
        .bind(schedule_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("list a schedule's runs"))?;
        Ok((count, rows.iter().map(run).collect()))
    }

    /// Rows still `pending` recorded before `before` (µs), oldest first:
    /// runs whose jobs a crash (or a failing database) kept from being
    /// written.
    pub async fn pending_runs(&self, before: i64) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM schedule_runs WHERE outcome = $1 AND at < $2 ORDER BY id"
        ))
        .bind(outcome::PENDING)
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read pending runs"))?;
        Ok(rows.iter().map(run).collect())
    }

    /// Records a run of a schedule, in one transaction: checks that its
    /// previous run has ended (no job of the schedule not final, no row
    /// still `pending`), advances `last_run_at` to the due time (a due
    /// run), and writes the rows: one `pending` per subscribed workflow,
    /// one `failed` when there is none, or one `skipped`.
    ///
    /// The schedule's row is written first, which on PostgreSQL locks it
    /// until the commit: two runs of one schedule (the scheduler and a
    /// `POST /run/`) are recorded one after the other, the second seeing
    /// the first's rows. SQLite's write transactions are serial anyway.
    pub async fn begin_run(&self, f: &Firing) -> Result<Begun, StoreError> {
        let mut tx = self.write().await?;
        let moved = match f.after {
            Some(after) => {
                sqlx::query("UPDATE schedules SET last_run_at = $3 WHERE id = $1 AND COALESCE(last_run_at, -1) = $2")
                    .bind(f.schedule_id)
                    .bind(after.unwrap_or(-1))
                    .bind(f.due_at)
            }
            None => sqlx::query("UPDATE schedules SET last_run_at = last_run_at WHERE id = $1").bind(f.schedule_id),
        }
        .execute(&mut *tx)
        .await
        .map_err(db("advance a schedule"))?;
        if moved.rows_affected() == 0 {
            return Ok(Begun::Moved);
        }
        let row = |outcome: &str, detail: String, sub: Option<&ScheduleWorkflow>| Run {
            id: 0,
            schedule_id: f.schedule_id,
            schedule_workflow_id: sub.map(|s| s.id),
            workflow: sub.map(|s| s.workflow.clone()),
            due_at: f.due_at,
            at: f.at,
            outcome: outcome.into(),
            job_id: None,
            detail,
            manual: f.after.is_none(),
            missed: f.missed,
        };
        let with_note = |why: String| match f.note.is_empty() {
            true => why,
            false => format!("{why}; {}", f.note),
        };
        if let Some((why, st)) = still_going(&mut tx, f.schedule_id).await? {
            let mut skipped = row(outcome::SKIPPED, with_note(why), None);
            if f.after.is_some() {
                skipped.id = insert_run(&mut tx, &skipped).await?;
                tx.commit().await.map_err(db("commit a skipped run"))?;
            }
            return Ok(Begun::Skipped(skipped, st));
        }
        let subs = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM schedule_workflows WHERE schedule_id = $1 ORDER BY id"
        ))
        .bind(f.schedule_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("list a schedule's workflows"))?
        .iter()
        .map(subscription)
        .collect::<Result<Vec<_>, _>>()?;
        let mut rows = Vec::new();
        if subs.is_empty() {
            rows.push(row(
                outcome::FAILED,
                with_note("no workflow is subscribed to the schedule".into()),
                None,
            ));
        }
        for s in &subs {
            rows.push(row(outcome::PENDING, f.note.clone(), Some(s)));
        }
        for r in &mut rows {
            r.id = insert_run(&mut tx, r).await?;
        }
        tx.commit().await.map_err(db("commit a run"))?;
        Ok(Begun::Recorded(rows))
    }

    /// Writes the job of run `run_id` of schedule `schedule_id`, marked
    /// with the schedule, and records it on the run, in one transaction;
    /// only while the run is `pending` (else nothing is written and the
    /// answer is `None`): a run's job is written once, however often this
    /// is tried.
    pub async fn start_run_job(
        &self,
        run_id: i64,
        schedule_id: i64,
        new: &NewJob,
        roots: impl FnOnce(i64) -> Vec<RootTask>,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write().await?;
        // Claim the run first: on PostgreSQL a second attempt waits here
        // for the first to commit, then finds the row taken.
        let claimed = sqlx::query("UPDATE schedule_runs SET outcome = $2 WHERE id = $1 AND outcome = $3")
            .bind(run_id)
            .bind(outcome::STARTED)
            .bind(outcome::PENDING)
            .execute(&mut *tx)
            .await
            .map_err(db("claim a run"))?;
        if claimed.rows_affected() == 0 {
            return Ok(None);
        }
        let id = insert_job(&mut tx, new, roots).await?;
        sqlx::query("UPDATE jobs SET schedule_id = $2 WHERE id = $1")
            .bind(id)
            .bind(schedule_id)
            .execute(&mut *tx)
            .await
            .map_err(db("mark a job with its schedule"))?;
        sqlx::query("UPDATE schedule_runs SET job_id = $2 WHERE id = $1")
            .bind(run_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("record a run's job"))?;
        let created = [NewEvent::job(id, state::PENDING)];
        super::events::commit(tx, self.engine, &created, "commit a run's job").await?;
        Ok(Some(id))
    }

    /// Records that run `run_id`'s job could not be submitted, with why
    /// (before its note); only while it is `pending`.
    pub async fn fail_run(&self, run_id: i64, why: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE schedule_runs SET outcome = $2,
               detail = CASE WHEN detail = '' THEN $3 ELSE $3 || '; ' || detail END
             WHERE id = $1 AND outcome = $4",
        )
        .bind(run_id)
        .bind(outcome::FAILED)
        .bind(why)
        .bind(outcome::PENDING)
        .execute(&self.pool)
        .await
        .map_err(db("record a failed run"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Run `id`.
    pub async fn schedule_run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM schedule_runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a run"))?;
        Ok(row.as_ref().map(run))
    }

    /// Deletes the record of runs made before `before` (µs), but never a
    /// `pending` one; how many went.
    pub async fn prune_runs(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM schedule_runs WHERE at < $1 AND outcome <> $2")
            .bind(before)
            .bind(outcome::PENDING)
            .execute(&self.pool)
            .await
            .map_err(db("prune runs"))?;
        Ok(done.rows_affected())
    }
}
