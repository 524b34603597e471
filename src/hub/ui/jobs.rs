//! `/ui/jobs/`: the jobs table (filters, paging, rows refreshed every
//! 5 s), and `/ui/jobs/{id}/`: one job (its fields, progress, task-stats
//! bar, file counts refreshed every 2 s; tabs of tasks and failed items;
//! its actions).
//!
//! The jobs table reads one page of jobs with the store's paged query
//! (`LIMIT`), its counts by state from the metrics' job gauges (refreshed
//! every 5 s), never every job.

use super::actions::{Action, Outcome, action, actions, run};
use super::format::{
    Moment, bytes, count, duration, json_path, moment, percent, state_class, thousands, value_path, value_text,
};
use super::frame::{ConfirmPage, Layout, Query, UiError, UiResult, page};
use super::session::Session;
use super::sync_changes::{SyncRow, sync_row};
use crate::hub::api::ApiState;
use crate::hub::api::jobs::{progress_out, runtime};
use crate::hub::jobctl::JobCtlError;
use crate::hub::store::jobs::{Bind, FileRecord, Filter, Job, Page, Task, state};
use crate::hub::store::now_us;
use crate::hub::store::plan::Planned;
use crate::hub::store::workflows::{COMPLETED_STATES, FAILED_STATES, RecordFiles};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use std::sync::Arc;

/// Jobs per page of the table.
pub const JOBS_PER_PAGE: i64 = 50;
/// Tasks or failed items per page of a job's tab.
pub const ITEMS_PER_PAGE: i64 = 50;
/// Input paths shown on a job's page (the job keeps the first 1,000).
const INPUTS_SHOWN: usize = 20;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui/jobs/", get(list))
        .route("/ui/jobs/rows/", get(rows))
        .route("/ui/jobs/{id}/", get(show))
        .route("/ui/jobs/{id}/live/", get(live))
        .route("/ui/jobs/{id}/confirm/{action}/", get(confirm))
        .route("/ui/jobs/{id}/do/{action}/", post(act))
}

// ---------------------------------------------------------------------------
// The jobs table

/// One row of the jobs table.
#[derive(Clone, Debug)]
pub struct JobRow {
    /// Job id.
    pub id: i64,
    /// Its workflow's name.
    pub workflow: String,
    /// Its `friendly_name`.
    pub name: String,
    /// Its state.
    pub state: String,
    /// The state's badge class.
    pub state_class: &'static str,
    /// `progress.percent`, 0 to 100.
    pub percent: f64,
    /// The same in words.
    pub percent_text: String,
    /// Site.
    pub site: String,
    /// Queue.
    pub queue: String,
    /// When it was submitted.
    pub created: Moment,
    /// How long it ran (or runs).
    pub runtime: String,
}

/// A job as a row of the table, seen at `now` (µs).
pub fn job_row(j: &Job, now: i64) -> JobRow {
    let p = progress_out(j).percent;
    JobRow {
        id: j.id,
        workflow: j.workflow.clone().unwrap_or_else(|| "—".into()),
        name: super::format::visible(&j.friendly_name),
        state: j.state.clone(),
        state_class: state_class(&j.state),
        percent: p,
        percent_text: percent(p),
        site: j.site.clone(),
        queue: j.queue.clone(),
        created: moment(j.created, now),
        runtime: runtime(j.started.or(Some(j.created)), j.completed).map_or_else(|| "—".into(), duration),
    }
}

/// The jobs table's filters and page, as the GET form sends them (every
/// value a string: a value that means nothing is ignored, not an error).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobsQuery {
    /// A job state, or empty for all.
    #[serde(default)]
    pub state: String,
    /// A workflow name, or empty.
    #[serde(default)]
    pub workflow: String,
    /// A site name, or empty.
    #[serde(default)]
    pub site: String,
    /// The page, from 1.
    #[serde(default)]
    pub page: String,
    /// A job just deleted (for the notice).
    #[serde(default)]
    pub deleted: String,
}

