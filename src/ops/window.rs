//! Commit windows: a batch is worked on a window at a time (at most
//! [`COMMIT_WINDOW`] files copied, made durable together, then committed),
//! `threads` files at once, with hard links of one file handled once.

use super::OpContext;
use crate::task::{FileState, Outcome, PathObject};
use std::collections::HashMap;
use std::sync::Mutex;

/// How many files one commit window holds at most: the files copied, then
/// made durable with one target sync, then committed. It bounds open
/// descriptors and memory whatever the batch size.
pub const COMMIT_WINDOW: usize = 512;

/// The files of one window by inode, so that a second name of a
/// hard-linked file takes the first name's outcome instead of racing it
/// (each name's open descriptor would otherwise hold off the other's lease
/// and lock).
#[derive(Default)]
pub struct Inodes(Mutex<HashMap<(u64, u64), usize>>);

impl Inodes {
    /// Records that input `index` is the file `id`; returns the index of an
    /// earlier name of the same file, if any.
    pub fn first_name(&self, id: (u64, u64), index: usize) -> Option<usize> {
        let mut seen = self.0.lock().expect("inode table");
        match seen.get(&id) {
            Some(&first) => Some(first),
            None => {
                seen.insert(id, index);
                None
            }
        }
    }
}

/// The commit window for a task's `sub_batch`: the paths processed, made
/// durable and committed together, at most [`COMMIT_WINDOW`].
pub fn window(sub_batch: Option<usize>) -> usize {
    sub_batch.unwrap_or(COMMIT_WINDOW).clamp(1, COMMIT_WINDOW)
}

/// What one path's step ended in.
pub enum Step {
    /// An outcome, and the bytes it moved.
    Done(Outcome, u64),
    /// Another name (hard link) of the file at this index of the window,
    /// which takes that name's outcome.
    Link(usize),
}

/// Runs `one` on every path, window by window (`sub_batch`), `threads`
/// paths at once, and returns the outcomes in input order. `one` gets the
/// path's index in its window and the window's inode table.
pub fn for_each_window(
    ctx: &OpContext,
    sub_batch: Option<usize>,
    paths: &[PathObject],
    one: impl Fn(usize, &PathObject, &Inodes) -> Step + Sync,
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(window(sub_batch)) {
        let inodes = Inodes::default();
        let steps = par_map(chunk.iter().enumerate().collect(), ctx.threads, |(i, obj)| {
            match one(i, obj, &inodes) {
                Step::Done(outcome, bytes) => {
                    ctx.count(&outcome, bytes);
                    Ok(outcome)
                }
                Step::Link(first) => Err(first),
            }
        });
        out.extend(resolve_links(ctx, chunk, steps));
    }
    out
}

/// Gives each hard link (`Err(first)`) its first name's outcome.
pub fn resolve_links(ctx: &OpContext, chunk: &[PathObject], outcomes: Vec<Result<Outcome, usize>>) -> Vec<Outcome> {
    let firsts: Vec<Option<Outcome>> = outcomes.iter().map(|o| o.as_ref().ok().cloned()).collect();
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|first| {
                let link = link_outcome(
                    firsts[first].as_ref().expect("a first name has an outcome"),
                    &chunk[first].path,
                );
                ctx.count(&link, 0);
                link
            })
        })
        .collect()
}

/// The outcome of a hard link whose file was handled through `first`.
pub fn link_outcome(first: &Outcome, first_path: &[u8]) -> Outcome {
    let name = String::from_utf8_lossy(first_path);
    match first.state {
        FileState::Processed | FileState::Skipped => {
            Outcome::skipped(format!("hard link of {name}, handled through that name"))
        }
        state => Outcome::with(
            state,
            format!(
                "hard link of {name}: {}",
                first.message.as_deref().unwrap_or(state.as_str())
            ),
        ),
    }
}

/// Maps `items` through `f` on up to `threads` threads, keeping the order.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    if threads <= 1 || n <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        let v: Vec<u32> = (0..1000).collect();
        assert_eq!(
            par_map(v.clone(), 7, |x| x * 2),
            v.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
    }
}
