//! The agent's control channel: how a hub cancels, pauses and resumes a
//! job.
//!
//! A hub publishes JSON messages to the fanout exchange
//! [`CONTROL_EXCHANGE`] (durable); every agent reads them from a queue of
//! its own bound to it ([`listen`]) and keeps the cancelled and paused
//! jobs' root task ids in a [`ControlSet`]. The runtime asks the set
//! before it runs a task: a task whose `root_id` is cancelled is answered
//! `REVOKED` instead; one whose root is paused is moved, unchanged, to the
//! parking queue the hub named. Each running task gets a [`Cancel`]
//! handle for its root ([`ControlSet::watch`]) that discovery asks before
//! every child task it publishes. The messages:
//!
//! - `{"op": "cancel", "roots": ["<root id>", ...], "until": <unix seconds>}`
//! - `{"op": "pause", "holds": [{"root": "<root id>", "park": "<queue>", "until": <unix seconds>}, ...]}`
//! - `{"op": "resume", "roots": ["<root id>", ...]}`: stop parking them.
//! - `{"op": "snapshot", "cancel": [{"root", "until"}, ...], "pause": [{"root", "park", "until"}, ...]}`,
//!   the hub's whole active set, repeated every 30 s so that an agent that
//!   started after a cancel or pause learns it (`pause` may be absent). A
//!   snapshot adds to the set, never replaces it: several hubs may share a
//!   broker, each repeating its own. A hub sends pauses with a short
//!   `until` that its snapshots renew, so a missed resume ends soon.
//!
//! An entry is forgotten once its `until` has passed; a cancel wins over a
//! pause. Members a message does not define (a hub's `jobs`) are ignored;
//! anything else that is not one of these messages is logged once and
//! ignored. The parser ([`parse`]) is pure, so it is tested and fuzzed on
//! its own.

use super::broker::Session;
use super::tasks::Cancel;
use crate::config::defaults::CONTROL_EXCHANGE;
use futures::StreamExt;
use lapin::ExchangeKind;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use tracing::{debug, info, warn};

/// Why a control message was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The message says it is not JSON.
    #[error("content type {0:?} is not application/json")]
    ContentType(String),
    /// The body does not parse as JSON.
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// The body is JSON but not an object.
    #[error("the body is not a JSON object")]
    NotObject,
    /// No `op` member, or not a string.
    #[error("no `op` string")]
    NoOp,
    /// An `op` this agent does not obey.
    #[error(
        "unknown op {0:?} (ferry obeys \"cancel\", \"pause\", \"resume\", \"drain\", \"undrain\" and \"snapshot\")"
    )]
    UnknownOp(String),
    /// A member of a known op has the wrong shape.
    #[error("{op}: `{field}` {problem}")]
    Field {
        /// The op.
        op: &'static str,
        /// The member, with its place in a list (`roots[2]`).
        field: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// One cancelled job: its root task id, and until when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The root task id: the `root_id` header of every task of the job.
    pub root: String,
    /// The last second at which the entry holds.
    pub until: i64,
}

/// One paused job: its root task id, where its tasks go instead of
/// running, and until when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// The root task id.
    pub root: String,
    /// The queue to park its tasks in.
    pub park: String,
    /// The last second at which the entry holds.
    pub until: i64,
}

/// A control message the agent obeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// `cancel`: these jobs are cancelled (one `until` for all of them).
    Cancel(Vec<Cancelled>),
    /// `pause`: these jobs are paused.
    Pause(Vec<Paused>),
    /// `resume`: these jobs (root ids) are paused no more.
    Resume(Vec<String>),
    /// `drain`: these nodes take no new task.
    Drain(Vec<Drained>),
    /// `undrain`: these nodes (names) take tasks again.
    Undrain(Vec<String>),
    /// `snapshot`: a hub's active cancellations, pauses and drains.
    Snapshot {
        /// Cancelled jobs.
        cancel: Vec<Cancelled>,
        /// Paused jobs.
        pause: Vec<Paused>,
        /// Drained nodes.
        drain: Vec<Drained>,
    },
}

