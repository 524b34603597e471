//! The parallel directory walker.
//!
//! A walk runs on its own rayon pool of `threads` threads (independent of
//! the core count: a latency-bound parallel filesystem wants 64 or more
//! calls in flight). Each directory is a job: it is opened with `openat`
//! relative to its parent's descriptor, read with a large `getdents64`
//! buffer, and its entries are sent to the consumer in chunks while it is
//! still being read, so a ten-million-entry directory yields its first
//! entries at once. Subdirectories are spawned as new jobs as soon as they
//! are seen; idle threads steal them. In a huge directory, later buffers are
//! handed to other threads to `stat`, so one directory also uses the pool.
//!
//! Memory stays bounded: the output channel holds at most `channel_chunks`
//! chunks (workers block when the consumer is slow), stat work handed to
//! other threads is capped, and pending directories are compact jobs
//! processed depth-first on each thread. Every error is reported as a
//! [`WalkError`] with the path and errno and counted; the walk goes on.

mod event;
mod handoff;
mod options;
mod worker;

pub use event::{Op, WalkError, WalkEvent};
pub use handoff::Handoff;
pub use options::{MIN_GETDENTS_BUFFER, SnapshotDirs, WalkOptions};

use crate::task::{Summary, SummaryCounters};
use crossbeam_channel::Receiver;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A running walk. Iterate it for events; dropping it cancels the walk.
pub struct Walk {
    rx: Option<Receiver<WalkEvent>>,
    counters: Arc<SummaryCounters>,
    cancel: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Walk {
    /// Starts walking `roots` (raw path bytes) in the background.
    pub fn start(roots: Vec<Vec<u8>>, opts: WalkOptions) -> io::Result<Walk> {
        if opts.getdents_buffer < MIN_GETDENTS_BUFFER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("getdents buffer must be at least {MIN_GETDENTS_BUFFER} bytes"),
            ));
        }
        // A piece walks from depth 0 with no ancestors: depth limits,
        // snapshot directories at the root, and loop detection through
        // followed links would all mean something else there.
        if opts.handoff.is_some()
            && (opts.max_depth.is_some() || opts.follow_links || opts.skip_snapshots == SnapshotDirs::AtRoot)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a walk that hands directories over cannot have a depth limit, follow links or skip snapshots only at its root",
            ));
        }
        let (tx, rx) = crossbeam_channel::bounded(opts.channel_chunks.max(1));
        let counters = Arc::new(SummaryCounters::default());
        let cancel = Arc::new(AtomicBool::new(false));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.max(1))
            .thread_name(|i| format!("ferry-walk-{i}"))
            // Directories past the descriptor budget are walked recursively.
            .stack_size(16 << 20)
            .build()
            .map_err(io::Error::other)?;
        let slow = Arc::new(AtomicBool::new(false));
        let shared = worker::Shared::new(opts, tx, counters.clone(), cancel.clone(), slow.clone());
        let thread = std::thread::Builder::new()
            .name("ferry-walk".into())
            .spawn(move || shared.run(&pool, roots))?;
        Ok(Walk {
            rx: Some(rx),
            counters,
            cancel,
            slow,
            thread: Some(thread),
        })
    }

    /// Whether the walk has found its filesystem slow: each stat a round
    /// trip to a metadata server (GPFS, NFS, Lustre), so that entries are
    /// sent directory by directory rather than in large chunks. A consumer
    /// may then send what it has sooner, as the next entries are far off.
    pub fn slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    /// Live counts, for progress displays; final once the walk has ended.
    pub fn counters(&self) -> &Arc<SummaryCounters> {
        &self.counters
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        self.counters.snapshot()
    }

    /// Asks the walk to stop soon; events already queued still arrive.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Stops the walk if it is still running, waits for its threads, and
    /// returns the final counts. A walker thread that panicked is an error
    /// here, never a quietly short result.
    pub fn finish(mut self) -> io::Result<Summary> {
        self.stop()?;
        Ok(self.summary())
    }

    fn stop(&mut self) -> io::Result<()> {
        self.cancel();
        // Dropping the receiver unblocks workers waiting to send.
        self.rx.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(io::Error::other(format!("walker thread panicked: {msg}")))
            }
            _ => Ok(()),
        }
    }
}

impl Iterator for Walk {
    type Item = WalkEvent;

    fn next(&mut self) -> Option<WalkEvent> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        // Whoever drops a walk without `finish` has given up on its result.
        let _ = self.stop();
    }
}
