//! The operation subcommands (`migrate`, `recall`, `move`, ...): flags
//! into an [`Operation`] and where its paths come from, the library's
//! loop to run it, and the seed's result object (or one JSON line per
//! path) on stdout.

use super::args::{Concurrency, ConfigArg, GpfsArgs, ProgressArgs};
use super::exit::Failure;
use clap::Args;
use ferry::ops::delete::DeleteArgs;
use ferry::ops::ensure_in_cloud::EnsureArgs;
use ferry::ops::import::{Id, ImportArgs};
use ferry::ops::import_bytes::ImportBytesArgs;
use ferry::ops::lock::LockLevel;
use ferry::ops::migrate::MigrateArgs;
use ferry::ops::move_in_cloud::MoveInCloudArgs;
use ferry::ops::moves::MoveArgs;
use ferry::ops::recall::RecallArgs;
use ferry::ops::recall_bytes::{LocalPath, Mode, RecallBytesArgs};
use ferry::ops::remove_from_cloud::RemoveFromCloudArgs;
use ferry::ops::reverse_stub::ReverseStubArgs;
use ferry::ops::sync_metadata::SyncMetadataArgs;
use ferry::ops::unmanage::UnmanageArgs;
use ferry::ops::{OpContext, Operation, run_batches};
use ferry::progress::Progress;
use ferry::task::TaskResult;
use ferry::task::input::{InputSpec, Inputs};
use ferry::task::result::OutcomeWriter;
use std::ffi::OsString;
use std::io::{self, BufWriter};
use std::path::PathBuf;

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

    #[command(flatten)]
    config: ConfigArg,

    #[command(flatten)]
    concurrency: Concurrency,

    /// Write one JSON line per path as it finishes, with `state` and
    /// `message`, instead of the result object at the end.
    #[arg(long)]
    jsonl: bool,

    #[command(flatten)]
    progress: ProgressArgs,
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
    /// Endpoint (a [Endpoint NAME] section of the configuration) [default:
    /// for each path, the endpoint whose `root` holds it, the deepest such
    /// root; a path no root holds fails].
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,

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
///
/// With --range or --location, a byte range of each object is written to a
/// new file under --location instead, and the stub is left as it is (the
/// seed's recall_bytes; docs/operations.md).
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

    /// Recall only bytes START..END of each object (END left out: to the
    /// object's end) into --location (the seed's recall_bytes). Ranges are
    /// not filled into stubs in place: a stub cannot record partial
    /// residency.
    #[arg(long, value_name = "START:END", value_parser = parse_range)]
    range: Option<(u64, Option<u64>)>,

    /// Directory (made if missing) to write each file's range to, as a
    /// file of the stub's name; the stub is left as it is.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["skip_hash", "update_atime", "update_mtime", "delete_remote"])]
    location: Option<PathBuf>,

    /// Mode of directories made for --location, in octal [default: 755].
    #[arg(long, value_name = "OCTAL", requires = "location", value_parser = parse_mode)]
    default_mode_dir: Option<u32>,
}

/// `START:END` or `START:` as byte offsets.
fn parse_range(s: &str) -> Result<(u64, Option<u64>), String> {
    let (a, b) = s.split_once(':').ok_or("expected START:END (END may be left out)")?;
    let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{v:?} is not a byte offset"));
    let end = if b.is_empty() { None } else { Some(num(b)?) };
    Ok((num(a)?, end))
}

/// An octal mode such as 755 or 0750.
fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode"))
}