/// A drained node: its name, and until when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// The node name (`ferry@<host>` or the agent's `node_name`).
    pub node: String,
    /// The last second at which the entry holds.
    pub until: i64,
}

/// Reads a control message with content type `content_type` (none, or
/// `application/json`). A message with any malformed part is refused
/// whole, with the reason.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ControlMessage, ControlError> {
    match content_type {
        None | Some("application/json") => {}
        Some(other) => return Err(ControlError::ContentType(other.to_string())),
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| ControlError::Json(e.to_string()))?;
    let Value::Object(o) = v else {
        return Err(ControlError::NotObject);
    };
    let field = |op, field: String, problem| ControlError::Field { op, field, problem };
    match o.get("op") {
        Some(Value::String(op)) if op == "cancel" => {
            let until = until(o.get("until")).map_err(|p| field("cancel", "until".into(), p))?;
            let Some(Value::Array(roots)) = o.get("roots") else {
                return Err(field("cancel", "roots".into(), "must be a list of root task ids"));
            };
            let mut out = Vec::with_capacity(roots.len());
            for (i, r) in roots.iter().enumerate() {
                let root = root(Some(r)).map_err(|p| field("cancel", format!("roots[{i}]"), p))?;
                out.push(Cancelled { root, until });
            }
            Ok(ControlMessage::Cancel(out))
        }
        Some(Value::String(op)) if op == "pause" => {
            let Some(Value::Array(list)) = o.get("holds") else {
                return Err(field("pause", "holds".into(), "must be a list of {root, park, until}"));
            };
            Ok(ControlMessage::Pause(holds("pause", "holds", list)?))
        }
        Some(Value::String(op)) if op == "resume" => {
            let Some(Value::Array(roots)) = o.get("roots") else {
                return Err(field("resume", "roots".into(), "must be a list of root task ids"));
            };
            let mut out = Vec::with_capacity(roots.len());
            for (i, r) in roots.iter().enumerate() {
                out.push(root(Some(r)).map_err(|p| field("resume", format!("roots[{i}]"), p))?);
            }
            Ok(ControlMessage::Resume(out))
        }
        Some(Value::String(op)) if op == "drain" => {
            let Some(Value::Array(list)) = o.get("nodes") else {
                return Err(field("drain", "nodes".into(), "must be a list of {node, until}"));
            };
            Ok(ControlMessage::Drain(drains("drain", "nodes", list)?))
        }
        Some(Value::String(op)) if op == "undrain" => {
            let Some(Value::Array(nodes)) = o.get("nodes") else {
                return Err(field("undrain", "nodes".into(), "must be a list of node names"));
            };
            let mut out = Vec::with_capacity(nodes.len());
            for (i, n) in nodes.iter().enumerate() {
                match n {
                    Value::String(n) if !n.is_empty() => out.push(n.clone()),
                    _ => return Err(field("undrain", format!("nodes[{i}]"), "must be a node name")),
                }
            }
            Ok(ControlMessage::Undrain(out))
        }
        Some(Value::String(op)) if op == "snapshot" => {
            let Some(Value::Array(list)) = o.get("cancel") else {
                return Err(field("snapshot", "cancel".into(), "must be a list of {root, until}"));
            };
            let mut cancel = Vec::with_capacity(list.len());
            for (i, e) in list.iter().enumerate() {
                let Value::Object(e) = e else {
                    return Err(field(
                        "snapshot",
                        format!("cancel[{i}]"),
                        "must be an object {root, until}",
                    ));
                };
                let root = root(e.get("root")).map_err(|p| field("snapshot", format!("cancel[{i}].root"), p))?;
                let until = until(e.get("until")).map_err(|p| field("snapshot", format!("cancel[{i}].until"), p))?;
                cancel.push(Cancelled { root, until });
            }
            // A hub from before pauses and drains sends none.
            let pause = match o.get("pause") {
                None => Vec::new(),
                Some(Value::Array(list)) => holds("snapshot", "pause", list)?,
                Some(_) => {
                    return Err(field(
                        "snapshot",
                        "pause".into(),
                        "must be a list of {root, park, until}",
                    ));
                }
            };
            let drain = match o.get("drain") {
                None => Vec::new(),
                Some(Value::Array(list)) => drains("snapshot", "drain", list)?,
                Some(_) => return Err(field("snapshot", "drain".into(), "must be a list of {node, until}")),
            };
            Ok(ControlMessage::Snapshot { cancel, pause, drain })
        }
        Some(Value::String(op)) => Err(ControlError::UnknownOp(op.clone())),
        _ => Err(ControlError::NoOp),
    }
}

