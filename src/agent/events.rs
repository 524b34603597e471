//! Celery's monitoring events on the `celeryev` exchange: the worker's
//! `worker-online`, `worker-heartbeat` and `worker-offline`, and each
//! task's `task-received`, `task-started`, `task-succeeded`,
//! `task-failed` and `task-revoked`, with Celery's fields (hostname, timestamp, utcoffset,
//! pid, a Lamport clock), so Flower or a hub can follow the agent.
//!
//! Events are transient by Celery's design: no confirmation is awaited,
//! and an event that cannot be sent is only logged.

use super::broker::{self, EVENT_EXCHANGE, Session};
use super::metrics::Metrics;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::watch;
use tracing::debug;

/// Who sends the events, and their clock.
#[derive(Debug)]
pub struct Events {
    node: String,
    /// Send `task-*` events (`task_events`); worker events always go.
    task_events: bool,
    clock: AtomicU64,
}

impl Events {
    /// Events of `node`; task events only when `task_events`.
    pub fn new(node: &str, task_events: bool) -> Events {
        Events {
            node: node.to_string(),
            task_events,
            clock: AtomicU64::new(0),
        }
    }

    /// Sends a worker event of `kind` with `fields` (a JSON object).
    pub async fn worker(&self, session: &Session, kind: &str, fields: Value) {
        self.send(session, kind, fields).await;
    }

    /// Sends a task event of `kind`, if task events are on.
    pub async fn task(&self, session: &Session, kind: &str, fields: Value) {
        if self.task_events {
            self.send(session, kind, fields).await;
        }
    }

    async fn send(&self, session: &Session, kind: &str, mut fields: Value) {
        let now = jiff::Timestamp::now();
        let f = fields.as_object_mut().expect("event fields are an object");
        f.insert("type".into(), kind.into());
        f.insert("hostname".into(), self.node.clone().into());
        f.insert("timestamp".into(), (now.as_millisecond() as f64 / 1000.0).into());
        f.insert("utcoffset".into(), 0.into());
        f.insert("pid".into(), std::process::id().into());
        f.insert("clock".into(), (self.clock.fetch_add(1, Relaxed) + 1).into());
        let body = fields.to_string();
        let key = kind.replace('-', ".");
        if let Err(e) = session
            .publish(
                EVENT_EXCHANGE,
                &key,
                body.as_bytes(),
                broker::event_properties(&self.node),
            )
            .await
        {
            debug!(error = %e, event = kind, "cannot send an event");
        }
    }
}

/// What a node says about itself in every heartbeat, beside Celery's
/// fields: the queues it consumes, its site, and what it can do (the tasks
/// it runs, the functions it serves, its endpoints, the control messages
/// it obeys), so a hub learns its nodes from heartbeats alone.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    /// The queues consumed.
    pub queues: Vec<String>,
    /// The site.
    pub site: String,
    /// `{"tasks": [...], "functions": [...], "endpoints": [...],
    /// "control": [...]}`.
    pub capabilities: serde_json::Value,
}

/// Sends `worker-heartbeat` every `interval` while a session is up, with
/// Celery's fields and the agent's counts.
pub async fn heartbeats(
    events: Arc<Events>,
    interval: Duration,
    node: NodeFacts,
    metrics: Arc<Metrics>,
    sessions: watch::Receiver<Option<Arc<Session>>>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(session) = sessions.borrow().clone() else {
            continue;
        };
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let loadavg: Vec<f64> = load.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
        let fields = serde_json::json!({
            "freq": interval.as_secs_f64(),
            "sw_ident": "ferry",
            "sw_ver": env!("CARGO_PKG_VERSION"),
            "sw_sys": "Linux",
            "active": metrics.active.get(),
            "processed": metrics.processed(),
            "loadavg": loadavg,
            "queues": node.queues,
            "site": node.site,
            "capabilities": node.capabilities,
        });
        events.worker(&session, "worker-heartbeat", fields).await;
    }
}
