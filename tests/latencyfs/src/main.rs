//! latencyfs: a read-only FUSE passthrough over a directory that makes every
//! metadata operation cost a round trip to a metadata server.
//!
//! On GPFS, Lustre or NFS each `lookup`, `stat` and `readdir` page is a
//! network round trip of 0.1–2 ms, and a walker is fast only if it keeps
//! many of them in flight. A local filesystem answers from the page cache in
//! microseconds, so every walk figure taken on one measures the kernel's CPU
//! cost instead. latencyfs puts the round trip back: each metadata request
//! (lookup, getattr, opendir, readdir, open, getxattr, listxattr, readlink)
//! is answered from the directory underneath `--latency` (± `--jitter`)
//! after it entered service. At most `--servers` requests are in service at
//! once (the metadata servers' capacity; more wait their turn), so the
//! filesystem's own ceiling is `servers / latency` requests per second,
//! whatever the client does.
//!
//! The round trip is a deadline, not a sleeping thread: one timer thread
//! holds the requests in service in deadline order and answers each when
//! it falls due (or hands it to `--workers` threads, for machines with
//! cores to spare: on 2 cores answering on the timer thread took a third
//! less CPU for the same walk times). A thread per request in flight would
//! spend the machine's cores on context switches (measured: 60 µs of CPU a
//! request with 1,024 sleeping server threads, most of it in the
//! scheduler), and the filesystem, not the walker under test, would set
//! the pace. Inode numbers are those underneath, except the root's, which
//! is 1 (FUSE's root node); the tree underneath must be one filesystem
//! (nodes are keyed by inode number alone).
//!
//! Requests are read from `/dev/fuse` by one thread and answered
//! asynchronously (a reply may be sent from any thread), and the mount asks
//! the kernel for `FUSE_PARALLEL_DIROPS`: without it the kernel serialises
//! lookups and readdirs within a directory, which no parallel filesystem
//! does. Entries and attributes are cached for `--ttl` (default 1 ms: an
//! entry read once is not asked again within the same stat, yet the next
//! walk finds nothing cached, as on a cold cluster client; at 0 the kernel
//! never trusts an attribute and every `stat` costs a lookup and a getattr).
//! File data is served without delay: this models metadata, not bandwidth.
//!
//! At exit (the mount was unmounted, or SIGINT/SIGTERM, which unmount it)
//! it prints one JSON line of counts to stderr, and to `--stats FILE`: how
//! many requests of each kind it answered, the peak number in flight (the
//! walker's achieved concurrency) and the mean.
//!
//! ```text
//! latencyfs [--latency MS] [--jitter MS] [--servers N] [--workers N] [--ttl MS] [--stats FILE] SOURCE MOUNTPOINT
//! ```
//!
//! It prints `ready` on stdout once the mount is in place.

use crossbeam_channel::{Receiver, Sender};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The request kinds counted, in the order of [`Counts`].
const KINDS: [&str; 10] = [
    "lookup",
    "getattr",
    "opendir",
    "readdir",
    "open",
    "read",
    "getxattr",
    "listxattr",
    "readlink",
    "forget",
];

#[derive(Clone, Copy)]
enum Kind {
    Lookup,
    Getattr,
    Opendir,
    Readdir,
    Open,
    Read,
    Getxattr,
    Listxattr,
    Readlink,
    Forget,
}

struct Options {
    latency: Duration,
    jitter: Duration,
    servers: usize,
    workers: usize,
    ttl: Duration,
    stats: Option<PathBuf>,
    source: PathBuf,
    mountpoint: PathBuf,
}

const USAGE: &str = "usage: latencyfs [--latency MS] [--jitter MS] [--servers N] [--workers N] [--ttl MS] [--stats FILE] SOURCE MOUNTPOINT

  --latency MS   round trip added to each metadata request (default 1)
  --jitter MS    the round trip varies uniformly by up to this much (default 0)
  --servers N    requests in service at once, the metadata servers' capacity (default 1024)
  --workers N    threads answering requests that fell due; 0 (the default) answers
                 on the timer thread, which costs the least CPU up to ~100,000 requests/s
  --ttl MS       how long the kernel may cache entries and attributes (default 1)
  --stats FILE   also write the exit counts (one JSON line) to FILE";

