//! Counts in the seed's `status.summary` shape.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Discovery counts, with the keys of the seed's `status.summary`
/// (`dirs`, `files`, `symlinks`, `empty_dirs`, `aborted`, `failures`) plus
/// `other` (FIFOs, sockets, devices) and `bytes` (sum of file sizes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Directories found.
    pub dirs: u64,
    /// Regular files found.
    pub files: u64,
    /// Symbolic links found.
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes found.
    pub other: u64,
    /// Directories with no entries.
    pub empty_dirs: u64,
    /// Entries abandoned because the run was cancelled.
    pub aborted: u64,
    /// Paths that could not be read, each reported with its errno.
    pub failures: u64,
    /// Total size of the regular files found, in bytes.
    pub bytes: u64,
}

impl Summary {
    /// Adds one file's size, saturating rather than wrapping.
    pub fn add_bytes(&mut self, size: u64) {
        self.bytes = self.bytes.saturating_add(size);
    }

    /// Every entry counted, of any type.
    pub fn entries(&self) -> u64 {
        self.dirs + self.files + self.symlinks + self.other
    }
}

/// Live counters that many threads add to and a progress display reads.
#[derive(Debug, Default)]
pub struct SummaryCounters {
    dirs: AtomicU64,
    files: AtomicU64,
    symlinks: AtomicU64,
    other: AtomicU64,
    empty_dirs: AtomicU64,
    aborted: AtomicU64,
    failures: AtomicU64,
    bytes: AtomicU64,
}

impl SummaryCounters {
    /// Adds a locally accumulated summary (one atomic add per field, so
    /// threads add per chunk rather than per entry).
    pub fn add(&self, s: &Summary) {
        for (c, v) in [
            (&self.dirs, s.dirs),
            (&self.files, s.files),
            (&self.symlinks, s.symlinks),
            (&self.other, s.other),
            (&self.empty_dirs, s.empty_dirs),
            (&self.aborted, s.aborted),
            (&self.failures, s.failures),
            (&self.bytes, s.bytes),
        ] {
            if v != 0 {
                // Saturate: sparse files can make byte totals reach u64::MAX.
                let _ = c.fetch_update(Relaxed, Relaxed, |old| Some(old.saturating_add(v)));
            }
        }
    }

    /// A consistent-enough copy of the counts so far.
    pub fn snapshot(&self) -> Summary {
        Summary {
            dirs: self.dirs.load(Relaxed),
            files: self.files.load(Relaxed),
            symlinks: self.symlinks.load(Relaxed),
            other: self.other.load(Relaxed),
            empty_dirs: self.empty_dirs.load(Relaxed),
            aborted: self.aborted.load(Relaxed),
            failures: self.failures.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}
