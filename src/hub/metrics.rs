//! The hub's metrics at `/metrics` (OpenMetrics text): results filed by
//! state, orphans and rejects, ingest batch sizes, lag (commit time less
//! the result's `date_done`) and commit time, jobs by state, nodes online
//! by site, queue depth and consumers, HTTP latency by route. The gauges
//! read from the database are refreshed every few seconds.

use super::store::Store;
use super::store::results::{Finished, Ingested};
use crate::agent::broker::{Session, queue_counts};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

type Labels = Vec<(String, String)>;

/// Every metric the hub keeps.
pub struct HubMetrics {
    registry: Registry,
    /// Results filed, by task state.
    pub results: Family<Labels, Counter>,
    /// Results of a discovery's other execution (never counted).
    pub orphans: Counter,
    /// Results seen before (redeliveries).
    pub duplicates: Counter,
    /// Messages on the results queue that were not results.
    pub rejected: Counter,
    /// Results per ingest transaction.
    pub batch_size: Histogram,
    /// Seconds from a result's `date_done` to its commit.
    pub lag_seconds: Histogram,
    /// Seconds per ingest transaction.
    pub commit_seconds: Histogram,
    /// Jobs by state.
    pub jobs: Family<Labels, Gauge>,
    /// Nodes online by site.
    pub nodes_online: Family<Labels, Gauge>,
    /// Messages waiting per queue the hub knows.
    pub queue_messages: Family<Labels, Gauge>,
    /// Consumers per queue.
    pub queue_consumers: Family<Labels, Gauge>,
    /// HTTP request seconds by route.
    pub http: Family<Labels, Histogram>,
}

fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Default for HubMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferry_hub");
        let m = HubMetrics {
            results: Family::default(),
            orphans: Counter::default(),
            duplicates: Counter::default(),
            rejected: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            lag_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            jobs: Family::default(),
            nodes_online: Family::default(),
            queue_messages: Family::default(),
            queue_consumers: Family::default(),
            http: Family::new_with_constructor(http_histogram as fn() -> Histogram),
            registry: Registry::default(),
        };
        registry.register("results", "Results filed, by task state", m.results.clone());
        registry.register(
            "orphan_results",
            "Results of a parent's other execution",
            m.orphans.clone(),
        );
        registry.register("duplicate_results", "Results seen before", m.duplicates.clone());
        registry.register(
            "rejected_messages",
            "Messages on the results queue that were not results",
            m.rejected.clone(),
        );
        registry.register(
            "ingest_batch_size",
            "Results per ingest transaction",
            m.batch_size.clone(),
        );
        registry.register(
            "ingest_lag_seconds",
            "Seconds from date_done to commit",
            m.lag_seconds.clone(),
        );
        registry.register(
            "db_commit_seconds",
            "Seconds per ingest transaction",
            m.commit_seconds.clone(),
        );
        registry.register("jobs", "Jobs by state", m.jobs.clone());
        registry.register("nodes_online", "Nodes online by site", m.nodes_online.clone());
        registry.register("queue_messages", "Messages waiting per queue", m.queue_messages.clone());
        registry.register("queue_consumers", "Consumers per queue", m.queue_consumers.clone());
        registry.register("http_request_seconds", "HTTP request seconds by route", m.http.clone());
        HubMetrics { registry, ..m }
    }
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl HubMetrics {
    /// Counts what a batch did.
    pub fn record(&self, done: &Ingested, batch: &[Finished]) {
        for f in batch {
            self.results.get_or_create(&label("state", f.state)).inc();
        }
        self.orphans.inc_by(done.orphans);
        self.duplicates.inc_by(done.duplicates);
    }

    /// Times a request to `route`.
    pub fn http(&self, route: &str, seconds: f64) {
        self.http.get_or_create(&label("route", route)).observe(seconds);
    }

    /// Jobs in `state` at the last refresh (the `ferry_hub_jobs` gauge:
    /// the web page's counts by state, without counting 100,000 rows per
    /// page view).
    pub fn jobs_in(&self, state: &str) -> Option<i64> {
        self.jobs.get(&label("state", state)).map(|g| g.get())
    }

    /// Messages waiting in broker queue `queue` and its consumers, at the
    /// last poll (`ferry_hub_queue_messages`, `ferry_hub_queue_consumers`);
    /// `None` for a queue not polled (no node online consumes it, or no
    /// broker).
    pub fn queue_depth(&self, queue: &str) -> Option<(i64, i64)> {
        let l = label("queue", queue);
        let messages = self.queue_messages.get(&l)?.get();
        let consumers = self.queue_consumers.get(&l).map_or(0, |g| g.get());
        Some((messages, consumers))
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Reads the gauges from the database (and queue depths from the
    /// broker) every `every`, for as long as the runtime runs.
    pub async fn refresh(
        self: Arc<Self>,
        store: Store,
        configs: Arc<crate::hub::configs::Live>,
        every: Duration,
        sessions: watch::Receiver<Option<Arc<Session>>>,
    ) {
        loop {
            if let Ok(states) = store.job_counts().await {
                self.jobs.clear();
                for (st, n) in states {
                    self.jobs.get_or_create(&label("state", &st)).set(n);
                }
            }
            let limit = super::store::now_us() - configs.get().node_health_interval().as_micros() as i64;
            if let Ok(nodes) = store.nodes(None).await {
                self.nodes_online.clear();
                for n in nodes {
                    let on = !n.offline && n.last_heartbeat.is_some_and(|t| t > limit);
                    let g = self
                        .nodes_online
                        .get_or_create(&label("site", n.site.as_deref().unwrap_or("")));
                    if on {
                        g.inc();
                    }
                }
            }
            let session = sessions.borrow().clone();
            if let (Some(session), Ok(queues)) = (session, store.queues(None).await) {
                self.poll_queues(&session, &queues, limit).await;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Passive declares of the queues that nodes online say they consume
    /// (a queue nobody declared would make the broker close the channel,
    /// which lapin logs as an error).
    async fn poll_queues(&self, session: &Session, queues: &[super::store::sites::Queue], alive_since: i64) {
        let Ok(mut ch) = session.channel().await else { return };
        for q in queues {
            let mut functions: Vec<&str> = q
                .nodes
                .iter()
                .filter(|n| n.2 >= alive_since)
                .flat_map(|n| n.3.iter().map(String::as_str))
                .collect();
            functions.sort_unstable();
            functions.dedup();
            for f in functions {
                let name = format!("{}.{}#{f}", q.site.1, q.name);
                let Some(d) = queue_counts(&ch, &name).await else {
                    // Gone meanwhile: the broker closed the channel.
                    match session.channel().await {
                        Ok(c) => ch = c,
                        Err(_) => return,
                    }
                    continue;
                };
                self.queue_messages
                    .get_or_create(&label("queue", &name))
                    .set(d.messages as i64);
                self.queue_consumers
                    .get_or_create(&label("queue", &name))
                    .set(d.consumers as i64);
            }
        }
        let _ = ch.close(200, "polled".into()).await;
    }
}
