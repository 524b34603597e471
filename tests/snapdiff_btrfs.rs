//! `ferry snapdiff` on real btrfs snapshots, as a property: random sequences
//! of creates, writes (growing, same size, truncating), touches, chmods,
//! chowns, renames (onto existing names, directories onto empty
//! directories, swaps, directories into directories that move in the same
//! round, files out of directories that are then deleted), deletes,
//! hard links and symlinks, applied to a subvolume with a few colliding
//! names (one with a newline, one not UTF-8, one with a space).
//!
//! After each run, the changes ferry wrote are applied to a replica of the
//! previous state (a plain directory on the same btrfs) exactly as the
//! contract in `src/snapdiff/diff.rs` says; then `diff -r` must find no
//! difference between the replica and the subvolume, and every path must
//! have the same type, mode, owner, group, size, mtime (not for symlinks)
//! and hard-link structure. Each case reads snapshots with btrfs's tree
//! search, or `--walk`, or guided by the event journal (`ferry journal`
//! running on the subvolume), with or without `--no-condense-moves`.
//!
//! `FERRY_PROPTEST_CASES=1000` runs a longer hunt (20 cases by default).
//!
//! The send oracle (issue 18) runs the same generator, with extended
//! attributes set and removed too: before each run, a `btrfs send
//! --no-data` from the last run's snapshot must name no inode that the read
//! of changes (`changed_since`) did not find changed or gone.

mod common;

use common::btrfs::{self, ChangeLine, LoopBtrfs, bytes, show};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

/// Few short names, so that creates and renames collide often.
const NAMES: [&[u8]; 5] = [b"a", b"b", b"c\n", b"\xff", b"d e"];
/// Symlink targets (resolving or not; one not UTF-8).
const TARGETS: [&[u8]; 4] = [b"a", b"../b", b"nowhere\xfe", b"c\n/d e"];
/// Directories are made at most this deep (renames may nest them further).
const MAX_MKDIR_DEPTH: usize = 3;
/// Permission bits a chmod toggles.
const CHMOD_BITS: [u32; 5] = [0o100, 0o040, 0o004, 0o001, 0o200];

// ---------------------------------------------------------------------------
// Operations

/// One operation on the live subvolume. Indices pick among the entries that
/// exist when the operation runs (modulo their number).
#[derive(Clone, Debug)]
enum Op {
    File {
        dir: usize,
        name: usize,
        len: usize,
    },
    Mkdir {
        dir: usize,
        name: usize,
    },
    Symlink {
        dir: usize,
        name: usize,
        target: usize,
    },
    /// A write that changes the size.
    Append {
        file: usize,
        len: usize,
    },
    /// A write that keeps the size (new bytes, new mtime).
    Rewrite {
        file: usize,
    },
    /// Sets the mtime (files and directories), content unchanged.
    Touch {
        entry: usize,
    },
    Truncate {
        file: usize,
    },
    Chmod {
        entry: usize,
        bits: usize,
    },
    Chown {
        entry: usize,
        uid: u32,
    },
    /// rename(2): onto an existing file replaces it, onto an empty
    /// directory too; what the kernel refuses is skipped.
    Rename {
        entry: usize,
        dir: usize,
        name: usize,
    },
    /// rename(2) onto an existing entry of the same kind: a file onto a
    /// file, a directory onto an empty directory.
    Replace {
        entry: usize,
        victim: usize,
        dirs: bool,
    },
    /// a → tmp, b → a, tmp → b.
    Swap {
        a: usize,
        b: usize,
    },
    /// Directory a into directory b, then b elsewhere.
    MoveIntoMoved {
        a: usize,
        b: usize,
        dir: usize,
        name: usize,
    },
    /// A directory's first entry out of it, then the directory `rm -r`.
    MoveOutThenDelete {
        a: usize,
        dir: usize,
        name: usize,
    },
    /// unlink, or `rm -r` for a directory.
    Delete {
        entry: usize,
    },
    /// link(2) (files and symlinks).
    Link {
        entry: usize,
        dir: usize,
        name: usize,
    },
}

fn creating_op() -> impl Strategy<Value = Op> {
    let i = 0..64usize;
    let n = 0..NAMES.len();
    prop_oneof![
        5 => (i.clone(), n.clone(), 0..24usize).prop_map(|(dir, name, len)| Op::File { dir, name, len }),
        4 => (i.clone(), n.clone()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        1 => (i.clone(), n.clone(), 0..TARGETS.len()).prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
        1 => (i.clone(), i, n).prop_map(|(entry, dir, name)| Op::Link { entry, dir, name }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0..64usize;
    let n = || 0..NAMES.len();
    prop_oneof![
        4 => creating_op(),
        2 => (i(), 1..12usize).prop_map(|(file, len)| Op::Append { file, len }),
        1 => i().prop_map(|file| Op::Rewrite { file }),
        1 => i().prop_map(|entry| Op::Touch { entry }),
        1 => i().prop_map(|file| Op::Truncate { file }),
        1 => (i(), 0..CHMOD_BITS.len()).prop_map(|(entry, bits)| Op::Chmod { entry, bits }),
        1 => (i(), 0..3u32).prop_map(|(entry, uid)| Op::Chown { entry, uid }),
        6 => (i(), i(), n()).prop_map(|(entry, dir, name)| Op::Rename { entry, dir, name }),
        2 => (i(), i(), any::<bool>()).prop_map(|(entry, victim, dirs)| Op::Replace { entry, victim, dirs }),
        2 => (i(), i()).prop_map(|(a, b)| Op::Swap { a, b }),
        2 => (i(), i(), i(), n()).prop_map(|(a, b, dir, name)| Op::MoveIntoMoved { a, b, dir, name }),
        1 => (i(), i(), n()).prop_map(|(a, dir, name)| Op::MoveOutThenDelete { a, dir, name }),
        2 => i().prop_map(|entry| Op::Delete { entry }),
        2 => (i(), i(), n()).prop_map(|(entry, dir, name)| Op::Link { entry, dir, name }),
    ]
}

// ---------------------------------------------------------------------------
// Trees on disk

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    fn of(m: &fs::Metadata) -> Kind {
        let t = m.file_type();
        if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() {
            Kind::Symlink
        } else {
            assert!(t.is_file(), "unexpected file type {t:?}");
            Kind::File
        }
    }

    /// ferry's name for it.
    fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
        }
    }
}

/// One entry as `lstat` (and, with `full`, its content) sees it.
#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    mtime: (i64, u32),
    ino: u64,
    target: Option<Vec<u8>>,
    content: Option<Vec<u8>>,
    children: Option<BTreeMap<Vec<u8>, u64>>,
}

fn rel_join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn child(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn parent_of(p: &[u8]) -> &[u8] {
    p.iter().rposition(|&b| b == b'/').map_or(&b""[..], |i| &p[..i])
}

fn base_of(p: &[u8]) -> &[u8] {
    p.iter().rposition(|&b| b == b'/').map_or(p, |i| &p[i + 1..])
}

/// Components in a relative path (the root has none), as ferry counts.
fn depth(p: &[u8]) -> usize {
    if p.is_empty() {
        0
    } else {
        1 + p.iter().filter(|&&b| b == b'/').count()
    }
}

fn under(p: &[u8], dir: &[u8]) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/'
}

