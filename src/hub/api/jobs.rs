//! `/api/jobs/` and `/api/jobstats/`.

use super::http::{
    AfterQuery, ApiError, ApiResult, ApiState, Base, Caller, Conflict, Detail, Id, Keyset, PageQuery, Paging, Query,
    State, query_time,
};
use super::stream;
use crate::hub::store::jobs::{Bind, FileRecord, Filter, Job, Page as StorePage, state, task_state};
use crate::hub::store::plan::Planned;
use crate::hub::store::workflows::{COMPLETED_STATES, FAILED_STATES, RecordFiles};
use crate::hub::store::{iso, now_us};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job, delete_job))
        .routes(routes!(progress))
        .routes(routes!(job_statistics))
        .routes(routes!(jobs_stats))
        .routes(routes!(recent_jobs))
        .routes(routes!(cancel))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(resubmit))
        .routes(routes!(jobstats))
        .routes(routes!(job_files))
        .routes(routes!(sync_events))
        .routes(routes!(jobstat))
}

/// Ids of a job's tasks shown on the job (the rest are counted in
/// `tasks_count`: a 2.5 M-task job would otherwise answer with megabytes).
const TASK_IDS_SHOWN: i64 = 1000;

/// Seconds from `start` to `end` (or to now while it runs).
pub(crate) fn runtime(start: Option<i64>, end: Option<i64>) -> Option<f64> {
    start.map(|s| ((end.unwrap_or_else(now_us) - s).max(0)) as f64 / 1e6)
}

/// How far a job is: files done of those found, results counted of
/// those expected so far (a discovery still walking announces more), what
/// the walk reported, and once the walk is done the rate and an ETA.
#[derive(Serialize, ToSchema)]
pub struct ProgressOut {
    /// 0 to 100. While the discovery walks: files done of those it has
    /// found so far (at most 99.9), or half the results counted before
    /// its first report; then files done of files found.
    pub(crate) percent: f64,
    pub(crate) dir_walk_complete: bool,
    /// Files the finished walk found (its result).
    pub(crate) files_found: i64,
    /// Files processed, skipped, aborted or failed.
    pub(crate) files_done: i64,
    pub(crate) tasks_total: i64,
    pub(crate) tasks_done: i64,
    /// What the running walk last reported: files and bytes found so far
    /// (bytes only when the walk reads sizes), children published.
    pub(crate) files_walked: i64,
    pub(crate) bytes_walked: i64,
    pub(crate) children_published: i64,
    /// Files done per second since the job started.
    pub(crate) rate_files_s: Option<f64>,
    /// Seconds left at that rate, once the walk is done (unknown before).
    pub(crate) eta_s: Option<f64>,
}

/// How far job `j` is, as the API and the web page show it.
pub(crate) fn progress_out(j: &Job) -> ProgressOut {
    let done = j.files_processed + j.files_skipped + j.files_aborted + j.files_failures;
    let (walk_files, walk_bytes, walk_children, _) = j.walk;
    let finished = state::FINAL.contains(&j.state.as_str());
    let percent = if finished {
        100.0
    } else if !j.dir_walk_complete && walk_files > 0 {
        (done as f64 / walk_files as f64 * 100.0).min(99.9)
    } else if j.dir_walk_complete && j.files_found > 0 {
        (done as f64 / j.files_found as f64 * 100.0).min(99.9)
    } else if j.expected > 0 {
        let tasks = j.received as f64 / j.expected as f64;
        if j.dir_walk_complete {
            tasks * 100.0
        } else {
            tasks * 50.0
        }
    } else {
        0.0
    };
    let elapsed = j
        .started
        .map(|s| (j.completed.unwrap_or_else(now_us) - s).max(1) as f64 / 1e6);
    let rate = elapsed.filter(|_| done > 0).map(|e| done as f64 / e);
    let eta = match (rate, finished, j.dir_walk_complete) {
        (Some(r), false, true) if r > 0.0 => Some(((j.files_found - done).max(0) as f64 / r).round()),
        _ => None,
    };
    ProgressOut {
        percent: (percent * 10.0).round() / 10.0,
        dir_walk_complete: j.dir_walk_complete,
        files_found: j.files_found,
        files_done: done,
        tasks_total: j.expected,
        tasks_done: j.received,
        files_walked: walk_files.max(j.files_found),
        bytes_walked: walk_bytes,
        children_published: walk_children,
        rate_files_s: rate.map(|r| (r * 10.0).round() / 10.0),
        eta_s: eta,
    }
}

