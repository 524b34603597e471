//! A fileset's manifest at one snapshot, read as one: a base and the
//! deltas written since, merged newest-wins by (inode, generation).
//!
//! A delta holds the complete new link set of every inode that changed and
//! a tombstone for every inode that is gone, so the merged view of a key is
//! simply the newest file that mentions it. Directory tables are rebuilt
//! the same way: the base's directories, then each delta's tombstones and
//! directory records in turn.

use super::manifest::{Header, Kind, ManifestError, ManifestReader, Section};
use super::paths::DirTable;
use super::record::Record;
use std::fs::File;
use std::io::{BufReader, Read, Seek};

/// A stream of entry records in manifest order: strictly increasing by
/// (inode, generation, parent, name).
pub trait Entries {
    /// Reads the next record into `out`; `false` after the last one.
    fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError>;
    /// Lets the next records start at `key` or the block holding it, for
    /// readers that can jump; the caller still skips smaller keys.
    fn skip_to(&mut self, _key: (u64, u64)) -> Result<(), ManifestError> {
        Ok(())
    }
}

impl<R: Read + Seek> Entries for ManifestReader<R> {
    fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        ManifestReader::read_entry(self, out)
    }

    fn skip_to(&mut self, key: (u64, u64)) -> Result<(), ManifestError> {
        ManifestReader::skip_to(self, key)
    }
}

/// One file of the chain with its next unread record and tombstone.
struct Member<R: Read + Seek> {
    rd: ManifestReader<R>,
    head: Record,
    has_head: bool,
    tomb: Option<(u64, u64)>,
}

impl<R: Read + Seek> Member<R> {
    fn new(rd: ManifestReader<R>) -> Result<Self, ManifestError> {
        let mut m = Member {
            rd,
            head: Record::default(),
            has_head: false,
            tomb: None,
        };
        m.has_head = m.rd.read_entry(&mut m.head)?;
        m.tomb = m.rd.next_tombstone()?;
        Ok(m)
    }

    fn min_key(&self) -> Option<(u64, u64)> {
        let a = self.has_head.then(|| self.head.key());
        match (a, self.tomb) {
            (Some(a), Some(t)) => Some(a.min(t)),
            (a, t) => a.or(t),
        }
    }

    /// Drops everything of `key`; with `into`, moves its records there.
    fn take(&mut self, key: (u64, u64), mut into: Option<&mut Vec<Record>>) -> Result<(), ManifestError> {
        while self.has_head && self.head.key() == key {
            if let Some(v) = into.as_deref_mut() {
                v.push(self.head.clone());
            }
            self.has_head = self.rd.read_entry(&mut self.head)?;
        }
        if self.tomb == Some(key) {
            self.tomb = self.rd.next_tombstone()?;
        }
        Ok(())
    }

    fn skip_to(&mut self, key: (u64, u64)) -> Result<(), ManifestError> {
        if self.has_head && self.head.key() < key {
            self.rd.skip_to(key)?;
            loop {
                self.has_head = self.rd.read_entry(&mut self.head)?;
                if !self.has_head || self.head.key() >= key {
                    break;
                }
            }
        }
        while self.tomb.is_some_and(|t| t < key) {
            self.tomb = self.rd.next_tombstone()?;
        }
        Ok(())
    }
}

/// The merged view of a base and its deltas (oldest first).
pub struct View<R: Read + Seek = BufReader<File>> {
    /// The newest file's header, as a base (a set file corrects it).
    pub(super) header: Header,
    /// Entry records of the merged view (a set file says; a base alone
    /// counts its own).
    pub(super) entries: u64,
    members: Vec<Member<R>>,
    group: Vec<Record>,
    at: usize,
}

