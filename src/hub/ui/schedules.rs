//! `/ui/schedules/`: the schedules, each with its cron, its time zone,
//! its last and next run, and a Run now button (the API's `POST
//! /api/schedules/{id}/run/`, through the same `hub::schedule::run_now`);
//! one schedule's JSON in an editor (create, change) with its subscribed
//! workflows and its latest runs; and delete.
//!
//! The editor holds a schedule and its subscriptions in one document:
//! the fields of `POST /api/schedules/` and, under `workflows`, those of
//! `POST /api/schedules/{id}/workflows/` (with the `id` of each one
//! kept). It is checked by the API's own code, every subscription as a
//! run would submit it, and saved in one transaction, so a schedule is
//! never left half-changed; an error shows next to the editor, with the
//! text as it was typed.

use super::format::{Moment, moment, ordered_json};
use super::frame::{Form, Layout, Query, UiError, UiResult, delete_confirmation, deleted, editor_error, page};
use super::session::Session;
use crate::hub::api::ApiState;
use crate::hub::api::schedules::{document_json, read_document, save_document};
use crate::hub::schedule::{ScheduleError, next_run, run_now};
use crate::hub::store::jobs::Page;
use crate::hub::store::now_us;
use crate::hub::store::schedules::{Run, Schedule};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui/schedules/", get(list))
        .route("/ui/schedules/new/", get(new).post(create))
        .route("/ui/schedules/{id}/", get(show).post(save))
        .route("/ui/schedules/{id}/run/", post(run))
        .route("/ui/schedules/{id}/delete/", get(confirm_delete).post(delete))
}

/// A schedule as a row of the list.
#[derive(Clone, Debug)]
pub struct ScheduleRow {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Site.
    pub site: String,
    /// The five cron fields, `m h dom mon dow` (crontab's order).
    pub cron: String,
    /// The site's time zone, or `UTC`.
    pub timezone: String,
    /// `yes` / `no`.
    pub enabled: &'static str,
    /// The managed paths, one per line.
    pub paths: Vec<String>,
    /// The last due time dealt with.
    pub last: Option<Moment>,
    /// The next due time, if it fires.
    pub next: Option<Moment>,
}