fn node(p: &Path, is_root: bool, full: bool) -> Node {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let kind = Kind::of(&m);
    let children = (full && kind == Kind::Dir).then(|| {
        fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !(is_root && e.file_name() == ".snapshots"))
            .map(|e| (e.file_name().as_bytes().to_vec(), e.ino()))
            .collect()
    });
    Node {
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        nlink: m.nlink(),
        mtime: (m.mtime(), m.mtime_nsec() as u32),
        ino: m.ino(),
        target: (kind == Kind::Symlink).then(|| bytes(&fs::read_link(p).unwrap())),
        content: (full && kind == Kind::File).then(|| fs::read(p).unwrap()),
        children,
    }
}

/// Every entry under `root` by relative path ("" for `root`), leaving out
/// `root/.snapshots`.
fn walk(root: &Path, full: bool) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let p = rel_join(root, &rel);
        let n = node(&p, rel.is_empty(), full);
        if n.kind == Kind::Dir {
            for e in fs::read_dir(&p).unwrap() {
                let name = e.unwrap().file_name();
                if !(rel.is_empty() && name == ".snapshots") {
                    todo.push(child(&rel, name.as_bytes()));
                }
            }
        }
        out.insert(rel, n);
    }
    out
}

fn set_mtime(p: &Path, (sec, nsec): (i64, u32)) -> io::Result<()> {
    let t = UNIX_EPOCH + Duration::new(u64::try_from(sec).expect("mtime after 1970"), nsec);
    File::open(p)?.set_modified(t)
}

fn outcome(r: io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("refused ({e})"),
    }
}

// ---------------------------------------------------------------------------
// One test case: a subvolume, its state, and the replica

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Case {
    live: PathBuf,
    state: PathBuf,
    replica: PathBuf,
    stage: PathBuf,
    condense: bool,
    /// Read snapshots by walking them (`--walk`) instead of btrfs's tree
    /// search.
    walk: bool,
    /// The event journal's writer, when runs are guided by it.
    journal: Option<btrfs::JournalWriter>,
    /// Also give moved directories the attributes of their `moved` record
    /// (beyond the contract; see `restore_moved_dirs` in `run_case`).
    restore_moved_dirs: bool,
    /// Makes written bytes and touched times unique.
    clock: u64,
    staged: u64,
    /// Source inode to the replica inode that copies it, and back.
    src2rep: HashMap<u64, u64>,
    rep2src: HashMap<u64, u64>,
    /// The subvolume after the last run, by inode (with contents).
    prev: HashMap<u64, Node>,
    log: Vec<String>,
}