/// Who submitted a job (`type` user, system or unknown).
#[derive(Serialize, ToSchema, PartialEq, Clone)]
pub struct OwnerOut {
    #[serde(rename = "type")]
    kind: String,
    id: i64,
    name: String,
}

/// A job's counts (ferry's addition to the seed's job).
#[derive(Serialize, ToSchema)]
pub struct CountsOut {
    files_found: i64,
    processed: i64,
    skipped: i64,
    aborted: i64,
    failures: i64,
    /// Results the job waits for: its first tasks and every child announced.
    results_expected: i64,
    results_counted: i64,
    /// Results of a discovery's other execution (never counted).
    results_orphaned: i64,
    tasks_failed: i64,
    roots: i64,
    roots_published: i64,
}

/// A job, in the seed's fields and ferry's counts.
#[derive(Serialize, ToSchema)]
pub struct JobOut {
    url: String,
    id: i64,
    workflow: Option<String>,
    #[schema(value_type = Object)]
    fields: Value,
    discovery: Option<String>,
    site: String,
    queue: String,
    /// Nodes online that consume the job's queue, while the job runs
    /// (null once it has ended): 0 says that nothing will take its tasks
    /// until an agent of that queue comes back.
    pub(super) queue_nodes_online: Option<i64>,
    friendly_name: String,
    /// The first 1,000 task ids.
    tasks: Vec<i64>,
    tasks_count: i64,
    created: String,
    started: Option<String>,
    completed: Option<String>,
    runtime: Option<f64>,
    /// PENDING, STARTED, PAUSING, PAUSED, SUCCESS, FAILURE, DEQUEUING,
    /// CANCELLED.
    state: String,
    owner: OwnerOut,
    dir_walk_complete: bool,
    is_settings_job: bool,
    progress: ProgressOut,
    /// The first 1,000 input paths.
    #[schema(value_type = Vec<Object>)]
    input_paths: Value,
    counts: CountsOut,
    /// The job this one submitted again (`/resubmit/`), if any.
    resubmitted_from: Option<i64>,
    /// Which of its files get a row (`/files/`): `failures` (failed and
    /// aborted), `all`, `none`. Counts are exact whichever.
    record_files: RecordFiles,
    /// It only discovered: see `plan`.
    dry_run: bool,
    /// A dry run's findings, per rule: the entries and bytes its actions
    /// would have taken (null unless `dry_run`).
    plan: Option<Vec<Planned>>,
}

fn owner(j: &Job) -> OwnerOut {
    OwnerOut {
        kind: j.owner.kind.clone(),
        id: j.owner.id,
        name: j.owner.name.clone(),
    }
}

/// A job as the API shows it.
pub async fn job_out(s: &ApiState, base: &Base, j: &Job) -> ApiResult<JobOut> {
    let (count, ids) = s.store.job_task_ids(j.id, TASK_IDS_SHOWN).await?;
    let queue_nodes_online = match state::FINAL.contains(&j.state.as_str()) {
        true => None,
        false => {
            let since = now_us() - s.configs.get().node_health_interval().as_micros() as i64;
            Some(s.store.queue_consumers(&j.site, &j.queue, since).await?)
        }
    };
    Ok(JobOut {
        url: base.url(&format!("/api/jobs/{}/", j.id)),
        id: j.id,
        workflow: j.workflow.clone(),
        fields: j.fields.clone(),
        discovery: j.discovery.clone(),
        site: j.site.clone(),
        queue: j.queue.clone(),
        queue_nodes_online,
        friendly_name: j.friendly_name.clone(),
        tasks: ids,
        tasks_count: count,
        created: iso(j.created),
        started: j.started.map(iso),
        completed: j.completed.map(iso),
        runtime: runtime(j.started.or(Some(j.created)), j.completed),
        state: j.state.clone(),
        owner: owner(j),
        dir_walk_complete: j.dir_walk_complete,
        is_settings_job: false,
        progress: progress_out(j),
        input_paths: j.input_paths.clone(),
        counts: CountsOut {
            files_found: j.files_found,
            processed: j.files_processed,
            skipped: j.files_skipped,
            aborted: j.files_aborted,
            failures: j.files_failures,
            results_expected: j.expected,
            results_counted: j.received,
            results_orphaned: j.orphans,
            tasks_failed: j.tasks_failed,
            roots: j.roots,
            roots_published: j.roots_published,
        },
        resubmitted_from: j.resubmitted_from,
        record_files: j.record_files,
        dry_run: j.dry_run,
        plan: match j.dry_run {
            true => Some(s.store.dry_run_plan(j.id).await?),
            false => None,
        },
    })
}

