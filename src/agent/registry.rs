//! The tasks the agent knows, by the seed's names, and running one.
//!
//! [`run`] is called on a blocking thread with a decoded message. It never
//! panics on bad input: arguments of the wrong shape give a `FAILURE`
//! result with the reason, and per-file problems are per-file states inside
//! a `SUCCESS` result, as the seed's hub expects.

use super::celery::{self, State, TaskMessage, child_task};
use super::discovery::{self, ChildSink};
use super::queues::AgentSettings;
use super::workflow::kwargs_with;
use crate::ops::{OpContext, Operation};
use crate::task::TaskResult;
use serde_json::value::RawValue;

/// Task names the agent runs besides the file operations.
pub const DISCOVERY_TASKS: [&str; 3] = [
    "dynamo.tasks.recursive_navigate",
    "dynamo.tasks.snapdiff",
    "dynamo.tasks.rotate_snapshot",
];

/// Per-file results per stream message of a task run with `stream_results`.
pub const STREAM_BATCH: usize = 1000;

/// Every task name the agent accepts.
pub fn known(task: &str) -> bool {
    DISCOVERY_TASKS.contains(&task) || Operation::from_task(task, "{}").is_some()
}

/// What a task needs from the agent besides its message.
pub struct Env {
    /// This agent's site.
    pub site: String,
    /// The configured queue the message came from (`default`, ...).
    pub queue: String,
    /// The broker queue the message came from (`<site>.<queue>#<function>`).
    pub queue_name: String,
    /// The node name (`ferry@<host>`), the `origin` of child tasks.
    pub node: String,
    /// Agent settings (batching, limits, walker threads).
    pub agent: AgentSettings,
}

/// How a task ended, ready for the result document.
pub struct Finished {
    /// `SUCCESS` or `FAILURE`.
    pub state: State,
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
            state: State::Failure,
            result: celery::exception(exc_type, exc_module, message),
            traceback: Some(format!("{exc_type}: {message}")),
            children: Vec::new(),
        }
    }
}

/// Runs one task.
pub fn run(msg: &TaskMessage, env: &Env, ops: &OpContext, sink: &mut dyn ChildSink) -> Finished {
    let outcome = if msg.task == "dynamo.tasks.recursive_navigate" {
        discovery::recursive_navigate(msg, env, sink).map(|d| (d.result, d.children))
    } else if msg.task == "dynamo.tasks.snapdiff" {
        super::snapdiff::snapdiff_task(msg, env, &ops.gpfs, sink).map(|d| (d.result, d.children))
    } else if msg.task == "dynamo.tasks.rotate_snapshot" {
        super::snapdiff::rotate_task(msg, env, &ops.gpfs).map(|r| (r, Vec::new()))
    } else {
        match Operation::from_task(&msg.task, &msg.kwargs_object(&["paths", "jobid"])) {
            None => {
                return Finished::failure(
                    "NotRegistered",
                    "celery.exceptions",
                    &format!("{:?} is not a task ferry runs", msg.task),
                );
            }
            Some(Err(e)) => Err(e),
            Some(Ok(op)) => run_op(msg, env, ops, &op, sink),
        }
    };
    match outcome {
        Ok((result, children)) => Finished {
            state: State::Success,
            result,
            traceback: None,
            children,
        },
        Err(e) => Finished::failure("TaskError", "ferry", &e),
    }
}

fn run_op(
    msg: &TaskMessage,
    env: &Env,
    ops: &OpContext,
    op: &Operation,
    sink: &mut dyn ChildSink,
) -> Result<(Vec<u8>, Vec<String>), String> {
    let paths = discovery::input_paths(msg)?;
    let jobid = msg.kwarg("jobid");
    let outcomes = op.run(ops, &paths)?;
    let mut result = TaskResult::new(op.task_name(), jobid.map(|j| j.to_owned()));
    result.set_queue(&env.queue_name);
    for (p, o) in paths.iter().zip(&outcomes) {
        result.add(p, o);
    }
    if let Some(to) = stream_target(msg)? {
        // Per-file results in batches, then a last message: what a
        // snapdiff waits for before it goes on.
        let chunks: Vec<_> = paths.chunks(STREAM_BATCH).zip(outcomes.chunks(STREAM_BATCH)).collect();
        let n = chunks.len().max(1);
        for seq in 0..n {
            let mut body = format!(
                "{{\"task_id\":{},\"task\":{},\"seq\":{seq},\"last\":{},\"paths\":[",
                serde_json::to_string(&msg.id).expect("json"),
                serde_json::to_string(&msg.task).expect("json"),
                seq + 1 == n
            )
            .into_bytes();
            if let Some((ps, os)) = chunks.get(seq) {
                for (i, (p, o)) in ps.iter().zip(os.iter()).enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    crate::task::result::write_outcome(p, o, true, &mut body);
                }
            }
            body.extend_from_slice(b"]}");
            sink.stream(&to, &msg.id, body)?;
        }
    }
    let mut children = Vec::new();
    if let Some((next, rest)) = msg.chain.split_last() {
        // The next link of the chain runs on the paths that continue.
        let own = next.kwargs.as_ref().map_or("{}", |k| k.get());
        let own: crate::task::path_object::OrderedMap =
            serde_json::from_str(own).map_err(|e| format!("chain link {}: kwargs: {e}", next.task))?;
        let kwargs = celery::object_text(own.0.iter().filter(|(k, _)| k != "paths" && k != "jobid"));
        let kwargs = kwargs_with(
            &kwargs[1..kwargs.len() - 1],
            jobid.or(own_jobid(&own.0)),
            Some(result.continuing()),
        );
        let queue = next.options.as_ref().and_then(|o| o.queue.clone()).unwrap_or_else(|| {
            super::queues::queue_name(&env.site, &env.queue, super::workflow::function_of(&next.task))
        });
        let out = child_task(&next.task, &kwargs, msg, rest, &env.node);
        children.push(out.id.clone());
        sink.send(&queue, out)?;
    }
    Ok((result.to_json(), children))
}

/// Where to stream per-file results: `stream_to` when `stream_results` is true.
fn stream_target(msg: &TaskMessage) -> Result<Option<String>, String> {
    let on = match msg.kwarg("stream_results") {
        None => false,
        Some(v) => serde_json::from_str::<Option<bool>>(v.get())
            .map_err(|e| format!("invalid arguments: stream_results: {e}"))?
            .unwrap_or(false),
    };
    if !on {
        return Ok(None);
    }
    match msg.kwarg("stream_to") {
        None => Ok(None),
        Some(v) => {
            serde_json::from_str::<Option<String>>(v.get()).map_err(|e| format!("invalid arguments: stream_to: {e}"))
        }
    }
}

fn own_jobid(kwargs: &[(String, Box<RawValue>)]) -> Option<&RawValue> {
    kwargs.iter().find(|(k, _)| k == "jobid").map(|(_, v)| &**v)
}
