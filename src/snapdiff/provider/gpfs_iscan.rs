//! What changed in a GPFS snapshot since an older one, read with IBM's
//! incremental inode scan (`../shared/reference/snapdiff-change-proportional.md`
//! §2; "Using APIs to develop backup applications"):
//!
//! 1. `gpfs_open_inodescan64` on the new snapshot with the old one's
//!    fssnap id returns only the inodes whose mtime or ctime changed since
//!    (every write, chmod, link, unlink and rename changes the ctime).
//!    Deleted inodes may come back with `ia_nlink` 0 or
//!    `GPFS_IAFLAG_DELETED`, or not at all: both are handled.
//! 2. Inode attributes carry no parent and name, so every changed
//!    directory is read by inode number (`gpfs_iopen64`,
//!    `gpfs_ireaddir64`) in the new and in the old snapshot: the
//!    difference gives the links added and removed.
//! 3. A changed inode's links are its links in the baseline manifest,
//!    less those removed, plus those added. An inode left without links is
//!    gone; a gone directory takes along everything in it (read in the old
//!    snapshot) that did not move out.
//!
//! The result is checked before it is used: a changed inode without links,
//! or with a link count its links do not match, means the scan and the
//! directories disagree, and the run reads the whole snapshot instead.

use super::btrfs_changed::Changed;
use crate::snapdiff::manifest::ManifestError;
use crate::snapdiff::parallel::each_on_a_thread;
use crate::snapdiff::paths::DirTable;
use crate::snapdiff::record::Record;
use crate::sys::Timestamp;
use crate::sys::gpfs_lib::{DE_DEL, DEFLAG_IJUNCTION, DirEntry, FsSnap, IAFLAG_DELETED, InodeAttr, Libgpfs};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The read of changes with the inode scan failed.
#[derive(Debug, thiserror::Error)]
pub enum IscanError {
    /// A library call failed.
    #[error("{call} on {}: {source}", path.display())]
    Call {
        /// Which call (and on what inode).
        call: String,
        /// The snapshot it was about.
        path: PathBuf,
        /// Its errno.
        source: io::Error,
    },
    /// The baseline manifest could not be read.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// The scan, the directories and the baseline disagree.
    #[error("the incremental inode scan is inconsistent: {0}")]
    Inconsistent(String),
}

impl IscanError {
    /// Whether a full read is the answer (the scan is unavailable, not
    /// allowed, or disagrees with the directories) rather than a failed
    /// run (an I/O error).
    pub fn falls_back(&self) -> bool {
        match self {
            IscanError::Call { source, .. } => source.raw_os_error().is_some_and(|e| {
                matches!(
                    e,
                    libc::ENOSYS
                        | libc::EPERM
                        | libc::EACCES
                        | libc::EINVAL
                        | libc::ENOENT
                        | libc::EOPNOTSUPP
                        | libc::ERANGE
                        | libc::EDOM
                        | libc::ESTALE
                        | libc::ENOTDIR
                ) || (185..=201).contains(&e) // GPFS_NEW_ERRNO_BASE, GPFS_ERRNO_BASE + n
            }),
            IscanError::Manifest(_) => false,
            IscanError::Inconsistent(_) => true,
        }
    }
}

fn call<T>(what: impl FnOnce() -> String, path: &Path, r: io::Result<T>) -> Result<T, IscanError> {
    r.map_err(|source| IscanError::Call {
        call: what(),
        path: path.to_path_buf(),
        source,
    })
}

/// The baseline's records (every link, in manifest order) of some inodes,
/// ascending ([`super::OldRecords::records_of`]).
pub type OldRecords<'a> = &'a mut dyn FnMut(&[u64]) -> Result<Vec<Record>, ManifestError>;

/// What [`changed_since`] is given.
pub struct Snapshots<'a> {
    /// The new snapshot's directory.
    pub new: &'a Path,
    /// The old (baseline) snapshot's directory.
    pub old: &'a Path,
    /// The old snapshot's numeric id, as recorded in its manifest.
    pub since: u64,
}

/// The snapshot's numeric id (`gpfs_get_snapid_from_fssnaphandle`).
pub fn snapshot_id(lib: &Libgpfs, dir: &Path) -> Result<u64, IscanError> {
    let h = call(|| "gpfs_get_fssnaphandle_by_path".into(), dir, lib.snapshot(dir))?;
    call(|| "gpfs_get_snapid_from_fssnaphandle".into(), dir, h.snap_id())
}

