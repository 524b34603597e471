//! Alerts the hub raises from what it knows (the seed's `SiteHealth` and
//! `WorkerHealth`, and ferry's `QueueNoConsumer`, `DeadLetter`,
//! `TaskStuck`), evaluated every [`EVERY`] and kept in the database while
//! they hold (`GET /api/alerts/`).
//!
//! The seed's hub pulls alerts from its workers (`dynamo.tasks.get_alerts`
//! every minute, seed-hub §7.2); ferry's agents have nothing to report
//! that the hub does not already know from heartbeats, the broker and the
//! task records, so the hub derives them itself, within seconds.

use crate::agent::broker::Session;
use crate::config::HubSettings;
use crate::hub::configs::Live;
use crate::hub::store::alerts::Raised;
use crate::hub::store::{Store, StoreError, iso, now_us};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often alerts are evaluated: a queue that loses its last consumer is
/// alerted within this and one broker poll.
pub const EVERY: Duration = Duration::from_secs(10);

/// A task running longer than this raises `TaskStuck` for its job.
pub const STUCK_AFTER: Duration = Duration::from_secs(3600);

fn raised(
    name: &str,
    site: Option<&str>,
    node: Option<&str>,
    queue: Option<&str>,
    severity: &str,
    summary: String,
) -> Raised {
    Raised {
        name: name.into(),
        site: site.map(str::to_string),
        node: node.map(str::to_string),
        queue: queue.map(str::to_string),
        severity: severity.into(),
        summary,
    }
}

/// Messages and consumers of queue `name` (declared first as Celery and
/// the agents declare it, so asking never fails for a queue not there
/// yet); `None`, with a warning, when the broker cannot say.
async fn counts(session: &Session, name: &str) -> Option<(u32, u32)> {
    let asked = async {
        session.declare_queue(name).await?;
        session.counts_of(name).await
    };
    match asked.await {
        Ok(Some(q)) => Some((q.messages, q.consumers)),
        Ok(None) => {
            warn!(queue = %name, "cannot count a queue: the broker closed the channel");
            None
        }
        Err(e) => {
            warn!(queue = %name, error = %e, "cannot count a queue");
            None
        }
    }
}

/// Every alert that holds now. Broker checks are left out while there is
/// no broker `session` (the hub's own health says so).
pub async fn evaluate(
    store: &Store,
    settings: &HubSettings,
    configs: &Live,
    session: Option<&Session>,
) -> Result<Vec<Raised>, StoreError> {
    let now = now_us();
    let alive_since = now - configs.get().node_health_interval().as_micros() as i64;
    let mut out = Vec::new();
    let nodes = store.nodes(None).await?;
    for site in store.sites().await? {
        let of: Vec<_> = nodes.iter().filter(|n| n.site.as_deref() == Some(&site.name)).collect();
        let online =
            |n: &&crate::hub::store::sites::Node| !n.offline && n.last_heartbeat.is_some_and(|t| t > alive_since);
        if of.is_empty() {
            out.push(raised(
                "SiteHealth",
                Some(&site.name),
                None,
                None,
                "INFO",
                "No workers are joined".into(),
            ));
            continue;
        }
        if !of.iter().any(online) {
            out.push(raised(
                "SiteHealth",
                Some(&site.name),
                None,
                None,
                "CRITICAL",
                "All workers are offline".into(),
            ));
        }
        for n in of.iter().filter(|n| !online(n)) {
            let since = n.last_heartbeat.map(iso).unwrap_or_else(|| "never".into());
            out.push(raised(
                "WorkerHealth",
                Some(&site.name),
                Some(&n.name),
                None,
                "CRITICAL",
                format!("Worker on {} is offline (last heartbeat {since})", n.name),
            ));
        }
    }
    if let Some(session) = session {
        for q in store.queues(None).await? {
            let mut functions: Vec<&str> = q.nodes.iter().flat_map(|n| n.3.iter().map(String::as_str)).collect();
            functions.sort_unstable();
            functions.dedup();
            let mut idle = Vec::new();
            for f in functions {
                let name = format!("{}.{}#{f}", q.site.1, q.name);
                if let Some((messages, 0)) = counts(session, &name).await {
                    idle.push(format!("{name} ({messages} waiting)"));
                }
            }
            if !idle.is_empty() {
                out.push(raised(
                    "QueueNoConsumer",
                    Some(&q.site.1),
                    None,
                    Some(&q.name),
                    "WARNING",
                    format!("No agent consumes {}: their tasks wait", idle.join(", ")),
                ));
            }
        }
        let mut dead: Vec<(Option<String>, String)> = store
            .sites()
            .await?
            .into_iter()
            .map(|s| (Some(s.name.clone()), format!("{}.dead-letter", s.name)))
            .collect();
        dead.push((None, settings.rejected_queue()));
        for (site, name) in dead {
            if let Some((n, _)) = counts(session, &name).await.filter(|c| c.0 > 0) {
                out.push(raised(
                    "DeadLetter",
                    site.as_deref(),
                    None,
                    Some(&name),
                    "WARNING",
                    format!("{n} messages set aside in {name}: read their x-ferry-reason header"),
                ));
            }
        }
    }
    for (job, n, task, node, started) in store.stuck_tasks(now - STUCK_AFTER.as_micros() as i64).await? {
        out.push(raised(
            "TaskStuck",
            None,
            node.as_deref(),
            None,
            "WARNING",
            format!(
                "Job {job}: {n} task(s) running for more than {} min; the oldest, {task}, since {}",
                STUCK_AFTER.as_secs() / 60,
                iso(started)
            ),
        ));
    }
    Ok(out)
}

/// Evaluates the alerts every [`EVERY`] and keeps the database's in step.
pub async fn run(
    store: Store,
    settings: HubSettings,
    configs: Arc<Live>,
    sessions: watch::Receiver<Option<Arc<Session>>>,
) {
    loop {
        tokio::time::sleep(EVERY).await;
        let session = sessions.borrow().clone();
        let now = match evaluate(&store, &settings, &configs, session.as_deref()).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "cannot evaluate alerts");
                continue;
            }
        };
        match store.sync_alerts(&now).await {
            Ok(new) => {
                for a in new {
                    info!(name = %a.name, severity = %a.severity, site = ?a.site, node = ?a.node, queue = ?a.queue, summary = %a.summary, "alert raised");
                }
            }
            Err(e) => warn!(error = %e, "cannot record alerts"),
        }
    }
}