impl Case {
    fn new(btr: &LoopBtrfs, n: usize, condense: bool) -> Case {
        let live = fs::canonicalize(btr.subvolume(&format!("case{n}"))).unwrap();
        let at = |what: &str| fs::canonicalize(btr.path()).unwrap().join(format!("{what}{n}"));
        let (state, replica, stage) = (at("state"), at("replica"), at("stage"));
        // The replica's root has an empty `.snapshots` too, so that its
        // size (the sum of its names on btrfs) matches the subvolume's.
        fs::create_dir_all(replica.join(".snapshots")).unwrap();
        fs::create_dir(&stage).unwrap();
        Case {
            live,
            state,
            replica,
            stage,
            condense,
            walk: false,
            journal: None,
            restore_moved_dirs: false,
            clock: 0,
            staged: 0,
            src2rep: HashMap::new(),
            rep2src: HashMap::new(),
            prev: HashMap::new(),
            log: Vec::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn data(&mut self, len: usize) -> Vec<u8> {
        let seed = format!("<{}>", self.tick());
        seed.bytes().cycle().take(len).collect()
    }

    /// Applies one operation to the live subvolume; says what it did.
    fn apply_op(&mut self, op: &Op) -> String {
        let tree = walk(&self.live, false);
        let select = |f: &dyn Fn(&[u8], &Node) -> bool| -> Vec<Vec<u8>> {
            tree.iter().filter(|(k, n)| f(k, n)).map(|(k, _)| k.clone()).collect()
        };
        let dirs = select(&|_, n| n.kind == Kind::Dir);
        let inner_dirs = select(&|k, n| n.kind == Kind::Dir && !k.is_empty());
        let entries = select(&|k, _| !k.is_empty());
        let files = select(&|_, n| n.kind == Kind::File);
        let not_links = select(&|_, n| n.kind != Kind::Symlink);
        let pick = |v: &[Vec<u8>], i: usize| (!v.is_empty()).then(|| v[i % v.len()].clone());
        let live = self.live.clone();
        let p = |rel: &[u8]| rel_join(&live, rel);
        let skip = |what: &str| format!("{what}: nothing to pick");
        match *op {
            Op::File { dir, name, len } => {
                let rel = child(&pick(&dirs, dir).unwrap(), NAMES[name]);
                let data = self.data(len);
                let r = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p(&rel))
                    .and_then(|mut f| f.write_all(&data));
                format!("create file {} ({len} bytes): {}", show(&rel), outcome(r))
            }
            Op::Mkdir { dir, name } => {
                let d = pick(&dirs, dir).unwrap();
                if depth(&d) >= MAX_MKDIR_DEPTH {
                    return format!("mkdir under {}: too deep, skipped", show(&d));
                }
                let rel = child(&d, NAMES[name]);
                format!("mkdir {}: {}", show(&rel), outcome(fs::create_dir(p(&rel))))
            }
            Op::Symlink { dir, name, target } => {
                let rel = child(&pick(&dirs, dir).unwrap(), NAMES[name]);
                let r = symlink(OsStr::from_bytes(TARGETS[target]), p(&rel));
                format!("symlink {} -> {}: {}", show(&rel), show(TARGETS[target]), outcome(r))
            }
            Op::Append { file, len } => {
                let Some(rel) = pick(&files, file) else {
                    return skip("append");
                };
                let data = self.data(len);
                let r = OpenOptions::new()
                    .append(true)
                    .open(p(&rel))
                    .and_then(|mut f| f.write_all(&data));
                format!("append {len} bytes to {}: {}", show(&rel), outcome(r))
            }
            Op::Rewrite { file } => {
                let Some(rel) = pick(&files, file) else {
                    return skip("rewrite");
                };
                let size = tree[&rel].size as usize;
                let data = self.data(size);
                let r = OpenOptions::new()
                    .write(true)
                    .open(p(&rel))
                    .and_then(|f| f.write_all_at(&data, 0));
                format!("rewrite {size} bytes of {} in place: {}", show(&rel), outcome(r))
            }
            Op::Touch { entry } => {
                let Some(rel) = pick(&not_links, entry) else {
                    return skip("touch");
                };
                let t = self.tick();
                let when = (1_600_000_000 + t as i64, (t * 7_919_117 % 1_000_000_000) as u32);
                format!(
                    "touch {} to {when:?}: {}",
                    show(&rel),
                    outcome(set_mtime(&p(&rel), when))
                )
            }
            Op::Truncate { file } => {
                let Some(rel) = pick(&files, file) else {
                    return skip("truncate");
                };
                let r = OpenOptions::new().write(true).open(p(&rel)).and_then(|f| f.set_len(0));
                format!("truncate {} to 0: {}", show(&rel), outcome(r))
            }
            Op::Chmod { entry, bits } => {
                let Some(rel) = pick(&not_links, entry) else {
                    return skip("chmod");
                };
                let mode = (tree[&rel].mode & 0o7777) ^ CHMOD_BITS[bits];
                let r = fs::set_permissions(p(&rel), Permissions::from_mode(mode));
                format!("chmod {mode:o} {}: {}", show(&rel), outcome(r))
            }
            Op::Chown { entry, uid } => {
                let Some(rel) = pick(&entries, entry) else {
                    return skip("chown");
                };
                let (u, g) = (1000 + uid, 2000 + uid % 2);
                format!(
                    "chown -h {u}:{g} {}: {}",
                    show(&rel),
                    outcome(lchown(p(&rel), Some(u), Some(g)))
                )
            }
            Op::Rename { entry, dir, name } => {
                let Some(src) = pick(&entries, entry) else {
                    return skip("rename");
                };
                let dst = child(&pick(&dirs, dir).unwrap(), NAMES[name]);
                let what = match (tree.get(&dst).map(|n| n.kind), tree[&src].kind) {
                    (Some(Kind::Dir), Kind::Dir) => " (onto a directory)",
                    (Some(_), k) if k != Kind::Dir => " (onto a file)",
                    _ => "",
                };
                let r = fs::rename(p(&src), p(&dst));
                format!("mv {} {}{what}: {}", show(&src), show(&dst), outcome(r))
            }
            Op::Replace { entry, victim, dirs } => {
                // The victim first (an empty directory, or a file), then a
                // source of the same kind that may replace it.
                let empty = |k: &[u8]| !tree.keys().any(|c| under(c, k));
                let victims = select(&|k, n| {
                    !k.is_empty()
                        && if dirs {
                            n.kind == Kind::Dir && empty(k)
                        } else {
                            n.kind != Kind::Dir
                        }
                });
                let Some(dst) = pick(&victims, victim) else {
                    return skip("replace");
                };
                let sources =
                    select(&|k, n| !k.is_empty() && k != &dst[..] && (n.kind == Kind::Dir) == dirs && !under(&dst, k));
                let Some(src) = pick(&sources, entry) else {
                    return skip("replace");
                };
                let what = if dirs { "(onto a directory)" } else { "(onto a file)" };
                let r = fs::rename(p(&src), p(&dst));
                format!("mv {} {} {what}: {}", show(&src), show(&dst), outcome(r))
            }
            Op::Swap { a, b } => {
                let (Some(a), Some(b)) = (pick(&entries, a), pick(&entries, b)) else {
                    return skip("swap");
                };
                let tmp = b"swap".to_vec();
                let r1 = fs::rename(p(&a), p(&tmp));
                let r2 = fs::rename(p(&b), p(&a));
                let r3 = fs::rename(p(&tmp), p(&b));
                format!(
                    "swap {} and {} via {}: {}, {}, {}",
                    show(&a),
                    show(&b),
                    show(&tmp),
                    outcome(r1),
                    outcome(r2),
                    outcome(r3)
                )
            }
            Op::MoveIntoMoved { a, b, dir, name } => {
                let (Some(a), Some(b)) = (pick(&inner_dirs, a), pick(&inner_dirs, b)) else {
                    return skip("move into moved");
                };
                let into = child(&b, base_of(&a));
                let r1 = fs::rename(p(&a), p(&into));
                let dirs = walk(&self.live, false)
                    .into_iter()
                    .filter(|(_, n)| n.kind == Kind::Dir)
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>();
                let dst = child(&pick(&dirs, dir).unwrap(), NAMES[name]);
                let r2 = fs::rename(p(&b), p(&dst));
                format!(
                    "mv {} {}: {}; then mv {} {}: {}",
                    show(&a),
                    show(&into),
                    outcome(r1),
                    show(&b),
                    show(&dst),
                    outcome(r2)
                )
            }
            Op::MoveOutThenDelete { a, dir, name } => {
                let Some(a) = pick(&inner_dirs, a) else {
                    return skip("move out then delete");
                };
                let Some(first) = tree.keys().find(|k| parent_of(k) == &a[..] && under(k, &a)).cloned() else {
                    return format!("move out of {}: empty, skipped", show(&a));
                };
                let mut dst = child(&pick(&dirs, dir).unwrap(), NAMES[name]);
                if under(&dst, &a) {
                    dst = NAMES[name].to_vec();
                }
                let r1 = fs::rename(p(&first), p(&dst));
                let r2 = fs::remove_dir_all(p(&a));
                format!(
                    "mv {} {}: {}; then rm -r {}: {}",
                    show(&first),
                    show(&dst),
                    outcome(r1),
                    show(&a),
                    outcome(r2)
                )
            }
            Op::Delete { entry } => {
                let Some(rel) = pick(&entries, entry) else {
                    return skip("delete");
                };
                let r = if tree[&rel].kind == Kind::Dir {
                    fs::remove_dir_all(p(&rel))
                } else {
                    fs::remove_file(p(&rel))
                };
                format!("rm -r {}: {}", show(&rel), outcome(r))
            }
            Op::Link { entry, dir, name } => {
                let non_dirs = select(&|_, n| n.kind != Kind::Dir);
                let Some(src) = pick(&non_dirs, entry) else {
                    return skip("link");
                };
                let dst = child(&pick(&dirs, dir).unwrap(), NAMES[name]);
                let r = fs::hard_link(p(&src), p(&dst));
                format!("ln {} {}: {}", show(&src), show(&dst), outcome(r))
            }
        }
    }

    /// A change that a sync cannot see from size and mtime alone (same size
    /// and mtime, other bytes or entries: a write or rename within the
    /// timestamp granularity, or a touch back to an old time) would make the
    /// test depend on timing. Such an entry's mtime is moved on by 1 ns, so
    /// that every change is visible whatever the clock did. Returns what it
    /// moved (normally nothing).
    fn make_changes_visible(&mut self) -> Vec<String> {
        let mut bumped = Vec::new();
        let mut seen = BTreeSet::new();
        for (rel, n) in walk(&self.live, true) {
            let Some(old) = self.prev.get(&n.ino) else { continue };
            if old.kind != n.kind || old.mtime != n.mtime || !seen.insert(n.ino) {
                continue;
            }
            let invisible = match n.kind {
                Kind::File => old.size == n.size && old.content != n.content,
                Kind::Dir => old.children != n.children,
                Kind::Symlink => false,
            };
            if invisible {
                let (s, ns) = n.mtime;
                let t = if ns == 999_999_999 { (s + 1, 0) } else { (s, ns + 1) };
                set_mtime(&rel_join(&self.live, &rel), t).unwrap();
                bumped.push(format!(
                    "mtime of {} moved on by 1 ns (change not visible otherwise)",
                    show(&rel)
                ));
            }
        }
        bumped
    }

    /// Runs ferry; returns its changes and the new snapshot's directory.
    /// Where a read of changes is possible (a tree search, moves
    /// condensed, a baseline), a dry run that reads the whole snapshot must
    /// give the very same changes, and a dry run must say it read changes.
    fn snapdiff(&self) -> Result<(Vec<ChangeLine>, PathBuf), String> {
        let run = |extra: &[&str]| -> Result<Vec<u8>, String> {
            let mut cmd = Command::new(btrfs::FERRY);
            cmd.args(["snapdiff", "--provider", "btrfs", "--changes-limit", "1", "--state-dir"])
                .arg(&self.state)
                .args(["--extra-fields", "inode,generation,is_metadata_only_update"])
                .args(extra);
            if !self.condense {
                cmd.arg("--no-condense-moves");
            }
            if self.walk {
                cmd.arg("--walk");
            }
            let out = btrfs::output(cmd.arg(&self.live));
            ensure!(
                out.status.success() && out.stderr.is_empty(),
                "ferry snapdiff {extra:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(out.stdout)
        };
        let baseline = fs::read_dir(&self.state).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().as_bytes().starts_with(b"ferry.lastsnap."))
        });
        let fast = self.condense && !self.walk && baseline;
        let full = if fast {
            let summary: serde_json::Value =
                serde_json::from_slice(&run(&["--dry-run", "--summary"])?).map_err(|e| format!("summary: {e}"))?;
            let want = if self.journal.is_some() { "journal" } else { "changes" };
            ensure!(
                summary["read"] == want,
                "a run with a baseline read {}, not {want}",
                summary["read"]
            );
            Some(run(&["--dry-run", "--full"])?)
        } else {
            None
        };
        let stdout = run(&[])?;
        if let Some(full) = full {
            ensure!(
                full == stdout,
                "reading changes and reading the whole snapshot disagree:\nfull:\n{}\nchanges:\n{}",
                String::from_utf8_lossy(&full),
                String::from_utf8_lossy(&stdout)
            );
        }

