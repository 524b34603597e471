//! File operations on batches of paths: one module per operation, each
//! returning one [`Outcome`] per input path in the seed's per-file states.
//!
//! Shared pieces live here: the [`OpContext`] (configuration, open targets,
//! progress counters), opening a file without following symlinks, the stat
//! facts that prove a file did not change, and a small ordered parallel
//! map. Locks and ferry's xattrs have their own modules. The data-safety
//! rules every operation follows are in `docs/operations.md`.

pub mod delete;
pub mod lock;
pub mod migrate;
pub mod moves;
pub mod recall;
pub mod reverse_stub;
pub mod stat;
pub mod unmanage;
pub mod xattrs;

use crate::config::Config;
use crate::sys::Timestamp;
use crate::target::Target;
use crate::task::{FileState, Outcome, PathObject, Summary, SummaryCounters};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, FileTimes, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use xattrs::Xattrs;

/// One operation with its arguments, as a task or a command asks for it.
#[derive(Clone, Debug)]
pub enum Operation {
    /// `dynamo.tasks.migrate` (premigrate too, by its argument).
    Migrate(migrate::MigrateArgs),
    /// `dynamo.tasks.recall`.
    Recall(recall::RecallArgs),
    /// `dynamo.tasks.reverse_stub`.
    ReverseStub(reverse_stub::ReverseStubArgs),
    /// `dynamo.tasks.unmanage`.
    Unmanage(unmanage::UnmanageArgs),
    /// `dynamo.tasks.remove_location_xattrs_for_moved`.
    RemoveLocations,
    /// `dynamo.tasks.stat_paths`.
    Stat,
    /// `dynamo.tasks.delete_paths_from_gpfs`.
    Delete(delete::DeleteArgs),
    /// `dynamo.tasks.move_paths_on_gpfs`.
    Move(moves::MoveArgs),
    /// `dynamo.tasks.one_step_move_paths_on_gpfs`.
    OneStepMove(moves::MoveArgs),
}

impl Operation {
    /// The seed's task name.
    pub fn task_name(&self) -> &'static str {
        match self {
            Operation::Migrate(_) => "dynamo.tasks.migrate",
            Operation::Recall(_) => "dynamo.tasks.recall",
            Operation::ReverseStub(_) => "dynamo.tasks.reverse_stub",
            Operation::Unmanage(_) => "dynamo.tasks.unmanage",
            Operation::RemoveLocations => "dynamo.tasks.remove_location_xattrs_for_moved",
            Operation::Stat => "dynamo.tasks.stat_paths",
            Operation::Delete(_) => "dynamo.tasks.delete_paths_from_gpfs",
            Operation::Move(_) => "dynamo.tasks.move_paths_on_gpfs",
            Operation::OneStepMove(_) => "dynamo.tasks.one_step_move_paths_on_gpfs",
        }
    }

    /// The operation a task message names, with its keyword arguments
    /// (a JSON object; unknown keys are ignored, as the seed's `**kwargs`
    /// does). `None` when `task` is not an operation; `Err` when an argument
    /// has the wrong type.
    pub fn from_task(task: &str, kwargs: &str) -> Option<Result<Operation, String>> {
        fn args<T: serde::de::DeserializeOwned>(kwargs: &str) -> Result<T, String> {
            crate::task::parse_kwargs(kwargs)
        }
        Some(match task {
            "dynamo.tasks.migrate" => args(kwargs).map(Operation::Migrate),
            "dynamo.tasks.recall" => args(kwargs).map(Operation::Recall),
            "dynamo.tasks.reverse_stub" => args(kwargs).map(Operation::ReverseStub),
            "dynamo.tasks.unmanage" => args(kwargs).map(Operation::Unmanage),
            "dynamo.tasks.remove_location_xattrs_for_moved" => Ok(Operation::RemoveLocations),
            "dynamo.tasks.stat_paths" => Ok(Operation::Stat),
            "dynamo.tasks.delete_paths_from_gpfs" => args(kwargs).map(Operation::Delete),
            "dynamo.tasks.move_paths_on_gpfs" => args(kwargs).map(Operation::Move),
            "dynamo.tasks.one_step_move_paths_on_gpfs" => args(kwargs).map(Operation::OneStepMove),
            _ => return None,
        })
    }

    /// Runs the operation on `paths`: one outcome per path, in order, or an
    /// error for the whole task (unknown endpoint, conflicting arguments).
    pub fn run(&self, ctx: &OpContext, paths: &[PathObject]) -> Result<Vec<Outcome>, String> {
        match self {
            Operation::Migrate(a) => migrate::migrate(ctx, a, paths),
            Operation::Recall(a) => recall::recall(ctx, a, paths),
            Operation::ReverseStub(a) => reverse_stub::reverse_stub(ctx, a, paths),
            Operation::Unmanage(a) => unmanage::unmanage(ctx, a, paths),
            Operation::RemoveLocations => Ok(unmanage::remove_location_xattrs(ctx, paths)),
            Operation::Stat => Ok(stat::stat_paths(ctx, paths)),
            Operation::Delete(a) => Ok(delete::delete(ctx, a, paths)),
            Operation::Move(a) => Ok(moves::move_paths(ctx, a, paths)),
            Operation::OneStepMove(a) => Ok(moves::one_step_move_paths(ctx, a, paths)),
        }
    }
}