impl JobsQuery {
    /// The state asked for, when it is one.
    pub fn state(&self) -> Option<&'static str> {
        let up = self.state.trim().to_uppercase();
        state::ALL.iter().copied().find(|s| *s == up)
    }

    /// The page asked for (1 when none or nonsense).
    pub fn page(&self) -> i64 {
        self.page.trim().parse::<i64>().ok().filter(|p| *p >= 1).unwrap_or(1)
    }

    /// The store's filter.
    pub fn filter(&self) -> Filter {
        let mut f = Filter::default();
        if let Some(st) = self.state() {
            f.cmp("state", "=", Bind::Text(st.into()));
        }
        for (col, v) in [("workflow", &self.workflow), ("site", &self.site)] {
            if !v.trim().is_empty() {
                f.cmp(col, "=", Bind::Text(v.trim().into()));
            }
        }
        f
    }

    /// The query string of these filters at `page` (1: no page), with a
    /// leading `?` when not empty.
    pub fn query(&self, page: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(st) = self.state() {
            q.append_pair("state", st);
        }
        for (k, v) in [("workflow", &self.workflow), ("site", &self.site)] {
            if !v.trim().is_empty() {
                q.append_pair(k, v.trim());
            }
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        let q = q.finish();
        if q.is_empty() { q } else { format!("?{q}") }
    }

    /// Whether any filter is set.
    pub fn filtered(&self) -> bool {
        self.state().is_some() || !self.workflow.trim().is_empty() || !self.site.trim().is_empty()
    }
}

/// Where a list is: page `page` of `pages`, rows `first`..=`last` of
/// `count`, with links to the pages around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pager {
    /// This page, from 1.
    pub page: i64,
    /// Pages in all (at least 1).
    pub pages: i64,
    /// `Page 2 of 1,234`.
    pub text: String,
    /// `51–100 of 61,700`.
    pub rows: String,
    /// The previous page's link.
    pub prev: Option<String>,
    /// The next page's link.
    pub next: Option<String>,
}

/// The pager of page `page` of `size` rows out of `count`; `link` makes a
/// page's address.
pub fn pager(page: i64, size: i64, count: i64, link: impl Fn(i64) -> String) -> Pager {
    let pages = ((count + size - 1) / size).max(1);
    let first = (page - 1) * size + 1;
    let last = (page * size).min(count);
    Pager {
        page,
        pages,
        text: format!("Page {} of {}", thousands(page), thousands(pages)),
        rows: if count == 0 || first > count {
            format!("none of {}", thousands(count))
        } else {
            format!("{}–{} of {}", thousands(first), thousands(last), thousands(count))
        },
        prev: (page > 1).then(|| link((page - 1).min(pages))),
        next: (page < pages).then(|| link(page + 1)),
    }
}

/// One choice of a `<select>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The value sent.
    pub value: String,
    /// What it reads.
    pub label: String,
    /// The one chosen now.
    pub selected: bool,
}

fn choices(given: &str, values: impl IntoIterator<Item = (String, String)>) -> Vec<Choice> {
    let mut out: Vec<Choice> = values
        .into_iter()
        .map(|(value, label)| Choice {
            selected: value == given.trim(),
            value,
            label,
        })
        .collect();
    // A value asked for that is no longer listed (a workflow deleted since)
    // stays chosen.
    if !given.trim().is_empty() && !out.iter().any(|c| c.selected) {
        out.push(Choice {
            value: given.trim().into(),
            label: given.trim().into(),
            selected: true,
        });
    }
    out
}

/// The state choices, with how many jobs each has when known (`count`).
pub fn state_choices(given: Option<&str>, count: impl Fn(&str) -> Option<i64>) -> Vec<Choice> {
    state::ALL
        .iter()
        .map(|st| Choice {
            value: st.to_string(),
            label: match count(st) {
                Some(n) => format!("{st} ({})", thousands(n)),
                None => st.to_string(),
            },
            selected: given == Some(*st),
        })
        .collect()
}

/// The table's rows: the `<tbody>` that htmx fetches again every 5 s.
#[derive(Template)]
#[template(path = "jobs_rows.html")]
struct JobsRows {
    rows: Vec<JobRow>,
    rows_url: String,
    filtered: bool,
}

/// The jobs page.
#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    rows: Vec<JobRow>,
    rows_url: String,
    filtered: bool,
    states: Vec<Choice>,
    workflows: Vec<Choice>,
    sites: Vec<Choice>,
    pager: Pager,
    total: String,
    notice: Option<String>,
}

async fn table(s: &ApiState, q: &JobsQuery) -> UiResult<(i64, Vec<JobRow>)> {
    let page = q.page();
    let (count, jobs) = s
        .store
        .jobs_brief(
            &q.filter(),
            Page {
                offset: (page - 1).saturating_mul(JOBS_PER_PAGE),
                limit: Some(JOBS_PER_PAGE),
            },
        )
        .await?;
    let now = now_us();
    Ok((count, jobs.iter().map(|j| job_row(j, now)).collect()))
}

