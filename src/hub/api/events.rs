//! `/api/events/`: the event feed, polled with the last id seen
//! (`after`), and `/api/rollups/work/` and `/api/rollups/failures/`: the
//! work not yet done and the failed files by error (`store::events`,
//! `store::rollups`).

use super::http::{ApiError, ApiResult, ApiState, Caller, Detail, Query, State, query_time};
use crate::hub::store::events::{Event, EventFilter, kind};
use crate::hub::store::rollups::{FailureFilter, FailureGroup, Oldest, WorkGroup};
use crate::hub::store::{iso, now_us};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(work_rollup))
        .routes(routes!(failure_rollup))
}

/// Events a page holds by default, and at most.
const LIMIT: (i64, i64) = (100, 1000);

/// One event.
#[derive(Serialize, ToSchema)]
pub struct EventOut {
    /// Its place in the feed: ids only grow, in the order the changes
    /// were committed.
    id: i64,
    /// When it was written.
    at: String,
    /// `job`, `task`, `tasks`, `node` or `alert`.
    kind: String,
    /// The job it concerns.
    job: Option<i64>,
    /// The node it concerns.
    node: Option<String>,
    /// The new state: a job's (`PENDING`, `STARTED`, `SUCCESS`...), a
    /// task's (`FAILURE`, `ERROR`), `FINISHED` (a batch of tasks),
    /// `ONLINE`/`OFFLINE` (a node), `RAISED`/`CLEARED` (an alert).
    state: String,
    /// The rest: a task's `task_id`, `tasktype`, `queue`; a batch's
    /// `counts` by state; a node's `site` or `requeued` tasks; an alert's
    /// `alert` id, `name`, `site`, `queue`, `severity`, `summary`.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

fn event_out(e: &Event) -> EventOut {
    EventOut {
        id: e.id,
        at: e.at_iso(),
        kind: e.kind.clone(),
        job: e.job,
        node: e.node.clone(),
        state: e.state.clone(),
        detail: e.detail.clone(),
    }
}

/// A page of the feed.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// The events after `after`, by id.
    results: Vec<EventOut>,
    /// The id to pass as `after` next: the last event's, or `after` when
    /// there was none.
    last: i64,
}

/// Which events.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct EventQuery {
    /// Only events after this id (0, the default: from the oldest kept).
    after: Option<i64>,
    /// Most events returned (default 100, at most 1000).
    limit: Option<i64>,
    /// Only events of these kinds (repeatable): `job`, `task`, `tasks`,
    /// `node`, `alert`.
    #[serde(default)]
    kind: Vec<String>,
    /// Only events of this job.
    job: Option<i64>,
    /// Only events of this node.
    node: Option<String>,
}

/// Events after `after`, oldest first. Poll with the `last` of the
/// previous page: no event is missed or repeated.
#[utoipa::path(get, path = "/api/events/", tag = "events", params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = Detail), (status = 401, body = Detail)))]
async fn list_events(s: State, _c: Caller, Query(q): Query<EventQuery>) -> ApiResult<Json<EventPage>> {
    let limit = q.limit.unwrap_or(LIMIT.0);
    if !(1..=LIMIT.1).contains(&limit) {
        return Err(ApiError::bad(format!("limit: must be 1 to {}, got {limit}", LIMIT.1)));
    }
    if let Some(k) = q.kind.iter().find(|k| !kind::ALL.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "kind: {k:?} is none of {}",
            kind::ALL.join(", ")
        )));
    }
    let after = q.after.unwrap_or(0);
    let events = s
        .store
        .events(&EventFilter {
            after,
            kinds: q.kind,
            job: q.job,
            node: q.node,
            limit,
        })
        .await?;
    Ok(Json(EventPage {
        last: events.last().map_or(after, |e| e.id),
        results: events.iter().map(event_out).collect(),
    }))
}

/// The task of a group that has waited or run longest.
#[derive(Serialize, ToSchema)]
pub struct OldestOut {
    task_id: String,
    job: i64,
    /// The node running it (null while it waits).
    node: Option<String>,
    /// Since when it waits (created) or runs (started).
    since: String,
    /// For how long, in seconds.
    age_s: i64,
}

