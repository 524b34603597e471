//! `GET /api/health/` and `/api/sites/{id}/health/`: each site `ok` when
//! all its nodes are online, `warning` when some are offline, `critical`
//! when none is (or it has none); the hub `ok` while its broker
//! connection is up; the whole the worst of its parts. Health needs no
//! credentials, so a load balancer or monitor can ask.

use super::sites::{online, queue_node_online};
use super::{ApiError, ApiResult, ApiState, Id, State, json};
use crate::hub::store::iso;
use crate::hub::store::sites::{Node, Queue, Site};
use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/health/", get(health))
        .route("/api/sites/{id}/health/", get(site_health))
}

/// Health levels, worst last.
const LEVELS: [&str; 3] = ["ok", "warning", "critical"];

fn worst(a: &'static str, b: &'static str) -> &'static str {
    let rank = |x| LEVELS.iter().position(|l| *l == x).unwrap_or(2);
    if rank(a) >= rank(b) { a } else { b }
}

fn site_status(s: &ApiState, site: &Site, nodes: &[Node], queues: &[Queue]) -> (Value, &'static str) {
    let mine: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.site.as_deref() == Some(site.name.as_str()))
        .collect();
    let up = mine.iter().filter(|n| online(s, n)).count();
    let health = match (up, mine.len()) {
        (_, 0) | (0, _) => "critical",
        (u, n) if u < n => "warning",
        _ => "ok",
    };
    let nodes_json: Vec<Value> = mine
        .iter()
        .map(|n| {
            let on = online(s, n);
            json!({
                "name": n.name,
                "health": if on { "ok" } else { "critical" },
                "online": on,
                "has_default_queue": n.has_default_queue,
                "last_heartbeat": n.last_heartbeat.map(iso),
                "worker_version": n.sw_ver,
            })
        })
        .collect();
    let queues_json: Vec<Value> = queues
        .iter()
        .filter(|q| q.site.0 == site.id)
        .map(|q| {
            let consumers = q.nodes.iter().filter(|n| queue_node_online(s, n.2)).count();
            json!({
                "name": q.name,
                "health": if consumers > 0 { "ok" } else { "critical" },
                "online": consumers > 0,
                "nodes_online": consumers,
                "last_heartbeat": q.nodes.iter().map(|n| n.2).max().filter(|&t| t > 0).map(iso),
            })
        })
        .collect();
    (
        json!({"site": site.name, "health": health, "nodes": nodes_json, "queues": queues_json}),
        health,
    )
}

async fn health(s: State) -> ApiResult<Response> {
    let sites = s.store.sites().await?;
    let nodes = s.store.nodes(None).await?;
    let queues = s.store.queues(None).await?;
    let hub = if *s.broker_up.borrow() { "ok" } else { "critical" };
    let mut overall = hub;
    let mut statuses = Vec::new();
    for site in &sites {
        let (v, h) = site_status(&s, site, &nodes, &queues);
        overall = worst(overall, h);
        statuses.push(v);
    }
    Ok(json(
        StatusCode::OK,
        json!({
            "overall_health": overall,
            "hub_status": {"health": hub, "broker_connected": *s.broker_up.borrow()},
            "site_status": statuses,
        }),
    ))
}

async fn site_health(s: State, Id(id): Id) -> ApiResult<Response> {
    let site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    let nodes = s.store.nodes(Some(id)).await?;
    let queues = s.store.queues(Some(id)).await?;
    let (v, _) = site_status(&s, &site, &nodes, &queues);
    Ok(json(StatusCode::OK, v))
}