async fn list(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Query(q): Query<JobsQuery>,
) -> UiResult<Response> {
    let (count, rows) = table(&s, &q).await?;
    let workflows = s.store.workflows().await?;
    let sites = s.store.sites().await?;
    // The hub's jobs by state, as the metrics counted them (up to 5 s ago).
    let total: i64 = state::ALL.iter().filter_map(|st| s.metrics.jobs_in(st)).sum();
    page(
        StatusCode::OK,
        &JobsPage {
            layout: session.layout("jobs"),
            rows_url: format!("/ui/jobs/rows/{}", q.query(q.page())),
            filtered: q.filtered(),
            states: state_choices(q.state(), |st| s.metrics.jobs_in(st)),
            workflows: choices(
                &q.workflow,
                workflows
                    .iter()
                    .map(|w| (w.name.clone(), format!("{} ({})", w.label, w.name))),
            ),
            sites: choices(&q.site, sites.iter().map(|x| (x.name.clone(), x.name.clone()))),
            pager: pager(q.page(), JOBS_PER_PAGE, count, |p| format!("/ui/jobs/{}", q.query(p))),
            total: thousands(total),
            notice: q.deleted.parse::<i64>().ok().map(|id| format!("Job {id} was deleted.")),
            rows,
        },
    )
}

async fn rows(State(s): State<Arc<ApiState>>, Query(q): Query<JobsQuery>) -> UiResult<Response> {
    let (_, rows) = table(&s, &q).await?;
    let t = JobsRows {
        rows,
        rows_url: format!("/ui/jobs/rows/{}", q.query(q.page())),
        filtered: q.filtered(),
    };
    Ok(Html(t.render()?).into_response())
}

// ---------------------------------------------------------------------------
// One job

/// A job's fixed facts, as its page lists them.
#[derive(Clone, Debug)]
pub struct JobView {
    /// Job id.
    pub id: i64,
    /// Its `friendly_name`.
    pub name: String,
    /// Workflow name.
    pub workflow: String,
    /// Site.
    pub site: String,
    /// Queue.
    pub queue: String,
    /// Discovery, or `none`.
    pub discovery: String,
    /// Who submitted it.
    pub owner: String,
    /// Submitted.
    pub created: Moment,
    /// First task started.
    pub started: Option<Moment>,
    /// Ended.
    pub completed: Option<Moment>,
    /// Runtime.
    pub runtime: String,
    /// Runtime fields, `name = value`.
    pub fields: Vec<(String, String)>,
    /// The first input paths.
    pub inputs: Vec<String>,
    /// More input paths than shown (`and 980 more`), if any.
    pub inputs_more: Option<String>,
    /// While it runs: how many nodes online consume its queue (none: its
    /// tasks wait).
    pub takers: Option<String>,
    /// No node online consumes its queue.
    pub no_takers: bool,
    /// Which files it records (`failures`, `all`, `none`).
    pub record_files: &'static str,
    /// It only discovers.
    pub dry_run: bool,
}

/// A job's facts, seen at `now`, with the nodes online that consume its
/// queue (`takers`, while it runs).
pub fn job_view(j: &Job, now: i64, takers: Option<i64>) -> JobView {
    let inputs = j.input_paths.as_array().cloned().unwrap_or_default();
    JobView {
        id: j.id,
        name: super::format::visible(&j.friendly_name),
        workflow: j.workflow.clone().unwrap_or_else(|| "—".into()),
        site: j.site.clone(),
        queue: j.queue.clone(),
        discovery: j
            .discovery
            .clone()
            .unwrap_or_else(|| "none (the paths are the files)".into()),
        owner: format!("{} ({})", j.owner.name, j.owner.kind),
        created: moment(j.created, now),
        started: j.started.map(|t| moment(t, now)),
        completed: j.completed.map(|t| moment(t, now)),
        runtime: runtime(j.started.or(Some(j.created)), j.completed).map_or_else(|| "—".into(), duration),
        fields: j
            .fields
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), value_text(v))).collect())
            .unwrap_or_default(),
        inputs: inputs.iter().take(INPUTS_SHOWN).map(value_path).collect(),
        inputs_more: (inputs.len() > INPUTS_SHOWN).then(|| {
            let more = thousands((inputs.len() - INPUTS_SHOWN) as i64);
            match inputs.len() >= 1000 {
                true => format!("and {more} more shown (the hub keeps the first 1,000)"),
                false => format!("and {more} more"),
            }
        }),
        takers: takers.map(|n| match n {
            0 => format!("none: no node online consumes queue {}, so its tasks wait", j.queue),
            n => count(n, "node", "nodes"),
        }),
        no_takers: takers == Some(0),
        record_files: j.record_files.as_str(),
        dry_run: j.dry_run,
    }
}