/// What changed in `s.new` since `s.old`; `None` once more than `limit`
/// inodes changed. `split` cuts the inode numbers into ranges scanned in
/// parallel.
pub fn changed_since(
    lib: &Libgpfs,
    s: &Snapshots<'_>,
    old_dirs: &DirTable,
    limit: usize,
    split: &[u64],
    mut old_records: OldRecords<'_>,
) -> Result<Option<Changed>, IscanError> {
    let new = call(|| "gpfs_get_fssnaphandle_by_path".into(), s.new, lib.snapshot(s.new))?;
    let old = call(|| "gpfs_get_fssnaphandle_by_path".into(), s.old, lib.snapshot(s.old))?;
    let old_id = call(|| "gpfs_get_snapid_from_fssnaphandle".into(), s.old, old.snap_id())?;
    if old_id != s.since {
        return Err(IscanError::Inconsistent(format!(
            "snapshot {} has id {old_id}, its manifest says {}",
            s.old.display(),
            s.since
        )));
    }
    let prev = call(|| "gpfs_get_fssnapid_from_fssnaphandle".into(), s.old, old.fssnap_id())?;
    let Some(scanned) = scan(&new, &prev, s.new, limit, split)? else {
        return Ok(None);
    };
    let root = call(|| "stat".into(), s.new, std::fs::metadata(s.new))?.ino();
    let mut w = Work {
        root,
        live: BTreeMap::new(),
        deleted: BTreeSet::new(),
        removed: BTreeMap::new(),
        added: BTreeMap::new(),
        olds: BTreeMap::new(),
    };
    let examined = scanned.len() as u64;
    for a in scanned {
        if a.nlink == 0 || a.flags & IAFLAG_DELETED != 0 {
            w.deleted.insert(a.ino);
        } else {
            w.live.insert(a.ino, a);
        }
    }
    // 2. Links added to and removed from the changed directories.
    let dirs: Vec<u64> = w.live.values().filter(|a| is_dir(a.mode)).map(|a| a.ino).collect();
    for d in dirs {
        let after = w.entries(&new, s.new, d)?;
        let before = if old_dirs.stamp(d).is_some() || d == old_dirs.root() {
            w.entries(&old, s.old, d)?
        } else {
            Vec::new()
        };
        let was: BTreeSet<(&[u8], u64)> = before.iter().map(|e| (e.name.as_slice(), e.ino)).collect();
        let is: BTreeSet<(&[u8], u64)> = after.iter().map(|e| (e.name.as_slice(), e.ino)).collect();
        for e in &before {
            if !is.contains(&(e.name.as_slice(), e.ino)) {
                w.removed.entry(e.ino).or_default().insert((d, e.name.clone()));
            }
        }
        for e in &after {
            if !was.contains(&(e.name.as_slice(), e.ino)) {
                w.added.entry(e.ino).or_default().insert((d, e.name.clone()));
            }
        }
    }
    // 3. Links and the fate of every inode involved; gone directories
    // bring their old entries in (which may take links from inodes
    // already looked at: they are looked at again), until nothing changes.
    let mut settled: BTreeSet<u64> = BTreeSet::new();
    let mut expanded: BTreeSet<u64> = BTreeSet::new();
    let mut gone: BTreeSet<u64> = BTreeSet::new();
    loop {
        let todo: BTreeSet<u64> = w
            .live
            .keys()
            .chain(w.deleted.iter())
            .chain(w.removed.keys())
            .chain(w.added.keys())
            .copied()
            .filter(|i| *i != root && !settled.contains(i))
            .collect();
        if todo.is_empty() {
            break;
        }
        let todo: Vec<u64> = todo.into_iter().collect();
        w.fetch_old(&todo, &mut old_records)?;
        for ino in todo {
            settled.insert(ino);
            let old_gen = w.olds.get(&ino).and_then(|r| r.first()).map(|r| r.generation);
            let new_gen = w.live.get(&ino).map(|a| generation(a.generation));
            // A reported deletion of the old inode: all its links went.
            if w.deleted.contains(&ino) && new_gen.is_none() && old_gen.is_some() {
                let links: Vec<(u64, Vec<u8>)> = w.olds[&ino].iter().map(|r| (r.parent, r.name.clone())).collect();
                w.removed.entry(ino).or_default().extend(links);
            }
            let links = w.links(ino);
            if links.is_empty() {
                if w.live.contains_key(&ino) {
                    return Err(IscanError::Inconsistent(format!(
                        "inode {ino} changed but none of its links was found"
                    )));
                }
                if old_gen.is_none() && w.added.contains_key(&ino) {
                    return Err(IscanError::Inconsistent(format!(
                        "inode {ino} was linked but is neither changed nor in the baseline"
                    )));
                }
                if old_gen.is_some() {
                    gone.insert(ino);
                }
            }
            // The old inode went (or its number now holds another one): if
            // it was a directory, so did its entries, unless they moved out.
            let old_went = old_gen.is_some() && (links.is_empty() || new_gen.is_some_and(|g| Some(g) != old_gen));
            if old_went && w.olds[&ino].first().is_some_and(Record::is_dir) && expanded.insert(ino) {
                for e in w.entries(&old, s.old, ino)? {
                    if w.removed.entry(e.ino).or_default().insert((ino, e.name)) {
                        settled.remove(&e.ino);
                    }
                }
            }
        }
    }
    // The root keeps its place; it is read again only if it changed.
    let mut out = Changed {
        examined,
        ..Changed::default()
    };
    for &ino in &settled {
        if gone.contains(&ino) {
            continue;
        }
        out.records.extend(w.records(ino)?);
    }
    if let Some(a) = w.live.get(&root).copied() {
        w.fetch_old(&[root], &mut old_records)?;
        let r = w.olds.get(&root).and_then(|r| r.first()).cloned().unwrap_or_default();
        out.records.push(record(&a, r.parent, r.name));
    }
    out.records.sort();
    out.gone = gone.into_iter().collect();
    Ok(Some(out))
}

