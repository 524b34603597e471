//! The diff engine against a model filesystem: random sequences of
//! creates, writes, chmods, renames (onto existing names, swaps, into and
//! out of moved directories), deletes, hard links and inode reuse; after
//! each round, applying ferry's diff to the previous state, by the contract
//! in docs/snapdiff.md, must give the new state exactly. Once with every
//! sort in memory, once on a tree big enough that the sorts spill to disk.

use ferry::snapdiff::build::ManifestBuilder;
use ferry::snapdiff::diff::{Change, ChangeState, DiffOptions, Listing, diff};
use ferry::snapdiff::extsort::MIN_BUDGET;
use ferry::snapdiff::manifest::{Header, Kind, ManifestReader, ManifestWriter};
use ferry::snapdiff::record::Record;
use ferry::snapdiff::view::{Entries, View};
use ferry::sys::Timestamp;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Cursor;

const ROOT: u64 = 256;
const DIR: u32 = libc::S_IFDIR;
const REG: u32 = libc::S_IFREG;

#[derive(Clone, Debug)]
struct Inode {
    generation: u64,
    mode: u32,
    size: u64,
    mtime: i64,
    ctime: i64,
    uid: u32,
}

/// A filesystem as inodes and links.
#[derive(Clone, Debug)]
struct Fs {
    inodes: BTreeMap<u64, Inode>,
    links: BTreeMap<(u64, Vec<u8>), u64>,
    free: Vec<u64>,
    next: u64,
    clock: i64,
}

#[derive(Clone, Debug)]
enum Op {
    Create { dir: usize, name: u8, is_dir: bool },
    Write { entry: usize },
    Chmod { entry: usize },
    Rename { entry: usize, dir: usize, name: u8 },
    Delete { entry: usize },
    Link { entry: usize, dir: usize, name: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..64usize;
    let n = 0..5u8;
    prop_oneof![
        3 => (i.clone(), n.clone(), any::<bool>()).prop_map(|(dir, name, is_dir)| Op::Create { dir, name, is_dir }),
        2 => i.clone().prop_map(|entry| Op::Write { entry }),
        1 => i.clone().prop_map(|entry| Op::Chmod { entry }),
        4 => (i.clone(), i.clone(), n.clone()).prop_map(|(entry, dir, name)| Op::Rename { entry, dir, name }),
        2 => i.clone().prop_map(|entry| Op::Delete { entry }),
        1 => (i.clone(), i, n).prop_map(|(entry, dir, name)| Op::Link { entry, dir, name }),
    ]
}

fn name(n: u8) -> Vec<u8> {
    // Short names collide often; one is not UTF-8 and one holds a newline.
    [&b"a"[..], b"b", b"c\n", b"\xff", b"d e"][n as usize].to_vec()
}

impl Fs {
    fn new() -> Fs {
        let mut fs = Fs {
            inodes: BTreeMap::new(),
            links: BTreeMap::new(),
            free: Vec::new(),
            next: ROOT + 1,
            clock: 1000,
        };
        fs.inodes.insert(
            ROOT,
            Inode {
                generation: 1,
                mode: DIR | 0o755,
                size: 0,
                mtime: 1000,
                ctime: 1000,
                uid: 0,
            },
        );
        fs
    }

    /// A tree that outgrows the smallest sort budget in every sort (see
    /// `spilling_changes_nothing`): four of the five names in each
    /// directory, directories three levels deep, and in each third-level
    /// directory two more (empty) directories and two files: 212
    /// directories and 128 files under the root. Made depth first, so the
    /// first 64 directories and entries, which the operations pick from,
    /// mix levels, full directories and empty ones.
    fn seed(&mut self) {
        fn fill(fs: &mut Fs, dir: u64, depth: usize) {
            for n in 0..4u8 {
                let is_dir = depth < 3 || n < 2;
                fs.next += 1;
                let ino = fs.next;
                fs.add(dir, name(n), ino, 1, is_dir);
                if is_dir && depth < 3 {
                    fill(fs, ino, depth + 1);
                }
            }
        }
        fill(self, ROOT, 0);
    }

    /// Makes inode `ino` and links it as `name` in `dir`.
    fn add(&mut self, dir: u64, name: Vec<u8>, ino: u64, generation: u64, is_dir: bool) {
        let t = self.tick();
        self.inodes.insert(
            ino,
            Inode {
                generation,
                mode: if is_dir { DIR | 0o755 } else { REG | 0o644 },
                size: 0,
                mtime: t,
                ctime: t,
                uid: 0,
            },
        );
        self.links.insert((dir, name), ino);
        self.touch_dir(dir);
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.inodes[&ino].mode & libc::S_IFMT == DIR
    }

