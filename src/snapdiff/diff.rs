//! The diff engine: a merge join of two manifests on (inode, generation).
//!
//! Every link of an inode is compared: links only in the old manifest are
//! `deleted`, links only in the new one `created`, and a link that changed
//! place is `moved` (old and new links of one inode are paired in order).
//! An inode in both whose size or modification time changed is `updated`;
//! one whose owner, group, permissions or change time changed is `updated`
//! with `metadata_only`, also when it moved or its links changed: those
//! change the ctime too, so it cannot tell them from an xattr change made
//! in the same interval, which a sync replaying only the move would lose
//! (`docs/snapdiff.md`). Unless [`OwnChanges`] tells: an inode whose ctime
//! alone changed (a rename, ferry's own xattrs; not a link gained or lost)
//! is asked about first, and is no update when its other xattrs stayed. A reused inode
//! number has another generation, so it is a delete and a create.
//!
//! Changes come out in the order that makes applying them safe:
//!
//! 1. `deleted` and `moved`, deepest old path first. A consumer moves each
//!    `moved` source aside (to a temporary name) when it meets the record,
//!    so a directory's contents are deleted or moved out before it is
//!    deleted, and swaps and chains need no special case;
//! 2. then it puts every moved entry in place, shallowest destination
//!    first, creating missing parent directories;
//! 3. `created`, shallowest first (a directory that step 2 already made
//!    only gets its attributes);
//! 4. `updated`, shallowest first.
//!
//! `docs/snapdiff.md` states the contract for consumers.

use super::codec;
use super::extsort::{ExternalSorter, SortItem, Sorted};
use super::manifest::{Header, ManifestError, ManifestReader, ManifestWriter};
use super::paths::{DirTable, Namespace, OrphanError, Resolver, depth};
use super::record::Record;
use super::view::Entries;
use serde::Serialize;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeState {
    /// New since the old manifest.
    Created,
    /// Content (size or mtime) or metadata changed.
    Updated,
    /// Now at another path (`source` holds the old one).
    Moved,
    /// Gone.
    Deleted,
}

impl ChangeState {
    /// The name in path objects and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeState::Created => "created",
            ChangeState::Updated => "updated",
            ChangeState::Moved => "moved",
            ChangeState::Deleted => "deleted",
        }
    }

    fn from_u8(v: u8) -> Option<ChangeState> {
        [
            ChangeState::Created,
            ChangeState::Updated,
            ChangeState::Moved,
            ChangeState::Deleted,
        ]
        .get(usize::from(v))
        .copied()
    }
}

/// One change, with paths relative to the fileset root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub state: ChangeState,
    /// The entry's path (relative; empty for the root). For `deleted`, its
    /// last path; for the others, its new path.
    pub path: Vec<u8>,
    /// For `moved`, the old path (relative).
    pub source: Option<Vec<u8>>,
    /// The entry's attributes: new ones, or the last known for `deleted`.
    pub record: Record,
    /// For `updated`: only metadata changed, not the content.
    pub metadata_only: bool,
}

/// How to diff.
#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// Report a moved directory once instead of also every entry under it
    /// (seed `condense_moves`, default true).
    pub condense_moves: bool,
    /// Leave out created and updated entries whose ctime is older than the
    /// old manifest (seed `skip_old_ctimes`, default false).
    pub skip_old_ctimes: bool,
    /// Memory for ordering the changes before they spill to disk.
    pub mem_limit: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            condense_moves: true,
            skip_old_ctimes: false,
            mem_limit: 256 << 20,
        }
    }
}

/// Counts of a diff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    /// `created` changes.
    pub created: u64,
    /// `updated` changes (including metadata-only ones).
    pub updated: u64,
    /// Of which metadata only.
    pub metadata_only: u64,
    /// `moved` changes.
    pub moved: u64,
    /// `deleted` changes.
    pub deleted: u64,
    /// Links in both manifests with no change.
    pub unchanged: u64,
    /// Changes left out by `skip_old_ctimes`.
    pub skipped_old_ctime: u64,
    /// Inodes in place whose ctime alone changed, by ferry's own xattrs
    /// (counted unchanged, see [`OwnChanges`]).
    pub own_xattrs_only: u64,
    /// Records read from the old and new manifests.
    pub records: u64,
    /// Of which from the new one.
    #[serde(skip)]
    pub new_records: u64,
    /// Of which from the old one.
    #[serde(skip)]
    pub old_records: u64,
    /// Sorted runs the ordering of the changes spilled to disk: how often
    /// they outgrew the memory budget (0 when ordered in memory).
    pub spilled_runs: u64,
}

