//! Driving an operation over a stream of paths, batch by batch: the loop
//! the command line (paths from arguments and lists) and the agent (a
//! task's `paths`) both run, so batching rules live in one place.

use super::{OpContext, OpError, Operation};
use crate::task::{FileState, Outcome, PathObject};
use std::io;

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTotals {
    /// Paths that got an outcome.
    pub paths: u64,
    /// Of those, paths that failed.
    pub failed: u64,
}

/// Why a run stopped before its paths ran out.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + 'static> {
    /// The operation cannot run at all (arguments, endpoint).
    #[error("{0}")]
    Op(#[from] OpError),
    /// The paths could not be read.
    #[error("{0}")]
    Input(#[source] E),
    /// An outcome could not be written.
    #[error("writing results: {0}")]
    Output(#[source] io::Error),
}

/// Runs `op` on every path `next` hands out (`next(n)` returns at most `n`
/// paths; an empty batch is the end), a batch of [`Operation::batch_limit`]
/// at a time, and gives each path with its outcome, in input order, to
/// `each`.
pub fn run_batches<E: std::error::Error + 'static>(
    ctx: &OpContext,
    op: &Operation,
    mut next: impl FnMut(usize) -> Result<Vec<PathObject>, E>,
    mut each: impl FnMut(PathObject, Outcome) -> io::Result<()>,
) -> Result<RunTotals, RunError<E>> {
    let mut totals = RunTotals::default();
    loop {
        let batch = next(op.batch_limit()).map_err(RunError::Input)?;
        if batch.is_empty() {
            return Ok(totals);
        }
        let outcomes = op.run(ctx, &batch)?;
        for (obj, outcome) in batch.into_iter().zip(outcomes) {
            totals.paths += 1;
            totals.failed += u64::from(outcome.state == FileState::Failures);
            each(obj, outcome).map_err(RunError::Output)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_path_gets_one_outcome_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..1100 {
            let p = dir.path().join(format!("f{i}"));
            if i % 100 != 0 {
                std::fs::write(&p, b"x").unwrap();
            }
            paths.push(PathObject::new(p.into_os_string().into_encoded_bytes()));
        }
        let want: Vec<Vec<u8>> = paths.iter().map(|p| p.path.clone()).collect();
        let ctx = OpContext::new(Config::empty(), Some(4)).unwrap();
        let mut seen = Vec::new();
        let mut calls = 0;
        let mut source = paths.into_iter();
        let totals = run_batches(
            &ctx,
            &Operation::Stat,
            |n| {
                calls += 1;
                Ok::<_, std::convert::Infallible>(source.by_ref().take(n).collect())
            },
            |obj, outcome| {
                seen.push((obj.path, outcome.state));
                Ok(())
            },
        )
        .unwrap();
        // 1,100 paths in windows of 512, then the empty batch that ends it.
        assert_eq!(calls, 4);
        assert_eq!(
            totals,
            RunTotals {
                paths: 1100,
                failed: 11
            }
        );
        assert_eq!(seen.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), want);
        assert_eq!(seen.iter().filter(|s| s.1 == FileState::Failures).count(), 11);
    }
}
