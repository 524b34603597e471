//! Making a manifest: records arrive in any order (from a walk, a policy
//! scan or a test), are sorted within the memory budget, and are written
//! out as a manifest file.

use super::diff::Listing;
use super::extsort::{ExternalSorter, SortItem, Sorted};
use super::manifest::{Counts, Header, ManifestError, ManifestWriter, Section};
use super::paths::DirTable;
use super::record::Record;
use super::view::Entries;
use crate::entry::Entry;
use crate::sys::{FileStat, StatMask, Timestamp};
use crate::walk::{SnapshotDirs, Walk, WalkEvent, WalkOptions};
use std::io::{self, Write};
use std::path::Path;

impl SortItem for Record {
    type Key = (u64, u64);

    fn key(&self) -> (u64, u64) {
        Record::key(self)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        Record::encode(self, 0, out);
    }

    fn decode(mut buf: &[u8]) -> io::Result<Self> {
        let mut r = Record::default();
        r.decode_into(0, &mut buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(r)
    }
}

/// Sorts records into a manifest within a memory budget.
pub struct ManifestBuilder {
    all: ExternalSorter<Record>,
    dirs: ExternalSorter<Record>,
    root_ino: Option<u64>,
}

impl ManifestBuilder {
    /// A builder that keeps at most about `mem_limit` bytes of records in
    /// memory and spills sorted runs to `spill_dir` beyond that.
    pub fn new(mem_limit: usize, spill_dir: &Path) -> Self {
        ManifestBuilder {
            all: ExternalSorter::new(mem_limit - mem_limit / 4, spill_dir),
            dirs: ExternalSorter::new(mem_limit / 4, spill_dir),
            root_ino: None,
        }
    }

    /// Adds one record (checked first: a bad record is an error here, not
    /// a corrupt manifest later).
    pub fn push(&mut self, r: &Record) -> Result<(), ManifestError> {
        r.validate()
            .map_err(|e| ManifestError::Header(format!("inode {}: {e}", r.ino)))?;
        if r.parent == 0 {
            match self.root_ino {
                Some(ino) if ino != r.ino => {
                    return Err(ManifestError::Header(format!("two roots: inodes {ino} and {}", r.ino)));
                }
                _ => self.root_ino = Some(r.ino),
            }
        }
        if r.is_dir() {
            self.dirs.push(r)?;
        }
        self.all.push(r)?;
        Ok(())
    }

    /// The inode of the root record (the one without a parent), once added.
    pub fn root_ino(&self) -> Option<u64> {
        self.root_ino
    }

    /// Sorted runs spilled to disk so far, per section as [`write`]
    /// counts them (directories, entries): how often each outgrew its part
    /// of the memory budget (0 while it fits in memory).
    ///
    /// [`write`]: ManifestBuilder::write
    pub fn spilled_runs(&self) -> [usize; 2] {
        [self.dirs.spilled_runs(), self.all.spilled_runs()]
    }

    /// Records added so far.
    pub fn len(&self) -> u64 {
        self.all.len()
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Writes the manifest to `out` as a base; returns the counts. Two
    /// identical records are one record.
    pub fn write<W: Write>(self, out: W, header: &Header) -> Result<(W, Counts), ManifestError> {
        let mut w = ManifestWriter::new(out, header)?;
        let mut r = Record::default();
        for (section, sorter) in [(Section::Dirs, self.dirs), (Section::Entries, self.all)] {
            let mut records = SortedEntries::new(sorter.finish()?);
            while records.read_entry(&mut r)? {
                w.push(section, &r)?;
            }
        }
        w.finish()
    }

    /// The sorted records as a diff's new side, without writing them.
    pub fn into_listing(self, header: Header) -> Result<Listing<'static>, ManifestError> {
        let mut dirs = DirTable::with_root(header.root_ino);
        let mut records = SortedEntries::new(self.dirs.finish()?);
        let mut r = Record::default();
        while records.read_entry(&mut r)? {
            dirs.insert(&r)?;
        }
        Ok(Listing {
            header,
            dirs,
            entries: Box::new(SortedEntries::new(self.all.finish()?)),
        })
    }
}

/// A sorter's records as [`Entries`], duplicates dropped (two identical
/// records are one record).
struct SortedEntries {
    sorted: Sorted<Record>,
    last: Option<Record>,
}

impl SortedEntries {
    fn new(sorted: Sorted<Record>) -> Self {
        SortedEntries { sorted, last: None }
    }
}

impl Entries for SortedEntries {
    fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        for r in self.sorted.by_ref() {
            let r = r?;
            if self.last.as_ref() == Some(&r) {
                continue;
            }
            out.clone_from(&r);
            self.last = Some(r);
            return Ok(true);
        }
        Ok(false)
    }
}