    fn dirs(&self) -> Vec<u64> {
        self.inodes.keys().copied().filter(|&i| self.is_dir(i)).collect()
    }

    fn entries(&self) -> Vec<(u64, Vec<u8>)> {
        self.links.keys().cloned().collect()
    }

    fn touch_dir(&mut self, dir: u64) {
        let t = self.tick();
        let d = self.inodes.get_mut(&dir).unwrap();
        d.mtime = t;
        d.ctime = t;
    }

    fn children(&self, dir: u64) -> Vec<(u64, Vec<u8>)> {
        self.links.keys().filter(|(p, _)| *p == dir).cloned().collect()
    }

    fn parent_of_dir(&self, dir: u64) -> Option<u64> {
        self.links.iter().find(|(_, i)| **i == dir).map(|((p, _), _)| *p)
    }

    fn is_under(&self, mut dir: u64, ancestor: u64) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            match self.parent_of_dir(dir) {
                Some(p) => dir = p,
                None => return false,
            }
        }
    }

    fn nlink(&self, ino: u64) -> u64 {
        self.links.values().filter(|&&i| i == ino).count() as u64
    }

    fn unlink(&mut self, key: &(u64, Vec<u8>)) {
        let ino = self.links.remove(key).unwrap();
        self.touch_dir(key.0);
        if self.nlink(ino) == 0 {
            self.inodes.remove(&ino);
            self.free.push(ino);
        } else {
            let t = self.tick();
            self.inodes.get_mut(&ino).unwrap().ctime = t;
        }
    }

    fn remove_tree(&mut self, key: &(u64, Vec<u8>)) {
        let ino = self.links[key];
        if self.is_dir(ino) {
            for child in self.children(ino) {
                self.remove_tree(&child);
            }
        }
        self.unlink(key);
    }

    fn apply(&mut self, op: &Op) {
        let dirs = self.dirs();
        let entries = self.entries();
        match *op {
            Op::Create { dir, name: n, is_dir } => {
                let key = (dirs[dir % dirs.len()], name(n));
                if self.links.contains_key(&key) {
                    return;
                }
                // Reuse a freed inode number now and then, with a new generation.
                let (ino, generation) = match self.free.pop() {
                    Some(i) if dir % 2 == 0 => (i, self.clock as u64),
                    other => {
                        if let Some(i) = other {
                            self.free.push(i);
                        }
                        self.next += 1;
                        (self.next, 1)
                    }
                };
                self.add(key.0, key.1, ino, generation, is_dir);
            }
            Op::Write { entry } | Op::Chmod { entry } => {
                let Some(key) = entries.get(entry % entries.len().max(1)) else {
                    return;
                };
                let ino = self.links[key];
                let t = self.tick();
                let write = matches!(op, Op::Write { .. });
                let is_dir = self.is_dir(ino);
                let i = self.inodes.get_mut(&ino).unwrap();
                if write && !is_dir {
                    i.size += 7;
                    i.mtime = t;
                } else {
                    i.mode ^= 0o100;
                    i.uid += 1;
                }
                i.ctime = t;
            }
            Op::Rename { entry, dir, name: n } => {
                let Some(src) = entries.get(entry % entries.len().max(1)).cloned() else {
                    return;
                };
                let dst = (dirs[dir % dirs.len()], name(n));
                let ino = self.links[&src];
                if src == dst || self.links.get(&dst) == Some(&ino) {
                    return;
                }
                if self.is_dir(ino) && self.is_under(dst.0, ino) {
                    return;
                }
                if let Some(&victim) = self.links.get(&dst) {
                    // POSIX: a file replaces a file, a directory an empty directory.
                    match (self.is_dir(ino), self.is_dir(victim)) {
                        (false, false) => self.unlink(&dst),
                        (true, true) if self.children(victim).is_empty() => self.unlink(&dst),
                        _ => return,
                    }
                }
                self.links.remove(&src);
                self.links.insert(dst.clone(), ino);
                self.touch_dir(src.0);
                self.touch_dir(dst.0);
                let t = self.tick();
                self.inodes.get_mut(&ino).unwrap().ctime = t;
            }
            Op::Delete { entry } => {
                if let Some(key) = entries.get(entry % entries.len().max(1)).cloned() {
                    self.remove_tree(&key);
                }
            }
            Op::Link { entry, dir, name: n } => {
                let Some(src) = entries.get(entry % entries.len().max(1)) else {
                    return;
                };
                let ino = self.links[src];
                let dst = (dirs[dir % dirs.len()], name(n));
                if self.is_dir(ino) || self.links.contains_key(&dst) {
                    return;
                }
                self.links.insert(dst.clone(), ino);
                self.touch_dir(dst.0);
                let t = self.tick();
                self.inodes.get_mut(&ino).unwrap().ctime = t;
            }
        }
    }

    fn record(&self, ino: u64, parent: u64, name: Vec<u8>) -> Record {
        let i = &self.inodes[&ino];
        Record {
            ino,
            generation: i.generation,
            parent,
            name,
            mode: i.mode,
            size: i.size,
            mtime: Timestamp { sec: i.mtime, nsec: 0 },
            ctime: Timestamp { sec: i.ctime, nsec: 0 },
            uid: i.uid,
            gid: 0,
            nlink: if self.is_dir(ino) { 1 } else { self.nlink(ino) },
        }
    }

    /// The manifest, and the sorted runs its sorts spilled (directories,
    /// entries).
    fn manifest(&self, mem_limit: usize) -> (Vec<u8>, [usize; 2]) {
        let spill = tempfile::tempdir().unwrap();
        let mut b = ManifestBuilder::new(mem_limit, spill.path());
        b.push(&self.record(ROOT, 0, Vec::new())).unwrap();
        for ((p, n), &ino) in &self.links {
            b.push(&self.record(ino, *p, n.clone())).unwrap();
        }
        let spilled = b.spilled_runs();
        let header = Header {
            root: b"/fs".to_vec(),
            root_ino: ROOT,
            provider: "model".into(),
            snapshot: None,
            created: String::new(),
            created_unix: self.clock,
            generation: "inode".into(),
            kind: Kind::Base,
            otransid: None,
            journal: None,
            barrier: None,
            id: format!("m{}", self.clock),
        };
        (b.write(Vec::new(), &header).unwrap().0, spilled)
    }

    /// Path to attributes: what a copy of the tree must match.
    fn paths(&self) -> BTreeMap<Vec<u8>, Attrs> {
        let mut out = BTreeMap::new();
        out.insert(Vec::new(), Attrs::of(&self.record(ROOT, 0, Vec::new())));
        for ((p, n), &ino) in &self.links {
            out.insert(self.path(*p, n), Attrs::of(&self.record(ino, *p, n.clone())));
        }
        out
    }

    fn path(&self, parent: u64, name: &[u8]) -> Vec<u8> {
        let mut parts = vec![name.to_vec()];
        let mut cur = parent;
        while cur != ROOT {
            let ((p, n), _) = self.links.iter().find(|(_, i)| **i == cur).unwrap();
            parts.push(n.clone());
            cur = *p;
        }
        parts.reverse();
        parts.join(&b'/')
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Attrs {
    mode: u32,
    size: u64,
    mtime: i64,
    uid: u32,
}

impl Attrs {
    fn of(r: &Record) -> Attrs {
        Attrs {
            mode: r.mode,
            size: if r.is_dir() { 0 } else { r.size },
            mtime: r.mtime.sec,
            uid: r.uid,
        }
    }
}

fn parent_of(p: &[u8]) -> Option<&[u8]> {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => Some(&p[..i]),
        None if p.is_empty() => None,
        None => Some(&b""[..]),
    }
}