fn parse_args() -> Result<Options, String> {
    let ms = |v: Option<String>, flag: &str| -> Result<Duration, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        let f: f64 = v
            .parse()
            .map_err(|_| format!("{flag}: not a number of milliseconds: {v}"))?;
        if !(0.0..3_600_000.0).contains(&f) {
            return Err(format!("{flag}: out of range: {v}"));
        }
        Ok(Duration::from_secs_f64(f / 1000.0))
    };
    let count = |v: Option<String>, flag: &str, range: std::ops::RangeInclusive<usize>| -> Result<usize, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse().ok().filter(|n| range.contains(n)).ok_or(format!(
            "{flag}: not a count from {} to {}: {v}",
            range.start(),
            range.end()
        ))
    };
    let mut o = Options {
        latency: Duration::from_millis(1),
        jitter: Duration::ZERO,
        servers: 1024,
        workers: 0,
        ttl: Duration::from_millis(1),
        stats: None,
        source: PathBuf::new(),
        mountpoint: PathBuf::new(),
    };
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--latency" => o.latency = ms(args.next(), "--latency")?,
            "--jitter" => o.jitter = ms(args.next(), "--jitter")?,
            "--ttl" => o.ttl = ms(args.next(), "--ttl")?,
            "--servers" => o.servers = count(args.next(), "--servers", 1..=65_536)?,
            "--workers" => o.workers = count(args.next(), "--workers", 0..=1024)?,
            "--stats" => o.stats = Some(args.next().ok_or("--stats needs a value")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [source, mountpoint]: [PathBuf; 2] = positional
        .try_into()
        .map_err(|_| "expected SOURCE and MOUNTPOINT".to_string())?;
    o.source = source
        .canonicalize()
        .map_err(|e| format!("{}: {e}", source.display()))?;
    o.mountpoint = mountpoint;
    Ok(o)
}

/// Per-kind request counts and the in-flight gauge.
#[derive(Default)]
struct Counts {
    by_kind: [AtomicU64; KINDS.len()],
    in_flight: AtomicU64,
    peak: AtomicU64,
    /// Sum over answered requests of their time from arrival to answer, in
    /// microseconds: divided by the mount's lifetime, the mean in flight.
    busy_us: AtomicU64,
}

impl Counts {
    fn arrive(&self, kind: Kind) {
        self.by_kind[kind as usize].fetch_add(1, Relaxed);
    }

    fn json(&self, lifetime: Duration) -> String {
        let mut s = String::from("{");
        for (k, c) in KINDS.iter().zip(&self.by_kind) {
            s.push_str(&format!("\"{k}\":{},", c.load(Relaxed)));
        }
        let mean = self.busy_us.load(Relaxed) as f64 / lifetime.as_micros().max(1) as f64;
        s.push_str(&format!(
            "\"peak_in_flight\":{},\"mean_in_flight\":{:.2},\"seconds\":{:.3}}}",
            self.peak.load(Relaxed),
            mean,
            lifetime.as_secs_f64()
        ));
        s
    }
}

/// A request's answer, run when its round trip is over.
type Job = Box<dyn FnOnce() + Send>;

/// A request in service, ordered by its deadline (then by arrival).
struct Timed {
    due: Instant,
    seq: u64,
    arrived: Instant,
    job: Job,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    /// Reversed: the earliest deadline is the greatest, the top of a heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The metadata servers: requests in service by deadline, and those
/// waiting for a free server.
struct Servers {
    state: Mutex<ServerState>,
    /// Told when the earliest deadline changed.
    timer: Condvar,
    latency: Duration,
    jitter: Duration,
    capacity: usize,
}

struct ServerState {
    in_service: BinaryHeap<Timed>,
    /// Requests in service: those in the heap and those being answered.
    busy: usize,
    waiting: VecDeque<(Instant, Job)>,
    seq: u64,
    /// xorshift64 state for the jitter.
    rng: u64,
}

impl Servers {
    fn new(latency: Duration, jitter: Duration, capacity: usize) -> Servers {
        Servers {
            state: Mutex::new(ServerState {
                in_service: BinaryHeap::new(),
                busy: 0,
                waiting: VecDeque::new(),
                seq: 0,
                rng: 0x9E37_79B9_7F4A_7C15,
            }),
            timer: Condvar::new(),
            latency,
            jitter,
            capacity,
        }
    }

    /// A request arrives: into service if a server is free, else it waits.
    fn arrive(&self, job: Job) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        if st.busy < self.capacity {
            self.start(&mut st, now, now, job);
        } else {
            st.waiting.push_back((now, job));
        }
    }

