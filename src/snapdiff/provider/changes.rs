//! What a read of changes is asked and what it answers
//! ([`super::Provider::changed`]), apart from the providers, so that the
//! readers of changes (the btrfs tree search, GPFS's inode scan, the
//! event journal) share these types without depending on each other.

pub use super::btrfs_changed::Changed;
use crate::snapdiff::manifest::ManifestError;
use crate::snapdiff::paths::DirTable;
use crate::snapdiff::record::Record;

/// What [`super::Provider::changed`] is asked: the changes in snapshot `new`
/// (for `none`, the live tree) since snapshot `old`.
pub struct ChangesQuery<'a> {
    /// The baseline's snapshot.
    pub old: &'a str,
    /// The snapshot being read.
    pub new: &'a str,
    /// The baseline's point in the provider's own order (btrfs: the old
    /// snapshot's `otransid`; GPFS: its snapshot id), from its manifest
    /// header.
    pub since: u64,
    /// The baseline's position in the event journal, where it has one
    /// beside `since` ([`super::Provider::snapshot_journal`]).
    pub since_journal: Option<u64>,
    /// The token of the baseline's barrier in the event journal, where its
    /// manifest recorded one ([`super::Provider::snapshot_barrier`]).
    pub since_barrier: Option<&'a str>,
    /// The baseline manifest's directory table.
    pub old_dirs: &'a DirTable,
    /// At most this many changed inodes: past it, [`ChangesRead::TooMany`].
    /// It is what the memory budget holds, or the share of the fileset
    /// past which a full read is cheaper.
    pub limit: usize,
    /// At most this many items (changed inodes, journaled events) held in
    /// memory at once, whatever their share of the fileset: the memory
    /// budget's part of `limit`.
    pub held: usize,
    /// Inode numbers cutting the inode space into ranges read in parallel
    /// (ascending; empty for one range).
    pub split: &'a [u64],
    /// The baseline's records of given inodes, for providers that see an
    /// inode change but not all of its links (GPFS's inode scan, the
    /// event journal).
    pub old_records: &'a mut dyn OldRecords,
}

impl ChangesQuery<'_> {
    /// How many threads the read may use: one per range of `split`.
    pub fn threads(&self) -> usize {
        self.split.len() + 1
    }
}

/// Looks up the baseline manifest's records of some inodes.
pub trait OldRecords {
    /// Every record (link) of each inode in `inos` (ascending), in
    /// manifest order.
    fn records_of(&mut self, inos: &[u64]) -> Result<Vec<Record>, ManifestError>;
}

/// What [`super::Provider::changed`] found.
#[derive(Debug)]
pub enum ChangesRead {
    /// The changes.
    Read(Changed),
    /// More inodes changed than the limit (or more events were journaled
    /// than memory holds): a full read is cheaper, or the only one within
    /// the memory budget.
    TooMany,
    /// The changes cannot be read (why): read the whole snapshot.
    Unable(String),
}