        let last = fs::read_dir(&self.state)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().as_bytes().starts_with(b"ferry.lastsnap."))
            .ok_or("no last-snap file after a run")?;
        let name = fs::read_to_string(last).unwrap();
        let snap = self.live.join(".snapshots").join(name.trim());
        ensure!(
            snap.is_dir(),
            "the last-snap file names {}, which does not exist",
            snap.display()
        );
        Ok((btrfs::parse_changes(&stdout), snap))
    }

    fn rel(&self, abs: &[u8]) -> Result<Vec<u8>, String> {
        let root = bytes(&self.live);
        if abs == root {
            return Ok(Vec::new());
        }
        abs.strip_prefix(&root[..])
            .and_then(|r| r.strip_prefix(b"/"))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{} is not under the fileset", show(abs)))
    }

    /// The documented order: deletes and moves deepest old path first, then
    /// creates shallowest first, then updates shallowest first.
    fn check_order(&self, changes: &[ChangeLine]) -> Result<(), String> {
        let key = |c: &ChangeLine| -> Result<(u8, usize), String> {
            Ok(match c.state.as_str() {
                "deleted" | "moved" => (0, depth(&self.rel(c.source.as_ref().unwrap_or(&c.path))?)),
                "created" => (1, depth(&self.rel(&c.path)?)),
                "updated" => (2, depth(&self.rel(&c.path)?)),
                s => return Err(format!("unknown state {s}")),
            })
        };
        for w in changes.windows(2) {
            let (a, b) = (key(&w[0])?, key(&w[1])?);
            let ok = a.0 < b.0 || (a.0 == b.0 && if a.0 == 0 { a.1 >= b.1 } else { a.1 <= b.1 });
            ensure!(ok, "out of order:\n  {}\n  {}", w[0].raw, w[1].raw);
        }
        Ok(())
    }

    /// The replica path holding a copy of source inode `ino`, if any.
    fn replica_link_of(&self, ino: u64) -> Option<PathBuf> {
        let rep = *self.src2rep.get(&ino)?;
        walk(&self.replica, false)
            .into_iter()
            .find(|(_, n)| n.ino == rep)
            .map(|(k, _)| rel_join(&self.replica, &k))
    }

    fn copy_of(&self, p: &Path, ino: u64, what: &str) -> Result<fs::Metadata, String> {
        let m = fs::symlink_metadata(p).map_err(|e| format!("{what} of missing {}: {e}", p.display()))?;
        ensure!(
            self.rep2src.get(&m.ino()) == Some(&ino),
            "{what} of {}: ferry says inode {ino}, but the replica holds a copy of {:?} there",
            p.display(),
            self.rep2src.get(&m.ino())
        );
        Ok(m)
    }

    /// Owner, group, permissions and (except for symlinks) mtime.
    fn set_attrs(&self, p: &Path, c: &ChangeLine) -> io::Result<()> {
        lchown(p, Some(c.uid), Some(c.gid))?;
        if c.kind != "symlink" {
            fs::set_permissions(p, Permissions::from_mode(c.mode & 0o7777))?;
            set_mtime(p, c.mtime)?;
        }
        Ok(())
    }

    /// Applies ferry's changes to the replica, by the contract.
    fn apply_changes(&mut self, changes: &[ChangeLine], snap: &Path) -> Result<(), String> {
        let io = |what: String| move |e: io::Error| format!("{what}: {e}");
        let mut staged: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        let mut made: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut dirs_touched: BTreeMap<Vec<u8>, ChangeLine> = BTreeMap::new();
        for c in changes {
            let path = self.rel(&c.path)?;
            let ino = c.inode.ok_or("no inode in additional_metadata")?;
            let kind_bits = match c.kind.as_str() {
                "file" => libc::S_IFREG,
                "directory" => libc::S_IFDIR,
                "symlink" => libc::S_IFLNK,
                k => return Err(format!("unexpected type {k}")),
            };
            ensure!(
                c.mode & libc::S_IFMT == kind_bits,
                "mode {:o} is not a {}",
                c.mode,
                c.kind
            );
            if !matches!(c.state.as_str(), "deleted" | "moved") && !staged.is_empty() {
                self.place(std::mem::take(&mut staged), &mut made)?;
            }
            let rp = rel_join(&self.replica, &path);
            match c.state.as_str() {
                "deleted" => {
                    let m = self.copy_of(&rp, ino, "delete")?;
                    if m.is_dir() {
                        let left: Vec<_> = fs::read_dir(&rp).unwrap().map(|e| e.unwrap().file_name()).collect();
                        ensure!(
                            left.is_empty(),
                            "delete of non-empty directory {}: holds {left:?}",
                            show(&path)
                        );
                        fs::remove_dir(&rp).map_err(io(format!("rmdir {}", show(&path))))?;
                    } else {
                        fs::remove_file(&rp).map_err(io(format!("unlink {}", show(&path))))?;
                    }
                }
                "moved" => {
                    let src = self.rel(c.source.as_ref().ok_or("moved without source")?)?;
                    let sp = rel_join(&self.replica, &src);
                    self.copy_of(&sp, ino, "move")?;
                    self.staged += 1;
                    let aside = self.stage.join(self.staged.to_string());
                    fs::rename(&sp, &aside).map_err(io(format!("move {} aside", show(&src))))?;
                    if self.restore_moved_dirs && c.kind == "directory" {
                        dirs_touched.insert(path.clone(), c.clone());
                    }
                    staged.push((path, aside));
                }
                "created" => {
                    match fs::symlink_metadata(&rp) {
                        Ok(m) => ensure!(
                            c.kind == "directory" && m.is_dir() && (path.is_empty() || made.contains(&path)),
                            "create over existing {} (a {:?} not made for a move)",
                            show(&path),
                            m.file_type()
                        ),
                        Err(_) => {
                            let parent = rel_join(&self.replica, parent_of(&path));
                            ensure!(parent.is_dir(), "create of {}: no parent directory", show(&path));
                            let src = rel_join(snap, &path);
                            let other = (c.kind != "directory").then(|| self.replica_link_of(ino)).flatten();
                            let r = match (other, c.kind.as_str()) {
                                (Some(other), _) => fs::hard_link(other, &rp),
                                (None, "directory") => fs::create_dir(&rp),
                                (None, "symlink") => fs::read_link(&src).and_then(|t| symlink(t, &rp)),
                                (None, _) => File::open(&src).and_then(|mut from| {
                                    let mut to = OpenOptions::new().write(true).create_new(true).open(&rp)?;
                                    io::copy(&mut from, &mut to).map(drop)
                                }),
                            };
                            r.map_err(io(format!("create {}", show(&path))))?;
                        }
                    }
                    let rino = fs::symlink_metadata(&rp).unwrap().ino();
                    self.src2rep.insert(ino, rino);
                    self.rep2src.insert(rino, ino);
                    self.set_attrs(&rp, c)
                        .map_err(io(format!("attributes of {}", show(&path))))?;
                    if c.kind == "directory" {
                        dirs_touched.insert(path, c.clone());
                    }
                }
                "updated" => {
                    let m = self.copy_of(&rp, ino, "update")?;
                    ensure!(Kind::of(&m).name() == c.kind, "update of {}: type changed", show(&path));
                    match (c.metadata_only, c.kind.as_str()) {
                        (None, _) => return Err("updated without is_metadata_only_update".into()),
                        (Some(true), _) | (Some(false), "directory") => {}
                        (Some(false), "file") => {
                            // In place: other hard links see the new content too.
                            File::open(rel_join(snap, &path))
                                .and_then(|mut from| {
                                    let mut to = OpenOptions::new().write(true).truncate(true).open(&rp)?;
                                    io::copy(&mut from, &mut to).map(drop)
                                })
                                .map_err(io(format!("rewrite {}", show(&path))))?;
                        }
                        (Some(false), k) => return Err(format!("content update of a {k}: {}", c.raw)),
                    }
                    self.set_attrs(&rp, c)
                        .map_err(io(format!("attributes of {}", show(&path))))?;
                    if c.kind == "directory" {
                        dirs_touched.insert(path, c.clone());
                    }
                }
                s => return Err(format!("unknown state {s}")),
            }
        }
        self.place(staged, &mut made)?;
        // Making entries changed the mtimes of directories set earlier.
        let mut dirs: Vec<_> = dirs_touched.into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(depth(p)));
        for (path, c) in dirs {
            self.set_attrs(&rel_join(&self.replica, &path), &c)
                .map_err(io(format!("attributes of {}", show(&path))))?;
        }
        Ok(())
    }

    /// Puts entries moved aside in place, shallowest destination first,
    /// making missing parent directories.
    fn place(&mut self, mut staged: Vec<(Vec<u8>, PathBuf)>, made: &mut BTreeSet<Vec<u8>>) -> Result<(), String> {
        staged.sort_by_key(|(p, _)| depth(p));
        for (dst, aside) in staged {
            let mut missing = Vec::new();
            let mut p = parent_of(&dst);
            loop {
                match fs::symlink_metadata(rel_join(&self.replica, p)) {
                    Ok(m) => {
                        ensure!(m.is_dir(), "move to {}: {} is not a directory", show(&dst), show(p));
                        break;
                    }
                    Err(_) => {
                        missing.push(p.to_vec());
                        p = parent_of(p);
                    }
                }
            }
            for m in missing.into_iter().rev() {
                fs::create_dir(rel_join(&self.replica, &m)).unwrap();
                made.insert(m);
            }
            let to = rel_join(&self.replica, &dst);
            ensure!(fs::symlink_metadata(&to).is_err(), "move onto existing {}", show(&dst));
            fs::rename(&aside, &to).map_err(|e| format!("move to {}: {e}", show(&dst)))?;
        }
        Ok(())
    }

    /// One run: ferry's changes, checked for order, applied to the replica,
    /// which must then match the subvolume. Returns the changes.
    fn round(&mut self, name: &str) -> Result<Vec<ChangeLine>, String> {
        let (changes, snap) = self.snapdiff()?;
        let checked = self
            .check_order(&changes)
            .and_then(|()| self.apply_changes(&changes, &snap))
            .and_then(|()| self.compare());
        checked.map(|()| changes.clone()).map_err(|e| {
            let lines: Vec<&str> = changes.iter().map(|c| c.raw.as_str()).collect();
            format!(
                "{name}: {e}\n\noperations:\n  {}\n\nchanges of {name}:\n  {}\n",
                self.log.join("\n  "),
                lines.join("\n  ")
            )
        })
    }

    /// The replica must be the subvolume, exactly.
    fn compare(&mut self) -> Result<(), String> {
        let out = btrfs::output(
            Command::new("diff")
                .args(["-r", "--no-dereference", "-x", ".snapshots"])
                .arg(&self.live)
                .arg(&self.replica),
        );
        ensure!(
            out.status.success() && out.stdout.is_empty(),
            "diff -r {} {} ({}):\n{}{}",
            self.live.display(),
            self.replica.display(),
            out.status,
            show(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let live = walk(&self.live, true);
        let rep = walk(&self.replica, true);
        let (lk, rk): (BTreeSet<_>, BTreeSet<_>) = (live.keys().collect(), rep.keys().collect());
        ensure!(
            lk == rk,
            "paths differ: only live {:?}, only replica {:?}",
            lk.difference(&rk).map(|p| show(p)).collect::<Vec<_>>(),
            rk.difference(&lk).map(|p| show(p)).collect::<Vec<_>>()
        );
        let mut bad = Vec::new();
        for (path, l) in &live {
            let r = &rep[path];
            let fields = [
                ("type", format!("{:?}", l.kind), format!("{:?}", r.kind)),
                ("mode", format!("{:o}", l.mode), format!("{:o}", r.mode)),
                ("uid", l.uid.to_string(), r.uid.to_string()),
                ("gid", l.gid.to_string(), r.gid.to_string()),
                ("size", l.size.to_string(), r.size.to_string()),
                ("nlink", l.nlink.to_string(), r.nlink.to_string()),
                ("target", format!("{:?}", l.target), format!("{:?}", r.target)),
                ("content", format!("{:?}", l.content), format!("{:?}", r.content)),
                (
                    "mtime",
                    format!("{:?}", (l.kind != Kind::Symlink).then_some(l.mtime)),
                    format!("{:?}", (r.kind != Kind::Symlink).then_some(r.mtime)),
                ),
                (
                    "copy of inode",
                    l.ino.to_string(),
                    self.rep2src.get(&r.ino).map_or("none".into(), u64::to_string),
                ),
            ];
            for (what, a, b) in fields {
                if a != b {
                    bad.push(format!("{}: {what} live {a}, replica {b}", show(path)));
                }
            }
        }
        // Hard links: paths that share an inode in one tree share one in the other.
        let groups = |t: &BTreeMap<Vec<u8>, Node>| -> BTreeSet<Vec<Vec<u8>>> {
            let mut by: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
            for (p, n) in t {
                by.entry(n.ino).or_default().push(p.clone());
            }
            by.into_values().collect()
        };
        let (gl, gr) = (groups(&live), groups(&rep));
        if gl != gr {
            bad.push(format!(
                "hard links differ: live {:?}, replica {:?}",
                gl.difference(&gr).collect::<Vec<_>>(),
                gr.difference(&gl).collect::<Vec<_>>()
            ));
        }
        ensure!(bad.is_empty(), "replica differs:\n  {}", bad.join("\n  "));
        self.prev = live.into_values().map(|n| (n.ino, n)).collect();
        Ok(())
    }
}

/// How a case reads snapshots.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// btrfs's tree search (changes since the last snapshot's transaction).
    Tree,
    /// `--walk`.
    Walk,
    /// Guided by the event journal.
    Journal,
}