pub(super) fn text(v: &str) -> Bind {
    Bind::Text(v.to_string())
}

/// A list of state names for a filter's schema, from the one list of them.
fn states_schema(names: &[&str]) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(names.iter().copied())),
        )
        .build()
}

fn job_states() -> utoipa::openapi::schema::Array {
    states_schema(state::ALL)
}

pub(super) fn task_states() -> utoipa::openapi::schema::Array {
    states_schema(task_state::ALL)
}

/// The jobs list's filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// States (repeat the key, or `state[]`).
    #[serde(default)]
    #[param(schema_with = job_states)]
    state: Vec<String>,
    workflow: Option<String>,
    /// Site name.
    site: Option<String>,
    /// Queue name.
    queue: Option<String>,
    /// UTC time, e.g. 2026-01-02T03:04:05Z.
    #[param(format = DateTime)]
    created_time_from: Option<String>,
    #[param(format = DateTime)]
    created_time_to: Option<String>,
    #[param(format = DateTime)]
    completed_time_from: Option<String>,
    #[param(format = DateTime)]
    completed_time_to: Option<String>,
    /// User ids (−1 unknown, −2 system).
    #[serde(default)]
    owner_ids: Vec<i64>,
    #[serde(default)]
    clientkey_ids: Vec<i64>,
    /// Schedule ids: the jobs their runs started.
    #[serde(default)]
    schedule_ids: Vec<i64>,
}

pub(super) fn upper_states(given: &[String], known: &[&str], what: &str) -> ApiResult<Vec<Bind>> {
    given
        .iter()
        .map(|st| {
            let up = st.to_uppercase();
            match known.contains(&up.as_str()) {
                true => Ok(Bind::Text(up)),
                false => Err(ApiError::bad(format!(
                    "state: unknown {what} state {st:?} (known: {})",
                    known.join(", ")
                ))),
            }
        })
        .collect()
}

fn job_filter(q: &JobQuery) -> ApiResult<Filter> {
    let mut f = Filter::default();
    f.any_of("state", upper_states(&q.state, state::ALL, "job")?);
    for (col, v) in [("workflow", &q.workflow), ("site", &q.site), ("queue", &q.queue)] {
        if let Some(v) = v {
            f.cmp(col, "=", text(v));
        }
    }
    for (key, v, col, op) in [
        ("created_time_from", &q.created_time_from, "created", ">="),
        ("created_time_to", &q.created_time_to, "created", "<="),
        ("completed_time_from", &q.completed_time_from, "completed", ">="),
        ("completed_time_to", &q.completed_time_to, "completed", "<="),
    ] {
        if let Some(v) = v {
            f.cmp(col, op, Bind::Int(query_time(key, v)?));
        }
    }
    f.any_of("owner_id", q.owner_ids.iter().copied().map(Bind::Int).collect());
    f.any_of("clientkey_id", q.clientkey_ids.iter().copied().map(Bind::Int).collect());
    f.any_of("schedule_id", q.schedule_ids.iter().copied().map(Bind::Int).collect());
    Ok(f)
}

