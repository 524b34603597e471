//! Celery message protocol v2: decoding task messages, encoding the task
//! messages ferry sends (child tasks), result documents in the format of
//! Celery's `rpc://` backend, and monitoring events.
//!
//! This module knows nothing of the broker client: headers arrive as
//! [`HeaderValue`]s, so the decoder can be fuzzed and tested on its own.
//! Paths inside task arguments may hold Python's surrogate escapes
//! (`\udcNN`), which a strict JSON string parser rejects, so arguments are
//! kept as raw JSON text and decoded where their meaning is known.

use crate::task::status::now_iso8601;
use crate::task::{ArgumentError, parse_kwargs, surrogate};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Read;

/// A header value, reduced to what AMQP tables carry and Celery uses.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    /// `None` in Python (AMQP void).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer of any width.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes that are not UTF-8.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<HeaderValue>),
    /// A nested table.
    Table(Vec<(String, HeaderValue)>),
}

impl HeaderValue {
    fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What arrived: the AMQP properties ferry reads, the headers and the body.
#[derive(Clone, Debug, Default)]
pub struct Incoming<'a> {
    /// `correlation_id` property.
    pub correlation_id: Option<&'a str>,
    /// `reply_to` property: the caller's result queue.
    pub reply_to: Option<&'a str>,
    /// `content_type` property.
    pub content_type: Option<&'a str>,
    /// `content_encoding` property.
    pub content_encoding: Option<&'a str>,
    /// Application headers.
    pub headers: &'a [(String, HeaderValue)],
    /// The body.
    pub body: &'a [u8],
}

/// A decoded task message.
#[derive(Debug)]
pub struct TaskMessage {
    /// Task id (`id` header).
    pub id: String,
    /// Task name (`task` header), e.g. `dynamo.tasks.migrate`.
    pub task: String,
    /// Workflow root id (`root_id`; the task's own id when absent).
    pub root_id: String,
    /// The id of the task that sent this one.
    pub parent_id: Option<String>,
    /// Group id.
    pub group: Option<String>,
    /// Retries so far.
    pub retries: u32,
    /// Do not run before this instant (`eta`).
    pub eta: Option<jiff::Timestamp>,
    /// Do not run after this instant (`expires`).
    pub expires: Option<jiff::Timestamp>,
    /// `[hard, soft]` time limits in seconds.
    pub timelimit: [Option<f64>; 2],
    /// Where the result goes (`reply_to` property), if anywhere.
    pub reply_to: Option<String>,
    /// The result's `correlation_id` (the property, else the task id).
    pub correlation_id: String,
    /// Positional arguments, as JSON text.
    pub args: Vec<Box<RawValue>>,
    /// Keyword arguments in order, values as JSON text.
    pub kwargs: Vec<(String, Box<RawValue>)>,
    /// The rest of a chain, last element first to run (Celery's order).
    pub chain: Vec<Signature>,
}

impl TaskMessage {
    /// The keyword argument `key`, as JSON text.
    pub fn kwarg(&self, key: &str) -> Option<&RawValue> {
        self.kwargs.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The keyword arguments besides `paths` and `jobid`, read into `T`.
    pub fn kwargs_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ArgumentError> {
        parse_kwargs(&self.kwargs_object(&["paths", "jobid"]))
    }

    /// At most about 1 KiB of the keyword arguments, for display (events),
    /// without copying what is not shown.
    pub fn kwargs_repr(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.kwargs.iter().enumerate() {
            if out.len() > 1024 {
                out.push_str("...");
                break;
            }
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&serde_json::to_string(k).expect("string"));
            out.push_str(": ");
            out.push_str(&repr_prefix(v.get()));
        }
        out.push('}');
        out
    }

    /// The keyword arguments except those in `skip`, as one JSON object.
    pub fn kwargs_object(&self, skip: &[&str]) -> String {
        object_text(self.kwargs.iter().filter(|(k, _)| !skip.contains(&k.as_str())))
    }
}

/// A task signature inside a message's `embed` (a chain link).
#[derive(Clone, Debug, Deserialize)]
pub struct Signature {
    /// Task name.
    pub task: String,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Option<Box<RawValue>>,
    /// Options; ferry reads `queue`.
    #[serde(default)]
    pub options: Option<SignatureOptions>,
}