/// Schedule `s` as a row, at `now` (µs), `schedules_enabled` or not.
pub fn schedule_row(s: &Schedule, schedules_enabled: bool, now: i64) -> ScheduleRow {
    ScheduleRow {
        id: s.id,
        name: s.name.clone(),
        site: s.site.clone(),
        cron: format!(
            "{} {} {} {} {}",
            s.minute, s.hour, s.day_of_month, s.month_of_year, s.day_of_week
        ),
        timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
        enabled: if s.enabled { "yes" } else { "no" },
        paths: s
            .managed_paths
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        last: s.last_run_at.map(|t| moment(t, now)),
        next: next_run(s, schedules_enabled).map(|t| moment(t.as_microsecond(), now)),
    }
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<ScheduleRow>,
    enabled: bool,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct Notice {
    #[serde(default)]
    ran: String,
    #[serde(default)]
    jobs: String,
    #[serde(default)]
    deleted: String,
    #[serde(default)]
    saved: String,
}

async fn render(s: &ApiState, session: &Session, notice: Option<String>, error: Option<String>) -> UiResult<ListPage> {
    let enabled = s.configs.get().schedules_enabled;
    let now = now_us();
    let rows = s
        .store
        .schedules(None)
        .await?
        .iter()
        .map(|x| schedule_row(x, enabled, now))
        .collect();
    Ok(ListPage {
        layout: session.layout("schedules"),
        rows,
        enabled,
        notice,
        error,
    })
}

async fn list(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Query(n): Query<Notice>,
) -> UiResult<Response> {
    let notice = if !n.ran.is_empty() {
        Some(format!("Schedule {} ran now: jobs {}.", n.ran, n.jobs))
    } else {
        (!n.deleted.is_empty()).then(|| format!("Schedule {:?} was deleted.", n.deleted))
    };
    page(StatusCode::OK, &render(&s, &session, notice, None).await?)
}

/// The order of a schedule's keys in the editor: what names it, when it
/// fires, what it works on, then its workflows.
const KEY_ORDER: &[&str] = &[
    "name",
    "site",
    "enabled",
    "minute",
    "hour",
    "day_of_month",
    "month_of_year",
    "day_of_week",
    "managed_paths",
    "discovery",
    "discovery_options",
    "space",
    "workflows",
];

/// The editor's text of a new schedule on site `site`: a skeleton to
/// fill in (every night at 02:00, one subscribed workflow).
pub fn new_schedule_text(site: &str) -> String {
    let v = serde_json::json!({
        "name": "nightly",
        "site": site,
        "enabled": true,
        "minute": "0",
        "hour": "2",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "*",
        "managed_paths": ["/mmfs1/data"],
        "discovery": null,
        "discovery_options": {},
        "workflows": [{"workflow": "migrate", "queue": "default", "fields": {}}],
    });
    ordered_json(&v, KEY_ORDER)
}

/// A run of a schedule as a row of its page.
#[derive(Clone, Debug)]
pub struct RunRow {
    /// The due time it stands for.
    pub due: Moment,
    /// `started`, `skipped`, `failed` or `pending`.
    pub outcome: String,
    /// The workflow, for a started or failed one.
    pub workflow: String,
    /// The job it started.
    pub job: Option<i64>,
    /// Why it was skipped or failed; `by hand` for a run now.
    pub detail: String,
}

fn run_row(r: &Run, now: i64) -> RunRow {
    let mut detail = r.detail.clone();
    if r.manual {
        detail = if detail.is_empty() {
            "by hand".into()
        } else {
            format!("by hand; {detail}")
        };
    }
    RunRow {
        due: moment(r.due_at, now),
        outcome: r.outcome.clone(),
        workflow: r.workflow.clone().unwrap_or_default(),
        job: r.job_id,
        detail,
    }
}

/// The editor of a schedule (`id` 0: a new one).
#[derive(Template)]
#[template(path = "schedule.html")]
struct EditPage {
    layout: Layout,
    id: i64,
    title: String,
    row: Option<ScheduleRow>,
    text: String,
    error: Option<String>,
    notice: Option<String>,
    action: String,
    runs: Vec<RunRow>,
}

/// How many of a schedule's latest runs its page lists.
const RUNS_SHOWN: i64 = 10;

/// What the editor sends.
#[derive(Deserialize)]
struct Editor {
    #[serde(default)]
    json: String,
}

fn schedule_id(raw: &str) -> UiResult<i64> {
    raw.parse()
        .map_err(|_| UiError::not_found(&format!("schedule {raw:?}")))
}

async fn load(s: &ApiState, id: i64) -> UiResult<Schedule> {
    s.store
        .schedule(id)
        .await?
        .ok_or_else(|| UiError::not_found(&format!("schedule {id}")))
}

/// The page of schedule `x` showing `text`, with its row and latest runs.
async fn edit_page(
    s: &ApiState,
    session: &Session,
    x: &Schedule,
    text: String,
    error: Option<String>,
    notice: Option<String>,
) -> UiResult<EditPage> {
    let now = now_us();
    let (_, runs) = s
        .store
        .schedule_runs(
            x.id,
            Page {
                offset: 0,
                limit: Some(RUNS_SHOWN),
            },
        )
        .await?;
    Ok(EditPage {
        layout: session.layout("schedules"),
        id: x.id,
        title: format!("Schedule {}", x.name),
        row: Some(schedule_row(x, s.configs.get().schedules_enabled, now)),
        text,
        error,
        notice,
        action: format!("/ui/schedules/{}/", x.id),
        runs: runs.iter().map(|r| run_row(r, now)).collect(),
    })
}

fn new_page(session: &Session, text: String, error: Option<String>) -> EditPage {
    EditPage {
        layout: session.layout("schedules"),
        id: 0,
        title: "New schedule".into(),
        row: None,
        text,
        error,
        notice: None,
        action: "/ui/schedules/new/".into(),
        runs: Vec::new(),
    }
}

async fn new(State(s): State<Arc<ApiState>>, Extension(session): Extension<Session>) -> UiResult<Response> {
    let site = s.store.sites().await?.into_iter().next().map(|x| x.name);
    let text = new_schedule_text(site.as_deref().unwrap_or("my_site"));
    page(StatusCode::OK, &new_page(&session, text, None))
}

async fn create(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Form(f): Form<Editor>,
) -> UiResult<Response> {
    let made = match read_document(&f.json) {
        Ok(doc) => save_document(&s, None, doc).await,
        Err(e) => Err(e),
    };
    match made {
        Ok(x) => Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/ui/schedules/{}/?saved=created", x.id))],
        )
            .into_response()),
        Err(e) if e.status.is_client_error() => {
            page(e.status, &new_page(&session, f.json, Some(editor_error(e.detail))))
        }
        Err(e) => Err(UiError {
            status: e.status,
            message: e.detail,
        }),
    }
}

