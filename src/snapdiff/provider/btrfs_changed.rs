//! What changed in a btrfs snapshot since an older one, found in time
//! proportional to the change (`../shared/reference/snapdiff-change-proportional.md`
//! §1.4-1.6):
//!
//! 1. A tree search of the new snapshot with `min_transid` = the old
//!    snapshot's `otransid` returns only the leaves written since; of their
//!    inode items, those whose own `transid` is newer are the changed
//!    inodes (every write, chmod, xattr change, link, unlink and rename
//!    rewrites the inode item and stamps it with the transaction).
//! 2. A changed inode whose back references did not all come back (its
//!    link count says how many) gets one targeted search for them.
//! 3. Deletions leave no item behind, but every directory that lost an
//!    entry was itself rewritten (its size and ctime change; the ctime
//!    cannot be set back, unlike the mtime). Its entries
//!    (`DIR_INDEX` items) in the old snapshot and in the new one show what
//!    went; a child that went and is not among the changed inodes is gone,
//!    and so is everything under it that did not move out. Each one is
//!    checked absent from the new snapshot before it is called gone.
//!
//! The result is the changed inodes' complete new records and the inode
//! numbers that are gone; the old records come from the previous manifest.

use super::btrfs_tree::{
    BUFFER, DIR_INDEX, INODE_EXTREF, INODE_ITEM, INODE_REF, Item, LAST_FREE_OBJECTID, Pending, SMALL_BUFFER, TreeError,
    all_inodes, dir_item, flush, inode_transid, one_inode, search, search_by,
};
use crate::snapdiff::parallel::each_on_a_thread;
use crate::snapdiff::paths::DirTable;
use crate::snapdiff::record::Record;
use crate::sys::btrfs::{SUBVOL_ROOT_INO, SearchBuf, SearchKey};
use rustc_hash::FxHashSet;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Location type of a directory entry that is a subvolume, not an inode.
const ROOT_ITEM: u8 = 132;

/// What changed in a snapshot since an older one.
#[derive(Debug, Default)]
pub struct Changed {
    /// Every link of every changed inode, in manifest order.
    pub records: Vec<Record>,
    /// Inode numbers that are gone, ascending.
    pub gone: Vec<u64>,
    /// Inode items the search returned (changed or not): the work done.
    pub examined: u64,
    /// Found where the event journal's events pointed.
    pub journal: bool,
}

/// Finds what changed in the snapshot at `new` since the one at `old`,
/// taken at transaction `since`. `old_dirs` is the old manifest's
/// directory table (its size and ctime say which directories may have
/// lost entries). `split` cuts the inode numbers into ranges searched in
/// parallel (ascending; empty for one search). Returns `None` once more
/// than `limit` inodes changed: a full read is cheaper then.
pub fn changed_since(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    since: u64,
    old_dirs: &DirTable,
    limit: usize,
    split: &[u64],
) -> Result<Option<Changed>, TreeError> {
    // 1. Changed inodes, with the links that came back with them: one
    // search per inode range, each on its own thread (the ranges' leaves
    // are disjoint, so each thread reads its own part of the tree).
    let found = AtomicUsize::new(0);
    let mut bounds = vec![SUBVOL_ROOT_INO];
    bounds.extend(
        split
            .iter()
            .copied()
            .filter(|&b| b > SUBVOL_ROOT_INO && b <= LAST_FREE_OBJECTID),
    );
    bounds.dedup();
    let parts: Vec<Result<RangeFound, TreeError>> = each_on_a_thread(bounds.iter().enumerate(), |(i, &lo)| {
        let hi = bounds.get(i + 1).map_or(LAST_FREE_OBJECTID, |&b| b - 1);
        changed_in(new, since, lo, hi, limit, &found)
    });
    if found.load(Ordering::Relaxed) > limit {
        return Ok(None);
    }
    // Each thread's map stays where its thread made it (merging them
    // would allocate them all again).
    let mut changed = ByRange {
        bounds,
        maps: Vec::with_capacity(parts.len()),
    };
    let mut examined = 0;
    for part in parts {
        let (map, n) = part?;
        examined += n;
        changed.maps.push(map);
    }
    links_and_losses(new, changed, Losses::InDirectories { old, old_dirs }, examined).map(Some)
}

