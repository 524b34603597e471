//! The operation subcommands (`migrate`, `premigrate`, `recall`): read a
//! path list, run the operation in commit windows, and print the seed's
//! result object or one JSON line per path.

use clap::Args;
use ferry::config::Config;
use ferry::ops::delete::DeleteArgs;
use ferry::ops::lock::LockLevel;
use ferry::ops::migrate::MigrateArgs;
use ferry::ops::moves::MoveArgs;
use ferry::ops::recall::RecallArgs;
use ferry::ops::reverse_stub::ReverseStubArgs;
use ferry::ops::unmanage::UnmanageArgs;
use ferry::ops::{COMMIT_WINDOW, OpContext, Operation};
use ferry::progress::Progress;
use ferry::snapdiff::provider::gpfs::GpfsOptions;
use ferry::task::input::{InputFormat, PathReader, absolute};
use ferry::task::result::write_outcome;
use ferry::task::{FileState, Outcome, PathObject, TaskResult};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the paths come from and how results are written (every
/// operation).
#[derive(Args)]
pub struct OpCommon {
    /// Files to work on. `-` reads a path list from stdin (JSON lines as
    /// `ferry scan` writes them, or NUL-separated with -0).
    #[arg(value_name = "PATH")]
    paths: Vec<OsString>,

    /// Read a path list from FILE (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,

    /// Path lists are raw paths each ended by NUL (find -print0, ferry
    /// scan -0) instead of JSON lines.
    #[arg(short = '0', long = "null")]
    null: bool,

    /// Configuration file naming the endpoints (default: $FERRY_CONFIG,
    /// else /etc/ferry/ferry.conf).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Files worked on at once (default: `threads` in the configuration,
    /// 10).
    #[arg(short = 'j', long, value_name = "N")]
    threads: Option<usize>,

    /// Write one JSON line per path as it finishes, with `state` and
    /// `message`, instead of the result object at the end.
    #[arg(long)]
    jsonl: bool,

    /// Show a progress line on stderr (default: when stderr is a terminal).
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,

    /// Never show a progress line.
    #[arg(long)]
    no_progress: bool,
}

/// Locking and chunking (operations that change files' data or xattrs).
#[derive(Args)]
pub struct LockArgs {
    /// Per-file locking: none, implicit (lock while committing) or partial
    /// (lock for the whole operation). See docs/operations.md.
    #[arg(long, value_name = "LEVEL", value_parser = LockLevel::parse)]
    lock_level: Option<LockLevel>,

    /// Paths per sequential chunk; each chunk is copied, made durable and
    /// committed before the next starts (at most 512).
    #[arg(long, value_name = "N")]
    sub_batch: Option<usize>,
}

/// Copy files' data to an endpoint and turn them into stubs.
///
/// Each file is read once while its BLAKE3 hash is computed, copied to the
/// endpoint with its metadata (mode, owner, times, user xattrs, hash), made
/// durable and verified; then its location and state are recorded in xattrs
/// (user.ferry.*) and its data beyond --stub-size is punched out, keeping
/// its size and times. A file that changes during the copy, or that another
/// process has open, is never stubbed. Files already migrated are skipped.
///
/// Prints the seed's result object ({"jobid","paths","status":{...}}) with
/// per-file states processed, skipped, aborted and failures (with reasons).
/// Exit status: 0 when no file failed, 1 when some did, 2 on bad arguments
/// or configuration.
#[derive(Args)]
pub struct MigrateCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    lock: LockArgs,

    #[command(flatten)]
    migrate: MigrateFlags,
}

#[derive(Args)]
struct MigrateFlags {
    /// Endpoint (a [Endpoint NAME] section of the configuration).
    #[arg(long, value_name = "NAME")]
    endpoint: String,

    /// Bytes to keep at the start of each stub (rounded up to a block).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    stub_size: u64,

    /// Replace an object already at a file's key, instead of writing a new
    /// instance beside it.
    #[arg(long)]
    overwrite: bool,

    /// Fail a file whose key already holds a different object.
    #[arg(long)]
    fail_on_mismatch: bool,