/// A list of `{root, park, until}` (member `name` of op `op`).
fn holds(op: &'static str, name: &str, list: &[Value]) -> Result<Vec<Paused>, ControlError> {
    let field = |field: String, problem| ControlError::Field { op, field, problem };
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let Value::Object(e) = e else {
            return Err(field(format!("{name}[{i}]"), "must be an object {root, park, until}"));
        };
        let root = root(e.get("root")).map_err(|p| field(format!("{name}[{i}].root"), p))?;
        let park = match e.get("park") {
            Some(Value::String(q)) if !q.is_empty() => q.clone(),
            Some(Value::String(_)) => return Err(field(format!("{name}[{i}].park"), "is empty")),
            None => return Err(field(format!("{name}[{i}].park"), "is missing")),
            Some(_) => return Err(field(format!("{name}[{i}].park"), "must be a string (a queue name)")),
        };
        let until = until(e.get("until")).map_err(|p| field(format!("{name}[{i}].until"), p))?;
        out.push(Paused { root, park, until });
    }
    Ok(out)
}

/// A list of `{node, until}` (member `name` of op `op`).
fn drains(op: &'static str, name: &str, list: &[Value]) -> Result<Vec<Drained>, ControlError> {
    let field = |field: String, problem| ControlError::Field { op, field, problem };
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let Value::Object(e) = e else {
            return Err(field(format!("{name}[{i}]"), "must be an object {node, until}"));
        };
        let node = match e.get("node") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(field(format!("{name}[{i}].node"), "must be a node name")),
        };
        let until = until(e.get("until")).map_err(|p| field(format!("{name}[{i}].until"), p))?;
        out.push(Drained { node, until });
    }
    Ok(out)
}

/// A root task id: a non-empty string.
fn root(v: Option<&Value>) -> Result<String, &'static str> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err("is empty"),
        None => Err("is missing"),
        Some(_) => Err("must be a string (a root task id)"),
    }
}

/// Unix seconds: an integer, or a number with a fraction (Python's
/// `time.time() + ttl`), rounded up so an entry never ends early.
fn until(v: Option<&Value>) -> Result<i64, &'static str> {
    let Some(v) = v else {
        return Err("is missing");
    };
    let Value::Number(n) = v else {
        return Err("must be a number (unix seconds)");
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64().map(f64::ceil) {
        // Beyond ±2^63 seconds (and u64 values over i64::MAX) is no time.
        Some(x) if x.is_finite() && x > -9.2e18 && x < 9.2e18 => Ok(x as i64),
        _ => Err("is out of range"),
    }
}

/// The cancelled and paused jobs this agent knows of: root task id →
/// until (unix seconds), and for pauses the parking queue. Shared by the
/// control consumer, which changes it, and every delivery handler and
/// running task, which ask it.
#[derive(Debug, Default)]
pub struct ControlSet {
    roots: Mutex<HashMap<String, i64>>,
    holds: Mutex<HashMap<String, (String, i64)>>,
    drained: Mutex<HashMap<String, i64>>,
}