/// How many files one commit window holds at most: the files copied, then
/// made durable with one target sync, then committed. It bounds open
/// descriptors and memory whatever the batch size.
pub const COMMIT_WINDOW: usize = 512;

/// Everything an operation needs besides its arguments.
pub struct OpContext {
    /// The configuration (endpoints, xattr prefix).
    pub config: Config,
    /// ferry's xattr names.
    pub xattrs: Xattrs,
    /// Files worked on at once.
    pub threads: usize,
    /// Files done, bytes moved and failures so far, for progress displays.
    pub counters: Arc<SummaryCounters>,
    /// How to reach GPFS commands (deletes ask them for fileset junctions).
    pub gpfs: crate::snapdiff::provider::gpfs::GpfsOptions,
    /// The runtime that drives the stores' I/O, when this context owns one
    /// (the command line); the agent lends its own through `handle`.
    _runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    targets: Mutex<HashMap<String, Arc<Target>>>,
}

impl OpContext {
    /// A context for `config`, working on `threads` files at once (the
    /// configuration's `threads` when `None`), with its own I/O runtime.
    pub fn new(config: Config, threads: Option<usize>) -> io::Result<OpContext> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-io")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self::build(config, threads, Some(runtime), handle))
    }

    /// A context whose stores' I/O runs on `handle`'s runtime (the agent's).
    /// Operations must then run outside that runtime's async tasks (on its
    /// blocking threads), since they wait for the I/O.
    pub fn with_handle(config: Config, threads: Option<usize>, handle: tokio::runtime::Handle) -> OpContext {
        Self::build(config, threads, None, handle)
    }

    fn build(
        config: Config,
        threads: Option<usize>,
        runtime: Option<tokio::runtime::Runtime>,
        handle: tokio::runtime::Handle,
    ) -> OpContext {
        OpContext {
            xattrs: Xattrs::new(&config.settings.xattr_prefix),
            threads: threads.unwrap_or(config.settings.threads).max(1),
            config,
            counters: Arc::new(SummaryCounters::default()),
            gpfs: Default::default(),
            _runtime: runtime,
            handle,
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint called `name`, opened once and shared.
    pub fn target(&self, name: &str) -> Result<Arc<Target>, String> {
        let mut targets = self.targets.lock().expect("target cache");
        if let Some(t) = targets.get(name) {
            return Ok(t.clone());
        }
        let cfg = self.config.endpoint(name)?;
        let t = Arc::new(Target::open(cfg, self.xattrs.prefix(), self.handle.clone()).map_err(|e| e.to_string())?);
        targets.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Counts one finished file for progress displays.
    fn count(&self, outcome: &Outcome, bytes: u64) {
        let mut s = Summary {
            files: 1,
            ..Summary::default()
        };
        if outcome.state == FileState::Processed {
            s.add_bytes(bytes);
        }
        if outcome.state == FileState::Failures {
            s.failures = 1;
        }
        self.counters.add(&s);
    }
}

/// Why a path could not be opened as an operation wanted.
pub enum OpenError {
    /// Nothing at the path.
    Missing,
    /// The path is a symbolic link (never followed).
    Symlink,
    /// The path is a directory and the operation needs a file.
    Directory,
    /// Any other error.
    Other(io::Error),
}

impl OpenError {
    /// The usual outcome: missing paths fail (or are aborted when the task
    /// says so), links and directories are skipped with the reason.
    pub fn outcome(self, op: &str, abort_missing: bool) -> Outcome {
        match self {
            OpenError::Missing if abort_missing => Outcome::with(FileState::Aborted, "no such file or directory"),
            OpenError::Missing => Outcome::failed("no such file or directory"),
            OpenError::Symlink => Outcome::skipped(format!("symbolic link: {op} works on regular files only")),
            OpenError::Directory => Outcome::skipped(format!("directory: {op} works on regular files only")),
            OpenError::Other(e) => Outcome::failed(format!("cannot open: {e}")),
        }
    }
}

/// Opens `path` without following a final symlink, without blocking on
/// FIFOs and without updating its access time where permitted.
pub fn open_file(path: &[u8], write: bool) -> Result<File, OpenError> {
    let path = OsStr::from_bytes(path);
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let open = |extra: libc::c_int| {
        File::options()
            .read(true)
            .write(write)
            .custom_flags(flags | extra)
            .open(path)
    };
    let result = match open(libc::O_NOATIME) {
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    };
    result.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => OpenError::Missing,
        Some(libc::ELOOP) => OpenError::Symlink,
        Some(libc::EISDIR) => OpenError::Directory,
        _ => OpenError::Other(e),
    })
}

