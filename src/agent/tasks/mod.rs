//! The tasks the agent runs, by the seed's names. A new `dynamo.tasks.*`
//! task goes here: a name in [`crate::task::TaskName`], a variant of
//! [`Kind`] with its typed arguments, and a file that runs it.
//!
//! [`run`] is called on a blocking thread with a decoded message. It reads
//! the message once into a typed [`Request`] (task, job id, paths, and the
//! task's own arguments), then dispatches. It never panics on bad input:
//! unusable arguments give a `FAILURE` result whose exception names the
//! kind of problem ([`TaskError::exception`]), and per-file problems are
//! per-file states inside a `SUCCESS` result, as the seed's hub expects.

pub mod context;
pub mod navigate;
pub mod ops;
pub mod publish;
pub mod rules;
pub mod snapdiff;

pub use context::{ChildSink, EXC_MODULE, Inbox, Input, SinkError, TaskEnv, TaskError, TaskOutput};

use super::celery::{self, TaskMessage, TaskState};
use crate::ops::{OpContext, Operation};
use crate::snapdiff::request::RotateRequest;
use crate::task::{TaskName, parse_kwargs, parse_paths};

/// A task message read once: what every task takes, and its own
/// arguments.
pub struct Request<'m> {
    /// The task, job id and paths.
    pub input: Input<'m>,
    /// The task's own arguments.
    pub kind: Kind,
}

/// A task and its own arguments.
pub enum Kind {
    /// `recursive_navigate`.
    Navigate(navigate::NavigateArgs),
    /// `snapdiff`.
    Snapdiff(Box<snapdiff::SnapdiffArgs>),
    /// `rotate_snapshot`.
    Rotate(RotateRequest),
    /// A file operation, and where to stream its per-file results.
    Op {
        /// The operation with its arguments.
        op: Operation,
        /// `stream_to`, when `stream_results` is true.
        stream_to: Option<String>,
    },
}

/// The arguments of a file operation that are the agent's business.
#[derive(serde::Deserialize)]
struct StreamArgs {
    #[serde(default)]
    stream_results: Option<bool>,
    #[serde(default)]
    stream_to: Option<String>,
}

impl<'m> Request<'m> {
    /// Reads `msg`: the task name, `jobid`, `paths` and the task's own
    /// keyword arguments.
    pub fn decode(msg: &'m TaskMessage) -> Result<Request<'m>, TaskError> {
        let name = TaskName::parse(&msg.task).ok_or_else(|| TaskError::NotRegistered(msg.task.clone()))?;
        let paths = parse_paths(msg.kwarg("paths"))?;
        let kind = match name {
            TaskName::RecursiveNavigate => Kind::Navigate(msg.kwargs_as()?),
            TaskName::Snapdiff => Kind::Snapdiff(Box::new(msg.kwargs_as()?)),
            TaskName::RotateSnapshot => Kind::Rotate(msg.kwargs_as()?),
            _ => {
                let kwargs = msg.kwargs_object(&["paths", "jobid"]);
                let op = Operation::from_task(name, &kwargs).expect("an operation's name")?;
                let s: StreamArgs = parse_kwargs(&kwargs)?;
                Kind::Op {
                    op,
                    stream_to: s.stream_to.filter(|_| s.stream_results == Some(true)),
                }
            }
        };
        Ok(Request {
            input: Input {
                msg,
                name,
                jobid: msg.kwarg("jobid"),
                paths,
            },
            kind,
        })
    }
}

/// How a task ended, ready for the result document.
pub struct Finished {
    /// `SUCCESS`, `FAILURE` or `REVOKED`.
    pub state: TaskState,
    /// The result (JSON): the task's result object, or an exception document.
    pub result: Vec<u8>,
    /// A traceback-like explanation for failures.
    pub traceback: Option<String>,
    /// Child task ids.
    pub children: Vec<String>,
}

impl Finished {
    /// A failure with `exc_type` (a Python exception name) and a message.
    pub fn failure(exc_type: &str, exc_module: &str, message: &str) -> Finished {
        Finished {
            state: TaskState::Failure,
            result: celery::exception(exc_type, exc_module, message),
            traceback: Some(format!("{exc_type}: {message}")),
            children: Vec::new(),
        }
    }

    /// A task that failed with `e`.
    pub fn failed(e: &TaskError) -> Finished {
        let (exc_type, exc_module) = e.exception();
        Finished::failure(exc_type, exc_module, &e.to_string())
    }
}

/// Whether the agent runs a task called `task`.
pub fn known(task: &str) -> bool {
    TaskName::parse(task).is_some()
}

/// Runs one task.
pub fn run(msg: &TaskMessage, env: &TaskEnv, ops: &OpContext, sink: &mut dyn ChildSink) -> Finished {
    let output = Request::decode(msg).and_then(|Request { input, kind }| match kind {
        Kind::Navigate(args) => navigate::recursive_navigate(&input, &args, env, sink),
        Kind::Snapdiff(args) => snapdiff::snapdiff_task(&input, &args, env, &ops.config.gpfs, sink),
        Kind::Rotate(args) => snapdiff::rotate_task(&input, &args, env, &ops.config.gpfs),
        Kind::Op { op, stream_to } => ops::run_op(&input, &op, stream_to.as_deref(), env, ops, sink),
    });
    match output {
        Ok(out) => Finished {
            state: TaskState::Success,
            result: out.result,
            traceback: None,
            children: out.children,
        },
        Err(e) => Finished::failed(&e),
    }
}
