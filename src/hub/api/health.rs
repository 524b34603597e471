//! `GET /api/health/` and `/api/sites/{id}/health/`: each site `ok` when
//! all its nodes are online, `warning` when some are offline, `critical`
//! when none is (or it has none); the hub `ok` while its broker
//! connection is up; the whole the worst of its parts. Health needs no
//! credentials, so a load balancer or monitor can ask.

use super::http::{ApiError, ApiResult, ApiState, Detail, Id, State};
use super::sites::{online, queue_node_online};
use crate::hub::store::iso;
use crate::hub::store::sites::{Node, Queue, Site};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(site_health))
}

/// Health levels, worst last.
const LEVELS: [&str; 3] = ["ok", "warning", "critical"];

fn worst(a: &'static str, b: &'static str) -> &'static str {
    let rank = |x| LEVELS.iter().position(|l| *l == x).unwrap_or(2);
    if rank(a) >= rank(b) { a } else { b }
}

/// A node's health.
#[derive(Serialize, ToSchema)]
pub struct NodeHealth {
    pub(crate) name: String,
    /// ok or critical.
    pub(crate) health: String,
    pub(crate) online: bool,
    pub(crate) has_default_queue: bool,
    pub(crate) last_heartbeat: Option<String>,
    pub(crate) worker_version: Option<String>,
    /// The last heartbeat in µs (for the web page's ages; not in the API).
    #[serde(skip)]
    pub(crate) last_heartbeat_us: Option<i64>,
}

/// A queue's health.
#[derive(Serialize, ToSchema)]
pub struct QueueHealth {
    pub(crate) name: String,
    /// ok while a node consuming it is online, else critical.
    pub(crate) health: String,
    pub(crate) online: bool,
    pub(crate) nodes_online: i64,
    pub(crate) last_heartbeat: Option<String>,
    /// The functions its nodes online consume (`worker`, `discovery`...):
    /// the broker queues `<site>.<queue>#<function>` whose depth the web
    /// page shows (not in the API).
    #[serde(skip)]
    pub(crate) functions: Vec<String>,
}

/// A site's health.
#[derive(Serialize, ToSchema)]
pub struct SiteHealth {
    pub(crate) site: String,
    /// ok, warning or critical.
    pub(crate) health: String,
    pub(crate) nodes: Vec<NodeHealth>,
    pub(crate) queues: Vec<QueueHealth>,
}

/// The hub's own health.
#[derive(Serialize, ToSchema)]
pub struct HubStatus {
    pub(crate) health: String,
    pub(crate) broker_connected: bool,
}

/// The installation's health.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// The worst of the hub's and the sites'.
    pub(crate) overall_health: String,
    pub(crate) hub_status: HubStatus,
    pub(crate) site_status: Vec<SiteHealth>,
}

fn site_status(s: &ApiState, site: &Site, nodes: &[Node], queues: &[Queue]) -> (SiteHealth, &'static str) {
    let mine: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.site.as_deref() == Some(site.name.as_str()))
        .collect();
    let gone: Vec<i64> = nodes.iter().filter(|n| n.offline).map(|n| n.id).collect();
    let up = mine.iter().filter(|n| online(s, n)).count();
    let health = match (up, mine.len()) {
        (_, 0) | (0, _) => "critical",
        (u, n) if u < n => "warning",
        _ => "ok",
    };
    let nodes = mine
        .iter()
        .map(|n| {
            let on = online(s, n);
            NodeHealth {
                name: n.name.clone(),
                health: if on { "ok" } else { "critical" }.into(),
                online: on,
                has_default_queue: n.has_default_queue,
                last_heartbeat: n.last_heartbeat.map(iso),
                worker_version: n.sw_ver.clone(),
                last_heartbeat_us: n.last_heartbeat,
            }
        })
        .collect();
    let queues = queues
        .iter()
        .filter(|q| q.site.0 == site.id)
        .map(|q| {
            // A node consumes while it beats on the queue, and until it
            // says goodbye (as `queue_nodes_online` of a job counts).
            let beating = |n: &&(i64, String, i64, Vec<String>)| queue_node_online(s, n.2);
            let consumers = q.nodes.iter().filter(beating).filter(|n| !gone.contains(&n.0)).count() as i64;
            // The broker queues of every node heard on it lately, gone or
            // not (the ones the metrics poll): a queue whose only consumer
            // left still shows its messages waiting.
            let mut functions: Vec<String> = q
                .nodes
                .iter()
                .filter(beating)
                .flat_map(|n| n.3.iter().cloned())
                .collect();
            functions.sort_unstable();
            functions.dedup();
            QueueHealth {
                functions,
                name: q.name.clone(),
                health: if consumers > 0 { "ok" } else { "critical" }.into(),
                online: consumers > 0,
                nodes_online: consumers,
                last_heartbeat: q.nodes.iter().map(|n| n.2).max().filter(|&t| t > 0).map(iso),
            }
        })
        .collect();
    (
        SiteHealth {
            site: site.name.clone(),
            health: health.into(),
            nodes,
            queues,
        },
        health,
    )
}

/// The health of the hub and every site: what `/api/health/` answers and
/// the web page's health page shows.
pub(crate) async fn report(s: &ApiState) -> ApiResult<Health> {
    let sites = s.store.sites().await?;
    let nodes = s.store.nodes(None).await?;
    let queues = s.store.queues(None).await?;
    let connected = *s.broker_up.borrow();
    let hub = if connected { "ok" } else { "critical" };
    let mut overall = hub;
    let mut site_status_list = Vec::new();
    for site in &sites {
        let (v, h) = site_status(s, site, &nodes, &queues);
        overall = worst(overall, h);
        site_status_list.push(v);
    }
    Ok(Health {
        overall_health: overall.into(),
        hub_status: HubStatus {
            health: hub.into(),
            broker_connected: connected,
        },
        site_status: site_status_list,
    })
}

/// The health of the hub and every site (no credentials needed).
#[utoipa::path(get, path = "/api/health/", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = Detail)))]
async fn health(s: State) -> ApiResult<Json<Health>> {
    Ok(Json(report(&s).await?))
}

/// One site's health (no credentials needed).
#[utoipa::path(get, path = "/api/sites/{id}/health/", tag = "health", security(()), params(("id" = i64, Path)),
    responses((status = 200, body = SiteHealth), (status = 404, body = Detail), (status = 503, body = Detail)))]
async fn site_health(s: State, Id(id): Id) -> ApiResult<Json<SiteHealth>> {
    let site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    let nodes = s.store.nodes(Some(id)).await?;
    let queues = s.store.queues(Some(id)).await?;
    Ok(Json(site_status(&s, &site, &nodes, &queues).0))
}
