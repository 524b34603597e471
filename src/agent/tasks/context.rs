//! The vocabulary every agent task shares: what it was asked
//! ([`Input`]), where it runs ([`TaskEnv`]), whether its job was cancelled
//! ([`Cancel`]), where its child tasks and streamed results go
//! ([`ChildSink`]), where it reads what others stream to it ([`Inbox`]),
//! and how it ends ([`TaskOutput`], [`TaskError`]). The runtime gives tasks
//! the broker's sink; tests give them an in-memory one.

use super::rules::RuleError;
use crate::agent::celery::{Outgoing, TaskMessage};
use crate::batch::BatchLimits;
use crate::config::{AgentSettings, ConsumerSpec, PathMap};
use crate::ops::OpError;
use crate::snapdiff::run::SnapdiffError;
use crate::snapdiff::state::AcquireError;
use crate::task::{ArgumentError, PathObject, TaskName};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// The Python module named in ferry's exception documents.
pub const EXC_MODULE: &str = "ferry";

/// What every task was asked, read once from its message.
pub struct Input<'m> {
    /// The message (its id, root and chain, for children and streams).
    pub msg: &'m TaskMessage,
    /// Which task.
    pub name: TaskName,
    /// The job id, as it was sent (any JSON value), or none.
    pub jobid: Option<&'m RawValue>,
    /// The input paths.
    pub paths: Vec<PathObject>,
}

impl Input<'_> {
    /// The fileset's junction, the one path a fileset task takes (decoding
    /// the request checked there is exactly one).
    pub fn fileset(&self) -> &PathObject {
        &self.paths[0]
    }
}

/// Where a task runs and the settings tasks read.
#[derive(Clone, Debug)]
pub struct TaskEnv {
    /// This agent's site.
    pub site: String,
    /// The configured queue the message came from (`default`, ...).
    pub queue: String,
    /// The broker queue the message came from (`<site>.<queue>#<function>`).
    pub queue_name: String,
    /// The node name (`ferry@<host>`), the `origin` of child tasks.
    pub node: String,
    /// How discovery cuts batches.
    pub batch: BatchLimits,
    /// Metadata calls in flight per discovery walk.
    pub walk_threads: usize,
    /// How long a discovery walks alone before it may give subtrees to
    /// the site's other nodes; `None` never.
    pub walk_split_after: Option<Duration>,
    /// Age after which a snapdiff lock is stale.
    pub lock_threshold: Duration,
    /// Longest wait for news from a snapdiff's delete and move handlers.
    pub stream_timeout: Duration,
    /// Whether the task's job has been cancelled since it started.
    pub cancel: Cancel,
    /// How often a running walk reports its progress.
    pub progress_every: Duration,
    /// This site's mount points of the wire paths (`path_map`): a task's
    /// paths are mapped as it is read, and every path it sends out back.
    pub paths: PathMap,
}

impl TaskEnv {
    /// The environment of a task delivered to `consumer` on `node` of
    /// `site`, whose job is cancelled once `cancel` says so.
    pub fn new(site: &str, node: &str, consumer: &ConsumerSpec, settings: &AgentSettings, cancel: Cancel) -> TaskEnv {
        TaskEnv {
            site: site.to_string(),
            queue: consumer.queue_config.clone(),
            queue_name: consumer.queue.clone(),
            node: node.to_string(),
            batch: BatchLimits::from_settings(&settings.batch),
            walk_threads: settings.walk_threads,
            walk_split_after: settings.walk_split_after,
            lock_threshold: settings.lock_threshold,
            stream_timeout: settings.snapdiff_stream_timeout,
            cancel,
            progress_every: crate::config::defaults::PROGRESS_EVERY,
            paths: settings.path_map.clone(),
        }
    }
}

/// Whether a running task's job has been cancelled: a cheap question the
/// task's blocking thread asks before each child task it publishes (and a
/// snapdiff while it waits for its handlers). It is a plain function, so
/// tasks know nothing of where cancellations come from (the runtime's
/// control channel, `agent::control`) and tests can cancel at any point.
#[derive(Clone)]
pub struct Cancel(Arc<dyn Fn() -> bool + Send + Sync>);

impl Cancel {
    /// The job is cancelled whenever `cancelled` returns true.
    pub fn new(cancelled: impl Fn() -> bool + Send + Sync + 'static) -> Cancel {
        Cancel(Arc::new(cancelled))
    }

    /// Whether the job is cancelled now.
    pub fn is_cancelled(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cancel").field(&self.is_cancelled()).finish()
    }
}