/// One rule's line of a dry run, as the job page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRow {
    /// The rule's number, from 1 as people count.
    pub rule: u64,
    /// Its actions, `migrate → stat_paths`.
    pub actions: String,
    /// Entries matched.
    pub entries: String,
    /// Their bytes, in binary units.
    pub bytes: String,
}

fn plan_row(p: &Planned) -> PlanRow {
    PlanRow {
        rule: p.rule + 1,
        actions: p
            .actions
            .iter()
            .map(|a| a.rsplit('.').next().unwrap_or(a))
            .collect::<Vec<_>>()
            .join(" → "),
        entries: thousands(p.entries as i64),
        bytes: bytes(p.bytes),
    }
}

/// One segment of the task-stats bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// `success`, `error`, ...: its colour class and test id.
    pub key: &'static str,
    /// `Success`, `Error`, ...
    pub label: &'static str,
    /// Tasks in it.
    pub count: i64,
    /// The same with separators.
    pub count_text: String,
    /// Where it starts on the bar, of 1000.
    pub x: i64,
    /// Its width, of 1000.
    pub width: i64,
}

/// The task-stats bar: the job's tasks by state, in the seed's order.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsBar {
    /// Every segment, empty ones included (the legend lists them all).
    pub segments: Vec<Segment>,
    /// Tasks in all.
    pub total: i64,
    /// The same with separators.
    pub total_text: String,
}

/// The bar's segments: (key, label, the task states it counts).
const SEGMENTS: &[(&str, &str, &[&str])] = &[
    ("success", "Success", &["SUCCESS"]),
    ("error", "Error", &["ERROR"]),
    ("skipped", "Skipped", &["SKIPPED"]),
    ("aborted", "Aborted", &["ABORTED"]),
    ("cancelled", "Cancelled", &["CANCELLED", "REVOKED"]),
    ("failure", "Failure", &["FAILURE"]),
    ("started", "Started", &["STARTED"]),
    ("pending", "Pending", &["PENDING"]),
];

/// The task-stats bar of a job's `(tasktype, state, n)` counts. A state
/// no segment counts goes to an `Other` segment, shown only then.
pub fn stats_bar(stats: &[(String, String, i64)]) -> StatsBar {
    let mut counts: Vec<(&'static str, &'static str, i64)> = SEGMENTS.iter().map(|(k, l, _)| (*k, *l, 0)).collect();
    let mut other = 0;
    for (_, st, n) in stats {
        match SEGMENTS.iter().position(|(_, _, states)| states.contains(&st.as_str())) {
            Some(i) => counts[i].2 += n,
            None => other += n,
        }
    }
    if other > 0 {
        counts.push(("other", "Other", other));
    }
    let total: i64 = counts.iter().map(|c| c.2).sum();
    // Cumulative rounding: the segments meet and end at 1000 exactly.
    let mut seen = 0;
    let segments = counts
        .into_iter()
        .map(|(key, label, count)| {
            let at = |n: i64| if total == 0 { 0 } else { n * 1000 / total };
            let (x, end) = (at(seen), at(seen + count));
            seen += count;
            Segment {
                key,
                label,
                count,
                count_text: thousands(count),
                x,
                width: end - x,
            }
        })
        .collect();
    StatsBar {
        segments,
        total,
        total_text: thousands(total),
    }
}

/// One of a job's file counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCount {
    /// `found`, `processed`, ...: its test id.
    pub key: &'static str,
    /// What it reads.
    pub label: &'static str,
    /// The number with separators.
    pub value: String,
    /// Worth a colour: failures above 0.
    pub bad: bool,
}

