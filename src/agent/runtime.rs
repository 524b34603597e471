//! The agent's runtime: one supervisor that keeps a broker session alive,
//! one consumer per `<site>.<queue>#<function>` queue, and one handler per
//! delivery.
//!
//! Ownership and order, per delivery: decode → wait for a slot of the
//! queue's function → run the task on a blocking thread (children are
//! published from there and confirmed) → publish the result to `reply_to`
//! and wait for its confirmation → acknowledge. A delivery whose channel
//! died meanwhile is redelivered by the broker; the agent remembers recent
//! results by task id, so a redelivered task that already finished gets
//! its result again instead of running twice.
//!
//! Shutdown (SIGTERM): consumers are cancelled, deliveries still waiting
//! for a slot go back to the queue, running tasks finish and report, then
//! the connection closes.

use super::broker::{self, EVENT_EXCHANGE, Session};
use super::celery::{self, Incoming, Outgoing, State, TaskMessage};
use super::discovery::{ChildSink, Inbox};
use super::metrics::Metrics;
use super::queues::ConsumerSpec;
use super::registry::{self, Env, Finished};
use crate::config::Config;
use crate::ops::OpContext;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, PublisherConfirm};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, error, info, warn};

/// How many finished tasks' results are kept for redeliveries.
const REMEMBERED_RESULTS: usize = 10_000;

struct Done {
    reply_to: Option<String>,
    correlation_id: String,
    document: Vec<u8>,
}

/// Recent results by task id, oldest forgotten first.
#[derive(Default)]
struct Remembered {
    map: HashMap<String, Arc<Done>>,
    order: VecDeque<String>,
}

impl Remembered {
    fn get(&self, id: &str) -> Option<Arc<Done>> {
        self.map.get(id).cloned()
    }

    fn insert(&mut self, id: &str, done: Arc<Done>) {
        if self.map.insert(id.to_string(), done).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > REMEMBERED_RESULTS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

struct Shared {
    config: Config,
    site: String,
    node: String,
    ops: OpContext,
    metrics: Arc<Metrics>,
    session: watch::Sender<Option<Arc<Session>>>,
    shutdown: watch::Sender<bool>,
    inflight: watch::Sender<usize>,
    clock: AtomicU64,
    done: Mutex<Remembered>,
    /// Tasks being handled here, by id: a redelivery of one waits until
    /// the first handler is done (its receiver turns true).
    running: Mutex<HashMap<String, watch::Receiver<bool>>>,
    slots: HashMap<String, Arc<Semaphore>>,
    specs: Vec<ConsumerSpec>,
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
        let host = nix_hostname().unwrap_or_else(|| "localhost".into());
        format!("ferry@{host}")
    })
}

fn nix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Prepares an agent for `config`; [`serve`] runs it.
pub fn prepare(config: Config) -> Result<(AgentHandle, impl std::future::Future<Output = ()>), String> {
    let specs = config.consumers()?;
    let site = config.settings.site.clone().expect("consumers() checked the site");
    let node = node_name(&config);
    let ops = OpContext::with_handle(config.clone(), None, tokio::runtime::Handle::current());
    let slots = specs
        .iter()
        .map(|s| (s.queue.clone(), Arc::new(Semaphore::new(s.threads))))
        .collect();
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        site,
        node,
        ops,
        metrics: metrics.clone(),
        session: watch::channel(None).0,
        shutdown: watch::channel(false).0,
        inflight: watch::channel(0).0,
        clock: AtomicU64::new(0),
        done: Mutex::new(Remembered::default()),
        running: Mutex::new(HashMap::new()),
        slots,
        specs,
        handle: tokio::runtime::Handle::current(),
        config,
    });
    if let Some(addr) = shared.config.agent.metrics_listen {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| format!("cannot serve metrics on {addr} (metrics_listen): {e}"))?;
        tokio::spawn(serve_metrics(listener, metrics.clone()));
    }
    let handle = AgentHandle {
        shutdown: shared.shutdown.clone(),
    };
    Ok((handle, serve(shared)))
}

