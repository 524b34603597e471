//! The file operations as agent tasks (`migrate`, `recall`, `stat_paths`,
//! ...): run the operation on the task's paths, answer with the seed's
//! result object, stream per-file results when asked (`stream_results`),
//! and send the next link of the task's chain on the paths that go on
//! (unless the job was cancelled while the operation ran: the operation
//! itself always finishes its batch, but the chain stops there).

use super::context::{ChildSink, Input, TaskEnv, TaskError, TaskOutput};
use super::publish::Publisher;
use crate::ops::run::RunError;
use crate::ops::{OpContext, Operation, run_batches};
use crate::task::result::write_outcome;
use crate::task::stream::{STREAM_BATCH, stream_message};
use crate::task::{Outcome, PathObject, TaskResult};

/// Runs operation `op` for `input`. The task's batch goes to the
/// operation in one call, as the workflow cut it (its commit windows follow
/// `sub_batch` within it).
pub fn run_op(
    input: Input<'_>,
    op: &Operation,
    stream_to: Option<&str>,
    env: &TaskEnv,
    ops: &OpContext,
    sink: &mut dyn ChildSink,
) -> Result<TaskOutput, TaskError> {
    let Input { msg, jobid, paths, .. } = input;
    let mut done: Vec<(PathObject, Outcome)> = Vec::with_capacity(paths.len());
    let mut batch = Some(paths);
    let whole = |_| Ok::<_, std::convert::Infallible>(batch.take().unwrap_or_default());
    run_batches(ops, op, whole, |obj, outcome| {
        done.push((obj, outcome));
        Ok(())
    })
    .map_err(|e| match e {
        RunError::Op(e) => TaskError::Op(e),
        RunError::Input(never) => match never {},
        RunError::Output(_) => unreachable!("collecting in memory cannot fail"),
    })?;
    let mut result = TaskResult::new(op.task_name(), jobid.map(ToOwned::to_owned));
    result.set_queue(&env.queue_name);
    for (p, o) in &done {
        result.add(p, o);
    }
    let mut publisher = Publisher::new(msg, env, jobid, sink);
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
