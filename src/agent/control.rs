//! The agent's control channel: how a hub cancels, pauses and resumes a
//! job, and pauses and resumes a task type cluster-wide.
//!
//! A hub publishes JSON messages to the fanout exchange
//! [`CONTROL_EXCHANGE`] (durable); every agent reads them from a queue of
//! its own bound to it ([`listen`]) and keeps the cancelled and paused
//! jobs' root task ids in a [`ControlSet`]. The runtime asks the set
//! before it runs a task: a task whose `root_id` is cancelled is answered
//! `REVOKED` instead; one whose root is paused, or whose task name is, is
//! moved, unchanged, to the parking queue the hub named (the job's before
//! the type's). Each running task gets a [`Cancel`]
//! handle for its root ([`ControlSet::watch`]) that discovery asks before
//! every child task it publishes. The messages:
//!
//! - `{"op": "cancel", "roots": ["<root id>", ...], "until": <unix seconds>}`
//! - `{"op": "pause", "holds": [{"root": "<root id>", "park": "<queue>", "until": <unix seconds>}, ...],
//!   "tasktypes": [{"task": "<task name>", "reply_to": "<queue>", "park": "<queue>", "until": <unix seconds>}, ...]}`:
//!   `tasktypes` (a task type paused cluster-wide, e.g.
//!   `dynamo.tasks.delete_paths_from_gpfs`, for the tasks whose
//!   `reply_to` is that hub's results queue: several hubs may share a
//!   broker and its control exchange, and each pauses its own tasks) may
//!   be absent, and so may `holds` when `tasktypes` is there; a hub sends
//!   both, `holds` empty for a type's pause, so an agent from before type
//!   pauses reads it as a pause of no job.
//! - `{"op": "resume", "roots": ["<root id>", ...], "tasktypes": [{"task", "reply_to"}, ...]}`:
//!   stop parking them (either list may be absent, not both).
//! - `{"op": "snapshot", "cancel": [{"root", "until"}, ...], "pause": [{"root", "park", "until"}, ...],
//!   "drain": [{"node", "until"}, ...], "tasktypes": [{"task", "reply_to", "park", "until"}, ...]}`,
//!   the hub's whole active set, repeated every 30 s so that an agent that
//!   started after a cancel or pause learns it (`pause`, `drain` and
//!   `tasktypes` may be absent). A
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

/// A task type of one hub: a task name, and the queue the hub's tasks
/// reply to (its results queue).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskType {
    /// The task name (a Celery task's `task` header).
    pub task: String,
    /// The tasks' `reply_to`.
    pub reply_to: String,
}

/// One task type paused cluster-wide by a hub: the type, where its tasks
/// go instead of running, and until when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePaused {
    /// The task type.
    pub tasktype: TaskType,
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
    /// `pause`: these jobs and task types are paused.
    Pause {
        /// Paused jobs.
        holds: Vec<Paused>,
        /// Paused task types.
        tasktypes: Vec<TypePaused>,
    },
    /// `resume`: these jobs (root ids) and task types are paused no more.
    Resume {
        /// Root task ids.
        roots: Vec<String>,
        /// Task types.
        tasktypes: Vec<TaskType>,
    },
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
        /// Paused task types.
        tasktypes: Vec<TypePaused>,
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
            let tasktypes = o.get("tasktypes").map(|t| types("pause", t)).transpose()?;
            let holds = match (o.get("holds"), &tasktypes) {
                (Some(Value::Array(list)), _) => holds("pause", "holds", list)?,
                (None, Some(_)) => Vec::new(),
                _ => return Err(field("pause", "holds".into(), "must be a list of {root, park, until}")),
            };
            Ok(ControlMessage::Pause {
                holds,
                tasktypes: tasktypes.unwrap_or_default(),
            })
        }
        Some(Value::String(op)) if op == "resume" => {
            let tasktypes = match o.get("tasktypes") {
                None => None,
                Some(Value::Array(list)) => {
                    let mut out = Vec::with_capacity(list.len());
                    for (i, e) in list.iter().enumerate() {
                        let Value::Object(e) = e else {
                            let problem = "must be an object {task, reply_to}";
                            return Err(field("resume", format!("tasktypes[{i}]"), problem));
                        };
                        out.push(tasktype("resume", i, e)?);
                    }
                    Some(out)
                }
                Some(_) => {
                    return Err(field(
                        "resume",
                        "tasktypes".into(),
                        "must be a list of {task, reply_to}",
                    ));
                }
            };
            let roots = match (o.get("roots"), &tasktypes) {
                (Some(Value::Array(roots)), _) => {
                    let mut out = Vec::with_capacity(roots.len());
                    for (i, r) in roots.iter().enumerate() {
                        out.push(root(Some(r)).map_err(|p| field("resume", format!("roots[{i}]"), p))?);
                    }
                    out
                }
                (None, Some(_)) => Vec::new(),
                _ => return Err(field("resume", "roots".into(), "must be a list of root task ids")),
            };
            Ok(ControlMessage::Resume {
                roots,
                tasktypes: tasktypes.unwrap_or_default(),
            })
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
            let tasktypes = match o.get("tasktypes") {
                None => Vec::new(),
                Some(t) => types("snapshot", t)?,
            };
            Ok(ControlMessage::Snapshot {
                cancel,
                pause,
                drain,
                tasktypes,
            })
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
        let park = queue(e.get("park")).map_err(|p| field(format!("{name}[{i}].park"), p))?;
        let until = until(e.get("until")).map_err(|p| field(format!("{name}[{i}].until"), p))?;
        out.push(Paused { root, park, until });
    }
    Ok(out)
}

