//! `/api/tasktypes/`: every task type ferry runs, paused cluster-wide or
//! not, and its pause and resume (`hub::typectl`).

use super::http::{ApiResult, ApiState, Base, Body, Caller, Conflict, Detail, Key, PageQuery, Paging, Query, State};
use crate::hub::store::iso;
use crate::hub::typectl::{self, TaskType};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tasktypes))
        .routes(routes!(get_tasktype))
        .routes(routes!(pause))
        .routes(routes!(resume))
}

/// A task type: paused cluster-wide or not, and how many of its tasks
/// wait parked.
#[derive(Serialize, ToSchema)]
pub struct TaskTypeOut {
    url: String,
    /// The task name (`dynamo.tasks.delete_paths_from_gpfs`).
    name: String,
    /// Paused: the agents park its queued tasks instead of running them.
    paused: bool,
    /// Why it was paused (while it is).
    reason: Option<String>,
    /// The user who paused it (while it is).
    paused_by: Option<String>,
    /// When it was paused (while it is).
    since: Option<String>,
    /// Its tasks waiting in its parking queue; null when the broker
    /// cannot be asked.
    parked: Option<u32>,
}

fn out(base: &Base, t: &TaskType) -> TaskTypeOut {
    let name = t.task.as_str();
    TaskTypeOut {
        url: base.url(&format!("/api/tasktypes/{name}/")),
        name: name.to_string(),
        paused: t.pause.is_some(),
        reason: t.pause.as_ref().map(|p| p.reason.clone()),
        paused_by: t.pause.as_ref().map(|p| p.paused_by.clone()),
        since: t.pause.as_ref().map(|p| iso(p.since)),
        parked: t.parked,
    }
}

/// Every task type ferry runs, discovery tasks first, each paused or not.
#[utoipa::path(get, path = "/api/tasktypes/", tag = "tasktypes", params(PageQuery),
    responses((status = 200, body = super::http::Page<TaskTypeOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list_tasktypes(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Json<super::http::Page<TaskTypeOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let session = s.session.borrow().clone();
    let all = typectl::list(&s.store, &s.settings, session.as_deref()).await?;
    let results = paging.slice(&all).iter().map(|t| out(&base, t)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// A task type by its name; a name ferry does not run is a 404.
#[utoipa::path(get, path = "/api/tasktypes/{id}/", tag = "tasktypes", params(("id" = String, Path, description = "the task name (dynamo.tasks.delete_paths_from_gpfs)")),
    responses((status = 200, body = TaskTypeOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_tasktype(s: State, _c: Caller, base: Base, Key(name): Key) -> ApiResult<Json<TaskTypeOut>> {
    let session = s.session.borrow().clone();
    let t = typectl::get(&s.store, &s.settings, session.as_deref(), &name).await?;
    Ok(Json(out(&base, &t)))
}

/// A pause's fields; unknown fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypePauseFields {
    /// Why (shown with the pause).
    #[serde(default)]
    reason: Option<String>,
}

/// Pauses a task type cluster-wide (201): every agent parks the queued
/// tasks of that name, of every job, in the type's parking queue instead
/// of running them; running ones finish. A paused type is a 409 with
/// state `PAUSED`; a name ferry does not run is a 404.
#[utoipa::path(post, path = "/api/tasktypes/{id}/pause/", tag = "tasktypes", params(("id" = String, Path, description = "the task name (dynamo.tasks.delete_paths_from_gpfs)")),
    request_body = TypePauseFields,
    responses((status = 201, body = TaskTypeOut), (status = 400, body = Detail), (status = 409, body = Conflict), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn pause(s: State, c: Caller, base: Base, Key(name): Key, Body(f): Body<TypePauseFields>) -> ApiResult<Response> {
    let session = s.session.borrow().clone();
    let reason = f.reason.unwrap_or_default();
    let t = typectl::pause(&s.store, &s.settings, session.as_deref(), &name, &reason, &c.username).await?;
    Ok((StatusCode::CREATED, Json(out(&base, &t))).into_response())
}

/// Resumes a paused task type (201): its parked tasks go back to their
/// queues. A type not paused is a 409 with state `RUNNING`; a name ferry
/// does not run is a 404.
#[utoipa::path(post, path = "/api/tasktypes/{id}/resume/", tag = "tasktypes", params(("id" = String, Path, description = "the task name (dynamo.tasks.delete_paths_from_gpfs)")),
    responses((status = 201, body = TaskTypeOut), (status = 409, body = Conflict), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn resume(s: State, c: Caller, base: Base, Key(name): Key) -> ApiResult<Response> {
    let session = s.session.borrow().clone();
    let t = typectl::resume(&s.store, &s.settings, session, &name, &c.username).await?;
    Ok((StatusCode::CREATED, Json(out(&base, &t))).into_response())
}
