//! `/api/schedules/`: schedules (list with `site_id`, create 201, read,
//! change, delete 204), the workflows subscribed to each
//! (`/api/schedules/{id}/workflows/`, the same verbs), the record of
//! their runs (`/api/schedules/{id}/runs/`) and a run now
//! (`POST /api/schedules/{id}/run/`, 201 with the jobs it started).
//!
//! Cron fields are checked with Celery's rules when written (a 400 names
//! the field and what is wrong in it), and a subscription is checked as a
//! run would submit it, so a schedule that cannot run is refused then,
//! not at 3 a.m.

use super::http::{
    ApiError, ApiResult, ApiState, Base, Body, Caller, Conflict, Detail, Id, Page, PageQuery, Paging, Query, State,
    parse_body, present,
};
use super::jobs::{JobOut, job_out};
use crate::hub::cron::{Cron, CronError};
use crate::hub::schedule::{ScheduleError, check_subscription, next_run, run_now};
use crate::hub::store::iso;
use crate::hub::store::schedules::{Run, Schedule, ScheduleWorkflow, outcome};
use crate::hub::workflows::{DISCOVERIES, check_discovery_options};
use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, patch, delete))
        .routes(routes!(run))
        .routes(routes!(runs))
        .routes(routes!(list_workflows, create_workflow))
        .routes(routes!(read_workflow, patch_workflow, delete_workflow))
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> ApiError {
        match e {
            ScheduleError::NotFound(_) => ApiError::not_found("schedule"),
            ScheduleError::Busy { detail, state } => ApiError {
                status: StatusCode::CONFLICT,
                detail: format!("not run: {detail}"),
                state: Some(state),
            },
            ScheduleError::Store(e) => e.into(),
        }
    }
}

/// A schedule, in the seed's fields, and ferry's `last_run_at`,
/// `next_run_at` and `runs`.
#[derive(Serialize, ToSchema)]
pub struct ScheduleOut {
    url: String,
    id: i64,
    name: String,
    /// The site's name: its time zone is the cron fields'.
    site: String,
    /// Kept as given; ferry has no spaces.
    space: Option<String>,
    enabled: bool,
    /// `recursive`, `snapdiff`, or null for each workflow's own.
    discovery: Option<String>,
    /// `skip_missing` (alias `allow_missing_paths`) and `min_age`, over the workflow's.
    #[schema(value_type = Object)]
    discovery_options: Value,
    /// Absolute paths each run's jobs work on.
    managed_paths: Vec<String>,
    minute: String,
    hour: String,
    day_of_week: String,
    day_of_month: String,
    month_of_year: String,
    /// The latest due time dealt with (run, skipped, or passed over while
    /// disabled), or when the crontab last changed; null before the first.
    last_run_at: Option<String>,
    /// When it fires next; null while it does not fire (disabled, or
    /// `schedules_enabled` false).
    next_run_at: Option<String>,
    /// The URL of the record of its runs.
    runs: String,
}

fn schedule_out(base: &Base, s: &Schedule, schedules_enabled: bool) -> ScheduleOut {
    ScheduleOut {
        url: base.url(&format!("/api/schedules/{}/", s.id)),
        id: s.id,
        name: s.name.clone(),
        site: s.site.clone(),
        space: s.space.clone(),
        enabled: s.enabled,
        discovery: s.discovery.clone(),
        discovery_options: s.discovery_options.clone(),
        managed_paths: serde_json::from_value(s.managed_paths.clone()).unwrap_or_default(),
        minute: s.minute.clone(),
        hour: s.hour.clone(),
        day_of_week: s.day_of_week.clone(),
        day_of_month: s.day_of_month.clone(),
        month_of_year: s.month_of_year.clone(),
        last_run_at: s.last_run_at.map(iso),
        next_run_at: next_run(s, schedules_enabled).map(|t| iso(t.as_microsecond())),
        runs: base.url(&format!("/api/schedules/{}/runs/", s.id)),
    }
}

