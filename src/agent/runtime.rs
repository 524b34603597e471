//! The agent's runtime: one supervisor that keeps a broker session alive,
//! one consumer per `<site>.<queue>#<function>` queue, and one handler per
//! delivery.
//!
//! Ownership and order, per delivery: decode → (a task of a cancelled job
//! is answered `REVOKED` here, [`super::control`]) → wait for a slot of
//! the queue's function → run the task on a blocking thread (children are
//! published from there and confirmed) → publish the result to `reply_to`
//! and wait for its confirmation → acknowledge. A delivery whose channel
//! died meanwhile is redelivered by the broker; the agent remembers recent
//! results by task id ([`super::results`]), so a redelivered task that
//! already finished gets its result again instead of running twice.
//!
//! Shutdown (SIGTERM): consumers are cancelled, deliveries still waiting
//! for a slot go back to the queue, running tasks finish and report, then
//! the connection closes.

use super::broker::{self, BrokerSink, Session};
use super::celery::{self, Incoming, TaskMessage, TaskState};
use super::control::{self, ControlSet};
use super::events::{self, Events};
use super::metrics::{self, Metrics};
use super::results::{Answer, Results};
use super::systemd;
use super::tasks::{self, Finished, Published, TaskEnv};
use super::upkeep;
use crate::config::{AgentConfigError, AgentSettings, Config, ConsumerSpec};
use crate::ops::OpContext;
use crate::task::TaskName;
use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, error, info, warn};

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration does not make an agent.
    #[error("{0}")]
    Config(#[from] AgentConfigError),
    /// The metrics address cannot be served.
    #[error("cannot serve metrics on {addr} (metrics_listen): {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// One consumed queue and the slots of its function.
struct Consumer {
    spec: ConsumerSpec,
    slots: Arc<Semaphore>,
}

/// The agent: what every delivery handler shares.
struct Agent {
    site: String,
    node: String,
    settings: AgentSettings,
    consumers: Vec<Consumer>,
    ops: OpContext,
    metrics: Arc<Metrics>,
    events: Arc<Events>,
    results: Arc<Results>,
    /// The jobs cancelled and paused over the control channel, by root
    /// task id.
    controls: Arc<ControlSet>,
    /// The heartbeat loop, stopped before `worker-offline` so that no
    /// heartbeat follows the goodbye (a hub would take it for the node
    /// coming back).
    heartbeats: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The current broker session, `None` between sessions.
    session: watch::Sender<Option<Arc<Session>>>,
    /// Set once to start the drain.
    shutdown: watch::Sender<bool>,
    /// Deliveries being handled.
    inflight: watch::Sender<usize>,
    handle: tokio::runtime::Handle,
}

/// A running agent's handle: asks it to stop.
#[derive(Clone)]
pub struct AgentHandle {
    shutdown: watch::Sender<bool>,
}

impl AgentHandle {
    /// Starts the drain: no new tasks, running ones finish.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }
}

/// The node name used in events, results and child tasks.
pub fn node_name(config: &Config) -> String {
    config.agent.node_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("ferry@{host}")
    })
}

/// Prepares an agent for `config` (on the current tokio runtime); the
/// returned future runs it until its handle stops it.
pub fn prepare(config: Config) -> Result<(AgentHandle, impl std::future::Future<Output = ()>), AgentError> {
    let specs = config.consumers()?;
    let site = config.site()?.to_string();
    let node = node_name(&config);
    let handle = tokio::runtime::Handle::current();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = config.agent.metrics_listen {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|source| AgentError::Metrics { addr, source })?;
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let agent = Arc::new(Agent {
        events: Arc::new(Events::new(&node, config.agent.task_events)),
        consumers: specs
            .into_iter()
            .map(|spec| Consumer {
                slots: Arc::new(Semaphore::new(spec.threads)),
                spec,
            })
            .collect(),
        settings: config.agent.clone(),
        ops: OpContext::with_handle(config, None, handle.clone()),
        site,
        node,
        metrics,
        results: Arc::new(Results::default()),
        controls: Arc::new(ControlSet::default()),
        heartbeats: Default::default(),
        session: watch::channel(None).0,
        shutdown: watch::channel(false).0,
        inflight: watch::channel(0).0,
        handle,
    });
    let stopper = AgentHandle {
        shutdown: agent.shutdown.clone(),
    };
    Ok((stopper, serve(agent)))
}

