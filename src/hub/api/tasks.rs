//! `/api/tasks/`: tasks by id, paged by `page` or by keyset (`after`),
//! one task, and the files a task reported.

use super::http::{
    AfterQuery, ApiError, ApiResult, ApiState, Base, Caller, Detail, Key, Keyset, PageQuery, Paging, Query, State,
};
use super::jobs::{file_page, runtime, task_states, text, upper_states};
use super::stream;
use crate::hub::store::jobs::{Bind, FileRecord, Filter, Task, task_state};
use crate::hub::store::{iso, now_us};
use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(task_files))
}

/// A file of a task, in the seed's shape.
#[derive(Serialize, ToSchema)]
pub struct TaskFileOut {
    /// The path (a string; non-UTF-8 bytes as `\udcXX` escapes).
    #[schema(value_type = String)]
    path: Box<serde_json::value::RawValue>,
    /// `failures`, `aborted`, `processed`, `skipped`.
    state: String,
    /// `file`, `directory`, ... when recorded (null otherwise).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Bytes, when recorded (null otherwise).
    size: Option<i64>,
}

/// `?state=` of a task's files.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct TaskFilesQuery {
    /// Only files in these states (repeat the key).
    #[serde(default)]
    state: Vec<String>,
}

/// The files a task reported that the hub records (failed and aborted
/// ones; every one when the hub records every file), 20 to 1000 a page,
/// by `page` or after a record's id (`after`).
#[utoipa::path(get, path = "/api/tasks/{id}/files/", tag = "tasks", params(("id" = String, Path, description = "row id or Celery task id"), PageQuery, AfterQuery, TaskFilesQuery),
    responses((status = 200, body = super::http::Page<TaskFileOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn task_files(
    s: State,
    _c: Caller,
    base: Base,
    Key(key): Key,
    Query(pq): Query<PageQuery>,
    Query(aq): Query<AfterQuery>,
    Query(q): Query<TaskFilesQuery>,
) -> ApiResult<Response> {
    let t = s.store.task(&key).await?.ok_or_else(|| ApiError::not_found("task"))?;
    let mut f = Filter::default();
    f.cmp("task_id", "=", text(&t.task_id));
    f.any_of("state", q.state.iter().map(|x| text(x)).collect());
    file_page(&s, base, (&pq, &aq, 1000), f, |_, r| task_file_out(r)).await
}

fn task_file_out(r: &FileRecord) -> TaskFileOut {
    TaskFileOut {
        path: super::jobs::stored_path(&r.path),
        state: r.state.clone(),
        kind: None,
        size: None,
    }
}

/// A task. `/api/tasks/{id}/` adds `completed`, `runtime`, `paths`,
/// `summary`, `result` and `friendly_name`.
#[derive(Serialize, ToSchema)]
pub struct TaskOut {
    url: String,
    id: i64,
    /// The Celery task id.
    task_id: String,
    tasktype: String,
    /// PENDING, STARTED, SUCCESS, ERROR, FAILURE, SKIPPED, CANCELLED.
    state: String,
    job: i64,
    site: Option<String>,
    queue: Option<String>,
    node: Option<String>,
    started: Option<String>,
    /// The Celery id of the task that published it.
    parents: Vec<String>,
    dynamic_parents: Vec<i64>,
    children_count: i64,
}

/// A task with what only `/api/tasks/{id}/` shows.
#[derive(Serialize, ToSchema)]
pub struct TaskFull {
    #[serde(flatten)]
    task: TaskOut,
    #[serde(flatten)]
    detail: TaskDetail,
}

/// What only `/api/tasks/{id}/` shows.
#[derive(Serialize, ToSchema)]
pub struct TaskDetail {
    completed: Option<String>,
    runtime: Option<f64>,
    paths: String,
    #[schema(value_type = Option<Object>)]
    summary: Option<Value>,
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    friendly_name: String,
}

fn task_out(base: &Base, t: &Task) -> TaskOut {
    TaskOut {
        url: base.url(&format!("/api/tasks/{}/", t.id)),
        id: t.id,
        task_id: t.task_id.clone(),
        tasktype: t.tasktype.clone(),
        state: t.state.clone(),
        job: t.job_id,
        site: t.site.clone(),
        queue: t.queue.clone(),
        node: t.node.clone(),
        started: t.started.map(iso),
        parents: t.parent_task_id.iter().cloned().collect(),
        dynamic_parents: Vec::new(),
        children_count: t.children_count,
    }
}

fn task_full(base: &Base, t: &Task) -> TaskFull {
    TaskFull {
        task: task_out(base, t),
        detail: TaskDetail {
            completed: t.completed.map(iso),
            runtime: runtime(t.started, t.completed.or(Some(now_us()))),
            paths: base.url(&format!("/api/tasks/{}/files/", t.id)),
            summary: t.summary.clone(),
            result: t.result.clone(),
            friendly_name: t.tasktype.rsplit('.').next().unwrap_or("").to_string(),
        },
    }
}

/// Task counts of the listed job (or of all).
#[derive(Serialize, ToSchema)]
pub struct TaskStats {
    state: BTreeMap<String, i64>,
    tasktype: BTreeMap<String, i64>,
}

/// A page of tasks with counts by state and type.
#[derive(Serialize, ToSchema)]
pub struct TaskPage {
    count: i64,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<TaskOut>,
    stats: TaskStats,
}

/// The tasks list's filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    tasktype: Option<String>,
    task_id: Option<String>,
    /// States (repeat the key, or `state[]`).
    #[serde(default)]
    #[param(schema_with = task_states)]
    state: Vec<String>,
    job_id: Option<i64>,
}

/// Tasks, by id: by `page`, or after a task's row id (`after`, which
/// costs the same at any depth). `count` is the tasks the filters select
/// (not only those after `after`), and it and `stats` come from the
/// jobs' task counters, never from counting task rows.
#[utoipa::path(get, path = "/api/tasks/", tag = "tasks", params(PageQuery, AfterQuery, TaskQuery),
    responses((status = 200, body = TaskPage), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list_tasks(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
    Query(aq): Query<AfterQuery>,
    Query(q): Query<TaskQuery>,
) -> ApiResult<Response> {
    let keyset = Keyset::read(&pq, &aq, 100)?;
    let mut f = Filter::default();
    for (col, v) in [("tasktype", &q.tasktype), ("task_id", &q.task_id)] {
        if let Some(v) = v {
            f.cmp(col, "=", text(v));
        }
    }
    let job = q.job_id;
    if let Some(j) = job {
        f.cmp("job_id", "=", Bind::Int(j));
    }
    f.any_of("state", upper_states(&q.state, task_state::ALL, "task")?);
    let mut stats = TaskStats {
        state: BTreeMap::new(),
        tasktype: BTreeMap::new(),
    };
    for (tasktype, st, n) in s.store.task_stats(job).await? {
        *stats.state.entry(st).or_default() += n;
        *stats.tasktype.entry(tasktype).or_default() += n;
    }
    let count = s.store.task_count(&f).await?;
    if let Some(k) = keyset {
        let tasks = s.store.tasks_page(&k.bound(f), k.store()).await?;
        let page = k.page(&base, count, tasks, |t| t.id, |t| task_out(&base, t));
        return Ok(Json(TaskPage {
            count: page.count,
            next: page.next,
            previous: page.previous,
            results: page.results,
            stats,
        })
        .into_response());
    }
    let paging = Paging::read(&pq, 100)?;
    if paging.size.is_none() {
        let (count, rows) = s.store.tasks_all(f).await?;
        let stats = serde_json::to_value(&stats).expect("counts serialize");
        let each = move |t: Task| std::future::ready(Ok(task_out(&base, &t)));
        return stream::respond(&paging, count, rows, each, move || vec![("stats", stats)]);
    }
    let tasks = s.store.tasks_page(&f, paging.store()).await?;
    let results = tasks.iter().map(|t| task_out(&base, t)).collect();
    let page = paging.page(&base, count, results)?;
    Ok(Json(TaskPage {
        count: page.count,
        next: page.next,
        previous: page.previous,
        results: page.results,
        stats,
    })
    .into_response())
}

/// A task, by row id or Celery id.
#[utoipa::path(get, path = "/api/tasks/{id}/", tag = "tasks", params(("id" = String, Path, description = "row id or Celery task id")),
    responses((status = 200, body = TaskFull), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_task(s: State, _c: Caller, base: Base, Key(key): Key) -> ApiResult<Json<TaskFull>> {
    let t = s.store.task(&key).await?.ok_or_else(|| ApiError::not_found("task"))?;
    Ok(Json(task_full(&base, &t)))
}
