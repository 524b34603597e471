//! A run's side of the journal: the barrier that fixes its position, the
//! window of events since the baseline's, and the changes those events
//! point at, read from the live tree.
//!
//! Every event names a directory (by file handle) and an entry in it, and
//! the object itself. The entries the window touched are looked up again
//! now (`fstatat` in the directory, opened by its path in the baseline
//! where that still leads to it, else by its handle); an inode's new
//! links are its baseline links the window did not touch plus the touched
//! entries that now hold it. An inode no touched entry holds is gone when
//! the baseline shows every link it had touched, or else when its handle
//! no longer opens. A directory that came in from outside the fileset
//! (moved in, not created) is read whole, since nothing inside it was
//! watched as part of the fileset.

use super::{BARRIER_PREFIX, JournalError, JournalFiles, Line};
use crate::snapdiff::build::{GenerationSource, record_from_stat, stat_btime_generation};
use crate::snapdiff::manifest::ManifestError;
use crate::snapdiff::parallel::{drop_in_background, each_on_a_thread};
use crate::snapdiff::paths::DirTable;
use crate::snapdiff::provider::changes::{Changed, ChangesQuery, ChangesRead, OldRecords};
use crate::snapdiff::record::Record;
use crate::sys::fanotify::{self, Fid, mask};
use crate::sys::{self, Base, DirReader, FileStat, StatMask};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the run stats: what a walk of the `none` provider stats.
const STAT: StatMask = GenerationSource::Btime.stat_mask();

/// How long a run waits for the writer to journal its barrier.
pub const BARRIER_WAIT: Duration = Duration::from_secs(5);

/// A run's position in the journal: its barrier's sequence number and
/// token. The token is what proves, next run, that a barrier of that
/// number is this one: a journal started over (its files removed, or lost
/// unsynced in a crash and the sequence taken up again lower) can hold
/// another barrier of the same number, after a gap its window would not
/// see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The barrier's sequence number.
    pub seq: u64,
    /// The token in its barrier file's name.
    pub token: String,
}

/// Fixes a run's position in the journal: creates a barrier file in the
/// state directory and waits for the writer to journal it. `Err(gap)` when
/// the journal cannot give one (no writer, or a writer that does not see
/// the state directory's filesystem).
pub fn barrier(files: &JournalFiles) -> Result<Position, Gap> {
    match File::options().append(true).open(&files.lock) {
        Ok(file) => match sys::try_lock_exclusive(&file) {
            Ok(true) => return Err(Gap::WriterStopped),
            Ok(false) => {}
            Err(e) => {
                return Err(Gap::Lock {
                    lock: files.lock.clone(),
                    source: Arc::new(e),
                });
            }
        },
        Err(e) => {
            return Err(Gap::NoLock {
                lock: files.lock.clone(),
                source: Arc::new(e),
            });
        }
    }
    let token = format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_nanosecond());
    // Only what the writer appends from here on can hold the barrier.
    let from = std::fs::metadata(&files.current).map_or(0, |m| m.len());
    let path = files.dir.join(format!("{BARRIER_PREFIX}{token}"));
    File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Gap::BarrierFile {
            path: path.clone(),
            source: Arc::new(e),
        })?;
    let found = wait_for_barrier(files, &token, from);
    let _ = std::fs::remove_file(&path);
    found.map(|seq| Position { seq, token })
}

/// Each run's position in a journal, by the name of its snapshot: the
/// barrier taken for it, or the gap that left it none. What both
/// providers that read a journal (`none`, `btrfs`) keep between taking a
/// snapshot and reading its changes.
#[derive(Default)]
pub struct Positions(Mutex<HashMap<String, Result<Position, Gap>>>);

impl Positions {
    /// Fixes snapshot `name`'s position in the journal `files`: a barrier,
    /// now.
    pub fn fix(&self, files: &JournalFiles, name: &str) {
        let at = barrier(files);
        self.0.lock().unwrap().insert(name.to_string(), at);
    }

    /// Snapshot `name`'s position, or why it has none.
    pub fn of(&self, name: &str) -> Result<Position, Gap> {
        match self.0.lock().unwrap().get(name) {
            Some(at) => at.clone(),
            None => Err(Gap::NoPosition),
        }
    }
}