/// A job's file counts.
pub fn file_counts(j: &Job) -> Vec<FileCount> {
    [
        ("found", "Found", j.files_found, false),
        ("processed", "Processed", j.files_processed, false),
        ("skipped", "Skipped", j.files_skipped, false),
        ("aborted", "Aborted", j.files_aborted, j.files_aborted > 0),
        ("failures", "Failed", j.files_failures, j.files_failures > 0),
    ]
    .into_iter()
    .map(|(key, label, n, bad)| FileCount {
        key,
        label,
        value: thousands(n),
        bad,
    })
    .collect()
}

/// The part of a job's page that changes while it runs: state, progress,
/// task-stats bar, file counts, actions.
#[derive(Clone, Debug)]
pub struct Live {
    /// Job id.
    pub id: i64,
    /// State.
    pub state: String,
    /// Its badge class.
    pub state_class: &'static str,
    /// `progress.percent`.
    pub percent: f64,
    /// In words.
    pub percent_text: String,
    /// What the progress counts: `12 of 40 tasks done`.
    pub progress_note: String,
    /// The task-stats bar.
    pub bar: StatsBar,
    /// File counts.
    pub files: Vec<FileCount>,
    /// The actions it offers now.
    pub actions: Vec<Action>,
    /// It has ended: no more refreshes.
    pub ended: bool,
}

/// The changing part of job `j`'s page, with its task `stats`.
pub fn live_view(j: &Job, stats: &[(String, String, i64)]) -> Live {
    let p = progress_out(j);
    let mut note = if p.dir_walk_complete {
        format!(
            "{} of {} files done, {} of {} tasks",
            thousands(p.files_done),
            thousands(p.files_found),
            thousands(p.tasks_done),
            thousands(p.tasks_total)
        )
    } else {
        format!(
            "{} files done of {} found so far; the discovery is still walking ({} batches published)",
            thousands(p.files_done),
            thousands(p.files_walked),
            thousands(p.children_published)
        )
    };
    if let Some(eta) = p.eta_s
        && !state::FINAL.contains(&j.state.as_str())
    {
        note.push_str(&format!(", about {} left", duration(eta)));
    }
    Live {
        id: j.id,
        state: j.state.clone(),
        state_class: state_class(&j.state),
        percent: p.percent,
        percent_text: percent(p.percent),
        progress_note: note,
        bar: stats_bar(stats),
        files: file_counts(j),
        actions: actions(&j.state),
        ended: state::FINAL.contains(&j.state.as_str()),
    }
}

/// A tab of a job's page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tab {
    /// `tasks`, `failed`, `completed`.
    pub key: &'static str,
    /// `Tasks (1,234)`.
    pub label: String,
    /// Its link.
    pub href: String,
    /// The one shown.
    pub active: bool,
}

/// The tabs of job `id`'s page, `active` shown, with their counts.
pub fn tabs(id: i64, active: &str, tasks: i64, failed: i64, sync: Option<i64>) -> Vec<Tab> {
    [
        ("tasks", format!("Tasks ({})", thousands(tasks))),
        ("failed", format!("Failed items ({})", thousands(failed))),
        ("completed", "Completed items".to_string()),
    ]
    .into_iter()
    .chain(sync.map(|n| ("sync", format!("Sync changes ({})", thousands(n)))))
    .map(|(key, label)| Tab {
        key,
        label,
        href: format!("/ui/jobs/{id}/?tab={key}"),
        active: key == active,
    })
    .collect()
}

/// One task, as the Tasks tab lists it.
#[derive(Clone, Debug)]
pub struct TaskRow {
    /// Row id.
    pub id: i64,
    /// Celery id.
    pub task_id: String,
    /// `recursive_navigate`, `migrate`...
    pub kind: String,
    /// State.
    pub state: String,
    /// Its badge class.
    pub state_class: &'static str,
    /// The node that ran it.
    pub node: String,
    /// Started.
    pub started: Option<Moment>,
    /// Runtime.
    pub runtime: String,
    /// Its counts: `processed 39 · failures 1`.
    pub summary: String,
}

/// A task as a row, seen at `now`.
pub fn task_row(t: &Task, now: i64) -> TaskRow {
    let summary = t
        .summary
        .as_ref()
        .and_then(|s| s.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_i64().filter(|n| *n != 0).map(|n| format!("{k} {}", thousands(n))))
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_default();
    TaskRow {
        id: t.id,
        task_id: t.task_id.clone(),
        kind: t.tasktype.rsplit('.').next().unwrap_or(&t.tasktype).to_string(),
        state: t.state.clone(),
        state_class: state_class(&t.state),
        node: t.node.clone().unwrap_or_else(|| "—".into()),
        started: t.started.map(|x| moment(x, now)),
        runtime: match t.started {
            Some(_) => runtime(t.started, t.completed.or(Some(now))).map_or_else(|| "—".into(), duration),
            None => "—".into(),
        },
        summary: if summary.is_empty() { "—".into() } else { summary },
    }
}

