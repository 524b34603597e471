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

mod worker;

use crate::entry::Entry;
use crate::rules::Filter;
use crate::sys::StatMask;
use crate::task::{Summary, SummaryCounters};
use crossbeam_channel::Receiver;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// How to walk.
#[derive(Clone, Debug)]
pub struct WalkOptions {
    /// Worker threads: the number of metadata calls in flight.
    pub threads: usize,
    /// Do not descend into directories on another filesystem (`-x`).
    pub one_file_system: bool,
    /// Follow symbolic links (with loop detection); off by default.
    pub follow_links: bool,
    /// Deepest level to report; the roots are depth 0.
    pub max_depth: Option<usize>,
    /// Include/exclude globs over the whole path.
    pub filter: Filter,
    /// Which directories named `.snapshots` (GPFS snapshot links) to skip.
    pub skip_snapshots: SnapshotDirs,
    /// `stat` every entry (the output or a filter needs more than the type).
    pub stat: bool,
    /// The attributes to ask `statx` for when stat'ing (the type is always
    /// asked for); fields outside the mask are zero in entries.
    pub stat_mask: StatMask,
    /// Read each file's and directory's inode generation.
    pub generation: bool,
    /// Bytes of `getdents64` buffer per thread (at least 64 KiB).
    pub getdents_buffer: usize,
    /// Most entries in one chunk sent to the consumer.
    pub chunk_entries: usize,
    /// Most chunks waiting for the consumer.
    pub channel_chunks: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            threads: crate::config::defaults::walk_threads(),
            one_file_system: false,
            follow_links: false,
            max_depth: None,
            filter: Filter::default(),
            skip_snapshots: SnapshotDirs::Everywhere,
            stat: true,
            stat_mask: StatMask::ALL,
            generation: false,
            getdents_buffer: 128 * 1024,
            chunk_entries: 1024,
            channel_chunks: 64,
        }
    }
}

/// Where directories named `.snapshots` are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotDirs {
    /// At any depth: a scan may cross many filesets' junctions.
    Everywhere,
    /// Only directly under a root: one fileset's own snapshot directory;
    /// deeper ones are user data.
    AtRoot,
    /// Nowhere.
    Never,
}

/// The smallest `getdents64` buffer accepted.
pub const MIN_GETDENTS_BUFFER: usize = 64 * 1024;

/// The call that failed for a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `statx`/`fstatat` of an entry.
    Stat,
    /// Opening a directory.
    OpenDir,
    /// Reading a directory (`getdents64`).
    ReadDir,
    /// A symlink that leads back to one of its own ancestors.
    Loop,
    /// A root path that cannot be passed to the kernel (contains NUL).
    InvalidPath,
}

impl Op {
    fn describe(self) -> &'static str {
        match self {
            Op::Stat => "cannot stat",
            Op::OpenDir => "cannot open directory",
            Op::ReadDir => "cannot read directory",
            Op::Loop => "filesystem loop detected at",
            Op::InvalidPath => "invalid path",
        }
    }
}

/// One path that could not be examined.
#[derive(Debug, thiserror::Error)]
#[error("{} '{}': {error}", op.describe(), String::from_utf8_lossy(path))]
pub struct WalkError {
    /// The path, as raw bytes.
    pub path: Vec<u8>,
    /// What was being done.
    pub op: Op,
    /// The error, carrying the errno.
    pub error: io::Error,
}

impl WalkError {
    /// The errno, if the error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        self.error.raw_os_error()
    }
}

/// What a walk yields, in no particular order across directories.
#[derive(Debug)]
pub enum WalkEvent {
    /// A chunk of entries.
    Entries(Vec<Entry>),
    /// A path that could not be examined.
    Error(WalkError),
}

/// A running walk. Iterate it for events; dropping it cancels the walk.
pub struct Walk {
    rx: Option<Receiver<WalkEvent>>,
    counters: Arc<SummaryCounters>,
    cancel: Arc<AtomicBool>,
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
        let shared = worker::Shared::new(opts, tx, counters.clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("ferry-walk".into())
            .spawn(move || shared.run(&pool, roots))?;
        Ok(Walk {
            rx: Some(rx),
            counters,
            cancel,
            thread: Some(thread),
        })
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