/// The options of a signature that ferry uses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SignatureOptions {
    /// The queue to send the task to.
    #[serde(default)]
    pub queue: Option<String>,
}

/// Why a message was not accepted, with whatever identified it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// The task id, if the headers named one.
    pub id: Option<String>,
    /// The task name, if the headers named one.
    pub task: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// Decodes a protocol v2 task message of at most `max_bytes` (after
/// decompression).
pub fn decode(m: &Incoming<'_>, max_bytes: usize) -> Result<TaskMessage, Rejection> {
    let header = |k: &str| m.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let id = header("id").and_then(HeaderValue::as_str).map(str::to_string);
    let task = header("task").and_then(HeaderValue::as_str).map(str::to_string);
    let reject = |reason: String| Rejection {
        id: id.clone(),
        task: task.clone(),
        reason,
    };
    let (Some(id_s), Some(task_s)) = (id.clone(), task.clone()) else {
        return Err(reject(match (header("id"), header("task")) {
            (_, None) => {
                "not a Celery protocol v2 task message: no `task` header (protocol v1 is not supported)".into()
            }
            (None, _) => "no `id` header".into(),
            _ => "`id` and `task` headers must be strings".into(),
        }));
    };
    if id_s.is_empty() || task_s.is_empty() {
        return Err(reject("empty `id` or `task` header".into()));
    }
    match m.content_type {
        Some("application/json") | None => {}
        Some(other) => {
            return Err(reject(format!(
                "content type {other:?} is not accepted (only application/json)"
            )));
        }
    }
    if let Some(enc) = m.content_encoding
        && !enc.eq_ignore_ascii_case("utf-8")
        && !enc.eq_ignore_ascii_case("utf8")
    {
        return Err(reject(format!("content encoding {enc:?} is not accepted (only utf-8)")));
    }
    let owned;
    let body = match header("compression") {
        None | Some(HeaderValue::Null) => m.body,
        Some(HeaderValue::Str(c)) if c == "application/x-gzip" || c == "zlib" => {
            owned = inflate(m.body, max_bytes).map_err(reject)?;
            &owned[..]
        }
        Some(other) => return Err(reject(format!("compression {other:?} is not supported (only zlib)"))),
    };
    if body.len() > max_bytes {
        return Err(reject(format!(
            "message body of {} bytes is larger than max_message_bytes ({max_bytes})",
            body.len()
        )));
    }
    let opt_str = |k: &str| -> Result<Option<String>, Rejection> {
        match header(k) {
            None | Some(HeaderValue::Null) => Ok(None),
            Some(HeaderValue::Str(s)) => Ok(Some(s.clone())),
            Some(v) => Err(reject(format!("header `{k}` must be a string, found {v:?}"))),
        }
    };
    let time = |k: &str| -> Result<Option<jiff::Timestamp>, Rejection> {
        opt_str(k)?
            .map(|s| parse_time(&s).map_err(|e| reject(format!("header `{k}`: {e}"))))
            .transpose()
    };
    let retries = match header("retries") {
        None | Some(HeaderValue::Null) => 0,
        Some(HeaderValue::Int(n)) if (0..=u32::MAX as i64).contains(n) => *n as u32,
        Some(v) => return Err(reject(format!("header `retries` must be a count, found {v:?}"))),
    };
    let mut timelimit = [None, None];
    match header("timelimit") {
        None | Some(HeaderValue::Null) => {}
        Some(HeaderValue::List(l)) if l.len() == 2 => {
            for (slot, v) in timelimit.iter_mut().zip(l) {
                *slot = match v {
                    HeaderValue::Null => None,
                    HeaderValue::Int(n) if *n > 0 => Some(*n as f64),
                    HeaderValue::Float(x) if *x > 0.0 && x.is_finite() => Some(*x),
                    v => return Err(reject(format!("header `timelimit` holds {v:?}, not seconds"))),
                };
            }
        }
        Some(v) => return Err(reject(format!("header `timelimit` must be [hard, soft], found {v:?}"))),
    }
    let (args, kwargs, embed) = parse_body(body).map_err(&reject)?;
    let chain = match embed.and_then(|e| e.chain) {
        None => Vec::new(),
        Some(raw) => serde_json::from_str::<Option<Vec<Signature>>>(raw.get())
            .map_err(|e| reject(format!("embed.chain: {e}")))?
            .unwrap_or_default(),
    };
    Ok(TaskMessage {
        root_id: opt_str("root_id")?.unwrap_or_else(|| id_s.clone()),
        parent_id: opt_str("parent_id")?,
        group: opt_str("group")?,
        retries,
        eta: time("eta")?,
        expires: time("expires")?,
        timelimit,
        reply_to: m.reply_to.filter(|r| !r.is_empty()).map(str::to_string),
        correlation_id: m
            .correlation_id
            .filter(|c| !c.is_empty())
            .map_or_else(|| id_s.clone(), str::to_string),
        args,
        kwargs,
        chain,
        id: id_s,
        task: task_s,
    })
}