fn depth(p: &[u8]) -> usize {
    if p.is_empty() {
        0
    } else {
        1 + p.iter().filter(|&&b| b == b'/').count()
    }
}

fn has_children(tree: &BTreeMap<Vec<u8>, Attrs>, p: &[u8]) -> bool {
    tree.keys().any(|k| parent_of(k) == Some(p) && !k.is_empty())
}

/// Applies changes to a copy of the old tree, by the documented contract;
/// panics on any step the contract says cannot happen.
fn apply(tree: &mut BTreeMap<Vec<u8>, Attrs>, changes: &[Change]) {
    let mut i = 0;
    let mut staged = Vec::new();
    while i < changes.len() {
        let c = &changes[i];
        if !matches!(c.state, ChangeState::Deleted | ChangeState::Moved) && !staged.is_empty() {
            place(tree, std::mem::take(&mut staged));
        }
        match c.state {
            ChangeState::Deleted => {
                assert!(!has_children(tree, &c.path), "delete of non-empty {:?}", c.path);
                assert!(tree.remove(&c.path).is_some(), "delete of missing {:?}", c.path);
                i += 1;
            }
            ChangeState::Moved => {
                // Aside now, with its subtree; into place once the deletes and
                // moves are done.
                let src = c.source.as_ref().unwrap();
                let sub: Vec<(Vec<u8>, Attrs)> = tree
                    .iter()
                    .filter(|(k, _)| *k == src || (k.starts_with(src) && k.get(src.len()) == Some(&b'/')))
                    .map(|(k, v)| (k[src.len()..].to_vec(), v.clone()))
                    .collect();
                assert!(!sub.is_empty(), "move of missing {src:?}");
                for (k, _) in &sub {
                    let mut full = src.clone();
                    full.extend_from_slice(k);
                    tree.remove(&full);
                }
                staged.push((c.path.clone(), sub));
                i += 1;
            }
            ChangeState::Created => {
                let a = Attrs::of(&c.record);
                match tree.get(&c.path) {
                    Some(old) if old.mode & libc::S_IFMT == DIR && c.record.is_dir() => {}
                    Some(_) => panic!("create over existing {:?}", c.path),
                    None => assert!(
                        tree.contains_key(parent_of(&c.path).unwrap()),
                        "no parent for {:?}",
                        c.path
                    ),
                }
                tree.insert(c.path.clone(), a);
                i += 1;
            }
            ChangeState::Updated => {
                let a = tree
                    .get_mut(&c.path)
                    .unwrap_or_else(|| panic!("update of missing {:?}", c.path));
                *a = Attrs::of(&c.record);
                i += 1;
            }
        }
    }
    place(tree, staged);
}

