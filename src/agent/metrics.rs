//! The agent's metrics, for heartbeats and for Prometheus: the counters,
//! the HTTP server that shows them, and the poller of queue depths.
//!
//! `metrics_listen = 127.0.0.1:9464` in `[settings]` serves them at
//! `/metrics` (OpenMetrics text) and a one-line JSON health summary at
//! `/health`. Names and meanings are listed in docs/agent.md.

use super::broker::{Session, queue_counts};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::error;

type Labels = Vec<(String, String)>;

/// Every metric the agent keeps.
pub struct Metrics {
    registry: Registry,
    /// Tasks finished, by outcome (`succeeded`, `failed`, `rejected`, `revoked`).
    pub tasks: Family<Labels, Counter>,
    /// Tasks running now.
    pub active: Gauge,
    /// Child tasks published by discovery and chains.
    pub children: Counter,
    /// Paths handled by file operations (any per-file state).
    pub paths: Counter,
    /// Bytes of file data moved by file operations.
    pub bytes: Counter,
    /// Broker sessions lost.
    pub reconnects: Counter,
    /// Messages waiting in each consumed queue (polled).
    pub queue_messages: Family<Labels, Gauge>,
    /// Seconds from a delivery's arrival to its task's start.
    pub queue_wait: Histogram,
    /// Whether a broker session is up.
    pub connected: AtomicBool,
    seen_ops: Mutex<(u64, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferry_agent");
        let m = Metrics {
            tasks: Family::default(),
            active: Gauge::default(),
            children: Counter::default(),
            paths: Counter::default(),
            bytes: Counter::default(),
            reconnects: Counter::default(),
            queue_messages: Family::default(),
            queue_wait: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            connected: AtomicBool::new(false),
            seen_ops: Mutex::new((0, 0)),
            registry: Registry::default(),
        };
        registry.register("tasks", "Tasks finished, by outcome", m.tasks.clone());
        registry.register("active_tasks", "Tasks running now", m.active.clone());
        registry.register("children", "Child tasks published", m.children.clone());
        registry.register("paths", "Paths handled by file operations", m.paths.clone());
        registry.register("bytes", "Bytes of file data moved by file operations", m.bytes.clone());
        registry.register("broker_reconnects", "Broker sessions lost", m.reconnects.clone());
        registry.register(
            "queue_messages",
            "Messages waiting in each consumed queue",
            m.queue_messages.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Seconds from a delivery's arrival to its task's start",
            m.queue_wait.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a finished task with `outcome`.
    pub fn finished(&self, outcome: &str) {
        self.tasks
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Tasks finished so far, of any outcome.
    pub fn processed(&self) -> u64 {
        ["succeeded", "failed", "rejected", "revoked"]
            .iter()
            .map(|o| self.tasks.get_or_create(&vec![("outcome".into(), (*o).into())]).get())
            .sum()
    }

    /// Brings the file-operation counters up to the operations' totals.
    pub fn sync_ops(&self, files: u64, bytes: u64) {
        let mut seen = self.seen_ops.lock().expect("seen");
        self.paths.inc_by(files.saturating_sub(seen.0));
        self.bytes.inc_by(bytes.saturating_sub(seen.1));
        *seen = (files.max(seen.0), bytes.max(seen.1));
    }

    /// The metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// A one-line JSON health summary.
    pub fn health(&self) -> String {
        serde_json::json!({
            "connected": self.connected.load(Relaxed),
            "active": self.active.get(),
            "processed": self.processed(),
            "reconnects": self.reconnects.get(),
        })
        .to_string()
    }
}

/// Serves `/metrics` and `/health` on `listener` until the runtime ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use axum::routing::get;
    let m2 = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let m = m2.clone();
                async move { ([("content-type", "application/json")], m.health()) }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        error!(error = %e, "the metrics server stopped");
    }
}

/// Polls how many messages wait in each of `queues`, every 10 s, while a
/// session is up.
pub async fn poll_queue_depths(
    queues: Vec<String>,
    metrics: Arc<Metrics>,
    mut sessions: watch::Receiver<Option<Arc<Session>>>,
) {
    loop {
        let session = sessions.borrow_and_update().clone();
        // The queues exist once the consumers are up (`connected`); a
        // passive declare of a missing queue would close the channel.
        while session.as_ref().is_some_and(|s| s.alive()) && !metrics.connected.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(session) = session
            && let Ok(ch) = session.channel().await
        {
            'poll: while session.alive() {
                for queue in &queues {
                    let Some(q) = queue_counts(&ch, queue).await else {
                        break 'poll;
                    };
                    let labels = vec![("queue".to_string(), queue.clone())];
                    metrics.queue_messages.get_or_create(&labels).set(q.messages as i64);
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
        if sessions.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let m = Metrics::default();
        m.finished("succeeded");
        m.sync_ops(10, 1000);
        m.sync_ops(15, 1500);
        m.queue_messages
            .get_or_create(&vec![("queue".into(), "s.default#worker".into())])
            .set(3);
        let text = m.render();
        for line in [
            "ferry_agent_tasks_total{outcome=\"succeeded\"} 1",
            "ferry_agent_paths_total 15",
            "ferry_agent_bytes_total 1500",
            "ferry_agent_queue_messages{queue=\"s.default#worker\"} 3",
            "ferry_agent_queue_wait_seconds_count 0",
            "ferry_agent_broker_reconnects_total 0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert_eq!(m.processed(), 1);
    }
}