impl Agent {
    fn queues(&self) -> Vec<String> {
        self.consumers.iter().map(|c| c.spec.queue.clone()).collect()
    }
}

/// The supervisor: connect, consume, and on a lost session start again
/// with backoff (0.1 s doubling to 30 s); on shutdown, drain.
async fn serve(agent: Arc<Agent>) {
    info!(node = %agent.node, queues = ?agent.queues(), "ferry agent starting");
    if agent.settings.heartbeat {
        let mut functions: Vec<&str> = agent.consumers.iter().map(|c| c.spec.function.as_str()).collect();
        functions.sort_unstable();
        functions.dedup();
        let node = events::NodeFacts {
            queues: agent.queues(),
            site: agent.site.clone(),
            capabilities: serde_json::json!({
                "tasks": TaskName::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "functions": functions,
                "endpoints": agent.ops.config.endpoints.keys().collect::<Vec<_>>(),
                // The control messages it obeys: cancels, job pauses, task
                // type pauses.
                "control": ["cancel-v1", "pause-v1", "tasktype-pause-v1"],
            }),
        };
        let beats = tokio::spawn(events::heartbeats(
            agent.events.clone(),
            agent.settings.heartbeat_interval,
            node,
            agent.metrics.clone(),
            agent.session.subscribe(),
        ));
        *agent.heartbeats.lock().expect("heartbeats") = Some(beats);
    }
    tokio::spawn(systemd::watchdog());
    let (interval, grace) = (
        agent.settings.endpoint_check_interval,
        agent.settings.endpoint_check_grace,
    );
    if !interval.is_zero() && !agent.ops.config.endpoints.is_empty() {
        info!(
            every_seconds = interval.as_secs(),
            grace_seconds = grace.as_secs(),
            endpoints = ?agent.ops.config.endpoints.keys().collect::<Vec<_>>(),
            "endpoint upkeep scheduled"
        );
        let a = agent.clone();
        tokio::spawn(upkeep::every(interval, agent.shutdown.subscribe(), move || {
            upkeep::check_endpoints(&a.ops, grace)
        }));
    }
    super::journal::start(
        &agent.settings.journal,
        agent.settings.journal_state_dir.as_deref(),
        agent.shutdown.subscribe(),
    );
    tokio::spawn(metrics::poll_queue_depths(
        agent.queues(),
        agent.metrics.clone(),
        agent.session.subscribe(),
    ));
    let mut shutdown = agent.shutdown.subscribe();
    let mut backoff = Duration::from_millis(100);
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        systemd::status(&format!("connecting to {}", redact(&agent.settings.broker_url)));
        let session = match Session::connect(&agent.settings.broker_url, &agent.node).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "cannot reach the broker");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        // Deliveries may arrive as soon as the first consumer starts; their
        // handlers need the session.
        agent.session.send_replace(Some(session.clone()));
        // The control queue is bound before any task is consumed, so a
        // cancel published once the agent consumes is never missed; and a
        // hub's snapshot (its answer to worker-online) is awaited, so a
        // cancel published while this node was away is known too.
        let setup = async {
            let control = control::listen(&session, agent.controls.clone()).await?;
            agent
                .events
                .worker(&session, "worker-online", serde_json::json!({}))
                .await;
            let wait = agent.settings.control_wait;
            if !wait.is_zero() {
                match tokio::time::timeout(wait, control.first_snapshot).await {
                    Ok(Ok(())) => debug!("cancel snapshot received; taking tasks"),
                    _ => info!(control_wait = ?wait, "no cancel snapshot within control_wait; taking tasks"),
                }
            }
            // A node the hub has drained starts without consumers.
            let consumers = match agent.controls.is_drained_now(&agent.node) {
                true => None,
                false => Some(start_consumers(&agent, &session).await?),
            };
            Ok::<_, lapin::Error>((control.task, consumers))
        };
        let (control, mut consumers) = match setup.await {
            Ok(c) => c,
            Err(e) => {
                agent.session.send_replace(None);
                warn!(error = %e, "cannot set up the consumers");
                let _ = session.conn.close(320, "ferry: setup failed".into()).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        agent.metrics.connected.store(true, Relaxed);
        match &consumers {
            Some(c) => info!("connected; consuming {} queues", c.len()),
            None => info!("connected; drained by the hub: taking no task until resumed"),
        }
        systemd::status("connected");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    let ended = consumers.as_ref().is_some_and(|cs| cs.iter().any(|c| c.task.is_finished()));
                    if !session.alive() || control.is_finished() || ended {
                        break;
                    }
                    // A drain (the hub's `PATCH /api/nodes/{id}/ {"paused": true}`):
                    // stop consuming, let running tasks finish; resumed: consume again.
                    let drained = agent.controls.is_drained_now(&agent.node);
                    if drained && let Some(cs) = consumers.take() {
                        stop_consumers(&cs).await;
                        info!("drained by the hub: taking no new tasks; running ones finish");
                        systemd::status("drained");
                    } else if !drained && consumers.is_none() {
                        match start_consumers(&agent, &session).await {
                            Ok(cs) => {
                                info!("resumed by the hub: consuming {} queues again", cs.len());
                                systemd::status("connected");
                                consumers = Some(cs);
                            }
                            Err(e) => {
                                warn!(error = %e, "cannot consume again after a drain");
                                break;
                            }
                        }
                    }
                }
                _ = shutdown.changed() => {
                    // Cancels are still obeyed while running tasks finish.
                    drain(&agent, &session, consumers.as_deref().unwrap_or(&[])).await;
                    break 'outer;
                }
            }
        }
        control.abort();
        agent.session.send_replace(None);
        agent.metrics.connected.store(false, Relaxed);
        agent.metrics.reconnects.inc();
        warn!("lost the broker; unacknowledged tasks go back to their queues; reconnecting");
        for c in consumers.into_iter().flatten() {
            c.task.abort();
        }
    }
    systemd::status("stopped");
}