async fn show(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> UiResult<Response> {
    let x = load(&s, schedule_id(&id)?).await?;
    let subs = s.store.schedule_workflows(x.id).await?;
    let text = ordered_json(&document_json(&x, &subs), KEY_ORDER);
    let notice = match n.saved.as_str() {
        "created" => Some("Created.".into()),
        "" => None,
        _ => Some("Saved.".into()),
    };
    page(StatusCode::OK, &edit_page(&s, &session, &x, text, None, notice).await?)
}

async fn save(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(f): Form<Editor>,
) -> UiResult<Response> {
    let id = schedule_id(&id)?;
    let x = load(&s, id).await?;
    let saved = match read_document(&f.json) {
        Ok(doc) => save_document(&s, Some(id), doc).await,
        Err(e) => Err(e),
    };
    match saved {
        Ok(_) => Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/ui/schedules/{id}/?saved=1"))],
        )
            .into_response()),
        Err(e) if e.status.is_client_error() => {
            let p = edit_page(&s, &session, &x, f.json, Some(editor_error(e.detail)), None).await?;
            page(e.status, &p)
        }
        Err(e) => Err(UiError {
            status: e.status,
            message: e.detail,
        }),
    }
}

async fn confirm_delete(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let x = load(&s, schedule_id(&id)?).await?;
    let title = format!("Delete schedule {}", x.name);
    page(
        StatusCode::OK,
        &delete_confirmation(
            session.layout("schedules"),
            "schedules",
            x.id,
            title,
            "Delete this schedule, its subscribed workflows and the record of its runs? The jobs it started stay.",
        ),
    )
}

async fn delete(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> UiResult<Response> {
    let x = load(&s, schedule_id(&id)?).await?;
    if !s.store.delete_schedule(x.id).await? {
        return Err(UiError::not_found(&format!("schedule {}", x.id)));
    }
    Ok(deleted("schedules", &x.name))
}

async fn run(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let id: i64 = id
        .parse()
        .map_err(|_| UiError::not_found(&format!("schedule {id:?}")))?;
    match run_now(&s.store, &s.outbox, s.configs.get().queue_depth(), id).await {
        Ok(rows) => {
            let jobs: Vec<String> = rows.iter().filter_map(|r| r.job_id).map(|j| j.to_string()).collect();
            let to = format!("/ui/schedules/?ran={id}&jobs={}", jobs.join(","));
            Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
        }
        Err(ScheduleError::NotFound(_)) => Err(UiError::not_found(&format!("schedule {id}"))),
        Err(ScheduleError::Busy { detail, .. }) => {
            let p = render(&s, &session, None, Some(format!("Run now refused: {detail}."))).await?;
            page(StatusCode::CONFLICT, &p)
        }
        Err(ScheduleError::Store(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_shows_the_cron_in_crontabs_order_and_the_next_run() {
        let s = Schedule {
            id: 3,
            name: "nightly".into(),
            site: "london".into(),
            space: None,
            enabled: true,
            discovery: None,
            discovery_options: serde_json::json!({}),
            managed_paths: serde_json::json!(["/mmfs1/a", "/mmfs1/b"]),
            minute: "30".into(),
            hour: "2".into(),
            day_of_week: "mon-fri".into(),
            day_of_month: "*".into(),
            month_of_year: "*".into(),
            last_run_at: None,
            created: 1_764_900_000_000_000,
            timezone: None,
        };
        let r = schedule_row(&s, true, 1_764_900_000_000_000);
        assert_eq!(r.cron, "30 2 * * mon-fri");
        assert_eq!(r.timezone, "UTC");
        assert_eq!(r.paths, ["/mmfs1/a", "/mmfs1/b"]);
        assert!(r.last.is_none());
        assert!(
            r.next.as_ref().is_some_and(|m| m.iso.ends_with("T02:30:00Z")),
            "{:?}",
            r.next.map(|m| m.iso)
        );
        assert!(
            schedule_row(&s, false, 0).next.is_none(),
            "schedules_enabled false: no next run"
        );
    }
}