#[derive(Deserialize)]
struct Embed {
    #[serde(default)]
    chain: Option<Box<RawValue>>,
}

type Body = (Vec<Box<RawValue>>, Vec<(String, Box<RawValue>)>, Option<Embed>);

fn parse_body(body: &[u8]) -> Result<Body, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let parts: Vec<Box<RawValue>> =
        serde_json::from_str(text).map_err(|e| format!("body is not a JSON array [args, kwargs, embed]: {e}"))?;
    if parts.len() != 3 {
        return Err(format!(
            "body must be [args, kwargs, embed], found an array of {}",
            parts.len()
        ));
    }
    let args: Vec<Box<RawValue>> =
        serde_json::from_str(parts[0].get()).map_err(|e| format!("args must be a list: {e}"))?;
    let kwargs = serde_json::from_str::<crate::task::path_object::OrderedMap>(parts[1].get())
        .map_err(|e| format!("kwargs must be an object: {e}"))?
        .0;
    let embed: Option<Embed> =
        serde_json::from_str(parts[2].get()).map_err(|e| format!("embed must be an object or null: {e}"))?;
    Ok((args, kwargs, embed))
}

fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot decompress the body: {e}"))?;
    if out.len() > max {
        return Err(format!("decompressed body is larger than max_message_bytes ({max})"));
    }
    Ok(out)
}

/// Parses an ISO 8601 time as Python's `isoformat()` writes it; a time
/// without an offset is UTC (protocol v2's rule).
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .and_then(|dt| dt.to_zoned_datetime(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|_| format!("expected an ISO 8601 time, found {s:?}"))
}

/// Writes `pairs` as a JSON object.
pub fn object_text<'a>(pairs: impl Iterator<Item = &'a (String, Box<RawValue>)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).expect("string"));
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    out
}

/// A Celery task state as stored in a result document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Finished; `result` is the task's return value.
    Success,
    /// Failed; `result` is an exception document.
    Failure,
    /// Not run: expired or revoked.
    Revoked,
}

impl TaskState {
    /// Celery's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
        }
    }
}

/// An exception document (`{"exc_type", "exc_message", "exc_module"}`),
/// which Python's client turns back into an exception.
pub fn exception(exc_type: &str, exc_module: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "exc_type": exc_type,
        "exc_message": [message],
        "exc_module": exc_module,
    }))
    .expect("json")
}

/// Who a result is about, beside its state and value: the task and its
/// place in a job, as Celery's extended results (`result_extended`) carry
/// them (`name`, `worker`, `queue`) plus the job id, so a hub can file a
/// result (a failure included, which has no `jobid` in its value) without
/// having seen the task before.
#[derive(Clone, Copy, Debug)]
pub struct ResultHead<'a> {
    /// The task id.
    pub task_id: &'a str,
    /// The task name.
    pub name: &'a str,
    /// The task that sent it.
    pub parent_id: Option<&'a str>,
    /// The `jobid` keyword argument, as JSON text.
    pub jobid: Option<&'a RawValue>,
    /// The node that ran it.
    pub worker: &'a str,
    /// The queue it came from.
    pub queue: &'a str,
}