impl<R: Read + Seek> View<R> {
    /// Merges `base` with `deltas`, oldest first. The view's header is the
    /// newest file's, as a base.
    pub fn new(base: ManifestReader<R>, deltas: Vec<ManifestReader<R>>) -> Result<Self, ManifestError> {
        if base.header().kind != Kind::Base {
            return Err(ManifestError::Header(
                "the first file of a manifest set is not a base".into(),
            ));
        }
        let mut header = base.header().clone();
        for d in &deltas {
            let h = d.header();
            if h.kind != Kind::Delta {
                return Err(ManifestError::Header(format!("{} is not a delta", h.id)));
            }
            if h.root_ino != header.root_ino || h.generation != header.generation {
                return Err(ManifestError::Header(format!(
                    "delta {} is of another tree than its base (root inode {}, generations {})",
                    h.id, h.root_ino, h.generation
                )));
            }
            header = Header {
                kind: Kind::Base,
                ..h.clone()
            };
        }
        let entries = base.counts().entries;
        let members = std::iter::once(base)
            .chain(deltas)
            .map(Member::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(View {
            header,
            entries,
            members,
            group: Vec::new(),
            at: 0,
        })
    }

    /// About the highest inode number in the view (from the files'
    /// indexes; `None` if none has one).
    pub fn max_ino(&self) -> Option<u64> {
        self.members.iter().filter_map(|m| m.rd.last_block_ino()).max()
    }

    /// Directory records in the view's files: its directories, and at
    /// most as many again as its deltas changed.
    pub fn dir_records(&self) -> u64 {
        self.members.iter().map(|m| m.rd.counts().dirs).sum()
    }

    /// The newest file's header (kind base: it describes the whole view).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Entry records of the merged view.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The format version of the base.
    pub fn base_version(&self) -> u32 {
        self.members[0].rd.version()
    }

    /// Files in the view (the base and its deltas; at least one).
    pub fn files(&self) -> usize {
        self.members.len()
    }

    /// The directory table of the merged view: the base's directories, then
    /// each delta's removals and directory records in turn. Call it before
    /// reading entries (it starts the tombstones over).
    pub fn dir_table(&mut self) -> Result<DirTable, ManifestError> {
        let root = self.header.root_ino;
        let mut t = DirTable::with_root(root);
        let mut r = Record::default();
        for (i, m) in self.members.iter_mut().enumerate() {
            m.rd.rewind(Section::Dirs);
            if i > 0 {
                m.rd.rewind(Section::Tombstones);
                while let Some((ino, generation)) = m.rd.next_tombstone()? {
                    t.remove(ino, generation);
                }
                m.rd.rewind(Section::Tombstones);
                m.tomb = m.rd.next_tombstone()?;
            }
            while m.rd.read_dir(&mut r)? {
                t.insert(&r)?;
            }
        }
        Ok(t)
    }

    /// Fills the group buffer with the next key's merged records; `false`
    /// at the end.
    fn next_group(&mut self) -> Result<bool, ManifestError> {
        self.group.clear();
        self.at = 0;
        loop {
            let Some(key) = self.members.iter().filter_map(Member::min_key).min() else {
                return Ok(false);
            };
            // The newest file that mentions the key decides it.
            let winner = self
                .members
                .iter()
                .rposition(|m| m.min_key() == Some(key))
                .expect("some member holds the minimum");
            let is_tomb = self.members[winner].tomb == Some(key)
                && !(self.members[winner].has_head && self.members[winner].head.key() == key);
            for (i, m) in self.members.iter_mut().enumerate() {
                let into = (i == winner && !is_tomb).then_some(&mut self.group);
                m.take(key, into)?;
            }
            if !self.group.is_empty() {
                return Ok(true);
            }
        }
    }
}

impl<R: Read + Seek> Entries for View<R> {
    fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        if self.at == self.group.len() && !self.next_group()? {
            return Ok(false);
        }
        out.clone_from(&self.group[self.at]);
        self.at += 1;
        Ok(true)
    }

    fn skip_to(&mut self, key: (u64, u64)) -> Result<(), ManifestError> {
        if self.group.get(self.at).is_some_and(|r| r.key() >= key) {
            return Ok(());
        }
        self.group.clear();
        self.at = 0;
        for m in &mut self.members {
            m.skip_to(key)?;
        }
        Ok(())
    }
}

/// Only the records of some inodes of another stream: the old side of a
/// diff that reads what changed, which jumps over everything else.
pub struct OnlyInodes<E: Entries> {
    inner: E,
    inos: Vec<u64>,
    at: usize,
    cur: Record,
    has: bool,
}

impl<E: Entries> OnlyInodes<E> {
    /// The records of `inner` whose inode is in `inos` (ascending).
    pub fn new(inner: E, inos: Vec<u64>) -> Self {
        OnlyInodes {
            inner,
            inos,
            at: 0,
            cur: Record::default(),
            has: false,
        }
    }
}

impl<E: Entries> Entries for OnlyInodes<E> {
    fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        loop {
            let Some(&want) = self.inos.get(self.at) else {
                return Ok(false);
            };
            if !self.has {
                if !self.inner.read_entry(&mut self.cur)? {
                    return Ok(false);
                }
                self.has = true;
            }
            if self.cur.ino == want {
                out.clone_from(&self.cur);
                self.has = false;
                return Ok(true);
            }
            if self.cur.ino > want {
                self.at += self.inos[self.at..].partition_point(|&i| i < self.cur.ino);
                continue;
            }
            // Below the next wanted inode: jump towards it.
            self.inner.skip_to((want, 0))?;
            self.has = false;
        }
    }
}

/// Records held in memory, in manifest order.
pub struct InMemory(pub std::vec::IntoIter<Record>);

impl Entries for InMemory {
    fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        match self.0.next() {
            Some(r) => {
                *out = r;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
