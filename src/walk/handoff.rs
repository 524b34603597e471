//! Directories a walk gives away instead of walking them: how distributed
//! discovery splits one walk over many nodes.
//!
//! The consumer of a walk says how many others would share its work now
//! ([`Handoff::share_with`]). The walker then hands over, instead of
//! descending into them, that share of the directories it finds: with `k`
//! others, `k` of every `k + 1`, so it keeps its own share of each big
//! directory's subdirectories. Sharing from the moment a directory is
//! found, rather than from a backlog of directories waiting for a thread,
//! is what divides a tree early, at its shallowest (so biggest) pieces: on
//! a filesystem whose calls wait on the network, every thread takes a new
//! directory at once and waits in it, so a backlog appears only deep in
//! the tree, where directories are small (measured on latencyfs at 2 ms,
//! `scripts/bench-scaleout.sh`: every piece handed from a backlog held one
//! batch and took 20-30 ms, and four agents walked no faster than one).
//! A directory handed over is still reported as an entry of its parent;
//! nothing below it is walked here. The consumer takes the handed
//! directories with [`Handoff::take`] and sends them as walks of their own
//! (`WalkOptions::report_roots` off), so every directory is read exactly
//! once over all the pieces.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The hand-off point between one walk and its consumer.
#[derive(Debug, Default)]
pub struct Handoff {
    /// How many others share the work now (0: none).
    others: AtomicUsize,
    /// Directories offered while sharing: which of them go.
    offered: AtomicUsize,
    /// Directories handed over and not yet taken by the consumer.
    handed: Mutex<Vec<Vec<u8>>>,
}

impl Handoff {
    /// A hand-off that gives nothing away yet.
    pub fn new() -> Handoff {
        Handoff::default()
    }

    /// From now on, `others` walks share this one's spare directories
    /// (0 stops the hand-over).
    pub fn share_with(&self, others: usize) {
        self.others.store(others, Relaxed);
    }

    /// The directories handed over since the last call.
    pub fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.handed.lock().expect("handoff"))
    }

    /// How many directories were handed over and not yet taken.
    pub fn waiting(&self) -> usize {
        self.handed.lock().expect("handoff").len()
    }

    /// Hands `path` over if others share the work and it is their turn;
    /// whether it did.
    pub(crate) fn offer(&self, path: &[u8]) -> bool {
        let others = self.others.load(Relaxed);
        if others == 0 {
            return false;
        }
        // One of each `others + 1` stays, the first of the walk's first
        // share among them: a chain of directories is not passed from
        // node to node as soon as sharing starts.
        let go = !self.offered.fetch_add(1, Relaxed).is_multiple_of(others + 1);
        if go {
            self.handed.lock().expect("handoff").push(path.to_vec());
        }
        go
    }
}