/// The state of a read of changes.
struct Work {
    root: u64,
    /// Changed inodes that live in the new snapshot.
    live: BTreeMap<u64, InodeAttr>,
    /// Inodes the scan reported deleted.
    deleted: BTreeSet<u64>,
    /// Links (parent, name) each inode lost.
    removed: BTreeMap<u64, BTreeSet<(u64, Vec<u8>)>>,
    /// Links (parent, name) each inode gained.
    added: BTreeMap<u64, BTreeSet<(u64, Vec<u8>)>>,
    /// The baseline's records of the inodes looked at.
    olds: BTreeMap<u64, Vec<Record>>,
}

impl Work {
    /// The entries of directory `dir` in snapshot `h` (at `path`), without
    /// `.`, `..`, deleted entries, other inode spaces' junctions and the
    /// root's `.snapshots`.
    fn entries(&self, h: &FsSnap<'_>, path: &Path, dir: u64) -> Result<Vec<DirEntry>, IscanError> {
        let mut v = call(
            || format!("gpfs_iopen64/gpfs_ireaddir64 of inode {dir}"),
            path,
            h.read_dir(dir),
        )?;
        v.retain(|e| {
            e.name != b"."
                && e.name != b".."
                && e.kind != DE_DEL
                && e.flags & DEFLAG_IJUNCTION == 0
                && !(dir == self.root && e.name == b".snapshots")
        });
        Ok(v)
    }

    /// Reads the baseline's records of those of `inos` not read yet.
    fn fetch_old(&mut self, inos: &[u64], old_records: &mut OldRecords<'_>) -> Result<(), IscanError> {
        let want: Vec<u64> = inos.iter().copied().filter(|i| !self.olds.contains_key(i)).collect();
        if want.is_empty() {
            return Ok(());
        }
        for &i in &want {
            self.olds.insert(i, Vec::new());
        }
        for r in old_records(&want)? {
            self.olds.entry(r.ino).or_default().push(r);
        }
        Ok(())
    }

    /// The links of `ino` in the new snapshot: its baseline links (if the
    /// same inode is still there) less those removed, plus those added.
    fn links(&self, ino: u64) -> BTreeSet<(u64, Vec<u8>)> {
        let old = self.olds.get(&ino).map(Vec::as_slice).unwrap_or_default();
        let same = match (old.first(), self.live.get(&ino)) {
            (Some(r), Some(a)) => r.generation == generation(a.generation),
            (Some(_), None) => !self.deleted.contains(&ino),
            (None, _) => false,
        };
        let mut links: BTreeSet<(u64, Vec<u8>)> = if same {
            old.iter().map(|r| (r.parent, r.name.clone())).collect()
        } else {
            BTreeSet::new()
        };
        if let Some(gone) = self.removed.get(&ino) {
            links.retain(|l| !gone.contains(l));
        }
        if let Some(new) = self.added.get(&ino) {
            links.extend(new.iter().cloned());
        }
        links
    }

    /// The new records (one per link) of an inode that is still there.
    fn records(&self, ino: u64) -> Result<Vec<Record>, IscanError> {
        let links = self.links(ino);
        let attrs = match (self.live.get(&ino), self.olds.get(&ino).and_then(|r| r.first())) {
            (Some(a), _) => Attrs::New(a),
            (None, Some(r)) => Attrs::Old(r),
            (None, None) => {
                return Err(IscanError::Inconsistent(format!("inode {ino} has no attributes")));
            }
        };
        let (nlink, dir) = match attrs {
            Attrs::New(a) => (u64::try_from(a.nlink).unwrap_or(0), is_dir(a.mode)),
            Attrs::Old(r) => (r.nlink, r.is_dir()),
        };
        let want = if dir { 1 } else { nlink };
        if links.len() as u64 != want {
            return Err(IscanError::Inconsistent(format!(
                "inode {ino} has {} links in its directories, its link count says {want}",
                links.len()
            )));
        }
        Ok(links
            .into_iter()
            .map(|(parent, name)| match attrs {
                Attrs::New(a) => record(a, parent, name),
                Attrs::Old(r) => Record {
                    parent,
                    name,
                    ..r.clone()
                },
            })
            .collect())
    }
}

