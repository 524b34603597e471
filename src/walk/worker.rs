//! The per-directory work of a walk: open, read, stat, spawn, send.

use super::{Op, SnapshotDirs, WalkError, WalkEvent, WalkOptions};
use crate::entry::{Entry, FileType};
use crate::rules::Verdict;
use crate::sys::{self, Base, DirReader, FileStat, StatMask};
use crate::task::{Summary, SummaryCounters};
use crossbeam_channel::Sender;
use rayon::Scope;
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// State shared by every job of one walk.
pub(super) struct Shared {
    opts: WalkOptions,
    tx: Sender<WalkEvent>,
    counters: Arc<SummaryCounters>,
    cancel: Arc<AtomicBool>,
    /// Stat jobs handed to other threads and not yet finished.
    stat_jobs: AtomicUsize,
    /// Whether stats here are round trips to a server (see [`SLOW_STAT`]):
    /// then every buffer's stats are spread over the pool in small jobs.
    slow: Arc<AtomicBool>,
    /// Directory descriptors kept open for their children.
    open_dirs: AtomicUsize,
    fd_budget: usize,
    mask: StatMask,
}

/// An open directory whose children are still being opened or stat'ed.
struct Dir<'a> {
    fd: OwnedFd,
    /// The walk's count of retained descriptors, when this one is counted
    /// (children then open relative to it); `None` once the budget is
    /// spent, and children open by full path instead.
    retained: Option<&'a AtomicUsize>,
    path: Vec<u8>,
    /// Inode number, the `parent` of the entries found in it.
    ino: u64,
    depth: usize,
    root_dev: u64,
    ancestors: Option<Arc<Ancestor>>,
}

/// A directory on the current path, for symlink-loop detection.
struct Ancestor {
    dev: u64,
    ino: u64,
    parent: Option<Arc<Ancestor>>,
}

/// A directory waiting to be read.
struct DirJob<'a> {
    parent: Option<Arc<Dir<'a>>>,
    /// Name relative to the parent, or the full path when opened detached.
    name: CString,
    path: Vec<u8>,
    ino: u64,
    depth: usize,
    root_dev: u64,
    /// Whether the directory itself was emitted (for `empty_dirs`).
    emitted: bool,
    ancestors: Option<Arc<Ancestor>>,
}

/// An entry whose name was copied out of the buffer to be stat'ed elsewhere.
struct Pending {
    name: CString,
    path: Vec<u8>,
    ino: u64,
    verdict: Verdict,
}

/// Entries and counts being gathered for the next send, by one job.
///
/// Entries of many small directories share one chunk: a job starts with
/// what its thread carried over from the previous job (see [`CARRY`]) and
/// sends only when the chunk is full, the thread has no queued work left
/// or the filesystem is slow ([`Shared::end_job`]), instead of one channel
/// send (and consumer wake-up) per directory.
struct Chunk<'a> {
    entries: Vec<Entry>,
    summary: Summary,
    /// Subdirectories of a directory past the descriptor budget, to be
    /// walked in place once it has been read (see [`Shared::dir`]).
    deferred: Vec<DirJob<'a>>,
}

impl Chunk<'_> {
    /// Starts a job's chunk with what this thread carried over.
    fn resume() -> Self {
        let (entries, summary) = CARRY.take();
        Chunk {
            entries,
            summary,
            deferred: Vec::new(),
        }
    }
}

thread_local! {
    /// The thread's `getdents64` buffer, reused by every directory it reads.
    static BUFFER: Cell<Vec<MaybeUninit<u8>>> = const { Cell::new(Vec::new()) };
    /// Entries and counts a thread has gathered but not sent yet.
    static CARRY: Cell<(Vec<Entry>, Summary)> = Cell::new((Vec::new(), Summary::default()));
    /// The thread's stats so far and the quickest stat of its current
    /// probe window (see [`PROBE_EVERY`]).
    static PROBE: Cell<(u32, Duration)> = const { Cell::new((0, Duration::MAX)) };
}

/// How many entries a stat job handed to another thread carries.
const STAT_JOB_ENTRIES: usize = 1024;