/// Writable fields of a schedule. `managed_paths` is a list of absolute
/// paths, or an object whose keys are the paths (the seed types it
/// "object"); it is answered as a list. Unknown fields are refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    /// Required on create.
    name: Option<String>,
    /// A site's name; required on create.
    site: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    space: Option<Option<String>>,
    enabled: Option<bool>,
    /// `recursive`, `snapdiff`, or null for each workflow's own.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    discovery: Option<Option<String>>,
    /// `skip_missing` (alias `allow_missing_paths`) and `min_age`.
    #[schema(value_type = Option<Object>)]
    discovery_options: Option<Map<String, Value>>,
    /// Absolute paths (a list, or an object keyed by path); required on
    /// create, at least one.
    #[schema(value_type = Option<Vec<String>>)]
    managed_paths: Option<Value>,
    /// Cron field, Celery's syntax (`*`, `*/15`, `0,30`, `8-17`); `*`
    /// when not given.
    minute: Option<String>,
    hour: Option<String>,
    /// 0-6 (0 = Sunday) or names (`mon-fri`).
    day_of_week: Option<String>,
    day_of_month: Option<String>,
    month_of_year: Option<String>,
}

fn managed_paths(v: Value) -> ApiResult<Value> {
    let paths: Vec<(String, Value)> = match v {
        Value::Array(a) => a.into_iter().enumerate().map(|(i, p)| (format!("[{i}]"), p)).collect(),
        Value::Object(o) => o
            .into_iter()
            .map(|(k, _)| (format!(".{k}"), Value::String(k)))
            .collect(),
        _ => {
            return Err(ApiError::bad(
                "managed_paths: a list of absolute paths (or an object whose keys are the paths)",
            ));
        }
    };
    if paths.is_empty() {
        return Err(ApiError::bad("managed_paths: at least one path is needed"));
    }
    let mut out = Vec::with_capacity(paths.len());
    for (at, p) in paths {
        match p {
            Value::String(s) if s.starts_with('/') => out.push(Value::String(s)),
            _ => return Err(ApiError::bad(format!("managed_paths{at}: must be an absolute path"))),
        }
    }
    Ok(Value::Array(out))
}

fn cron_error(e: CronError) -> ApiError {
    match &e {
        CronError::Field { field, text, reason } => ApiError::bad(format!("{field}: {text:?}: {reason}")),
        CronError::NeverOccurs { .. } => ApiError::bad(format!("day_of_month: {e}")),
        CronError::Line { .. } => ApiError::bad(e.to_string()),
    }
}

impl Fields {
    /// Applies the fields to `s`; whether the crontab changed.
    async fn apply(self, st: &ApiState, s: &mut Schedule) -> ApiResult<bool> {
        if let Some(v) = self.name {
            if v.trim().is_empty() || v.chars().count() > 200 {
                return Err(ApiError::bad("name: 1 to 200 characters"));
            }
            s.name = v;
        }
        if let Some(v) = self.site
            && v != s.site
        {
            if st.store.site_by_name(&v).await?.is_none() {
                return Err(ApiError::bad(format!("site: no site called {v:?}")));
            }
            s.site = v;
        }
        if let Some(v) = self.space {
            s.space = v;
        }
        if let Some(v) = self.enabled {
            s.enabled = v;
        }
        if let Some(v) = self.discovery {
            if let Some(d) = &v
                && !DISCOVERIES.iter().any(|(n, _)| n == d)
            {
                return Err(ApiError::bad(format!(
                    "discovery: must be {} or null, not {d:?}",
                    DISCOVERIES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )));
            }
            // A bidirectional schedule stays one, and no other becomes one
            // (003:L10821): its runs' events and held snapshots assume it.
            let bi = |d: &Option<String>| d.as_deref() == Some(crate::hub::workflows::BIDIRECTIONAL_DISCOVERY);
            if s.id != 0 && bi(&s.discovery) != bi(&v) {
                return Err(ApiError::bad(format!(
                    "discovery: a schedule's discovery cannot change to or from {}",
                    crate::hub::workflows::BIDIRECTIONAL_DISCOVERY
                )));
            }
            s.discovery = v;
        }
        if let Some(v) = self.discovery_options {
            check_discovery_options(&v).map_err(|e| ApiError::bad(e.to_string()))?;
            s.discovery_options = Value::Object(v);
        }
        if let Some(v) = self.managed_paths {
            s.managed_paths = managed_paths(v)?;
        }
        let before = (
            s.minute.clone(),
            s.hour.clone(),
            s.day_of_week.clone(),
            s.day_of_month.clone(),
            s.month_of_year.clone(),
        );
        for (slot, v) in [
            (&mut s.minute, self.minute),
            (&mut s.hour, self.hour),
            (&mut s.day_of_week, self.day_of_week),
            (&mut s.day_of_month, self.day_of_month),
            (&mut s.month_of_year, self.month_of_year),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
        Cron::parse(&s.minute, &s.hour, &s.day_of_week, &s.day_of_month, &s.month_of_year).map_err(cron_error)?;
        Ok(before
            != (
                s.minute.clone(),
                s.hour.clone(),
                s.day_of_week.clone(),
                s.day_of_month.clone(),
                s.month_of_year.clone(),
            ))
    }
}

/// The schedules list's filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScheduleQuery {
    /// Only the schedules of this site.
    site_id: Option<i64>,
}