    /// Report missing files as aborted instead of failed.
    #[arg(long)]
    abort_missing: bool,

    /// Check already-migrated files against the endpoint instead of
    /// skipping them unchecked.
    #[arg(long)]
    migrate_offline_files: bool,

    /// Report files modified during their copy as skipped, not failed.
    #[arg(long)]
    skip_modified_during_migrate: bool,
}

/// Bring migrated files' data back from their endpoint.
///
/// The object is downloaded and its BLAKE3 hash checked before anything is
/// written into the stub, in place (hard links and open handles stay
/// valid). Data the stub still holds is compared, never overwritten. The
/// file ends premigrated, with its mtime restored.
#[derive(Args)]
pub struct RecallCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    lock: LockArgs,

    /// Endpoint to recall from (default: the file's recorded location).
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,

    /// Do not check the downloaded data's hash.
    #[arg(long)]
    skip_hash: bool,

    /// Set the access time to now.
    #[arg(long)]
    update_atime: bool,

    /// Set the modification time to now instead of restoring it.
    #[arg(long)]
    update_mtime: bool,

    /// Delete the object once the data is back and durable.
    #[arg(long)]
    delete_remote: bool,
}

impl MigrateFlags {
    fn args(&self, lock: &LockArgs, premigrate: bool) -> MigrateArgs {
        MigrateArgs {
            endpoint: Some(self.endpoint.clone()),
            premigrate,
            stub_size: self.stub_size,
            overwrite: self.overwrite,
            fail_on_mismatch: self.fail_on_mismatch,
            lock_level: lock.lock_level,
            abort_missing: self.abort_missing,
            migrate_offline_files: self.migrate_offline_files,
            sub_batch: lock.sub_batch,
            skip_modified_during_migrate: self.skip_modified_during_migrate,
        }
    }
}

/// `ferry migrate`.
pub fn run_migrate(c: MigrateCmd) -> ExitCode {
    let op = Operation::Migrate(c.migrate.args(&c.lock, false));
    run(&c.common, op, false)
}

/// `ferry premigrate`.
pub fn run_premigrate(c: MigrateCmd) -> ExitCode {
    let op = Operation::Migrate(c.migrate.args(&c.lock, true));
    run(&c.common, op, false)
}

/// `ferry recall`.
pub fn run_recall(c: RecallCmd) -> ExitCode {
    let op = Operation::Recall(RecallArgs {
        endpoint: c.endpoint,
        skip_hash: c.skip_hash,
        lock_level: c.lock.lock_level,
        update_atime: c.update_atime,
        update_mtime: c.update_mtime,
        delete_remote: c.delete_remote,
        sub_batch: c.lock.sub_batch,
    });
    run(&c.common, op, false)
}

/// Create stubs (or whole files, with --hydrate) from an endpoint's
/// objects, with no local copy needed.
///
/// Each PATH is where a file should appear; its object is found by the same
/// key mapping migrate uses. The file gets the object's size, mode, owner,
/// times and user xattrs, its first --stub-size bytes, and ferry's location
/// and state, and is renamed into place. An existing different file is
/// replaced only with --overwrite or --conflict-preference.
#[derive(Args)]
pub struct ReverseStubCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    lock: LockArgs,

    /// Endpoint holding the objects.
    #[arg(long, value_name = "NAME")]
    endpoint: String,

    /// Write all the data (a premigrated file) instead of a stub.
    #[arg(long)]
    hydrate: bool,

    /// Bytes to keep at the start of each stub; smaller files are written
    /// whole.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    stub_size: u64,

    /// Do not check a hydrated file's hash.
    #[arg(long)]
    skip_hash: bool,

    /// Replace an existing local file whose content differs.
    #[arg(long)]
    overwrite: bool,

    /// When a different local file exists: newest, local or ignore.
    #[arg(long, value_name = "WHICH")]
    conflict_preference: Option<String>,

    /// Retry a file once after a stale file handle: stub or all.
    #[arg(long, value_name = "WHICH")]
    retry_stale: Option<String>,

    /// Set the access time to now.
    #[arg(long)]
    update_atime: bool,

    /// Set the modification time to now.
    #[arg(long)]
    update_mtime: bool,
}

