//! The broker connection: one AMQP connection with a confirmed publishing
//! channel; the broker side of a task's [`ChildSink`] and [`Inbox`]; and
//! the conversions between lapin's header tables and the codec's
//! [`HeaderValue`]s.
//!
//! A [`Session`] lives as long as its connection. When the connection
//! drops, the agent makes a new session; nothing here retries by itself,
//! so what was lost is always visible to the caller.

use super::celery::{HeaderValue, Outgoing};
pub use super::tasks::QueueCounts;
use super::tasks::{ChildSink, Inbox, SinkError};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use lapin::{Confirmation, PublisherConfirm};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tracing::{info, warn};

/// Why a publish did not reach the broker's responsibility.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The AMQP call failed (connection or channel gone, refused declare).
    #[error("{0}")]
    Amqp(#[from] lapin::Error),
    /// The message had no queue to go to.
    #[error("the broker returned the message as unroutable")]
    Unroutable,
    /// The broker refused it.
    #[error("the broker refused the message (nack)")]
    Refused,
    /// The connection went before the confirmation came.
    #[error("lost the broker before it confirmed: {0}")]
    Unconfirmed(lapin::Error),
}

/// Whether a refused queue declare means the queue exists with other
/// properties: the broker answers a declare without arguments of an
/// existing queue whose durability, exclusivity or arguments differ with
/// 406 PRECONDITION_FAILED ("inequivalent arg ...").
fn other_properties(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(a)
        if *a.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
}

/// Celery's event exchange.
pub const EVENT_EXCHANGE: &str = "celeryev";

/// A live connection and its publishing channel.
pub struct Session {
    /// The connection.
    pub conn: Connection,
    publish: Channel,
    declared: Mutex<HashSet<String>>,
}

/// Queue `queue`'s counts, asked on `ch` with a passive declare, which
/// never creates a queue; `None` when the broker cannot say (no such
/// queue, or the connection is going), and then the broker has closed
/// `ch`: the caller opens another channel to ask again. The one way the
/// agent and the hub look into a queue (back-pressure, metrics, alerts,
/// parked tasks).
pub async fn queue_counts(ch: &lapin::Channel, queue: &str) -> Option<QueueCounts> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|q| QueueCounts {
            messages: q.message_count(),
            consumers: q.consumer_count(),
        })
}

impl Session {
    /// Connects, opens a publishing channel in confirm mode and declares
    /// Celery's event exchange the way Celery does (topic, durable).
    pub async fn connect(url: &str, name: &str) -> lapin::Result<Session> {
        let conn = Connection::connect(url, ConnectionProperties::default().with_connection_name(name.into())).await?;
        let publish = conn.create_channel().await?;
        publish.confirm_select(ConfirmSelectOptions::default()).await?;
        publish
            .exchange_declare(
                EVENT_EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            conn,
            publish,
            declared: Mutex::new(HashSet::new()),
        })
    }

    /// Whether the connection is still up.
    pub fn alive(&self) -> bool {
        self.conn.status().connected() && self.publish.status().connected()
    }

    /// Makes sure a task queue exists, declaring it as Celery declares its
    /// queues (durable, not auto-delete, no arguments), so a missing queue
    /// is created exactly as a Celery client or worker would create it.
    ///
    /// The declare is not preceded by a passive one: asking for a queue
    /// that does not exist makes the broker close the channel with 404
    /// NOT_FOUND, and lapin (4.12, `Channel::on_channel_close_received`)
    /// logs every channel the broker closes at ERROR, from its I/O thread
    /// and so outside any span of ours, which no filter can confine to
    /// that probe: a first start, where no queue exists yet, would log an
    /// ERROR for every queue it then creates.
    ///
    /// A queue that already exists with other properties (a priority or
    /// quorum queue, say) makes the broker refuse the declare with 406
    /// PRECONDITION_FAILED; lapin logs that refusal at ERROR, and this adds a
    /// warning naming the queue and uses the queue as it is (a consume or
    /// publish that follows still fails visibly should it be gone). Any
    /// other refusal (access, an exclusive queue of another connection) is
    /// returned. Declares run on their own short-lived channels, so a
    /// refused one never closes the publishing channel. Once per session
    /// per queue.
    pub async fn declare_queue(&self, name: &str) -> lapin::Result<()> {
        if self.declared.lock().expect("declared").contains(name) {
            return Ok(());
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let ch = self.conn.create_channel().await?;
        match ch.queue_declare(name.into(), durable, FieldTable::default()).await {
            Ok(_) => {
                let _ = ch.close(200, "declared".into()).await;
            }
            // The broker closed the channel: nothing to close.
            Err(e) if other_properties(&e) => warn!(
                queue = name,
                broker = %e,
                "the queue exists with other properties than Celery declares (durable, no arguments); using it as it is"
            ),
            Err(e) => return Err(e),
        }
        self.declared.lock().expect("declared").insert(name.to_string());
        Ok(())
    }

    /// Publishes a message; the returned confirm resolves when the broker
    /// has taken responsibility for it.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> lapin::Result<PublisherConfirm> {
        self.publish
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
    }

    /// Publishes and waits for the broker's confirmation.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let confirm = self.publish(exchange, routing_key, body, props).await?;
        confirmed(confirm.await)
    }

    /// Publishes with the `mandatory` flag and waits for the broker's
    /// confirmation: a message no queue takes comes back as
    /// [`BrokerError::Unroutable`] instead of being dropped.
    pub async fn publish_mandatory_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let opts = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = self
            .publish
            .basic_publish(exchange.into(), routing_key.into(), opts, body, props)
            .await?;
        confirmed(confirm.await)
    }

    /// A new channel on this connection.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.conn.create_channel().await
    }

    /// Queue `queue`'s counts ([`queue_counts`]) asked on a channel of its
    /// own, closed after; `None` when the broker cannot say (no such
    /// queue: it closed the channel itself).
    pub async fn counts_of(&self, queue: &str) -> lapin::Result<Option<QueueCounts>> {
        let ch = self.channel().await?;
        let q = queue_counts(&ch, queue).await;
        if q.is_some() {
            let _ = ch.close(200, "counted".into()).await;
        }
        Ok(q)
    }
}