async fn found(st: &ApiState, id: i64) -> ApiResult<Schedule> {
    st.store
        .schedule(id)
        .await?
        .ok_or_else(|| ApiError::not_found("schedule"))
}

/// Schedules, by id.
#[utoipa::path(get, path = "/api/schedules/", tag = "schedules", operation_id = "list_schedules", params(PageQuery, ScheduleQuery),
    responses((status = 200, body = Page<ScheduleOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
    Query(q): Query<ScheduleQuery>,
) -> ApiResult<Json<Page<ScheduleOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let all = match q.site_id {
        None => s.store.schedules(None).await?,
        Some(id) => match s.store.site(id).await? {
            Some(site) => s.store.schedules(Some(&site.name)).await?,
            None => Vec::new(),
        },
    };
    let on = s.configs.get().schedules_enabled;
    let results = paging.slice(&all).iter().map(|x| schedule_out(&base, x, on)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// Creates a schedule (201). `name`, `site` and `managed_paths` are
/// required; cron fields default to `*`.
#[utoipa::path(post, path = "/api/schedules/", tag = "schedules", operation_id = "create_schedule", request_body = Fields,
    responses((status = 201, body = ScheduleOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn create(s: State, _c: Caller, base: Base, Body(f): Body<Fields>) -> ApiResult<Response> {
    let mut x = new_schedule(&s, f).await?;
    x.id = s.store.create_schedule(&x).await?;
    s.schedules.notify_one();
    let x = found(&s, x.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(schedule_out(&base, &x, s.configs.get().schedules_enabled)),
    )
        .into_response())
}

/// A new schedule from `f`, checked, not written: `name`, `site` and
/// `managed_paths` are required, cron fields default to `*`.
async fn new_schedule(st: &ApiState, f: Fields) -> ApiResult<Schedule> {
    for (field, given) in [
        ("name", f.name.is_some()),
        ("site", f.site.is_some()),
        ("managed_paths", f.managed_paths.is_some()),
    ] {
        if !given {
            return Err(ApiError::bad(format!("{field}: This field is required.")));
        }
    }
    let mut x = Schedule {
        id: 0,
        name: String::new(),
        site: String::new(),
        space: None,
        enabled: true,
        discovery: None,
        discovery_options: json!({}),
        managed_paths: json!([]),
        minute: "*".into(),
        hour: "*".into(),
        day_of_week: "*".into(),
        day_of_month: "*".into(),
        month_of_year: "*".into(),
        last_run_at: None,
        created: 0,
        timezone: None,
    };
    f.apply(st, &mut x).await?;
    Ok(x)
}

/// Schedule `id` changed by `f`, checked, not written, and the time its
/// due times count from again (a changed crontab, or a schedule enabled
/// again: none before is run).
async fn changed_schedule(st: &ApiState, id: i64, f: Fields) -> ApiResult<(Schedule, Option<i64>)> {
    let mut x = found(st, id).await?;
    let was_enabled = x.enabled;
    let cron_changed = f.apply(st, &mut x).await?;
    let restart = (cron_changed || (x.enabled && !was_enabled)).then(crate::hub::store::now_us);
    Ok((x, restart))
}

/// A schedule.
#[utoipa::path(get, path = "/api/schedules/{id}/", tag = "schedules", operation_id = "get_schedule", params(("id" = i64, Path)),
    responses((status = 200, body = ScheduleOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn read(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<ScheduleOut>> {
    let x = found(&s, id).await?;
    Ok(Json(schedule_out(&base, &x, s.configs.get().schedules_enabled)))
}

/// Changes a schedule. A changed crontab, or a schedule enabled again,
/// counts its due times from now: none before is run.
#[utoipa::path(patch, path = "/api/schedules/{id}/", tag = "schedules", operation_id = "patch_schedule", params(("id" = i64, Path)), request_body = Fields,
    responses((status = 200, body = ScheduleOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail), (status = 413, body = Detail)))]
async fn patch(s: State, _c: Caller, base: Base, Id(id): Id, Body(f): Body<Fields>) -> ApiResult<Json<ScheduleOut>> {
    let (x, restart) = changed_schedule(&s, id, f).await?;
    if !s.store.update_schedule(&x, restart).await? {
        return Err(ApiError::not_found("schedule"));
    }
    s.schedules.notify_one();
    let x = found(&s, id).await?;
    Ok(Json(schedule_out(&base, &x, s.configs.get().schedules_enabled)))
}

/// Deletes a schedule (204) with its subscriptions and its runs' record;
/// its jobs stay.
#[utoipa::path(delete, path = "/api/schedules/{id}/", tag = "schedules", operation_id = "delete_schedule", params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn delete(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    if !s.store.delete_schedule(id).await? {
        return Err(ApiError::not_found("schedule"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One row of a schedule's runs: a subscribed workflow's job, a skip, or
/// a failure.
#[derive(Serialize, ToSchema)]
pub struct RunOut {
    id: i64,
    /// The due time it stands for (for a run by hand: when asked).
    due_at: String,
    /// When it was recorded.
    at: String,
    /// Seconds from `due_at` to `at`.
    delay_seconds: f64,
    /// `started`, `skipped`, `failed`, or `pending` (its job not written
    /// yet).
    outcome: String,
    /// The subscribed workflow (null for a skip).
    workflow: Option<String>,
    /// The job it started.
    job: Option<i64>,
    /// Why it was skipped or failed, and how late it ran.
    detail: String,
    /// Asked for with `POST /run/`.
    manual: bool,
    /// Earlier due times collapsed into this run.
    missed: i64,
}

fn run_out(r: &Run) -> RunOut {
    RunOut {
        id: r.id,
        due_at: iso(r.due_at),
        at: iso(r.at),
        delay_seconds: ((r.at - r.due_at).max(0) as f64 / 1e6 * 1000.0).round() / 1000.0,
        outcome: r.outcome.clone(),
        workflow: r.workflow.clone(),
        job: r.job_id,
        detail: r.detail.clone(),
        manual: r.manual,
        missed: r.missed,
    }
}

/// A schedule's runs, newest first.
#[utoipa::path(get, path = "/api/schedules/{id}/runs/", tag = "schedules", operation_id = "list_schedule_runs", params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = Page<RunOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn runs(
    s: State,
    _c: Caller,
    base: Base,
    Id(id): Id,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Json<Page<RunOut>>> {
    let paging = Paging::read(&pq, 100)?;
    found(&s, id).await?;
    let (count, rows) = s.store.schedule_runs(id, paging.store()).await?;
    Ok(Json(paging.page(&base, count, rows.iter().map(run_out).collect())?))
}

/// The answer to a run now: the schedule, the jobs started and the run's
/// rows.
#[derive(Serialize, ToSchema)]
pub struct RunNowOut {
    #[serde(flatten)]
    schedule: ScheduleOut,
    /// The jobs started, one per subscribed workflow that could be.
    jobs: Vec<JobOut>,
    /// This run's rows (a failed subscription says why).
    run: Vec<RunOut>,
}

/// Runs a schedule now (201, with its jobs), even disabled or with
/// `schedules_enabled` false; its due times are not changed. 409 while
/// its previous run still goes; 400 when no job could be started (the
/// run is recorded as failed, with why).
#[utoipa::path(post, path = "/api/schedules/{id}/run/", tag = "schedules", operation_id = "run_schedule", params(("id" = i64, Path)),
    responses((status = 201, body = RunNowOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail), (status = 409, body = Conflict), (status = 503, body = Detail)))]
async fn run(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let rows = run_now(&s.store, &s.outbox, s.configs.get().queue_depth(), id).await?;
    let mut jobs = Vec::new();
    for r in &rows {
        if let Some(j) = r.job_id
            && let Some(job) = s.store.job(j).await?
        {
            jobs.push(job_out(&s, &base, &job).await?);
        }
    }
    if jobs.is_empty() {
        if rows.iter().any(|r| r.outcome == outcome::PENDING) {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                detail:
                    "the run is recorded, but the database did not take its jobs yet; they are written within a minute"
                        .into(),
                state: None,
            });
        }
        let why: Vec<String> = rows
            .iter()
            .map(|r| match &r.workflow {
                Some(w) => format!("{w}: {}", r.detail),
                None => r.detail.clone(),
            })
            .collect();
        return Err(ApiError::bad(format!("the run started no job: {}", why.join("; "))));
    }
    let x = found(&s, id).await?;
    let out = RunNowOut {
        schedule: schedule_out(&base, &x, s.configs.get().schedules_enabled),
        jobs,
        run: rows.iter().map(run_out).collect(),
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// A workflow subscribed to a schedule, in the seed's fields.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionOut {
    id: i64,
    url: String,
    /// The workflow's name.
    workflow: String,
    /// The site its jobs run on.
    site: String,
    /// Their queue.
    queue: String,
    /// Their runtime field values.
    #[schema(value_type = Object)]
    fields: Value,
}

fn subscription_out(base: &Base, w: &ScheduleWorkflow) -> SubscriptionOut {
    SubscriptionOut {
        id: w.id,
        url: base.url(&format!("/api/schedules/{}/workflows/{}/", w.schedule_id, w.id)),
        workflow: w.workflow.clone(),
        site: w.site.clone(),
        queue: w.queue.clone(),
        fields: w.fields.clone(),
    }
}

/// Writable fields of a subscription. Unknown fields are refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionFields {
    /// A workflow's name; required on create.
    workflow: Option<String>,
    /// A site's name; the schedule's when not given.
    site: Option<String>,
    /// A queue of that site; the workflow's preferred one, else `default`,
    /// when not given.
    queue: Option<String>,
    /// Runtime field values, checked against the workflow's declared
    /// fields.
    #[schema(value_type = Option<Object>)]
    fields: Option<Map<String, Value>>,
}

impl SubscriptionFields {
    /// Applies the fields to `w` and checks it as a run of `sched` would
    /// submit it.
    async fn apply(self, st: &ApiState, sched: &Schedule, w: &mut ScheduleWorkflow) -> ApiResult<()> {
        if let Some(v) = self.workflow {
            w.workflow = v;
        }
        let workflow = st
            .store
            .workflow_by_name(&w.workflow)
            .await?
            .ok_or_else(|| ApiError::bad(format!("workflow: no workflow called {:?}", w.workflow)))?;
        if let Some(v) = self.site {
            w.site = v;
        }
        match self.queue {
            Some(v) => w.queue = v,
            None if w.queue.is_empty() => {
                w.queue = workflow.preferred_queue.clone().unwrap_or_else(|| "default".into());
            }
            None => {}
        }
        if let Some(v) = self.fields {
            w.fields = Value::Object(v);
        }
        check_subscription(&st.store, sched, w).await?;
        Ok(())
    }
}

/// The two ids of `/api/schedules/{id}/workflows/{sid}/`; anything but
/// integers is a 404.
struct Ids(i64, i64);

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Ids, ApiError> {
        let axum::extract::Path((a, b)) = axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("object"))?;
        match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) => Ok(Ids(a, b)),
            _ => Err(ApiError::not_found("object")),
        }
    }
}