/// One case: round 0 builds a tree that the first run reports as created;
/// each later round changes it. After every run the replica must match.
fn run_case(
    btr: &LoopBtrfs,
    n: usize,
    (condense, read): (bool, Read),
    rounds: &[Vec<Op>],
    stats: &mut BTreeMap<String, usize>,
) -> Result<(), String> {
    let mut case = Case::new(btr, n, condense);
    match read {
        Read::Tree => {}
        Read::Walk => case.walk = true,
        Read::Journal => case.journal = Some(btrfs::JournalWriter::start(&case.state, &case.live)),
    }
    *stats.entry(format!("cases read {read:?}")).or_default() += 1;
    // With --no-condense-moves, the entries of a moved directory are moved
    // out and back in, which changes its mtime on a real filesystem, and no
    // `updated` record restores it (the directory itself did not change):
    // there the replica also takes the moved directory's attributes from
    // its `moved` record. no_condense_moves_contract_keeps_directory_mtimes
    // shows the contract alone falling short.
    case.restore_moved_dirs = !condense;
    for (i, ops) in rounds.iter().enumerate() {
        let mut did: Vec<String> = ops.iter().map(|op| case.apply_op(op)).collect();
        did.extend(case.make_changes_visible());
        case.log.push(format!("round {i}:\n    {}", did.join("\n    ")));
        let changes = case.round(&format!(
            "case {n} (condense_moves {condense}, read {read:?}), round {i}"
        ))?;
        for c in &changes {
            let hard_link = c.kind != "directory" && c.nlink > 1;
            let key = format!(
                "{} {}{}",
                c.state,
                c.kind,
                if hard_link { " (hard-linked)" } else { "" }
            );
            *stats.entry(key).or_default() += 1;
        }
        let kinds = [
            "ok",
            "refused",
            "1 ns",
            "(onto a file): ok",
            "(onto a directory): ok",
            "via swap: ok, ok, ok",
            ": ok; then mv",
            ": ok; then rm -r",
        ];
        for what in kinds {
            *stats.entry(format!("operations {what}")).or_default() += did.iter().filter(|d| d.contains(what)).count();
        }
    }
    Ok(())
}