/// A running consumer: its channel, tag and delivery loop.
struct Consuming {
    channel: Channel,
    tag: String,
    task: tokio::task::JoinHandle<()>,
}

async fn start_consumers(agent: &Arc<Agent>, session: &Arc<Session>) -> lapin::Result<Vec<Consuming>> {
    let mut out = Vec::new();
    for (index, c) in agent.consumers.iter().enumerate() {
        let spec = &c.spec;
        let channel = session.channel().await?;
        channel
            .basic_qos(spec.threads.min(u16::MAX as usize) as u16, BasicQosOptions::default())
            .await?;
        session.declare_queue(&spec.queue).await?;
        let tag = format!("{}/{}", agent.node, spec.queue);
        let mut consumer = channel
            .basic_consume(
                spec.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let agent2 = agent.clone();
        let held = channel.clone();
        let task = tokio::spawn(async move {
            while let Some(d) = consumer.next().await {
                match d {
                    Ok(d) => {
                        tokio::spawn(handle(agent2.clone(), index, d, held.clone()));
                    }
                    Err(e) => {
                        debug!(error = %e, queue = %agent2.consumers[index].spec.queue, "consumer ended");
                        break;
                    }
                }
            }
        });
        out.push(Consuming { channel, tag, task });
    }
    Ok(out)
}

/// Cancels `consumers`: the broker sends them nothing more (deliveries
/// already here are handled: a drained node hands them back).
async fn stop_consumers(consumers: &[Consuming]) {
    for c in consumers {
        let _ = c
            .channel
            .basic_cancel(c.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        c.task.abort();
    }
}

async fn drain(agent: &Arc<Agent>, session: &Arc<Session>, consumers: &[Consuming]) {
    info!("stopping: no new tasks; waiting for running ones");
    systemd::stopping();
    for c in consumers {
        let _ = c
            .channel
            .basic_cancel(c.tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }
    // Running tasks report on this session; if it dies meanwhile their
    // results cannot be sent, and their messages return to the queue.
    let mut inflight = agent.inflight.subscribe();
    loop {
        tokio::select! {
            r = inflight.wait_for(|n| *n == 0) => { let _ = r.map(|_| ()); break; }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if !session.alive() {
                    warn!("lost the broker while stopping; unfinished tasks will run again elsewhere");
                    return;
                }
            }
        }
    }
    // A heartbeat published before the abort is ahead of the goodbye on
    // the same channel; none comes after it.
    let beats = agent.heartbeats.lock().expect("heartbeats").take();
    if let Some(beats) = beats {
        beats.abort();
        let _ = beats.await;
    }
    agent
        .events
        .worker(session, "worker-offline", serde_json::json!({}))
        .await;
    let _ = session.conn.close(200, "ferry agent stopped".into()).await;
    info!("stopped");
}

/// Counts a delivery in flight for as long as it lives.
struct Inflight(Arc<Agent>);

impl Inflight {
    fn new(a: &Arc<Agent>) -> Inflight {
        a.inflight.send_modify(|n| *n += 1);
        Inflight(a.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.send_modify(|n| *n -= 1);
    }
}

/// Handles one delivery of consumer `index`, from decoding to the ack.
///
/// `_channel` is the delivery's channel, held until the delivery is
/// answered: lapin closes a channel when its last handle is dropped, and
/// the broker then requeues every unacknowledged message on it. A drain
/// drops the consumer's own handle while tasks still run; without this one
/// their messages went back to the queue and another node ran them at the
/// same time (seen in `hub_pause`'s drain test as a batch whose files were
/// locked by the other run).
async fn handle(agent: Arc<Agent>, index: usize, d: Delivery, _channel: Channel) {
    let _inflight = Inflight::new(&agent);
    let consumer = &agent.consumers[index];
    let arrived = std::time::Instant::now();
    let headers = d
        .properties
        .headers()
        .as_ref()
        .map(broker::from_table)
        .unwrap_or_default();
    let incoming = Incoming {
        correlation_id: d.properties.correlation_id().as_ref().map(|s| s.as_str()),
        reply_to: d.properties.reply_to().as_ref().map(|s| s.as_str()),
        content_type: d.properties.content_type().as_ref().map(|s| s.as_str()),
        content_encoding: d.properties.content_encoding().as_ref().map(|s| s.as_str()),
        headers: &headers,
        body: &d.data,
    };
    let msg = match celery::decode(&incoming, agent.settings.max_message_bytes) {
        Ok(m) => m,
        Err(rej) => {
            let rejected = Rejected {
                reply_to: incoming.reply_to.filter(|r| !r.is_empty()).map(str::to_string),
                correlation_id: incoming.correlation_id.map(str::to_string),
                exception: ("InvalidTaskError", "celery.exceptions"),
                rejection: rej,
            };
            reject(&agent, &consumer.spec, &d, rejected).await;
            return;
        }
    };
    if !tasks::known(&msg.task) {
        let e = tasks::TaskError::NotRegistered(msg.task.clone());
        let rejected = Rejected {
            reply_to: msg.reply_to.clone(),
            correlation_id: Some(msg.correlation_id.clone()),
            exception: e.exception(),
            rejection: celery::Rejection {
                reason: e.to_string(),
                id: Some(msg.id.clone()),
                task: Some(msg.task.clone()),
            },
        };
        reject(&agent, &consumer.spec, &d, rejected).await;
        return;
    }
    if let Some(exp) = msg.expires
        && exp < jiff::Timestamp::now()
    {
        revoke(&agent, &msg, &consumer.spec.queue, &d, Revoked::Expired).await;
        return;
    }
    let mut shutdown = agent.shutdown.subscribe();
    if let Some(eta) = msg.eta {
        let wait = eta.duration_since(jiff::Timestamp::now());
        if wait.is_positive() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()) => {}
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
                    requeue(&d).await;
                    return;
                }
            }
        }
    }
    // A redelivery of a task that is being handled here waits for that
    // handler; then this one takes the id.
    let _claim = agent.results.claim(&msg.id).await;
    if let Some(answer) = agent.results.answer(&msg.id) {
        info!(id = %msg.id, "redelivered task already finished; sending its result again");
        publish_result(&agent, &answer).await;
        ack(&d).await;
        return;
    }
    // A task of a cancelled job is answered before it waits for a slot, so
    // a job's queued tasks all come back REVOKED at once instead of one
    // slot at a time behind running tasks; and after the claim, so a
    // redelivered task that already finished gets its real result.
    if agent.controls.is_cancelled_now(&msg.root_id) {
        revoke(&agent, &msg, &consumer.spec.queue, &d, Revoked::Cancelled).await;
        return;
    }
    if let Some(queue) = agent
        .controls
        .parking_now(&msg.root_id, &msg.task, msg.reply_to.as_deref())
    {
        park(&agent, &consumer.spec, &msg, &d, &queue).await;
        return;
    }
    // Drained: what was delivered before the consumers stopped goes back
    // for the other nodes.
    if agent.controls.is_drained_now(&agent.node) {
        debug!(id = %msg.id, "drained: task handed back to its queue");
        requeue(&d).await;
        return;
    }
    let permit = tokio::select! {
        p = consumer.slots.clone().acquire_owned() => p.expect("semaphore open"),
        _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
            requeue(&d).await;
            return;
        }
    };
    // Asked again: the wait for a slot lasts as long as a running task, and
    // the cancel may have come meanwhile.
    if agent.controls.is_cancelled_now(&msg.root_id) {
        drop(permit);
        revoke(&agent, &msg, &consumer.spec.queue, &d, Revoked::Cancelled).await;
        return;
    }
    if let Some(queue) = agent
        .controls
        .parking_now(&msg.root_id, &msg.task, msg.reply_to.as_deref())
    {
        drop(permit);
        park(&agent, &consumer.spec, &msg, &d, &queue).await;
        return;
    }
    if agent.controls.is_drained_now(&agent.node) {
        drop(permit);
        requeue(&d).await;
        return;
    }
    agent.metrics.queue_wait.observe(arrived.elapsed().as_secs_f64());
    run_task(&agent, &consumer.spec, msg, &d).await;
    drop(permit);
}