/// A stat slower than this, every time, is a round trip to a metadata
/// server (GPFS, Lustre, NFS: 100 µs to 2 ms), not a read of the kernel's
/// cache (1–3 µs) or of a local disk's inode table (tens of µs on an SSD).
///
/// On such a filesystem a directory's entries are stat'ed by the whole
/// pool in jobs of [`SLOW_STAT_JOB_ENTRIES`], from its first buffer on,
/// instead of by the thread that read it: otherwise a directory of 2,000
/// files takes 2,000 round trips on one thread while the others idle, and
/// a subdirectory found late in it waits for them (measured on latencyfs
/// at 1 ms: a 50-level chain of 2,000-file directories took 51 s at
/// `-j 64`, 2 requests in flight on average; a single 100,000-file
/// directory 7.2 s, 16 in flight). On a fast filesystem the same spreading
/// would cost more in hand-offs than it gains, so it waits for the proof.
const SLOW_STAT: Duration = Duration::from_micros(50);

/// Each thread times [`PROBE_STATS`] consecutive stats of every
/// `PROBE_EVERY` (two clock reads each): enough to notice a slow
/// filesystem within a thread's first stats, too few to cost anything on
/// a fast one. The quickest of the window is what counts: on a slow
/// filesystem every stat is slow, while a preemption or a page fault on a
/// busy machine slows one or two (with more threads than cores, a sum
/// over the window would be fooled within thousands of windows, and the
/// flag is never cleared).
const PROBE_EVERY: u32 = 1024;
const PROBE_STATS: u32 = 8;

/// How many entries a stat job carries on a slow filesystem: about 35 ms
/// of round trips at 1 ms, small enough that every thread gets work from
/// one big directory, big enough that spawning costs nothing beside them.
const SLOW_STAT_JOB_ENTRIES: usize = 32;

impl Drop for Dir<'_> {
    fn drop(&mut self) {
        if let Some(open) = self.retained {
            open.fetch_sub(1, Relaxed);
        }
    }
}

impl Shared {
    pub(super) fn new(
        opts: WalkOptions,
        tx: Sender<WalkEvent>,
        counters: Arc<SummaryCounters>,
        cancel: Arc<AtomicBool>,
        slow: Arc<AtomicBool>,
    ) -> Shared {
        let limit = usize::try_from(sys::raise_nofile_limit()).unwrap_or(usize::MAX);
        let fd_budget = (limit.saturating_sub(64) / 2).clamp(16, 16_384);
        let mask = if opts.stat {
            opts.stat_mask.union(StatMask::TYPE)
        } else {
            StatMask::TYPE
        };
        Shared {
            opts,
            tx,
            counters,
            cancel,
            stat_jobs: AtomicUsize::new(0),
            slow,
            open_dirs: AtomicUsize::new(0),
            fd_budget,
            mask,
        }
    }