/// A result document for the `rpc://` backend: `status`, `result`,
/// `traceback`, `children`, `date_done`, `task_id` (and `parent_id`),
/// the extended fields of [`ResultHead`], and ferry's `children_count`
/// and `run` (the execution that sent the children, [`ChildId`]).
/// `result` is JSON text; `children` are task ids of child tasks.
pub fn result_document(
    head: &ResultHead<'_>,
    state: TaskState,
    result: &[u8],
    traceback: Option<&str>,
    children: &[String],
    children_count: u64,
    run: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(result.len() + 384 + children.len() * 50);
    out.extend_from_slice(b"{\"status\":\"");
    out.extend_from_slice(state.as_str().as_bytes());
    out.extend_from_slice(b"\",\"result\":");
    out.extend_from_slice(result);
    out.extend_from_slice(b",\"traceback\":");
    match traceback {
        Some(t) => surrogate::encode(t.as_bytes(), &mut out),
        None => out.extend_from_slice(b"null"),
    }
    // Each child as Celery's AsyncResult.as_tuple(): [[id, parent], nodes].
    out.extend_from_slice(b",\"children\":[");
    for (i, c) in children.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"[[");
        surrogate::encode(c.as_bytes(), &mut out);
        out.extend_from_slice(b",null],null]");
    }
    // How many, also when the ids are left out (`children_in_result`).
    out.extend_from_slice(b"],\"children_count\":");
    out.extend_from_slice(itoa::Buffer::new().format(children_count).as_bytes());
    // Which execution sent them (their ids encode it, [`ChildId`]).
    out.extend_from_slice(b",\"run\":\"");
    out.extend_from_slice(run_hex(run).as_bytes());
    out.extend_from_slice(b"\",\"date_done\":");
    surrogate::encode(now_iso8601().as_bytes(), &mut out);
    out.extend_from_slice(b",\"task_id\":");
    surrogate::encode(head.task_id.as_bytes(), &mut out);
    if let Some(p) = head.parent_id {
        out.extend_from_slice(b",\"parent_id\":");
        surrogate::encode(p.as_bytes(), &mut out);
    }
    out.extend_from_slice(b",\"name\":");
    surrogate::encode(head.name.as_bytes(), &mut out);
    out.extend_from_slice(b",\"worker\":");
    surrogate::encode(head.worker.as_bytes(), &mut out);
    out.extend_from_slice(b",\"queue\":");
    surrogate::encode(head.queue.as_bytes(), &mut out);
    if let Some(j) = head.jobid {
        out.extend_from_slice(b",\"jobid\":");
        out.extend_from_slice(j.get().as_bytes());
    }
    out.push(b'}');
    out
}

/// A task message ferry sends (a child task), ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The new task's id.
    pub id: String,
    /// Headers, in the shape Python's `as_task_v2` sends.
    pub headers: Vec<(String, HeaderValue)>,
    /// The JSON body `[[], kwargs, embed]`.
    pub body: Vec<u8>,
}

/// Where a child task stands among its siblings: the execution of its
/// parent that sent it (`run`, random per execution) and its place in that
/// execution's publishing order (`seq`, from 0).
///
/// A child's id encodes both (an RFC 9562 version 8 UUID), so a hub that
/// counts results can tell the children of a discovery that ran twice
/// (its agent died mid-walk and the broker redelivered it) apart: only
/// those of the execution whose result it accepted count, and a child
/// counts only if its `seq` is below that result's `children_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildId {
    /// The parent's execution (60 bits; see [`ChildId::new_run`]).
    pub run: u64,
    /// The child's place, from 0 (62 bits).
    pub seq: u64,
}

/// The bits of `run` that the UUID's version nibble takes (byte 6, high).
const RUN_VERSION_BITS: u64 = 0xF000;

impl ChildId {
    /// A fresh execution id: 64 random bits without the four that the
    /// UUID version overwrites.
    pub fn new_run() -> u64 {
        let b = uuid::Uuid::new_v4().into_bytes();
        u64::from_be_bytes(b[..8].try_into().expect("8 bytes")) & !RUN_VERSION_BITS
    }

    /// The id as a UUID string.
    pub fn to_uuid(self) -> String {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(self.run & !RUN_VERSION_BITS).to_be_bytes());
        b[8..].copy_from_slice(&(self.seq & (u64::MAX >> 2)).to_be_bytes());
        uuid::Uuid::new_v8(b).to_string()
    }

    /// Reads a child id back; `None` for any other id (a version 4 UUID
    /// from a Celery client or an older agent, or not a UUID at all).
    pub fn parse(id: &str) -> Option<ChildId> {
        let u = uuid::Uuid::try_parse(id).ok()?;
        if u.get_version_num() != 8 {
            return None;
        }
        let b = u.into_bytes();
        Some(ChildId {
            run: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")) & !RUN_VERSION_BITS,
            seq: u64::from_be_bytes(b[8..].try_into().expect("8 bytes")) & (u64::MAX >> 2),
        })
    }
}

