//! `/api/alerts/`: the alerts that hold now (`hub::alerts`), as a bare
//! array (the seed's one list without paging), muted ones left out.

use super::http::{ApiError, ApiResult, ApiState, Base, Body, Caller, Detail, Id, Query, State};
use crate::hub::store::alerts::Alert;
use crate::hub::store::iso;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert, patch_alert))
}

/// An alert, in the seed's fields.
#[derive(Serialize, ToSchema)]
pub struct AlertOut {
    id: i64,
    url: String,
    /// `SiteHealth`, `WorkerHealth`, `QueueNoConsumer`, `DeadLetter`, `TaskStuck`.
    name: String,
    site: Option<String>,
    node: Option<String>,
    queue: Option<String>,
    /// When the hub first raised it.
    created: String,
    /// When it was last seen to hold.
    timestamp: String,
    /// `INFO`, `WARNING` or `CRITICAL`.
    severity: String,
    summary: String,
    /// Muted by an operator.
    suppressed: bool,
    /// When its condition ended (null while it holds).
    cleared: Option<String>,
}

fn out(base: &Base, a: &Alert) -> AlertOut {
    AlertOut {
        id: a.id,
        url: base.url(&format!("/api/alerts/{}/", a.id)),
        name: a.raised.name.clone(),
        site: a.raised.site.clone(),
        node: a.raised.node.clone(),
        queue: a.raised.queue.clone(),
        created: iso(a.created),
        timestamp: iso(a.timestamp),
        severity: a.raised.severity.clone(),
        summary: a.raised.summary.clone(),
        suppressed: a.suppressed,
        cleared: a.cleared.map(iso),
    }
}

/// Filters of the alerts list.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct AlertQuery {
    /// Only alerts of this name.
    name: Option<String>,
    /// Only alerts of this site.
    site: Option<String>,
    /// Only alerts of this node.
    node: Option<String>,
    /// Only alerts of this severity.
    severity: Option<String>,
    /// Include muted alerts.
    #[serde(default)]
    suppressed: Option<bool>,
}

/// The alerts that hold now, oldest first (a bare array).
#[utoipa::path(get, path = "/api/alerts/", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = Vec<AlertOut>), (status = 400, body = Detail), (status = 401, body = Detail)))]
async fn list_alerts(s: State, _c: Caller, base: Base, Query(q): Query<AlertQuery>) -> ApiResult<Json<Vec<AlertOut>>> {
    let all = s.store.active_alerts(q.suppressed.unwrap_or(false)).await?;
    let keep = |want: &Option<String>, have: &Option<String>| want.as_ref().is_none_or(|w| have.as_ref() == Some(w));
    Ok(Json(
        all.iter()
            .filter(|a| {
                keep(&q.name, &Some(a.raised.name.clone()))
                    && keep(&q.site, &a.raised.site)
                    && keep(&q.node, &a.raised.node)
                    && keep(&q.severity, &Some(a.raised.severity.clone()))
            })
            .map(|a| out(&base, a))
            .collect(),
    ))
}

/// One alert, holding or cleared.
#[utoipa::path(get, path = "/api/alerts/{id}/", tag = "alerts", params(("id" = i64, Path)),
    responses((status = 200, body = AlertOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_alert(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<AlertOut>> {
    let a = s.store.alert(id).await?.ok_or_else(|| ApiError::not_found("alert"))?;
    Ok(Json(out(&base, &a)))
}

/// A change to an alert.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPatch {
    /// Mute (true) or unmute it.
    suppressed: bool,
}

/// Mutes or unmutes an alert: a muted alert is left out of the list.
#[utoipa::path(patch, path = "/api/alerts/{id}/", tag = "alerts", params(("id" = i64, Path)), request_body = AlertPatch,
    responses((status = 200, body = AlertOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn patch_alert(
    s: State,
    c: Caller,
    base: Base,
    Id(id): Id,
    Body(p): Body<AlertPatch>,
) -> ApiResult<Json<AlertOut>> {
    if !s.store.suppress_alert(id, p.suppressed).await? {
        return Err(ApiError::not_found("alert"));
    }
    tracing::info!(alert = id, suppressed = p.suppressed, user = %c.username, "alert muted or unmuted");
    let a = s.store.alert(id).await?.ok_or_else(|| ApiError::not_found("alert"))?;
    Ok(Json(out(&base, &a)))
}
