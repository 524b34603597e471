//! Nodes from their heartbeats, and tasks as nodes start them: the
//! consumer of Celery's event exchange.
//!
//! Heartbeats are kept in memory and written every [`FLUSH`] in one
//! transaction, so a thousand agents beating every two seconds cost one
//! statement batch a second, not five hundred. A node whose last
//! heartbeat is older than `node_health_last_heartbeat_interval`, or that
//! said `worker-offline`, is offline: its STARTED tasks are set back to
//! PENDING, since the broker gives their unacknowledged messages to
//! another node. Events are hints (Celery sends them without
//! confirmation); results alone decide a job's counts.

use super::configs::Live;
use super::store::Store;
use super::store::now_us;
use super::store::results::Started;
use super::store::sites::Beat;
use crate::agent::broker::{EVENT_EXCHANGE, Session};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// How often heartbeats and starts are written, and liveness checked.
pub const FLUSH: Duration = Duration::from_secs(1);

/// Longest a node's row goes without its `last_heartbeat` written again
/// while nothing else about it changes (a quarter of the health interval
/// when that is shorter). Liveness is judged from what the monitor heard,
/// in memory; the row is what the API and the web page read. Writing
/// every heartbeat of 1,000 nodes cost the hub 13 % of a core and
/// PostgreSQL as much again (docs/benchmarks.md, "Hub API at scale").
pub const REFRESH: Duration = Duration::from_secs(10);

/// Deliveries acknowledged together (`multiple`), or after [`ACK_AFTER`]
/// without another: events are hints, and one ack per event was a
/// measurable share of the monitor's cost.
const ACK_EVERY: u32 = 100;

/// Longest an event waits for its acknowledgement.
const ACK_AFTER: Duration = Duration::from_millis(200);

/// Most events the queue holds while the hub is away (the oldest are
/// dropped: they are hints, and stale ones mislead).
pub const EVENTS_MAX: i64 = 100_000;

/// What the monitor has heard and not yet written.
#[derive(Default)]
pub struct Heard {
    beats: HashMap<String, Beat>,
    started: Vec<Started>,
    /// Nodes by last heartbeat (µs), and whether they are taken for gone.
    seen: HashMap<String, (i64, bool)>,
    /// The site and queues each node last named: `worker-online` and
    /// `worker-offline` carry none, and the heartbeat that did may have
    /// been written (and forgotten from `beats`) already.
    named: HashMap<String, (String, Vec<(String, String)>)>,
    /// Each node's heartbeat as last written: one that brings nothing new
    /// is written again only after [`REFRESH`].
    written: HashMap<String, Beat>,
}

/// Whether `b` says nothing `w` (written earlier) did not, but the time.
fn no_news(w: &Beat, b: &Beat) -> bool {
    w.site == b.site
        && w.offline == b.offline
        && w.sw_ver == b.sw_ver
        && w.capabilities == b.capabilities
        && w.queues == b.queues
}

/// The monitor's shared state.
pub type Shared = Arc<Mutex<Heard>>;

/// What the monitor tells others: a node came online (it may have missed
/// cancels while away; the control loop sends its snapshot at once).
pub type Online = Arc<tokio::sync::Notify>;

/// The fields of an event the monitor reads, borrowed from its body
/// where no unescaping is needed (500 heartbeats a second from 1,000
/// agents: a parse into `serde_json::Value` was most of their cost once
/// the writes were few). Fields of the wrong type make the event
/// unreadable, and it is dropped, as an event that is not JSON is.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    hostname: Cow<'a, str>,
    #[serde(borrow, default)]
    queues: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    site: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sw_ver: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    capabilities: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    uuid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    root_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// Reads one event into what was heard.
pub fn hear(heard: &Shared, online: &Online, body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Event<'_>>(body) else {
        return;
    };
    let kind = v.kind.as_ref();
    let node = v.hostname.to_string();
    if node.is_empty() {
        return;
    }
    let now = now_us();
    let mut h = heard.lock().expect("heard");
    match kind {
        "worker-heartbeat" | "worker-online" | "worker-offline" => {
            let offline = kind == "worker-offline";
            if kind == "worker-online" {
                online.notify_one();
            }
            let queues: Vec<(String, String)> = v
                .queues
                .iter()
                .filter_map(|q| {
                    let (site_queue, function) = q.split_once('#')?;
                    let (_, queue) = site_queue.split_once('.')?;
                    Some((queue.to_string(), function.to_string()))
                })
                .collect();
            let site = v.site.as_deref().map(str::to_string).or_else(|| {
                v.queues
                    .first()
                    .and_then(|q| q.split_once('.'))
                    .map(|(s, _)| s.to_string())
            });
            let previous = h.named.get(&node).cloned();
            let beat = Beat {
                node: node.clone(),
                site: site.or(previous.as_ref().map(|p| p.0.clone())).unwrap_or_default(),
                at: now,
                offline,
                sw_ver: v.sw_ver.as_deref().map(str::to_string),
                capabilities: v.capabilities.map_or("{}".into(), |c| c.get().to_string()),
                // worker-online and -offline carry no queues: keep the last.
                queues: if queues.is_empty() {
                    previous.map(|p| p.1).unwrap_or_default()
                } else {
                    queues
                },
            };
            if beat.queues.is_empty() && beat.site.is_empty() {
                return;
            }
            h.named.insert(node.clone(), (beat.site.clone(), beat.queues.clone()));
            h.beats.insert(node.clone(), beat);
            let was_gone = h.seen.get(&node).is_some_and(|s| s.1);
            if was_gone && !offline {
                info!(node = %node, "node is back");
            }
            h.seen.insert(node, (now, offline));
        }
        "task-started" => {
            let Some(task_id) = v.uuid.as_deref() else { return };
            h.started.push(Started {
                task_id: task_id.to_string(),
                root_id: v.root_id.as_deref().unwrap_or("").to_string(),
                parent_id: v.parent_id.as_deref().map(str::to_string),
                tasktype: v.name.as_deref().unwrap_or("").to_string(),
                node,
                at: now,
            });
        }
        _ => {}
    }
}

