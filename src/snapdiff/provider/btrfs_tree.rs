//! Reading a btrfs snapshot's metadata straight from its tree
//! (`BTRFS_IOC_TREE_SEARCH_V2`): every inode item and its back references
//! become manifest records, without opening, stat'ing or caching a single
//! inode through the VFS. On a fresh snapshot that is several times faster
//! than a walk, and deleting the snapshot later has no caches to tear down.

use crate::snapdiff::build::{ManifestBuilder, btime_generation};
use crate::snapdiff::record::Record;
use crate::sys::Timestamp;
use crate::sys::btrfs::{SEARCH_HEADER, SUBVOL_ROOT_INO, SearchBuf, SearchKey, tree_search};
use std::io;
use std::os::fd::BorrowedFd;

pub(super) const INODE_ITEM: u32 = 1;
pub(super) const INODE_REF: u32 = 12;
pub(super) const INODE_EXTREF: u32 = 13;
pub(super) const DIR_INDEX: u32 = 96;
/// `BTRFS_XATTR_ITEM_KEY`: an inode's extended attributes, one item per
/// name hash, each holding one `btrfs_dir_item` per name with that hash.
const XATTR_ITEM: u32 = 24;
pub(super) const LAST_FREE_OBJECTID: u64 = u64::MAX - 255;
const INODE_ITEM_LEN: usize = 160;
/// Results per search of a whole tree.
pub(super) const BUFFER: usize = 1 << 20;
/// Results per search of one inode's or one directory's items.
pub(super) const SMALL_BUFFER: usize = 64 << 10;

/// Why the tree could not be read into records.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The search failed (`EPERM` without `CAP_SYS_ADMIN`).
    #[error("btrfs tree search: {0}")]
    Io(#[from] io::Error),
    /// An item is not what its type says.
    #[error("btrfs tree search: malformed {0} item of inode {1}")]
    Malformed(&'static str, u64),
    /// Adding a record failed.
    #[error("{0}")]
    Build(#[from] crate::snapdiff::manifest::ManifestError),
}

pub(super) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(super) fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes")) as usize
}
fn time(b: &[u8], at: usize) -> Timestamp {
    Timestamp {
        sec: le64(b, at) as i64,
        nsec: le32(b, at + 8).min(999_999_999),
    }
}

/// One item of a search result.
pub(super) struct Item<'a> {
    /// The key's objectid (an inode number in a subvolume tree).
    pub objectid: u64,
    /// The key's type.
    pub kind: u32,
    /// The key's offset.
    pub offset: u64,
    /// The item's bytes.
    pub data: &'a [u8],
}

/// Keys of one type of one inode.
pub(super) fn one_inode(ino: u64, kind: u32) -> SearchKey {
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

/// One `struct btrfs_dir_item` (a directory entry, or an xattr): location
/// key (objectid u64, type u8, offset u64), transid u64, data_len u16,
/// name_len u16, type u8, then the name and the data.
pub(super) struct DirItem<'a> {
    /// The location key's objectid: the entry's inode (or subvolume).
    pub location: u64,
    /// The location key's type (`ROOT_ITEM` for a subvolume).
    pub location_type: u8,
    /// The entry's file type (`BTRFS_FT_DIR` is 2).
    pub file_type: u8,
    /// The name.
    pub name: &'a [u8],
    /// The data: an xattr's value; empty for a directory entry.
    pub data: &'a [u8],
}

/// The dir item at the start of `d` and the bytes after it (an xattr item
/// packs one per name with the same hash); `None` when it does not fit.
pub(super) fn dir_item(d: &[u8]) -> Option<(DirItem<'_>, &[u8])> {
    let head = d.get(..30)?;
    let (data_len, name_len) = (le16(head, 25), le16(head, 27));
    let end = 30 + name_len + data_len;
    let item = DirItem {
        location: le64(head, 0),
        location_type: head[8],
        file_type: head[29],
        name: d.get(30..30 + name_len)?,
        data: d.get(30 + name_len..end)?,
    };
    Some((item, &d[end..]))
}