/// Puts moved entries in place, shallowest destination first.
/// A moved entry waiting for its place: destination and subtree.
type Staged = (Vec<u8>, Vec<(Vec<u8>, Attrs)>);

fn place(tree: &mut BTreeMap<Vec<u8>, Attrs>, mut staged: Vec<Staged>) {
    staged.sort_by_key(|(p, _)| depth(p));
    for (dst, sub) in staged {
        let mut p = parent_of(&dst).unwrap().to_vec();
        while !tree.contains_key(&p) {
            // Missing parents are made; their `created` record follows.
            tree.insert(
                p.clone(),
                Attrs {
                    mode: DIR | 0o700,
                    size: 0,
                    mtime: 0,
                    uid: 99,
                },
            );
            p = parent_of(&p).unwrap().to_vec();
        }
        assert!(!tree.contains_key(&dst), "move onto existing {dst:?}");
        for (k, v) in sub {
            let mut full = dst.clone();
            full.extend_from_slice(&k);
            tree.insert(full, v);
        }
    }
}

/// What the sorts of a run spilled to disk, in sorted runs.
#[derive(Debug, Default)]
struct Spills {
    /// Each manifest's sorts (directories, entries), the first one first.
    manifests: Vec<[usize; 2]>,
    /// Each diff's ordering of the changes (its summary's count).
    diffs: Vec<u64>,
}

impl Spills {
    fn total(&self) -> u64 {
        let m: usize = self.manifests.iter().flatten().sum();
        m as u64 + self.diffs.iter().sum::<u64>()
    }
}

fn reader(b: &[u8]) -> ManifestReader<Cursor<&[u8]>> {
    ManifestReader::new(Cursor::new(b)).unwrap()
}

/// The merged view of a base and its deltas.
fn view<'a>(base: &'a [u8], deltas: &'a [Vec<u8>]) -> View<Cursor<&'a [u8]>> {
    View::new(reader(base), deltas.iter().map(|d| reader(d)).collect()).unwrap()
}

fn view_listing<'a>(base: &'a [u8], deltas: &'a [Vec<u8>]) -> Listing<'a> {
    let mut v = view(base, deltas);
    Listing {
        header: v.header().clone(),
        dirs: v.dir_table().unwrap(),
        entries: Box::new(v),
    }
}

fn all_records(e: &mut dyn Entries) -> Vec<Record> {
    let mut out = Vec::new();
    let mut r = Record::default();
    while e.read_entry(&mut r).unwrap() {
        out.push(r.clone());
    }
    out
}