async fn invalidate(store: &Store, invalidation: Duration, interval: Duration) {
    let before = now_us() - invalidation.as_micros() as i64;
    let alive_since = now_us() - interval.as_micros() as i64;
    match store.lost_tasks(before, alive_since, 1000).await {
        Ok(lost) if lost.is_empty() => {}
        Ok(lost) => match store.ingest(&lost).await {
            Ok(_) => warn!(
                tasks = lost.len(),
                "tasks started too long ago without a result are failed as lost"
            ),
            Err(e) => warn!(error = %e, "cannot fail lost tasks; next time"),
        },
        Err(e) => warn!(error = %e, "cannot look for lost tasks"),
    }
}

/// Starts from the nodes the database knows, so a node that died while
/// the hub was down is found gone too.
pub async fn remember(heard: &Shared, store: &Store) -> Result<(), super::store::StoreError> {
    let nodes = store.nodes(None).await?;
    let mut h = heard.lock().expect("heard");
    for n in nodes {
        if let Some(site) = &n.site {
            h.named.insert(n.name.clone(), (site.clone(), Vec::new()));
        }
        if let Some(t) = n.last_heartbeat {
            h.seen.insert(n.name, (t, false));
        }
    }
    Ok(())
}

/// Consumes the event queue on `session` until the session ends.
pub async fn run(heard: Shared, online: Online, session: Arc<Session>, queue: String) -> lapin::Result<()> {
    let ch = session.channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(EVENTS_MAX));
    args.insert("x-overflow".into(), AMQPValue::LongString("drop-head".into()));
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    for key in ["worker.#", "task.started"] {
        ch.queue_bind(
            queue.as_str().into(),
            EVENT_EXCHANGE.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "ferry-hub-monitor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let all = BasicAckOptions { multiple: true };
    let mut unacked: Option<(lapin::Acker, u32)> = None;
    loop {
        let next = match &unacked {
            Some(_) => tokio::time::timeout(ACK_AFTER, consumer.next()).await,
            None => Ok(consumer.next().await),
        };
        let d = match next {
            Err(_quiet) => {
                if let Some((acker, _)) = unacked.take() {
                    let _ = acker.ack(all).await;
                }
                continue;
            }
            Ok(None) => return Ok(()),
            Ok(Some(d)) => d?,
        };
        hear(&heard, &online, &d.data);
        let n = unacked.take().map_or(1, |(_, n)| n + 1);
        match n >= ACK_EVERY {
            true => {
                let _ = d.acker.ack(all).await;
            }
            false => unacked = Some((d.acker, n)),
        }
    }
}

/// Writes what was heard every [`FLUSH`], sets the STARTED tasks of
/// nodes gone quiet back to PENDING, and every minute fails the tasks
/// STARTED longer than `invalidation` ago without a result.
pub async fn flush(heard: Shared, store: Store, configs: Arc<Live>, create_sites: bool) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(FLUSH).await;
        let (interval, invalidation) = {
            let c = configs.get();
            (c.node_health_interval(), c.task_invalidation())
        };
        let limit = interval.as_micros() as i64;
        let refresh = (interval / 4).clamp(FLUSH, REFRESH).as_micros() as i64;
        ticks += 1;
        if ticks.is_multiple_of(60) {
            invalidate(&store, invalidation, interval).await;
        }
        let (beats, started, gone) = {
            let mut h = heard.lock().expect("heard");
            let Heard {
                beats,
                started,
                seen,
                written,
                ..
            } = &mut *h;
            let beats: Vec<Beat> = beats
                .drain()
                .map(|(_, b)| b)
                .filter(|b| {
                    !written
                        .get(&b.node)
                        .is_some_and(|w| b.at - w.at < refresh && no_news(w, b))
                })
                .collect();
            let started = std::mem::take(started);
            let now = now_us();
            let mut gone = Vec::new();
            for (node, (last, taken)) in seen.iter_mut() {
                if !*taken && now - *last >= limit {
                    *taken = true;
                    // Its row is marked gone: the next beat is news.
                    written.remove(node);
                    gone.push(node.clone());
                }
            }
            // worker-offline: gone at once.
            for b in &beats {
                if b.offline && !gone.contains(&b.node) {
                    gone.push(b.node.clone());
                }
            }
            (beats, started, gone)
        };
        if !beats.is_empty() {
            let recorded = store.record_heartbeats(&beats, create_sites).await;
            let mut h = heard.lock().expect("heard");
            match recorded {
                Ok(()) => {
                    for b in beats {
                        h.written.insert(b.node.clone(), b);
                    }
                }
                Err(e) => {
                    warn!(error = %e, nodes = beats.len(), "cannot record heartbeats; keeping them for the next try");
                    for b in beats {
                        h.beats.entry(b.node.clone()).or_insert(b);
                    }
                }
            }
        }
        if !started.is_empty()
            && let Err(e) = store.mark_started(&started).await
        {
            warn!(error = %e, "cannot record started tasks (hints only; results still count)");
        }
        for node in gone {
            match store.requeue_node(&node).await {
                Ok(n) => warn!(node = %node, tasks_back_to_pending = n, "node is offline"),
                Err(e) => warn!(node = %node, error = %e, "cannot set an offline node's tasks back to pending"),
            }
        }
    }
}