    /// A request was answered: its server takes the next waiting one.
    fn done(&self) {
        let mut st = self.state.lock().unwrap();
        st.busy -= 1;
        if let Some((arrived, job)) = st.waiting.pop_front() {
            self.start(&mut st, Instant::now(), arrived, job);
        }
    }

    fn start(&self, st: &mut ServerState, now: Instant, arrived: Instant, job: Job) {
        let mut wait = self.latency;
        if !self.jitter.is_zero() {
            // Uniform in [latency - jitter, latency + jitter].
            let x = &mut st.rng;
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            let span = self.jitter.as_nanos() as u64 * 2;
            wait = (self.latency + Duration::from_nanos(*x % (span + 1))).saturating_sub(self.jitter);
        }
        st.busy += 1;
        st.seq += 1;
        let due = now + wait;
        let first = st.in_service.peek().is_none_or(|t| due < t.due);
        st.in_service.push(Timed {
            due,
            seq: st.seq,
            arrived,
            job,
        });
        if first {
            self.timer.notify_one();
        }
    }

    /// The timer thread: hands every request whose deadline has passed to
    /// the workers, and sleeps until the next deadline.
    fn run_timer(&self, ready: Option<Sender<Timed>>, shared: &Shared) {
        set_timer_slack();
        let mut st = self.state.lock().unwrap();
        loop {
            let now = Instant::now();
            match st.in_service.peek() {
                Some(t) if t.due <= now => {
                    let t = st.in_service.pop().expect("peeked");
                    match &ready {
                        Some(ready) => {
                            if ready.send(t).is_err() {
                                return;
                            }
                        }
                        None => {
                            drop(st);
                            answer(t, self, shared);
                            st = self.state.lock().unwrap();
                        }
                    }
                }
                Some(t) => {
                    let wait = t.due - now;
                    st = self.timer.wait_timeout(st, wait).unwrap().0;
                }
                None => st = self.timer.wait(st).unwrap(),
            }
        }
    }
}

/// Timers of this thread fire within a microsecond of their deadline, not
/// the default 50 µs late: the round trip is what this filesystem models.
fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the
    // calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64, 0u64, 0u64, 0u64);
    }
}

/// A worker: answers requests that fell due.
fn worker(ready: Receiver<Timed>, servers: Arc<Servers>, shared: Arc<Shared>) {
    while let Ok(t) = ready.recv() {
        answer(t, &servers, &shared);
    }
}

/// Answers a request that fell due and frees its server.
fn answer(t: Timed, servers: &Servers, shared: &Shared) {
    (t.job)();
    let c = &shared.counts;
    c.in_flight.fetch_sub(1, Relaxed);
    c.busy_us.fetch_add(t.arrived.elapsed().as_micros() as u64, Relaxed);
    servers.done();
}

/// A node the kernel knows: its path underneath and its lookup count.
struct Node {
    path: PathBuf,
    lookups: u64,
}

/// One directory entry read at `opendir`.
struct DirEnt {
    ino: u64,
    kind: FileType,
    name: OsString,
}

struct Shared {
    /// The source root's inode number: it is node 1 to the kernel, and an
    /// inode numbered 1 underneath takes the root's number instead.
    root_ino: u64,
    ttl: Duration,
    nodes: Mutex<HashMap<u64, Node>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEnt>>>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
    counts: Counts,
}

impl Shared {
    fn node_of(&self, ino: u64) -> u64 {
        match ino {
            i if i == self.root_ino => fuser::FUSE_ROOT_ID,
            1 => self.root_ino,
            i => i,
        }
    }

    fn path(&self, node: u64) -> Option<PathBuf> {
        self.nodes.lock().unwrap().get(&node).map(|n| n.path.clone())
    }

