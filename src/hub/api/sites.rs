//! `/api/sites/`, `/api/nodes/`, `/api/queues/`.

use super::http::{
    ApiError, ApiResult, ApiState, Base, Body, Caller, Detail, Id, Page, PageQuery, Paging, Query, State,
};
use crate::config::valid_name;
use crate::hub::store::sites::{Node, Queue, Site};
use crate::hub::store::{iso, now_us};
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
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, patch_site, delete_site))
        .routes(routes!(list_nodes))
        .routes(routes!(get_node, patch_node, delete_node))
        .routes(routes!(list_queues))
        .routes(routes!(get_queue))
}

/// A site. The settings (batching, include/exclude, thresholds) are shown
/// by `/api/sites/{id}/` only, as in the seed.
#[derive(Serialize, ToSchema)]
pub struct SiteOut {
    url: String,
    id: i64,
    name: String,
    label: String,
    shortcode: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    timezone: Option<String>,
    public_url: Option<String>,
    color: Vec<String>,
    bandwidth: Option<i64>,
    editable: bool,
    spaces: Vec<String>,
    files_count: Option<i64>,
    directories_count: Option<i64>,
    files_stubbed_count: Option<i64>,
    files_hydrated_count: Option<i64>,
    am_i_configured: Option<bool>,
    ready_to_configure: Option<bool>,
}

/// A site with its settings (`/api/sites/{id}/`).
#[derive(Serialize, ToSchema)]
pub struct SiteDetail {
    #[serde(flatten)]
    site: SiteOut,
    #[serde(flatten)]
    settings: SiteSettings,
}

/// A site's settings, which the hub passes to its discoveries.
#[derive(Serialize, ToSchema)]
pub struct SiteSettings {
    file_batch_size: i64,
    file_batch_gb: f64,
    enable_auto_file_batch_sizing: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    lock_threshold: i64,
    gpfs_iscan_buckets: Option<i64>,
    gpfs_iscan_threads: Option<i64>,
}

fn site_out(base: &Base, s: &Site) -> SiteOut {
    SiteOut {
        url: base.url(&format!("/api/sites/{}/", s.id)),
        id: s.id,
        name: s.name.clone(),
        label: s.label.clone(),
        shortcode: s.shortcode.clone(),
        kind: s.kind.clone(),
        timezone: s.timezone.clone(),
        public_url: s.public_url.clone(),
        color: serde_json::from_value(s.color.clone()).unwrap_or_default(),
        bandwidth: s.bandwidth,
        editable: true,
        spaces: Vec::new(),
        files_count: None,
        directories_count: None,
        files_stubbed_count: None,
        files_hydrated_count: None,
        am_i_configured: None,
        ready_to_configure: None,
    }
}

fn site_detail(base: &Base, s: &Site) -> SiteDetail {
    SiteDetail {
        site: site_out(base, s),
        settings: SiteSettings {
            file_batch_size: s.file_batch_size,
            file_batch_gb: s.file_batch_gb,
            enable_auto_file_batch_sizing: s.enable_auto_file_batch_sizing,
            include: s.include.clone(),
            exclude: s.exclude.clone(),
            lock_threshold: s.lock_threshold,
            gpfs_iscan_buckets: s.gpfs_iscan_buckets,
            gpfs_iscan_threads: s.gpfs_iscan_threads,
        },
    }
}

/// The writable fields of a site; all optional but `name` and
/// `shortcode` on creation. Unknown fields are refused.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteFields {
    /// `[a-zA-Z0-9-_]+`; fixed once created (it is part of queue names).
    name: Option<String>,
    label: Option<String>,
    shortcode: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "super::http::present")]
    #[schema(value_type = Option<String>)]
    kind: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::http::present")]
    #[schema(value_type = Option<String>)]
    timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::http::present")]
    #[schema(value_type = Option<String>)]
    public_url: Option<Option<String>>,
    color: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::http::present")]
    #[schema(value_type = Option<i64>)]
    bandwidth: Option<Option<i64>>,
    /// Paths per batch (1 or more).
    #[schema(minimum = 1)]
    file_batch_size: Option<i64>,
    /// GB per batch (0 or more; 0 is no limit).
    #[schema(minimum = 0)]
    file_batch_gb: Option<f64>,
    enable_auto_file_batch_sizing: Option<bool>,
    /// Include globs appended to every rule's.
    include: Option<Vec<String>>,
    /// Exclude globs appended to every rule's.
    exclude: Option<Vec<String>>,
    /// Seconds before a snapdiff lock is stale.
    #[schema(minimum = 0)]
    lock_threshold: Option<i64>,
    #[serde(default, deserialize_with = "super::http::present")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    gpfs_iscan_buckets: Option<Option<i64>>,
    #[serde(default, deserialize_with = "super::http::present")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    gpfs_iscan_threads: Option<Option<i64>>,
}

