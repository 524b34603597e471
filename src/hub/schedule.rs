//! The scheduler: fires each enabled schedule at its due times, as
//! Celery beat fires a `crontab` entry, and runs a schedule at once when
//! asked (`POST /api/schedules/{id}/run/`).
//!
//! **Due times.** A schedule's cron fields are read in its site's time
//! zone (`sites.timezone`, an IANA name; UTC when the site has none, an
//! unknown one, or is gone) by [`Cron::next_after`], which follows
//! Celery's crontab to the minute, DST included (see `hub::cron`). Its
//! next due time is the first after `last_run_at`, or after its creation
//! when it never ran.
//!
//! **Missed runs collapse into one**, as in Celery beat (`is_due` runs
//! once and sets `last_run_at`): when several due times have passed (the
//! hub was stopped), the schedule runs once, for the latest of them, and
//! the run's record says how many were missed and since when.
//!
//! **Skip while the previous run goes.** A run is skipped, and recorded
//! as skipped with the job that is still going, while a job of the
//! schedule is not final (`SUCCESS`, `FAILURE`, `CANCELLED`). The seed
//! does this for `bidirectional_snapdiff` schedules only; ferry does it for
//! every schedule, because two jobs of one schedule work on the same
//! paths with the same workflow: the second would only redo the first's
//! work while racing it (locks, snapdiff snapshots), and a schedule whose
//! jobs outlast its period would pile up jobs without bound.
//!
//! **Disabled.** A due time that passes while the schedule is disabled,
//! or while the configuration `schedules_enabled` is false, is passed
//! over: not run, not recorded, and not run later when enabled again
//! (`last_run_at` moves past it, as django-celery-beat resets a disabled
//! entry's `last_run_at`).
//!
//! **Exactly once across a crash.** A job is written by
//! [`submit::start_scheduled`] in its own transaction, after the checks
//! a submission needs, so the run's record and its jobs cannot all be
//! one transaction. The order chosen:
//!
//! 1. One transaction advances `last_run_at` to the due time (only if it
//!    still has the value the due time was computed from) and records the
//!    run: a `pending` row per subscribed workflow, or a `skipped` row.
//! 2. For each `pending` row, one transaction writes the job and turns
//!    the row `started` with the job's id, only if the row is still
//!    `pending`.
//! 3. At start, and then for rows older than a minute, rows still
//!    `pending` get their jobs (step 2 again).
//!
//! A crash before 1 commits leaves `last_run_at` where it was: the
//! restarted hub computes the same due time and runs it (late). A crash
//! after 1 and before 2 leaves a `pending` row: step 3 writes its job. A
//! crash after 2 leaves nothing to do: the row is `started`, and step 2
//! on it writes nothing. So each due time is run once, whenever the hub
//! dies. The other order (jobs first, then the record) would need the
//! record to find the jobs of a half-done run after a crash; with the
//! record first, the claim on its row is what makes step 2 idempotent.
//! The cost: a job written up to a minute late after a crash between 1
//! and 2 (at once when the hub restarts).