/// Adds `root` until `until` to `map` (keeping the later until); true
/// when it was not there.
fn add<V>(map: &mut HashMap<String, V>, root: &str, value: V, until: fn(&V) -> i64) -> bool
where
    V: Clone,
{
    match map.entry(root.to_string()) {
        Entry::Vacant(v) => {
            v.insert(value);
            true
        }
        Entry::Occupied(mut o) => {
            if until(&value) > until(o.get()) {
                o.insert(value);
            }
            false
        }
    }
}

impl ControlSet {
    /// Applies `msg` at unix time `now`: cancels and pauses (a snapshot's
    /// too) are added, a root listed again keeps the later `until`, an
    /// entry already past is not added, expired entries are forgotten, and
    /// a resume removes its roots' pauses. Returns how many roots were not
    /// cancelled or paused before (or, for a resume, how many it removed).
    pub fn apply(&self, msg: &ControlMessage, now: i64) -> usize {
        let mut roots = self.roots.lock().expect("control set");
        let mut holds = self.holds.lock().expect("control set");
        roots.retain(|_, until| *until >= now);
        holds.retain(|_, (_, until)| *until >= now);
        let mut drained = self.drained.lock().expect("control set");
        drained.retain(|_, until| *until >= now);
        let (cancel, pause, drain): (&[Cancelled], &[Paused], &[Drained]) = match msg {
            ControlMessage::Cancel(c) => (c, &[], &[]),
            ControlMessage::Pause(p) => (&[], p, &[]),
            ControlMessage::Drain(d) => (&[], &[], d),
            ControlMessage::Snapshot { cancel, pause, drain } => (cancel, pause, drain),
            ControlMessage::Resume(r) => {
                return r.iter().filter(|root| holds.remove(root.as_str()).is_some()).count();
            }
            ControlMessage::Undrain(n) => {
                return n.iter().filter(|node| drained.remove(node.as_str()).is_some()).count();
            }
        };
        let mut added = 0;
        for c in cancel.iter().filter(|c| c.until >= now) {
            added += add(&mut roots, &c.root, c.until, |u| *u) as usize;
        }
        for p in pause.iter().filter(|p| p.until >= now) {
            added += add(&mut holds, &p.root, (p.park.clone(), p.until), |(_, u)| *u) as usize;
        }
        for d in drain.iter().filter(|d| d.until >= now) {
            added += add(&mut drained, &d.node, d.until, |u| *u) as usize;
        }
        added
    }

    /// Whether node `node` is drained at unix time `now`.
    pub fn is_drained(&self, node: &str, now: i64) -> bool {
        self.drained
            .lock()
            .expect("control set")
            .get(node)
            .is_some_and(|until| *until >= now)
    }

    /// Whether node `node` is drained now.
    pub fn is_drained_now(&self, node: &str) -> bool {
        self.is_drained(node, unix_now())
    }

    /// The queue to park a task of root `root` in at unix time `now`,
    /// when its job is paused (and not cancelled: a cancel wins).
    pub fn parking(&self, root: &str, now: i64) -> Option<String> {
        if self.is_cancelled(root, now) {
            return None;
        }
        self.holds
            .lock()
            .expect("control set")
            .get(root)
            .filter(|(_, until)| *until >= now)
            .map(|(park, _)| park.clone())
    }

    /// The parking queue of root `root` now, if its job is paused.
    pub fn parking_now(&self, root: &str) -> Option<String> {
        self.parking(root, unix_now())
    }

    /// Whether the job of root task `root` is cancelled at unix time `now`.
    pub fn is_cancelled(&self, root: &str, now: i64) -> bool {
        self.roots
            .lock()
            .expect("control set")
            .get(root)
            .is_some_and(|until| *until >= now)
    }

    /// Whether the job of root task `root` is cancelled now.
    pub fn is_cancelled_now(&self, root: &str) -> bool {
        self.is_cancelled(root, unix_now())
    }

