//! Cancelling, pausing and resuming jobs on the agents: control messages
//! on the fanout exchange every agent listens to ([`CONTROL_EXCHANGE`]).
//! A message names the job's root task ids (unique across hubs sharing a
//! broker, unlike job ids); every task of the job carries its root's id.
//!
//! - A cancel: an agent refuses each task of the job it is given
//!   (answering REVOKED) and a running discovery stops publishing.
//! - A pause: an agent moves each queued task of the job it is given,
//!   unchanged, to the job's parking queue
//!   ([`crate::config::HubSettings::parking_queue`]) instead of running
//!   it; running tasks finish. A resume tells the agents to stop, and the
//!   hub moves what was parked back to the queues it came from
//!   ([`unpark`]). A paused job that is cancelled is emptied the same
//!   way: its tasks go back to their queues and are refused there.
//!
//! - A task type's pause (`tasktypes` in the pause message): an agent
//!   moves each queued task of that name, whatever its job, to the type's
//!   parking queue ([`crate::config::HubSettings::tasktype_parking_queue`])
//!   instead of running it (after the job's own pause: a task of a paused
//!   job goes to its job's queue); running tasks finish. A resume
//!   (`tasktypes` in the resume message) tells the agents to stop, and
//!   the hub moves what was parked back ([`unpark`]). A parked task
//!   whose job is cancelled meanwhile stays parked until the type
//!   resumes; it then goes back to its queue and the agents refuse it
//!   (REVOKED, the job CANCELLED once every task is accounted for). One
//!   whose job is paused meanwhile goes back and is parked by its job.
//!
//! The active cancels and pauses are repeated every [`SNAPSHOT_EVERY`], so
//! an agent that starts later learns them too. A pause is sent with a
//! short `until` ([`HOLD_FOR`]) renewed by every snapshot, so an agent
//! that missed the resume stops parking soon after anyway; what it parked
//! meanwhile is moved back by [`unparking`].

use super::store::{Store, now_us};
use crate::agent::broker::{BrokerError, Session, queue_counts};
use crate::config::HubSettings;
use crate::config::defaults::{CANCEL_MEMORY, CONTROL_EXCHANGE};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, ExchangeDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often the set of cancelled roots is sent again.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// How long after a job ended as CANCELLED its roots are still sent (a
/// discovery that ran twice may have left children of its other run
/// queued).
const KEEP_AFTER_END: Duration = Duration::from_secs(3600);

/// How long an agent keeps parking a paused job's tasks after the last
/// pause or snapshot that named it: four snapshots.
pub const HOLD_FOR: Duration = Duration::from_secs(120);

/// How long a parking queue is kept after its job ended, for tasks an
/// agent parked late (it missed the resume and its hold had not expired).
const PARKING_KEPT: Duration = Duration::from_secs(3600);

/// How often paused jobs are looked at: `PAUSING` ones that became
/// `PAUSED`, parking queues to empty.
const HOLD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long a job stays `PAUSING` at least, even with no task running.
/// A task an agent took from its queue just before the pause reached it
/// still runs, and its start reaches the store through the monitor, which
/// writes once a second ([`crate::hub::monitor::FLUSH`]); a job settled
/// before that would be `PAUSED` with a task running (seen in CI: a job
/// paused between two of its 20-file tasks was `PAUSED` in its own pause
/// response).
const PAUSE_SETTLE: Duration = Duration::from_secs(5);

fn until(ttl: Duration) -> u64 {
    jiff::Timestamp::now().as_second() as u64 + ttl.as_secs()
}

/// One paused job as the agents see it: its root task id and the queue
/// its tasks are parked in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The root task id.
    pub root: String,
    /// The parking queue.
    pub park: String,
}

/// One task type paused cluster-wide as the agents see it: its task name,
/// the hub's results queue (the pause is for the tasks that reply there:
/// other hubs on the broker keep theirs running) and the queue its tasks
/// are parked in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeHeld {
    /// The task name.
    pub task: String,
    /// The hub's results queue.
    pub reply_to: String,
    /// The parking queue.
    pub park: String,
}

impl TypeHeld {
    /// Task type `task` of the hub with `settings`.
    pub fn new(settings: &HubSettings, task: &str) -> TypeHeld {
        TypeHeld {
            task: task.to_string(),
            reply_to: settings.results_queue(),
            park: settings.tasktype_parking_queue(task),
        }
    }
}