/// Remove the link between files and their endpoints (ferry's location and
/// state xattrs). Objects are kept. A stub's last location is never
/// removed: recall it first.
#[derive(Args)]
pub struct UnmanageCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    lock: LockArgs,

    /// Only endpoints whose name matches one of these globs, separated by |.
    #[arg(long, value_name = "GLOBS", conflicts_with = "moved")]
    storage_key: Option<String>,

    /// Take no per-file lock (conflicts with --lock-level partial).
    #[arg(long)]
    no_flock: bool,

    /// Remove every location of moved files, unlocked (the seed's
    /// remove_location_xattrs_for_moved task).
    #[arg(long)]
    moved: bool,
}

/// Report each path's attributes (type, size, times, mode, owner, inode,
/// links) and ferry's residency (hsm) without following symlinks.
#[derive(Args)]
pub struct StatCmd {
    #[command(flatten)]
    common: OpCommon,
}

/// Delete files, empty directories or, with --recursive, whole trees.
///
/// Snapshot directories, mount points, subvolume roots and GPFS fileset
/// junctions inside a tree are never removed; what was left, and why, is in
/// the path's message. A missing path is skipped.
#[derive(Args)]
pub struct DeleteCmd {
    #[command(flatten)]
    common: OpCommon,

    /// Remove directories with everything in them.
    #[arg(long, short = 'r')]
    recursive: bool,

    /// GPFS device whose fileset junctions are kept (default: the device
    /// mounted at the path, when it is on GPFS).
    #[arg(long, value_name = "DEVICE")]
    gpfs_device: Option<String>,

    /// Directory of the GPFS mm* commands.
    #[arg(long, value_name = "DIR", default_value = "/usr/lpp/mmfs/bin")]
    gpfs_bin: PathBuf,
}

/// Rename paths: SOURCE DEST pairs as arguments, or path objects with a
/// "source" key (as `ferry snapdiff` writes moved entries) from a list.
///
/// By default the batch moves in two steps through a staging directory, so
/// swaps and cycles (a→b, b→c, c→a) end right; --one-step renames directly
/// in the order given. With -0, list entries alternate source and
/// destination.
#[derive(Args)]
pub struct MoveCmd {
    #[command(flatten)]
    common: OpCommon,

    /// Rename each source straight to its destination, in order.
    #[arg(long)]
    one_step: bool,

    /// Remove ferry's location xattrs from moved files (stubs keep theirs).
    #[arg(long)]
    delete_remote_xattrs: bool,

    /// When a destination exists, move only if its ctime (seconds since the
    /// epoch) is at most this; otherwise remove the source.
    #[arg(long, value_name = "SECONDS")]
    target_max_age: Option<i64>,
}

/// `ferry reverse-stub`.
pub fn run_reverse_stub(c: ReverseStubCmd) -> ExitCode {
    let op = Operation::ReverseStub(ReverseStubArgs {
        endpoint: Some(c.endpoint),
        hydrate: c.hydrate,
        stub_size: c.stub_size,
        skip_hash: c.skip_hash,
        overwrite: c.overwrite,
        retry_stale: c.retry_stale,
        lock_level: c.lock.lock_level,
        update_atime: c.update_atime,
        update_mtime: c.update_mtime,
        conflict_preference: c.conflict_preference,
        sub_batch: c.lock.sub_batch,
    });
    run(&c.common, op, false)
}

/// `ferry unmanage`.
pub fn run_unmanage(c: UnmanageCmd) -> ExitCode {
    let op = if c.moved {
        Operation::RemoveLocations
    } else {
        Operation::Unmanage(UnmanageArgs {
            lock_level: c.lock.lock_level,
            no_flock: c.no_flock,
            storage_key: c.storage_key,
            sub_batch: c.lock.sub_batch,
        })
    };
    run(&c.common, op, false)
}

/// `ferry stat`.
pub fn run_stat(c: StatCmd) -> ExitCode {
    run(&c.common, Operation::Stat, false)
}