async fn run_task(agent: &Arc<Agent>, spec: &ConsumerSpec, msg: TaskMessage, d: &Delivery) {
    let Some(session) = agent.session.borrow().clone() else {
        // Between sessions: the delivery's channel is gone or going.
        requeue(d).await;
        return;
    };
    let received = serde_json::json!({
        "uuid": msg.id, "name": msg.task, "args": "()", "kwargs": msg.kwargs_repr(),
        "retries": msg.retries,
    });
    agent
        .events
        .task(&session, "task-received", with_lineage(received, &msg))
        .await;
    agent
        .events
        .task(
            &session,
            "task-started",
            with_lineage(serde_json::json!({"uuid": msg.id, "name": msg.task}), &msg),
        )
        .await;
    info!(id = %msg.id, task = %msg.task, queue = %spec.queue, redelivered = d.redelivered, "task started");
    agent.metrics.active.inc();
    let t0 = std::time::Instant::now();
    let cancel = agent.controls.watch(&msg.root_id);
    let env = TaskEnv::new(&agent.site, &agent.node, spec, &agent.settings, cancel);
    let (agent2, session2) = (agent.clone(), session.clone());
    let joined = tokio::task::spawn_blocking(move || {
        // A hub's back-pressure on the children's queues.
        let max_depth = msg
            .kwarg("max_queue_depth")
            .and_then(|v| serde_json::from_str::<u32>(v.get()).ok())
            .filter(|n| *n > 0);
        let mut sink = BrokerSink::new(
            session2,
            agent2.handle.clone(),
            msg.reply_to.clone(),
            agent2.settings.confirm_window,
        )
        .with_max_depth(max_depth);
        // A bug must not leave the message unanswered or kill the agent:
        // a panic becomes the task's failure.
        let f = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tasks::run(&msg, &env, &agent2.ops, &mut sink)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Finished::failure(
                "InternalError",
                tasks::EXC_MODULE,
                &format!("the task panicked: {what}"),
            )
        });
        let flushed = sink.flush();
        agent2.metrics.children.inc_by(sink.sent());
        (msg, f, flushed)
    })
    .await;
    agent.metrics.active.dec();
    let ops = agent.ops.counters.snapshot();
    agent.metrics.sync_ops(ops.files, ops.bytes);
    let (msg, f, flushed) = match joined {
        Ok(x) => x,
        Err(e) => {
            error!(error = %e, "a task thread was lost; its message goes back to the queue");
            requeue(d).await;
            return;
        }
    };
    if let Err(e) = flushed {
        warn!(id = %msg.id, error = %e, "child tasks were not all confirmed; the task goes back to the queue to run again");
        requeue(d).await;
        return;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (outcome, kind, fields) = match f.state {
        TaskState::Success => {
            info!(id = %msg.id, task = %msg.task, runtime = secs, children = f.children.count, "task succeeded");
            let fields = serde_json::json!({"uuid": msg.id, "runtime": secs, "result": "..."});
            ("succeeded", "task-succeeded", fields)
        }
        _ => {
            warn!(id = %msg.id, task = %msg.task, runtime = secs, reason = %f.traceback.as_deref().unwrap_or(""), "task failed");
            let fields = serde_json::json!({"uuid": msg.id, "exception": f.traceback, "traceback": f.traceback});
            ("failed", "task-failed", fields)
        }
    };
    agent.events.task(&session, kind, with_lineage(fields, &msg)).await;
    finish(agent, &msg, &spec.queue, f, d, outcome).await;
}