async fn serve(shared: Arc<Shared>) {
    info!(node = %shared.node, queues = ?shared.specs.iter().map(|s| &s.queue).collect::<Vec<_>>(), "ferry agent starting");
    tokio::spawn(heartbeats(shared.clone()));
    tokio::spawn(queue_depths(shared.clone()));
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = Duration::from_millis(100);
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        notify_status(&format!("connecting to {}", redact(&shared.config.agent.broker_url)));
        let session = match Session::connect(&shared.config.agent.broker_url, &shared.node).await {
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
        shared.session.send_replace(Some(session.clone()));
        let consumers = match start_consumers(&shared, &session).await {
            Ok(c) => c,
            Err(e) => {
                shared.session.send_replace(None);
                warn!(error = %e, "cannot set up the consumers");
                let _ = session.conn.close(320, "ferry: setup failed".into()).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        shared.metrics.connected.store(true, Relaxed);
        event(&shared, &session, "worker-online", serde_json::json!({})).await;
        info!("connected; consuming {} queues", consumers.len());
        notify_status("connected");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if !session.alive() || consumers.iter().any(|(_, _, t)| t.is_finished()) {
                        break;
                    }
                }
                _ = shutdown.changed() => {
                    drain(&shared, &session, &consumers).await;
                    break 'outer;
                }
            }
        }
        shared.session.send_replace(None);
        shared.metrics.connected.store(false, Relaxed);
        shared.metrics.reconnects.inc();
        warn!("lost the broker; unacknowledged tasks go back to their queues; reconnecting");
        for (_, _, t) in consumers {
            t.abort();
        }
    }
    notify_status("stopped");
}

type ConsumerTask = (Channel, String, tokio::task::JoinHandle<()>);