impl SiteFields {
    fn apply(self, s: &mut Site) -> ApiResult<()> {
        if let Some(v) = self.label {
            s.label = v;
        }
        if let Some(v) = self.shortcode {
            s.shortcode = v;
        }
        if let Some(v) = self.kind {
            s.kind = v;
        }
        if let Some(v) = self.timezone {
            s.timezone = v;
        }
        if let Some(v) = self.public_url {
            s.public_url = v;
        }
        if let Some(v) = self.color {
            s.color = serde_json::json!(v);
        }
        if let Some(v) = self.bandwidth {
            s.bandwidth = v;
        }
        if let Some(v) = self.file_batch_size {
            if v < 1 {
                return Err(ApiError::bad("file_batch_size: must be 1 or more"));
            }
            s.file_batch_size = v;
        }
        if let Some(v) = self.file_batch_gb {
            if !v.is_finite() || v < 0.0 {
                return Err(ApiError::bad("file_batch_gb: must be 0 or more"));
            }
            s.file_batch_gb = v;
        }
        if let Some(v) = self.enable_auto_file_batch_sizing {
            s.enable_auto_file_batch_sizing = v;
        }
        if let Some(v) = self.include {
            s.include = v;
        }
        if let Some(v) = self.exclude {
            s.exclude = v;
        }
        crate::rules::Filter::new(&s.include, &s.exclude)
            .map_err(|e| ApiError::bad(format!("include/exclude: {e}")))?;
        if let Some(v) = self.lock_threshold {
            if v < 0 {
                return Err(ApiError::bad("lock_threshold: must be 0 or more seconds"));
            }
            s.lock_threshold = v;
        }
        for (name, value, slot) in [
            ("gpfs_iscan_buckets", self.gpfs_iscan_buckets, &mut s.gpfs_iscan_buckets),
            ("gpfs_iscan_threads", self.gpfs_iscan_threads, &mut s.gpfs_iscan_threads),
        ] {
            if let Some(v) = value {
                if v.is_some_and(|n| n < 1) {
                    return Err(ApiError::bad(format!("{name}: must be 1 or more")));
                }
                *slot = v;
            }
        }
        Ok(())
    }
}

/// Sites.
#[utoipa::path(get, path = "/api/sites/", tag = "sites", params(PageQuery),
    responses((status = 200, body = Page<SiteOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, description = "page out of range", body = Detail)))]
async fn list_sites(s: State, _c: Caller, base: Base, Query(pq): Query<PageQuery>) -> ApiResult<Json<Page<SiteOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let all = s.store.sites().await?;
    let results = paging.slice(&all).iter().map(|x| site_out(&base, x)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// Creates a site (with its `default` queue).
#[utoipa::path(post, path = "/api/sites/", tag = "sites", request_body = SiteFields,
    responses((status = 201, body = SiteDetail), (status = 400, body = Detail), (status = 401, body = Detail), (status = 413, body = Detail)))]
async fn create_site(s: State, _c: Caller, base: Base, Body(f): Body<SiteFields>) -> ApiResult<Response> {
    let name = f
        .name
        .clone()
        .ok_or_else(|| ApiError::bad("name: This field is required."))?;
    valid_name(&name).map_err(|e| ApiError::bad(format!("name: {e}")))?;
    if f.shortcode.is_none() {
        return Err(ApiError::bad("shortcode: This field is required."));
    }
    if s.store.site_by_name(&name).await?.is_some() {
        return Err(ApiError::bad(format!("name: a site called {name:?} exists")));
    }
    let mut site = Site::named(&name);
    f.apply(&mut site)?;
    let id = s.store.create_site(&site).await?;
    let site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    Ok((StatusCode::CREATED, Json(site_detail(&base, &site))).into_response())
}

/// A site with its settings.
#[utoipa::path(get, path = "/api/sites/{id}/", tag = "sites", params(("id" = i64, Path)),
    responses((status = 200, body = SiteDetail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_site(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<SiteDetail>> {
    let site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    Ok(Json(site_detail(&base, &site)))
}

/// Changes a site's label or settings.
#[utoipa::path(patch, path = "/api/sites/{id}/", tag = "sites", params(("id" = i64, Path)), request_body = SiteFields,
    responses((status = 200, body = SiteDetail), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail), (status = 413, body = Detail)))]