/// Why a diff failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A manifest is unreadable or damaged.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// A manifest's tree is inconsistent.
    #[error("{0}")]
    Orphan(#[from] OrphanError),
    /// The manifests are of different filesets.
    #[error("the manifests are of different roots (inode {0} and {1})")]
    Roots(u64, u64),
    /// A delta cannot be written between manifests whose generations come
    /// from different sources (their keys differ).
    #[error("no delta between manifests with generations from {0} and {1}")]
    Generations(String, String),
    /// Spilling to disk failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A change with its place in the output order.
#[derive(PartialEq, Eq)]
struct Ordered {
    key: (u8, u32, u64),
    change: Change,
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl SortItem for Ordered {
    type Key = (u8, u32, u64);

    fn key(&self) -> Self::Key {
        self.key
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let c = &self.change;
        out.push(self.key.0);
        codec::put_u64(out, u64::from(self.key.1));
        codec::put_u64(out, self.key.2);
        out.push(c.state as u8 | (u8::from(c.metadata_only) << 4));
        put_bytes(out, &c.path);
        match &c.source {
            Some(s) => {
                out.push(1);
                put_bytes(out, s);
            }
            None => out.push(0),
        }
        c.record.encode(0, out);
    }

    fn decode(mut buf: &[u8]) -> io::Result<Self> {
        let bad = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let b = &mut buf;
        let phase = codec::get_bytes(b, 1).map_err(|e| bad(&e))?[0];
        let depth = codec::get_u32(b).map_err(|e| bad(&e))?;
        let seq = codec::get_u64(b).map_err(|e| bad(&e))?;
        let flags = codec::get_bytes(b, 1).map_err(|e| bad(&e))?[0];
        let state = ChangeState::from_u8(flags & 0xf).ok_or_else(|| bad(&"bad state"))?;
        let path = get_bytes(b).map_err(|e| bad(&e))?;
        let source = match codec::get_bytes(b, 1).map_err(|e| bad(&e))?[0] {
            0 => None,
            _ => Some(get_bytes(b).map_err(|e| bad(&e))?),
        };
        let mut record = Record::default();
        record.decode_into(0, b).map_err(|e| bad(&e))?;
        Ok(Ordered {
            key: (phase, depth, seq),
            change: Change {
                state,
                path,
                source,
                record,
                metadata_only: flags & 0x10 != 0,
            },
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    codec::put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn get_bytes(buf: &mut &[u8]) -> Result<Vec<u8>, codec::CodecError> {
    let n = codec::get_u64(buf)?;
    let n = usize::try_from(n).map_err(|_| codec::CodecError::Overflow)?;
    Ok(codec::get_bytes(buf, n)?.to_vec())
}

/// Deletes and moves, deepest old path first.
const PHASE_OUT: u8 = 0;
/// Creates, shallowest first.
const PHASE_CREATE: u8 = 1;
/// Updates, shallowest first.
const PHASE_UPDATE: u8 = 2;

/// One manifest as a diff reads it: its header, its directory table and
/// its entries in order.
pub struct Listing<'a> {
    /// What it describes.
    pub header: Header,
    /// Its directories.
    pub dirs: DirTable,
    /// Its entry records.
    pub entries: Box<dyn Entries + 'a>,
}

impl<'a> Listing<'a> {
    /// A listing read from one manifest file.
    pub fn read<R: Read + Seek + 'a>(mut rd: ManifestReader<R>) -> Result<Self, ManifestError> {
        Ok(Listing {
            header: rd.header().clone(),
            dirs: DirTable::load(&mut rd)?,
            entries: Box::new(rd),
        })
    }

    /// A listing with no entries, of the tree `header` describes.
    pub fn empty(header: Header) -> Listing<'static> {
        Listing {
            dirs: DirTable::with_root(header.root_ino),
            header,
            entries: Box::new(NoEntries),
        }
    }
}

/// The entries of an empty listing.
struct NoEntries;

impl Entries for NoEntries {
    fn read_entry(&mut self, _: &mut Record) -> Result<bool, ManifestError> {
        Ok(false)
    }
}

/// One side of the merge: the next record, and the group of records of
/// the current (inode, generation).
struct Side<'a> {
    rd: Box<dyn Entries + 'a>,
    /// Generations of the two manifests come from different sources: read
    /// them as unknown (0) on both sides.
    ignore_generation: bool,
    head: Record,
    has_head: bool,
    group: Vec<Record>,
    n: usize,
    read: u64,
}

impl<'a> Side<'a> {
    fn new(rd: Box<dyn Entries + 'a>) -> Self {
        Side {
            rd,
            ignore_generation: false,
            head: Record::default(),
            has_head: false,
            group: Vec::new(),
            n: 0,
            read: 0,
        }
    }

    fn advance(&mut self) -> Result<(), ManifestError> {
        self.has_head = self.rd.read_entry(&mut self.head)?;
        self.read += u64::from(self.has_head);
        if self.ignore_generation {
            self.head.generation = 0;
        }
        Ok(())
    }

    /// Moves the head and every following record with its key into `group`.
    fn take_group(&mut self) -> Result<(), ManifestError> {
        self.n = 0;
        let key = self.head.key();
        loop {
            if self.group.len() == self.n {
                self.group.push(Record::default());
            }
            std::mem::swap(&mut self.group[self.n], &mut self.head);
            self.n += 1;
            self.advance()?;
            if !self.has_head || self.head.key() != key {
                return Ok(());
            }
        }
    }

    fn records(&self) -> &[Record] {
        &self.group[..self.n]
    }
}

/// Where a diff writes the delta from the old manifest to the new one: the
/// complete link set of every inode that changed, a tombstone for every
/// one that is gone.
pub type DeltaWriter<W> = ManifestWriter<W>;

fn put_group<W: Write>(w: &mut DeltaWriter<W>, records: &[Record]) -> Result<(), ManifestError> {
    records.iter().try_for_each(|r| w.push_entry(r))
}

/// Tells whether an inode whose ctime alone changed kept its xattrs, apart
/// from the ones ferry itself writes, given a path of it in the old and
/// the new tree. Then the ctime moved for a rename or ferry's own
/// stamps (its location and state, after the snapshot the run that sent
/// it was taken from), and the inode needs no update: reported, a sync
/// would check again every file the last run sent, and send the
/// attributes of every renamed one ([`super::own_xattrs`]).
pub trait OwnChanges {
    /// True when only ferry's own xattrs differ between inode `ino` at
    /// path `old` in the old tree and at `new` in the new one; false when
    /// anything else may have (also when it cannot tell).
    fn only_own(&self, ino: u64, old: &[u8], new: &[u8]) -> bool;
}

/// Diffs two manifests: returns the changes in apply order and the counts.
/// Changes are ordered within `opts.mem_limit`, spilling to `spill_dir`.
/// With `delta`, every group that differs is written to it as well. With
/// `own`, an inode whose ctime alone changed is asked about first.
pub fn diff<W: Write>(
    old: Listing<'_>,
    new: Listing<'_>,
    opts: &DiffOptions,
    spill_dir: &Path,
    mut delta: Option<&mut DeltaWriter<W>>,
    own: Option<&dyn OwnChanges>,
) -> Result<(Changes, DiffSummary), DiffError> {
    let (ro, rn) = (old.header.root_ino, new.header.root_ino);
    if ro != rn {
        return Err(DiffError::Roots(ro, rn));
    }
    let old_time = old.header.created_unix;
    let ignore_generation = old.header.generation != new.header.generation;
    if ignore_generation && delta.is_some() {
        return Err(DiffError::Generations(old.header.generation, new.header.generation));
    }
    let mut res = Resolver::new(old.dirs, new.dirs);
    if ignore_generation {
        res.ignore_generations();
    }
    let mut old = Side::new(old.entries);
    let mut new = Side::new(new.entries);
    old.ignore_generation = ignore_generation;
    new.ignore_generation = ignore_generation;
    let mut d = Differ {
        res,
        out: ExternalSorter::new(opts.mem_limit / 2, spill_dir),
        opts: opts.clone(),
        old_time,
        seq: 0,
        sum: DiffSummary::default(),
        path: Vec::new(),
        own,
    };
    old.advance()?;
    new.advance()?;
    while old.has_head || new.has_head {
        let ord = match (old.has_head, new.has_head) {
            (true, true) => old.head.key().cmp(&new.head.key()),
            (true, false) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                old.take_group()?;
                for r in old.records() {
                    d.emit(ChangeState::Deleted, r, None, false)?;
                }
                if let Some(w) = delta.as_deref_mut() {
                    w.tombstone(old.records()[0].key())?;
                }
            }
            std::cmp::Ordering::Greater => {
                new.take_group()?;
                for r in new.records() {
                    d.emit(ChangeState::Created, r, None, false)?;
                }
                if let Some(w) = delta.as_deref_mut() {
                    put_group(w, new.records())?;
                }
            }
            std::cmp::Ordering::Equal => {
                old.take_group()?;
                new.take_group()?;
                d.both(old.records(), new.records())?;
                if let Some(w) = delta.as_deref_mut()
                    && old.records() != new.records()
                {
                    put_group(w, new.records())?;
                }
            }
        }
    }
    d.sum.records = old.read + new.read;
    d.sum.new_records = new.read;
    d.sum.old_records = old.read;
    d.finish()
}

struct Differ<'a> {
    res: Resolver,
    out: ExternalSorter<Ordered>,
    opts: DiffOptions,
    old_time: i64,
    seq: u64,
    sum: DiffSummary,
    path: Vec<u8>,
    own: Option<&'a dyn OwnChanges>,
}