/// Reads the inodes `inos` (ascending) that an event journal named, as
/// they are in the snapshot at `new`: the search of step 1 narrowed to
/// the inodes the journal points at, one targeted search each, on
/// `threads` threads. An inode is read whatever its transid: its event
/// can come in after the snapshot that holds its change (see
/// [`crate::snapdiff::provider::btrfs`]), and a record read again
/// unchanged diffs as nothing. Step 2 is as in [`changed_since`]; step 3
/// is not needed, since every unlink, rename and rmdir names the inode
/// it took away: a named inode the new snapshot lacks is gone.
pub fn changed_among(new: BorrowedFd<'_>, inos: &[u64], threads: usize) -> Result<Changed, TreeError> {
    let inos: Vec<u64> = inos
        .iter()
        .copied()
        .filter(|&i| (SUBVOL_ROOT_INO..=LAST_FREE_OBJECTID).contains(&i))
        .collect();
    let per = inos.len().div_ceil(threads.max(1)).max(1);
    let chunks: Vec<&[u64]> = inos.chunks(per).collect();
    let mut bounds: Vec<u64> = chunks.iter().map(|c| c[0]).collect();
    let parts = each_on_a_thread(
        chunks,
        |chunk| -> Result<(BTreeMap<u64, Pending>, Vec<u64>), TreeError> {
            let mut buf = SearchBuf::new(SMALL_BUFFER);
            let (mut found, mut absent) = (BTreeMap::new(), Vec::new());
            for &ino in chunk {
                let mut p = Pending {
                    ino,
                    ..Pending::default()
                };
                // Its item and (mostly) one back reference; more are asked
                // for only while its link count says some are missing.
                search_by(new, inode_and_refs(ino), &mut buf, 2, |item| {
                    p.add(item)?;
                    Ok(!p.complete())
                })?;
                if p.attrs.is_some() {
                    found.insert(ino, p);
                } else {
                    absent.push(ino);
                }
            }
            Ok((found, absent))
        },
    );
    // `ByRange` looks up by the range's first inode: the first range
    // starts at the root.
    let mut maps = Vec::with_capacity(parts.len() + 1);
    if bounds.first() != Some(&SUBVOL_ROOT_INO) {
        bounds.insert(0, SUBVOL_ROOT_INO);
        maps.push(BTreeMap::new());
    }
    let mut gone = Vec::new();
    for part in parts {
        let (map, absent) = part?;
        maps.push(map);
        gone.extend(absent);
    }
    links_and_losses(new, ByRange { bounds, maps }, Losses::Named(gone), inos.len() as u64)
}

/// How step 3 finds the inodes that are gone.
enum Losses<'a> {
    /// From the entries the changed directories lost since the snapshot
    /// at `old` (whose manifest's directory table is `old_dirs`).
    InDirectories {
        old: BorrowedFd<'a>,
        old_dirs: &'a DirTable,
    },
    /// These inodes (ascending), which the new snapshot lacks.
    Named(Vec<u64>),
}

/// Steps 2 and 3 of [`changed_since`] on the changed inodes step 1 found
/// (`examined`: the inode items it looked at), and the result.
fn links_and_losses(
    new: BorrowedFd<'_>,
    mut changed: ByRange,
    losses: Losses<'_>,
    examined: u64,
) -> Result<Changed, TreeError> {
    let mut buf = SearchBuf::new(SMALL_BUFFER);
    let mut out = Changed {
        examined,
        ..Changed::default()
    };
    // 2. Complete link sets.
    for p in changed.maps.iter_mut().flat_map(|m| m.values_mut()) {
        let Some(want) = p.links_wanted() else { continue };
        if p.ino != SUBVOL_ROOT_INO && p.links.len() != want {
            p.links.clear();
            refs_of(new, p, &mut buf)?;
        }
    }
    let (old, old_dirs) = match losses {
        Losses::Named(gone) => {
            out.gone = gone;
            return finish(changed, out);
        }
        Losses::InDirectories { old, old_dirs } => (old, old_dirs),
    };
    // 3. Entries that went from directories that changed.
    let mut gone = BTreeSet::new();
    let mut dirs: Vec<u64> = changed
        .maps
        .iter()
        .flat_map(|m| m.values())
        .filter_map(|p| p.attrs.as_ref())
        .filter(|a| a.is_dir())
        .filter(|a| old_dirs.stamp(a.ino).is_some_and(|s| s != (a.size, a.ctime)))
        .map(|a| a.ino)
        .collect();
    let mut listed_old = BTreeSet::new();
    while let Some(d) = dirs.pop() {
        if !listed_old.insert(d) {
            continue;
        }
        let before = entries(old, d, &mut buf)?;
        let after = if changed.contains_key(&d) {
            entries(new, d, &mut buf)?
        } else {
            // A directory that is gone itself: everything in it went.
            Vec::new()
        };
        let after: FxHashSet<(&[u8], u64)> = after.iter().map(|(n, c, _)| (n.as_slice(), *c)).collect();
        for (name, child, is_dir) in before {
            if changed.contains_key(&child) || after.contains(&(name.as_slice(), child)) {
                continue;
            }
            if gone.insert(child) && is_dir {
                dirs.push(child);
            }
        }
    }
    // Gone means absent from the new snapshot; anything still there is
    // read whole as changed.
    for &ino in &gone {
        let mut p = Pending {
            ino,
            ..Pending::default()
        };
        search(new, one_inode(ino, INODE_ITEM), &mut buf, |item| {
            p.add(item)?;
            Ok(true)
        })?;
        if p.attrs.is_some() {
            refs_of(new, &mut p, &mut buf)?;
            changed.insert(ino, p);
        }
    }
    out.gone = gone.into_iter().filter(|i| !changed.contains_key(i)).collect();
    finish(changed, out)
}