/// A message that could not be published or read; the task's own message
/// goes back to its queue to run again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Publishing failed or was not confirmed.
    #[error("cannot publish to {queue}: {reason}")]
    Publish {
        /// The queue.
        queue: String,
        /// What the broker said.
        reason: String,
    },
    /// A stream queue could not be set up.
    #[error("cannot read stream queue {queue}: {reason}")]
    Subscribe {
        /// The queue.
        queue: String,
        /// What the broker said.
        reason: String,
    },
    /// The stream queue went away while the task read it.
    #[error("lost the stream queue: {0}")]
    StreamLost(String),
}

/// The children a task published: how many, and their ids unless the
/// sender asked to leave them out of the result (`children_in_result =
/// false`: a discovery of 100 M files publishes some 2.5 M children, whose
/// ids would otherwise be held and sent back whole).
#[derive(Debug, Default)]
pub struct Published {
    /// Their ids, in publishing order (empty when left out).
    pub ids: Vec<String>,
    /// How many were published.
    pub count: u64,
    /// The execution that published them: their ids encode it with their
    /// place ([`crate::agent::celery::ChildId`]).
    pub run: u64,
}

/// What a task produced: its result object and its children.
pub struct TaskOutput {
    /// The result object (JSON).
    pub result: Vec<u8>,
    /// The child tasks published.
    pub children: Published,
}