    /// A running task's handle on this set: it says whether the job of
    /// `root` is cancelled whenever it is asked, from any thread.
    pub fn watch(self: &Arc<Self>, root: &str) -> Cancel {
        let (set, root) = (self.clone(), root.to_string());
        Cancel::new(move || set.is_cancelled_now(&root))
    }
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Declares the control exchange as hubs do (fanout, durable) and a queue
/// of this agent's own bound to it (server-named, exclusive, auto-delete:
/// it lives as long as this broker session, so each new session binds a
/// new one and listens again), then applies every message it receives to
/// `set` until the session ends. Messages are consumed without
/// acknowledgement: one lost with a connection is repeated by the hub's
/// next snapshot. The returned task ends when the session does; the
/// returned receiver is told when the first snapshot has been applied.
pub async fn listen(session: &Session, set: Arc<ControlSet>) -> lapin::Result<Listening> {
    let ch = session.channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        CONTROL_EXCHANGE.into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = ch.queue_declare("".into(), private, FieldTable::default()).await?;
    let name = queue.name().as_str();
    ch.queue_bind(
        name.into(),
        CONTROL_EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(name.into(), "".into(), no_ack, FieldTable::default())
        .await?;
    debug!(
        queue = name,
        exchange = CONTROL_EXCHANGE,
        "listening for control messages"
    );
    let (told, first_snapshot) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        // The channel stays open while the loop runs.
        let _channel = ch;
        let mut told = Some(told);
        while let Some(d) = consumer.next().await {
            match d {
                Ok(d) => {
                    let applied = obey(&set, d.properties.content_type().as_ref().map(|s| s.as_str()), &d.data);
                    if let Some(ControlMessage::Snapshot { .. }) = applied
                        && let Some(t) = told.take()
                    {
                        let _ = t.send(());
                    }
                }
                Err(e) => {
                    debug!(error = %e, "control consumer ended");
                    break;
                }
            }
        }
    });
    Ok(Listening { task, first_snapshot })
}

/// A bound control queue being read ([`listen`]).
pub struct Listening {
    /// The consumer loop; it ends when the session does.
    pub task: tokio::task::JoinHandle<()>,
    /// Resolves once the first snapshot has been applied: from then on the
    /// agent knows every job its hubs have cancelled.
    pub first_snapshot: tokio::sync::oneshot::Receiver<()>,
}

