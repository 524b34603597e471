//! `/api/jobs/` and `/api/tasks/`.

use super::{ApiError, ApiResult, ApiState, Base, Caller, Id, Paging, Params, State, json};
use crate::hub::store::jobs::{Bind, FileRecord, Filter, Job, Task, state, task_state};
use crate::hub::store::{iso, now_us};
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/jobs/", get(list_jobs))
        .route("/api/jobs/{id}/", get(get_job).delete(delete_job))
        .route("/api/jobs/{id}/progress/", get(progress))
        .route("/api/jobs/{id}/cancel/", axum::routing::post(cancel))
        .route("/api/jobstats/", get(jobstats))
        .route("/api/jobstats/{id}/", get(jobstat))
        .route("/api/tasks/", get(list_tasks))
        .route("/api/tasks/{id}/", get(get_task))
}

/// Ids of a job's tasks shown on the job (the rest are counted in
/// `tasks_count`: a 2.5 M-task job would otherwise answer with megabytes).
const TASK_IDS_SHOWN: i64 = 1000;

fn runtime(start: Option<i64>, end: Option<i64>) -> Value {
    match start {
        Some(s) => json!(((end.unwrap_or_else(now_us) - s).max(0)) as f64 / 1e6),
        None => Value::Null,
    }
}