/// Moves a task of a paused job or task type, unchanged, to the parking
/// queue `park` (with `x-ferry-queue` naming the queue it came from, so the hub
/// can move it back), then acks it. Published mandatory and confirmed: a
/// parking queue that is gone, or a broker that refuses, leaves the
/// message where it was (requeued after a second, so a paused job's
/// tasks do not spin through this agent).
async fn park(agent: &Arc<Agent>, spec: &ConsumerSpec, msg: &TaskMessage, d: &Delivery, park: &str) {
    let Some(session) = agent.session.borrow().clone() else {
        requeue(d).await;
        return;
    };
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-ferry-queue".into(),
        lapin::types::AMQPValue::LongString(spec.queue.as_bytes().into()),
    );
    let props = d.properties.clone().with_headers(headers);
    let sent = async {
        session.declare_queue(park).await?;
        session.publish_mandatory_confirmed("", park, &d.data, props).await
    };
    match sent.await {
        Ok(()) => {
            agent.metrics.finished("parked");
            debug!(id = %msg.id, task = %msg.task, queue = park, "task of a paused job or task type parked");
            ack(d).await;
        }
        Err(e) => {
            warn!(id = %msg.id, queue = park, error = %e, "cannot park a task of a paused job or task type; it goes back to its queue");
            tokio::time::sleep(Duration::from_secs(1)).await;
            requeue(d).await;
        }
    }
}

