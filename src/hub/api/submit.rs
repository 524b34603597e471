//! `POST /api/file/workflow/`: run a workflow on paths of a site. The job
//! and its first tasks are written in one transaction and then published;
//! the answer is the job (201).

use super::http::{ApiError, ApiResult, ApiState, Base, Body, Caller, Detail, State};
use super::jobs::{JobOut, job_out};
use crate::hub::store::jobs::Owner;
use crate::hub::submit::{Submission, SubmitError};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::Invalid(why) => ApiError::bad(why),
            SubmitError::Store(e) => e.into(),
        }
    }
}

pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<ApiState>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(submit))
}

/// Runs a workflow on paths of a site (201, the job). The job and its
/// first tasks are written together, then published; with the broker
/// away they wait and go out when it returns.
#[utoipa::path(post, path = "/api/file/workflow/", tag = "jobs", request_body = Submission,
    responses((status = 201, body = JobOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn submit(s: State, c: Caller, base: Base, Body(sub): Body<Submission>) -> ApiResult<Response> {
    let owner = Owner {
        kind: "user".into(),
        id: c.user_id,
        name: c.username.clone(),
    };
    let job_id = crate::hub::submit::start(
        &s.store,
        owner,
        c.clientkey_id,
        &sub,
        None,
        s.configs.get().queue_depth(),
    )
    .await?;
    s.outbox.notify_one();
    let job = s.store.job(job_id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    let out = job_out(&s, &base, &job).await?;
    if out.queue_nodes_online == Some(0) {
        tracing::warn!(job = job_id, site = %job.site, queue = %job.queue, "job accepted, but no node online consumes its queue: it waits");
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