/// An execution id as results carry it (`run`, 16 hex digits).
pub fn run_hex(run: u64) -> String {
    format!("{run:016x}")
}

/// Builds a child task message with id `id`: `task` with keyword
/// arguments `kwargs` (a JSON object), sent by `parent` (whose root it
/// shares), followed by `chain` (last element runs first).
pub fn child_task(
    id: String,
    task: &str,
    kwargs: &str,
    parent: &TaskMessage,
    chain: &[Signature],
    origin: &str,
) -> Outgoing {
    task_message(id, task, kwargs, (&parent.root_id, Some(&parent.id)), chain, origin)
}

/// Builds a retry of `parent`: the same task under a new id `id`, a child
/// of `parent`, on `kwargs`, with `chain` behind it, its `retries` header
/// one more than the parent's and its `eta` (Celery's ISO 8601 text) set
/// so that no agent runs it before then.
pub fn retry_task(
    id: String,
    parent: &TaskMessage,
    kwargs: &str,
    chain: &[Signature],
    origin: &str,
    eta: jiff::Timestamp,
) -> Outgoing {
    let mut out = task_message(
        id,
        &parent.task,
        kwargs,
        (&parent.root_id, Some(&parent.id)),
        chain,
        origin,
    );
    let when = eta.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string();
    for (k, v) in out.headers.iter_mut() {
        match k.as_str() {
            "retries" => *v = HeaderValue::Int(i64::from(parent.retries) + 1),
            "eta" => *v = HeaderValue::Str(when.clone()),
            _ => {}
        }
    }
    out
}

/// Builds the first task of a workflow (its own root, no parent), as a
/// client's `send_task` does: what a hub publishes to start a job, with
/// `chain` behind it (last element runs first).
pub fn root_task(id: String, task: &str, kwargs: &str, chain: &[Signature], origin: &str) -> Outgoing {
    let root = id.clone();
    task_message(id, task, kwargs, (&root, None), chain, origin)
}

fn task_message(
    id: String,
    task: &str,
    kwargs: &str,
    (root_id, parent_id): (&str, Option<&str>),
    chain: &[Signature],
    origin: &str,
) -> Outgoing {
    let s = |v: &str| HeaderValue::Str(v.to_string());
    let headers = vec![
        ("lang".into(), s("rs")),
        ("task".into(), s(task)),
        ("id".into(), s(&id)),
        ("shadow".into(), HeaderValue::Null),
        ("eta".into(), HeaderValue::Null),
        ("expires".into(), HeaderValue::Null),
        ("group".into(), HeaderValue::Null),
        ("group_index".into(), HeaderValue::Null),
        ("retries".into(), HeaderValue::Int(0)),
        (
            "timelimit".into(),
            HeaderValue::List(vec![HeaderValue::Null, HeaderValue::Null]),
        ),
        ("root_id".into(), s(root_id)),
        ("parent_id".into(), parent_id.map_or(HeaderValue::Null, s)),
        ("argsrepr".into(), s("()")),
        ("kwargsrepr".into(), s(&repr_prefix(kwargs))),
        ("origin".into(), s(origin)),
        ("ignore_result".into(), HeaderValue::Bool(false)),
    ];
    let mut body = Vec::with_capacity(kwargs.len() + 128);
    body.extend_from_slice(b"[[],");
    body.extend_from_slice(kwargs.as_bytes());
    body.extend_from_slice(b",{\"callbacks\":null,\"errbacks\":null,\"chain\":");
    if chain.is_empty() {
        body.extend_from_slice(b"null");
    } else {
        body.push(b'[');
        for (i, sig) in chain.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            write_signature(sig, &mut body);
        }
        body.push(b']');
    }
    body.extend_from_slice(b",\"chord\":null}]");
    Outgoing { id, headers, body }
}

/// Writes a signature as Celery's JSON signature object.
pub fn write_signature(sig: &Signature, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"task\":");
    surrogate::encode(sig.task.as_bytes(), out);
    out.extend_from_slice(b",\"args\":[],\"kwargs\":");
    match &sig.kwargs {
        Some(k) => out.extend_from_slice(k.get().as_bytes()),
        None => out.extend_from_slice(b"{}"),
    }
    out.extend_from_slice(b",\"options\":{");
    if let Some(q) = sig.options.as_ref().and_then(|o| o.queue.as_deref()) {
        out.extend_from_slice(b"\"queue\":");
        surrogate::encode(q.as_bytes(), out);
    }
    out.extend_from_slice(b"},\"subtask_type\":null,\"immutable\":false}");
}