    fn attr(&self, m: &std::fs::Metadata) -> FileAttr {
        let t = |s: i64, ns: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::new(s as u64, ns as u32)
            } else {
                UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(ns as u64)
            }
        };
        FileAttr {
            ino: self.node_of(m.ino()),
            size: m.size(),
            blocks: m.blocks(),
            atime: t(m.atime(), m.atime_nsec()),
            mtime: t(m.mtime(), m.mtime_nsec()),
            ctime: t(m.ctime(), m.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind: kind_of(m.mode()),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: m.blksize() as u32,
            flags: 0,
        }
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

struct LatencyFs {
    shared: Arc<Shared>,
    servers: Arc<Servers>,
}

impl LatencyFs {
    /// Queues `answer` for a server: it runs after the round trip.
    fn serve(&self, kind: Kind, answer: impl FnOnce(&Shared) + Send + 'static) {
        let c = &self.shared.counts;
        c.arrive(kind);
        let now = c.in_flight.fetch_add(1, Relaxed) + 1;
        c.peak.fetch_max(now, Relaxed);
        let shared = self.shared.clone();
        self.servers.arrive(Box::new(move || answer(&shared)));
    }
}

impl Filesystem for LatencyFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        // Lookups and readdirs in one directory run in parallel (as on a
        // parallel filesystem); a kernel without it serialises them.
        let _ = config.add_capabilities(fuser::consts::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        self.serve(Kind::Lookup, move |s| {
            let Some(dir) = s.path(parent) else {
                return reply.error(libc::ESTALE);
            };
            let path = dir.join(&name);
            match std::fs::symlink_metadata(&path) {
                Ok(m) => {
                    let attr = s.attr(&m);
                    s.nodes
                        .lock()
                        .unwrap()
                        .entry(attr.ino)
                        .or_insert(Node { path, lookups: 0 })
                        .lookups += 1;
                    reply.entry(&s.ttl, &attr, 0)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.shared.counts.arrive(Kind::Forget);
        if ino == fuser::FUSE_ROOT_ID {
            return;
        }
        let mut nodes = self.shared.nodes.lock().unwrap();
        if let Some(n) = nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            if n.lookups == 0 {
                nodes.remove(&ino);
            }
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        self.serve(Kind::Getattr, move |s| {
            let Some(path) = s.path(ino) else {
                return reply.error(libc::ESTALE);
            };
            match std::fs::symlink_metadata(&path) {
                Ok(m) => reply.attr(&s.ttl, &s.attr(&m)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        self.serve(Kind::Readlink, move |s| {
            let Some(path) = s.path(ino) else {
                return reply.error(libc::ESTALE);
            };
            match std::fs::read_link(&path) {
                Ok(t) => reply.data(t.as_os_str().as_bytes()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        self.serve(Kind::Opendir, move |s| {
            let Some(path) = s.path(ino) else {
                return reply.error(libc::ESTALE);
            };
            let read = || -> std::io::Result<Vec<DirEnt>> {
                // The directory's node id is its (mapped) inode number.
                let mut v = vec![
                    DirEnt {
                        ino,
                        kind: FileType::Directory,
                        name: ".".into(),
                    },
                    DirEnt {
                        ino,
                        kind: FileType::Directory,
                        name: "..".into(),
                    },
                ];
                for e in std::fs::read_dir(&path)? {
                    let e = e?;
                    let kind = match e.file_type() {
                        Ok(t) if t.is_dir() => FileType::Directory,
                        Ok(t) if t.is_symlink() => FileType::Symlink,
                        Ok(t) if t.is_file() => FileType::RegularFile,
                        Ok(_) | Err(_) => kind_of(e.metadata()?.mode()),
                    };
                    v.push(DirEnt {
                        ino: s.node_of(e.ino()),
                        kind,
                        name: e.file_name(),
                    });
                }
                Ok(v)
            };
            match read() {
                Ok(v) => {
                    let fh = s.next_fh.fetch_add(1, Relaxed);
                    s.dirs.lock().unwrap().insert(fh, Arc::new(v));
                    reply.opened(fh, 0)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdir(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, offset: i64, mut reply: ReplyDirectory) {
        self.serve(Kind::Readdir, move |s| {
            let Some(entries) = s.dirs.lock().unwrap().get(&fh).cloned() else {
                return reply.error(libc::EBADF);
            };
            for (i, e) in entries.iter().enumerate().skip(offset.max(0) as usize) {
                if reply.add(e.ino, i as i64 + 1, e.kind, &e.name) {
                    break;
                }
            }
            reply.ok()
        });
    }

    fn releasedir(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, _flags: i32, reply: ReplyEmpty) {
        self.shared.dirs.lock().unwrap().remove(&fh);
        reply.ok();
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        self.serve(Kind::Open, move |s| {
            let Some(path) = s.path(ino) else {
                return reply.error(libc::ESTALE);
            };
            match File::open(&path) {
                Ok(f) => {
                    let fh = s.next_fh.fetch_add(1, Relaxed);
                    s.files.lock().unwrap().insert(fh, Arc::new(f));
                    reply.opened(fh, 0)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        // Data is not metadata: answered at once, on this thread.
        self.shared.counts.arrive(Kind::Read);
        let Some(f) = self.shared.files.lock().unwrap().get(&fh).cloned() else {
            return reply.error(libc::EBADF);
        };
        let mut buf = vec![0; size as usize];
        match f.read_at(&mut buf, offset.max(0) as u64) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.files.lock().unwrap().remove(&fh);
        reply.ok();
    }

    fn getxattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_owned();
        self.serve(Kind::Getxattr, move |s| {
            let Some(path) = s.path(ino) else {
                return reply.error(libc::ESTALE);
            };
            match xattr_get(&path, &name) {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.serve(Kind::Listxattr, move |s| {
            let Some(path) = s.path(ino) else {
                return reply.error(libc::ESTALE);
            };
            match xattr_list(&path) {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

/// Answers a getxattr or listxattr: the size when asked for it (size 0),
/// ERANGE when the caller's buffer is too small.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() > size as usize {
        reply.error(libc::ERANGE)
    } else {
        reply.data(value)
    }
}

fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// `lgetxattr`, sized by a first call.
fn xattr_get(path: &Path, name: &OsStr) -> std::io::Result<Vec<u8>> {
    let p = c_path(path)?;
    let n = std::ffi::CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    sized(|buf, len| unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.cast(), len) })
}

/// `llistxattr`, sized by a first call.
fn xattr_list(path: &Path) -> std::io::Result<Vec<u8>> {
    let p = c_path(path)?;
    sized(|buf, len| unsafe { libc::llistxattr(p.as_ptr(), buf.cast(), len) })
}

/// Calls `f` for the size, then for the value, again if it grew between.
fn sized(f: impl Fn(*mut u8, usize) -> isize) -> std::io::Result<Vec<u8>> {
    loop {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            // A second call with length 0 would be another size query.
            return Ok(Vec::new());
        }
        let mut v = vec![0u8; n as usize];
        let got = f(v.as_mut_ptr(), v.len());
        if got >= 0 {
            v.truncate(got as usize);
            return Ok(v);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("latencyfs: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let root = match std::fs::symlink_metadata(&o.source) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            eprintln!("latencyfs: {}: not a directory", o.source.display());
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("latencyfs: {}: {e}", o.source.display());
            std::process::exit(2);
        }
    };
    let shared = Arc::new(Shared {
        root_ino: root.ino(),
        ttl: o.ttl,
        nodes: Mutex::new(HashMap::new()),
        dirs: Mutex::new(HashMap::new()),
        files: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
        counts: Counts::default(),
    });
    shared.nodes.lock().unwrap().insert(
        fuser::FUSE_ROOT_ID,
        Node {
            path: o.source.clone(),
            lookups: 1,
        },
    );
    let servers = Arc::new(Servers::new(o.latency, o.jitter, o.servers));
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    {
        let (servers, shared) = (servers.clone(), shared.clone());
        let ready = (o.workers > 0).then_some(ready_tx);
        std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || servers.run_timer(ready, &shared))
            .expect("spawn the timer thread");
    }
    for i in 0..o.workers {
        let (rx, servers, shared) = (ready_rx.clone(), servers.clone(), shared.clone());
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker(rx, servers, shared))
            .expect("spawn a worker thread");
    }
    let fs = LatencyFs {
        shared: shared.clone(),
        servers,
    };
    let options = [
        MountOption::RO,
        MountOption::FSName(format!("latencyfs:{}", o.source.display())),
        MountOption::Subtype("latencyfs".into()),
        MountOption::AllowOther,
    ];
    let started = Instant::now();
    let mut session = match fuser::Session::new(fs, &o.mountpoint, &options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("latencyfs: cannot mount on {}: {e}", o.mountpoint.display());
            std::process::exit(1);
        }
    };
    // SIGINT and SIGTERM unmount; the session then ends as on `umount`.
    let mountpoint = o.mountpoint.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .expect("signal handlers");
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = std::process::Command::new("umount").arg("-l").arg(&mountpoint).status();
        }
    });
    println!("ready");
    let _ = std::io::stdout().flush();
    // Serves until the mount goes away.
    if let Err(e) = session.run() {
        eprintln!("latencyfs: {e}");
    }
    let line = shared.counts.json(started.elapsed());
    eprintln!("{line}");
    if let Some(p) = &o.stats
        && let Err(e) = std::fs::write(p, format!("{line}\n"))
    {
        eprintln!("latencyfs: {}: {e}", p.display());
    }
}