async fn found_subscription(st: &ApiState, schedule_id: i64, id: i64) -> ApiResult<ScheduleWorkflow> {
    st.store
        .schedule_workflow(schedule_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("schedule workflow"))
}

/// The workflows subscribed to a schedule, by id.
#[utoipa::path(get, path = "/api/schedules/{id}/workflows/", tag = "schedules", operation_id = "list_schedule_workflows", params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = Page<SubscriptionOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list_workflows(
    s: State,
    _c: Caller,
    base: Base,
    Id(id): Id,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Json<Page<SubscriptionOut>>> {
    let paging = Paging::read(&pq, 100)?;
    found(&s, id).await?;
    let all = s.store.schedule_workflows(id).await?;
    let results = paging.slice(&all).iter().map(|w| subscription_out(&base, w)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// Subscribes a workflow to a schedule (201): one job of it per run. The
/// workflow must exist and the subscription must submit as a run would
/// (site, queue, fields, rules), else 400 naming the field.
#[utoipa::path(post, path = "/api/schedules/{id}/workflows/", tag = "schedules", operation_id = "create_schedule_workflow", params(("id" = i64, Path)), request_body = SubscriptionFields,
    responses((status = 201, body = SubscriptionOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail), (status = 413, body = Detail)))]
async fn create_workflow(
    s: State,
    _c: Caller,
    base: Base,
    Id(id): Id,
    Body(f): Body<SubscriptionFields>,
) -> ApiResult<Response> {
    let sched = found(&s, id).await?;
    if f.workflow.is_none() {
        return Err(ApiError::bad("workflow: This field is required."));
    }
    let mut w = ScheduleWorkflow {
        id: 0,
        schedule_id: id,
        workflow: String::new(),
        site: sched.site.clone(),
        queue: String::new(),
        fields: json!({}),
    };
    if sched.discovery.as_deref() == Some(crate::hub::workflows::BIDIRECTIONAL_DISCOVERY)
        && !s.store.schedule_workflows(id).await?.is_empty()
    {
        return Err(ApiError::bad(format!(
            "workflow: a {} schedule takes one workflow, and has it",
            crate::hub::workflows::BIDIRECTIONAL_DISCOVERY
        )));
    }
    f.apply(&s, &sched, &mut w).await?;
    w.id = s.store.create_schedule_workflow(&w).await?;
    Ok((StatusCode::CREATED, Json(subscription_out(&base, &w))).into_response())
}