/// `out` with the changed inodes' records. An inode left with no link in
/// the fileset is gone from it: an orphan (unlinked, still open when the
/// snapshot was taken), or one whose links are all under `.snapshots`,
/// which walks skip.
fn finish(changed: ByRange, mut out: Changed) -> Result<Changed, TreeError> {
    let mut skip = Vec::new();
    let mut unlinked = Vec::new();
    for (ino, mut p) in changed.maps.into_iter().flatten() {
        if flush(&mut p, &mut skip, &mut out.records)? == 0 && ino != SUBVOL_ROOT_INO {
            unlinked.push(ino);
        }
    }
    if !unlinked.is_empty() {
        out.gone.extend(unlinked);
        out.gone.sort_unstable();
        out.gone.dedup();
    }
    Ok(out)
}

/// What step 1 found in one range: the changed inodes, and how many inode
/// items it examined.
type RangeFound = (BTreeMap<u64, Pending>, u64);

/// The changed inodes, one map per inode range (`bounds` holds each
/// range's first inode, ascending).
struct ByRange {
    bounds: Vec<u64>,
    maps: Vec<BTreeMap<u64, Pending>>,
}

impl ByRange {
    fn part(&self, ino: u64) -> usize {
        self.bounds.partition_point(|&b| b <= ino).saturating_sub(1)
    }

    fn contains_key(&self, ino: &u64) -> bool {
        self.maps[self.part(*ino)].contains_key(ino)
    }

    fn insert(&mut self, ino: u64, p: Pending) {
        let i = self.part(ino);
        self.maps[i].insert(ino, p);
    }
}

/// Step 1 over inodes `lo..=hi`: the changed inodes and their links, and
/// how many inode items came back. Stops once `found` (shared by every
/// range) passes `limit`.
fn changed_in(
    new: BorrowedFd<'_>,
    since: u64,
    lo: u64,
    hi: u64,
    limit: usize,
    found: &AtomicUsize,
) -> Result<RangeFound, TreeError> {
    let mut buf = SearchBuf::new(BUFFER);
    let mut changed: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut examined = 0;
    let key = SearchKey {
        min_objectid: lo,
        max_objectid: hi,
        min_transid: since,
        ..all_inodes()
    };
    search(new, key, &mut buf, |item| {
        if item.kind == INODE_ITEM {
            examined += 1;
            if inode_transid(item.data).is_some_and(|t| t > since) {
                let p = changed.entry(item.objectid).or_default();
                p.ino = item.objectid;
                p.add(item)?;
                if found.fetch_add(1, Ordering::Relaxed) >= limit {
                    return Ok(false);
                }
            }
        } else if matches!(item.kind, INODE_REF | INODE_EXTREF)
            && let Some(p) = changed.get_mut(&item.objectid)
        {
            p.add(item)?;
        }
        Ok(true)
    })?;
    Ok((changed, examined))
}

/// An inode's item and its back references (the types between them hold
/// nothing a record needs, and nothing else).
fn inode_and_refs(ino: u64) -> SearchKey {
    SearchKey {
        max_type: INODE_EXTREF,
        ..one_inode(ino, INODE_ITEM)
    }
}

/// Reads every back reference of `p.ino` into `p`.
fn refs_of(dir: BorrowedFd<'_>, p: &mut Pending, buf: &mut SearchBuf) -> Result<(), TreeError> {
    let key = SearchKey {
        max_type: INODE_EXTREF,
        ..one_inode(p.ino, INODE_REF)
    };
    search(dir, key, buf, |item: &Item<'_>| {
        p.add(item)?;
        Ok(true)
    })
}

/// The entries of directory `dir_ino`: (name, inode, is a directory).
/// Subvolumes inside it (`.snapshots`' snapshots) are not entries of the
/// fileset.
fn entries(fd: BorrowedFd<'_>, dir_ino: u64, buf: &mut SearchBuf) -> Result<Vec<(Vec<u8>, u64, bool)>, TreeError> {
    let mut out = Vec::new();
    search(fd, one_inode(dir_ino, DIR_INDEX), buf, |item| {
        let (e, _) = dir_item(item.data).ok_or(TreeError::Malformed("dir index", dir_ino))?;
        if e.location_type != ROOT_ITEM && e.location <= LAST_FREE_OBJECTID {
            // BTRFS_FT_DIR is 2.
            out.push((e.name.to_vec(), e.location, e.file_type == 2));
        }
        Ok(true)
    })?;
    Ok(out)
}