use crate::hub::configs::Live;
use crate::hub::cron::{Cron, CronError};
use crate::hub::store::schedules::{Begun, Firing, Run, Schedule, ScheduleWorkflow, outcome};
use crate::hub::store::{Store, StoreError, iso, now_us};
use crate::hub::submit::{self, FromSchedule, Submission, SubmitError};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Why a schedule cannot be run now.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No such schedule.
    #[error("no schedule {0}")]
    NotFound(i64),
    /// Its previous run still goes: which job, and its state.
    #[error("{detail}")]
    Busy {
        /// What still goes.
        detail: String,
        /// Its state.
        state: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest the scheduler sleeps between two rounds: it then reads
/// the schedules again (the API also wakes it when it writes one), and
/// `schedules_enabled`.
const ROUND: Duration = Duration::from_secs(5);

/// A `pending` row older than this, after the first round, is taken to
/// be left by a crash or a database failure, and its job is written.
const PENDING_GRACE_US: i64 = 60_000_000;

/// Walks of due times longer than this many days restart a day before
/// now (a minute schedule down for a year would take 525,600 steps).
const WALK_DAYS: i64 = 1;

/// The time zone called `name` (IANA), or UTC when none is given or the
/// name is unknown.
pub fn zone(name: Option<&str>) -> TimeZone {
    name.and_then(|n| TimeZone::get(n).ok()).unwrap_or(TimeZone::UTC)
}

/// A schedule's cron fields, parsed.
pub fn cron_of(s: &Schedule) -> Result<Cron, CronError> {
    Cron::parse(&s.minute, &s.hour, &s.day_of_week, &s.day_of_month, &s.month_of_year)
}

/// The due times of a schedule that have passed, collapsed into one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// The latest due time at or before now: the run stands for it.
    pub due: Timestamp,
    /// The earliest due time not yet dealt with.
    pub first: Timestamp,
    /// Due times other than `due` collapsed into the run (a lower bound
    /// when not `exact`).
    pub missed: i64,
    /// Whether `missed` was counted one by one (missed runs within
    /// [`WALK_DAYS`]).
    pub exact: bool,
}

/// The due times after `after` and at or before `now` in zone `tz`, or
/// `None` when the next is still to come.
pub fn due(cron: &Cron, after: Timestamp, now: Timestamp, tz: &TimeZone) -> Option<Due> {
    let first = cron.next_after(after, tz)?;
    if first > now {
        return None;
    }
    let mut d = Due {
        due: first,
        first,
        missed: 0,
        exact: true,
    };
    let day = jiff::SignedDuration::from_hours(24 * WALK_DAYS);
    if now.duration_since(first) > day
        && let Some(j) = now.checked_sub(day).ok().and_then(|t| cron.next_after(t, tz))
        && j <= now
        && j > first
    {
        d.due = j;
        d.missed = 1;
        d.exact = false;
    }
    while let Some(next) = cron.next_after(d.due, tz)
        && next <= now
    {
        d.due = next;
        d.missed += 1;
    }
    Some(d)
}

/// When schedule `s` fires next, or `None` when it does not (disabled,
/// globally or itself, or cron fields that do not parse). It may be in
/// the past for a moment: a due time the scheduler is about to run.
pub fn next_run(s: &Schedule, schedules_enabled: bool) -> Option<Timestamp> {
    if !(s.enabled && schedules_enabled) {
        return None;
    }
    let cron = cron_of(s).ok()?;
    let after = Timestamp::from_microsecond(s.last_run_at.unwrap_or(s.created)).ok()?;
    cron.next_after(after, &zone(s.timezone.as_deref()))
}