impl MigrateFlags {
    fn args(&self, lock: &LockArgs, premigrate: bool) -> MigrateArgs {
        MigrateArgs {
            endpoint: self.endpoint.clone(),
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

/// `ferry migrate` and `ferry premigrate`.
pub fn run_migrate(c: MigrateCmd, premigrate: bool) -> Result<(), Failure> {
    let op = Operation::Migrate(c.migrate.args(&c.lock, premigrate));
    run(&c.common, op, None)
}

/// `ferry recall` (`recall_bytes` with --range or --location).
pub fn run_recall(c: RecallCmd) -> Result<(), Failure> {
    if c.range.is_some() || c.location.is_some() {
        let (start, end) = c.range.unwrap_or((0, None));
        let location = match c.location {
            Some(l) => Some(LocalPath(
                std::path::absolute(&l)
                    .map_err(|e| Failure::setup(format!("--location {}: {e}", l.display())))?
                    .into_os_string()
                    .into_encoded_bytes(),
            )),
            None => None,
        };
        let op = Operation::RecallBytes(RecallBytesArgs {
            endpoint: c.endpoint,
            lock_level: c.lock.lock_level,
            location,
            remote_offset_start: start,
            remote_offset_end: end,
            default_mode_dir: c.default_mode_dir.map(Mode),
            sub_batch: c.lock.sub_batch,
        });
        return run(&c.common, op, None);
    }
    let op = Operation::Recall(RecallArgs {
        endpoint: c.endpoint,
        skip_hash: c.skip_hash,
        lock_level: c.lock.lock_level,
        update_atime: c.update_atime,
        update_mtime: c.update_mtime,
        delete_remote: c.delete_remote,
        sub_batch: c.lock.sub_batch,
    });
    run(&c.common, op, None)
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

    /// Endpoint holding the objects [default: for each path, the endpoint
    /// whose `root` holds it, the deepest such root, as migrate chooses
    /// it; a path no root holds fails].
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,

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
/// the path's message. A missing path is skipped. The junctions are those of
/// the GPFS device holding the path (--gpfs-device, or gpfs_device in the
/// configuration), listed with mmlsfileset.
#[derive(Args)]
pub struct DeleteCmd {
    #[command(flatten)]
    common: OpCommon,

    /// Remove directories with everything in them.
    #[arg(long, short = 'r')]
    recursive: bool,

    /// Give the directory holding each removed path back the times it had
    /// just before (a sync mirroring a removal).
    #[arg(long)]
    keep_parent_times: bool,

    #[command(flatten)]
    gpfs: GpfsArgs,
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

    /// Give each directory whose entries a move changes back the times it
    /// had just before (a sync mirroring a move).
    #[arg(long)]
    keep_parent_times: bool,

    /// Make a destination's missing parent directories (mode 0755, given
    /// their attributes when their own objects arrive); without it such a
    /// move fails and the entry stays at its source.
    #[arg(long, short = 'p')]
    make_parents: bool,

    /// Keep moved files' endpoint locations true to their new paths: a
    /// whole file forgets a location naming its old path's key; a stub's
    /// object is copied to its new path's key and its location moved
    /// there (the old object stays). Files under a moved directory too.
    #[arg(long)]
    relocate: bool,
}

/// Build local files from an endpoint's objects named by key or key prefix
/// (`projects/`), relative to the endpoint's prefix.
///
/// Every object under a prefix is imported, a page at a time. Each goes to
/// its path under the endpoint's `root`, or with --location under DIR from
/// the KEY's last component down. Stubs by default, premigrated files with
/// --hydrate, plain local files with no link to the endpoint with --copy.
/// Objects another tool wrote (no ferry metadata) are imported whole, mode
/// 0644, owned by --default-uid/--default-gid, with their last-modified
/// time. One result per KEY.
#[derive(Args)]
pub struct ImportCmd {
    /// The endpoint holding the objects.
    #[arg(value_name = "ENDPOINT")]
    endpoint: String,

    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    lock: LockArgs,

    /// Absolute local directory to import under, instead of the endpoint's
    /// root.
    #[arg(long, value_name = "DIR")]
    location: Option<String>,

    /// Premigrated files instead of stubs.
    #[arg(long)]
    hydrate: bool,

    /// Plain local copies, no longer associated with the endpoint
    /// (copy_files_from_external_target).
    #[arg(long)]
    copy: bool,

    /// With --copy: take no owner, mode, times or xattrs from the objects.
    #[arg(long, requires = "copy")]
    ignore_metadata: bool,

    /// Do not check a whole file's hash.
    #[arg(long)]
    skip_hash: bool,

    /// Owner of objects that record none (and of --ignore-metadata copies).
    #[arg(long, value_name = "UID")]
    default_uid: Option<u32>,

    /// Group of objects that record none (and of --ignore-metadata copies).
    #[arg(long, value_name = "GID")]
    default_gid: Option<u32>,

    /// Set the access time to now.
    #[arg(long)]
    update_atime: bool,

    /// Set the modification time to now.
    #[arg(long)]
    update_mtime: bool,
}

/// `ferry import`.
pub fn run_import(c: ImportCmd) -> Result<(), Failure> {
    let args = ImportArgs {
        endpoint: Some(c.endpoint),
        lock_level: c.lock.lock_level,
        location: c.location,
        hydrate: c.hydrate,
        extra_flags: Vec::new(),
        skip_hash: c.skip_hash,
        default_uid: c.default_uid.map(Id::Number),
        default_gid: c.default_gid.map(Id::Number),
        update_atime: c.update_atime,
        update_mtime: c.update_mtime,
        ignore_metadata: c.ignore_metadata,
    };
    let op = if c.copy {
        Operation::CopyImport(args)
    } else {
        Operation::Import(args)
    };
    run(&c.common, op, None)
}

/// Write a byte range of each KEY's object to a new local file
/// (import_bytes).
///
/// KEYs are object keys relative to the endpoint's prefix. The file goes
/// where `ferry import` would put the object, gets the object's owner and
/// mode (or the defaults, for an object another tool wrote), and never
/// replaces a file at its path.
#[derive(Args)]
pub struct ImportBytesCmd {
    /// The endpoint holding the objects.
    #[arg(value_name = "ENDPOINT")]
    endpoint: String,

    #[command(flatten)]
    common: OpCommon,

    /// Absolute local directory to write under, instead of the endpoint's
    /// root.
    #[arg(long, value_name = "DIR")]
    location: Option<String>,

    /// First byte of the range.
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    start: u64,

    /// End of the range (exclusive) [default: the object's size].
    #[arg(long, value_name = "OFFSET")]
    end: Option<u64>,

    /// Owner when the object records none.
    #[arg(long, value_name = "UID")]
    default_uid: Option<u32>,

    /// Group when the object records none.
    #[arg(long, value_name = "GID")]
    default_gid: Option<u32>,

    /// Mode (octal) when the object records none [default: 644].
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    default_mode_file: Option<u32>,

    /// Mode (octal) of missing parent directories [default: 755].
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    default_mode_dir: Option<u32>,
}

/// `ferry import-bytes`.
pub fn run_import_bytes(c: ImportBytesCmd) -> Result<(), Failure> {
    let op = Operation::ImportBytes(ImportBytesArgs {
        endpoint: Some(c.endpoint),
        lock_level: None,
        location: c.location,
        remote_offset_start: c.start,
        remote_offset_end: c.end,
        default_uid: c.default_uid.map(Id::Number),
        default_gid: c.default_gid.map(Id::Number),
        default_mode_file: c.default_mode_file.map(Mode),
        default_mode_dir: c.default_mode_dir.map(Mode),
    });
    run(&c.common, op, None)
}

/// `ferry reverse-stub`.
pub fn run_reverse_stub(c: ReverseStubCmd) -> Result<(), Failure> {
    let op = Operation::ReverseStub(ReverseStubArgs {
        endpoint: c.endpoint,
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
    run(&c.common, op, None)
}

/// `ferry unmanage`.
pub fn run_unmanage(c: UnmanageCmd) -> Result<(), Failure> {
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
    run(&c.common, op, None)
}

/// `ferry stat`.
pub fn run_stat(c: StatCmd) -> Result<(), Failure> {
    run(&c.common, Operation::Stat, None)
}

/// `ferry delete`.
pub fn run_delete(c: DeleteCmd) -> Result<(), Failure> {
    let op = Operation::Delete(DeleteArgs {
        recursive: c.recursive,
        keep_parent_times: c.keep_parent_times,
    });
    run(&c.common, op, Some(&c.gpfs))
}

/// `ferry move`.
pub fn run_move(c: MoveCmd) -> Result<(), Failure> {
    let args = MoveArgs {
        delete_remote_xattrs: c.delete_remote_xattrs,
        target_max_age: c.target_max_age,
        keep_parent_times: c.keep_parent_times,
        make_parents: c.make_parents,
        relocate: c.relocate,
    };
    let op = if c.one_step {
        Operation::OneStepMove(args)
    } else {
        Operation::Move(args)
    };
    run(&c.common, op, None)
}

/// The endpoint a cloud-side command works on.
#[derive(Args)]
pub struct CloudEndpoint {
    /// Endpoint holding the objects [default: for each path, the endpoint
    /// whose `root` holds it, the deepest such root, as migrate chooses
    /// it; a path no root holds fails].
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,
}

/// Delete each path's object from its endpoint (the key migrate gives the
/// path).
///
/// A local file that is a stub of that object is refused (recall it
/// first); a local file whose location names it loses that location (and
/// its state once none is left) before the object goes. A path with no
/// object is skipped.
#[derive(Args)]
pub struct RemoveFromCloudCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    cloud: CloudEndpoint,
}

/// Move objects after their files moved: SOURCE DEST pairs as arguments,
/// or path objects with a "source" key from a list (as `ferry move` takes
/// them).
///
/// The object at SOURCE's key is copied with its metadata to DEST's key,
/// the copy made durable and checked, DEST's location xattr updated if it
/// named the old key, and only then the old object deleted. Running it
/// again after an interruption finishes the move.
#[derive(Args)]
pub struct MoveInCloudCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    cloud: CloudEndpoint,
}

/// Check that each path's object is at its endpoint, with the size and hash
/// the local file records (when it records a state).
///
/// A path whose check fails is checked twice more, --retry-pause apart,
/// before it fails.
#[derive(Args)]
pub struct EnsureInCloudCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    cloud: CloudEndpoint,

    /// Seconds between checks [default: 5].
    #[arg(long, value_name = "SECONDS")]
    retry_pause: Option<f64>,
}

/// Bring ferry's location and state xattrs of each file in line with its
/// endpoint (the seed's ngenea_sync_metadata).
///
/// A resident file whose content matches its object (size, and hash unless
/// --skip-hash) is recorded as premigrated; a stub of its object takes the
/// object's mode, owner, user xattrs and times where they differ; a file
/// whose object is gone loses its location there (a stub keeps its state and
/// fails: its data is lost). The object is the one the file's location
/// names, else the one at the key migrate gives the path.
#[derive(Args)]
pub struct SyncMetadataCmd {
    #[command(flatten)]
    common: OpCommon,

    #[command(flatten)]
    cloud: CloudEndpoint,

    /// Compare resident files with their objects by size only.
    #[arg(long)]
    skip_hash: bool,
}

/// `ferry sync-metadata`.
pub fn run_sync_metadata(c: SyncMetadataCmd) -> Result<(), Failure> {
    let op = Operation::SyncMetadata(SyncMetadataArgs {
        skip_hash: c.skip_hash,
        endpoint: c.cloud.endpoint,
    });
    run(&c.common, op, None)
}

/// `ferry remove-from-cloud`.
pub fn run_remove_from_cloud(c: RemoveFromCloudCmd) -> Result<(), Failure> {
    let op = Operation::RemoveFromCloud(RemoveFromCloudArgs {
        endpoint: c.cloud.endpoint,
    });
    run(&c.common, op, None)
}

/// `ferry move-in-cloud`.
pub fn run_move_in_cloud(c: MoveInCloudCmd) -> Result<(), Failure> {
    let op = Operation::MoveInCloud(MoveInCloudArgs {
        endpoint: c.cloud.endpoint,
    });
    run(&c.common, op, None)
}

/// `ferry ensure-in-cloud`.
pub fn run_ensure_in_cloud(c: EnsureInCloudCmd) -> Result<(), Failure> {
    let op = Operation::EnsureInCloud(EnsureArgs {
        endpoint: c.cloud.endpoint,
        retry_pause: c.retry_pause,
    });
    run(&c.common, op, None)
}

/// Runs `op` over every input path; `gpfs` flags override the
/// configuration's GPFS settings.
fn run(common: &OpCommon, op: Operation, gpfs: Option<&GpfsArgs>) -> Result<(), Failure> {
    let mut config = common.config.load().map_err(Failure::setup)?;
    if let Some(g) = gpfs {
        g.apply(&mut config.gpfs);
    }
    let ctx =
        OpContext::new(config, common.concurrency.threads).map_err(|e| Failure::setup(format!("cannot start: {e}")))?;
    let spec = InputSpec {
        paths: common.paths.clone(),
        from: common.from.clone(),
        null: common.null,
        pairs: op.takes_pairs(),
        keys: op.takes_keys(),
    };
    let mut inputs = Inputs::open(&spec).map_err(Failure::setup)?;
    let progress = Progress::start(ctx.counters.clone(), common.progress.choice());
    let out = BufWriter::new(io::stdout().lock());
    let mut sink = if common.jsonl {
        OutcomeWriter::Lines(out)
    } else {
        OutcomeWriter::Result(Box::new(TaskResult::new(op.task_name(), None)), out)
    };
    let mut bad_input = 0u64;
    let totals = run_batches(
        &ctx,
        &op,
        |n| {
            inputs.next_batch(n, &mut |e| {
                eprintln!("ferry: {e}");
                bad_input += 1;
            })
        },
        |obj, outcome| sink.add(&obj, &outcome),
    )
    .map_err(Failure::setup)?;
    drop(progress);
    sink.finish()
        .map_err(|e| Failure::setup(format!("writing results: {e}")))?;
    let mut why = Vec::new();
    if bad_input > 0 {
        why.push(format!(
            "{bad_input} entr(y/ies) of the path list could not be read (reported above)"
        ));
    }
    if totals.failed > 0 {
        why.push(format!(
            "{} path(s) failed; see the result for the reasons",
            totals.failed
        ));
    }
    match why.pop() {
        None => Ok(()),
        Some(last) => {
            for w in why {
                eprintln!("ferry: {w}");
            }
            Err(Failure::paths(last))
        }
    }
}