/// One failed or aborted file, as the Failed items tab lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRow {
    /// Row id.
    pub id: i64,
    /// The path, escapes visible.
    pub path: String,
    /// `failures` or `aborted`.
    pub state: String,
    /// The error's name (`EACCES`) or `—`.
    pub code: String,
    /// `transient` or `permanent` for a failure (`—` otherwise): whether
    /// trying again later could help.
    pub category: String,
    /// The reasons, one per line.
    pub message: Vec<String>,
    /// The task that reported it (Celery id).
    pub task: String,
}

/// A per-file record as a row.
pub fn failed_row(r: &FileRecord) -> FailedRow {
    let message = match serde_json::from_str::<serde_json::Value>(&r.message) {
        Ok(serde_json::Value::Array(a)) => a.iter().map(value_text).collect(),
        Ok(v) => vec![value_text(&v)],
        Err(_) => vec![super::format::visible(&r.message)],
    };
    FailedRow {
        id: r.id,
        path: json_path(&r.path),
        state: match r.state.as_str() {
            "failures" => "failed".into(),
            other => other.to_string(),
        },
        code: r.code.clone().unwrap_or_else(|| "—".into()),
        category: match r.state.as_str() {
            "failures" => crate::task::errors::category(&r.message).to_string(),
            _ => "—".into(),
        },
        message,
        task: r.task_id.clone(),
    }
}

/// A job's page.
#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    job: JobView,
    /// A dry run's findings, per rule.
    plan: Option<Vec<PlanRow>>,
    live: Live,
    tab: &'static str,
    tabs: Vec<Tab>,
    tasks: Vec<TaskRow>,
    failed: Vec<FailedRow>,
    sync: Vec<SyncRow>,
    pager: Option<Pager>,
    notice: Option<String>,
    error: Option<String>,
}

/// The live part of a job's page alone (htmx fetches it every 2 s).
#[derive(Template)]
#[template(path = "job_live.html")]
struct JobLive {
    layout: Layout,
    live: Live,
}

/// A job's page: which tab, which page of it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobQuery {
    /// `tasks` (default), `failed`, `completed`, `sync` (a bidirectional
    /// sync's changes).
    #[serde(default)]
    pub tab: String,
    /// The tab's page, from 1.
    #[serde(default)]
    pub page: String,
    /// An action just carried out.
    #[serde(default)]
    pub done: String,
}

fn job_id(raw: &str) -> UiResult<i64> {
    raw.parse().map_err(|_| UiError::not_found(&format!("job {raw:?}")))
}