/// An inode's extended attributes: (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The extended attributes of inode `ino` in the subvolume holding `dir`,
/// as (name, value) pairs in key order (by name hash), read from its
/// xattr items; `None` when the tree holds no such inode. No path is
/// looked up, so nothing enters the dentry cache of a snapshot that a
/// later run deletes (pruning 200,000 cached entries took 0.36
/// CPU-seconds of that deletion, docs/benchmarks.md). Every value is
/// inline in its item.
pub fn xattrs(dir: BorrowedFd<'_>, ino: u64, buf: &mut SearchBuf) -> Result<Option<Xattrs>, TreeError> {
    // From the inode item (that it exists) to the xattr items: the back
    // references between them are few and in the same leaf.
    let key = SearchKey {
        max_type: XATTR_ITEM,
        ..one_inode(ino, INODE_ITEM)
    };
    let (mut found, mut out) = (false, Vec::new());
    search(dir, key, buf, |item| {
        found |= item.kind == INODE_ITEM;
        if item.kind != XATTR_ITEM {
            return Ok(true);
        }
        // One dir item per name with this hash.
        let mut d = item.data;
        while !d.is_empty() {
            let (x, rest) = dir_item(d).ok_or(TreeError::Malformed("xattr", ino))?;
            out.push((x.name.to_vec(), x.data.to_vec()));
            d = rest;
        }
        Ok(true)
    })?;
    Ok(found.then_some(out))
}