/// The attributes of an open file that prove whether it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snap {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The filesystem's preferred I/O block size (hole-punch granularity).
    pub blksize: u64,
    /// Device and inode: which file this is, whatever its name.
    pub id: (u64, u64),
}

impl Snap {
    /// Reads the facts of `file`.
    pub fn of(file: &File) -> io::Result<Snap> {
        Ok(Snap::from_metadata(&file.metadata()?))
    }

    fn from_metadata(m: &Metadata) -> Snap {
        let ts = |sec: i64, nsec: i64| Timestamp { sec, nsec: nsec as u32 };
        Snap {
            size: m.size(),
            mtime: ts(m.mtime(), m.mtime_nsec()),
            ctime: ts(m.ctime(), m.ctime_nsec()),
            atime: ts(m.atime(), m.atime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            blksize: m.blksize().max(512),
            id: (m.dev(), m.ino()),
        }
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Same size, mtime and ctime: nothing wrote to the file in between.
    pub fn unchanged(&self, later: &Snap) -> bool {
        self.size == later.size && self.mtime == later.mtime && self.ctime == later.ctime
    }

    /// Where a stub's punched range starts: `stub_size` rounded up to a
    /// whole block, so a partial block is never zeroed.
    pub fn stub_offset(&self, stub_size: u64) -> u64 {
        stub_size.div_ceil(self.blksize).saturating_mul(self.blksize)
    }
}

/// The files of one window by inode, so that a second name of a
/// hard-linked file takes the first name's outcome instead of racing it
/// (each name's open descriptor would otherwise hold off the other's lease
/// and lock).
#[derive(Default)]
pub struct Inodes(Mutex<HashMap<(u64, u64), usize>>);

impl Inodes {
    /// Records that input `index` is the file `id`; returns the index of an
    /// earlier name of the same file, if any.
    pub fn first_name(&self, id: (u64, u64), index: usize) -> Option<usize> {
        let mut seen = self.0.lock().expect("inode table");
        match seen.get(&id) {
            Some(&first) => Some(first),
            None => {
                seen.insert(id, index);
                None
            }
        }
    }
}

/// The commit window for a task's `sub_batch`: the paths processed, made
/// durable and committed together, at most [`COMMIT_WINDOW`].
pub fn window(sub_batch: Option<usize>) -> usize {
    sub_batch.unwrap_or(COMMIT_WINDOW).clamp(1, COMMIT_WINDOW)
}

/// What one path's step ended in.
pub enum Step {
    /// An outcome, and the bytes it moved.
    Done(Outcome, u64),
    /// Another name (hard link) of the file at this index of the window,
    /// which takes that name's outcome.
    Link(usize),
}

/// Runs `one` on every path, window by window (`sub_batch`), `threads`
/// paths at once, and returns the outcomes in input order. `one` gets the
/// path's index in its window and the window's inode table.
pub fn for_each_window(
    ctx: &OpContext,
    sub_batch: Option<usize>,
    paths: &[PathObject],
    one: impl Fn(usize, &PathObject, &Inodes) -> Step + Sync,
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(window(sub_batch)) {
        let inodes = Inodes::default();
        let steps = par_map(chunk.iter().enumerate().collect(), ctx.threads, |(i, obj)| {
            match one(i, obj, &inodes) {
                Step::Done(outcome, bytes) => {
                    ctx.count(&outcome, bytes);
                    Ok(outcome)
                }
                Step::Link(first) => Err(first),
            }
        });
        out.extend(resolve_links(ctx, chunk, steps));
    }
    out
}

/// Gives each hard link (`Err(first)`) its first name's outcome.
pub fn resolve_links(ctx: &OpContext, chunk: &[PathObject], outcomes: Vec<Result<Outcome, usize>>) -> Vec<Outcome> {
    let firsts: Vec<Option<Outcome>> = outcomes.iter().map(|o| o.as_ref().ok().cloned()).collect();
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|first| {
                let link = link_outcome(
                    firsts[first].as_ref().expect("a first name has an outcome"),
                    &chunk[first].path,
                );
                ctx.count(&link, 0);
                link
            })
        })
        .collect()
}