/// The member `tasktypes` of op `op`: a list of `{task, park, until}`.
fn types(op: &'static str, v: &Value) -> Result<Vec<TypePaused>, ControlError> {
    let field = |field: String, problem| ControlError::Field { op, field, problem };
    let Value::Array(list) = v else {
        return Err(field(
            "tasktypes".into(),
            "must be a list of {task, reply_to, park, until}",
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let Value::Object(e) = e else {
            return Err(field(
                format!("tasktypes[{i}]"),
                "must be an object {task, reply_to, park, until}",
            ));
        };
        let tasktype = tasktype(op, i, e)?;
        let park = queue(e.get("park")).map_err(|p| field(format!("tasktypes[{i}].park"), p))?;
        let until = until(e.get("until")).map_err(|p| field(format!("tasktypes[{i}].until"), p))?;
        out.push(TypePaused { tasktype, park, until });
    }
    Ok(out)
}

/// The `task` and `reply_to` of entry `i` of member `tasktypes` of op `op`.
fn tasktype(op: &'static str, i: usize, e: &serde_json::Map<String, Value>) -> Result<TaskType, ControlError> {
    let field = |field: String, problem| ControlError::Field { op, field, problem };
    Ok(TaskType {
        task: task_name(e.get("task")).map_err(|p| field(format!("tasktypes[{i}].task"), p))?,
        reply_to: queue(e.get("reply_to")).map_err(|p| field(format!("tasktypes[{i}].reply_to"), p))?,
    })
}

/// A queue's name: a non-empty string.
fn queue(v: Option<&Value>) -> Result<String, &'static str> {
    match v {
        Some(Value::String(q)) if !q.is_empty() => Ok(q.clone()),
        Some(Value::String(_)) => Err("is empty"),
        None => Err("is missing"),
        Some(_) => Err("must be a string (a queue name)"),
    }
}

/// A task name: a non-empty string.
fn task_name(v: Option<&Value>) -> Result<String, &'static str> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err("is empty"),
        None => Err("is missing"),
        Some(_) => Err("must be a string (a task name)"),
    }
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

/// The cancelled and paused jobs this agent knows of (root task id →
/// until, unix seconds, and for pauses the parking queue), the drained
/// nodes, and the paused task types (→ parking queue, until).
/// Shared by the
/// control consumer, which changes it, and every delivery handler and
/// running task, which ask it.
#[derive(Debug, Default)]
pub struct ControlSet {
    roots: Mutex<HashMap<String, i64>>,
    holds: Mutex<HashMap<String, (String, i64)>>,
    drained: Mutex<HashMap<String, i64>>,
    types: Mutex<HashMap<TaskType, (String, i64)>>,
}