/// Runs a tree search from `key` to its end, handing every item to `each`
/// in key order; `each` returns `false` to stop early.
pub(super) fn search(
    dir: BorrowedFd<'_>,
    key: SearchKey,
    buf: &mut SearchBuf,
    each: impl FnMut(&Item<'_>) -> Result<bool, TreeError>,
) -> Result<(), TreeError> {
    search_by(dir, key, buf, u32::MAX, each)
}

/// [`search`], asking the kernel for at most `per_call` items at a time.
/// The kernel passes over every item to the end of the leaf that holds
/// the range's last key, unless it has found `per_call` items: a search
/// of one inode's few items that says how many it expects ends where
/// they do, instead of at the end of the leaf (a third of the time of a
/// read guided by the event journal went to those passes).
pub(super) fn search_by(
    dir: BorrowedFd<'_>,
    mut key: SearchKey,
    buf: &mut SearchBuf,
    per_call: u32,
    mut each: impl FnMut(&Item<'_>) -> Result<bool, TreeError>,
) -> Result<(), TreeError> {
    let end = (key.max_objectid, key.max_type, key.max_offset);
    loop {
        key.nr_items = per_call;
        let (n, buf) = tree_search(dir, &mut key, buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut at = 0;
        let mut last = (0u64, 0u32, 0u64);
        for _ in 0..n {
            let h = buf
                .get(at..at + SEARCH_HEADER)
                .ok_or(TreeError::Malformed("search header", 0))?;
            let objectid = u64::from_ne_bytes(h[8..16].try_into().expect("8 bytes"));
            let offset = u64::from_ne_bytes(h[16..24].try_into().expect("8 bytes"));
            let kind = u32::from_ne_bytes(h[24..28].try_into().expect("4 bytes"));
            let len = u32::from_ne_bytes(h[28..32].try_into().expect("4 bytes")) as usize;
            let data = buf
                .get(at + SEARCH_HEADER..at + SEARCH_HEADER + len)
                .ok_or(TreeError::Malformed("search result", objectid))?;
            at += SEARCH_HEADER + len;
            last = (objectid, kind, offset);
            if !each(&Item {
                objectid,
                kind,
                offset,
                data,
            })? {
                return Ok(());
            }
        }
        // Continue after the last key returned.
        let (o, t, off) = last;
        if last >= end {
            return Ok(());
        }
        (key.min_objectid, key.min_type, key.min_offset) = match (off.checked_add(1), t.checked_add(1)) {
            (Some(off), _) => (o, t, off),
            (None, Some(t)) => (o, t, 0),
            (None, None) => match o.checked_add(1) {
                Some(o) => (o, 0, 0),
                None => return Ok(()),
            },
        };
        if key.min_objectid > key.max_objectid {
            return Ok(());
        }
    }
}

/// The whole key range of a subvolume's inodes.
pub(super) fn all_inodes() -> SearchKey {
    SearchKey {
        min_objectid: SUBVOL_ROOT_INO,
        max_objectid: LAST_FREE_OBJECTID,
        max_offset: u64::MAX,
        max_transid: u64::MAX,
        max_type: u32::MAX,
        ..SearchKey::default()
    }
}

/// The inode being gathered: its attributes and its links.
#[derive(Default)]
pub(super) struct Pending {
    pub ino: u64,
    pub attrs: Option<Record>,
    pub links: Vec<(u64, Vec<u8>)>,
}

impl Pending {
    /// How many links its item says it has: a directory one (its link
    /// count counts its subdirectories; the root's is to itself), a file
    /// its link count. `None` before its item came in.
    pub fn links_wanted(&self) -> Option<usize> {
        self.attrs
            .as_ref()
            .map(|a| if a.is_dir() { 1 } else { a.nlink as usize })
    }

    /// Whether its item and every link it has came in.
    pub fn complete(&self) -> bool {
        self.links_wanted().is_some_and(|want| self.links.len() >= want)
    }

    /// Takes in one item of inode `ino` (attributes or back references).
    pub fn add(&mut self, item: &Item<'_>) -> Result<(), TreeError> {
        let objectid = item.objectid;
        match item.kind {
            INODE_ITEM => self.attrs = Some(inode_item(objectid, item.data)?),
            INODE_REF => {
                let d = item.data;
                let mut p = 0;
                while p < d.len() {
                    let n = d
                        .get(p + 8..p + 10)
                        .map(|b| le16(b, 0))
                        .ok_or(TreeError::Malformed("inode ref", objectid))?;
                    let name = d
                        .get(p + 10..p + 10 + n)
                        .ok_or(TreeError::Malformed("inode ref", objectid))?;
                    self.links.push((item.offset, name.to_vec()));
                    p += 10 + n;
                }
            }
            INODE_EXTREF => {
                let d = item.data;
                let mut p = 0;
                while p < d.len() {
                    let hdr = d.get(p..p + 18).ok_or(TreeError::Malformed("inode extref", objectid))?;
                    let (parent, n) = (le64(hdr, 0), le16(hdr, 16));
                    let name = d
                        .get(p + 18..p + 18 + n)
                        .ok_or(TreeError::Malformed("inode extref", objectid))?;
                    self.links.push((parent, name.to_vec()));
                    p += 18 + n;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Where gathered records go.
pub(super) trait Sink {
    fn put(&mut self, r: &Record) -> Result<(), TreeError>;
}

impl Sink for ManifestBuilder {
    fn put(&mut self, r: &Record) -> Result<(), TreeError> {
        Ok(self.push(r)?)
    }
}

impl Sink for Vec<Record> {
    fn put(&mut self, r: &Record) -> Result<(), TreeError> {
        self.push(r.clone());
        Ok(())
    }
}

/// Reads every inode of the subvolume holding `dir` into `builder`, one
/// record per link, with the birth time (otime) packed as the generation
/// (as a walk with `GenerationSource::Btime` does). The `.snapshots`
/// directory at the root is left out, as walks skip it.
pub fn read_tree(dir: BorrowedFd<'_>, builder: &mut ManifestBuilder) -> Result<u64, TreeError> {
    let mut buf = SearchBuf::new(BUFFER);
    let mut cur = Pending::default();
    let mut skip = Vec::new();
    let mut count = 0u64;
    search(dir, all_inodes(), &mut buf, |item| {
        if item.objectid != cur.ino {
            count += flush(&mut cur, &mut skip, builder)?;
            cur.ino = item.objectid;
        }
        cur.add(item)?;
        Ok(true)
    })?;
    count += flush(&mut cur, &mut skip, builder)?;
    Ok(count)
}

/// The transid stamped on an inode item by the last transaction that
/// wrote it.
pub(super) fn inode_transid(data: &[u8]) -> Option<u64> {
    (data.len() >= INODE_ITEM_LEN).then(|| le64(data, 8))
}

fn inode_item(ino: u64, b: &[u8]) -> Result<Record, TreeError> {
    if b.len() < INODE_ITEM_LEN {
        return Err(TreeError::Malformed("inode", ino));
    }
    let otime = time(b, 148);
    Ok(Record {
        ino,
        generation: btime_generation(otime),
        parent: 0,
        name: Vec::new(),
        mode: le32(b, 52),
        size: le64(b, 16),
        mtime: time(b, 136),
        ctime: time(b, 124),
        uid: le32(b, 44),
        gid: le32(b, 48),
        nlink: u64::from(le32(b, 40)),
    })
}

/// Emits one record per link of the gathered inode, in link order; returns
/// how many. Links under a skipped directory (`.snapshots` at the root, and
/// what lies below it) are left out.
pub(super) fn flush(cur: &mut Pending, skip: &mut Vec<u64>, out: &mut impl Sink) -> Result<u64, TreeError> {
    let Some(mut r) = cur.attrs.take() else {
        cur.links.clear();
        return Ok(0);
    };
    let mut links = std::mem::take(&mut cur.links);
    if r.ino == SUBVOL_ROOT_INO {
        // The root's only reference is to itself ("..").
        out.put(&r)?;
        return Ok(1);
    }
    links.sort_unstable();
    let mut n = 0;
    for (parent, name) in links {
        if skip.contains(&parent) || (parent == SUBVOL_ROOT_INO && name == b".snapshots" && r.is_dir()) {
            if r.is_dir() {
                skip.push(r.ino);
            }
            continue;
        }
        r.parent = parent;
        r.name = name;
        out.put(&r)?;
        n += 1;
    }
    Ok(n)
}