fn oldest_out(o: &Option<Oldest>, now: i64) -> Option<OldestOut> {
    o.as_ref().map(|o| OldestOut {
        task_id: o.task_id.clone(),
        job: o.job,
        node: o.node.clone(),
        since: iso(o.since),
        age_s: (now - o.since).max(0) / 1_000_000,
    })
}

/// The unfinished tasks of one queue and task type.
#[derive(Serialize, ToSchema)]
pub struct WorkOut {
    site: String,
    queue: String,
    tasktype: String,
    /// Tasks waiting (`PENDING`).
    pending: i64,
    /// Tasks running (`STARTED`).
    started: i64,
    longest_pending: Option<OldestOut>,
    longest_running: Option<OldestOut>,
}

/// Work not yet done, by site, queue and task type.
#[derive(Serialize, ToSchema)]
pub struct WorkRollup {
    results: Vec<WorkOut>,
}

/// The work roll-up as the API and the web page show it, at `now`.
pub(crate) fn work_out(groups: &[WorkGroup], now: i64) -> WorkRollup {
    WorkRollup {
        results: groups
            .iter()
            .map(|g| WorkOut {
                site: g.site.clone(),
                queue: g.queue.clone(),
                tasktype: g.tasktype.clone(),
                pending: g.pending,
                started: g.started,
                longest_pending: oldest_out(&g.longest_pending, now),
                longest_running: oldest_out(&g.longest_running, now),
            })
            .collect(),
    }
}

/// Tasks not yet final (`PENDING`, `STARTED`) by site, queue and task
/// type, with the one waiting and the one running longest: stuck work.
#[utoipa::path(get, path = "/api/rollups/work/", tag = "events",
    responses((status = 200, body = WorkRollup), (status = 401, body = Detail)))]
async fn work_rollup(s: State, _c: Caller) -> ApiResult<Json<WorkRollup>> {
    let groups = s.store.work_rollup().await?;
    Ok(Json(work_out(&groups, now_us())))
}

/// Failed files with one error.
#[derive(Serialize, ToSchema)]
pub struct FailureOut {
    /// The error's name (`EACCES`), when the message gives one.
    code: Option<String>,
    /// The message, paths and numbers taken out.
    reason: String,
    /// `transient` (worth trying again) or `permanent`.
    category: String,
    /// Files.
    count: i64,
    /// When the first was reported.
    first: Option<String>,
    /// When the last was reported.
    last: Option<String>,
    /// One of the files.
    sample_path: String,
    /// The jobs with files failing so.
    jobs: Vec<i64>,
}

/// Failed files grouped by error, most files first.
#[derive(Serialize, ToSchema)]
pub struct FailureRollup {
    results: Vec<FailureOut>,
}

/// The failure roll-up as the API and the web page show it.
pub(crate) fn failures_out(groups: &[FailureGroup]) -> FailureRollup {
    FailureRollup {
        results: groups
            .iter()
            .map(|g| FailureOut {
                code: g.code.clone(),
                reason: g.reason.clone(),
                category: g.category.into(),
                count: g.count,
                first: g.first.map(iso),
                last: g.last.map(iso),
                // A path is stored as JSON string text (surrogate escapes
                // kept); shown as the string it is.
                sample_path: serde_json::from_str::<String>(&g.sample_path).unwrap_or_else(|_| g.sample_path.clone()),
                jobs: g.jobs.clone(),
            })
            .collect(),
    }
}

/// Which failures.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct FailureQuery {
    /// Only this job's.
    job: Option<i64>,
    /// Only files reported at or after this time (`2025-05-14T13:00:00Z`).
    since: Option<String>,
}

/// Failed files grouped by error (code and message without paths): how
/// many, the category, first and last report, a sample, the jobs.
#[utoipa::path(get, path = "/api/rollups/failures/", tag = "events", params(FailureQuery),
    responses((status = 200, body = FailureRollup), (status = 400, body = Detail), (status = 401, body = Detail)))]
async fn failure_rollup(s: State, _c: Caller, Query(q): Query<FailureQuery>) -> ApiResult<Json<FailureRollup>> {
    let since = q.since.as_deref().map(|v| query_time("since", v)).transpose()?;
    let groups = s.store.failure_rollup(FailureFilter { job: q.job, since }).await?;
    Ok(Json(failures_out(&groups)))
}