/// Turns a confirmation into success or the reason it failed.
pub fn confirmed(c: lapin::Result<Confirmation>) -> Result<(), BrokerError> {
    match c {
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
        Ok(Confirmation::Ack(Some(_))) => Err(BrokerError::Unroutable),
        Ok(Confirmation::Nack(_)) => Err(BrokerError::Refused),
        Err(e) => Err(BrokerError::Unconfirmed(e)),
    }
}

/// Publishes a task's child tasks and streams from its blocking thread,
/// keeping at most `window` unconfirmed; after the first failure every
/// call fails the same way, so a task cannot report children it lost.
pub struct BrokerSink {
    session: Arc<Session>,
    handle: Handle,
    reply_to: Option<String>,
    pending: VecDeque<(String, PublisherConfirm)>,
    window: usize,
    lost: Option<SinkError>,
    sent: u64,
    /// Back-pressure: most messages a child's queue may hold before more
    /// are published (the task's `max_queue_depth`), and what was last
    /// seen of each queue: when, and how many it held plus those sent
    /// since.
    max_depth: Option<u32>,
    depths: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

/// How often a queue's depth is asked while it is below the limit.
const DEPTH_CHECK_EVERY: Duration = Duration::from_secs(1);

impl BrokerSink {
    /// A sink on `session` whose children answer to `reply_to`, driven
    /// from a blocking thread through `handle`.
    pub fn new(session: Arc<Session>, handle: Handle, reply_to: Option<String>, window: usize) -> BrokerSink {
        BrokerSink {
            session,
            handle,
            reply_to,
            pending: VecDeque::new(),
            window,
            lost: None,
            sent: 0,
            max_depth: None,
            depths: Default::default(),
        }
    }

    /// Holds back children while their queue holds more than `limit`
    /// messages (a hub's `max_queue_depth`): a 100 M-file walk cannot
    /// fill the broker's memory, and other jobs' tasks interleave.
    pub fn with_max_depth(mut self, limit: Option<u32>) -> BrokerSink {
        self.max_depth = limit;
        self
    }