/// A page of jobs, with their owners.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    count: i64,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<JobOut>,
    owners: Vec<OwnerOut>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/api/jobs/", tag = "jobs", params(PageQuery, JobQuery),
    responses((status = 200, body = JobPage), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list_jobs(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
    Query(q): Query<JobQuery>,
) -> ApiResult<Response> {
    let paging = Paging::read(&pq, 100)?;
    if paging.size.is_none() {
        let (count, rows) = s.store.jobs_all(job_filter(&q)?).await?;
        let owners = Arc::new(std::sync::Mutex::new(Vec::<OwnerOut>::new()));
        let (seen, s) = (owners.clone(), s.0.clone());
        let each = move |j: Job| {
            let (s, base, seen) = (s.clone(), base.clone(), seen.clone());
            async move {
                {
                    let o = owner(&j);
                    let mut seen = seen.lock().expect("owners");
                    if !seen.contains(&o) {
                        seen.push(o);
                    }
                }
                job_out(&s, &base, &j).await
            }
        };
        let tail = move || {
            let owners = std::mem::take(&mut *owners.lock().expect("owners"));
            vec![("owners", serde_json::to_value(owners).expect("owners serialize"))]
        };
        return stream::respond(&paging, count, rows, each, tail);
    }
    let (count, jobs) = s.store.jobs(&job_filter(&q)?, paging.store()).await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut owners: Vec<OwnerOut> = Vec::new();
    for j in &jobs {
        results.push(job_out(&s, &base, j).await?);
        let o = owner(j);
        if !owners.contains(&o) {
            owners.push(o);
        }
    }
    let page = paging.page(&base, count, results)?;
    Ok(Json(JobPage {
        count: page.count,
        next: page.next,
        previous: page.previous,
        results: page.results,
        owners,
    })
    .into_response())
}

/// A job.
#[utoipa::path(get, path = "/api/jobs/{id}/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = JobOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_job(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<JobOut>> {
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job_out(&s, &base, &j).await?))
}

/// Deletes a finished job with its tasks and file records (204).
#[utoipa::path(delete, path = "/api/jobs/{id}/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 204), (status = 409, description = "the job is not finished", body = Conflict), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn delete_job(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    crate::hub::jobctl::delete(&s.store, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Cancels a job (201): DEQUEUING at once; queued tasks are refused by the
/// agents (answered REVOKED), a running discovery stops publishing,
/// running tasks finish; CANCELLED when every task it published is
/// accounted for. A finished job is a 409 with its state.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 201, body = JobOut), (status = 409, description = "the job has finished", body = Conflict), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn cancel(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let session = s.session.borrow().clone();
    let j = crate::hub::jobctl::cancel(&s.store, session.as_deref(), id).await?;
    Ok((StatusCode::CREATED, Json(job_out(&s, &base, &j).await?)).into_response())
}

/// Pauses a job (201): `PAUSING` at once, `PAUSED` once none of its tasks
/// runs. Queued tasks are held (the agents park them in a queue of the
/// job's own), running ones finish. Only a `PENDING` or `STARTED` job
/// pauses; any other state is a 409 with it.
#[utoipa::path(post, path = "/api/jobs/{id}/pause/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 201, body = JobOut), (status = 409, body = Conflict), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn pause(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let session = s.session.borrow().clone();
    let j = crate::hub::jobctl::pause(&s.store, &s.settings, session.as_deref(), id).await?;
    Ok((StatusCode::CREATED, Json(job_out(&s, &base, &j).await?)).into_response())
}

/// Resumes a paused job (201): held tasks go back to their queues. Only a
/// `PAUSING` or `PAUSED` job resumes; any other state is a 409 with it.
#[utoipa::path(post, path = "/api/jobs/{id}/resume/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 201, body = JobOut), (status = 409, body = Conflict), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn resume(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let session = s.session.borrow().clone();
    let j = crate::hub::jobctl::resume(&s.store, &s.settings, session, id).await?;
    Ok((StatusCode::CREATED, Json(job_out(&s, &base, &j).await?)).into_response())
}

/// `?failed_only=` of a resubmission.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ResubmitQuery {
    /// Only the failed files' paths, without discovery.
    #[serde(default)]
    failed_only: Option<bool>,
}