/// `ferry delete`.
pub fn run_delete(c: DeleteCmd) -> ExitCode {
    let gpfs = GpfsOptions {
        bin_dir: Some(c.gpfs_bin),
        device: c.gpfs_device,
        ..GpfsOptions::default()
    };
    run_with(
        &c.common,
        Operation::Delete(DeleteArgs { recursive: c.recursive }),
        false,
        gpfs,
    )
}

/// `ferry move`.
pub fn run_move(c: MoveCmd) -> ExitCode {
    let args = MoveArgs {
        delete_remote_xattrs: c.delete_remote_xattrs,
        target_max_age: c.target_max_age,
    };
    let op = if c.one_step {
        Operation::OneStepMove(args)
    } else {
        Operation::Move(args)
    };
    run(&c.common, op, true)
}

/// Where results go.
enum Sink {
    Result(Box<TaskResult>),
    Lines(BufWriter<io::StdoutLock<'static>>),
}

impl Sink {
    fn add(&mut self, obj: &PathObject, outcome: &Outcome) -> io::Result<()> {
        match self {
            Sink::Result(r) => {
                r.add(obj, outcome);
                Ok(())
            }
            Sink::Lines(w) => {
                let mut line = Vec::with_capacity(128);
                write_outcome(obj, outcome, true, &mut line);
                line.push(b'\n');
                w.write_all(&line)
            }
        }
    }
}

fn run(common: &OpCommon, op: Operation, pairs: bool) -> ExitCode {
    run_with(common, op, pairs, GpfsOptions::default())
}

fn run_with(common: &OpCommon, op: Operation, pairs: bool, gpfs: GpfsOptions) -> ExitCode {
    match drive(common, &op, pairs, gpfs) {
        Ok((failed, bad_input)) => {
            if bad_input > 0 {
                eprintln!("ferry: {bad_input} entr(y/ies) of the path list could not be read (reported above)");
            }
            if failed > 0 {
                eprintln!("ferry: {failed} path(s) failed; see the result for the reasons");
            }
            if failed > 0 || bad_input > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(msg) => {
            eprintln!("ferry: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Runs `op` over every input path; returns the failed count and the count
/// of unreadable path-list entries.
fn drive(common: &OpCommon, op: &Operation, pairs: bool, gpfs: GpfsOptions) -> Result<(u64, u64), String> {
    let config = Config::load(common.config.as_deref()).map_err(|e| e.to_string())?;
    let mut ctx = OpContext::new(config, common.threads).map_err(|e| format!("cannot start: {e}"))?;
    ctx.gpfs = gpfs;
    let progress = Progress::start(
        ctx.counters.clone(),
        if common.no_progress {
            Some(false)
        } else {
            common.progress.then_some(true)
        },
    );
    let mut sink = if common.jsonl {
        Sink::Lines(BufWriter::new(io::stdout().lock()))
    } else {
        Sink::Result(Box::new(TaskResult::new(op.task_name(), None)))
    };
    let mut inputs = Inputs::new(common, pairs)?;
    let (mut failed, mut bad_input) = (0u64, 0u64);
    loop {
        // A move batch is taken whole: its two steps must see every move,
        // or a swap split across batches would lose a file.
        let batch = inputs.next_batch(if pairs { usize::MAX } else { COMMIT_WINDOW }, &mut bad_input)?;
        if batch.is_empty() {
            break;
        }
        let outcomes = op.run(&ctx, &batch)?;
        for (obj, outcome) in batch.iter().zip(&outcomes) {
            failed += u64::from(outcome.state == FileState::Failures);
            sink.add(obj, outcome).map_err(|e| format!("writing results: {e}"))?;
        }
    }
    drop(progress);
    let mut out = io::stdout().lock();
    match sink {
        Sink::Result(r) => {
            let mut json = r.to_json();
            json.push(b'\n');
            out.write_all(&json)
        }
        Sink::Lines(mut w) => w.flush(),
    }
    .map_err(|e| format!("writing results: {e}"))?;
    Ok((failed, bad_input))
}

/// The paths of the command line, then any path lists, in order.
struct Inputs {
    args: std::vec::IntoIter<Vec<u8>>,
    lists: Vec<(String, Box<dyn BufRead>)>,
    current: Option<PathReader<Box<dyn BufRead>>>,
    format: InputFormat,
    cwd: Vec<u8>,
    /// Entries are SOURCE DEST pairs (moves): arguments always, NUL lists
    /// alternate.
    pairs: bool,
    /// A source read from a NUL list, waiting for its destination.
    pending_source: Option<Vec<u8>>,
}

impl Inputs {
    fn new(c: &OpCommon, pairs: bool) -> Result<Inputs, String> {
        let mut lists: Vec<(String, Box<dyn BufRead>)> = Vec::new();
        let mut args = Vec::new();
        let stdin = || -> (String, Box<dyn BufRead>) { ("stdin".into(), Box::new(BufReader::new(io::stdin()))) };
        for p in &c.paths {
            if p == "-" {
                lists.push(stdin());
            } else {
                args.push(p.as_bytes().to_vec());
            }
        }
        match c.from.as_deref() {
            Some(p) if p.as_os_str() == "-" => lists.push(stdin()),
            Some(p) => {
                let f = File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                lists.push((p.display().to_string(), Box::new(BufReader::with_capacity(1 << 16, f))));
            }
            None => {}
        }
        if pairs && args.len() % 2 == 1 {
            return Err("paths come in SOURCE DEST pairs; the last source has no destination".into());
        }
        if args.is_empty() && lists.is_empty() {
            return Err("no paths given (give PATHs, `-` to read a list from stdin, or --from FILE)".into());
        }
        let cwd = std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))?
            .as_os_str()
            .as_bytes()
            .to_vec();
        Ok(Inputs {
            args: args.into_iter(),
            lists,
            current: None,
            format: if c.null {
                InputFormat::Nul
            } else {
                InputFormat::JsonLines
            },
            cwd,
            pairs,
            pending_source: None,
        })
    }

    /// Up to `n` more paths; unreadable list entries are reported on
    /// stderr and counted.
    fn next_batch(&mut self, n: usize, bad: &mut u64) -> Result<Vec<PathObject>, String> {
        let mut out = Vec::with_capacity(n.min(COMMIT_WINDOW));
        while out.len() < n {
            if let Some(p) = self.args.next() {
                let source = if self.pairs {
                    self.args.next().map(|dst| (p.clone(), dst))
                } else {
                    None
                };
                let obj = match source {
                    Some((src, dst)) => absolute(&self.cwd, &src).and_then(|src| {
                        let mut o = PathObject::new(absolute(&self.cwd, &dst)?);
                        o.source = Some(src);
                        Ok(o)
                    }),
                    None => absolute(&self.cwd, &p).map(PathObject::new),
                };
                match obj {
                    Ok(o) => out.push(o),
                    Err(e) => {
                        eprintln!("ferry: {e}");
                        *bad += 1;
                    }
                }
                continue;
            }
            if self.current.is_none() {
                if self.lists.is_empty() {
                    break;
                }
                let (name, reader) = self.lists.remove(0);
                self.current =
                    Some(PathReader::new(reader, self.format, &name).map_err(|e| format!("cannot read {name}: {e}"))?);
            }
            let reader = self.current.as_mut().expect("set above");
            match reader.next_entry().map_err(|e| format!("reading the path list: {e}"))? {
                Some(Ok(obj)) if self.pairs && self.format == InputFormat::Nul => match self.pending_source.take() {
                    None => self.pending_source = Some(obj.path),
                    Some(src) => {
                        let mut o = obj;
                        o.source = Some(src);
                        out.push(o);
                    }
                },
                Some(Ok(obj)) => out.push(obj),
                Some(Err(e)) => {
                    eprintln!("ferry: {e}");
                    *bad += 1;
                }
                None => {
                    self.current = None;
                    if self.pending_source.take().is_some() {
                        eprintln!("ferry: the NUL list ends with a source that has no destination");
                        *bad += 1;
                    }
                }
            }
        }
        Ok(out)
    }
}
