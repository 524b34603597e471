//! Rebuilding paths from (parent inode, name) links.
//!
//! Only directories can be parents, so a manifest's directory section is
//! enough to name every entry. Each directory's path is built once, from
//! its parent's cached path, so naming an entry costs one hash lookup and a
//! copy: O(1) amortised, never a scan (the `zfs diff` lesson).

use super::manifest::{ManifestError, ManifestReader};
use crate::sys::Timestamp;
use rustc_hash::{FxHashMap, FxHashSet};
use std::io::{Read, Seek};

/// The directories of one manifest: inode to (parent, name), and each
/// one's size and ctime (which change whenever it gains or loses an entry;
/// unlike the mtime, the ctime cannot be set back).
#[derive(Clone, Default)]
pub struct DirTable {
    nodes: FxHashMap<u64, (u64, u32, u32)>,
    generations: FxHashMap<u64, u64>,
    stamps: FxHashMap<u64, (u64, Timestamp)>,
    names: Vec<u8>,
    root: u64,
}

impl DirTable {
    /// An empty table for a tree whose root directory is `root`.
    pub fn with_root(root: u64) -> DirTable {
        DirTable {
            root,
            ..DirTable::default()
        }
    }

    /// Reads the directory section of a manifest.
    pub fn load<R: Read + Seek>(rd: &mut ManifestReader<R>) -> Result<DirTable, ManifestError> {
        let mut t = DirTable::with_root(rd.header().root_ino);
        let mut r = super::record::Record::default();
        while rd.read_dir(&mut r)? {
            t.insert(&r)?;
        }
        Ok(t)
    }

    /// Adds (or replaces) a directory record.
    pub fn insert(&mut self, r: &super::record::Record) -> Result<(), ManifestError> {
        let off = u32::try_from(self.names.len())
            .map_err(|_| ManifestError::Header("directory names exceed 4 GiB".into()))?;
        self.names.extend_from_slice(&r.name);
        self.nodes.insert(r.ino, (r.parent, off, r.name.len() as u32));
        self.stamps.insert(r.ino, (r.size, r.ctime));
        if r.generation != 0 {
            self.generations.insert(r.ino, r.generation);
        } else {
            self.generations.remove(&r.ino);
        }
        Ok(())
    }

    /// Removes directory `ino` if it is of generation `generation` (a
    /// tombstone of another inode with the same number leaves it).
    pub fn remove(&mut self, ino: u64, generation: u64) {
        if self.nodes.contains_key(&ino) && self.generation(ino) == generation {
            self.remove_ino(ino);
        }
    }

    /// Removes directory `ino`, whatever its generation.
    pub fn remove_ino(&mut self, ino: u64) {
        self.nodes.remove(&ino);
        self.generations.remove(&ino);
        self.stamps.remove(&ino);
    }

    /// The size and ctime of directory `ino`.
    pub fn stamp(&self, ino: u64) -> Option<(u64, Timestamp)> {
        self.stamps.get(&ino).copied()
    }

    /// The parent and name of a directory.
    pub fn get(&self, ino: u64) -> Option<(u64, &[u8])> {
        self.nodes
            .get(&ino)
            .map(|&(p, off, len)| (p, &self.names[off as usize..(off + len) as usize]))
    }

    /// The path of directory `ino` relative to the root (empty for the
    /// root itself), climbing this table alone; `None` for a directory it
    /// does not reach the root from. [`Resolver::dir_path`] caches what it
    /// builds, for the many lookups of a diff; this is for a few.
    pub fn path(&self, ino: u64) -> Option<Vec<u8>> {
        let mut names = Vec::new();
        let mut d = ino;
        while d != self.root {
            let (parent, name) = self.get(d)?;
            // A loop in a damaged table.
            if names.len() >= MAX_DEPTH.min(self.len()) {
                return None;
            }
            names.push(name);
            d = parent;
        }
        names.reverse();
        Some(names.join(&b'/'))
    }

    /// The generation of a directory (0 when unknown).
    pub fn generation(&self, ino: u64) -> u64 {
        self.generations.get(&ino).copied().unwrap_or(0)
    }

    /// The root directory's inode.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Number of directories.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Which tree a path is resolved in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// The previous point in time.
    Old,
    /// The new point in time.
    New,
}

/// A link whose parent chain does not reach the root: the manifests are
/// inconsistent, and no diff is produced from them.
#[derive(Debug, thiserror::Error)]
#[error("directory inode {0} is missing from the manifest or its parents form a cycle")]
pub struct OrphanError(pub u64);

/// Cached directory paths for one namespace, dropped wholesale when they
/// grow past a limit (they are rebuilt from the tables on demand).
#[derive(Default)]
struct Cache {
    spans: FxHashMap<u64, (u32, u32)>,
    bytes: Vec<u8>,
}

const CACHE_LIMIT: usize = 32 << 20;
const MAX_DEPTH: usize = 1 << 16;

/// Names entries in the old and new trees, relative to the root.
pub struct Resolver {
    /// The old manifest's directories.
    pub old: DirTable,
    /// The new manifest's directories.
    pub new: DirTable,
    /// Directory inode numbers in both tables that belong to different
    /// inodes (another generation): links under them are not the same.
    reused: FxHashSet<u64>,
    caches: [Cache; 2],
    chain: Vec<u64>,
}

