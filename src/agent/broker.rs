//! The broker connection: one AMQP connection with a confirmed publishing
//! channel, and the conversions between lapin's header tables and the
//! codec's [`HeaderValue`]s.
//!
//! A [`Session`] lives as long as its connection. When the connection
//! drops, the agent makes a new session; nothing here retries by itself,
//! so what was lost is always visible to the caller.

use super::celery::HeaderValue;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lapin::{Confirmation, PublisherConfirm};
use std::collections::HashSet;
use std::sync::Mutex;

/// Celery's event exchange.
pub const EVENT_EXCHANGE: &str = "celeryev";

/// A live connection and its publishing channel.
pub struct Session {
    /// The connection.
    pub conn: Connection,
    publish: Channel,
    declared: Mutex<HashSet<String>>,
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

    /// Makes sure a task queue exists, declared as Celery creates missing
    /// ones (durable, not auto-delete, no arguments) when it does not.
    /// Declares run on their own short-lived channels: a queue that exists
    /// with other arguments (priority, quorum) is used as it is, and a
    /// refused declare never closes the publishing channel. Once per
    /// session per queue.
    pub async fn declare_queue(&self, name: &str) -> lapin::Result<()> {
        if self.declared.lock().expect("declared").contains(name) {
            return Ok(());
        }
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let ch = self.conn.create_channel().await?;
        if ch
            .queue_declare(name.into(), passive, FieldTable::default())
            .await
            .is_err()
        {
            // The passive declare closed that channel: the queue is missing.
            let ch = self.conn.create_channel().await?;
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare(name.into(), durable, FieldTable::default()).await?;
            let _ = ch.close(200, "declared".into()).await;
        } else {
            let _ = ch.close(200, "declared".into()).await;
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
    ) -> Result<(), String> {
        let confirm = self
            .publish(exchange, routing_key, body, props)
            .await
            .map_err(|e| e.to_string())?;
        confirmed(confirm.await)
    }

    /// A new channel on this connection.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.conn.create_channel().await
    }
}

/// Turns a confirmation into success or the reason it failed.
pub fn confirmed(c: lapin::Result<Confirmation>) -> Result<(), String> {
    match c {
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
        Ok(Confirmation::Ack(Some(_))) => Err("the broker returned the message as unroutable".into()),
        Ok(Confirmation::Nack(_)) => Err("the broker refused the message (nack)".into()),
        Err(e) => Err(format!("lost the broker before it confirmed: {e}")),
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
