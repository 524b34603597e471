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
    all_inodes, flush, inode_transid, le16, le64, search,
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
    let mut buf = SearchBuf::new(SMALL_BUFFER);
    let mut out = Changed::default();
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
    for part in parts {
        let (map, examined) = part?;
        out.examined += examined;
        changed.maps.push(map);
    }
    // 2. Complete link sets.
    for p in changed.maps.iter_mut().flat_map(|m| m.values_mut()) {
        let Some(attrs) = &p.attrs else { continue };
        let want = if attrs.is_dir() { 1 } else { attrs.nlink as usize };
        if p.ino != SUBVOL_ROOT_INO && p.links.len() != want {
            p.links.clear();
            refs_of(new, p, &mut buf)?;
        }
    }
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
    let mut skip = Vec::new();
    for (_, mut p) in changed.maps.into_iter().flatten() {
        flush(&mut p, &mut skip, &mut out.records)?;
    }
    Ok(Some(out))
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

/// Keys of one type of one inode.
fn one_inode(ino: u64, kind: u32) -> SearchKey {
    SearchKey {
        min_objectid: ino,
        max_objectid: ino,
        min_type: kind,
        max_type: kind,
        max_offset: u64::MAX,
        max_transid: u64::MAX,
        ..SearchKey::default()
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
        let d = item.data;
        // struct btrfs_dir_item: location key (objectid u64, type u8,
        // offset u64), transid u64, data_len u16, name_len u16, type u8.
        if d.len() < 30 {
            return Err(TreeError::Malformed("dir index", dir_ino));
        }
        let (child, kind) = (le64(d, 0), d[8]);
        let n = le16(d, 27);
        let name = d.get(30..30 + n).ok_or(TreeError::Malformed("dir index", dir_ino))?;
        if kind != ROOT_ITEM && child <= LAST_FREE_OBJECTID {
            // BTRFS_FT_DIR is 2.
            out.push((name.to_vec(), child, d[29] == 2));
        }
        Ok(true)
    })?;
    Ok(out)
}