/// Applies one control message and returns it, or logs why it was ignored.
fn obey(set: &ControlSet, content_type: Option<&str>, body: &[u8]) -> Option<ControlMessage> {
    let msg = match parse(content_type, body) {
        Ok(m) => m,
        Err(e) => {
            let start = String::from_utf8_lossy(&body[..body.len().min(200)]);
            warn!(reason = %e, body = %start, "ignoring a control message");
            return None;
        }
    };
    let changed = set.apply(&msg, unix_now());
    match &msg {
        ControlMessage::Cancel(e) => {
            let roots: Vec<&str> = e.iter().take(10).map(|c| c.root.as_str()).collect();
            info!(count = e.len(), added = changed, roots = ?roots, until = e.first().map(|c| c.until), "cancel received")
        }
        ControlMessage::Pause(p) => {
            let roots: Vec<&str> = p.iter().take(10).map(|c| c.root.as_str()).collect();
            info!(count = p.len(), added = changed, roots = ?roots, park = ?p.first().map(|c| &c.park), "pause received")
        }
        ControlMessage::Resume(r) => {
            info!(count = r.len(), removed = changed, roots = ?&r[..r.len().min(10)], "resume received")
        }
        ControlMessage::Drain(d) => {
            let nodes: Vec<&str> = d.iter().take(10).map(|n| n.node.as_str()).collect();
            info!(count = d.len(), added = changed, nodes = ?nodes, "drain received")
        }
        ControlMessage::Undrain(n) => {
            info!(count = n.len(), removed = changed, nodes = ?&n[..n.len().min(10)], "undrain received")
        }
        ControlMessage::Snapshot { cancel, pause, .. } if changed > 0 => {
            let roots: Vec<&str> = cancel.iter().map(|c| c.root.as_str()).take(10).collect();
            let paused: Vec<&str> = pause.iter().map(|c| c.root.as_str()).take(10).collect();
            info!(
                cancel = cancel.len(),
                pause = pause.len(),
                added = changed,
                roots = ?roots,
                paused = ?paused,
                "control snapshot added roots"
            )
        }
        ControlMessage::Snapshot { cancel, pause, .. } => {
            debug!(
                cancel = cancel.len(),
                pause = pause.len(),
                "control snapshot: nothing new"
            )
        }
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(root: &str, until: i64) -> Cancelled {
        Cancelled {
            root: root.into(),
            until,
        }
    }

    fn hold(root: &str, park: &str, until: i64) -> Paused {
        Paused {
            root: root.into(),
            park: park.into(),
            until,
        }
    }

    fn json(body: serde_json::Value) -> Result<ControlMessage, ControlError> {
        parse(Some("application/json"), body.to_string().as_bytes())
    }

    #[test]
    fn cancel_and_snapshot_messages_parse_exactly() {
        assert_eq!(
            json(serde_json::json!({"op": "cancel", "roots": ["r1", "r2"], "until": 1700000000})),
            Ok(ControlMessage::Cancel(vec![
                entry("r1", 1_700_000_000),
                entry("r2", 1_700_000_000)
            ]))
        );
        assert_eq!(
            json(serde_json::json!({"op": "snapshot", "cancel": [
                {"root": "a", "until": 10}, {"root": "b", "until": 20}]})),
            Ok(ControlMessage::Snapshot {
                cancel: vec![entry("a", 10), entry("b", 20)],
                pause: vec![],
                drain: vec![],
            })
        );
        assert_eq!(
            json(serde_json::json!({"op": "pause", "holds": [{"root": "r", "park": "h.parked.7", "until": 9}]})),
            Ok(ControlMessage::Pause(vec![hold("r", "h.parked.7", 9)]))
        );
        assert_eq!(
            json(serde_json::json!({"op": "resume", "roots": ["r", "s"]})),
            Ok(ControlMessage::Resume(vec!["r".into(), "s".into()]))
        );
        // Members a hub may add (job ids) are ignored; an empty snapshot
        // is a snapshot, with pauses or without; a content type may be left
        // out; a fractional `until` is rounded up.
        assert_eq!(
            json(serde_json::json!({"op": "cancel", "jobs": [7], "roots": ["r"], "until": 5, "ttl": 1})),
            Ok(ControlMessage::Cancel(vec![entry("r", 5)]))
        );
        assert_eq!(
            json(
                serde_json::json!({"op": "snapshot", "cancel": [], "pause": [{"root": "p", "park": "q", "until": 3}]})
            ),
            Ok(ControlMessage::Snapshot {
                cancel: vec![],
                pause: vec![hold("p", "q", 3)],
                drain: vec![],
            })
        );
        assert_eq!(
            parse(None, br#"{"op":"cancel","roots":["r"],"until":1700000000.25}"#),
            Ok(ControlMessage::Cancel(vec![entry("r", 1_700_000_001)]))
        );
    }

    #[test]
    fn malformed_messages_are_refused_with_their_reason() {
        let cases: &[(Option<&str>, &[u8], &str)] = &[
            (
                Some("application/x-python-serialize"),
                b"{}",
                "content type \"application/x-python-serialize\" is not application/json",
            ),
            (
                None,
                b"not json",
                "the body is not JSON: expected ident at line 1 column 2",
            ),
            (None, b"[1]", "the body is not a JSON object"),
            (None, br#"{"roots": ["r"]}"#, "no `op` string"),
            (None, br#"{"op": 1}"#, "no `op` string"),
            (
                None,
                br#"{"op": "hold", "jobs": [7]}"#,
                "unknown op \"hold\" (ferry obeys \"cancel\", \"pause\", \"resume\", \"drain\", \"undrain\" and \"snapshot\")",
            ),
            (
                None,
                br#"{"op": "pause", "jobs": [7]}"#,
                "pause: `holds` must be a list of {root, park, until}",
            ),
            (
                None,
                br#"{"op": "pause", "holds": [{"root": "r", "until": 1}]}"#,
                "pause: `holds[0].park` is missing",
            ),
            (
                None,
                br#"{"op": "pause", "holds": [{"root": "r", "park": 7, "until": 1}]}"#,
                "pause: `holds[0].park` must be a string (a queue name)",
            ),
            (
                None,
                br#"{"op": "resume", "roots": [""]}"#,
                "resume: `roots[0]` is empty",
            ),
            (
                None,
                br#"{"op": "snapshot", "cancel": [], "pause": {}}"#,
                "snapshot: `pause` must be a list of {root, park, until}",
            ),
            (
                None,
                br#"{"op": "snapshot", "cancel": [], "pause": [{"root": "r", "park": "", "until": 1}]}"#,
                "snapshot: `pause[0].park` is empty",
            ),
            (
                None,
                br#"{"op": "cancel", "roots": ["r"]}"#,
                "cancel: `until` is missing",
            ),
            (
                None,
                br#"{"op": "cancel", "roots": ["r"], "until": "soon"}"#,
                "cancel: `until` must be a number (unix seconds)",
            ),
            (
                None,
                br#"{"op": "cancel", "roots": ["r"], "until": 1e300}"#,
                "cancel: `until` is out of range",
            ),
            (
                None,
                br#"{"op": "cancel", "roots": "r", "until": 1}"#,
                "cancel: `roots` must be a list of root task ids",
            ),
            (
                None,
                br#"{"op": "cancel", "roots": ["r", 5], "until": 1}"#,
                "cancel: `roots[1]` must be a string (a root task id)",
            ),
            (
                None,
                br#"{"op": "cancel", "roots": [""], "until": 1}"#,
                "cancel: `roots[0]` is empty",
            ),
            (
                None,
                br#"{"op": "snapshot"}"#,
                "snapshot: `cancel` must be a list of {root, until}",
            ),
            (
                None,
                br#"{"op": "snapshot", "cancel": ["r"]}"#,
                "snapshot: `cancel[0]` must be an object {root, until}",
            ),
            (
                None,
                br#"{"op": "snapshot", "cancel": [{"root": "a", "until": 1}, {"until": 1}]}"#,
                "snapshot: `cancel[1].root` is missing",
            ),
            (
                None,
                br#"{"op": "snapshot", "cancel": [{"root": "a", "until": null}]}"#,
                "snapshot: `cancel[0].until` must be a number (unix seconds)",
            ),
        ];
        for (ct, body, why) in cases {
            let e = parse(*ct, body).unwrap_err();
            assert_eq!(e.to_string(), *why, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_set_adds_keeps_the_later_until_and_forgets_expired_entries() {
        let set = ControlSet::default();
        let cancel = |roots: &[&str], until| ControlMessage::Cancel(roots.iter().map(|r| entry(r, until)).collect());
        assert_eq!(set.apply(&cancel(&["a", "b"], 100), 50), 2);
        assert!(set.is_cancelled("a", 50) && set.is_cancelled("b", 100));
        assert!(!set.is_cancelled("c", 50));
        // Forgotten after `until`, not at it.
        assert!(!set.is_cancelled("a", 101));

        // A snapshot adds: `a` and `b` stay although it lists neither.
        let snap = ControlMessage::Snapshot {
            cancel: vec![entry("c", 200), entry("b", 300)],
            pause: vec![],
            drain: vec![],
        };
        assert_eq!(set.apply(&snap, 60), 1, "only c is new");
        assert!(set.is_cancelled("a", 60) && set.is_cancelled("c", 60));
        // `b` got the later until; an earlier one does not shorten it.
        assert!(set.is_cancelled("b", 300));
        assert_eq!(set.apply(&cancel(&["b"], 150), 60), 0);
        assert!(set.is_cancelled("b", 300));

        // An entry already past is not added; expired ones are forgotten,
        // and one that comes back after expiring counts as new.
        assert_eq!(set.apply(&cancel(&["d"], 10), 60), 0);
        assert!(!set.is_cancelled("d", 10));
        assert_eq!(set.apply(&cancel(&["a"], 500), 150), 1, "a had expired at 150");
        assert_eq!(set.roots.lock().unwrap().len(), 3, "a, b and c");
        let empty = ControlMessage::Snapshot {
            cancel: vec![],
            pause: vec![],
            drain: vec![],
        };
        assert_eq!(set.apply(&empty, 301), 0);
        assert_eq!(
            set.roots.lock().unwrap().keys().collect::<Vec<_>>(),
            ["a"],
            "b and c expired"
        );
    }

    #[test]
    fn pauses_park_until_resumed_or_expired_and_a_cancel_wins() {
        let set = ControlSet::default();
        assert_eq!(
            set.apply(
                &ControlMessage::Pause(vec![hold("a", "q.a", 100), hold("b", "q.b", 100)]),
                50
            ),
            2
        );
        assert_eq!(set.parking("a", 60).as_deref(), Some("q.a"));
        assert_eq!(set.parking("c", 60), None);
        // A snapshot renews a pause (the later until) and adds new ones.
        let snap = ControlMessage::Snapshot {
            cancel: vec![],
            pause: vec![hold("a", "q.a", 200), hold("c", "q.c", 200)],
            drain: vec![],
        };
        assert_eq!(set.apply(&snap, 60), 1, "only c is new");
        assert_eq!(set.parking("a", 150).as_deref(), Some("q.a"));
        assert_eq!(set.parking("b", 150), None, "b expired at 100");
        // A resume removes at once; a cancel wins over a pause.
        assert_eq!(set.apply(&ControlMessage::Resume(vec!["a".into(), "x".into()]), 60), 1);
        assert_eq!(set.parking("a", 60), None);
        assert_eq!(set.apply(&ControlMessage::Cancel(vec![entry("c", 500)]), 60), 1);
        assert_eq!(set.parking("c", 60), None);
        assert!(set.is_cancelled("c", 60));
    }

    #[test]
    fn drains_hold_until_undrained_or_expired() {
        let set = ControlSet::default();
        let d = |node: &str, until| Drained {
            node: node.into(),
            until,
        };
        assert_eq!(
            json(serde_json::json!({"op": "drain", "nodes": [{"node": "ferry@a", "until": 100}]})),
            Ok(ControlMessage::Drain(vec![d("ferry@a", 100)]))
        );
        assert_eq!(
            json(serde_json::json!({"op": "undrain", "nodes": ["ferry@a"]})),
            Ok(ControlMessage::Undrain(vec!["ferry@a".into()]))
        );
        assert_eq!(
            json(serde_json::json!({"op": "drain", "nodes": [{"until": 1}]}))
                .unwrap_err()
                .to_string(),
            "drain: `nodes[0].node` must be a node name"
        );
        assert_eq!(set.apply(&ControlMessage::Drain(vec![d("ferry@a", 100)]), 50), 1);
        assert!(set.is_drained("ferry@a", 100) && !set.is_drained("ferry@b", 60));
        assert!(!set.is_drained("ferry@a", 101), "expired");
        let snap = ControlMessage::Snapshot {
            cancel: vec![],
            pause: vec![],
            drain: vec![d("ferry@a", 200)],
        };
        assert_eq!(set.apply(&snap, 60), 0, "renewed, not new");
        assert!(set.is_drained("ferry@a", 150));
        assert_eq!(set.apply(&ControlMessage::Undrain(vec!["ferry@a".into()]), 60), 1);
        assert!(!set.is_drained("ferry@a", 60));
    }

    #[test]
    fn a_watch_follows_the_set() {
        let set = Arc::new(ControlSet::default());
        let watch = set.watch("root");
        let other = set.watch("other");
        assert!(!watch.is_cancelled());
        let until = unix_now() + 600;
        set.apply(&ControlMessage::Cancel(vec![entry("root", until)]), unix_now());
        assert!(watch.is_cancelled());
        assert!(!other.is_cancelled());
    }
}
