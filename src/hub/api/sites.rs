//! `/api/sites/`, `/api/nodes/`, `/api/queues/`.

use super::{ApiError, ApiResult, ApiState, Base, Body, Caller, Id, Paging, Params, State, json};
use crate::config::valid_name;
use crate::hub::store::sites::{Node, Queue, Site};
use crate::hub::store::{iso, now_us};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/sites/", get(list_sites).post(create_site))
        .route("/api/sites/{id}/", get(get_site).patch(patch_site).delete(delete_site))
        .route("/api/nodes/", get(list_nodes))
        .route("/api/nodes/{id}/", get(get_node).delete(delete_node))
        .route("/api/queues/", get(list_queues))
        .route("/api/queues/{id}/", get(get_queue))
}

/// A site as listed; `settings` adds what only `/sites/{id}/` shows.
pub fn site_json(base: &Base, s: &Site, settings: bool) -> Value {
    let mut v = json!({
        "url": base.url(&format!("/api/sites/{}/", s.id)),
        "id": s.id,
        "name": s.name,
        "label": s.label,
        "shortcode": s.shortcode,
        "type": s.kind,
        "timezone": s.timezone,
        "public_url": s.public_url,
        "color": s.color,
        "bandwidth": s.bandwidth,
        "editable": true,
        "spaces": [],
        "files_count": null,
        "directories_count": null,
        "files_stubbed_count": null,
        "files_hydrated_count": null,
        "am_i_configured": null,
        "ready_to_configure": null,
    });
    if settings {
        let m = v.as_object_mut().expect("object");
        m.insert("file_batch_size".into(), s.file_batch_size.into());
        m.insert("file_batch_gb".into(), s.file_batch_gb.into());
        m.insert(
            "enable_auto_file_batch_sizing".into(),
            s.enable_auto_file_batch_sizing.into(),
        );
        m.insert("include".into(), json!(s.include));
        m.insert("exclude".into(), json!(s.exclude));
        m.insert("lock_threshold".into(), s.lock_threshold.into());
        m.insert("gpfs_iscan_buckets".into(), json!(s.gpfs_iscan_buckets));
        m.insert("gpfs_iscan_threads".into(), json!(s.gpfs_iscan_threads));
    }
    v
}

/// The writable fields of a site; all optional (a POST needs `name` and
/// `shortcode`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SiteFields {
    name: Option<String>,
    label: Option<String>,
    shortcode: Option<String>,
    #[serde(rename = "type")]
    kind: Option<Option<String>>,
    timezone: Option<Option<String>>,
    public_url: Option<Option<String>>,
    color: Option<Vec<String>>,
    bandwidth: Option<Option<i64>>,
    file_batch_size: Option<i64>,
    file_batch_gb: Option<f64>,
    enable_auto_file_batch_sizing: Option<bool>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    lock_threshold: Option<i64>,
    gpfs_iscan_buckets: Option<Option<i64>>,
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
            s.color = json!(v);
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

async fn list_sites(s: State, _c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let all = s.store.sites().await?;
    let results = paging.slice(&all).iter().map(|x| site_json(&base, x, false)).collect();
    Ok(json(
        StatusCode::OK,
        paging.envelope(&base, all.len() as i64, results)?.into(),
    ))
}

async fn create_site(s: State, _c: Caller, base: Base, Body(f): Body<SiteFields>) -> ApiResult<Response> {
    let name = f
        .name
        .clone()
        .ok_or_else(|| ApiError::bad("name: This field is required."))?;
    valid_name(&name).map_err(|e| ApiError::bad(format!("name: {e}")))?;
    if f.shortcode.is_none() {
        return Err(ApiError::bad("shortcode: This field is required."));
    }
    let mut site = Site::named(&name);
    f.apply(&mut site)?;
    let id = s.store.create_site(&site).await?;
    let site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    Ok(json(StatusCode::CREATED, site_json(&base, &site, true)))
}

async fn get_site(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    Ok(json(StatusCode::OK, site_json(&base, &site, true)))
}

async fn patch_site(s: State, _c: Caller, base: Base, Id(id): Id, Body(f): Body<SiteFields>) -> ApiResult<Response> {
    let mut site = s.store.site(id).await?.ok_or_else(|| ApiError::not_found("site"))?;
    if f.name.as_ref().is_some_and(|n| *n != site.name) {
        return Err(ApiError::bad(
            "name: a site's name is part of its queue names and cannot change",
        ));
    }
    f.apply(&mut site)?;
    s.store.update_site(&site).await?;
    Ok(json(StatusCode::OK, site_json(&base, &site, true)))
}

async fn delete_site(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    if !s.store.delete_site(id).await? {
        return Err(ApiError::not_found("site"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether a node is online now.
pub fn online(s: &ApiState, n: &Node) -> bool {
    let limit = s.settings.node_health_interval.as_micros() as i64;
    !n.offline && n.last_heartbeat.is_some_and(|t| now_us() - t < limit)
}

fn node_json(s: &ApiState, base: &Base, n: &Node) -> Value {
    json!({
        "url": base.url(&format!("/api/nodes/{}/", n.id)),
        "id": n.id,
        "name": n.name,
        "site": n.site,
        "online": online(s, n),
        "has_default_queue": n.has_default_queue,
        "last_heartbeat": n.last_heartbeat.map(iso),
    })
}

async fn list_nodes(s: State, _c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let all = s.store.nodes(p.int("site_id")?).await?;
    let results = paging.slice(&all).iter().map(|n| node_json(&s, &base, n)).collect();
    Ok(json(
        StatusCode::OK,
        paging.envelope(&base, all.len() as i64, results)?.into(),
    ))
}

async fn get_node(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let all = s.store.nodes(None).await?;
    let n = all
        .iter()
        .find(|n| n.id == id)
        .ok_or_else(|| ApiError::not_found("node"))?;
    Ok(json(StatusCode::OK, node_json(&s, &base, n)))
}

async fn delete_node(s: State, _c: Caller, Id(id): Id) -> ApiResult<Response> {
    if !s.store.delete_node(id).await? {
        return Err(ApiError::not_found("node"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether a node heart-beat on a queue recently enough to be online.
pub fn queue_node_online(s: &ApiState, last: i64) -> bool {
    now_us() - last < s.settings.node_health_interval.as_micros() as i64
}

fn queue_json(base: &Base, q: &Queue) -> Value {
    json!({
        "url": base.url(&format!("/api/queues/{}/", q.id)),
        "id": q.id,
        "site": {"id": q.site.0, "name": q.site.1, "label": q.site.2},
        "nodes": q.nodes.iter().map(|n| json!({"id": n.0, "name": n.1})).collect::<Vec<_>>(),
        "name": q.name,
        "label": q.label,
        "last_heartbeat": q.nodes.iter().map(|n| n.2).max().filter(|&t| t > 0).map(iso),
    })
}

async fn list_queues(s: State, _c: Caller, base: Base, p: Params) -> ApiResult<Response> {
    let paging = Paging::read(&p, 100)?;
    let all = s.store.queues(p.int("site_id")?).await?;
    let results = paging.slice(&all).iter().map(|q| queue_json(&base, q)).collect();
    Ok(json(
        StatusCode::OK,
        paging.envelope(&base, all.len() as i64, results)?.into(),
    ))
}

async fn get_queue(s: State, _c: Caller, base: Base, Id(id): Id) -> ApiResult<Response> {
    let all = s.store.queues(None).await?;
    let q = all
        .iter()
        .find(|q| q.id == id)
        .ok_or_else(|| ApiError::not_found("queue"))?;
    Ok(json(StatusCode::OK, queue_json(&base, q)))
}