/// The access and modification times to set: now where the task asks to
/// update them, else the given ones.
pub fn chosen_times(
    update_atime: bool,
    update_mtime: bool,
    atime: Timestamp,
    mtime: Timestamp,
) -> (Timestamp, Timestamp) {
    (
        if update_atime { now() } else { atime },
        if update_mtime { now() } else { mtime },
    )
}

/// The outcome of a hard link whose file was handled through `first`.
pub fn link_outcome(first: &Outcome, first_path: &[u8]) -> Outcome {
    let name = String::from_utf8_lossy(first_path);
    match first.state {
        FileState::Processed | FileState::Skipped => {
            Outcome::skipped(format!("hard link of {name}, handled through that name"))
        }
        state => Outcome::with(
            state,
            format!(
                "hard link of {name}: {}",
                first.message.as_deref().unwrap_or(state.as_str())
            ),
        ),
    }
}

/// A `SystemTime` for a timestamp, before 1970 included.
pub fn system_time(t: Timestamp) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(u64::from(t.nsec))
    }
}

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

/// Sets a file's access and modification times.
pub fn set_times(file: &File, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    file.set_times(
        FileTimes::new()
            .set_accessed(system_time(atime))
            .set_modified(system_time(mtime)),
    )
}

/// The block size of sparse writes: whole zero blocks are left as holes.
pub const BLOCK: usize = 4096;

/// Writes `data` at `offset`, skipping whole zero blocks so holes stay.
pub(crate) fn write_sparse(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    // Blocks are aligned to the file, not to `data`: a chunk that starts
    // mid-block (downloads arrive in any sizes) must not turn a zero block
    // into written data.
    let head = (BLOCK - (offset % BLOCK as u64) as usize) % BLOCK;
    let (first, rest) = data.split_at(head.min(data.len()));
    let blocks = std::iter::once(first)
        .filter(|b| !b.is_empty())
        .chain(rest.chunks(BLOCK));
    let mut start = None;
    let mut pos = 0;
    for block in blocks {
        let zero = block.iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(pos),
            (true, Some(s)) => {
                file.write_all_at(&data[s..pos], offset + s as u64)?;
                start = None;
            }
            _ => {}
        }
        pos += block.len();
    }
    if let Some(s) = start {
        file.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

/// Maps `items` through `f` on up to `threads` threads, keeping the order.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    if threads <= 1 || n <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_writes_align_blocks_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.set_len(64 * 1024).unwrap();
        // Data only in the block at 8192, delivered in chunks that start
        // mid-block: the zero blocks around it must stay holes.
        let mut content = vec![0u8; 64 * 1024];
        content[9000] = 1;
        for (i, chunk) in content.chunks(1000).enumerate() {
            write_sparse(&f, (i * 1000) as u64, chunk).unwrap();
        }
        assert_eq!(crate::sys::next_data(&f, 0).unwrap(), Some(8192));
        assert_eq!(crate::sys::next_hole(&f, 8192).unwrap(), 12288);
        let mut back = vec![0u8; content.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, content);
    }

    #[test]
    fn par_map_keeps_order() {
        let v: Vec<u32> = (0..1000).collect();
        assert_eq!(
            par_map(v.clone(), 7, |x| x * 2),
            v.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn times_before_1970() {
        let t = Timestamp {
            sec: -2,
            nsec: 250_000_000,
        };
        assert_eq!(
            UNIX_EPOCH.duration_since(system_time(t)).unwrap(),
            Duration::from_millis(1750)
        );
    }
}