/// Submits a finished job again (201, the new job): the same submission,
/// or with `failed_only=true` its failed files alone, without discovery.
/// A job not finished, or `failed_only` with no failed file, is a 409.
#[utoipa::path(post, path = "/api/jobs/{id}/resubmit/", tag = "jobs", params(("id" = i64, Path), ResubmitQuery),
    responses((status = 201, body = JobOut), (status = 400, body = Detail), (status = 409, body = Conflict), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn resubmit(s: State, c: Caller, base: Base, Id(id): Id, Query(q): Query<ResubmitQuery>) -> ApiResult<Response> {
    let owner = crate::hub::store::jobs::Owner {
        kind: "user".into(),
        id: c.user_id,
        name: c.username.clone(),
    };
    let new = crate::hub::jobctl::resubmit(
        &s.store,
        s.configs.get().queue_depth(),
        owner,
        c.clientkey_id,
        id,
        q.failed_only.unwrap_or(false),
    )
    .await?;
    s.outbox.notify_one();
    let j = s.store.job(new).await?.ok_or_else(|| ApiError::not_found("job"))?;
    Ok((StatusCode::CREATED, Json(job_out(&s, &base, &j).await?)).into_response())
}

/// Files by state.
#[derive(Serialize, ToSchema, Default)]
pub struct FileTotals {
    found: i64,
    processed: i64,
    skipped: i64,
    aborted: i64,
    failures: i64,
}

impl FileTotals {
    fn add(&mut self, c: [i64; 5]) {
        self.found += c[0];
        self.processed += c[1];
        self.skipped += c[2];
        self.aborted += c[3];
        self.failures += c[4];
    }
}

/// A job's statistics: its files by state, and its tasks by state and by
/// type (from its counters: no row is counted on the request).
#[derive(Serialize, ToSchema)]
pub struct JobStatistics {
    id: i64,
    state: String,
    files: FileTotals,
    /// Tasks by state.
    #[schema(value_type = Object)]
    tasks: BTreeMap<String, i64>,
    /// Tasks by type, then state.
    #[schema(value_type = Object)]
    tasktypes: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A job's statistics (the seed's "statistics of all files").
#[utoipa::path(get, path = "/api/jobs/{id}/statistics/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = JobStatistics), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn job_statistics(s: State, _c: Caller, Id(id): Id) -> ApiResult<Json<JobStatistics>> {
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let mut files = FileTotals::default();
    files.add([
        j.files_found,
        j.files_processed,
        j.files_skipped,
        j.files_aborted,
        j.files_failures,
    ]);
    let mut tasks = BTreeMap::new();
    let mut tasktypes: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (tasktype, st, n) in s.store.task_stats(Some(id)).await? {
        *tasks.entry(st.clone()).or_insert(0) += n;
        *tasktypes.entry(tasktype).or_default().entry(st).or_insert(0) += n;
    }
    Ok(Json(JobStatistics {
        id,
        state: j.state,
        files,
        tasks,
        tasktypes,
    }))
}

/// Totals over the jobs a filter selects.
#[derive(Serialize, ToSchema)]
pub struct JobsStats {
    /// Jobs selected.
    count: i64,
    /// Jobs by state.
    #[schema(value_type = Object)]
    state: BTreeMap<String, i64>,
    /// Their files, summed.
    files: FileTotals,
}

/// Totals over the jobs the filters select (the same filters as
/// `/api/jobs/`): jobs by state, files summed.
#[utoipa::path(get, path = "/api/jobs/stats/", tag = "jobs", params(JobQuery),
    responses((status = 200, body = JobsStats), (status = 400, body = Detail), (status = 401, body = Detail)))]
async fn jobs_stats(s: State, _c: Caller, Query(q): Query<JobQuery>) -> ApiResult<Json<JobsStats>> {
    let mut out = JobsStats {
        count: 0,
        state: BTreeMap::new(),
        files: FileTotals::default(),
    };
    for (st, n, files) in s.store.job_totals(&job_filter(&q)?).await? {
        out.count += n;
        out.state.insert(st, n);
        out.files.add(files);
    }
    Ok(Json(out))
}

/// The newest jobs (5 to a page unless `page_size` says otherwise), as
/// the seed's `/jobs/recent/`.
#[utoipa::path(get, path = "/api/jobs/recent/", tag = "jobs", params(PageQuery),
    responses((status = 200, body = super::http::Page<JobOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn recent_jobs(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Json<super::http::Page<JobOut>>> {
    let mut paging = Paging::read(&pq, 100)?;
    if pq.page_size.is_none() {
        paging.size = Some(RECENT);
    }
    let (count, jobs) = s.store.jobs(&Filter::default(), paging.store()).await?;
    let mut results = Vec::with_capacity(jobs.len());
    for j in &jobs {
        results.push(job_out(&s, &base, j).await?);
    }
    Ok(Json(paging.page(&base, count, results)?))
}

/// Jobs on a page of `/api/jobs/recent/` by default (the seed's N = 5).
const RECENT: i64 = 5;

/// A job's completion.
#[utoipa::path(get, path = "/api/jobs/{id}/progress/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = ProgressOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn progress(s: State, _c: Caller, Id(id): Id) -> ApiResult<Json<ProgressOut>> {
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(progress_out(&j)))
}

/// A file record's path as stored: the JSON string the agent sent, passed
/// on as it is, since a name that is not UTF-8 holds `\udcXX` escapes no
/// Rust string can (decoded, it would come out as null).
pub(super) fn stored_path(stored: &str) -> Box<RawValue> {
    RawValue::from_string(stored.to_string()).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("JSON"))
}