/// A workflow subscribed to a schedule.
#[utoipa::path(get, path = "/api/schedules/{id}/workflows/{sid}/", tag = "schedules", operation_id = "get_schedule_workflow",
    params(("id" = i64, Path), ("sid" = i64, Path, description = "the subscription's id")),
    responses((status = 200, body = SubscriptionOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn read_workflow(s: State, _c: Caller, base: Base, Ids(id, sid): Ids) -> ApiResult<Json<SubscriptionOut>> {
    let w = found_subscription(&s, id, sid).await?;
    Ok(Json(subscription_out(&base, &w)))
}

/// Changes a subscription; checked again as a run would submit it.
#[utoipa::path(patch, path = "/api/schedules/{id}/workflows/{sid}/", tag = "schedules", operation_id = "patch_schedule_workflow",
    params(("id" = i64, Path), ("sid" = i64, Path, description = "the subscription's id")), request_body = SubscriptionFields,
    responses((status = 200, body = SubscriptionOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail), (status = 413, body = Detail)))]
async fn patch_workflow(
    s: State,
    _c: Caller,
    base: Base,
    Ids(id, sid): Ids,
    Body(f): Body<SubscriptionFields>,
) -> ApiResult<Json<SubscriptionOut>> {
    let sched = found(&s, id).await?;
    let mut w = found_subscription(&s, id, sid).await?;
    f.apply(&s, &sched, &mut w).await?;
    if !s.store.update_schedule_workflow(&w).await? {
        return Err(ApiError::not_found("schedule workflow"));
    }
    Ok(Json(subscription_out(&base, &w)))
}