async fn start_consumers(shared: &Arc<Shared>, session: &Arc<Session>) -> lapin::Result<Vec<ConsumerTask>> {
    let mut out = Vec::new();
    for spec in &shared.specs {
        let ch = session.channel().await?;
        ch.basic_qos(spec.threads.min(u16::MAX as usize) as u16, BasicQosOptions::default())
            .await?;
        session.declare_queue(&spec.queue).await?;
        let tag = format!("{}/{}", shared.node, spec.queue);
        let mut consumer = ch
            .basic_consume(
                spec.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (shared2, spec2) = (shared.clone(), spec.clone());
        let task = tokio::spawn(async move {
            while let Some(d) = consumer.next().await {
                match d {
                    Ok(d) => {
                        tokio::spawn(handle(shared2.clone(), spec2.clone(), d));
                    }
                    Err(e) => {
                        debug!(error = %e, queue = %spec2.queue, "consumer ended");
                        break;
                    }
                }
            }
        });
        out.push((ch, tag, task));
    }
    Ok(out)
}

async fn drain(shared: &Arc<Shared>, session: &Arc<Session>, consumers: &[ConsumerTask]) {
    info!("stopping: no new tasks; waiting for running ones");
    notify(&[sd_notify::NotifyState::Stopping]);
    for (ch, tag, _) in consumers {
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }
    // Running tasks report on this session; if it dies meanwhile their
    // results cannot be sent, and their messages return to the queue.
    let mut inflight = shared.inflight.subscribe();
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
    event(shared, session, "worker-offline", serde_json::json!({})).await;
    let _ = session.conn.close(200, "ferry agent stopped".into()).await;
    info!("stopped");
}

struct Inflight(Arc<Shared>);

impl Inflight {
    fn new(s: &Arc<Shared>) -> Inflight {
        s.inflight.send_modify(|n| *n += 1);
        Inflight(s.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.send_modify(|n| *n -= 1);
    }
}

async fn handle(shared: Arc<Shared>, spec: ConsumerSpec, d: Delivery) {
    let _inflight = Inflight::new(&shared);
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
    let msg = match celery::decode(&incoming, shared.config.agent.max_message_bytes) {
        Ok(m) => m,
        Err(rej) => {
            let reply_to = incoming.reply_to.filter(|r| !r.is_empty()).map(str::to_string);
            let corr = incoming.correlation_id.map(str::to_string);
            let exc = ("InvalidTaskError", "celery.exceptions");
            reject(&shared, &spec, &d, rej, exc, reply_to, corr).await;
            return;
        }
    };
    if !registry::known(&msg.task) {
        let rej = celery::Rejection {
            reason: format!("{:?} is not a task ferry runs", msg.task),
            id: Some(msg.id.clone()),
            task: Some(msg.task.clone()),
        };
        let exc = ("NotRegistered", "celery.exceptions");
        reject(
            &shared,
            &spec,
            &d,
            rej,
            exc,
            msg.reply_to.clone(),
            Some(msg.correlation_id.clone()),
        )
        .await;
        return;
    }
    if let Some(exp) = msg.expires
        && exp < jiff::Timestamp::now()
    {
        let f = Finished {
            state: State::Revoked,
            result: celery::exception("TaskRevokedError", "celery.exceptions", "expired"),
            traceback: None,
            children: Vec::new(),
        };
        info!(id = %msg.id, "task expired before it ran");
        finish(&shared, &msg, f, &d, "revoked").await;
        return;
    }
    let mut shutdown = shared.shutdown.subscribe();
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
    // handler; then this one takes the id (checked and taken under one lock).
    let _running = loop {
        let waiting = {
            let mut map = shared.running.lock().expect("running");
            match map.get(&msg.id) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(false);
                    map.insert(msg.id.clone(), rx);
                    break Running {
                        shared: shared.clone(),
                        id: msg.id.clone(),
                        done: tx,
                    };
                }
            }
        };
        let mut rx = waiting;
        let _ = rx.wait_for(|done| *done).await.map(|_| ());
    };
    let done = shared.done.lock().expect("done").get(&msg.id);
    if let Some(done) = done {
        info!(id = %msg.id, "redelivered task already finished; sending its result again");
        publish_result(&shared, &done).await;
        ack(&d).await;
        return;
    }
    let slot = shared.slots[&spec.queue].clone();
    let permit = tokio::select! {
        p = slot.acquire_owned() => p.expect("semaphore open"),
        _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
            requeue(&d).await;
            return;
        }
    };
    shared.metrics.queue_wait.observe(arrived.elapsed().as_secs_f64());
    run_task(&shared, &spec, msg, &d).await;
    drop(permit);
}

/// A task id taken by one handler; dropping it frees the id and wakes any
/// redelivery of the same task waiting for it.
struct Running {
    shared: Arc<Shared>,
    id: String,
    done: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.running.lock().expect("running").remove(&self.id);
        self.done.send_replace(true);
    }
}