impl Resolver {
    /// A resolver over two manifests' directory tables.
    pub fn new(old: DirTable, new: DirTable) -> Self {
        let reused = old
            .generations
            .iter()
            .filter(|&(ino, &g)| new.nodes.contains_key(ino) && new.generation(*ino) != g)
            .map(|(&ino, _)| ino)
            .collect();
        Resolver {
            old,
            new,
            reused,
            caches: Default::default(),
            chain: Vec::new(),
        }
    }

    fn lookup(&self, ns: Namespace, ino: u64) -> Option<(u64, &[u8])> {
        match ns {
            Namespace::Old => self.old.get(ino),
            Namespace::New => self.new.get(ino),
        }
    }

    /// Treats every directory inode number in both tables as the same
    /// directory (generations of different sources cannot be compared).
    pub fn ignore_generations(&mut self) {
        self.reused.clear();
    }

    /// Whether a link under `parent` in the old tree and one under `parent`
    /// in the new tree are under the same directory.
    pub fn same_parent(&self, parent: u64) -> bool {
        self.reused.is_empty() || !self.reused.contains(&parent)
    }

    fn root(&self, ns: Namespace) -> u64 {
        match ns {
            Namespace::Old => self.old.root,
            Namespace::New => self.new.root,
        }
    }

    /// Appends the path of directory `dir` (relative to the root, empty for
    /// the root itself) to `out`.
    pub fn dir_path(&mut self, ns: Namespace, dir: u64, out: &mut Vec<u8>) -> Result<(), OrphanError> {
        let idx = ns as usize;
        let root = self.root(ns);
        if dir == root {
            return Ok(());
        }
        if self.caches[idx].bytes.len() > CACHE_LIMIT {
            self.caches[idx] = Cache::default();
        }
        if let Some(&(off, len)) = self.caches[idx].spans.get(&dir) {
            out.extend_from_slice(&self.caches[idx].bytes[off as usize..(off + len) as usize]);
            return Ok(());
        }
        // Climb to the root or a cached ancestor, then build downwards,
        // caching every directory on the way.
        let mut chain = std::mem::take(&mut self.chain);
        chain.clear();
        let mut cur = dir;
        let base = loop {
            if cur == root {
                break None;
            }
            if let Some(&span) = self.caches[idx].spans.get(&cur) {
                break Some(span);
            }
            let Some((parent, _)) = self.lookup(ns, cur) else {
                return Err(OrphanError(cur));
            };
            chain.push(cur);
            if chain.len() > MAX_DEPTH.min(self.old.len() + self.new.len() + 1) {
                return Err(OrphanError(dir));
            }
            cur = parent;
        };
        let (mut off, mut len) = base.unwrap_or((0, 0));
        for &ino in chain.iter().rev() {
            let (_, name) = self.lookup(ns, ino).expect("looked up above");
            let name = name.to_vec();
            let c = &mut self.caches[idx];
            let start = c.bytes.len();
            c.bytes.extend_from_within(off as usize..(off + len) as usize);
            if len > 0 {
                c.bytes.push(b'/');
            }
            c.bytes.extend_from_slice(&name);
            off = start as u32;
            len = (c.bytes.len() - start) as u32;
            c.spans.insert(ino, (off, len));
        }
        self.chain = chain;
        let c = &self.caches[idx];
        out.extend_from_slice(&c.bytes[off as usize..(off + len) as usize]);
        Ok(())
    }

    /// Appends the path of the link (`parent`, `name`) relative to the root.
    pub fn link_path(&mut self, ns: Namespace, parent: u64, name: &[u8], out: &mut Vec<u8>) -> Result<(), OrphanError> {
        if parent == 0 {
            return Ok(());
        }
        let start = out.len();
        self.dir_path(ns, parent, out)?;
        if out.len() > start {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        Ok(())
    }
}

/// Levels below the root of a relative path (0 for the root itself).
pub fn depth(rel: &[u8]) -> u32 {
    if rel.is_empty() {
        0
    } else {
        1 + rel.iter().filter(|&&b| b == b'/').count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapdiff::record::Record;

    fn dir(ino: u64, parent: u64, name: &[u8]) -> Record {
        Record {
            ino,
            parent,
            name: name.to_vec(),
            mode: libc::S_IFDIR | 0o755,
            ..Record::default()
        }
    }

    #[test]
    fn a_directory_path_is_built_from_the_table_alone_and_a_loop_has_none() {
        let mut t = DirTable::with_root(256);
        for r in [dir(300, 256, b"a"), dir(301, 300, b"b c"), dir(302, 301, b"\xff")] {
            t.insert(&r).unwrap();
        }
        assert_eq!(t.path(302).as_deref(), Some(&b"a/b c/\xff"[..]));
        assert_eq!(t.path(300).as_deref(), Some(&b"a"[..]));
        assert_eq!(t.path(256).as_deref(), Some(&b""[..]));
        assert_eq!(t.path(999), None);
        // 400 and 401 each other's parent: never reaches the root.
        t.insert(&dir(400, 401, b"x")).unwrap();
        t.insert(&dir(401, 400, b"y")).unwrap();
        assert_eq!(t.path(400), None);
    }
}