async fn patch_site(
    s: State,
    _c: Caller,
    base: Base,
    Id(id): Id,
    Body(f): Body<SiteFields>,
) -> ApiResult<Json<SiteDetail>> {
    let mut site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    if f.name.as_ref().is_some_and(|n| *n != site.name) {
        return Err(ApiError::bad(
            "name: a site's name is part of its queue names and cannot change",
        ));
    }
    f.apply(&mut site)?;
    s.store.update_site(&site).await?;
    Ok(Json(site_detail(&base, &site)))
}

/// Deletes a site and its queues.
#[utoipa::path(delete, path = "/api/sites/{id}/", tag = "sites", params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn delete_site(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    if !s.store.delete_site(id).await? {
        return Err(ApiError::not_found("site"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether a node is online now.
pub fn online(s: &ApiState, n: &Node) -> bool {
    let limit = s.configs.get().node_health_interval().as_micros() as i64;
    !n.offline && n.last_heartbeat.is_some_and(|t| now_us() - t < limit)
}

/// A node (a host running an agent), learnt from its heartbeats.
#[derive(Serialize, ToSchema)]
pub struct NodeOut {
    url: String,
    id: i64,
    name: String,
    site: Option<String>,
    online: bool,
    has_default_queue: bool,
    last_heartbeat: Option<String>,
    /// Drained: it finishes what it runs and takes no new task.
    paused: bool,
    /// Why it was drained.
    pause_reason: Option<String>,
}

fn node_out(s: &ApiState, base: &Base, n: &Node) -> NodeOut {
    NodeOut {
        url: base.url(&format!("/api/nodes/{}/", n.id)),
        id: n.id,
        name: n.name.clone(),
        site: n.site.clone(),
        online: online(s, n),
        has_default_queue: n.has_default_queue,
        last_heartbeat: n.last_heartbeat.map(iso),
        paused: n.paused,
        pause_reason: n.pause_reason.clone(),
    }
}

/// `site_id` filter.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteQuery {
    /// Only this site's.
    site_id: Option<i64>,
}

/// Nodes.
#[utoipa::path(get, path = "/api/nodes/", tag = "nodes", params(PageQuery, SiteQuery),
    responses((status = 200, body = Page<NodeOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list_nodes(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
    Query(q): Query<SiteQuery>,
) -> ApiResult<Json<Page<NodeOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let all = s.store.nodes(q.site_id).await?;
    let results = paging.slice(&all).iter().map(|n| node_out(&s, &base, n)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// A node.
#[utoipa::path(get, path = "/api/nodes/{id}/", tag = "nodes", params(("id" = i64, Path)),
    responses((status = 200, body = NodeOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_node(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<NodeOut>> {
    let all = s.store.nodes(None).await?;
    let n = all
        .iter()
        .find(|n| n.id == id)
        .ok_or_else(|| ApiError::not_found("node"))?;
    Ok(Json(node_out(&s, &base, n)))
}

/// The writable fields of a node; unknown fields are refused. A node is
/// what its agent's heartbeats say: its name is the agent's `node_name`
/// (a new name here would be a second node at the next heartbeat), and
/// its site is the one the agent is configured for, which its next
/// heartbeat sets again (as a deleted node comes back, in the seed).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeFields {
    /// Its name; only the current one is accepted.
    name: Option<String>,
    /// The name of a site to show it in until its next heartbeat.
    site: Option<String>,
    /// Drain (true: finish what it runs, take nothing new) or resume it.
    paused: Option<bool>,
    /// Why (kept while it is drained; shown with it).
    reason: Option<String>,
}

/// Changes a node's site (until its next heartbeat), or drains it
/// (`paused: true`, with a `reason`: it finishes what it runs and takes no
/// new task) and resumes it (`paused: false`).
#[utoipa::path(patch, path = "/api/nodes/{id}/", tag = "nodes", params(("id" = i64, Path)), request_body = NodeFields,
    responses((status = 200, body = NodeOut), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail), (status = 413, body = Detail)))]
async fn patch_node(
    s: State,
    _c: Caller,
    base: Base,
    Id(id): Id,
    Body(f): Body<NodeFields>,
) -> ApiResult<Json<NodeOut>> {
    let mut node = s
        .store
        .nodes(None)
        .await?
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| ApiError::not_found("node"))?;
    if f.name.as_ref().is_some_and(|n| *n != node.name) {
        return Err(ApiError::bad(
            "name: a node's name is its agent's node_name (set in the agent's configuration); it cannot change here",
        ));
    }
    if let Some(name) = &f.site {
        let site = s
            .store
            .site_by_name(name)
            .await?
            .ok_or_else(|| ApiError::bad(format!("site: no site named {name:?}")))?;
        if !s.store.set_node_site(id, site.id).await? {
            return Err(ApiError::not_found("node"));
        }
        // What this request did, whatever heartbeat comes next.
        node.site = Some(site.name);
    }
    if let Some(paused) = f.paused {
        let reason = f.reason.as_deref().filter(|_| paused);
        if !s.store.set_node_paused(id, paused, reason).await? {
            return Err(ApiError::not_found("node"));
        }
        let session = s.session.borrow().clone();
        let msg = match paused {
            true => crate::hub::control::drain_message(std::slice::from_ref(&node.name)),
            false => crate::hub::control::undrain_message(std::slice::from_ref(&node.name)),
        };
        match session {
            Some(session) => {
                if let Err(e) = crate::hub::control::publish(&session, &msg).await {
                    tracing::warn!(node = %node.name, error = %e, "cannot send the drain now; the next snapshot carries it");
                }
            }
            None => tracing::warn!(node = %node.name, "no broker: the drain goes out with the next snapshot"),
        }
        tracing::info!(node = %node.name, paused, reason = ?reason, user = %_c.username, "node drained or resumed");
        node.paused = paused;
        node.pause_reason = reason.map(str::to_string);
    } else if f.reason.is_some() {
        return Err(ApiError::bad("reason: goes with `paused`"));
    }
    Ok(Json(node_out(&s, &base, &node)))
}

/// Forgets a node until its next heartbeat.
#[utoipa::path(delete, path = "/api/nodes/{id}/", tag = "nodes", params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn delete_node(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    if !s.store.delete_node(id).await? {
        return Err(ApiError::not_found("node"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether a node heart-beat on a queue recently enough to be online.
pub fn queue_node_online(s: &ApiState, last: i64) -> bool {
    now_us() - last < s.configs.get().node_health_interval().as_micros() as i64
}

/// A site, as a queue names it.
#[derive(Serialize, ToSchema)]
pub struct SiteRef {
    id: i64,
    name: String,
    label: String,
}

/// A node, as a queue names it.
#[derive(Serialize, ToSchema)]
pub struct NodeRef {
    id: i64,
    name: String,
}

/// A queue of a site and the nodes consuming it.
#[derive(Serialize, ToSchema)]
pub struct QueueOut {
    url: String,
    id: i64,
    site: SiteRef,
    nodes: Vec<NodeRef>,
    name: String,
    label: String,
    last_heartbeat: Option<String>,
}

fn queue_out(base: &Base, q: &Queue) -> QueueOut {
    QueueOut {
        url: base.url(&format!("/api/queues/{}/", q.id)),
        id: q.id,
        site: SiteRef {
            id: q.site.0,
            name: q.site.1.clone(),
            label: q.site.2.clone(),
        },
        nodes: q
            .nodes
            .iter()
            .map(|n| NodeRef {
                id: n.0,
                name: n.1.clone(),
            })
            .collect(),
        name: q.name.clone(),
        label: q.label.clone(),
        last_heartbeat: q.nodes.iter().map(|n| n.2).max().filter(|&t| t > 0).map(iso),
    }
}

/// Queues.
#[utoipa::path(get, path = "/api/queues/", tag = "queues", params(PageQuery, SiteQuery),
    responses((status = 200, body = Page<QueueOut>), (status = 400, body = Detail), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn list_queues(
    s: State,
    _c: Caller,
    base: Base,
    Query(pq): Query<PageQuery>,
    Query(q): Query<SiteQuery>,
) -> ApiResult<Json<Page<QueueOut>>> {
    let paging = Paging::read(&pq, 100)?;
    let all = s.store.queues(q.site_id).await?;
    let results = paging.slice(&all).iter().map(|q| queue_out(&base, q)).collect();
    Ok(Json(paging.page(&base, all.len() as i64, results)?))
}

/// A queue.
#[utoipa::path(get, path = "/api/queues/{id}/", tag = "queues", params(("id" = i64, Path)),
    responses((status = 200, body = QueueOut), (status = 401, body = Detail), (status = 404, body = Detail)))]
async fn get_queue(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Json<QueueOut>> {
    let all = s.store.queues(None).await?;
    let q = all
        .iter()
        .find(|q| q.id == id)
        .ok_or_else(|| ApiError::not_found("queue"))?;
    Ok(Json(queue_out(&base, q)))
}