    /// Walks every root on `pool` and returns when all jobs are done.
    pub(super) fn run(self, pool: &rayon::ThreadPool, roots: Vec<Vec<u8>>) {
        let this = &self;
        pool.scope(|s| {
            for root in roots {
                s.spawn(move |s| this.root(s, root));
            }
        });
        // Every thread sends what it still carries.
        pool.broadcast(|_| this.flush(&mut Chunk::resume()));
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Relaxed)
    }

    fn send(&self, ev: WalkEvent) {
        if self.tx.send(ev).is_err() {
            // The consumer is gone: stop producing.
            self.cancel.store(true, Relaxed);
        }
    }

    fn fail(&self, path: Vec<u8>, op: Op, error: io::Error) {
        self.counters.add(&Summary {
            failures: 1,
            ..Summary::default()
        });
        self.send(WalkEvent::Error(WalkError { path, op, error }));
    }

    fn flush(&self, chunk: &mut Chunk<'_>) {
        self.counters.add(&chunk.summary);
        chunk.summary = Summary::default();
        if !chunk.entries.is_empty() {
            let entries = std::mem::replace(&mut chunk.entries, Vec::with_capacity(self.opts.chunk_entries));
            self.send(WalkEvent::Entries(entries));
        }
    }

    /// Ends a job: sends its chunk if it is full, this thread has nothing
    /// queued (it may go idle, and its entries must not wait) or the
    /// filesystem is slow, otherwise carries it over to the thread's next
    /// job.
    ///
    /// On a slow filesystem every job is a few round trips, so a send per
    /// job costs nothing beside them, while carrying delays the first
    /// entries: with 16 threads that always have directories queued, no
    /// thread sent before it had gathered a full chunk, about 90 small
    /// directories (measured on latencyfs at 2 ms: the first 100-file
    /// batch of a recursive_navigate 78 ms after the task was sent, and 192
    /// ms at 5 ms; see docs/benchmarks.md).
    ///
    /// [`Chunk::resume`] emptied the carry when the job began, and jobs do
    /// not nest on a thread (rayon runs another job only inside a `join` or
    /// `scope` wait, which no job makes), so nothing is overwritten here.
    fn end_job(&self, mut chunk: Chunk<'_>) {
        if chunk.entries.len() >= self.opts.chunk_entries
            || self.slow.load(Relaxed)
            || rayon_core::current_thread_has_pending_tasks() != Some(true)
        {
            self.flush(&mut chunk);
        }
        CARRY.set((chunk.entries, chunk.summary));
    }

    fn root<'s>(&'s self, s: &Scope<'s>, path: Vec<u8>) {
        let name = match CString::new(path.clone()) {
            Ok(n) => n,
            Err(_) => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte");
                return self.fail(path, Op::InvalidPath, e);
            }
        };
        let st = match self.stat(Base::Cwd, &name, self.opts.follow_links) {
            Ok(st) => st,
            Err(e) => return self.fail(path, Op::Stat, e),
        };
        let verdict = self.opts.filter.verdict(&path);
        if verdict == Verdict::Prune {
            return;
        }
        let file_type = FileType::from_mode(st.mode);
        let mut chunk = Chunk::resume();
        if file_type == FileType::Directory && self.may_descend(0) {
            let ancestors = self.opts.follow_links.then(|| {
                Arc::new(Ancestor {
                    dev: st.dev,
                    ino: st.ino,
                    parent: None,
                })
            });
            let job = DirJob {
                parent: None,
                name: name.clone(),
                path: path.clone(),
                ino: st.ino,
                depth: 0,
                root_dev: st.dev,
                emitted: verdict == Verdict::Keep,
                ancestors,
            };
            s.spawn(move |s| self.dir(s, job));
        }
        if verdict == Verdict::Keep && self.opts.report_roots {
            let generation = self.generation(Base::Cwd, &name, file_type);
            self.push(&mut chunk, path, file_type, (st.ino, 0), Some(st), generation);
        }
        self.end_job(chunk);
    }

    fn may_descend(&self, depth: usize) -> bool {
        self.opts.max_depth.is_none_or(|m| depth < m)
    }

    fn stat(&self, base: Base<'_>, name: &CStr, follow: bool) -> io::Result<FileStat> {
        match sys::stat_at(base, name, follow, self.mask) {
            // A dangling symlink is reported as the link itself (a chain of
            // links that loops, ELOOP, is a failure, as with `find -L`).
            Err(e) if follow && e.raw_os_error() == Some(libc::ENOENT) => {
                sys::stat_at(base, name, false, self.mask).map_err(|_| e)
            }
            other => other,
        }
    }

    /// Stats an entry found in a directory; until the filesystem has
    /// proved slow, a probe window of stats is timed now and then.
    fn timed_stat(&self, base: Base<'_>, name: &CStr) -> io::Result<FileStat> {
        if self.slow.load(Relaxed) {
            return self.stat(base, name, self.opts.follow_links);
        }
        let (n, mut quickest) = PROBE.get();
        let t0 = (n % PROBE_EVERY < PROBE_STATS).then(Instant::now);
        let r = self.stat(base, name, self.opts.follow_links);
        if let Some(t0) = t0 {
            quickest = quickest.min(t0.elapsed());
        }
        if n % PROBE_EVERY == PROBE_STATS - 1 {
            if quickest > SLOW_STAT {
                self.slow.store(true, Relaxed);
            }
            quickest = Duration::MAX;
        }
        PROBE.set((n.wrapping_add(1), quickest));
        r
    }

    fn generation(&self, base: Base<'_>, name: &CStr, t: FileType) -> Option<u32> {
        if !self.opts.generation || !matches!(t, FileType::File | FileType::Directory) {
            return None;
        }
        let fd = sys::open_file_at(base, name).ok()?;
        sys::inode_generation(fd.as_fd()).ok()
    }

    fn push(
        &self,
        chunk: &mut Chunk<'_>,
        path: Vec<u8>,
        file_type: FileType,
        (ino, parent): (u64, u64),
        meta: Option<FileStat>,
        generation: Option<u32>,
    ) {
        let s = &mut chunk.summary;
        match file_type {
            FileType::File => {
                s.files += 1;
                s.add_bytes(meta.map_or(0, |m| m.size));
            }
            FileType::Directory => s.dirs += 1,
            FileType::Symlink => s.symlinks += 1,
            FileType::Other => s.other += 1,
        }
        chunk.entries.push(Entry {
            path,
            file_type,
            ino,
            parent,
            meta: meta.filter(|_| self.opts.stat),
            generation,
        });
        if chunk.entries.len() >= self.opts.chunk_entries {
            self.flush(chunk);
        }
    }

    /// Opens, reads and dispatches one directory.
    fn dir<'s>(&'s self, s: &Scope<'s>, job: DirJob<'s>) {
        if self.cancelled() {
            return;
        }
        let base = match &job.parent {
            Some(p) => Base::Dir(p.fd.as_fd()),
            None => Base::Cwd,
        };
        let opened = sys::open_dir_at(base, &job.name, self.opts.follow_links);
        drop(job.parent);
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => return self.fail(job.path, Op::OpenDir, e),
        };
        let retained = if self.open_dirs.fetch_add(1, Relaxed) < self.fd_budget {
            Some(&self.open_dirs)
        } else {
            self.open_dirs.fetch_sub(1, Relaxed);
            None
        };
        let dir = Arc::new(Dir {
            fd,
            retained,
            path: job.path,
            ino: job.ino,
            depth: job.depth,
            root_dev: job.root_dev,
            ancestors: job.ancestors,
        });
        let (empty, deferred) = self.read_dir(s, &dir);
        if empty && job.emitted {
            self.counters.add(&Summary {
                empty_dirs: 1,
                ..Summary::default()
            });
        }
        // Past the descriptor budget, subdirectories are walked here, depth
        // first, relative to this still-open directory: no new descriptor
        // is kept per pending directory and no full path is ever resolved
        // (paths may exceed PATH_MAX).
        for job in deferred {
            self.dir(s, job);
        }
    }

    /// Reads the directory; returns whether it had no entries, and the
    /// subdirectories left to walk in place.
    fn read_dir<'s>(&'s self, s: &Scope<'s>, dir: &Arc<Dir<'s>>) -> (bool, Vec<DirJob<'s>>) {
        let retained = dir.retained.is_some();
        let mut buf = BUFFER.take();
        buf.resize(self.opts.getdents_buffer, MaybeUninit::uninit());
        let mut reader = DirReader::new(dir.fd.as_fd(), &mut buf);
        let mut chunk = Chunk::resume();
        let mut empty = true;
        let mut first_buffer = true;
        // Later buffers of a big directory go to other threads to stat; on
        // a slow filesystem every buffer does, in small jobs (decided entry
        // by entry: the first buffer may be what proves it slow).
        let may_offload = retained && self.opts.threads > 1 && self.opts.stat;
        while !self.cancelled() {
            let mut pending: Vec<Pending> = Vec::new();
            let read = reader.read_batch(|d| {
                empty = false;
                let name = d.name.to_bytes();
                let path = join(&dir.path, name);
                let verdict = self.opts.filter.verdict(&path);
                if verdict == Verdict::Prune {
                    return;
                }
                let dtype = FileType::from_dirent(d.d_type);
                if !self.needs_stat(dtype) {
                    let t = dtype.expect("known type when no stat is needed");
                    self.found(s, dir, &mut chunk, d.name, path, t, d.ino, None, verdict);
                    return;
                }
                let slow = self.slow.load(Relaxed);
                let (job_entries, max_jobs) = match slow {
                    true => (SLOW_STAT_JOB_ENTRIES, 4 * self.opts.threads),
                    false => (STAT_JOB_ENTRIES, 2 * self.opts.threads),
                };
                if may_offload && (slow || !first_buffer) && self.stat_jobs.load(Relaxed) < max_jobs {
                    pending.push(Pending {
                        name: d.name.to_owned(),
                        path,
                        ino: d.ino,
                        verdict,
                    });
                    if pending.len() >= job_entries {
                        self.hand_off(s, dir, std::mem::take(&mut pending));
                    }
                } else {
                    self.stat_entry(s, dir, &mut chunk, d.name, path, d.ino, verdict);
                }
            });
            first_buffer = false;
            if !pending.is_empty() {
                self.hand_off(s, dir, pending);
            }
            match read {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.fail(dir.path.clone(), Op::ReadDir, e);
                    break;
                }
            }
        }
        BUFFER.set(buf);
        let deferred = std::mem::take(&mut chunk.deferred);
        self.end_job(chunk);
        (empty, deferred)
    }

    fn needs_stat(&self, dtype: Option<FileType>) -> bool {
        match dtype {
            None => true,
            Some(_) if self.opts.stat => true,
            Some(FileType::Directory) => self.opts.one_file_system || self.opts.follow_links,
            Some(FileType::Symlink) => self.opts.follow_links,
            Some(_) => false,
        }
    }

    fn hand_off<'s>(&'s self, s: &Scope<'s>, dir: &Arc<Dir<'s>>, pending: Vec<Pending>) {
        self.stat_jobs.fetch_add(1, Relaxed);
        let dir = dir.clone();
        s.spawn(move |s| {
            let mut chunk = Chunk::resume();
            for p in pending {
                if self.cancelled() {
                    break;
                }
                self.stat_entry(s, &dir, &mut chunk, &p.name, p.path, p.ino, p.verdict);
            }
            self.end_job(chunk);
            self.stat_jobs.fetch_sub(1, Relaxed);
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn stat_entry<'s>(
        &'s self,
        s: &Scope<'s>,
        dir: &Arc<Dir<'s>>,
        chunk: &mut Chunk<'s>,
        name: &CStr,
        path: Vec<u8>,
        ino: u64,
        verdict: Verdict,
    ) {
        match self.timed_stat(Base::Dir(dir.fd.as_fd()), name) {
            Ok(st) => {
                let t = FileType::from_mode(st.mode);
                self.found(s, dir, chunk, name, path, t, ino, Some(st), verdict);
            }
            // Deleted between getdents and stat: a race, not a failure.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => self.fail(path, Op::Stat, e),
        }
    }

    /// Emits an examined entry and spawns a job for it if it is a directory
    /// to descend.
    #[allow(clippy::too_many_arguments)]
    fn found<'s>(
        &'s self,
        s: &Scope<'s>,
        dir: &Arc<Dir<'s>>,
        chunk: &mut Chunk<'s>,
        name: &CStr,
        path: Vec<u8>,
        t: FileType,
        ino: u64,
        st: Option<FileStat>,
        verdict: Verdict,
    ) {
        let is_dir = t == FileType::Directory;
        let skip = match self.opts.skip_snapshots {
            SnapshotDirs::Everywhere => true,
            SnapshotDirs::AtRoot => dir.depth == 0,
            SnapshotDirs::Never => false,
        };
        if is_dir && skip && name.to_bytes() == b".snapshots" {
            return;
        }
        // Like `find -L`: a directory that is its own ancestor is reported, not listed.
        let ancestors = match is_dir.then(|| self.loop_check(dir, st.as_ref())) {
            Some(Err(e)) => return self.fail(path, Op::Loop, e),
            Some(Ok(a)) => a,
            None => None,
        };
        let depth = dir.depth + 1;
        let ino = st.map_or(ino, |st| st.ino);
        // A piece opens its roots by full path: a directory past the
        // descriptor budget, or whose path the kernel would refuse, stays.
        let handed = |path: &[u8]| {
            dir.retained.is_some()
                && path.len() < libc::PATH_MAX as usize
                && self.opts.handoff.as_ref().is_some_and(|h| h.offer(path))
        };
        if is_dir && self.may_descend(depth) && self.crosses_ok(dir, st.as_ref()) && !handed(&path) {
            let job = DirJob {
                parent: Some(dir.clone()),
                name: name.to_owned(),
                path: path.clone(),
                ino,
                depth,
                root_dev: dir.root_dev,
                emitted: verdict == Verdict::Keep,
                ancestors,
            };
            if dir.retained.is_some() {
                s.spawn(move |s| self.dir(s, job));
            } else {
                chunk.deferred.push(job);
            }
        }
        if verdict == Verdict::Keep {
            let generation = self.generation(Base::Dir(dir.fd.as_fd()), name, t);
            self.push(chunk, path, t, (ino, dir.ino), st, generation);
        }
    }

    /// With `-x`, a directory on another device is reported but not entered.
    fn crosses_ok(&self, dir: &Dir<'_>, st: Option<&FileStat>) -> bool {
        !self.opts.one_file_system || st.is_none_or(|st| st.dev == dir.root_dev)
    }

    /// When following symlinks, refuses to enter a directory that is one of
    /// its own ancestors; returns the ancestor chain for the new job.
    fn loop_check(&self, dir: &Dir<'_>, st: Option<&FileStat>) -> io::Result<Option<Arc<Ancestor>>> {
        let (Some(parent), Some(st)) = (&dir.ancestors, st) else {
            return Ok(None);
        };
        let mut cur = Some(parent);
        while let Some(a) = cur {
            if a.dev == st.dev && a.ino == st.ino {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            cur = a.parent.as_ref();
        }
        Ok(Some(Arc::new(Ancestor {
            dev: st.dev,
            ino: st.ino,
            parent: Some(parent.clone()),
        })))
    }
}

/// Joins a directory path and a name with exactly one `/`.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}
