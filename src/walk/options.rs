//! How a walk is asked for: its options and their defaults.

use super::Handoff;
use crate::config::defaults;
use crate::rules::Filter;
use crate::sys::StatMask;
use std::sync::Arc;

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
    /// Report the roots themselves (on by default). Off for a piece of a
    /// split walk, whose roots its parent walk already reported.
    pub report_roots: bool,
    /// Where the walk gives directories away instead of walking them
    /// (distributed discovery); `None` walks everything here.
    pub handoff: Option<Arc<Handoff>>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            threads: defaults::walk_threads(),
            one_file_system: false,
            follow_links: false,
            max_depth: None,
            filter: Filter::default(),
            skip_snapshots: SnapshotDirs::Everywhere,
            stat: true,
            stat_mask: StatMask::ALL,
            generation: false,
            getdents_buffer: defaults::GETDENTS_BUFFER,
            chunk_entries: 1024,
            channel_chunks: 64,
            report_roots: true,
            handoff: None,
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