async fn run_task(shared: &Arc<Shared>, spec: &ConsumerSpec, msg: TaskMessage, d: &Delivery) {
    let Some(session) = shared.session.borrow().clone() else {
        // Between sessions: the delivery's channel is gone or going.
        requeue(d).await;
        return;
    };
    if shared.config.agent.task_events {
        let fields = serde_json::json!({
            "uuid": msg.id, "name": msg.task, "args": "()", "kwargs": msg.kwargs_repr(),
            "retries": msg.retries, "root_id": msg.root_id, "parent_id": msg.parent_id,
        });
        event(shared, &session, "task-received", fields).await;
        event(shared, &session, "task-started", serde_json::json!({"uuid": msg.id})).await;
    }
    info!(id = %msg.id, task = %msg.task, queue = %spec.queue, redelivered = d.redelivered, "task started");
    shared.metrics.active.inc();
    let t0 = std::time::Instant::now();
    let env = Env {
        site: shared.site.clone(),
        queue: spec.queue_config.clone(),
        queue_name: spec.queue.clone(),
        node: shared.node.clone(),
        agent: shared.config.agent.clone(),
    };
    let (shared2, session2) = (shared.clone(), session.clone());
    let joined = tokio::task::spawn_blocking(move || {
        let mut sink = BrokerSink {
            session: session2,
            handle: shared2.handle.clone(),
            reply_to: msg.reply_to.clone(),
            pending: VecDeque::new(),
            window: shared2.config.agent.confirm_window,
            lost: None,
            sent: 0,
        };
        // A bug must not leave the message unanswered or kill the agent:
        // a panic becomes the task's failure.
        let f = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            registry::run(&msg, &env, &shared2.ops, &mut sink)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Finished::failure("InternalError", "ferry", &format!("the task panicked: {what}"))
        });
        let flushed = sink.flush();
        shared2.metrics.children.inc_by(sink.sent);
        (msg, f, flushed)
    })
    .await;
    shared.metrics.active.dec();
    let ops = shared.ops.counters.snapshot();
    shared.metrics.sync_ops(ops.files, ops.bytes);
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
    match f.state {
        State::Success => {
            info!(id = %msg.id, task = %msg.task, runtime = secs, children = f.children.len(), "task succeeded")
        }
        _ => {
            warn!(id = %msg.id, task = %msg.task, runtime = secs, reason = %f.traceback.as_deref().unwrap_or(""), "task failed")
        }
    }
    if shared.config.agent.task_events {
        let (kind, fields) = match f.state {
            State::Success => (
                "task-succeeded",
                serde_json::json!({"uuid": msg.id, "runtime": secs, "result": "..."}),
            ),
            _ => (
                "task-failed",
                serde_json::json!({"uuid": msg.id, "exception": f.traceback, "traceback": f.traceback}),
            ),
        };
        event(shared, &session, kind, fields).await;
    }
    let outcome = if f.state == State::Success {
        "succeeded"
    } else {
        "failed"
    };
    finish(shared, &msg, f, d, outcome).await;
}

/// Records, publishes and acknowledges a finished task; `outcome` labels
/// it in the metrics.
async fn finish(shared: &Arc<Shared>, msg: &TaskMessage, f: Finished, d: &Delivery, outcome: &str) {
    shared.metrics.finished(outcome);
    let document = celery::result_document(
        &msg.id,
        f.state,
        &f.result,
        f.traceback.as_deref(),
        &f.children,
        msg.parent_id.as_deref(),
    );
    let done = Arc::new(Done {
        reply_to: msg.reply_to.clone(),
        correlation_id: msg.correlation_id.clone(),
        document,
    });
    shared.done.lock().expect("done").insert(&msg.id, done.clone());
    publish_result(shared, &done).await;
    ack(d).await;
}