/// Why a task is answered `REVOKED` without running.
#[derive(Clone, Copy, Debug)]
enum Revoked {
    /// Its `expires` time has passed.
    Expired,
    /// Its job was cancelled over the control channel.
    Cancelled,
}

/// Answers a task without running it: a `REVOKED` result whose value is
/// Celery's `TaskRevokedError`, a `task-revoked` event with Celery's
/// fields, counted as `revoked`, then the ack.
async fn revoke(agent: &Arc<Agent>, msg: &TaskMessage, queue: &str, d: &Delivery, why: Revoked) {
    let (reason, expired) = match why {
        Revoked::Expired => ("expired", true),
        Revoked::Cancelled => ("job cancelled", false),
    };
    info!(id = %msg.id, task = %msg.task, root = %msg.root_id, reason, "task revoked without running");
    let session = agent.session.borrow().clone();
    if let Some(session) = session {
        let fields = serde_json::json!({
            "uuid": msg.id, "terminated": false, "signum": null, "expired": expired,
        });
        agent
            .events
            .task(&session, "task-revoked", with_lineage(fields, msg))
            .await;
    }
    let f = Finished {
        state: TaskState::Revoked,
        result: celery::exception("TaskRevokedError", "celery.exceptions", reason),
        traceback: None,
        children: Published::default(),
    };
    finish(agent, msg, queue, f, d, "revoked").await;
}

/// Event fields with the task's place in its job: `root_id`, `parent_id`
/// and `jobid` (as the message gave it; null when absent), so a hub can
/// attribute every event of a job without the task's result.
fn with_lineage(mut fields: serde_json::Value, msg: &TaskMessage) -> serde_json::Value {
    let jobid = msg
        .kwarg("jobid")
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v.get()).ok())
        .unwrap_or(serde_json::Value::Null);
    let f = fields.as_object_mut().expect("event fields are an object");
    f.insert("root_id".into(), msg.root_id.clone().into());
    f.insert("parent_id".into(), msg.parent_id.clone().into());
    f.insert("jobid".into(), jobid);
    fields
}

/// Records, publishes and acknowledges a finished task that came from
/// `queue`; `outcome` labels it in the metrics.
async fn finish(agent: &Arc<Agent>, msg: &TaskMessage, queue: &str, f: Finished, d: &Delivery, outcome: &str) {
    agent.metrics.finished(outcome);
    let head = celery::ResultHead {
        task_id: &msg.id,
        name: &msg.task,
        parent_id: msg.parent_id.as_deref(),
        jobid: msg.kwarg("jobid"),
        worker: &agent.node,
        queue,
    };
    let document = celery::result_document(
        &head,
        f.state,
        &f.result,
        f.traceback.as_deref(),
        &f.children.ids,
        f.children.count,
        f.children.run,
    );
    let answer = Arc::new(Answer {
        reply_to: msg.reply_to.clone(),
        correlation_id: msg.correlation_id.clone(),
        document,
    });
    agent.results.remember(&msg.id, answer.clone());
    publish_result(agent, &answer).await;
    ack(d).await;
}

