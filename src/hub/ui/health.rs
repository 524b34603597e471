//! `/ui/health/`: the hub, then each site with its nodes (online, last
//! heartbeat, version) and queues (nodes online, and the depth and
//! consumers of its broker queues), then the task types, each with Pause
//! or Resume ([`super::tasktypes`]). The health itself is `/api/health/`'s
//! computation; the depths are the metrics' last poll of the broker.

use super::format::{Moment, count, moment, thousands};
use super::frame::{Layout, UiResult, page};
use super::session::Session;
use super::tasktypes::{TypeRow, type_rows};
use crate::hub::api::ApiState;
use crate::hub::api::health::{Health, report};
use crate::hub::store::now_us;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/ui/health/", get(show))
}

/// A node as the page lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Online.
    pub online: bool,
    /// Its last heartbeat, if any.
    pub heartbeat: Option<Moment>,
    /// Its agent's version.
    pub version: String,
    /// It consumes the site's default queue.
    pub default_queue: bool,
}

/// One broker queue of a hub queue (`<site>.<queue>#<function>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerQueue {
    /// `worker`, `discovery`...
    pub function: String,
    /// The broker queue's name.
    pub name: String,
    /// Messages waiting, with separators, or `unknown`.
    pub messages: String,
    /// Consumers, or `unknown`.
    pub consumers: String,
    /// Messages wait and nothing consumes them.
    pub stuck: bool,
}

/// A queue as the page lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// A node consuming it is online.
    pub online: bool,
    /// Nodes online consuming it.
    pub nodes_online: String,
    /// The newest heartbeat of its nodes.
    pub heartbeat: Option<Moment>,
    /// Its broker queues.
    pub broker: Vec<BrokerQueue>,
}

/// A site as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteView {
    /// Its name.
    pub name: String,
    /// `ok`, `warning`, `critical`.
    pub health: String,
    /// Its nodes.
    pub nodes: Vec<NodeView>,
    /// Its queues.
    pub queues: Vec<QueueView>,
}

/// The page's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthView {
    /// The worst of all.
    pub overall: String,
    /// The hub's.
    pub hub: String,
    /// Its broker connection is up.
    pub broker_connected: bool,
    /// Every site.
    pub sites: Vec<SiteView>,
}

/// The health report as the page shows it, at `now`, with `depth` the
/// last known (messages, consumers) of a broker queue.
pub fn health_view(h: &Health, now: i64, depth: impl Fn(&str) -> Option<(i64, i64)>) -> HealthView {
    HealthView {
        overall: h.overall_health.clone(),
        hub: h.hub_status.health.clone(),
        broker_connected: h.hub_status.broker_connected,
        sites: h
            .site_status
            .iter()
            .map(|s| SiteView {
                name: s.site.clone(),
                health: s.health.clone(),
                nodes: s
                    .nodes
                    .iter()
                    .map(|n| NodeView {
                        name: n.name.clone(),
                        online: n.online,
                        heartbeat: n.last_heartbeat_us.map(|t| moment(t, now)),
                        version: n.worker_version.clone().unwrap_or_else(|| "unknown".into()),
                        default_queue: n.has_default_queue,
                    })
                    .collect(),
                queues: s
                    .queues
                    .iter()
                    .map(|q| QueueView {
                        name: q.name.clone(),
                        online: q.online,
                        nodes_online: thousands(q.nodes_online),
                        heartbeat: q
                            .last_heartbeat
                            .as_deref()
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .map(|t| moment(t.as_microsecond(), now)),
                        broker: q
                            .functions
                            .iter()
                            .map(|f| {
                                let name = format!("{}.{}#{f}", s.site, q.name);
                                let d = depth(&name);
                                BrokerQueue {
                                    function: f.clone(),
                                    messages: d
                                        .map_or_else(|| "unknown".into(), |d| format!("{} waiting", thousands(d.0))),
                                    consumers: d.map_or_else(
                                        || "consumers unknown".into(),
                                        |d| count(d.1, "consumer", "consumers"),
                                    ),
                                    stuck: d.is_some_and(|d| d.0 > 0 && d.1 == 0),
                                    name,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The health page.
#[derive(Template)]
#[template(path = "health.html")]
struct HealthPage {
    layout: Layout,
    health: HealthView,
    tasktypes: Vec<TypeRow>,
}

async fn show(State(s): State<Arc<ApiState>>, Extension(session): Extension<Session>) -> UiResult<Response> {
    let h = report(&s).await?;
    let broker = s.session.borrow().clone();
    let types = crate::hub::typectl::list(&s.store, &s.settings, broker.as_deref()).await?;
    page(
        StatusCode::OK,
        &HealthPage {
            layout: session.layout("health"),
            health: health_view(&h, now_us(), |q| s.metrics.queue_depth(q)),
            tasktypes: type_rows(&types, now_us()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::api::health::{HubStatus, NodeHealth, QueueHealth, SiteHealth};

    #[test]
    fn nodes_and_queues_with_ages_and_depths() {
        let h = Health {
            overall_health: "warning".into(),
            hub_status: HubStatus {
                health: "ok".into(),
                broker_connected: true,
            },
            site_status: vec![SiteHealth {
                site: "london".into(),
                health: "warning".into(),
                nodes: vec![NodeHealth {
                    name: "ferry@gpfs01".into(),
                    health: "ok".into(),
                    online: true,
                    has_default_queue: true,
                    last_heartbeat: Some("1970-01-01T00:00:10Z".into()),
                    worker_version: None,
                    last_heartbeat_us: Some(10_000_000),
                }],
                queues: vec![QueueHealth {
                    name: "default".into(),
                    health: "ok".into(),
                    online: true,
                    nodes_online: 1,
                    last_heartbeat: Some("1970-01-01T00:00:10Z".into()),
                    functions: vec!["discovery".into(), "worker".into()],
                }],
            }],
        };
        let v = health_view(&h, 70_000_000, |q| match q {
            "london.default#worker" => Some((12_345, 1)),
            "london.default#discovery" => Some((3, 0)),
            _ => None,
        });
        let site = &v.sites[0];
        assert_eq!(site.nodes[0].heartbeat.as_ref().unwrap().age, "1 min ago");
        assert_eq!(site.nodes[0].version, "unknown");
        assert_eq!(site.queues[0].heartbeat.as_ref().unwrap().iso, "1970-01-01T00:00:10Z");
        let b = &site.queues[0].broker;
        assert_eq!(
            (b[0].name.as_str(), b[0].messages.as_str()),
            ("london.default#discovery", "3 waiting")
        );
        assert!(b[0].stuck, "messages wait, no consumer");
        assert_eq!(
            (b[1].messages.as_str(), b[1].consumers.as_str()),
            ("12,345 waiting", "1 consumer")
        );
        assert!(!b[1].stuck);
        let unknown = health_view(&h, 70_000_000, |_| None);
        let b = &unknown.sites[0].queues[0].broker[0];
        assert_eq!((b.messages.as_str(), b.stuck), ("unknown", false));
    }
}