#[test]
fn applying_the_diff_to_a_replica_reproduces_each_snapshot() {
    let Some(btr) = LoopBtrfs::new(512) else { return };
    // FERRY_PROPTEST_CASES=500 for a longer hunt.
    let cases = std::env::var("FERRY_PROPTEST_CASES").map_or(20, |v| v.parse().unwrap());
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    // (--no-condense-moves or not, how snapshots are read), the first
    // round, the rest.
    let strategy = (
        (
            any::<bool>(),
            prop_oneof![Just(Read::Tree), Just(Read::Walk), Just(Read::Journal)],
        ),
        prop::collection::vec(creating_op(), 10..30),
        prop::collection::vec(prop::collection::vec(op(), 5..40), 2..5),
    );
    let n = Cell::new(0usize);
    let stats = RefCell::new(BTreeMap::new());
    let result = runner.run(&strategy, |(how, first, rest)| {
        n.set(n.get() + 1);
        let rounds: Vec<Vec<Op>> = std::iter::once(first).chain(rest).collect();
        run_case(&btr, n.get(), how, &rounds, &mut stats.borrow_mut()).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // What was exercised (cargo test -- --nocapture shows it).
    eprintln!("{} cases; {:#?}", n.get(), stats.borrow());
    let seen = |k: &str| stats.borrow().get(k).copied().unwrap_or(0);
    for k in [
        "operations (onto a file): ok",
        "operations (onto a directory): ok",
        "operations via swap: ok, ok, ok",
        "operations : ok; then mv",
        "operations : ok; then rm -r",
        "moved file",
        "moved directory",
        "deleted directory",
        "updated file",
        "created file (hard-linked)",
        "cases read Journal",
    ] {
        assert!(seen(k) > 0, "no {k} change in {cases} cases: the generator is too weak");
    }
}

/// The contract with --no-condense-moves, applied to a real filesystem: a
/// directory that moved with its unchanged entries is reported as moved and
/// so is each entry ("step 1 moves entries under a moved directory aside
/// before the directory itself, and step 2 puts them back after it, so the
/// contract still holds", docs/snapdiff.md). Putting the entries back
/// changes the directory's mtime, and no record restores it: the directory
/// itself did not change, so there is no `updated` record.
#[test]
fn no_condense_moves_contract_keeps_directory_mtimes() {
    let Some(btr) = LoopBtrfs::new(256) else { return };
    let mut case = Case::new(&btr, 0, false);
    let live = case.live.clone();
    fs::create_dir(live.join("x")).unwrap();
    fs::write(live.join("x/f"), b"unchanged").unwrap();
    set_mtime(&live.join("x"), (1_000_000_000, 0)).unwrap();
    case.log.push("mkdir x; write x/f; touch -d @1000000000 x".into());
    case.round("first run").unwrap();

    fs::rename(live.join("x"), live.join("y")).unwrap();
    case.log.push("mv x y".into());
    if let Err(e) = case.round("second run (--no-condense-moves)") {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// The send oracle (issue 18; ../shared/reference/snapdiff-change-proportional.md
// §1.6-1.7): every inode a no-data send stream from the old snapshot to
// the new one names is among the inodes the read of changes found changed
// or gone.

/// A step of the oracle's rounds: one of the property's operations, or an
/// extended attribute set or removed (a change that leaves the size,
/// mode, owner and mtime alone: only the ctime and the inode's transid
/// move).
#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    SetXattr { entry: usize, value: usize },
    RemoveXattr { entry: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => op().prop_map(Step::Op),
        1 => (0..64usize, 0..3usize).prop_map(|(entry, value)| Step::SetXattr { entry, value }),
        1 => (0..64usize).prop_map(|entry| Step::RemoveXattr { entry }),
    ]
}

impl Case {
    fn apply_step(&mut self, step: &Step) -> String {
        let (entry, set) = match *step {
            Step::Op(ref op) => return self.apply_op(op),
            Step::SetXattr { entry, value } => (entry, Some(value)),
            Step::RemoveXattr { entry } => (entry, None),
        };
        // user.* attributes are for files and directories only; a removal
        // picks among those that have one.
        let has = |k: &[u8]| xattr::get(rel_join(&self.live, k), "user.oracle").is_ok_and(|v| v.is_some());
        let targets: Vec<Vec<u8>> = walk(&self.live, false)
            .into_iter()
            .filter(|(k, n)| !k.is_empty() && n.kind != Kind::Symlink && (set.is_some() || has(k)))
            .map(|(k, _)| k)
            .collect();
        if targets.is_empty() {
            return "xattr: nothing to pick".into();
        }
        let rel = &targets[entry % targets.len()];
        let p = rel_join(&self.live, rel);
        match set {
            Some(v) => {
                let value = format!("value {v} {}", self.tick());
                let r = xattr::set(&p, "user.oracle", value.as_bytes());
                format!("setfattr user.oracle={value:?} {}: {}", show(rel), outcome(r))
            }
            None => format!(
                "setfattr -x user.oracle {}: {}",
                show(rel),
                outcome(xattr::remove(&p, "user.oracle"))
            ),
        }
    }
}

/// Undoes `btrfs receive --dump`'s escapes (C escapes, `\ ` for a space,
/// `\ooo` for other unprintable bytes).
fn unescape_dump(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 == s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        i += 2;
        out.push(match c {
            b'a' => 0x07,
            b'b' => 0x08,
            b'e' => 0x1b,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'3' if s.len() >= i + 2 => {
                let v = (c - b'0') * 64 + (s[i] - b'0') * 8 + (s[i + 1] - b'0');
                i += 2;
                v
            }
            other => other,
        });
    }
    out
}

/// The first field of `rest` (up to an unescaped space) and what follows.
fn dump_field(rest: &[u8]) -> (&[u8], &[u8]) {
    let rest = rest.trim_ascii_start();
    let mut i = 0;
    while i < rest.len() && rest[i] != b' ' {
        i += if rest[i] == b'\\' { 2 } else { 1 };
    }
    let i = i.min(rest.len());
    (&rest[..i], &rest[i..])
}

/// The inode number in a name send gives an inode it has not placed yet
/// (`o<ino>-<gen>-<n>`).
fn orphan_ino(name: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(name.strip_prefix(b"o")?).ok()?;
    let mut parts = s.split('-');
    let ino = parts.next()?.parse().ok()?;
    (parts.count() == 2).then_some(ino)
}

/// The namespace a send stream's commands walk: starts as the old snapshot
/// and follows every command that binds or unbinds a name (§1.7).
struct SendNamespace {
    children: HashMap<u64, BTreeMap<Vec<u8>, u64>>,
}

impl SendNamespace {
    fn of(old: &Path) -> SendNamespace {
        let mut children: HashMap<u64, BTreeMap<Vec<u8>, u64>> = HashMap::new();
        let mut todo = vec![old.to_path_buf()];
        while let Some(dir) = todo.pop() {
            let ino = fs::symlink_metadata(&dir).unwrap().ino();
            let mut names = BTreeMap::new();
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let m = fs::symlink_metadata(e.path()).unwrap();
                names.insert(e.file_name().as_bytes().to_vec(), m.ino());
                if m.is_dir() {
                    todo.push(e.path());
                }
            }
            children.insert(ino, names);
        }
        SendNamespace { children }
    }

    fn split(path: &[u8]) -> (&[u8], &[u8]) {
        (parent_of(path), base_of(path))
    }

    fn resolve(&self, path: &[u8]) -> Result<u64, String> {
        let mut cur = ferry::sys::btrfs::SUBVOL_ROOT_INO;
        if path.is_empty() {
            return Ok(cur);
        }
        for (i, name) in path.split(|&b| b == b'/').enumerate() {
            cur = match self.children.get(&cur).and_then(|c| c.get(name)) {
                Some(&ino) => ino,
                None if i == 0 => orphan_ino(name).ok_or_else(|| format!("{} is bound to nothing", show(path)))?,
                None => return Err(format!("{} is bound to nothing", show(path))),
            };
        }
        Ok(cur)
    }

    fn bind(&mut self, path: &[u8], ino: u64) -> Result<(), String> {
        let (dir, name) = Self::split(path);
        let dir = self.resolve(dir)?;
        self.children.entry(dir).or_default().insert(name.to_vec(), ino);
        Ok(())
    }

    fn unbind(&mut self, path: &[u8]) -> Result<u64, String> {
        let (dir, name) = Self::split(path);
        let dir = self.resolve(dir)?;
        self.children
            .get_mut(&dir)
            .and_then(|c| c.remove(name))
            .ok_or_else(|| format!("{} is bound to nothing", show(path)))
    }
}

/// The inodes a `btrfs receive --dump` of a send stream from `old` to
/// snapshot `new_name` names, each with the commands naming it. An inode
/// named only as a directory on another's path is not named.
fn named_by_send(dump: &[u8], new_name: &str, old: &Path) -> Result<BTreeMap<u64, Vec<String>>, String> {
    let mut ns = SendNamespace::of(old);
    let mut named: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let prefix = format!("./{new_name}");
    let rel = |field: &[u8]| -> Vec<u8> {
        let p = unescape_dump(field);
        let p = p.strip_prefix(prefix.as_bytes()).map_or(&p[..], |r| r);
        p.strip_prefix(b"/").unwrap_or(p).to_vec()
    };
    for line in dump.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let (cmd, rest) = dump_field(line);
        let (path, rest) = dump_field(rest);
        let path = rel(path);
        let dest = || -> Result<Vec<u8>, String> {
            let (d, _) = dump_field(rest);
            d.strip_prefix(b"dest=")
                .map(rel)
                .ok_or_else(|| format!("no dest= in {}", show(line)))
        };
        let ino = match cmd {
            b"snapshot" | b"subvol" => continue,
            b"mkfile" | b"mkdir" | b"mknod" | b"mkfifo" | b"mksock" | b"symlink" => {
                let ino =
                    orphan_ino(base_of(&path)).ok_or_else(|| format!("created under a real name: {}", show(line)))?;
                ns.bind(&path, ino)?;
                if cmd == b"mkdir" {
                    ns.children.insert(ino, BTreeMap::new());
                }
                ino
            }
            b"rename" => {
                let ino = ns.unbind(&path)?;
                ns.bind(&dest()?, ino)?;
                ino
            }
            b"link" => {
                let ino = ns.resolve(&dest()?)?;
                ns.bind(&path, ino)?;
                ino
            }
            b"unlink" | b"rmdir" => ns.unbind(&path)?,
            b"write" | b"clone" | b"set_xattr" | b"remove_xattr" | b"truncate" | b"chmod" | b"chown" | b"utimes"
            | b"update_extent" | b"fileattr" | b"fallocate" | b"encoded_write" | b"enable_verity" => {
                ns.resolve(&path)?
            }
            _ => return Err(format!("unknown command in the dump: {}", show(line))),
        };
        named
            .entry(ino)
            .or_default()
            .push(String::from_utf8_lossy(line).into_owned());
    }
    Ok(named)
}

