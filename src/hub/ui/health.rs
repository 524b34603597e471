//! `/ui/health/`: the hub, then each site with its nodes (online, last
//! heartbeat, version) and queues (nodes online, and the depth and
//! consumers of its broker queues), then the task types, each with Pause
//! or Resume ([`super::tasktypes`]). The health itself is `/api/health/`'s
//! computation; the depths are the metrics' last poll of the broker.
//! Below, the stuck-work and failure roll-ups (`/api/rollups/work/`,
//! `/api/rollups/failures/` of the last day) as two tables.

use super::format::{Moment, count, moment, thousands};
use super::frame::{Layout, UiResult, page};
use super::session::Session;
use super::tasktypes::{TypeRow, type_rows};
use crate::hub::api::ApiState;
use crate::hub::api::health::{Health, report};
use crate::hub::store::now_us;
use crate::hub::store::rollups::{FailureFilter, FailureGroup, Oldest, WorkGroup};
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

/// A task that has waited or run longest, as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldestView {
    /// Its Celery id.
    pub task_id: String,
    /// Its job.
    pub job: i64,
    /// Its node, or `—`.
    pub node: String,
    /// Since when.
    pub since: Moment,
}

/// One row of the stuck-work table: a queue and task type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkView {
    /// `<site>.<queue>`.
    pub queue: String,
    /// The task name.
    pub tasktype: String,
    /// Waiting, with separators.
    pub pending: String,
    /// Running, with separators.
    pub started: String,
    /// The task waiting longest.
    pub longest_pending: Option<OldestView>,
    /// The task running longest.
    pub longest_running: Option<OldestView>,
}

/// One row of the failures table: an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureView {
    /// The error's code, or `—`.
    pub code: String,
    /// The message without paths.
    pub reason: String,
    /// `transient` or `permanent`.
    pub category: &'static str,
    /// Files, with separators.
    pub count: String,
    /// The first report.
    pub first: Option<Moment>,
    /// The last report.
    pub last: Option<Moment>,
    /// One of the files.
    pub sample_path: String,
    /// The jobs involved.
    pub jobs: Vec<i64>,
}

/// How far back the page's failure table looks.
const FAILURES_SINCE_US: i64 = 86_400 * 1_000_000;

/// The roll-ups as the page shows them, at `now`.
pub fn rollup_views(work: &[WorkGroup], failures: &[FailureGroup], now: i64) -> (Vec<WorkView>, Vec<FailureView>) {
    let oldest = |o: &Option<Oldest>| {
        o.as_ref().map(|o| OldestView {
            task_id: o.task_id.clone(),
            job: o.job,
            node: o.node.clone().unwrap_or_else(|| "—".into()),
            since: moment(o.since, now),
        })
    };
    let work = work
        .iter()
        .map(|g| WorkView {
            queue: format!("{}.{}", g.site, g.queue),
            tasktype: g.tasktype.clone(),
            pending: thousands(g.pending),
            started: thousands(g.started),
            longest_pending: oldest(&g.longest_pending),
            longest_running: oldest(&g.longest_running),
        })
        .collect();
    let failures = failures
        .iter()
        .map(|g| FailureView {
            code: g.code.clone().unwrap_or_else(|| "—".into()),
            reason: g.reason.clone(),
            category: g.category,
            count: thousands(g.count),
            first: g.first.map(|t| moment(t, now)),
            last: g.last.map(|t| moment(t, now)),
            sample_path: serde_json::from_str::<String>(&g.sample_path).unwrap_or_else(|_| g.sample_path.clone()),
            jobs: g.jobs.clone(),
        })
        .collect();
    (work, failures)
}

/// The health page.
#[derive(Template)]
#[template(path = "health.html")]
struct HealthPage {
    layout: Layout,
    health: HealthView,
    work: Vec<WorkView>,
    failures: Vec<FailureView>,
    tasktypes: Vec<TypeRow>,
}

async fn show(State(s): State<Arc<ApiState>>, Extension(session): Extension<Session>) -> UiResult<Response> {
    let h = report(&s).await?;
    let now = now_us();
    let work = s.store.work_rollup().await?;
    let failures = s
        .store
        .failure_rollup(FailureFilter {
            job: None,
            since: Some(now - FAILURES_SINCE_US),
        })
        .await?;
    let (work, failures) = rollup_views(&work, &failures, now);
    let broker = s.session.borrow().clone();
    let types = crate::hub::typectl::list(&s.store, &s.settings, broker.as_deref()).await?;
    page(
        StatusCode::OK,
        &HealthPage {
            layout: session.layout("health"),
            health: health_view(&h, now, |q| s.metrics.queue_depth(q)),
            work,
            failures,
            tasktypes: type_rows(&types, now),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::api::health::{HubStatus, NodeHealth, QueueHealth, SiteHealth};

    #[test]
    fn rollups_show_queues_ages_and_paths() {
        let work = [WorkGroup {
            site: "london".into(),
            queue: "default".into(),
            tasktype: "dynamo.tasks.migrate".into(),
            pending: 12_345,
            started: 1,
            longest_pending: None,
            longest_running: Some(Oldest {
                task_id: "t1".into(),
                job: 7,
                node: Some("ferry@gpfs01".into()),
                since: 10_000_000,
            }),
        }];
        let failures = [FailureGroup {
            code: None,
            reason: "checksum mismatch".into(),
            category: "permanent",
            count: 3,
            first: Some(10_000_000),
            last: None,
            sample_path: "\"/data/f1\"".into(),
            jobs: vec![7, 9],
        }];
        let (w, f) = rollup_views(&work, &failures, 70_000_000);
        assert_eq!(
            (w[0].queue.as_str(), w[0].pending.as_str()),
            ("london.default", "12,345")
        );
        let r = w[0].longest_running.as_ref().unwrap();
        assert_eq!((r.node.as_str(), r.since.age.as_str()), ("ferry@gpfs01", "1 min ago"));
        assert_eq!((f[0].code.as_str(), f[0].sample_path.as_str()), ("—", "/data/f1"));
        assert!(f[0].last.is_none());
    }

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