async fn job_page(s: &ApiState, session: &Session, id: i64, q: &JobQuery, error: Option<String>) -> UiResult<JobPage> {
    let j = s
        .store
        .job(id)
        .await?
        .ok_or_else(|| UiError::not_found(&format!("job {id}")))?;
    let stats = s.store.task_stats(Some(id)).await?;
    let now = now_us();
    let live = live_view(&j, &stats);
    let takers = match live.ended {
        true => None,
        false => {
            let since = now - s.settings.node_health_interval.as_micros() as i64;
            Some(s.store.queue_consumers(&j.site, &j.queue, since).await?)
        }
    };
    let changes = s.store.job_sync_events(id).await?;
    let tab = match q.tab.as_str() {
        "failed" => "failed",
        "completed" => "completed",
        "sync" if changes.is_some() => "sync",
        _ => "tasks",
    };
    let page_no = q.page.parse::<i64>().ok().filter(|p| *p >= 1).unwrap_or(1);
    let at = Page {
        offset: (page_no - 1).saturating_mul(ITEMS_PER_PAGE),
        limit: Some(ITEMS_PER_PAGE),
    };
    let link = |p: i64| format!("/ui/jobs/{id}/?tab={tab}&page={p}");
    let (mut tasks, mut failed, mut sync, mut pg) = (Vec::new(), Vec::new(), Vec::new(), None);
    let mut failed_count = j.files_failures + j.files_aborted;
    let files_in = |states: &[&str]| {
        let mut f = Filter::default();
        f.cmp("job_id", "=", Bind::Int(id));
        f.any_of("state", states.iter().map(|x| Bind::Text(x.to_string())).collect());
        f
    };
    match tab {
        "tasks" => {
            tasks = s
                .store
                .job_tasks(id, at)
                .await?
                .iter()
                .map(|t| task_row(t, now))
                .collect();
            pg = Some(pager(page_no, ITEMS_PER_PAGE, live.bar.total, link));
        }
        "failed" => {
            let (count, rows) = s.store.file_records(&files_in(&FAILED_STATES), at).await?;
            failed_count = count;
            failed = rows.iter().map(failed_row).collect();
            pg = Some(pager(page_no, ITEMS_PER_PAGE, count, link));
        }
        "sync" => {
            let all = changes.as_deref().unwrap_or_default();
            let from = (at.offset as usize).min(all.len());
            let to = (from + ITEMS_PER_PAGE as usize).min(all.len());
            sync = all[from..to].iter().map(sync_row).collect();
            pg = Some(pager(page_no, ITEMS_PER_PAGE, all.len() as i64, link));
        }
        "completed" if j.record_files == RecordFiles::All => {
            let (count, rows) = s.store.file_records(&files_in(&COMPLETED_STATES), at).await?;
            failed = rows.iter().map(failed_row).collect();
            pg = Some(pager(page_no, ITEMS_PER_PAGE, count, link));
        }
        _ => {}
    }
    let plan = match j.dry_run {
        true => Some(s.store.dry_run_plan(id).await?.iter().map(plan_row).collect()),
        false => None,
    };
    Ok(JobPage {
        layout: session.layout("jobs"),
        job: job_view(&j, now, takers),
        plan,
        tabs: tabs(
            id,
            tab,
            live.bar.total,
            failed_count,
            changes.as_ref().map(|c| c.len() as i64),
        ),
        live,
        tab,
        tasks,
        failed,
        sync,
        pager: pg,
        notice: action(&q.done).map(|a| a.done.to_string()).filter(|d| !d.is_empty()),
        error,
    })
}

async fn show(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
) -> UiResult<Response> {
    let id = job_id(&id)?;
    page(StatusCode::OK, &job_page(&s, &session, id, &q, None).await?)
}

async fn live(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let id = job_id(&id)?;
    let j = s
        .store
        .job(id)
        .await?
        .ok_or_else(|| UiError::not_found(&format!("job {id}")))?;
    let stats = s.store.task_stats(Some(id)).await?;
    let t = JobLive {
        layout: session.layout("jobs"),
        live: live_view(&j, &stats),
    };
    Ok(Html(t.render()?).into_response())
}

async fn confirm(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path((id, name)): Path<(String, String)>,
) -> UiResult<Response> {
    let id = job_id(&id)?;
    let a = action(&name).ok_or_else(|| UiError::not_found(&format!("action {name:?}")))?;
    let j = s
        .store
        .job(id)
        .await?
        .ok_or_else(|| UiError::not_found(&format!("job {id}")))?;
    page(
        StatusCode::OK,
        &ConfirmPage {
            layout: session.layout("jobs"),
            title: format!("{} job {id}: {}", a.label, super::format::visible(&j.friendly_name)),
            question: a.confirm.unwrap_or(""),
            action: format!("/ui/jobs/{id}/do/{}/", a.name),
            button: a.label,
            testid: format!("confirm-{}", a.name),
            back: format!("/ui/jobs/{id}/"),
        },
    )
}

async fn act(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path((id, name)): Path<(String, String)>,
) -> UiResult<Response> {
    let id = job_id(&id)?;
    let a = action(&name).ok_or_else(|| UiError::not_found(&format!("action {name:?}")))?;
    let to = match run(&s, &session, id, &a).await {
        Ok(Outcome::Job) => format!("/ui/jobs/{id}/?done={}", a.name),
        Ok(Outcome::New(new)) => format!("/ui/jobs/{new}/"),
        Ok(Outcome::Gone) => format!("/ui/jobs/?deleted={id}"),
        Err(e @ JobCtlError::Conflict { .. }) => {
            let q = JobQuery::default();
            let p = job_page(&s, &session, id, &q, Some(format!("{} refused: {e}.", a.label))).await?;
            return page(StatusCode::CONFLICT, &p);
        }
        Err(e) => return Err(e.into()),
    };
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