/// `secs` as `3h 2m 5s` (or `2.4 s` under a minute).
fn human(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as i64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match h {
        0 => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// What a run's record says about its timing, when anything: how long
/// after its due time it ran (from a second late), and the due times
/// collapsed into it.
fn lateness(d: &Due, now: Timestamp) -> String {
    let late = now.duration_since(d.due).as_secs_f64();
    let mut parts = Vec::new();
    if late >= 1.0 {
        parts.push(format!("ran {} after its due time", human(late)));
    }
    if d.missed > 0 {
        parts.push(format!(
            "{}{} earlier due time{} (from {}) collapsed into this run",
            if d.exact { "" } else { "at least " },
            d.missed,
            if d.missed == 1 { "" } else { "s" },
            iso(d.first.as_microsecond()),
        ));
    }
    parts.join("; ")
}

/// The submission a subscription makes on a run of schedule `s`.
fn submission(s: &Schedule, w: &ScheduleWorkflow) -> Submission {
    let paths = s
        .managed_paths
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| serde_json::value::to_raw_value(p).ok())
        .collect();
    Submission {
        workflow: w.workflow.clone(),
        site: w.site.clone(),
        paths,
        queue: Some(w.queue.clone()),
        fields: w.fields.as_object().cloned().unwrap_or_default(),
        discovery: s.discovery.clone().map(Some),
        job: None,
        include: None,
        exclude: None,
        ignore_site_includes: false,
        ignore_site_excludes: false,
        dry_run: false,
    }
}

fn options(s: &Schedule) -> Map<String, Value> {
    s.discovery_options.as_object().cloned().unwrap_or_default()
}

/// Checks a subscription as a run of schedule `s` would submit it (its
/// workflow, site, queue and fields, with the schedule's paths and
/// discovery), writing nothing.
pub async fn check_subscription(store: &Store, s: &Schedule, w: &ScheduleWorkflow) -> Result<(), SubmitError> {
    let opts = options(s);
    let from = FromSchedule {
        schedule_id: s.id,
        discovery_options: &opts,
    };
    submit::check_scheduled(store, &submission(s, w), from).await
}

/// Writes the jobs of a run's `pending` rows (each in its own
/// transaction, only while the row is still pending) and returns the rows
/// as they are then. A row whose submission is refused is recorded
/// `failed` with the reason; one the database failed stays `pending`, to
/// be tried again ([`PENDING_GRACE_US`]).
pub async fn start_pending(store: &Store, outbox: &Notify, depth: u32, s: &Schedule, rows: &[Run]) -> Vec<Run> {
    let opts = options(s);
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if r.outcome == outcome::PENDING {
            start_one(store, outbox, depth, s, &opts, r).await;
            match store.schedule_run(r.id).await {
                Ok(Some(now)) => out.push(now),
                Ok(None) => {}
                Err(_) => out.push(r.clone()),
            }
        } else {
            out.push(r.clone());
        }
    }
    out
}

async fn start_one(store: &Store, outbox: &Notify, depth: u32, s: &Schedule, opts: &Map<String, Value>, r: &Run) {
    let fail = |why: String| async move {
        warn!(schedule = s.id, name = %s.name, run = r.id, reason = %why, "a schedule's run failed");
        if let Err(e) = store.fail_run(r.id, &why).await {
            warn!(schedule = s.id, run = r.id, error = %e, "cannot record a failed run; it is tried again");
        }
    };
    let Some(sub_id) = r.schedule_workflow_id else {
        return fail("the run names no workflow".into()).await;
    };
    let sub = match store.schedule_workflow(s.id, sub_id).await {
        Ok(Some(w)) => w,
        Ok(None) => return fail(format!("workflow subscription {sub_id} was removed")).await,
        Err(e) => {
            warn!(schedule = s.id, run = r.id, error = %e, "cannot start a schedule's job yet; it is tried again");
            return;
        }
    };
    let from = FromSchedule {
        schedule_id: s.id,
        discovery_options: opts,
    };
    match submit::start_scheduled(store, &submission(s, &sub), from, r.id, depth).await {
        Ok(Some(job)) => {
            outbox.notify_one();
            info!(schedule = s.id, name = %s.name, run = r.id, job, workflow = %sub.workflow, due = %iso(r.due_at), "a schedule started a job");
        }
        Ok(None) => {}
        Err(SubmitError::Invalid(why)) => fail(why).await,
        Err(SubmitError::Store(e)) => {
            warn!(schedule = s.id, run = r.id, error = %e, "cannot start a schedule's job yet; it is tried again");
        }
    }
}

/// Runs schedule `id` now, whether it (or every schedule) is enabled or
/// not, leaving its due times alone: records the run and starts its jobs.
/// Refused while its previous run goes. Returns the run's rows.
pub async fn run_now(store: &Store, outbox: &Notify, depth: u32, id: i64) -> Result<Vec<Run>, ScheduleError> {
    let s = store.schedule(id).await?.ok_or(ScheduleError::NotFound(id))?;
    let now = now_us();
    let f = Firing {
        schedule_id: id,
        after: None,
        due_at: now,
        at: now,
        missed: 0,
        note: String::new(),
    };
    match store.begin_run(&f).await? {
        Begun::Moved => Err(ScheduleError::NotFound(id)),
        Begun::Skipped(r, state) => Err(ScheduleError::Busy {
            detail: r.detail,
            state,
        }),
        Begun::Recorded(rows) => Ok(start_pending(store, outbox, depth, &s, &rows).await),
    }
}