/// Where the generations of a walk's records come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerationSource {
    /// The inode generation number (`FS_IOC_GETVERSION`: an open and an
    /// ioctl per file; GPFS policy lists carry it too).
    Inode,
    /// The birth time from the same `statx` call, packed as
    /// `seconds << 30 | nanoseconds`: free, and as good at telling a reused
    /// inode number from the old inode (0 where the filesystem has none).
    Btime,
}

impl GenerationSource {
    /// What a walk must `statx` for records of this source.
    pub const fn stat_mask(self) -> StatMask {
        match self {
            GenerationSource::Inode => StatMask::ALL,
            GenerationSource::Btime => StatMask::ALL.union(StatMask::BTIME),
        }
    }

    /// The name recorded in manifest headers.
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationSource::Inode => "inode",
            GenerationSource::Btime => "btime",
        }
    }
}

/// A birth time as a record's generation: `seconds << 30 | nanoseconds`.
pub fn btime_generation(t: Timestamp) -> u64 {
    ((t.sec as u64) << 30) | u64::from(t.nsec)
}

/// The generation [`GenerationSource::Btime`] gives the inode `st`
/// describes (0 where the filesystem keeps no birth time).
pub fn stat_btime_generation(st: &FileStat) -> u64 {
    st.btime.map_or(0, btime_generation)
}

/// The record of the link `name` in directory `parent` of the inode `st`
/// describes.
pub fn record_from_stat(st: &FileStat, generation: u64, parent: u64, name: Vec<u8>) -> Record {
    Record {
        ino: st.ino,
        generation,
        parent,
        name,
        mode: st.mode,
        size: st.size,
        mtime: st.mtime,
        ctime: st.ctime,
        uid: st.uid,
        gid: st.gid,
        nlink: st.nlink,
    }
}

/// The record for an entry found by a walk started at the fileset root:
/// the root itself gets parent 0 and an empty name.
pub fn record_from_entry(e: &Entry, source: GenerationSource) -> Option<Record> {
    let m = e.meta.as_ref()?;
    let name = if e.parent == 0 {
        Vec::new()
    } else {
        let at = e.path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        e.path[at..].to_vec()
    };
    let generation = match source {
        GenerationSource::Inode => e.generation.map_or(0, u64::from),
        GenerationSource::Btime => stat_btime_generation(m),
    };
    Some(record_from_stat(m, generation, e.parent, name))
}

/// Why a walk could not produce a complete manifest.
#[derive(Debug, thiserror::Error)]
pub enum WalkManifestError {
    /// Some paths could not be read: a manifest without them would make
    /// their files look deleted, so none is written.
    #[error("{failures} path(s) could not be read, e.g. {first}; no manifest written")]
    Incomplete {
        /// How many paths failed.
        failures: u64,
        /// The first failure, for the message.
        first: String,
    },
    /// Writing the manifest failed.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// The walk could not start or a walker thread failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The walk settings for a manifest: every attribute and the generation
/// from `source`, one filesystem, the fileset's own `.snapshots` directory
/// (at its root) skipped, no symlinks followed.
pub fn manifest_walk_options(threads: usize, source: GenerationSource) -> WalkOptions {
    WalkOptions {
        threads,
        one_file_system: true,
        follow_links: false,
        stat: true,
        stat_mask: source.stat_mask(),
        generation: source == GenerationSource::Inode,
        skip_snapshots: SnapshotDirs::AtRoot,
        ..WalkOptions::default()
    }
}

/// Walks `dir` (a snapshot or a live fileset) into a builder, with
/// generations from `source`.
pub fn walk_into(
    dir: &[u8],
    threads: usize,
    source: GenerationSource,
    builder: &mut ManifestBuilder,
) -> Result<u64, WalkManifestError> {
    let opts = manifest_walk_options(threads, source);
    let mut walk = Walk::start(vec![dir.to_vec()], opts)?;
    let mut first = None;
    for ev in walk.by_ref() {
        match ev {
            WalkEvent::Entries(entries) => {
                for e in &entries {
                    if let Some(r) = record_from_entry(e, source) {
                        builder.push(&r)?;
                    }
                }
            }
            WalkEvent::Error(e) => {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let summary = walk.finish()?;
    if let Some(first) = first {
        return Err(WalkManifestError::Incomplete {
            failures: summary.failures.max(1),
            first,
        });
    }
    Ok(builder.len())
}