/// The job's progress: tasks and files done of those known so far.
pub fn progress_json(j: &Job) -> Value {
    let files_done = j.files_processed + j.files_skipped + j.files_aborted + j.files_failures;
    let percent = if state::FINAL.contains(&j.state.as_str()) {
        100.0
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
    json!({
        "percent": (percent * 10.0).round() / 10.0,
        "dir_walk_complete": j.dir_walk_complete,
        "files_found": j.files_found,
        "files_done": files_done,
        "tasks_total": j.expected,
        "tasks_done": j.received,
    })
}

/// A job in the seed's fields, plus ferry's counts.
pub async fn job_json(s: &ApiState, base: &Base, j: &Job) -> ApiResult<Value> {
    let (count, ids) = s.store.job_task_ids(j.id, TASK_IDS_SHOWN).await?;
    Ok(json!({
        "url": base.url(&format!("/api/jobs/{}/", j.id)),
        "id": j.id,
        "workflow": j.workflow,
        "fields": j.fields,
        "discovery": j.discovery,
        "site": j.site,
        "queue": j.queue,
        "friendly_name": j.friendly_name,
        "tasks": ids,
        "tasks_count": count,
        "created": iso(j.created),
        "started": j.started.map(iso),
        "completed": j.completed.map(iso),
        "runtime": runtime(j.started.or(Some(j.created)), j.completed),
        "state": j.state,
        "owner": {"type": j.owner.kind, "id": j.owner.id, "name": j.owner.name},
        "dir_walk_complete": j.dir_walk_complete,
        "is_settings_job": false,
        "progress": progress_json(j),
        "input_paths": j.input_paths,
        "counts": {
            "files_found": j.files_found,
            "processed": j.files_processed,
            "skipped": j.files_skipped,
            "aborted": j.files_aborted,
            "failures": j.files_failures,
            "results_expected": j.expected,
            "results_counted": j.received,
            "results_orphaned": j.orphans,
            "tasks_failed": j.tasks_failed,
            "roots_published": j.roots_published,
            "roots": j.roots,
        },
    }))
}

fn text(v: &str) -> Bind {
    Bind::Text(v.to_string())
}

fn job_filter(p: &Params) -> ApiResult<Filter> {
    let mut f = Filter::default();
    let states = p.all("state");
    for st in &states {
        if !state::ALL.contains(&st.to_uppercase().as_str()) {
            return Err(ApiError::bad(format!(
                "state: unknown job state {st:?} (known: {})",
                state::ALL.join(", ")
            )));
        }
    }
    f.any_of("state", states.iter().map(|s| text(&s.to_uppercase())).collect());
    if let Some(w) = p.get("workflow") {
        f.cmp("workflow", "=", text(w));
    }
    if let Some(x) = p.get("site") {
        f.cmp("site", "=", text(x));
    }
    if let Some(x) = p.get("queue") {
        f.cmp("queue", "=", text(x));
    }
    for (key, col, op) in [
        ("created_time_from", "created", ">="),
        ("created_time_to", "created", "<="),
        ("completed_time_from", "completed", ">="),
        ("completed_time_to", "completed", "<="),
    ] {
        if let Some(t) = p.time(key)? {
            f.cmp(col, op, Bind::Int(t));
        }
    }
    f.any_of("owner_id", p.ints("owner_ids")?.into_iter().map(Bind::Int).collect());
    f.any_of(
        "clientkey_id",
        p.ints("clientkey_ids")?.into_iter().map(Bind::Int).collect(),
    );
    Ok(f)
}

async fn list_jobs(s: State, _c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let (count, jobs) = s.store.jobs(&job_filter(&p)?, paging.store()).await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut owners: Vec<Value> = Vec::new();
    for j in &jobs {
        results.push(job_json(&s, &base, j).await?);
        let o = json!({"type": j.owner.kind, "id": j.owner.id, "name": j.owner.name});
        if !owners.contains(&o) {
            owners.push(o);
        }
    }
    let mut env = paging.envelope(&base, count, results)?;
    env.insert("owners".into(), owners.into());
    Ok(json(StatusCode::OK, env.into()))
}

async fn get_job(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    Ok(json(StatusCode::OK, job_json(&s, &base, &j).await?))
}

async fn delete_job(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    if !state::FINAL.contains(&j.state.as_str()) {
        return Err(ApiError::bad(format!(
            "job {id} is {}: cancel it first (deleting it would lose the record of tasks still running)",
            j.state
        )));
    }
    s.store.delete_job(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/jobs/{id}/cancel/` (201): the job becomes DEQUEUING at
/// once; queued tasks are refused by the agents (answered REVOKED), a
/// running discovery stops publishing, running tasks finish; the job is
/// CANCELLED when every task it published is accounted for. Cancelling a
/// finished job is a 400.
async fn cancel(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let roots = s
        .store
        .cancel_job(id)
        .await?
        .ok_or_else(|| ApiError::bad(format!("job {id} has finished: nothing to cancel")))?;
    let session = s.session.borrow().clone();
    match session {
        Some(session) if !roots.is_empty() => {
            if let Err(e) = crate::hub::control::publish(&session, &crate::hub::control::cancel_message(&roots)).await {
                tracing::warn!(job = id, error = %e, "cannot send the cancel now; the next snapshot carries it");
            }
        }
        Some(_) => {}
        None => tracing::warn!(job = id, "no broker: the cancel goes out with the next snapshot"),
    }
    tracing::info!(job = id, roots = roots.len(), "job cancel requested");
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    Ok(json(StatusCode::CREATED, job_json(&s, &base, &j).await?))
}

async fn progress(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    let j = s.store.job(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    Ok(json(StatusCode::OK, progress_json(&j)))
}

fn jobstat_json(base: &Base, r: &FileRecord) -> Value {
    json!({
        "id": r.id,
        "url": base.url(&format!("/api/jobstats/{}/", r.id)),
        "job": r.job_id,
        "path": serde_json::from_str::<Value>(&r.path).unwrap_or(Value::Null),
        "state": r.state,
        "code": r.code,
        "message": serde_json::from_str::<Value>(&r.message).unwrap_or_else(|_| r.message.clone().into()),
        "task": r.task_id,
    })
}

/// `GET /api/jobstats/`: the per-file records (failed and aborted files),
/// filtered by `job`, `state[]` and `path`.
async fn jobstats(s: State, _c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let mut f = Filter::default();
    if let Some(j) = p.int("job")? {
        f.cmp("job_id", "=", Bind::Int(j));
    }
    f.any_of("state", p.all("state").iter().map(|x| text(x)).collect());
    if let Some(path) = p.get("path") {
        f.cmp("path", "=", Bind::Text(serde_json::to_string(path).expect("a string")));
    }
    let (count, rows) = s.store.file_records(&f, paging.store()).await?;
    let results = rows.iter().map(|r| jobstat_json(&base, r)).collect();
    Ok(json(StatusCode::OK, paging.envelope(&base, count, results)?.into()))
}

async fn jobstat(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let mut f = Filter::default();
    f.cmp("id", "=", Bind::Int(id));
    let (_, rows) = s
        .store
        .file_records(
            &f,
            crate::hub::store::jobs::Page {
                offset: 0,
                limit: Some(1),
            },
        )
        .await?;
    let r = rows.first().ok_or_else(|| ApiError::not_found("job stat"))?;
    Ok(json(StatusCode::OK, jobstat_json(&base, r)))
}

fn task_json(base: &Base, t: &Task, detail: bool) -> Value {
    let mut v = json!({
        "url": base.url(&format!("/api/tasks/{}/", t.id)),
        "id": t.id,
        "task_id": t.task_id,
        "tasktype": t.tasktype,
        "state": t.state,
        "job": t.job_id,
        "site": t.site,
        "queue": t.queue,
        "node": t.node,
        "started": t.started.map(iso),
        "parents": t.parent_task_id.iter().collect::<Vec<_>>(),
        "dynamic_parents": [],
        "children_count": t.children_count,
    });
    if detail {
        let m = v.as_object_mut().expect("object");
        m.insert("completed".into(), json!(t.completed.map(iso)));
        m.insert("runtime".into(), runtime(t.started, t.completed.or(Some(now_us()))));
        m.insert("paths".into(), base.url(&format!("/api/tasks/{}/files/", t.id)).into());
        m.insert("summary".into(), t.summary.clone().unwrap_or(Value::Null));
        m.insert("result".into(), t.result.clone().unwrap_or(Value::Null));
        m.insert(
            "friendly_name".into(),
            t.tasktype.rsplit('.').next().unwrap_or("").into(),
        );
    }
    v
}

async fn list_tasks(s: State, _c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let mut f = Filter::default();
    if let Some(t) = p.get("tasktype") {
        f.cmp("tasktype", "=", text(t));
    }
    if let Some(t) = p.get("task_id") {
        f.cmp("task_id", "=", text(t));
    }
    let job = p.int("job_id")?;
    if let Some(j) = job {
        f.cmp("job_id", "=", Bind::Int(j));
    }
    let states = p.all("state");
    for st in &states {
        if !task_state::ALL.contains(&st.to_uppercase().as_str()) {
            return Err(ApiError::bad(format!(
                "state: unknown task state {st:?} (known: {})",
                task_state::ALL.join(", ")
            )));
        }
    }
    f.any_of("state", states.iter().map(|s| text(&s.to_uppercase())).collect());
    let (count, tasks) = s.store.tasks(&f, paging.store()).await?;
    let results = tasks.iter().map(|t| task_json(&base, t, false)).collect();
    let mut env = paging.envelope(&base, count, results)?;
    let mut by_state = serde_json::Map::new();
    let mut by_type = serde_json::Map::new();
    for (tasktype, st, n) in s.store.task_stats(job).await? {
        let add = |m: &mut serde_json::Map<String, Value>, k: String| {
            let cur = m.get(&k).and_then(Value::as_i64).unwrap_or(0);
            m.insert(k, (cur + n).into());
        };
        add(&mut by_state, st);
        add(&mut by_type, tasktype);
    }
    env.insert("stats".into(), json!({"state": by_state, "tasktype": by_type}));
    Ok(json(StatusCode::OK, env.into()))
}

async fn get_task(s: State, _c: Caller, base: Base, Path(key): Path<String>) -> ApiResult<Response> {
    let t = s.store.task(&key).await?.ok_or_else(|| ApiError::not_found("task"))?;
    Ok(json(StatusCode::OK, task_json(&base, &t, true)))
}