/// Publishes a result document to its `reply_to` queue, retrying on the
/// next session until the broker confirms it.
async fn publish_result(agent: &Arc<Agent>, answer: &Answer) {
    let Some(reply_to) = &answer.reply_to else {
        return;
    };
    let mut sessions = agent.session.subscribe();
    loop {
        let current = sessions.borrow_and_update().clone();
        if let Some(s) = current {
            let props = broker::result_properties(&answer.correlation_id);
            match s.publish_confirmed("", reply_to, &answer.document, props).await {
                Ok(()) => return,
                Err(e) => warn!(error = %e, "cannot publish a result yet; will retry on the next connection"),
            }
        }
        if sessions.changed().await.is_err() {
            return;
        }
    }
}

/// Gives a delivery back to its queue.
async fn requeue(d: &Delivery) {
    let _ = d
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

async fn ack(d: &Delivery) {
    match d.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            debug!("the delivery's channel is gone; the broker will redeliver it and its result will be sent again")
        }
    }
}

/// A message that cannot be run, and whom to tell.
struct Rejected {
    rejection: celery::Rejection,
    /// The exception its caller gets (`exc_type`, `exc_module`).
    exception: (&'static str, &'static str),
    reply_to: Option<String>,
    correlation_id: Option<String>,
}

/// Answers a message that cannot be run: a FAILURE result to its caller
/// when it names one, otherwise the message goes to `<site>.dead-letter`
/// with the reason. The original is acknowledged either way.
async fn reject(agent: &Arc<Agent>, spec: &ConsumerSpec, d: &Delivery, r: Rejected) {
    let rej = &r.rejection;
    agent.metrics.finished("rejected");
    warn!(queue = %spec.queue, id = ?rej.id, task = ?rej.task, reason = %rej.reason, "rejected a message");
    let Some(session) = agent.session.borrow().clone() else {
        requeue(d).await;
        return;
    };
    match (&rej.id, r.reply_to) {
        (Some(id), Some(reply_to)) => {
            let (exc_type, exc_module) = r.exception;
            let head = celery::ResultHead {
                task_id: id,
                name: rej.task.as_deref().unwrap_or(""),
                parent_id: None,
                jobid: None,
                worker: &agent.node,
                queue: &spec.queue,
            };
            let doc = celery::result_document(
                &head,
                TaskState::Failure,
                &celery::exception(exc_type, exc_module, &rej.reason),
                Some(&rej.reason),
                &[],
                0,
                0,
            );
            let answer = Answer {
                reply_to: Some(reply_to),
                correlation_id: r.correlation_id.unwrap_or_else(|| id.clone()),
                document: doc,
            };
            publish_result(agent, &answer).await;
            let failed = serde_json::json!({"uuid": id, "exception": rej.reason});
            agent.events.task(&session, "task-failed", failed).await;
        }
        _ => {
            let queue = format!("{}.dead-letter", agent.site);
            let mut headers = d.properties.headers().clone().unwrap_or_default();
            headers.insert(
                "x-ferry-reason".into(),
                lapin::types::AMQPValue::LongString(rej.reason.as_bytes().into()),
            );
            headers.insert(
                "x-ferry-queue".into(),
                lapin::types::AMQPValue::LongString(spec.queue.as_bytes().into()),
            );
            let props = d.properties.clone().with_headers(headers);
            let sent = match session.declare_queue(&queue).await {
                Ok(()) => session.publish_confirmed("", &queue, &d.data, props).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = sent {
                warn!(error = %e, "cannot dead-letter the message; it stays in its queue");
                requeue(d).await;
                return;
            }
        }
    }
    ack(d).await;
}

/// A broker URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redact("amqp://u:secret@h:5672/%2f"), "amqp://u:***@h:5672/%2f");
        assert_eq!(redact("amqp://h:5672/v"), "amqp://h:5672/v");
    }
}