/// Why a task failed as a whole, each kind under its own exception name
/// so a client can tell bad arguments from a lost endpoint or broker.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Not a task ferry runs.
    #[error("{0:?} is not a task ferry runs")]
    NotRegistered(String),
    /// Arguments of the wrong shape.
    #[error("{0}")]
    Arguments(#[from] ArgumentError),
    /// A workflow's rules that cannot be used.
    #[error("{0}")]
    Rules(#[from] RuleError),
    /// An operation that cannot run (arguments, endpoint).
    #[error("{0}")]
    Op(#[from] OpError),
    /// Child tasks or streams could not be published.
    #[error("{0}")]
    Broker(#[from] SinkError),
    /// The walk could not be done.
    #[error("{context}: {source}")]
    Walk {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A snapdiff or rotate failed.
    #[error("{0}")]
    Snapdiff(#[from] SnapdiffError),
    /// The diff was delivered, but the rotation after it failed.
    #[error("the diff was delivered but rotating failed: {0}")]
    Rotate(SnapdiffError),
    /// A snapdiff's deletes and moves could not be held for their turn.
    #[error("cannot hold the run's deletes and moves in a temporary file: {0}")]
    Hold(std::io::Error),
    /// Delete and move handlers did not report in time.
    #[error("no streamed results from {handlers} delete/move task(s) for {seconds}s (snapdiff_stream_timeout)")]
    StreamTimeout {
        /// Handlers still silent.
        handlers: usize,
        /// The idle timeout.
        seconds: u64,
    },
}

impl TaskError {
    /// The exception the result document names: Celery's own names where
    /// Celery has one, the seed's `SnapdiffLockError`, otherwise ferry's
    /// (`exc_type`, `exc_module`).
    pub fn exception(&self) -> (&'static str, &'static str) {
        match self {
            TaskError::NotRegistered(_) => ("NotRegistered", "celery.exceptions"),
            TaskError::Arguments(_) | TaskError::Rules(_) => ("InvalidArguments", EXC_MODULE),
            TaskError::Op(e) if e.is_endpoint() => ("EndpointUnavailable", EXC_MODULE),
            TaskError::Op(_) => ("InvalidArguments", EXC_MODULE),
            TaskError::Broker(_) => ("BrokerLost", EXC_MODULE),
            TaskError::Snapdiff(SnapdiffError::Lock(AcquireError::Held(_))) => ("SnapdiffLockError", EXC_MODULE),
            TaskError::Walk { .. } | TaskError::Snapdiff(_) | TaskError::Rotate(_) | TaskError::Hold(_) => {
                ("FilesystemError", EXC_MODULE)
            }
            TaskError::StreamTimeout { .. } => ("StreamTimeout", EXC_MODULE),
        }
    }
}

/// Where child tasks and streamed results go, and where a task reads
/// what others stream to it.
pub trait ChildSink {
    /// Publishes a task message to `queue`. It is confirmed by the broker
    /// before the task's own result is published.
    fn send(&mut self, queue: &str, msg: Outgoing) -> Result<(), SinkError>;
    /// Publishes a question to `queue`: a task that answers by stream
    /// and has no result (no `reply_to`), so no hub counts it.
    fn ask(&mut self, queue: &str, msg: Outgoing) -> Result<(), SinkError>;
    /// Publishes a stream message (JSON) to `queue`.
    fn stream(&mut self, queue: &str, correlation_id: &str, body: Vec<u8>) -> Result<(), SinkError>;
    /// Declares a private queue for this task and reads from it.
    fn subscribe(&mut self, queue: &str) -> Result<Box<dyn Inbox>, SinkError>;
    /// Sends a progress report of task `task_id` (a Celery `PROGRESS`
    /// result document) where its result will go, if anywhere. A report
    /// that cannot go is dropped: the next one, or the result, says more.
    fn progress(&mut self, task_id: &str, document: Vec<u8>);
    /// Hands the hub a document of task `task_id` (JSON, where its result
    /// will go), confirmed by the broker before the task's own result is
    /// published: what a task reports besides its result and must not be
    /// lost (a bidirectional snapdiff's change events).
    fn report(&mut self, task_id: &str, document: Vec<u8>) -> Result<(), SinkError>;
    /// What `queue` holds now: ready messages and consumers; `None` when
    /// the broker cannot say. A walk asks its discovery queue before it
    /// gives subtrees away.
    fn queue_counts(&mut self, queue: &str) -> Option<QueueCounts>;
}

/// What a queue holds now, as the broker answers a declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready (not those delivered and unacknowledged).
    pub messages: u32,
    /// Consumers.
    pub consumers: u32,
}

/// Messages streamed to a task.
pub trait Inbox {
    /// The next message body, or `None` if none came within `idle`.
    fn next(&mut self, idle: Duration) -> Result<Option<Vec<u8>>, SinkError>;
}

/// An in-memory sink for tests: it decodes and keeps every child task,
/// keeps every stream message, and answers each child that asks for
/// streamed results with the stream its handler would send (one last
/// message, with `failures` failed paths for children whose paths match
/// `fail`). It can also stand for a hub that cancels the job once a given
/// number of children went out ([`memory::Memory::cancel`]).
#[cfg(test)]
pub(crate) mod memory {
    use super::*;
    use crate::agent::celery::{HeaderValue, Incoming, TaskMessage, decode};
    use crate::task::stream::stream_message;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    #[derive(Default)]
    pub(crate) struct Memory {
        /// Child tasks, by queue, in order.
        pub(crate) sent: Vec<(String, TaskMessage)>,
        /// Stream messages, by queue.
        pub(crate) streamed: Vec<(String, Vec<u8>)>,
        /// Stream queues subscribed to.
        pub(crate) subscribed: Vec<String>,
        /// Messages waiting in the subscribed stream.
        pub(crate) inbox: Rc<RefCell<VecDeque<Vec<u8>>>>,
        /// Path substring whose streamed outcome is `failures`.
        pub(crate) fail: Option<String>,
        /// Handlers never answer (their streams stay silent).
        pub(crate) silent: bool,
        /// The job is cancelled once this many children were sent.
        pub(crate) cancel_after: Option<usize>,
        /// Set when `cancel_after` children were sent.
        pub(crate) cancelled: Arc<AtomicBool>,
        /// Progress reports, as sent.
        pub(crate) progress: Vec<Vec<u8>>,
        /// Reports to the hub, as sent.
        pub(crate) reported: Vec<Vec<u8>>,
        /// Questions asked, by queue, in order.
        pub(crate) asked: Vec<(String, TaskMessage)>,
        /// Where "the other site" keeps what is at a path here: a
        /// `stat_paths` question about `from/x` is answered with the
        /// attributes of `to/x`, under the name asked. `None`: nobody
        /// answers.
        pub(crate) other_site: Option<(Vec<u8>, Vec<u8>)>,
        /// What every queue holds, as the broker would answer.
        pub(crate) queue: Option<QueueCounts>,
    }

    impl Memory {
        /// The task's cancel handle: yes once `cancel_after` children
        /// were sent.
        pub(crate) fn cancel(&self) -> Cancel {
            let flag = self.cancelled.clone();
            Cancel::new(move || flag.load(Relaxed))
        }
    }

    /// A published message read back as an agent would receive it.
    fn read_back(queue: &str, msg: &Outgoing) -> Result<TaskMessage, SinkError> {
        decode(
            &Incoming {
                headers: &msg.headers,
                body: &msg.body,
                ..Default::default()
            },
            usize::MAX,
        )
        .map_err(|e| SinkError::Publish {
            queue: queue.into(),
            reason: e.reason,
        })
    }

    impl ChildSink for Memory {
        fn send(&mut self, queue: &str, msg: Outgoing) -> Result<(), SinkError> {
            let m = read_back(queue, &msg)?;
            if !self.silent && m.kwarg("stream_results").is_some_and(|v| v.get() == "true") {
                let paths = crate::task::parse_paths(m.kwarg("paths")).expect("children carry paths");
                let mut body = Vec::new();
                for (i, p) in paths.iter().enumerate() {
                    let failed = self
                        .fail
                        .as_deref()
                        .is_some_and(|f| String::from_utf8_lossy(&p.path).contains(f));
                    if i > 0 {
                        body.push(b',');
                    }
                    let state = if failed { "failures" } else { "processed" };
                    body.extend_from_slice(b"{\"path\":");
                    crate::task::surrogate::encode(&p.path, &mut body);
                    body.extend_from_slice(format!(",\"state\":\"{state}\"}}").as_bytes());
                }
                let message = stream_message(&m.id, &m.task, 0, true, &body);
                self.inbox.borrow_mut().push_back(message);
            }
            self.sent.push((queue.to_string(), m));
            if self.cancel_after.is_some_and(|n| self.sent.len() >= n) {
                self.cancelled.store(true, Relaxed);
            }
            Ok(())
        }

        fn ask(&mut self, queue: &str, msg: Outgoing) -> Result<(), SinkError> {
            let m = read_back(queue, &msg)?;
            if let Some((from, to)) = &self.other_site {
                let asked = crate::task::parse_paths(m.kwarg("paths")).expect("questions carry paths");
                let there: Vec<PathObject> = asked
                    .iter()
                    .map(|p| {
                        let rest = p.path.strip_prefix(from.as_slice()).expect("under the answered root");
                        PathObject::new([to.as_slice(), rest].concat())
                    })
                    .collect();
                let ctx = crate::ops::OpContext::new(crate::config::Config::empty(), Some(1)).expect("a context");
                let outcomes = crate::ops::stat::stat_paths(&ctx, &there);
                let mut body = Vec::new();
                for (i, (p, o)) in asked.iter().zip(&outcomes).enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    crate::task::result::write_outcome(p, o, true, &mut body);
                }
                let message = stream_message(&m.id, &m.task, 0, true, &body);
                self.inbox.borrow_mut().push_back(message);
            }
            self.asked.push((queue.to_string(), m));
            Ok(())
        }

        fn stream(&mut self, queue: &str, _: &str, body: Vec<u8>) -> Result<(), SinkError> {
            self.streamed.push((queue.to_string(), body));
            Ok(())
        }

        fn subscribe(&mut self, queue: &str) -> Result<Box<dyn Inbox>, SinkError> {
            self.subscribed.push(queue.to_string());
            Ok(Box::new(MemoryInbox(self.inbox.clone())))
        }

        fn progress(&mut self, _task_id: &str, document: Vec<u8>) {
            self.progress.push(document);
        }

        fn report(&mut self, _task_id: &str, document: Vec<u8>) -> Result<(), SinkError> {
            self.reported.push(document);
            Ok(())
        }

        fn queue_counts(&mut self, _queue: &str) -> Option<QueueCounts> {
            self.queue
        }
    }

    /// A task message as a Celery client sends it: task `task`, id `id`,
    /// keyword arguments `kwargs`.
    pub(crate) fn message(task: TaskName, id: &str, kwargs: serde_json::Value) -> TaskMessage {
        let headers = vec![
            ("task".into(), HeaderValue::Str(task.as_str().into())),
            ("id".into(), HeaderValue::Str(id.into())),
        ];
        let body = format!("[[], {kwargs}, null]");
        let incoming = Incoming {
            headers: &headers,
            body: body.as_bytes(),
            ..Default::default()
        };
        decode(&incoming, usize::MAX).expect("a well-formed message")
    }

    /// The environment of a discovery task on `s1.default#discovery`,
    /// batches of `batch_size` paths without a data limit.
    pub(crate) fn env(batch_size: usize, stream_timeout: Duration) -> TaskEnv {
        TaskEnv {
            site: "s1".into(),
            queue: "default".into(),
            queue_name: "s1.default#discovery".into(),
            node: "ferry@test".into(),
            batch: BatchLimits::from_seed(batch_size, 0.0, false),
            walk_threads: 2,
            walk_split_after: None,
            lock_threshold: Duration::from_secs(60),
            stream_timeout,
            cancel: Cancel::new(|| false),
            progress_every: Duration::from_secs(3600),
            paths: crate::config::PathMap::default(),
        }
    }

    struct MemoryInbox(Rc<RefCell<VecDeque<Vec<u8>>>>);

    impl Inbox for MemoryInbox {
        fn next(&mut self, _: Duration) -> Result<Option<Vec<u8>>, SinkError> {
            Ok(self.0.borrow_mut().pop_front())
        }
    }
}
