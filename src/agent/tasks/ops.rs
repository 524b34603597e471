//! The file operations as agent tasks (`migrate`, `recall`, `stat_paths`,
//! ...): run the operation on the task's paths, answer with the seed's
//! result object, stream per-file results when asked (`stream_results`),
//! and send the next link of the task's chain on the paths that go on
//! (unless the job was cancelled while the operation ran: the operation
//! itself always finishes its batch, but the chain stops there).
//!
//! Retries (`max_tries` > 1): files whose failure may pass
//! ([`crate::task::errors::category`]: busy, stale, timed out, endpoint
//! unreachable) are not reported failed while tries remain; they go to a
//! retry task, a child of this one (so a hub's counts stay exact), which
//! runs the same step on them alone no earlier than [`backoff`] from now,
//! with the rest of the chain behind it. An endpoint that cannot be opened
//! at all sends every path there. The last try reports what still fails,
//! with its category.

use super::context::{ChildSink, Input, TaskEnv, TaskError, TaskOutput};
use super::publish::Publisher;
use crate::agent::celery::TaskMessage;
use crate::ops::run::RunError;
use crate::ops::{OpContext, Operation, run_batches};
use crate::task::errors::{Category, category};
use crate::task::result::write_outcome;
use crate::task::stream::{STREAM_BATCH, stream_message};
use crate::task::{FileState, Outcome, PathObject, TaskResult};
use std::time::Duration;

/// How long before try `next` (2, 3, ...) runs: 2 s, doubling, at most
/// 5 minutes.
pub fn backoff(next: u32) -> Duration {
    let secs = 2u64.saturating_pow(next.saturating_sub(1).min(20));
    Duration::from_secs(secs.min(300))
}

/// A task's files put off to its next try: those that failed in a way
/// that may pass, while tries remain (`max_tries`). An operation task and
/// `check_sync_state` share it.
pub(super) struct Retries {
    this_try: u32,
    may_retry: bool,
    /// The put-off path objects, comma-separated.
    again: Vec<u8>,
}

impl Retries {
    /// The retries of the task `msg` (its `retries` header says which try
    /// this is) under `max_tries`.
    pub(super) fn new(msg: &TaskMessage, max_tries: u32) -> Retries {
        let this_try = msg.retries.saturating_add(1);
        Retries {
            this_try,
            may_retry: this_try < max_tries,
            again: Vec::new(),
        }
    }

    /// Whether a try remains after this one.
    pub(super) fn may_retry(&self) -> bool {
        self.may_retry
    }

    /// Files `p`'s outcome `o` in `result`: put off to the next try when it
    /// may pass and a try remains, else added.
    pub(super) fn file(&mut self, result: &mut TaskResult, p: &PathObject, o: &Outcome) {
        let passes =
            o.state == FileState::Failures && o.message.as_deref().is_some_and(|m| category(m) == Category::Transient);
        if !(self.may_retry && passes) {
            result.add(p, o);
            return;
        }
        result.defer(p, o);
        if !self.again.is_empty() {
            self.again.push(b',');
        }
        p.write_json(&mut self.again);
    }

    /// Publishes the retry of the put-off files, if any, to `queue`, no
    /// earlier than [`backoff`] from now.
    pub(super) fn publish(&self, publisher: &mut Publisher<'_>, queue: &str) -> Result<(), TaskError> {
        if !self.again.is_empty() {
            let eta = jiff::Timestamp::now() + backoff(self.this_try + 1);
            publisher.retry(queue, &self.again, eta)?;
        }
        Ok(())
    }
}

/// Runs operation `op` for `input`. The task's batch goes to the
/// operation in one call, as the workflow cut it (its commit windows follow
/// `sub_batch` within it).
pub fn run_op(
    input: Input<'_>,
    op: &Operation,
    stream_to: Option<&str>,
    max_tries: u32,
    env: &TaskEnv,
    ops: &OpContext,
    sink: &mut dyn ChildSink,
) -> Result<TaskOutput, TaskError> {
    let Input { msg, jobid, paths, .. } = input;
    let mut retries = Retries::new(msg, max_tries);
    let mut done: Vec<(PathObject, Outcome)> = Vec::with_capacity(paths.len());
    let mut batch = Some(paths.clone());
    let whole = |_| Ok::<_, std::convert::Infallible>(batch.take().unwrap_or_default());
    let ran = run_batches(ops, op, whole, |obj, outcome| {
        done.push((obj, outcome));
        Ok(())
    });
    match ran {
        Ok(_) => {}
        // The endpoint is away: every path waits for the next try.
        Err(RunError::Op(e)) if e.is_endpoint() && retries.may_retry() => {
            let why = format!("endpoint unavailable: {e}");
            done = paths.into_iter().map(|p| (p, Outcome::failed(why.clone()))).collect();
        }
        Err(RunError::Op(e)) => return Err(TaskError::Op(e)),
        Err(RunError::Input(never)) => match never {},
        Err(RunError::Output(_)) => unreachable!("collecting in memory cannot fail"),
    }
    let mut result = TaskResult::new(op.task_name(), jobid.map(ToOwned::to_owned));
    result.set_queue(&env.queue_name);
    for (p, o) in &done {
        tracing::debug!(
            task = %msg.id,
            path = %String::from_utf8_lossy(&p.path),
            state = o.state.as_str(),
            message = o.message.as_deref().unwrap_or(""),
            "{}", op.task_name().as_str()
        );
        retries.file(&mut result, p, o);
    }
    let mut publisher = Publisher::new(msg, env, jobid, sink);
    retries.publish(&mut publisher, &env.queue_name)?;
    if let Some(to) = stream_to {
        // Per-file results in batches, then a last message: what a
        // snapdiff waits for before it goes on.
        let chunks: Vec<_> = done.chunks(STREAM_BATCH).collect();
        let n = chunks.len().max(1);
        for seq in 0..n {
            let mut paths = Vec::new();
            for (i, (p, o)) in chunks.get(seq).copied().unwrap_or_default().iter().enumerate() {
                if i > 0 {
                    paths.push(b',');
                }
                write_outcome(p, o, true, &mut paths);
            }
            let body = stream_message(&msg.id, &msg.task, seq, seq + 1 == n, &paths);
            publisher.sink().stream(to, &msg.id, body)?;
        }
    }
    publisher.next_link(&env.site, &env.queue, result.continuing())?;
    Ok(TaskOutput {
        result: result.to_json(),
        children: publisher.into_children(),
    })
}