    /// Waits while `queue` holds more than the limit. Its depth is asked
    /// at most every [`DEPTH_CHECK_EVERY`], or as soon as the messages
    /// sent since the last answer could have reached the limit, once
    /// every message sent is confirmed (so counted by the broker).
    fn wait_for_room(&mut self, queue: &str) -> Result<(), SinkError> {
        let Some(limit) = self.max_depth else {
            return Ok(());
        };
        let limit = u64::from(limit);
        if let Some((at, estimate)) = self.depths.get(queue)
            && at.elapsed() < DEPTH_CHECK_EVERY
            && *estimate < limit
        {
            return Ok(());
        }
        // Messages published but not yet confirmed are not in the
        // broker's count: without this wait a walk publishing faster than
        // the confirms come back went 5 past a limit of 30
        // (tests/hub_pause.rs, about 1 run in 5).
        self.flush()?;
        let mut told = false;
        loop {
            let session = self.session.clone();
            let depth = self.handle.block_on(async {
                // Declared first (once per session, as a publish would), so
                // the passive declare never meets a missing queue.
                session.declare_queue(queue).await?;
                let q = session.counts_of(queue).await?;
                Ok::<_, lapin::Error>(q.map_or(0, |q| u64::from(q.messages)))
            });
            // A broker that cannot answer now: the publish says so.
            let depth = depth.unwrap_or_default();
            if depth < limit {
                self.depths
                    .insert(queue.to_string(), (std::time::Instant::now(), depth));
                if told {
                    info!(queue, depth, limit, "room in the queue again; publishing");
                }
                return Ok(());
            }
            if !told {
                info!(
                    queue,
                    depth, limit, "queue holds max_queue_depth messages or more; waiting to publish"
                );
                told = true;
            }
            if !self.session.alive() {
                return Err(self.fail(queue, BrokerError::Refused));
            }
            std::thread::sleep(DEPTH_CHECK_EVERY);
        }
    }

    /// Child tasks published so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Waits for every outstanding confirmation.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        while let Some((queue, c)) = self.pending.pop_front() {
            self.wait(&queue, c)?;
        }
        self.check()
    }

    fn check(&self) -> Result<(), SinkError> {
        self.lost.clone().map_or(Ok(()), Err)
    }

    fn fail(&mut self, queue: &str, e: BrokerError) -> SinkError {
        let e = SinkError::Publish {
            queue: queue.to_string(),
            reason: e.to_string(),
        };
        self.lost.get_or_insert(e).clone()
    }

    fn wait(&mut self, queue: &str, c: PublisherConfirm) -> Result<(), SinkError> {
        confirmed(self.handle.block_on(c)).map_err(|e| self.fail(queue, e))
    }

    /// Publishes `body` to `queue` (declared first when `declare`),
    /// keeping at most `window` confirmations outstanding.
    fn publish(&mut self, queue: &str, declare: bool, body: &[u8], props: BasicProperties) -> Result<(), SinkError> {
        self.check()?;
        let session = self.session.clone();
        let r = self.handle.block_on(async {
            if declare {
                session.declare_queue(queue).await?;
            }
            session.publish("", queue, body, props).await
        });
        match r {
            Ok(c) => {
                self.pending.push_back((queue.to_string(), c));
                if self.pending.len() > self.window {
                    let (q, oldest) = self.pending.pop_front().expect("pending");
                    self.wait(&q, oldest)?;
                }
                Ok(())
            }
            Err(e) => Err(self.fail(queue, e.into())),
        }
    }
}

impl ChildSink for BrokerSink {
    fn send(&mut self, queue: &str, msg: Outgoing) -> Result<(), SinkError> {
        self.wait_for_room(queue)?;
        let props = task_properties(&msg.id, self.reply_to.as_deref(), &msg.headers);
        self.publish(queue, true, &msg.body, props)?;
        self.sent += 1;
        if let Some((_, estimate)) = self.depths.get_mut(queue) {
            *estimate += 1;
        }
        Ok(())
    }

    fn ask(&mut self, queue: &str, msg: Outgoing) -> Result<(), SinkError> {
        let props = task_properties(&msg.id, None, &msg.headers);
        self.publish(queue, true, &msg.body, props)?;
        self.flush()
    }

    fn stream(&mut self, queue: &str, correlation_id: &str, body: Vec<u8>) -> Result<(), SinkError> {
        // Stream queues belong to the task reading them; never declare one
        // here, so a stream to a task that is gone is simply dropped.
        self.publish(queue, false, &body, result_properties(correlation_id))
    }

    fn progress(&mut self, task_id: &str, document: Vec<u8>) {
        let Some(to) = self.reply_to.clone() else { return };
        let session = self.session.clone();
        let sent = self
            .handle
            .block_on(async { session.publish("", &to, &document, result_properties(task_id)).await });
        if let Err(e) = sent {
            warn!(task = task_id, error = %e, "cannot send a progress report; the next one says more");
        }
    }

    fn report(&mut self, task_id: &str, document: Vec<u8>) -> Result<(), SinkError> {
        let Some(to) = self.reply_to.clone() else {
            return Err(SinkError::Publish {
                queue: "reply_to".into(),
                reason: "the task has none: no hub to report to".into(),
            });
        };
        self.publish(&to, false, &document, result_properties(task_id))
    }

    fn queue_counts(&mut self, queue: &str) -> Option<QueueCounts> {
        let session = self.session.clone();
        self.handle
            .block_on(async move { session.counts_of(queue).await })
            .ok()
            .flatten()
    }