/// The scheduler's state between rounds.
struct Scheduler {
    store: Store,
    configs: Arc<Live>,
    outbox: Arc<Notify>,
    /// Schedules whose cron fields did not parse, warned about once.
    warned: HashSet<(i64, String)>,
    /// When old runs' records were last pruned.
    pruned: Option<std::time::Instant>,
}

/// Fires schedules at their due times, forever: a round every few
/// seconds, at each next due time, and when `wake` is notified (a
/// schedule was written). Never stops on bad data or a failing database
/// (each is logged, and the next round tries again).
pub async fn run(store: Store, configs: Arc<Live>, outbox: Arc<Notify>, wake: Arc<Notify>) {
    let mut s = Scheduler {
        store,
        configs,
        outbox,
        warned: HashSet::new(),
        pruned: None,
    };
    let mut first = true;
    loop {
        let next = s.round(first).await;
        first = false;
        let wait = match next {
            // Just after the due time: the next round finds it due.
            Some(t) => Duration::try_from(t.duration_since(Timestamp::now()))
                .unwrap_or_default()
                .saturating_add(Duration::from_millis(2))
                .clamp(Duration::from_millis(50), ROUND),
            None => ROUND,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

impl Scheduler {
    /// One round: reconciles `pending` rows, fires (or passes over) what
    /// is due, prunes old records hourly. Returns the earliest next due
    /// time.
    async fn round(&mut self, first: bool) -> Option<Timestamp> {
        let cfg = self.configs.get();
        self.reconcile(first).await;
        let schedules = match self.store.schedules(None).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the schedules; trying again");
                return None;
            }
        };
        let mut next: Option<Timestamp> = None;
        for s in &schedules {
            let n = self.one(s, cfg.schedules_enabled).await;
            next = match (next, n) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if self.pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            self.pruned = Some(std::time::Instant::now());
            let before = now_us() - cfg.jobs_ttl().as_micros() as i64;
            match self.store.prune_runs(before).await {
                Ok(0) => {}
                Ok(n) => info!(runs = n, "deleted the records of schedule runs older than jobs_ttl"),
                Err(e) => warn!(error = %e, "cannot prune the records of schedule runs"),
            }
        }
        next
    }

    /// Writes the jobs of rows left `pending`: every one on the first
    /// round (the hub just started), then those older than a minute.
    async fn reconcile(&self, first: bool) {
        let before = match first {
            true => i64::MAX,
            false => now_us() - PENDING_GRACE_US,
        };
        let rows = match self.store.pending_runs(before).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read the schedules' pending runs; trying again");
                return;
            }
        };
        for r in rows {
            match self.store.schedule(r.schedule_id).await {
                Ok(Some(s)) => {
                    info!(schedule = s.id, run = r.id, due = %iso(r.due_at), "starting the job of a run left pending");
                    start_pending(
                        &self.store,
                        &self.outbox,
                        self.configs.get().queue_depth(),
                        &s,
                        std::slice::from_ref(&r),
                    )
                    .await;
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read a schedule; trying again"),
            }
        }
    }

    /// Fires or passes over schedule `s` if a due time has passed; its
    /// next due time.
    async fn one(&mut self, s: &Schedule, schedules_enabled: bool) -> Option<Timestamp> {
        let cron = match cron_of(s) {
            Ok(c) => c,
            Err(e) => {
                if self.warned.insert((s.id, e.to_string())) {
                    warn!(schedule = s.id, name = %s.name, error = %e, "a schedule's cron fields do not parse; it never fires");
                }
                return None;
            }
        };
        let tz = zone(s.timezone.as_deref());
        let after = Timestamp::from_microsecond(s.last_run_at.unwrap_or(s.created)).ok()?;
        let now = Timestamp::now();
        let Some(d) = due(&cron, after, now, &tz) else {
            return cron.next_after(after, &tz);
        };
        let due_us = d.due.as_microsecond();
        if !(s.enabled && schedules_enabled) {
            if let Err(e) = self.store.pass_over(s.id, s.last_run_at, due_us).await {
                warn!(schedule = s.id, error = %e, "cannot pass over a disabled schedule's due time");
            }
            return cron.next_after(d.due, &tz);
        }
        let f = Firing {
            schedule_id: s.id,
            after: Some(s.last_run_at),
            due_at: due_us,
            at: now.as_microsecond(),
            missed: d.missed,
            note: lateness(&d, now),
        };
        match self.store.begin_run(&f).await {
            // Changed meanwhile (edited, or deleted): the next round
            // computes again from what is stored.
            Ok(Begun::Moved) => return Some(now),
            Ok(Begun::Skipped(r, _)) => {
                info!(schedule = s.id, name = %s.name, due = %iso(due_us), reason = %r.detail, "a schedule's run was skipped")
            }
            Ok(Begun::Recorded(rows)) => {
                let rows = start_pending(&self.store, &self.outbox, self.configs.get().queue_depth(), s, &rows).await;
                if let Some(r) = rows
                    .iter()
                    .find(|r| r.outcome == outcome::FAILED && r.schedule_workflow_id.is_none())
                {
                    warn!(schedule = s.id, name = %s.name, reason = %r.detail, "a schedule's run failed");
                }
            }
            Err(e) => {
                warn!(schedule = s.id, error = %e, "cannot record a schedule's run; trying again");
                return Some(now);
            }
        }
        cron.next_after(d.due, &tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn every_minute() -> Cron {
        Cron::parse("*", "*", "*", "*", "*").unwrap()
    }

    #[test]
    fn nothing_is_due_before_the_next_minute() {
        let c = every_minute();
        assert_eq!(
            due(
                &c,
                t("2026-03-02T12:00:00Z"),
                t("2026-03-02T12:00:59.999Z"),
                &TimeZone::UTC
            ),
            None
        );
    }

    #[test]
    fn the_minute_is_due_at_its_first_microsecond() {
        let c = every_minute();
        let d = due(&c, t("2026-03-02T12:00:00Z"), t("2026-03-02T12:01:00Z"), &TimeZone::UTC).unwrap();
        assert_eq!(d.due, t("2026-03-02T12:01:00Z"));
        assert_eq!((d.missed, d.exact), (0, true));
    }

    #[test]
    fn missed_runs_collapse_into_the_latest_due_time() {
        let c = every_minute();
        let d = due(&c, t("2026-03-02T12:00:00Z"), t("2026-03-02T12:05:10Z"), &TimeZone::UTC).unwrap();
        assert_eq!(d.due, t("2026-03-02T12:05:00Z"));
        assert_eq!(d.first, t("2026-03-02T12:01:00Z"));
        assert_eq!((d.missed, d.exact), (4, true));
        // Once it ran for 12:05, nothing more is due until 12:06.
        assert_eq!(due(&c, d.due, t("2026-03-02T12:05:59Z"), &TimeZone::UTC), None);
        let note = lateness(&d, t("2026-03-02T12:05:10Z"));
        assert_eq!(
            note,
            "ran 10.0 s after its due time; 4 earlier due times (from 2026-03-02T12:01:00.000000Z) collapsed into this run"
        );
    }

    #[test]
    fn a_long_outage_collapses_without_walking_every_minute() {
        let c = every_minute();
        let d = due(&c, t("2026-01-01T00:00:00Z"), t("2026-03-02T12:05:10Z"), &TimeZone::UTC).unwrap();
        assert_eq!(d.due, t("2026-03-02T12:05:00Z"));
        assert_eq!(d.first, t("2026-01-01T00:01:00Z"));
        assert!(!d.exact);
        assert!(d.missed >= 1440, "{d:?}");
        assert!(lateness(&d, t("2026-03-02T12:05:10Z")).contains("at least "));
    }

    #[test]
    fn a_sparse_schedule_collapses_to_its_latest_due_time_too() {
        // 09:00 on the 1st: down from January to mid-March runs once, for 1 March.
        let c = Cron::parse("0", "9", "*", "1", "*").unwrap();
        let d = due(&c, t("2026-01-01T09:00:00Z"), t("2026-03-15T00:00:00Z"), &TimeZone::UTC).unwrap();
        assert_eq!(d.due, t("2026-03-01T09:00:00Z"));
        assert_eq!(d.first, t("2026-02-01T09:00:00Z"));
        assert_eq!(d.missed, 1);
    }

    #[test]
    fn due_times_are_read_in_the_sites_time_zone() {
        // 09:00 in London is 08:00 UTC in summer (BST), 09:00 in winter.
        let c = Cron::parse("0", "9", "*", "*", "*").unwrap();
        let london = zone(Some("Europe/London"));
        let d = due(&c, t("2026-07-01T00:00:00Z"), t("2026-07-01T08:00:00Z"), &london).unwrap();
        assert_eq!(d.due, t("2026-07-01T08:00:00Z"));
        assert_eq!(
            due(&c, t("2026-07-01T00:00:00Z"), t("2026-07-01T07:59:59Z"), &london),
            None
        );
        let d = due(&c, t("2026-12-01T00:00:00Z"), t("2026-12-01T09:00:00Z"), &london).unwrap();
        assert_eq!(d.due, t("2026-12-01T09:00:00Z"));
        // New York's 09:00 is 13:00 UTC in summer.
        let ny = zone(Some("America/New_York"));
        assert_eq!(
            c.next_after(t("2026-07-01T00:00:00Z"), &ny),
            Some(t("2026-07-01T13:00:00Z"))
        );
    }

    #[test]
    fn an_unknown_or_missing_time_zone_is_utc() {
        let c = Cron::parse("0", "9", "*", "*", "*").unwrap();
        for tz in [zone(None), zone(Some("Mars/Olympus_Mons")), zone(Some(""))] {
            assert_eq!(
                c.next_after(t("2026-07-01T00:00:00Z"), &tz),
                Some(t("2026-07-01T09:00:00Z"))
            );
        }
    }

    #[test]
    fn a_spring_forward_runs_a_skipped_local_time_once_shifted_by_the_gap() {
        // 02:30 does not exist in New York on 2026-03-08: it runs at 03:30 EDT.
        let c = Cron::parse("30", "2", "*", "*", "*").unwrap();
        let ny = zone(Some("America/New_York"));
        let d = due(&c, t("2026-03-07T12:00:00Z"), t("2026-03-08T08:00:00Z"), &ny).unwrap();
        assert_eq!(d.due, t("2026-03-08T07:30:00Z"));
        assert_eq!(d.missed, 0);
    }

    fn schedule(last_run_at: Option<&str>, enabled: bool) -> Schedule {
        Schedule {
            id: 1,
            name: "s".into(),
            site: "london".into(),
            space: None,
            enabled,
            discovery: None,
            discovery_options: serde_json::json!({}),
            managed_paths: serde_json::json!(["/data"]),
            minute: "*/15".into(),
            hour: "*".into(),
            day_of_week: "*".into(),
            day_of_month: "*".into(),
            month_of_year: "*".into(),
            last_run_at: last_run_at.map(|s| t(s).as_microsecond()),
            created: t("2026-03-02T11:52:00Z").as_microsecond(),
            timezone: Some("Europe/London".into()),
        }
    }

    #[test]
    fn the_next_run_counts_from_the_last_run_or_the_creation() {
        assert_eq!(next_run(&schedule(None, true), true), Some(t("2026-03-02T12:00:00Z")));
        assert_eq!(
            next_run(&schedule(Some("2026-03-02T12:15:00Z"), true), true),
            Some(t("2026-03-02T12:30:00Z"))
        );
        assert_eq!(next_run(&schedule(None, false), true), None);
        assert_eq!(next_run(&schedule(None, true), false), None);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(2.44), "2.4 s");
        assert_eq!(human(192.0), "3m 12s");
        assert_eq!(human(7325.0), "2h 2m 5s");
    }
}