fn wait_for_barrier(files: &JournalFiles, token: &str, mut from: u64) -> Result<u64, Gap> {
    let start = Instant::now();
    // The writer journals a barrier within a millisecond or two of its
    // creation: look often at first.
    let mut pause = Duration::from_micros(250);
    loop {
        let mut seen = None;
        // A rotation starts the file over.
        if std::fs::metadata(&files.current).is_ok_and(|m| m.len() < from) {
            from = 0;
        }
        from = JournalFiles::read_file(&files.current, from, 0, 1, |l| {
            if let Line::Barrier { seq, token: t } = l
                && t == token
            {
                seen = Some(seq);
            }
        })
        .map_err(|e| Gap::Read(Arc::new(e)))?;
        if let Some(seq) = seen {
            return Ok(seq);
        }
        if start.elapsed() >= BARRIER_WAIT {
            return Err(Gap::BarrierLate { dir: files.dir.clone() });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The events between two barriers, or why the journal has a gap there:
/// from the barrier numbered `since` (with token `since_token`, where the
/// baseline recorded one: manifests written before tokens were kept did
/// not) to the run's own, `until`, parsed on up to `threads` threads.
pub fn window(
    files: &JournalFiles,
    since: u64,
    since_token: Option<&str>,
    until: &Position,
    threads: usize,
) -> Result<Result<Vec<Line>, Gap>, JournalError> {
    let (until, until_token) = (until.seq, until.token.as_str());
    let mut lines = Vec::new();
    let (mut found_since, mut found_until) = (false, false);
    let mut gap: Option<Gap> = None;
    for path in files.holding_from(since)? {
        let from = super::offset_before(path, since);
        JournalFiles::read_file(path, from, since.saturating_sub(1), threads, |l| {
            let seq = l.seq();
            if let Line::Barrier { token, .. } = &l {
                if seq == since && since_token.is_none_or(|t| t == token) {
                    found_since = true;
                }
                if seq == until && token == until_token {
                    found_until = true;
                }
            }
            if seq <= since || seq > until || gap.is_some() {
                return;
            }
            match l {
                Line::Session { boot, .. } => gap = Some(Gap::WriterRestarted { boot }),
                Line::Overflow { .. } => gap = Some(Gap::Overflow),
                Line::Event { .. } => lines.push(l),
                Line::Barrier { .. } => {}
            }
        })?;
    }
    if !found_since {
        return Ok(Err(Gap::PositionLost { since }));
    }
    // The writer may have rotated the journal between the reads of its
    // two files: then the window's end was not read, nor the events
    // before it.
    if gap.is_none() && !found_until {
        gap = Some(Gap::Rotated { until });
    }
    Ok(match gap {
        Some(g) => Err(g),
        None => Ok(lines),
    })
}

/// The inodes of btrfs subvolume `subvolume` (its tree id; any
/// filesystem's inodes for `None`) that `events` name, ascending: each
/// event's object, and the directory an entry was created in, deleted
/// from or moved into or out of, or whose own attributes changed. What
/// the btrfs provider reads again from its snapshot when the journal
/// narrows its search.
pub fn named_inodes(events: &[Line], subvolume: Option<u64>) -> Vec<u64> {
    let ours = |f: &Fid| f.btrfs_root() == subvolume;
    let mut out = Vec::with_capacity(events.len());
    for l in events {
        let Line::Event {
            mask: m, dir, target, ..
        } = l
        else {
            continue;
        };
        out.extend(target.as_ref().filter(|t| ours(t)).and_then(Fid::ino));
        if let Some((d, name)) = dir.as_ref().filter(|(d, _)| ours(d))
            && (name == b"." || m & mask::ENTRIES != 0)
        {
            out.extend(d.ino());
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What changed in the live tree at `root` between two barriers, from the
/// journal's events (see the module documentation).
pub fn changed(root: &Path, events: Vec<Line>, q: ChangesQuery<'_>) -> Result<ChangesRead, ChangesError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChangesError::Io {
            path: path.clone(),
            source,
        }
    };
    let root_dir = File::open(root).map_err(io_err(root))?;
    let mount = root_dir.as_fd();
    let root_st = sys::stat_fd(mount, StatMask::ALL).map_err(io_err(root))?;
    let root_ino = root_st.ino;
    // On btrfs, inode numbers repeat in every subvolume (each root is
    // 256): only handles of the fileset's own subvolume name its inodes.
    let subvolume = fanotify::handle_of(mount).map_err(io_err(root))?.btrfs_root();
    // A walk skips the root's `.snapshots` (where the btrfs provider keeps
    // its snapshots, each a subvolume): so does this.
    let snapshots_dir = sys::stat_at(Base::Dir(mount), c".snapshots", false, StatMask::ALL)
        .ok()
        .filter(|st| st.mode & libc::S_IFMT == libc::S_IFDIR)
        .map(|st| st.ino);
    // The work done: events read, and entries of directories read whole.
    let mut examined = events.len() as u64;

    // What the events touched: entries, the objects they name, and the
    // handles to open them by.
    let mut entries: Vec<TouchedEntry> = Vec::with_capacity(events.len());
    let mut handles: FxHashMap<u64, Fid> = FxHashMap::with_capacity_and_hasher(events.len(), Default::default());
    let mut created: FxHashSet<u64> = FxHashSet::default();
    let mut changed: BTreeSet<u64> = BTreeSet::new();
    for l in events {
        let Line::Event {
            mask: m, dir, target, ..
        } = l
        else {
            continue;
        };
        if let Some(t) = target
            .as_ref()
            .filter(|t| t.btrfs_root() == subvolume)
            .and_then(|t| t.ino().map(|i| (i, t)))
        {
            changed.insert(t.0);
            handles.entry(t.0).or_insert_with(|| t.1.clone());
            if m & mask::CREATE != 0 {
                created.insert(t.0);
            }
        }
        let Some((dir, name)) = dir else { continue };
        let Some(dir_ino) = dir.ino() else { continue };
        if snapshots_dir == Some(dir_ino) || (dir_ino == root_ino && name == b".snapshots") {
            continue;
        }
        if name == b"." {
            changed.insert(dir_ino);
            handles.insert(dir_ino, dir);
            continue;
        }
        if m & mask::ENTRIES != 0 {
            // The directory's own times and size changed with its entries.
            changed.insert(dir_ino);
            handles.entry(dir_ino).or_insert_with(|| dir.clone());
        }
        entries.push(((dir_ino, name), dir));
    }
    // One entry per (directory, name), with the handle of its latest
    // event: reversed, a stable sort puts the latest of each first.
    entries.reverse();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    if changed.len() > q.limit {
        return Ok(ChangesRead::TooMany);
    }

    // The touched entries as they are now, on the run's threads.
    let mut seen = Seen::with_capacity(entries.len());
    let threads = q.threads();
    match stat_entries(mount, root_st.dev, q.old_dirs, &entries, threads) {
        Ok((found, dirs)) => {
            for (dir, name, st) in found {
                changed.insert(st.ino);
                seen.observe(dir, name, st);
            }
            // The changed directories' own attributes, from the
            // descriptors the entries were looked up in.
            for st in dirs {
                if changed.contains(&st.ino) {
                    seen.stat.entry(st.ino).or_insert(st);
                }
            }
        }
        Err(StatFail::Foreign(name)) => {
            return Ok(ChangesRead::Unable(format!(
                "{} is on another filesystem or subvolume",
                root.join(std::ffi::OsStr::from_bytes(&name)).display()
            )));
        }
        Err(StatFail::Io(name, e)) => {
            return Err(ChangesError::Io {
                path: root.join(String::from_utf8_lossy(&name).as_ref()),
                source: e,
            });
        }
    }
    if changed.len() > q.limit {
        return Ok(ChangesRead::TooMany);
    }
    let touched: Touched<'_> = entries.iter().map(|((d, n), _)| (*d, n.as_slice())).collect();
    // The baseline's records of what changed: they also tell which
    // unseen inodes are gone without asking the filesystem.
    let first: Vec<u64> = changed
        .iter()
        .copied()
        .chain(seen.stat.keys().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut old: FxHashMap<u64, Vec<Record>> = FxHashMap::with_capacity_and_hasher(first.len(), Default::default());
    for r in q.old_records.records_of(&first)? {
        add_old(&mut old, r);
    }
    // A changed inode no touched entry holds: its handle tells whether it
    // is still there (its attributes changed, or a link of it elsewhere
    // was touched), unless the baseline proves it gone.
    for &ino in &changed {
        if !seen.stat.contains_key(&ino)
            && !unlinked(old.get(&ino).map_or(&[], Vec::as_slice), &touched)
            && let Some(st) = handles
                .get(&ino)
                .and_then(|h| open_handle(mount, h, libc::O_PATH))
                .and_then(|fd| sys::stat_fd(fd.as_fd(), STAT).ok())
                .filter(|st| st.ino == ino)
        {
            seen.stat.insert(ino, st);
        }
    }
    // Directories moved in from outside (not created): everything under
    // them is new to the fileset.
    let walk_in: Vec<u64> = changed
        .iter()
        .copied()
        .filter(|ino| {
            // The root is no directory table's entry, and never new.
            *ino != root_ino
                && seen
                    .stat
                    .get(ino)
                    .is_some_and(|st| st.mode & libc::S_IFMT == libc::S_IFDIR)
                && q.old_dirs.get(*ino).is_none()
                && !created.contains(ino)
        })
        .collect();
    // Reads the directories `dirs` whole into `seen`; `false` at another
    // filesystem or subvolume inside one of them.
    let read_whole = |dirs: Vec<u64>, seen: &mut Seen, examined: &mut u64| -> Result<bool, ChangesError> {
        for dir in dirs {
            if let Some(fd) = handles
                .get(&dir)
                .and_then(|h| open_handle(mount, h, libc::O_RDONLY | libc::O_DIRECTORY))
            {
                match read_subtree(fd, dir, root_st.dev, seen).map_err(io_err(root))? {
                    Some(n) => *examined += n,
                    None => return Ok(false),
                }
            }
        }
        Ok(true)
    };
    if !read_whole(walk_in, &mut seen, &mut examined)? {
        return Ok(ChangesRead::Unable(FOREIGN.into()));
    }
    if seen.stat.len() > q.limit {
        return Ok(ChangesRead::TooMany);
    }
    let mut inos = first;
    look_up_new(&seen, &mut inos, &mut old, q.old_records)?;
    let mut records = records_now(root_ino, &touched, &seen, &inos, &old);
    let mut gone = Vec::new();
    // Directories that were inside and now are outside: what they hold
    // left with them, unless it has links inside too.
    let left = inside_only(root_ino, q.old_dirs, &mut records, &old, &mut gone);
    if !left.is_empty() {
        if !read_whole(left, &mut seen, &mut examined)? {
            return Ok(ChangesRead::Unable(FOREIGN.into()));
        }
        let more = look_up_new(&seen, &mut inos, &mut old, q.old_records)?;
        records.extend(records_now(root_ino, &touched, &seen, &more, &old));
        gone.clear();
        inside_only(root_ino, q.old_dirs, &mut records, &old, &mut gone);
    }
    records.sort();
    records.dedup_by(|a, b| a.key() == b.key() && a.same_link(b));
    gone.sort_unstable();
    gone.dedup();
    // What the read held is tens of thousands of small allocations per
    // thousand changes: freeing them took 7 % of a run (40 ms of the
    // uniform 1 % set), which the diff need not wait for.
    drop(touched);
    drop_in_background((entries, handles, seen, old, changed, inos));
    Ok(ChangesRead::Read(Changed {
        records,
        gone,
        examined,
        journal: true,
    }))
}

/// Looks up the baseline's records of the inodes seen that are not in
/// `inos` yet (what directories read whole held) into `old`, adds them to
/// `inos` (kept ascending) and returns them.
fn look_up_new(
    seen: &Seen,
    inos: &mut Vec<u64>,
    old: &mut FxHashMap<u64, Vec<Record>>,
    lookup: &mut dyn OldRecords,
) -> Result<Vec<u64>, ManifestError> {
    let known: FxHashSet<u64> = inos.iter().copied().collect();
    let mut more: Vec<u64> = seen.stat.keys().copied().filter(|i| !known.contains(i)).collect();
    if more.is_empty() {
        return Ok(more);
    }
    more.sort_unstable();
    for r in lookup.records_of(&more)? {
        add_old(old, r);
    }
    inos.extend_from_slice(&more);
    inos.sort_unstable();
    Ok(more)
}

/// Files `r` under its inode in `old`. Most inodes have one link: a
/// vector of one, where growing from empty allocated room for four
/// records for each of tens of thousands of inodes.
fn add_old(old: &mut FxHashMap<u64, Vec<Record>>, r: Record) {
    old.entry(r.ino).or_insert_with(|| Vec::with_capacity(1)).push(r);
}

/// Whether the baseline proves an inode no touched entry holds gone: a
/// file (not a directory, whose link count counts its subdirectories)
/// all of whose links were in the fileset (its link count says so) and
/// were touched. A link made since would have been touched too, and is
/// not held (the caller asks only about inodes no touched entry holds).
/// Saves opening its handle: on btrfs, a stale handle costs a search of
/// the tree and an inode allocated and freed, a third of a run where 1 %
/// of the files were deleted.
fn unlinked(old: &[Record], touched: &Touched<'_>) -> bool {
    let Some(first) = old.first() else { return false };
    !first.is_dir()
        && old.iter().all(|r| {
            r.generation == first.generation
                && r.nlink == old.len() as u64
                && touched.contains(&(r.parent, r.name.as_slice()))
        })
}

/// The entries the events touched, as (directory, name), to ask about
/// without copying names.
type Touched<'a> = FxHashSet<(u64, &'a [u8])>;

/// Why the touched entries could not all be looked up.
enum StatFail {
    /// This entry is on another filesystem or subvolume.
    Foreign(Vec<u8>),
    /// This entry could not be stat'ed.
    Io(Vec<u8>, io::Error),
}

/// The touched entries that still exist, and the directories holding them.
type Stats = (Vec<(u64, Vec<u8>, FileStat)>, Vec<FileStat>);

/// A touched entry, (directory, name), with its directory's handle.
type TouchedEntry = ((u64, Vec<u8>), Fid);

/// Stats every touched entry that still exists, in its directory opened
/// (`O_PATH`: nothing is read through it) by its path in the baseline
/// where that still leads to it, else by its handle, and each such directory
/// itself, on `threads` threads, each taking a contiguous run of the
/// entries (mostly whole directories).
fn stat_entries(
    mount: BorrowedFd<'_>,
    dev: u64,
    old_dirs: &DirTable,
    all: &[TouchedEntry],
    threads: usize,
) -> Result<Stats, StatFail> {
    let per = all.len().div_ceil(threads.max(1)).max(1);
    let one = |part: &[TouchedEntry]| -> Result<Stats, StatFail> {
        let mut out = Vec::with_capacity(part.len());
        let mut dirs = Vec::new();
        let mut dir: Option<(u64, Option<OwnedFd>)> = None;
        for ((dir_ino, name), fid) in part {
            if dir.as_ref().is_none_or(|(d, _)| d != dir_ino) {
                let opened = open_by_old_path(mount, dev, old_dirs, *dir_ino).or_else(|| {
                    let fd = open_handle(mount, fid, libc::O_PATH | libc::O_DIRECTORY)?;
                    let st = sys::stat_fd(fd.as_fd(), STAT).ok()?;
                    Some((fd, st))
                });
                dir = Some((
                    *dir_ino,
                    opened.map(|(fd, st)| {
                        dirs.push(st);
                        fd
                    }),
                ));
            }
            let Some((_, Some(fd))) = &dir else { continue };
            let Ok(c) = CString::new(name.clone()) else { continue };
            match sys::stat_at(Base::Dir(fd.as_fd()), &c, false, STAT) {
                // Another filesystem or subvolume inside the fileset: a walk
                // reports its root entry under that filesystem's own inode
                // number, which may be one of the fileset's (256 on btrfs).
                Ok(st) if st.dev != dev => return Err(StatFail::Foreign(name.clone())),
                Ok(st) => out.push((*dir_ino, name.clone(), st)),
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(StatFail::Io(name.clone(), e)),
            }
        }
        Ok((out, dirs))
    };
    if all.len() <= per {
        return one(all);
    }
    // Cut at directory boundaries: a directory is opened by one thread.
    let mut parts: Vec<&[TouchedEntry]> = Vec::with_capacity(threads);
    let mut rest = all;
    while !rest.is_empty() {
        let mut cut = per.min(rest.len());
        while cut < rest.len() && rest[cut].0.0 == rest[cut - 1].0.0 {
            cut += 1;
        }
        let (part, after) = rest.split_at(cut);
        parts.push(part);
        rest = after;
    }
    let parts = each_on_a_thread(parts, one);
    let (mut out, mut dirs) = (Vec::with_capacity(all.len()), Vec::new());
    for p in parts {
        let (o, d) = p?;
        out.extend(o);
        dirs.extend(d);
    }
    Ok((out, dirs))
}

/// What is seen of the tree now: attributes by inode, and the links found
/// holding each inode.
#[derive(Default)]
struct Seen {
    stat: FxHashMap<u64, FileStat>,
    links: FxHashMap<u64, Vec<(u64, Vec<u8>)>>,
}

impl Seen {
    fn with_capacity(n: usize) -> Seen {
        Seen {
            stat: FxHashMap::with_capacity_and_hasher(n, Default::default()),
            links: FxHashMap::with_capacity_and_hasher(n, Default::default()),
        }
    }

    fn observe(&mut self, parent: u64, name: Vec<u8>, st: FileStat) {
        self.stat.insert(st.ino, st);
        self.links.entry(st.ino).or_default().push((parent, name));
    }
}

/// The records of `inos` that exist now (`seen`): the baseline's links of
/// the same inode (generation) that no event touched, and the links seen
/// holding it now. The fileset's `root` has the root's one record.
fn records_now(
    root: u64,
    touched: &Touched<'_>,
    seen: &Seen,
    inos: &[u64],
    old: &FxHashMap<u64, Vec<Record>>,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(inos.len());
    for ino in inos {
        let Some(st) = seen.stat.get(ino) else { continue };
        let generation = stat_btime_generation(st);
        if *ino == root {
            out.push(record_from_stat(st, generation, 0, Vec::new()));
            continue;
        }
        for r in old.get(ino).into_iter().flatten() {
            if r.generation == generation && !touched.contains(&(r.parent, r.name.as_slice())) {
                out.push(record_from_stat(st, generation, r.parent, r.name.clone()));
            }
        }
        for (parent, name) in seen.links.get(ino).into_iter().flatten() {
            out.push(record_from_stat(st, generation, *parent, name.clone()));
        }
    }
    out
}

/// Keeps the links whose directory is inside the fileset (reaches the
/// root through the new directory table); an inode left without any that
/// the baseline had is gone (moved out of the fileset). The entry
/// `.snapshots` at the root is never inside, as a walk skips it. Returns
/// the directories the baseline had that now exist outside.
fn inside_only(
    root: u64,
    old_dirs: &DirTable,
    records: &mut Vec<Record>,
    old: &FxHashMap<u64, Vec<Record>>,
    gone: &mut Vec<u64>,
) -> Vec<u64> {
    let mut parent_of: FxHashMap<u64, Option<u64>> = FxHashMap::default();
    for r in records.iter().filter(|r| r.is_dir()) {
        let inside_name = !(r.parent == root && r.name == b".snapshots");
        parent_of.insert(r.ino, inside_name.then_some(r.parent));
    }
    // Changed directories that are gone have no parent now.
    for &g in gone.iter() {
        parent_of.insert(g, None);
    }
    let mut memo: FxHashMap<u64, bool> = FxHashMap::default();
    memo.insert(root, true);
    let mut inside = |mut d: u64| -> bool {
        let mut path = Vec::new();
        let verdict = loop {
            if let Some(&v) = memo.get(&d) {
                break v;
            }
            if path.len() > 4096 || path.contains(&d) {
                break false;
            }
            path.push(d);
            let up = match parent_of.get(&d) {
                Some(p) => *p,
                None => old_dirs.get(d).map(|(p, _)| p),
            };
            match up {
                Some(p) if p != 0 => d = p,
                _ => break false,
            }
        };
        for p in path {
            memo.insert(p, verdict);
        }
        verdict
    };
    let mut kept_inos: FxHashSet<u64> = FxHashSet::default();
    records.retain(|r| {
        let keep = r.parent == 0 || inside(r.parent);
        if keep {
            kept_inos.insert(r.ino);
        }
        keep
    });
    let mut left = Vec::new();
    for ino in old.keys() {
        if !kept_inos.contains(ino) {
            if old_dirs.get(*ino).is_some() && parent_of.get(ino).is_some_and(Option::is_some) {
                left.push(*ino);
            }
            gone.push(*ino);
        }
    }
    left
}

/// Why a run walks after all when a directory read whole holds another
/// filesystem or subvolume.
const FOREIGN: &str = "a directory that came into or left the fileset holds another filesystem or subvolume";

/// Reads everything under the directory `fd` (inode `dir`) into `seen`;
/// returns how many entries it read, or `None` at an entry on another
/// device than `dev` (see [`changed`]).
fn read_subtree(fd: OwnedFd, dir: u64, dev: u64, seen: &mut Seen) -> io::Result<Option<u64>> {
    let mut read = 0;
    let mut stack = vec![(fd, dir)];
    let mut visited: FxHashSet<u64> = FxHashSet::default();
    visited.insert(dir);
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
    while let Some((fd, ino)) = stack.pop() {
        let mut names: Vec<CString> = Vec::new();
        let mut rd = DirReader::new(fd.as_fd(), &mut buf);
        while rd.read_batch(|e| names.push(e.name.to_owned()))? {}
        for name in names {
            let st = match sys::stat_at(Base::Dir(fd.as_fd()), &name, false, STAT) {
                Ok(st) => st,
                Err(e) if is_gone(&e) => continue,
                Err(e) => return Err(e),
            };
            if st.dev != dev {
                return Ok(None);
            }
            seen.observe(ino, name.to_bytes().to_vec(), st);
            read += 1;
            if st.mode & libc::S_IFMT == libc::S_IFDIR && visited.insert(st.ino) {
                match sys::open_dir_at(Base::Dir(fd.as_fd()), &name, false) {
                    Ok(sub) => stack.push((sub, st.ino)),
                    Err(e) if is_gone(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(Some(read))
}

/// Opens directory `ino` (`O_PATH`) by its path from the fileset's root
/// `root` in the baseline's directory table, with its attributes, when
/// that path still leads to it (the same inode on device `dev`: one
/// inode, whatever renames or links led there). A path of a few
/// components resolves in the dentry cache, where opening a file handle
/// costs the filesystem a lookup: on btrfs 7.6 µs a directory against
/// 2.7 µs a `statx` (`perf` of the uniform 1 % set, where every run
/// opens 10,000 directories). `None` sends the caller to the handle.
fn open_by_old_path(root: BorrowedFd<'_>, dev: u64, old_dirs: &DirTable, ino: u64) -> Option<(OwnedFd, FileStat)> {
    let path = old_dirs.path(ino).filter(|p| !p.is_empty())?;
    let fd = sys::open_path_at(Base::Dir(root), &CString::new(path).ok()?).ok()?;
    let st = sys::stat_fd(fd.as_fd(), STAT).ok()?;
    (st.ino == ino && st.dev == dev && st.mode & libc::S_IFMT == libc::S_IFDIR).then_some((fd, st))
}

fn open_handle(mount: BorrowedFd<'_>, fid: &Fid, flags: i32) -> Option<OwnedFd> {
    fanotify::open_by_handle(mount, fid, flags).ok()
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE | libc::ENOTDIR))
}

/// Why the journal cannot guide a run, which then walks the whole tree
/// and says this. Cloned: a snapshot's position (or its gap) is asked for
/// again by each read of its changes.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Gap {
    /// The writer's lock is free: nothing is journaling.
    #[error("the journal writer is not running")]
    WriterStopped,
    /// The writer's lock could not be opened (a missing lock file means
    /// no writer ever ran here).
    #[error("the journal writer is not running ({}: {source})", lock.display())]
    NoLock {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        source: Arc<io::Error>,
    },
    /// The writer's lock could not be tried.
    #[error("cannot tell whether the journal writer runs ({}: {source})", lock.display())]
    Lock {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        source: Arc<io::Error>,
    },
    /// The run's barrier file could not be created.
    #[error("cannot create the journal barrier {}: {source}", path.display())]
    BarrierFile {
        /// The barrier file.
        path: PathBuf,
        /// Why.
        source: Arc<io::Error>,
    },
    /// The writer did not journal the barrier within [`BARRIER_WAIT`].
    #[error(
        "the journal writer did not record the barrier within {} s (is the state directory {} on the fileset's filesystem?)",
        BARRIER_WAIT.as_secs(),
        dir.display()
    )]
    BarrierLate {
        /// The state directory the barrier was created in.
        dir: PathBuf,
    },
    /// The journal could not be read while waiting for the barrier.
    #[error(transparent)]
    Read(Arc<JournalError>),
    /// No barrier was taken for the run's snapshot.
    #[error("the run has no position in the journal")]
    NoPosition,
    /// A writer started between the two barriers.
    #[error("the journal writer restarted (boot {boot}) since the last run: changes may have gone unseen")]
    WriterRestarted {
        /// The new writer's boot id.
        boot: String,
    },
    /// The kernel's queue overflowed between the two barriers.
    #[error("the kernel's event queue overflowed since the last run: changes were lost")]
    Overflow,
    /// The baseline's barrier is no longer in the journal (rotated out,
    /// or the journal started over).
    #[error("the journal no longer holds the last run's position ({since})")]
    PositionLost {
        /// The baseline's barrier number.
        since: u64,
    },
    /// The run's own barrier was not found: the journal rotated between
    /// the reads of its two files.
    #[error("the journal was rotated while the run read it (its position {until} was not found)")]
    Rotated {
        /// The run's barrier number.
        until: u64,
    },
}

/// Why the changes the journal points at could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    /// A file of the tree could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The baseline manifest could not be read.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapdiff::journal::MAGIC;

    /// A writer that rotates the journal between the reads of its two
    /// files leaves the window's end unread: a gap, not a short window.
    #[test]
    fn a_window_whose_end_was_not_read_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let files = JournalFiles::new(dir.path(), "k");
        let event = "E 11 100 - - -\n";
        std::fs::write(&files.previous, format!("{MAGIC}\nB 10 t\n{event}")).unwrap();
        // The current file, just started over, does not hold it yet.
        std::fs::write(&files.current, format!("{MAGIC}\n")).unwrap();
        let until = Position {
            seq: 20,
            token: "u".into(),
        };
        let gap = window(&files, 10, Some("t"), &until, 1).unwrap().unwrap_err();
        assert!(matches!(gap, Gap::Rotated { until: 20 }), "{gap}");
        std::fs::write(&files.current, format!("{MAGIC}\nB 20 u\n")).unwrap();
        assert_eq!(window(&files, 10, Some("t"), &until, 1).unwrap().unwrap().len(), 1);
    }

    /// A journal that started over holds a barrier of the last run's
    /// number that is not the last run's: its token tells, and the
    /// changes made while the journal was gone are not skipped.
    #[test]
    fn a_barrier_of_the_last_runs_number_but_another_token_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let files = JournalFiles::new(dir.path(), "k");
        // Started over at 1 after the last run's barrier (10, token `t`)
        // was lost; a later run's barrier took number 10 again.
        let lines = "S 1 boot 7\nE 2 100 - - -\nB 10 other\nE 11 100 - - -\nB 20 u\n";
        std::fs::write(&files.current, format!("{MAGIC}\n{lines}")).unwrap();
        let until = Position {
            seq: 20,
            token: "u".into(),
        };
        let gap = window(&files, 10, Some("t"), &until, 1).unwrap().unwrap_err();
        assert!(matches!(gap, Gap::PositionLost { since: 10 }), "{gap}");
        // The baseline's own barrier, or a baseline from before tokens
        // were kept, opens the window.
        assert_eq!(window(&files, 10, Some("other"), &until, 1).unwrap().unwrap().len(), 1);
        assert_eq!(window(&files, 10, None, &until, 1).unwrap().unwrap().len(), 1);
        // The run's own barrier is known by its token too.
        let not_ours = Position {
            seq: 20,
            token: "v".into(),
        };
        let gap = window(&files, 10, None, &not_ours, 1).unwrap().unwrap_err();
        assert!(matches!(gap, Gap::Rotated { until: 20 }), "{gap}");
    }
}