    fn subscribe(&mut self, queue: &str) -> Result<Box<dyn Inbox>, SinkError> {
        let session = self.session.clone();
        let q = queue.to_string();
        let consumer = self
            .handle
            .block_on(async move {
                let ch = session.channel().await?;
                let private = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                };
                ch.queue_declare(q.as_str().into(), private, FieldTable::default())
                    .await?;
                let no_ack = BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                };
                let c = ch
                    .basic_consume(q.as_str().into(), "".into(), no_ack, FieldTable::default())
                    .await?;
                Ok::<_, lapin::Error>((ch, c))
            })
            .map_err(|e| {
                let e = SinkError::Subscribe {
                    queue: queue.to_string(),
                    reason: e.to_string(),
                };
                self.lost.get_or_insert(e).clone()
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
    handle: Handle,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Inbox for BrokerInbox {
    fn next(&mut self, idle: Duration) -> Result<Option<Vec<u8>>, SinkError> {
        let next = self.handle.block_on(tokio::time::timeout(idle, self.consumer.next()));
        match next {
            Err(_) => Ok(None),
            Ok(Some(Ok(d))) => Ok(Some(d.data)),
            Ok(Some(Err(e))) => Err(SinkError::StreamLost(e.to_string())),
            Ok(None) => Err(SinkError::StreamLost("the stream queue closed".into())),
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

/// Properties of a task message ferry sends, as Python's `send_task` sets them.
pub fn task_properties(id: &str, reply_to: Option<&str>, headers: &[(String, HeaderValue)]) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_correlation_id(id.into())
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_priority(0)
        .with_headers(to_table(headers));
    if let Some(r) = reply_to {
        p = p.with_reply_to(r.into());
    }
    p
}

/// Properties of a result message for the `rpc://` backend.
pub fn result_properties(correlation_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_correlation_id(correlation_id.into())
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
}

/// Properties of an event message: transient, with the `hostname` header.
pub fn event_properties(hostname: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(1)
        .with_headers(to_table(&[("hostname".into(), HeaderValue::Str(hostname.into()))]))
}

/// Converts a lapin table to header values.
pub fn from_table(t: &FieldTable) -> Vec<(String, HeaderValue)> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), from_value(v)))
        .collect()
}

fn from_value(v: &AMQPValue) -> HeaderValue {
    match v {
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::ShortShortInt(n) => HeaderValue::Int(*n as i64),
        AMQPValue::ShortShortUInt(n) => HeaderValue::Int(*n as i64),
        AMQPValue::ShortInt(n) => HeaderValue::Int(*n as i64),
        AMQPValue::ShortUInt(n) => HeaderValue::Int(*n as i64),
        AMQPValue::LongInt(n) => HeaderValue::Int(*n as i64),
        AMQPValue::LongUInt(n) => HeaderValue::Int(*n as i64),
        AMQPValue::LongLongInt(n) => HeaderValue::Int(*n),
        AMQPValue::Timestamp(n) => HeaderValue::Int(*n as i64),
        AMQPValue::Float(x) => HeaderValue::Float(*x as f64),
        AMQPValue::Double(x) => HeaderValue::Float(*x),
        AMQPValue::DecimalValue(d) => HeaderValue::Float(d.value as f64 / 10f64.powi(d.scale as i32)),
        AMQPValue::ShortString(s) => HeaderValue::Str(s.as_str().to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(s) => HeaderValue::Str(s.to_string()),
            Err(_) => HeaderValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::ByteArray(b) => HeaderValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::FieldArray(a) => HeaderValue::List(a.as_slice().iter().map(from_value).collect()),
        AMQPValue::FieldTable(t) => HeaderValue::Table(from_table(t)),
        AMQPValue::Void => HeaderValue::Null,
    }
}

/// Converts header values to a lapin table.
pub fn to_table(h: &[(String, HeaderValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in h {
        t.insert(ShortString::from(k.as_str()), to_value(v));
    }
    t
}

fn to_value(v: &HeaderValue) -> AMQPValue {
    match v {
        HeaderValue::Null => AMQPValue::Void,
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::Int(n) => AMQPValue::LongLongInt(*n),
        HeaderValue::Float(x) => AMQPValue::Double(*x),
        HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        HeaderValue::Bytes(b) => AMQPValue::LongString(LongString::from(b.as_slice())),
        HeaderValue::List(l) => {
            let mut a = FieldArray::default();
            for x in l {
                a.push(to_value(x));
            }
            AMQPValue::FieldArray(a)
        }
        HeaderValue::Table(t) => AMQPValue::FieldTable(to_table(t)),
    }
}