/// Unsubscribes a workflow (204).
#[utoipa::path(delete, path = "/api/schedules/{id}/workflows/{sid}/", tag = "schedules", operation_id = "delete_schedule_workflow",
    params(("id" = i64, Path), ("sid" = i64, Path, description = "the subscription's id")),
    responses((status = 204), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn delete_workflow(s: State, _c: Caller, Ids(id, sid): Ids) -> ApiResult<Response> {
    if !s.store.delete_schedule_workflow(id, sid).await? {
        return Err(ApiError::not_found("schedule workflow"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What the web page's schedule editor holds: a schedule's writable
/// fields (what `POST /api/schedules/` reads) and, under `workflows`, its
/// subscriptions (what `POST /api/schedules/{id}/workflows/` reads, with
/// the `id` of one that is kept).
pub(crate) struct Document {
    fields: Fields,
    /// `None`: the key was left out (a change keeps the subscriptions).
    workflows: Option<Vec<(i64, SubscriptionFields)>>,
}

/// The key of the subscriptions in a [`Document`].
const WORKFLOWS: &str = "workflows";

/// Reads the editor's text as the API reads bodies (unknown fields
/// refused, errors naming the field), into a [`Document`].
pub(crate) fn read_document(text: &str) -> ApiResult<Document> {
    let mut top: Map<String, Value> = parse_body(text.as_bytes())?;
    let workflows = match top.remove(WORKFLOWS) {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| subscription_entry(i, item))
                .collect::<ApiResult<Vec<_>>>()?,
        ),
        Some(_) => {
            return Err(ApiError::bad(format!(
                "{WORKFLOWS}: a list of subscribed workflows ([] for none)"
            )));
        }
    };
    let fields = parse_body(&serde_json::to_vec(&top).expect("JSON values serialize"))?;
    Ok(Document { fields, workflows })
}

/// Subscription `i` of a document: its id (0 for a new one) and fields.
fn subscription_entry(i: usize, item: Value) -> ApiResult<(i64, SubscriptionFields)> {
    let at = format!("{WORKFLOWS}[{i}]");
    let Value::Object(mut o) = item else {
        return Err(ApiError::bad(format!("{at}: an object: {{\"workflow\": name, …}}")));
    };
    let id = match o.remove("id") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::bad(format!("{at}.id: the id of a subscription of this schedule")))?,
    };
    let f: SubscriptionFields = parse_body(&serde_json::to_vec(&o).expect("JSON values serialize"))
        .map_err(|e| ApiError::bad(format!("{at}.{}", e.detail)))?;
    if id == 0 && f.workflow.is_none() {
        return Err(ApiError::bad(format!("{at}.workflow: This field is required.")));
    }
    Ok((id, f))
}

/// A schedule and its subscriptions as a document's JSON: what the
/// editor shows, and reads back unchanged.
pub(crate) fn document_json(s: &Schedule, subs: &[ScheduleWorkflow]) -> Value {
    json!({
        "name": s.name,
        "site": s.site,
        "enabled": s.enabled,
        "minute": s.minute,
        "hour": s.hour,
        "day_of_month": s.day_of_month,
        "month_of_year": s.month_of_year,
        "day_of_week": s.day_of_week,
        "managed_paths": s.managed_paths,
        "discovery": s.discovery,
        "discovery_options": s.discovery_options,
        "space": s.space,
        WORKFLOWS: subs.iter().map(|w| json!({
            "id": w.id,
            "workflow": w.workflow,
            "site": w.site,
            "queue": w.queue,
            "fields": w.fields,
        })).collect::<Vec<_>>(),
    })
}

/// Checks a document and writes it, the schedule and its subscriptions
/// in one transaction (nothing is written when any part is refused):
/// schedule `id`, or a new one. Every subscription is checked as a run
/// would submit it, against the schedule as it will be.
pub(crate) async fn save_document(st: &ApiState, id: Option<i64>, doc: Document) -> ApiResult<Schedule> {
    let (x, restart) = match id {
        None => (new_schedule(st, doc.fields).await?, None),
        Some(id) => changed_schedule(st, id, doc.fields).await?,
    };
    let had = match id {
        Some(id) => st.store.schedule_workflows(id).await?,
        None => Vec::new(),
    };
    let subs = match doc.workflows {
        None => had,
        Some(entries) => {
            let mut subs = Vec::with_capacity(entries.len());
            for (i, (sid, f)) in entries.into_iter().enumerate() {
                let mut w = if sid == 0 {
                    ScheduleWorkflow {
                        id: 0,
                        schedule_id: x.id,
                        workflow: String::new(),
                        site: x.site.clone(),
                        queue: String::new(),
                        fields: json!({}),
                    }
                } else {
                    had.iter().find(|w| w.id == sid).cloned().ok_or_else(|| {
                        ApiError::bad(format!("{WORKFLOWS}[{i}].id: this schedule has no subscription {sid}"))
                    })?
                };
                f.apply(st, &x, &mut w).await.map_err(|e| ApiError {
                    detail: format!("{WORKFLOWS}[{i}] ({}): {}", w.workflow, e.detail),
                    ..e
                })?;
                subs.push(w);
            }
            subs
        }
    };
    let saved = st
        .store
        .save_schedule(&x, restart, &subs)
        .await?
        .ok_or_else(|| ApiError::not_found("schedule (or one of its subscriptions)"))?;
    st.schedules.notify_one();
    found(st, saved).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_paths_are_a_list_or_an_object_keyed_by_path() {
        assert_eq!(managed_paths(json!(["/a", "/b"])).unwrap(), json!(["/a", "/b"]));
        assert_eq!(
            managed_paths(json!({"/a": {"x": 1}, "/b": true})).unwrap(),
            json!(["/a", "/b"])
        );
        assert_eq!(
            managed_paths(json!(["/a", "b"])).unwrap_err().detail,
            "managed_paths[1]: must be an absolute path"
        );
        assert_eq!(
            managed_paths(json!({"rel": 1})).unwrap_err().detail,
            "managed_paths.rel: must be an absolute path"
        );
        assert_eq!(
            managed_paths(json!([])).unwrap_err().detail,
            "managed_paths: at least one path is needed"
        );
        assert!(managed_paths(json!("/a")).is_err());
    }

    #[test]
    fn cron_errors_name_the_field() {
        let e = Cron::parse("*", "*", "mon-frx", "*", "*").unwrap_err();
        let d = cron_error(e).detail;
        assert!(d.starts_with("day_of_week: \"mon-frx\": "), "{d}");
        let e = Cron::parse("*", "*", "*", "30", "2").unwrap_err();
        assert!(cron_error(e).detail.starts_with("day_of_month: "));
    }

    #[test]
    fn a_document_is_a_schedules_fields_and_its_subscriptions() {
        let d = read_document(
            r#"{"name": "n", "site": "s", "managed_paths": ["/a"],
                "workflows": [{"id": 4, "queue": "bulk"}, {"workflow": "migrate", "fields": {"x": 1}}]}"#,
        )
        .unwrap();
        assert_eq!(d.fields.name.as_deref(), Some("n"));
        let w = d.workflows.unwrap();
        assert_eq!(w.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 0]);
        assert_eq!(w[0].1.queue.as_deref(), Some("bulk"));
        assert_eq!(w[1].1.workflow.as_deref(), Some("migrate"));
        assert!(
            read_document(r#"{"name": "n"}"#).unwrap().workflows.is_none(),
            "left out: kept"
        );
        let err = |text: &str| read_document(text).err().unwrap().detail;
        assert_eq!(
            err(r#"{"colour": "red"}"#).split(':').next(),
            Some("colour"),
            "unknown fields refused"
        );
        assert!(err(r#"{"workflows": {}}"#).starts_with("workflows: a list"));
        assert_eq!(
            err(r#"{"workflows": [{}]}"#),
            "workflows[0].workflow: This field is required."
        );
        assert!(err(r#"{"workflows": [{"id": 1, "colour": 2}]}"#).starts_with("workflows[0].colour: "));
        assert!(err(r#"{"workflows": [{"id": "x"}]}"#).starts_with("workflows[0].id: "));
        assert!(err(r#"{"workflows": [3]}"#).starts_with("workflows[0]: an object"));
    }

    #[test]
    fn a_document_reads_back_what_it_shows() {
        let s = Schedule {
            id: 2,
            name: "n".into(),
            site: "s".into(),
            space: None,
            enabled: false,
            discovery: Some("snapdiff".into()),
            discovery_options: json!({"skip_missing": true}),
            managed_paths: json!(["/a"]),
            minute: "5".into(),
            hour: "*/2".into(),
            day_of_week: "mon".into(),
            day_of_month: "*".into(),
            month_of_year: "*".into(),
            last_run_at: None,
            created: 0,
            timezone: None,
        };
        let w = ScheduleWorkflow {
            id: 9,
            schedule_id: 2,
            workflow: "migrate".into(),
            site: "s".into(),
            queue: "default".into(),
            fields: json!({"k": "v"}),
        };
        let text = document_json(&s, &[w]).to_string();
        let d = read_document(&text).unwrap();
        assert_eq!(d.fields.minute.as_deref(), Some("5"));
        assert_eq!(d.fields.discovery, Some(Some("snapdiff".into())));
        let subs = d.workflows.unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].0, 9);
        assert_eq!(subs[0].1.fields.as_ref().map(|f| f["k"].clone()), Some(json!("v")));
    }
}