/// The first 1024 bytes of a JSON text, for `kwargsrepr`-like display.
pub fn repr_prefix(s: &str) -> String {
    if s.len() <= 1024 {
        return s.to_string();
    }
    let mut end = 1021;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, task: &str) -> Vec<(String, HeaderValue)> {
        vec![
            ("lang".into(), HeaderValue::Str("py".into())),
            ("task".into(), HeaderValue::Str(task.into())),
            ("id".into(), HeaderValue::Str(id.into())),
            ("eta".into(), HeaderValue::Null),
            ("retries".into(), HeaderValue::Int(0)),
            (
                "timelimit".into(),
                HeaderValue::List(vec![HeaderValue::Null, HeaderValue::Int(30)]),
            ),
            ("root_id".into(), HeaderValue::Str(id.into())),
            ("parent_id".into(), HeaderValue::Null),
            ("stamps".into(), HeaderValue::Table(vec![])),
        ]
    }

    #[test]
    fn decodes_what_python_sends() {
        let h = headers("t1", "dynamo.tasks.migrate");
        let body = br#"[[], {"paths": ["/a/\udcff", {"path": "/b", "size": 3}], "jobid": 7}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
        let m = decode(
            &Incoming {
                correlation_id: Some("t1"),
                reply_to: Some("r-1"),
                content_type: Some("application/json"),
                content_encoding: Some("utf-8"),
                headers: &h,
                body,
            },
            1 << 20,
        )
        .unwrap();
        assert_eq!(m.task, "dynamo.tasks.migrate");
        assert_eq!(m.root_id, "t1");
        assert_eq!(m.timelimit, [None, Some(30.0)]);
        assert_eq!(m.reply_to.as_deref(), Some("r-1"));
        assert_eq!(m.kwarg("jobid").unwrap().get(), "7");
        assert_eq!(m.kwargs_object(&["paths"]), r#"{"jobid":7}"#);
        assert!(m.chain.is_empty());
    }

    #[test]
    fn rejects_with_reasons() {
        let h = headers("t2", "x");
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "not a JSON array"),
            (b"[[], {}]", "array of 2"),
            (b"[{}, {}, null]", "args must be a list"),
            (b"[[], [], null]", "kwargs must be an object"),
            (b"[[], {}, 5]", "embed"),
        ];
        for (body, why) in cases {
            let e = decode(
                &Incoming {
                    headers: &h,
                    body,
                    ..Default::default()
                },
                1 << 20,
            )
            .unwrap_err();
            assert!(e.reason.contains(why), "{e}");
            assert_eq!(e.id.as_deref(), Some("t2"));
        }
        let e = decode(&Incoming::default(), 10).unwrap_err();
        assert!(e.reason.contains("no `task` header"), "{e}");
        let e = decode(
            &Incoming {
                headers: &h,
                body: &[b' '; 100],
                ..Default::default()
            },
            10,
        )
        .unwrap_err();
        assert!(e.reason.contains("max_message_bytes"), "{e}");
        let e = decode(
            &Incoming {
                headers: &h,
                content_type: Some("application/x-python-serialize"),
                body: b"x",
                ..Default::default()
            },
            10,
        )
        .unwrap_err();
        assert!(e.reason.contains("not accepted"), "{e}");
    }

    #[test]
    fn zlib_bodies_and_bombs() {
        use std::io::Write;
        let mut h = headers("t3", "x");
        h.push(("compression".into(), HeaderValue::Str("application/x-gzip".into())));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"[[], {\"a\": 1}, null]").unwrap();
        let body = z.finish().unwrap();
        let m = decode(
            &Incoming {
                headers: &h,
                body: &body,
                ..Default::default()
            },
            1000,
        )
        .unwrap();
        assert_eq!(m.kwarg("a").unwrap().get(), "1");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&vec![b' '; 1 << 20]).unwrap();
        let bomb = z.finish().unwrap();
        let e = decode(
            &Incoming {
                headers: &h,
                body: &bomb,
                ..Default::default()
            },
            1000,
        )
        .unwrap_err();
        assert!(e.reason.contains("larger than"), "{e}");
    }

    #[test]
    fn child_messages_round_trip() {
        let h = headers("p", "dynamo.tasks.recursive_navigate");
        let parent = decode(
            &Incoming {
                headers: &h,
                body: b"[[], {}, null]",
                ..Default::default()
            },
            100,
        )
        .unwrap();
        let next: Signature = serde_json::from_str(
            r#"{"task": "dynamo.tasks.recall", "kwargs": {"endpoint": "e"}, "options": {"queue": "s.default#worker"}}"#,
        )
        .unwrap();
        let out = child_task(
            "c".into(),
            "dynamo.tasks.migrate",
            r#"{"paths":["/x"]}"#,
            &parent,
            &[next],
            "ferry@h",
        );
        let m = decode(
            &Incoming {
                headers: &out.headers,
                body: &out.body,
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
        assert_eq!(m.id, out.id);
        assert_eq!(m.parent_id.as_deref(), Some("p"));
        assert_eq!(m.root_id, "p");
        assert_eq!(m.chain.len(), 1);
        assert_eq!(m.chain[0].task, "dynamo.tasks.recall");
        assert_eq!(
            m.chain[0].options.as_ref().unwrap().queue.as_deref(),
            Some("s.default#worker")
        );
    }

    #[test]
    fn child_ids_carry_their_execution_and_place() {
        for _ in 0..100 {
            let run = ChildId::new_run();
            for seq in [0, 1, 39, (1 << 62) - 1] {
                let id = ChildId { run, seq }.to_uuid();
                assert_eq!(ChildId::parse(&id), Some(ChildId { run, seq }), "{id}");
                assert!(uuid::Uuid::try_parse(&id).is_ok());
            }
        }
        // Two executions of one parent never share a child id.
        let (a, b) = (ChildId::new_run(), ChildId::new_run());
        assert_ne!(a, b);
        assert_ne!(
            ChildId { run: a, seq: 0 }.to_uuid(),
            ChildId { run: b, seq: 0 }.to_uuid()
        );
        // Ids from Celery clients are not child ids.
        assert_eq!(ChildId::parse(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(ChildId::parse("not-a-uuid"), None);
    }

    #[test]
    fn result_documents_parse() {
        let jobid = RawValue::from_string("7".into()).unwrap();
        let head = ResultHead {
            task_id: "i",
            name: "dynamo.tasks.migrate",
            parent_id: Some("p"),
            jobid: Some(&jobid),
            worker: "ferry@n1",
            queue: "s.default#worker",
        };
        let doc = result_document(&head, TaskState::Success, b"{\"a\":1}", None, &["c1".into()], 1, 0xabc);
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v["status"], "SUCCESS");
        assert_eq!(v["children"], serde_json::json!([[["c1", null], null]]));
        assert_eq!(v["children_count"], 1);
        assert_eq!(v["run"], "0000000000000abc");
        assert_eq!(v["task_id"], "i");
        assert_eq!(v["parent_id"], "p");
        assert_eq!(
            (&v["name"], &v["worker"], &v["queue"], &v["jobid"]),
            (
                &serde_json::json!("dynamo.tasks.migrate"),
                &serde_json::json!("ferry@n1"),
                &serde_json::json!("s.default#worker"),
                &serde_json::json!(7)
            )
        );
        assert!(v["date_done"].as_str().unwrap().ends_with("+00:00"));
        let exc = exception("NotRegistered", "celery.exceptions", "x");
        let doc = result_document(
            &ResultHead { jobid: None, ..head },
            TaskState::Failure,
            &exc,
            Some("tb"),
            &[],
            0,
            0,
        );
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v["result"]["exc_type"], "NotRegistered");
        assert!(v.get("jobid").is_none());
        assert_eq!(
            (&v["children"], &v["children_count"]),
            (&serde_json::json!([]), &serde_json::json!(0))
        );
        // Ids left out, the count still told.
        let doc = result_document(&head, TaskState::Success, b"{}", None, &[], 2_500_000, 0);
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v["children_count"], 2_500_000);
        assert_eq!(
            parse_time("2026-01-02T03:04:05.123456").unwrap().to_string(),
            "2026-01-02T03:04:05.123456Z"
        );
        assert!(parse_time("2026-01-02T03:04:05+01:00").is_ok());
    }
}