fn types_json(types: &[TypeHeld]) -> Vec<serde_json::Value> {
    let u = until(HOLD_FOR);
    types
        .iter()
        .map(|t| serde_json::json!({"task": t.task, "reply_to": t.reply_to, "park": t.park, "until": u}))
        .collect()
}

fn holds_json(holds: &[Held]) -> Vec<serde_json::Value> {
    let u = until(HOLD_FOR);
    holds
        .iter()
        .map(|h| serde_json::json!({"root": h.root, "park": h.park, "until": u}))
        .collect()
}

/// The cancel message for `roots`.
pub fn cancel_message(roots: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op": "cancel", "roots": roots, "until": until(CANCEL_MEMORY)}))
        .expect("json")
}

/// The pause message for `holds`.
pub fn pause_message(holds: &[Held]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op": "pause", "holds": holds_json(holds)})).expect("json")
}

/// The pause message for task types `types` (with no job's hold, which
/// an agent from before type pauses reads as a pause of nothing).
pub fn tasktype_pause_message(types: &[TypeHeld]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op": "pause", "holds": [], "tasktypes": types_json(types)})).expect("json")
}

/// The resume message for task types `types`.
pub fn tasktype_resume_message(types: &[TypeHeld]) -> Vec<u8> {
    let types: Vec<_> = types
        .iter()
        .map(|t| serde_json::json!({"task": t.task, "reply_to": t.reply_to}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"op": "resume", "roots": [], "tasktypes": types})).expect("json")
}

/// The resume message for `roots`.
pub fn resume_message(roots: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op": "resume", "roots": roots})).expect("json")
}

fn nodes_json(nodes: &[String]) -> Vec<serde_json::Value> {
    let u = until(HOLD_FOR);
    nodes
        .iter()
        .map(|n| serde_json::json!({"node": n, "until": u}))
        .collect()
}

/// The drain message for `nodes` (node names): they take no new task.
pub fn drain_message(nodes: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op": "drain", "nodes": nodes_json(nodes)})).expect("json")
}

/// The message that resumes drained `nodes`.
pub fn undrain_message(nodes: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op": "undrain", "nodes": nodes})).expect("json")
}

/// What a snapshot carries: every active cancel, pause, drain and task
/// type pause of this hub.
#[derive(Debug, Default)]
pub struct Active {
    /// Cancelled roots.
    pub roots: Vec<String>,
    /// Paused jobs.
    pub holds: Vec<Held>,
    /// Drained nodes (names).
    pub nodes: Vec<String>,
    /// Paused task types.
    pub types: Vec<TypeHeld>,
}

impl Active {
    fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.holds.is_empty() && self.nodes.is_empty() && self.types.is_empty()
    }
}

/// The snapshot message of `active`.
pub fn snapshot_message(active: &Active) -> Vec<u8> {
    let Active {
        roots,
        holds,
        nodes,
        types,
    } = active;
    let u = until(CANCEL_MEMORY);
    let cancel: Vec<_> = roots
        .iter()
        .map(|r| serde_json::json!({"root": r, "until": u}))
        .collect();
    serde_json::to_vec(
        &serde_json::json!({"op": "snapshot", "cancel": cancel, "pause": holds_json(holds),
        "drain": nodes_json(nodes), "tasktypes": types_json(types)}),
    )
    .expect("json")
}

/// Publishes a control message, confirmed.
pub async fn publish(session: &Session, body: &[u8]) -> Result<(), crate::agent::broker::BrokerError> {
    let ch = session.channel().await?;
    ch.exchange_declare(
        CONTROL_EXCHANGE.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "declared".into()).await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(1);
    session.publish_confirmed(CONTROL_EXCHANGE, "", body, props).await
}

/// The paused jobs' holds.
pub async fn holds(store: &Store, settings: &HubSettings) -> Result<Vec<Held>, crate::hub::store::StoreError> {
    Ok(store
        .held_roots()
        .await?
        .into_iter()
        .map(|(job, root)| Held {
            root,
            park: settings.parking_queue(job),
        })
        .collect())
}

/// The paused task types' holds.
pub async fn type_holds(store: &Store, settings: &HubSettings) -> Result<Vec<TypeHeld>, crate::hub::store::StoreError> {
    Ok(store
        .tasktype_pauses()
        .await?
        .into_iter()
        .filter(|p| p.paused)
        .map(|p| TypeHeld::new(settings, &p.task))
        .collect())
}