/// Publishes a result document to its `reply_to` queue, retrying on the
/// next session until the broker confirms it.
async fn publish_result(shared: &Arc<Shared>, done: &Done) {
    let Some(reply_to) = &done.reply_to else {
        return;
    };
    let mut sessions = shared.session.subscribe();
    loop {
        let current = sessions.borrow_and_update().clone();
        if let Some(s) = current {
            let props = broker::result_properties(&done.correlation_id);
            match s.publish_confirmed("", reply_to, &done.document, props).await {
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

/// Answers a message that cannot be run: a FAILURE result to its caller
/// when it names one, otherwise the message goes to `<site>.dead-letter`
/// with the reason. The original is acknowledged either way.
async fn reject(
    shared: &Arc<Shared>,
    spec: &ConsumerSpec,
    d: &Delivery,
    rej: celery::Rejection,
    (exc_type, exc_module): (&str, &str),
    reply_to: Option<String>,
    corr: Option<String>,
) {
    shared.metrics.finished("rejected");
    warn!(queue = %spec.queue, id = ?rej.id, task = ?rej.task, reason = %rej.reason, "rejected a message");
    let Some(session) = shared.session.borrow().clone() else {
        requeue(d).await;
        return;
    };
    match (&rej.id, reply_to) {
        (Some(id), Some(reply_to)) => {
            let doc = celery::result_document(
                id,
                State::Failure,
                &celery::exception(exc_type, exc_module, &rej.reason),
                Some(&rej.reason),
                &[],
                None,
            );
            let done = Done {
                reply_to: Some(reply_to),
                correlation_id: corr.unwrap_or_else(|| id.clone()),
                document: doc,
            };
            publish_result(shared, &done).await;
            if shared.config.agent.task_events {
                event(
                    shared,
                    &session,
                    "task-failed",
                    serde_json::json!({"uuid": id, "exception": rej.reason}),
                )
                .await;
            }
        }
        _ => {
            let queue = format!("{}.dead-letter", shared.site);
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
                Err(e) => Err(e.to_string()),
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

/// Publishes child tasks from a blocking task thread, keeping at most
/// `window` unconfirmed.
struct BrokerSink {
    session: Arc<Session>,
    handle: tokio::runtime::Handle,
    reply_to: Option<String>,
    pending: VecDeque<PublisherConfirm>,
    window: usize,
    lost: Option<String>,
    sent: u64,
}

impl BrokerSink {
    fn flush(&mut self) -> Result<(), String> {
        while let Some(c) = self.pending.pop_front() {
            self.wait(c)?;
        }
        match &self.lost {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn wait(&mut self, c: PublisherConfirm) -> Result<(), String> {
        broker::confirmed(self.handle.block_on(c)).inspect_err(|e| self.lost = Some(e.clone()))
    }
}

impl BrokerSink {
    /// Publishes `body` to `queue` (declared first when `declare`),
    /// keeping at most `window` confirmations outstanding.
    fn publish(
        &mut self,
        queue: &str,
        declare: bool,
        body: &[u8],
        props: lapin::BasicProperties,
    ) -> Result<(), String> {
        if let Some(e) = &self.lost {
            return Err(e.clone());
        }
        let session = self.session.clone();
        let r = self.handle.block_on(async {
            if declare {
                session.declare_queue(queue).await?;
            }
            session.publish("", queue, body, props).await
        });
        match r {
            Ok(c) => {
                self.pending.push_back(c);
                if self.pending.len() > self.window {
                    let oldest = self.pending.pop_front().expect("pending");
                    self.wait(oldest)?;
                }
                Ok(())
            }
            Err(e) => {
                let e = format!("cannot publish to {queue}: {e}");
                self.lost = Some(e.clone());
                Err(e)
            }
        }
    }
}

impl ChildSink for BrokerSink {
    fn send(&mut self, queue: &str, msg: Outgoing) -> Result<(), String> {
        let props = broker::task_properties(&msg.id, self.reply_to.as_deref(), &msg.headers);
        self.publish(queue, true, &msg.body, props)?;
        self.sent += 1;
        Ok(())
    }

    fn stream(&mut self, queue: &str, correlation_id: &str, body: Vec<u8>) -> Result<(), String> {
        // Stream queues belong to the task reading them; never declare one
        // here, so a stream to a task that is gone is simply dropped.
        self.publish(queue, false, &body, broker::result_properties(correlation_id))
    }

    fn subscribe(&mut self, queue: &str) -> Result<Box<dyn Inbox>, String> {
        let session = self.session.clone();
        let q = queue.to_string();
        let consumer = self
            .handle
            .block_on(async move {
                let ch = session.channel().await?;
                ch.queue_declare(
                    q.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
                let c = ch
                    .basic_consume(
                        q.as_str().into(),
                        "".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((ch, c))
            })
            .map_err(|e| {
                let e = format!("cannot read stream queue {queue}: {e}");
                self.lost = Some(e.clone());
                e
            })?;
        Ok(Box::new(BrokerInbox {
            handle: self.handle.clone(),
            channel: consumer.0,
            consumer: consumer.1,
        }))
    }
}

/// A task's private stream queue.
struct BrokerInbox {
    handle: tokio::runtime::Handle,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Inbox for BrokerInbox {
    fn next(&mut self, idle: Duration) -> Result<Option<Vec<u8>>, String> {
        let next = self.handle.block_on(tokio::time::timeout(idle, self.consumer.next()));
        match next {
            Err(_) => Ok(None),
            Ok(Some(Ok(d))) => Ok(Some(d.data)),
            Ok(Some(Err(e))) => Err(format!("lost the stream queue: {e}")),
            Ok(None) => Err("the stream queue closed".into()),
        }
    }
}

impl Drop for BrokerInbox {
    fn drop(&mut self) {
        let ch = self.channel.clone();
        self.handle.spawn(async move {
            let _ = ch.close(200, "stream read".into()).await;
        });
    }
}

/// Publishes one Celery event (no confirmation awaited: events are
/// transient by Celery's design).
async fn event(shared: &Shared, session: &Session, kind: &str, mut fields: serde_json::Value) {
    let now = jiff::Timestamp::now();
    let f = fields.as_object_mut().expect("object");
    f.insert("type".into(), kind.into());
    f.insert("hostname".into(), shared.node.clone().into());
    f.insert("timestamp".into(), (now.as_millisecond() as f64 / 1000.0).into());
    f.insert("utcoffset".into(), 0.into());
    f.insert("pid".into(), std::process::id().into());
    f.insert("clock".into(), (shared.clock.fetch_add(1, Relaxed) + 1).into());
    let body = fields.to_string();
    let key = kind.replace('-', ".");
    if let Err(e) = session
        .publish(
            EVENT_EXCHANGE,
            &key,
            body.as_bytes(),
            broker::event_properties(&shared.node),
        )
        .await
    {
        debug!(error = %e, event = kind, "cannot send an event");
    }
}

async fn heartbeats(shared: Arc<Shared>) {
    let interval = shared.config.agent.heartbeat_interval;
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = watchdog.map_or(interval, |w| w.min(interval));
    let mut last_beat = std::time::Instant::now() - interval;
    loop {
        tokio::time::sleep(tick).await;
        if watchdog.is_some() {
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
        if !shared.config.agent.heartbeat || last_beat.elapsed() < interval {
            continue;
        }
        last_beat = std::time::Instant::now();
        let Some(session) = shared.session.borrow().clone() else {
            continue;
        };
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let loadavg: Vec<f64> = load.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
        let m = &shared.metrics;
        let fields = serde_json::json!({
            "freq": interval.as_secs_f64(),
            "sw_ident": "ferry",
            "sw_ver": env!("CARGO_PKG_VERSION"),
            "sw_sys": "Linux",
            "active": m.active.get(),
            "processed": m.processed(),
            "loadavg": loadavg,
            "queues": shared.specs.iter().map(|s| s.queue.clone()).collect::<Vec<_>>(),
        });
        event(&shared, &session, "worker-heartbeat", fields).await;
    }
}

async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
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

/// Polls how many messages wait in each consumed queue, every 10 s.
async fn queue_depths(shared: Arc<Shared>) {
    let mut sessions = shared.session.subscribe();
    loop {
        let session = sessions.borrow_and_update().clone();
        // The queues exist once the consumers are up (`connected`); a
        // passive declare of a missing queue would close the channel.
        while session.as_ref().is_some_and(|s| s.alive()) && !shared.metrics.connected.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(session) = session
            && let Ok(ch) = session.channel().await
        {
            'poll: while session.alive() {
                for spec in &shared.specs {
                    let opts = lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    };
                    match ch
                        .queue_declare(spec.queue.as_str().into(), opts, FieldTable::default())
                        .await
                    {
                        Ok(q) => {
                            let labels = vec![("queue".to_string(), spec.queue.clone())];
                            shared
                                .metrics
                                .queue_messages
                                .get_or_create(&labels)
                                .set(q.message_count() as i64);
                        }
                        Err(_) => break 'poll,
                    }
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
        if sessions.changed().await.is_err() {
            return;
        }
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(state);
}

fn notify_status(s: &str) {
    notify(&[sd_notify::NotifyState::Status(s)]);
}

/// Tells systemd the agent is ready (its configuration is valid and it is
/// serving or connecting).
pub fn notify_ready() {
    notify(&[sd_notify::NotifyState::Ready]);
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