/// One file's record in a job (failed and aborted files).
#[derive(Serialize, ToSchema)]
pub struct JobStatOut {
    id: i64,
    url: String,
    job: i64,
    /// The path (a string; non-UTF-8 bytes as `\udcXX` escapes).
    #[schema(value_type = String)]
    path: Box<RawValue>,
    /// `failures` or `aborted`.
    state: String,
    /// The error's name (EACCES, ENOSPC, ...), when the message tells.
    code: Option<String>,
    /// For failures, `transient` (busy, stale, timed out, endpoint
    /// unreachable: a step with `max_tries` tried it again) or
    /// `permanent` (failed at once); null for other states.
    category: Option<String>,
    /// The reasons, as the task reported them.
    #[schema(value_type = Vec<String>)]
    message: Value,
    /// The Celery id of the task that reported it.
    task: String,
}

pub(super) fn jobstat_out(base: &Base, r: &FileRecord) -> JobStatOut {
    JobStatOut {
        id: r.id,
        url: base.url(&format!("/api/jobstats/{}/", r.id)),
        job: r.job_id,
        path: stored_path(&r.path),
        state: r.state.clone(),
        code: r.code.clone(),
        category: (r.state == "failures").then(|| crate::task::errors::category(&r.message).to_string()),
        message: serde_json::from_str(&r.message).unwrap_or_else(|_| Value::String(r.message.clone())),
        task: r.task_id.clone(),
    }
}

/// The per-file records' filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobStatQuery {
    /// Job id.
    job: Option<i64>,
    /// `failures`, `aborted` (repeat the key, or `state[]`).
    #[serde(default)]
    state: Vec<String>,
    /// Exactly this path.
    path: Option<String>,
}

/// Per-file records: the failed and aborted files of jobs.
#[utoipa::path(get, path = "/api/jobstats/", tag = "jobs", params(PageQuery, AfterQuery, JobStatQuery),
    responses((status = 200, body = super::http::Page<JobStatOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn jobstats(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
    Query(aq): Query<AfterQuery>,
    Query(q): Query<JobStatQuery>,
) -> ApiResult<Response> {
    let mut f = Filter::default();
    if let Some(j) = q.job {
        f.cmp("job_id", "=", Bind::Int(j));
    }
    f.any_of("state", q.state.iter().map(|x| text(x)).collect());
    if let Some(path) = &q.path {
        f.cmp("path", "=", Bind::Text(serde_json::to_string(path).expect("a string")));
    }
    file_page(&s, base, (&pq, &aq, 100), f, jobstat_out).await
}

/// A page of the per-file records `f` selects, each shown by `out`:
/// after a row id (`after`, [`Keyset`]), every one (`page_size=0`,
/// streamed) or by `page`; `asked` is the page's query and its largest
/// `page_size`.
pub(super) async fn file_page<O: Serialize + Send + 'static>(
    s: &ApiState,
    base: Base,
    asked: (&PageQuery, &AfterQuery, i64),
    f: Filter,
    out: fn(&Base, &FileRecord) -> O,
) -> ApiResult<Response> {
    let (pq, aq, max) = asked;
    if let Some(k) = Keyset::read(pq, aq, max)? {
        let count = s.store.file_record_count(&f).await?;
        let rows = s.store.file_records_page(&k.bound(f), k.store()).await?;
        return Ok(Json(k.page(&base, count, rows, |r| r.id, |r| out(&base, r))).into_response());
    }
    let paging = Paging::read(pq, max)?;
    if paging.size.is_none() {
        let (count, rows) = s.store.file_records_all(f).await?;
        let each = move |r: FileRecord| std::future::ready(Ok(out(&base, &r)));
        return stream::respond(&paging, count, rows, each, Vec::new);
    }
    let (count, rows) = s.store.file_records(&f, paging.store()).await?;
    let results = rows.iter().map(|r| out(&base, r)).collect();
    Ok(Json(paging.page(&base, count, results)?).into_response())
}

/// `?category=` of a job's files.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct FilesQuery {
    /// `failed` (failed and aborted files, the default), `completed`
    /// (processed and skipped: recorded only when the hub records every
    /// file), or `queued` (counted only: the hub never holds the paths
    /// discovery found).
    category: Option<String>,
}