async fn active(store: &Store, settings: &HubSettings) -> Result<Active, crate::hub::store::StoreError> {
    let since = now_us() - KEEP_AFTER_END.as_micros() as i64;
    Ok(Active {
        roots: store.cancelled_roots(since).await?,
        holds: holds(store, settings).await?,
        nodes: store.paused_nodes().await?,
        types: type_holds(store, settings).await?,
    })
}

/// Sends the snapshot of cancelled and paused roots every
/// [`SNAPSHOT_EVERY`] (when there are any), and at once when a node comes
/// online (it may have been away for a cancel, and waits for this answer
/// before taking tasks).
pub async fn snapshots(
    store: Store,
    settings: HubSettings,
    sessions: watch::Receiver<Option<Arc<Session>>>,
    online: Arc<tokio::sync::Notify>,
) {
    loop {
        // A node coming online waits for a snapshot before it takes tasks
        // (the agent's `control_wait`): it gets one even when empty.
        let asked = tokio::select! {
            _ = tokio::time::sleep(SNAPSHOT_EVERY) => false,
            _ = online.notified() => true,
        };
        let Some(session) = sessions.borrow().clone() else {
            continue;
        };
        let active = match active(&store, &settings).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "cannot read cancelled and paused jobs, drained nodes and paused task types");
                continue;
            }
        };
        if active.is_empty() && !asked {
            continue;
        }
        if let Err(e) = publish(&session, &snapshot_message(&active)).await {
            warn!(error = %e, "cannot send the control snapshot; next time");
        }
    }
}

/// Looks after paused jobs every [`HOLD_CHECK_EVERY`]: a `PAUSING` job
/// none of whose tasks runs becomes `PAUSED`, and the parking queues of
/// jobs that are no longer paused (resumed, cancelled) are emptied back
/// into the queues their tasks came from; a parking queue is deleted an
/// hour after its job ended. The same for task types: the parking queue
/// of a type no longer paused is emptied, and deleted an hour after the
/// resume (an agent that missed the resume parks until its hold expires).
pub async fn unparking(store: Store, settings: HubSettings, sessions: watch::Receiver<Option<Arc<Session>>>) {
    loop {
        tokio::time::sleep(HOLD_CHECK_EVERY).await;
        let asked_by = now_us() - PAUSE_SETTLE.as_micros() as i64;
        match store.settle_pauses(asked_by).await {
            Ok(0) => {}
            Ok(n) => info!(jobs = n, "paused: no task of these jobs runs any more"),
            Err(e) => warn!(error = %e, "cannot settle pausing jobs"),
        }
        let Some(session) = sessions.borrow().clone() else {
            continue;
        };
        let jobs = match store.unparked_jobs(PARKING_KEPT.as_micros() as i64).await {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "cannot read parked jobs");
                continue;
            }
        };
        for (job, old) in jobs {
            let park = settings.parking_queue(job);
            match unpark(&session, &park).await {
                Ok(n) if n > 0 => info!(job, tasks = n, queue = %park, "parked tasks moved back to their queues"),
                Ok(_) => {}
                Err(e) => {
                    warn!(job, error = %e, queue = %park, "cannot empty a parking queue; next time");
                    continue;
                }
            }
            if old {
                match drop_parking(&session, &park).await {
                    Ok(()) => {
                        if let Err(e) = store.forget_parking(job).await {
                            warn!(job, error = %e, "cannot record a parking queue as gone");
                        }
                    }
                    Err(e) => debug!(job, error = %e, queue = %park, "parking queue not deleted yet"),
                }
            }
        }
        unpark_types(&store, &settings, &session).await;
    }
}

/// Empties the parking queues of task types resumed within
/// [`PARKING_KEPT`], and deletes those of types resumed before.
async fn unpark_types(store: &Store, settings: &HubSettings, session: &Session) {
    let types = match store.tasktype_pauses().await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "cannot read paused task types");
            return;
        }
    };
    let before = now_us() - PARKING_KEPT.as_micros() as i64;
    for (task, resumed) in types.into_iter().filter_map(|p| p.resumed.map(|r| (p.task, r))) {
        let park = settings.tasktype_parking_queue(&task);
        match unpark(session, &park).await {
            Ok(n) if n > 0 => info!(task, tasks = n, queue = %park, "parked tasks moved back to their queues"),
            Ok(_) => {}
            Err(e) => {
                warn!(task, error = %e, queue = %park, "cannot empty a parking queue; next time");
                continue;
            }
        }
        if resumed < before {
            match drop_parking(session, &park).await {
                Ok(()) => {
                    if let Err(e) = store.forget_tasktype(&task).await {
                        warn!(task, error = %e, "cannot record a parking queue as gone");
                    }
                }
                Err(e) => debug!(task, error = %e, queue = %park, "parking queue not deleted yet"),
            }
        }
    }
}