impl Differ<'_> {
    fn path(&mut self, ns: Namespace, r: &Record) -> Result<Vec<u8>, OrphanError> {
        self.path.clear();
        self.res.link_path(ns, r.parent, &r.name, &mut self.path)?;
        Ok(self.path.clone())
    }

    fn push(&mut self, phase: u8, change: Change) -> io::Result<()> {
        let d = depth(change.source.as_deref().unwrap_or(&change.path));
        let d = if phase == PHASE_OUT { u32::MAX - d } else { d };
        self.seq += 1;
        self.out.push(&Ordered {
            key: (phase, d, self.seq),
            change,
        })
    }

    fn skip_ctime(&mut self, r: &Record) -> bool {
        let skip = self.opts.skip_old_ctimes && r.ctime.sec < self.old_time;
        if skip {
            self.sum.skipped_old_ctime += 1;
        }
        skip
    }

    /// Records one change of `r` (for a move, `from` is the old link):
    /// names it, counts it and queues it in its phase.
    fn emit(
        &mut self,
        state: ChangeState,
        r: &Record,
        from: Option<&Record>,
        metadata_only: bool,
    ) -> Result<(), DiffError> {
        let (phase, ns) = match state {
            ChangeState::Deleted => (PHASE_OUT, Namespace::Old),
            ChangeState::Moved => (PHASE_OUT, Namespace::New),
            ChangeState::Created => (PHASE_CREATE, Namespace::New),
            ChangeState::Updated => (PHASE_UPDATE, Namespace::New),
        };
        if matches!(state, ChangeState::Created | ChangeState::Updated) && self.skip_ctime(r) {
            return Ok(());
        }
        let path = self.path(ns, r)?;
        let source = from.map(|f| self.path(Namespace::Old, f)).transpose()?;
        let count = match state {
            ChangeState::Created => &mut self.sum.created,
            ChangeState::Updated => &mut self.sum.updated,
            ChangeState::Moved => &mut self.sum.moved,
            ChangeState::Deleted => &mut self.sum.deleted,
        };
        *count += 1;
        self.sum.metadata_only += u64::from(metadata_only);
        self.push(
            phase,
            Change {
                state,
                path,
                source,
                record: r.clone(),
                metadata_only,
            },
        )?;
        Ok(())
    }

    /// An inode in both manifests: compare its links and its attributes.
    fn both(&mut self, old: &[Record], new: &[Record]) -> Result<(), DiffError> {
        if let ([o], [n]) = (old, new)
            && o == n
            && self.res.same_parent(o.parent)
        {
            self.sum.unchanged += 1;
            return self.unchanged_link(o, n);
        }
        // Links present in both, and the rest paired in order as moves.
        let res = &self.res;
        let same = |a: &Record, b: &Record| a.same_link(b) && res.same_parent(a.parent);
        let mut old_only: Vec<&Record> = old.iter().filter(|o| !new.iter().any(|n| same(o, n))).collect();
        let mut new_only: Vec<&Record> = new.iter().filter(|n| !old.iter().any(|o| same(o, n))).collect();
        let links_changed = !old_only.is_empty() || !new_only.is_empty();
        let (o, n) = (&old[0], &new[0]);
        let data = !o.is_dir() && !o.same_data(n);
        let attrs = !o.same_ownership(n) || (o.is_dir() && o.mtime != n.mtime);
        let mut meta = attrs || o.ctime != n.ctime;
        // A rename changes the ctime too: asked the same way, a renamed
        // entry whose xattrs stayed is only moved. Not one that gained or
        // lost a link: the destination keeps its hard-link groups whole
        // through the update of every link (seen: a link added in the
        // same round as its directory's rename left the new name out of
        // its group on a site that maps its paths).
        if meta && !attrs && !data && o.nlink == n.nlink && self.only_own(o, n)? {
            self.sum.own_xattrs_only += u64::from(!links_changed);
            meta = false;
        }
        let pairs = old_only.len().min(new_only.len());
        for (from, to) in old_only.drain(..pairs).zip(new_only.drain(..pairs)) {
            self.emit(ChangeState::Moved, to, Some(from), false)?;
        }
        for r in old_only {
            self.emit(ChangeState::Deleted, r, None, false)?;
        }
        let created: Vec<&Record> = new_only;
        for r in &created {
            self.emit(ChangeState::Created, r, None, false)?;
        }
        // Without condensing, a moved directory's entries are put back one
        // by one, which changes its mtime: restore it with an update.
        let refresh = !self.opts.condense_moves && o.is_dir() && links_changed;
        for r in new {
            if created.iter().any(|c| c.same_link(r)) {
                continue;
            }
            if data || meta || refresh {
                self.emit(ChangeState::Updated, r, None, !data)?;
            } else if let Some(o) = old.iter().find(|o| o.same_link(r) && self.res.same_parent(o.parent)) {
                self.sum.unchanged += 1;
                self.unchanged_link(o, r)?;
            }
        }
        Ok(())
    }

    /// Whether `own` says that only ferry's own xattrs changed (`o` and `n`
    /// are links of the same inode, in the old and the new tree).
    fn only_own(&mut self, o: &Record, n: &Record) -> Result<bool, DiffError> {
        let Some(own) = self.own else {
            return Ok(false);
        };
        let old = self.path(Namespace::Old, o)?;
        let new = self.path(Namespace::New, n)?;
        Ok(own.only_own(n.ino, &old, &new))
    }

    /// A link at the same place: with `condense_moves` off, an entry under
    /// a moved directory is reported as moved too.
    fn unchanged_link(&mut self, o: &Record, n: &Record) -> Result<(), DiffError> {
        if self.opts.condense_moves || o.parent == 0 {
            return Ok(());
        }
        let source = self.path(Namespace::Old, o)?;
        let path = self.path(Namespace::New, n)?;
        if source != path {
            self.sum.unchanged -= 1;
            self.emit(ChangeState::Moved, n, Some(o), false)?;
            if n.is_dir() {
                // Its entries are put back one by one: restore its mtime.
                self.emit(ChangeState::Updated, n, None, true)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Changes, DiffSummary), DiffError> {
        self.sum.spilled_runs = self.out.spilled_runs() as u64;
        Ok((
            Changes {
                sorted: self.out.finish()?,
            },
            self.sum,
        ))
    }
}

/// The changes of a diff, in apply order.
pub struct Changes {
    sorted: Sorted<Ordered>,
}

impl Iterator for Changes {
    type Item = io::Result<Change>;

    fn next(&mut self) -> Option<io::Result<Change>> {
        Some(self.sorted.next()?.map(|o| o.change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapdiff::build::ManifestBuilder;
    use crate::snapdiff::manifest::Header;
    use crate::snapdiff::record::tests::file;

    fn manifest(generation: u64, source: &str) -> Vec<u8> {
        manifest_of(
            generation,
            source,
            Record {
                generation,
                ..file(300, 256, b"f")
            },
        )
    }

    /// A manifest of the root and `f`.
    fn manifest_of(generation: u64, source: &str, f: Record) -> Vec<u8> {
        let spill = tempfile::tempdir().unwrap();
        let mut b = ManifestBuilder::new(1 << 20, spill.path());
        let root = Record {
            mode: libc::S_IFDIR | 0o755,
            generation,
            ..file(256, 0, b"")
        };
        b.push(&root).unwrap();
        b.push(&f).unwrap();
        let h = Header {
            root: b"/r".to_vec(),
            root_ino: 256,
            provider: "test".into(),
            snapshot: None,
            created: String::new(),
            created_unix: 0,
            generation: source.into(),
            ..crate::snapdiff::manifest::tests::header()
        };
        b.write(Vec::new(), &h).unwrap().0
    }

    fn states(old: &[u8], new: &[u8]) -> Vec<(ChangeState, Vec<u8>)> {
        let spill = tempfile::tempdir().unwrap();
        let read = |b| Listing::read(ManifestReader::new(io::Cursor::new(b)).unwrap()).unwrap();
        let (changes, _) =
            diff::<Vec<u8>>(read(old), read(new), &DiffOptions::default(), spill.path(), None, None).unwrap();
        changes.map(|c| c.unwrap()).map(|c| (c.state, c.path)).collect()
    }

    /// Answers `own` and records what it was asked.
    struct Own {
        own: bool,
        asked: std::cell::RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
    }

    impl OwnChanges for Own {
        fn only_own(&self, _ino: u64, old: &[u8], new: &[u8]) -> bool {
            self.asked.borrow_mut().push((old.to_vec(), new.to_vec()));
            self.own
        }
    }

    #[test]
    fn a_ctime_alone_changed_by_ferrys_own_xattrs_or_a_rename_is_no_update_and_nothing_else_is_asked() {
        let f = file(300, 256, b"f");
        let old = manifest_of(0, "btime", f.clone());
        let later = |r: Record| Record {
            ctime: crate::sys::Timestamp {
                sec: f.ctime.sec + 5,
                nsec: 0,
            },
            ..r
        };
        let run = |new: &[u8], own: bool| {
            let spill = tempfile::tempdir().unwrap();
            let read = |b| Listing::read(ManifestReader::new(io::Cursor::new(b)).unwrap()).unwrap();
            let own = Own {
                own,
                asked: Default::default(),
            };
            let (changes, sum) = diff::<Vec<u8>>(
                read(&old[..]),
                read(new),
                &DiffOptions::default(),
                spill.path(),
                None,
                Some(&own),
            )
            .unwrap();
            let changes: Vec<_> = changes
                .map(|c| c.unwrap())
                .map(|c| (c.state, c.metadata_only))
                .collect();
            (changes, sum, own.asked.into_inner())
        };
        let ctime_only = manifest_of(0, "btime", later(f.clone()));
        let (changes, sum, asked) = run(&ctime_only, true);
        assert_eq!(changes, vec![]);
        assert_eq!((sum.own_xattrs_only, sum.unchanged, sum.updated), (1, 2, 0));
        assert_eq!(asked, vec![(b"f".to_vec(), b"f".to_vec())]);
        let (changes, sum, _) = run(&ctime_only, false);
        assert_eq!(changes, vec![(ChangeState::Updated, true)]);
        assert_eq!(sum.own_xattrs_only, 0);
        // The mode changed too, or the data: never asked.
        let chmod = manifest_of(
            0,
            "btime",
            Record {
                mode: f.mode ^ 0o020,
                ..later(f.clone())
            },
        );
        let (changes, _, asked) = run(&chmod, true);
        assert_eq!((changes, asked), (vec![(ChangeState::Updated, true)], vec![]));
        let write = manifest_of(
            0,
            "btime",
            Record {
                size: f.size + 1,
                ..later(f.clone())
            },
        );
        let (changes, _, asked) = run(&write, true);
        assert_eq!((changes, asked), (vec![(ChangeState::Updated, false)], vec![]));
        // Renamed: its ctime moved with it. Asked across the rename; with
        // its xattrs kept it is only moved, else moved and updated.
        let renamed = manifest_of(
            0,
            "btime",
            Record {
                name: b"g".to_vec(),
                ..later(f.clone())
            },
        );
        let (changes, sum, asked) = run(&renamed, true);
        assert_eq!(changes, vec![(ChangeState::Moved, false)]);
        assert_eq!((sum.own_xattrs_only, sum.updated), (0, 0));
        assert_eq!(asked, vec![(b"f".to_vec(), b"g".to_vec())]);
        let (changes, _, _) = run(&renamed, false);
        assert_eq!(changes, vec![(ChangeState::Moved, false), (ChangeState::Updated, true)]);
    }

    #[test]
    fn generations_of_different_sources_are_not_compared() {
        // Same source, other generation: a reused inode number.
        let got = states(&manifest(1, "btime"), &manifest(2, "btime"));
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got.contains(&(ChangeState::Deleted, b"f".to_vec()))
                && got.contains(&(ChangeState::Created, b"f".to_vec()))
        );
        // Another source (a provider or method switch): the same tree.
        assert_eq!(states(&manifest(1, "inode"), &manifest(2, "btime")), vec![]);
    }
}