/// Adds `key` until `until` to `map` (keeping the later until); true
/// when it was not there.
fn add<K, V>(map: &mut HashMap<K, V>, key: K, value: V, until: fn(&V) -> i64) -> bool
where
    K: Eq + std::hash::Hash,
{
    match map.entry(key) {
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
    /// Applies `msg` at unix time `now`: cancels and pauses of jobs and
    /// task types (a snapshot's too) are added, an entry listed again keeps
    /// the later `until`, an entry already past is not added, expired
    /// entries are forgotten, and a resume removes its roots' and task
    /// types' pauses. Returns how many entries were not there before (or,
    /// for a resume or undrain, how many it removed).
    pub fn apply(&self, msg: &ControlMessage, now: i64) -> usize {
        let mut roots = self.roots.lock().expect("control set");
        let mut holds = self.holds.lock().expect("control set");
        roots.retain(|_, until| *until >= now);
        holds.retain(|_, (_, until)| *until >= now);
        let mut drained = self.drained.lock().expect("control set");
        drained.retain(|_, until| *until >= now);
        let mut types = self.types.lock().expect("control set");
        types.retain(|_, (_, until)| *until >= now);
        type Lists<'a> = (&'a [Cancelled], &'a [Paused], &'a [Drained], &'a [TypePaused]);
        let (cancel, pause, drain, tasktypes): Lists = match msg {
            ControlMessage::Cancel(c) => (c, &[], &[], &[]),
            ControlMessage::Pause { holds, tasktypes } => (&[], holds, &[], tasktypes),
            ControlMessage::Drain(d) => (&[], &[], d, &[]),
            ControlMessage::Snapshot {
                cancel,
                pause,
                drain,
                tasktypes,
            } => (cancel, pause, drain, tasktypes),
            ControlMessage::Resume { roots, tasktypes } => {
                let jobs = roots
                    .iter()
                    .filter(|root| holds.remove(root.as_str()).is_some())
                    .count();
                return jobs + tasktypes.iter().filter(|t| types.remove(*t).is_some()).count();
            }
            ControlMessage::Undrain(n) => {
                return n.iter().filter(|node| drained.remove(node.as_str()).is_some()).count();
            }
        };
        let mut added = 0;
        for c in cancel.iter().filter(|c| c.until >= now) {
            added += add(&mut roots, c.root.clone(), c.until, |u| *u) as usize;
        }
        for p in pause.iter().filter(|p| p.until >= now) {
            added += add(&mut holds, p.root.clone(), (p.park.clone(), p.until), |(_, u)| *u) as usize;
        }
        for d in drain.iter().filter(|d| d.until >= now) {
            added += add(&mut drained, d.node.clone(), d.until, |u| *u) as usize;
        }
        for t in tasktypes.iter().filter(|t| t.until >= now) {
            added += add(&mut types, t.tasktype.clone(), (t.park.clone(), t.until), |(_, u)| *u) as usize;
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

    /// The queue to park a task named `task` of root `root`, replying to
    /// `reply_to`, in at unix time `now`: its job's parking queue when the
    /// job is paused, else its type's when the task type is paused (by the
    /// hub it replies to); none when its job is
    /// cancelled (a cancel wins). The job's queue comes first so that a
    /// job's resume finds all its tasks; one parked by its job whose type
    /// is paused is parked again by type when the job resumes.
    pub fn parking(&self, root: &str, task: &str, reply_to: Option<&str>, now: i64) -> Option<String> {
        if self.is_cancelled(root, now) {
            return None;
        }
        let live = |e: Option<&(String, i64)>| e.filter(|(_, until)| *until >= now).map(|(park, _)| park.clone());
        live(self.holds.lock().expect("control set").get(root)).or_else(|| {
            let types = self.types.lock().expect("control set");
            if types.is_empty() {
                return None;
            }
            let key = TaskType {
                task: task.to_string(),
                reply_to: reply_to?.to_string(),
            };
            live(types.get(&key))
        })
    }

    /// The parking queue now of a task named `task` of root `root`,
    /// replying to `reply_to`, if its job or its task type is paused.
    pub fn parking_now(&self, root: &str, task: &str, reply_to: Option<&str>) -> Option<String> {
        self.parking(root, task, reply_to, unix_now())
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
        ControlMessage::Pause { holds, tasktypes } => {
            let roots: Vec<&str> = holds.iter().take(10).map(|c| c.root.as_str()).collect();
            let types: Vec<&str> = tasktypes.iter().map(|t| t.tasktype.task.as_str()).collect();
            info!(count = holds.len(), added = changed, roots = ?roots, park = ?holds.first().map(|c| &c.park),
                tasktypes = ?types, "pause received")
        }
        ControlMessage::Resume { roots, tasktypes } => {
            info!(count = roots.len(), removed = changed, roots = ?&roots[..roots.len().min(10)],
                tasktypes = ?tasktypes.iter().map(|t| t.task.as_str()).collect::<Vec<_>>(), "resume received")
        }
        ControlMessage::Drain(d) => {
            let nodes: Vec<&str> = d.iter().take(10).map(|n| n.node.as_str()).collect();
            info!(count = d.len(), added = changed, nodes = ?nodes, "drain received")
        }
        ControlMessage::Undrain(n) => {
            info!(count = n.len(), removed = changed, nodes = ?&n[..n.len().min(10)], "undrain received")
        }
        ControlMessage::Snapshot {
            cancel,
            pause,
            tasktypes,
            ..
        } if changed > 0 => {
            let roots: Vec<&str> = cancel.iter().map(|c| c.root.as_str()).take(10).collect();
            let paused: Vec<&str> = pause.iter().map(|c| c.root.as_str()).take(10).collect();
            let types: Vec<&str> = tasktypes.iter().map(|t| t.tasktype.task.as_str()).collect();
            info!(
                cancel = cancel.len(),
                pause = pause.len(),
                added = changed,
                roots = ?roots,
                paused = ?paused,
                tasktypes = ?types,
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
#[path = "control_tests.rs"]
mod tests;