/// One round of the oracle: snapshot the subvolume as `new`, send it with
/// the last run's snapshot as parent, and check what the stream names
/// against what `changed_since` found. Returns (inodes named, inodes found
/// changed or gone); counts the stream's commands by name into `commands`.
fn send_oracle_round(
    btr: &LoopBtrfs,
    case: &Case,
    (n, round): (usize, usize),
    commands: &mut BTreeMap<String, usize>,
) -> Result<(usize, usize), String> {
    use ferry::snapdiff::provider::btrfs_changed::changed_since;
    use ferry::snapdiff::state::StateDir;
    use std::os::fd::AsFd;

    let last = fs::read_dir(&case.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().as_bytes().starts_with(b"ferry.lastsnap."))
        .ok_or("no last-snap file")?;
    let last = fs::read_to_string(last).unwrap().trim().to_string();
    let old = case.live.join(".snapshots").join(&last);
    let new_name = format!("oracle{n}-{round}");
    let new = fs::canonicalize(btr.path()).unwrap().join(&new_name);
    let run = |cmd: &mut Command| -> Result<Vec<u8>, String> {
        let out = btrfs::output(cmd);
        ensure!(
            out.status.success(),
            "{cmd:?}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    };
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(&case.live)
        .arg(&new))?;
    let stream = case.stage.with_extension("send");
    let checked = (|| {
        run(Command::new("btrfs")
            .args(["send", "-q", "--no-data", "-f"])
            .arg(&stream)
            .arg("-p")
            .arg(&old)
            .arg(&new))?;
        let dump = run(Command::new("btrfs").args(["receive", "--dump", "-f"]).arg(&stream))?;
        let named = named_by_send(&dump, &new_name, &old)?;
        for line in dump.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let (cmd, _) = dump_field(line);
            *commands.entry(show(cmd)).or_default() += 1;
        }

        // The fast path, as `ferry snapdiff` calls it: the old snapshot's
        // transaction and the old manifest's directory table.
        let (old_fd, new_fd) = (File::open(&old).unwrap(), File::open(&new).unwrap());
        let since = ferry::sys::btrfs::subvolume_info(old_fd.as_fd()).unwrap().otransid;
        let id = btrfs::subvolume_id(&case.live);
        let fileset = case.live.file_name().unwrap().to_str().unwrap();
        let state = StateDir::new(case.state.clone(), "ferry", fileset, &id).unwrap();
        let dirs = state
            .open_view(&last)
            .and_then(|mut v| v.dir_table())
            .map_err(|e| format!("the manifest of {last}: {e}"))?;
        let changed = changed_since(new_fd.as_fd(), old_fd.as_fd(), since, &dirs, usize::MAX, &[])
            .map_err(|e| format!("changed_since: {e}"))?
            .ok_or("changed_since gave up below usize::MAX")?;
        let found: BTreeSet<u64> = changed
            .records
            .iter()
            .map(|r| r.ino)
            .chain(changed.gone.iter().copied())
            .collect();

        // `.snapshots` is not part of the fileset (the read of changes
        // leaves it out, as a walk does); send names it when runs add and
        // remove snapshots in it.
        let snapshots_dir = fs::symlink_metadata(case.live.join(".snapshots")).unwrap().ino();
        let missed: Vec<String> = named
            .iter()
            .filter(|(ino, _)| **ino != snapshots_dir && !found.contains(ino))
            .map(|(ino, lines)| format!("inode {ino}, named by:\n    {}", lines.join("\n    ")))
            .collect();
        ensure!(
            missed.is_empty(),
            "send names inodes the read of changes did not find (found {found:?}, {} examined):\n  {}\n\nthe dump:\n{}",
            changed.examined,
            missed.join("\n  "),
            String::from_utf8_lossy(&dump)
        );
        Ok((named.len(), found.len()))
    })();
    let _ = fs::remove_file(&stream);
    run(Command::new("btrfs").args(["subvolume", "delete"]).arg(&new))?;
    checked
}