/// Where an inode's attributes come from.
#[derive(Clone, Copy)]
enum Attrs<'a> {
    /// The scan (it changed).
    New(&'a InodeAttr),
    /// The baseline (it did not).
    Old(&'a Record),
}

/// Step 1: the changed inodes, range by range in parallel; `None` past
/// `limit`.
fn scan(
    h: &FsSnap<'_>,
    prev: &crate::sys::gpfs_lib::FssnapId,
    path: &Path,
    limit: usize,
    split: &[u64],
) -> Result<Option<Vec<InodeAttr>>, IscanError> {
    let mut bounds = vec![0u64];
    bounds.extend(split.iter().copied().filter(|&b| b > 0));
    bounds.dedup();
    let mut scans = Vec::with_capacity(bounds.len());
    for (i, &lo) in bounds.iter().enumerate() {
        let (mut sc, _max) = call(|| "gpfs_open_inodescan64".into(), path, h.inode_scan(Some(prev)))?;
        if lo > 0 {
            call(|| format!("gpfs_seek_inode64 to {lo}"), path, sc.seek(lo))?;
        }
        // termIno: the scan stops before it (0: at the end).
        scans.push((sc, bounds.get(i + 1).copied().unwrap_or(0)));
    }
    let found = AtomicUsize::new(0);
    let parts: Vec<Result<Vec<InodeAttr>, IscanError>> = each_on_a_thread(scans, |(mut s, term)| {
        let mut out = Vec::new();
        while let Some(a) = call(|| "gpfs_next_inode64".into(), path, s.next_inode(term))? {
            out.push(a);
            if found.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        Ok(out)
    });
    if found.load(Ordering::Relaxed) > limit {
        return Ok(None);
    }
    let mut all = Vec::new();
    for p in parts {
        all.extend(p?);
    }
    Ok(Some(all))
}

fn is_dir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// The generation as the policy scan lists it: 32 bits ("File list
/// format": GenNumber is a 32-bit file generation number).
fn generation(g: u64) -> u64 {
    u64::from(g as u32)
}

/// A time at the policy scan's precision (microseconds), so that records
/// from either read compare equal.
fn micros((sec, nsec): (i64, u32)) -> Timestamp {
    Timestamp {
        sec,
        nsec: nsec.min(999_999_999) / 1000 * 1000,
    }
}

/// The record of one link of a changed inode.
fn record(a: &InodeAttr, parent: u64, name: Vec<u8>) -> Record {
    Record {
        ino: a.ino,
        generation: generation(a.generation),
        parent,
        name,
        // gpfs_mode_t may carry GPFS bits (0x02000000) beyond st_mode's.
        mode: a.mode & (libc::S_IFMT | 0o7777),
        size: u64::try_from(a.size).unwrap_or(0),
        mtime: micros(a.mtime),
        ctime: micros(a.ctime),
        uid: a.uid as u32,
        gid: a.gid as u32,
        nlink: u64::try_from(a.nlink).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_take_the_policy_scans_precision() {
        let a = InodeAttr {
            ino: 300,
            generation: 0x1_0000_0007,
            mode: 0x0200_0000 | libc::S_IFREG | 0o4755,
            nlink: 2,
            uid: 1000,
            gid: 100,
            size: 5,
            mtime: (1_700_000_000, 123_456_789),
            ctime: (1_700_000_001, 999_999_999),
            flags: 0,
        };
        let r = record(&a, 256, b"f".to_vec());
        assert_eq!(r.generation, 7);
        assert_eq!(r.mode, libc::S_IFREG | 0o4755);
        assert_eq!(r.mtime.nsec, 123_456_000);
        assert_eq!(r.ctime.nsec, 999_999_000);
        assert_eq!((r.parent, r.nlink), (256, 2));
    }

    #[test]
    fn unavailable_scans_fall_back_and_io_errors_do_not() {
        let e = |errno| IscanError::Call {
            call: "x".into(),
            path: PathBuf::from("/s"),
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(e(libc::ENOSYS).falls_back());
        assert!(e(libc::EPERM).falls_back());
        assert!(e(190).falls_back());
        assert!(!e(libc::EIO).falls_back());
        assert!(IscanError::Inconsistent("x".into()).falls_back());
    }
}