/// How many messages wait in queue `queue` (0 when it does not exist).
pub async fn depth(session: &Session, queue: &str) -> Result<u32, BrokerError> {
    Ok(session.counts_of(queue).await?.map_or(0, |q| q.messages))
}

/// Declares the parking queue `park` (durable), so an agent's first
/// parked task has somewhere to go.
pub async fn declare_parking(session: &Session, park: &str) -> Result<(), BrokerError> {
    session.declare_queue(park).await.map_err(BrokerError::from)
}

/// Deletes parking queue `park` if it is empty.
async fn drop_parking(session: &Session, park: &str) -> Result<(), BrokerError> {
    let ch = session.channel().await?;
    let opts = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    ch.queue_delete(park.into(), opts).await?;
    let _ = ch.close(200, "deleted".into()).await;
    Ok(())
}

/// How many parked messages [`unpark`] has republished and not yet seen
/// confirmed. One at a time, each move waits a broker round trip: 2,000
/// parked tasks took 12 s in `hub_pause` on CI (2026-12-07), and the
/// agents had finished the job before the resume was answered.
const UNPARK_WINDOW: usize = 256;

/// Moves every message in parking queue `park` back to the queue named by
/// its `x-ferry-queue` header (the agent that parked it set it), headers
/// and properties otherwise unchanged: each republished with the broker's
/// confirmation before it is acknowledged here, so a crash in between
/// leaves a copy, never none (a task that arrives twice runs once: the
/// agents answer a redelivered id from memory, and the hub counts a
/// result once). Up to [`UNPARK_WINDOW`] moves are in flight at once. A
/// message without the header is left where it is. Returns how many were
/// moved.
pub async fn unpark(session: &Session, park: &str) -> Result<u64, BrokerError> {
    let ch = session.channel().await?;
    // A queue that is not there has nothing to move.
    let Some(depth) = queue_counts(&ch, park).await.map(|q| q.messages) else {
        return Ok(0);
    };
    if depth == 0 {
        let _ = ch.close(200, "empty".into()).await;
        return Ok(0);
    }
    ch.basic_qos(UNPARK_WINDOW as u16 * 2, Default::default()).await?;
    let mut consumer = ch
        .basic_consume(
            park.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut taken = 0;
    let mut in_flight = std::collections::VecDeque::with_capacity(UNPARK_WINDOW);
    // Take what is there now; messages parked meanwhile wait for the next
    // round.
    while taken < u64::from(depth) {
        let next = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        let Ok(Some(d)) = next else {
            break;
        };
        let d = d?;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let queue = match headers.inner().get("x-ferry-queue") {
            Some(AMQPValue::LongString(q)) => String::from_utf8_lossy(q.as_bytes()).into_owned(),
            Some(AMQPValue::ShortString(q)) => q.as_str().to_string(),
            _ => {
                warn!(queue = %park, "a parked message names no queue to go back to; left in place");
                d.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
                break;
            }
        };
        let mut kept = FieldTable::default();
        for (k, v) in headers.inner() {
            if k.as_str() != "x-ferry-queue" {
                kept.insert(k.clone(), v.clone());
            }
        }
        let props = d.properties.clone().with_headers(kept);
        session.declare_queue(&queue).await?;
        let confirm = session.publish("", &queue, &d.data, props).await?;
        in_flight.push_back((confirm, d.acker));
        taken += 1;
        if in_flight.len() >= UNPARK_WINDOW {
            settle_oldest(&mut in_flight).await?;
        }
    }
    // Every message taken is moved once its confirm is in: a failure
    // returns before.
    while !in_flight.is_empty() {
        settle_oldest(&mut in_flight).await?;
    }
    let _ = ch.close(200, "moved".into()).await;
    Ok(taken)
}

/// Waits for the oldest of [`unpark`]'s republished messages to be
/// confirmed, then acknowledges its parked copy.
async fn settle_oldest(
    in_flight: &mut std::collections::VecDeque<(lapin::PublisherConfirm, lapin::Acker)>,
) -> Result<(), BrokerError> {
    let (confirm, acker) = in_flight.pop_front().expect("in flight");
    crate::agent::broker::confirmed(confirm.await)?;
    acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}