/// A job's files of one category (the UI's Failed / Completed / Queued
/// items), paged as `/api/jobstats/`.
#[utoipa::path(get, path = "/api/jobs/{id}/files/", tag = "jobs", params(("id" = i64, Path), PageQuery, AfterQuery, FilesQuery),
    responses((status = 200, body = super::http::Page<JobStatOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn job_files(
    s: State,
    _c: Caller,
    base: Base,
    Id(id): Id,
    Query(pq): Query<PageQuery>,
    Query(aq): Query<AfterQuery>,
    Query(q): Query<FilesQuery>,
) -> ApiResult<Response> {
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let states: &[&str] = match q.category.as_deref().unwrap_or("failed") {
        "failed" => &FAILED_STATES,
        "completed" => &COMPLETED_STATES,
        "queued" => {
            if aq.after.is_some() {
                return Err(ApiError::bad(
                    "after: queued files are counted only, there are no rows to page",
                ));
            }
            let paging = Paging::read(&pq, 100)?;
            let left = j.files_found - j.files_processed - j.files_skipped - j.files_aborted - j.files_failures;
            return Ok(Json(paging.page::<JobStatOut>(&base, left.max(0), Vec::new())?).into_response());
        }
        other => {
            return Err(ApiError::bad(format!(
                "category: {other:?} is not one of failed, completed, queued"
            )));
        }
    };
    let mut f = Filter::default();
    f.cmp("job_id", "=", Bind::Int(id));
    f.any_of("state", states.iter().map(|x| text(x)).collect());
    file_page(&s, base, (&pq, &aq, 100), f, jobstat_out).await
}

/// One change a bidirectional sync's site reported, with what the hub
/// made of it.
#[derive(Serialize, ToSchema)]
pub struct SyncEventOut {
    /// The site that reported it.
    site: String,
    /// The change as the site's snapdiff reported it: `path`, `type`,
    /// `size`, `mtime`, `mode`, `state`, and `source` for a move.
    #[schema(value_type = Object)]
    change: Box<RawValue>,
    /// `apply`, `retarget` (applied at `target`), `resend` (a move sent
    /// whole), `echo` (what an earlier run wrote), `replaced` (a delete of
    /// a path its site wrote anew), `same` (both sites made it), `beaten`
    /// (a delete the other site's change overrode) or `refused` (a move
    /// onto a path the other site wrote); null until the run has both
    /// sites' changes.
    decision: Option<String>,
    /// Where it was applied, when not at its own path.
    #[schema(value_type = Option<String>)]
    target: Option<Box<RawValue>>,
    /// Why, for the decisions a site loses by.
    note: Option<String>,
}

/// The changes a bidirectional sync's job compared (the seed's snapdiff
/// events, kept while a later run may need them: docs/hub.md), both
/// sites', paged.
#[utoipa::path(get, path = "/api/jobs/{id}/syncevents/", tag = "jobs", params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = super::http::Page<SyncEventOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn sync_events(
    s: State,
    _c: Caller,
    base: Base,
    Id(id): Id,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Json<super::http::Page<SyncEventOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let all = s
        .store
        .job_sync_events(id)
        .await?
        .ok_or_else(|| ApiError::not_found("bidirectional sync job"))?;
    let raw = |t: &str| RawValue::from_string(t.to_string()).ok();
    let results = paging
        .slice(&all)
        .iter()
        .map(|e| SyncEventOut {
            site: e.site.clone(),
            change: raw(&e.obj).unwrap_or_else(|| RawValue::from_string("null".into()).expect("json")),
            decision: e.decision.clone(),
            target: e.target.as_deref().and_then(raw),
            note: e.note.clone(),
        })
        .collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// One per-file record.
#[utoipa::path(get, path = "/api/jobstats/{id}/", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = JobStatOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn jobstat(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<JobStatOut>> {
    let mut f = Filter::default();
    f.cmp("id", "=", Bind::Int(id));
    let (_, rows) = s
        .store
        .file_records(
            &f,
            StorePage {
                offset: 0,
                limit: Some(1),
            },
        )
        .await?;
    let r = rows.first().ok_or_else(|| ApiError::not_found("job stat"))?;
    Ok(Json(jobstat_out(&base, r)))
}