/// Round by round: the operations, then the diff of the manifests before
/// and after, which applied to the tree before must give the tree after.
/// Each round is diffed twice: whole manifest against whole manifest, and
/// the way a run with a baseline does it, the merged view of a base and
/// deltas against the sorted new listing, writing a delta; both must give
/// the same changes, and the view with the new delta must read as the new
/// manifest. Every third round the chain is compacted into a new base.
/// With `seed`, the first round is [`Fs::seed`].
fn run(seed: bool, rounds: Vec<Vec<Op>>, mem_limit: usize) -> Spills {
    let spill = tempfile::tempdir().unwrap();
    let mut fs = Fs::new();
    let mut tree = fs.paths();
    let (mut manifest, spilled) = fs.manifest(mem_limit);
    let mut base = manifest.clone();
    let mut deltas: Vec<Vec<u8>> = Vec::new();
    let mut spills = Spills {
        manifests: vec![spilled],
        diffs: Vec::new(),
    };
    let rounds = seed.then_some(None).into_iter().chain(rounds.into_iter().map(Some));
    for (round, ops) in rounds.enumerate() {
        match &ops {
            None => fs.seed(),
            Some(ops) => {
                for op in ops {
                    fs.apply(op);
                }
            }
        }
        let (next, spilled) = fs.manifest(mem_limit);
        spills.manifests.push(spilled);
        let opts = DiffOptions {
            mem_limit,
            ..DiffOptions::default()
        };
        let (changes, summary) = diff::<Vec<u8>>(
            Listing::read(reader(&manifest)).unwrap(),
            Listing::read(reader(&next)).unwrap(),
            &opts,
            spill.path(),
            None,
            None,
        )
        .unwrap();
        spills.diffs.push(summary.spilled_runs);
        let changes: Vec<Change> = changes.map(Result::unwrap).collect();

        // The delta path.
        let new_header = reader(&next).header().clone();
        let mut w = ManifestWriter::new(
            Vec::new(),
            &Header {
                kind: Kind::Delta,
                id: format!("d{round}"),
                ..new_header.clone()
            },
        )
        .unwrap();
        let new_listing = {
            let spill2 = tempfile::tempdir().unwrap();
            let mut b = ManifestBuilder::new(mem_limit, spill2.path());
            let mut rd = reader(&next);
            while let Some(r) = rd.next_entry().unwrap() {
                b.push(&r).unwrap();
            }
            b.into_listing(new_header).unwrap()
        };
        let (delta_changes, _) = diff(
            view_listing(&base, &deltas),
            new_listing,
            &opts,
            spill.path(),
            Some(&mut w),
            None,
        )
        .unwrap();
        let delta_changes: Vec<Change> = delta_changes.map(Result::unwrap).collect();
        assert_eq!(delta_changes, changes, "the delta path's changes differ");
        deltas.push(w.finish().unwrap().0);
        assert_eq!(
            all_records(&mut view(&base, &deltas)),
            all_records(&mut reader(&next)),
            "base and deltas do not read as the new manifest"
        );
        if round % 3 == 2 {
            let mut v = view(&base, &deltas);
            let mut w = ManifestWriter::new(Vec::new(), v.header()).unwrap();
            let mut r = Record::default();
            while v.read_entry(&mut r).unwrap() {
                w.push_entry(&r).unwrap();
            }
            base = w.finish().unwrap().0;
            deltas.clear();
        }

        if std::env::var_os("FERRY_DEBUG").is_some() {
            eprintln!("old {tree:#?}\nnew {:#?}\nchanges {changes:#?}", fs.paths());
        }
        apply(&mut tree, &changes);
        let ops = ops.map_or_else(|| "the seed".to_string(), |o| format!("{o:?}"));
        assert_eq!(tree, fs.paths(), "after {ops}\nchanges {changes:#?}");
        manifest = next;
    }
    spills
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn applying_the_diff_reproduces_the_new_tree(rounds in prop::collection::vec(prop::collection::vec(op(), 1..40), 1..5)) {
        let spills = run(false, rounds, 64 << 20);
        assert_eq!(spills.total(), 0, "64 MiB holds every sort in memory: {spills:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    /// The same with the smallest memory budget, on a seeded tree big
    /// enough that the sorts spill to disk and merge their runs.
    #[test]
    fn spilling_changes_nothing(rounds in prop::collection::vec(prop::collection::vec(op(), 20..80), 1..3)) {
        // Every sort gets the floor (a quarter, three quarters and half of
        // this budget are below it): 170 items a run. The seed outgrows it
        // in each sort: a manifest of 213 directories and 341 records, then
        // 341 changes (340 created, the root updated).
        let spills = run(true, rounds, MIN_BUDGET);
        assert_eq!(spills.manifests[0], [0, 0], "the root alone fits in memory: {spills:?}");
        let [dirs, entries] = spills.manifests[1];
        assert!(dirs > 0, "sorting the seeded manifest's directories spilled: {spills:?}");
        assert!(entries > 0, "sorting the seeded manifest's entries spilled: {spills:?}");
        assert!(spills.diffs[0] > 0, "ordering the seed's changes spilled: {spills:?}");
    }
}