/// "The inodes a no-data send stream names are a subset of what the fast
/// path examined" (issue 18): after each round of random changes, a
/// `btrfs send --no-data` from the last run's snapshot to a new one is
/// dumped, its paths followed through the renames, links and unlinks it
/// makes (starting from the old snapshot's names; inodes send has not
/// placed yet have `o<ino>-<gen>-<n>` names), and every inode it names
/// must be among those `changed_since` returns changed or gone. Then the
/// round is run through ferry as in the property above (the read of
/// changes equal to the full read, the replica equal to the subvolume).
#[test]
fn a_no_data_send_names_no_inode_the_read_of_changes_missed() {
    let Some(btr) = LoopBtrfs::new(512) else { return };
    let cases = std::env::var("FERRY_PROPTEST_CASES").map_or(10, |v| v.parse().unwrap());
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 100,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(creating_op(), 10..30),
        prop::collection::vec(prop::collection::vec(step(), 5..40), 2..5),
    );
    let n = Cell::new(0usize);
    let totals = Cell::new((0usize, 0usize));
    let commands = RefCell::new(BTreeMap::new());
    let result = runner.run(&strategy, |(first, rest)| {
        n.set(n.get() + 1);
        let mut case = Case::new(&btr, n.get(), true);
        let fail = |e: String| TestCaseError::fail(e);
        let mut did: Vec<String> = first.iter().map(|op| case.apply_op(op)).collect();
        case.log.push(format!("round 0:\n    {}", did.join("\n    ")));
        case.round(&format!("oracle case {}, round 0", n.get())).map_err(fail)?;
        for (i, steps) in rest.iter().enumerate() {
            let round = i + 1;
            did = steps.iter().map(|s| case.apply_step(s)).collect();
            did.extend(case.make_changes_visible());
            case.log.push(format!("round {round}:\n    {}", did.join("\n    ")));
            let (named, found) =
                send_oracle_round(&btr, &case, (n.get(), round), &mut commands.borrow_mut()).map_err(|e| {
                    fail(format!(
                        "case {} round {round}: {e}\n\noperations:\n  {}",
                        n.get(),
                        case.log.join("\n  ")
                    ))
                })?;
            let (a, b) = totals.get();
            totals.set((a + named, b + found));
            case.round(&format!("oracle case {}, round {round}", n.get()))
                .map_err(fail)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (named, found) = totals.get();
    let commands = commands.into_inner();
    eprintln!(
        "{} cases: send named {named} inodes, the read of changes found {found}; commands {commands:?}",
        n.get()
    );
    assert!(
        named > 0,
        "send named no inode in {cases} cases: the oracle checked nothing"
    );
    // (Rarer ones, such as mkdir, symlink, truncate and remove_xattr, are
    // left out: a short run may well lack them.)
    for c in [
        "mkfile",
        "rename",
        "link",
        "unlink",
        "rmdir",
        "set_xattr",
        "chmod",
        "chown",
        "update_extent",
        "utimes",
    ] {
        assert!(
            commands.get(c).is_some_and(|&k| k > 0),
            "no {c} command in {cases} cases' streams: the generator is too weak"
        );
    }
}
