//! The `ferry` command line: parses arguments and calls the library.

mod cli {
    pub mod agent;
    pub mod ops;
}

use clap::{Args, Parser, Subcommand};
use ferry::batch::BatchLimits;
use ferry::entry::Fields;
use ferry::output::Format;
use ferry::rules::Filter;
use ferry::scan::{ScanRequest, scan, write_status};
use ferry::snapdiff::inspect::{DumpMode, dump};
use ferry::snapdiff::manifest::ManifestError;
use ferry::snapdiff::output::{ChangeWriter, DEFAULT_FIELDS, ExtraFields, write_report};
use ferry::snapdiff::provider::{self, Kind, Provider, ProviderOptions, gpfs::GpfsOptions};
use ferry::snapdiff::run::{SnapdiffError, SnapdiffOptions, rotate, snapdiff};
use ferry::snapdiff::state::AcquireError;
use ferry::testtree::{Shape, generate};
use ferry::walk::{MIN_GETDENTS_BUFFER, SnapshotDirs, WalkOptions};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// High-throughput filesystem discovery and sync for HPC storage.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Scan(ScanArgs),
    Snapdiff(SnapdiffArgs),
    Rotate(RotateArgs),
    Manifest(ManifestArgs),
    Migrate(cli::ops::MigrateCmd),
    /// Copy files' data to an endpoint and keep it on disk too.
    ///
    /// Like `ferry migrate` without the final step: the files stay whole,
    /// and are recorded as premigrated, so a later migrate only has to stub
    /// them (after checking that their content still matches the object).
    Premigrate(cli::ops::MigrateCmd),
    Recall(cli::ops::RecallCmd),
    ReverseStub(cli::ops::ReverseStubCmd),
    Move(cli::ops::MoveCmd),
    Delete(cli::ops::DeleteCmd),
    Unmanage(cli::ops::UnmanageCmd),
    Stat(cli::ops::StatCmd),
    Agent(cli::agent::AgentCmd),
    /// Generate a test tree for benchmarks (wide, deep, flat or mixed).
    #[command(hide = true)]
    GenTree {
        /// wide (files over 10,000 dirs), deep (50 levels), flat (one dir) or mixed.
        #[arg(long)]
        shape: Shape,
        /// How many files to create.
        #[arg(long, default_value_t = 100_000)]
        files: usize,
        /// Directory to create (must not exist).
        dir: PathBuf,
    },
}

/// Walk directory trees in parallel and list what is in them.
///
/// Writes one JSON path object per line by default, e.g.
/// {"path":"/data/a","type":"file","size":12,"mtime":1700000000.000000000,...}.
/// Names that are not UTF-8 are written with Python's surrogateescape
/// convention (byte 0xNN becomes \udcNN), so `os.fsencode` restores the
/// exact bytes; -0 writes raw bytes instead. Unreadable paths are reported
/// on stderr with their errno, counted, and skipped; the exit status is 1
/// if any path failed.
#[derive(Args)]
struct ScanArgs {
    /// Directories or files to scan.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<OsString>,

    #[command(flatten)]
    output: OutputArgs,

    /// Comma-separated fields of each path object: path, type, size, mtime,
    /// ctime, atime, inode, generation, mode, uid, gid, nlink, or all.
    /// Asking only for path,type (and inode) skips stat entirely.
    #[arg(
        long,
        value_name = "LIST",
        default_value = Fields::DEFAULT_LIST
    )]
    fields: String,

    /// Worker threads: metadata calls in flight. Use 64 or more on a
    /// parallel filesystem, where each call is a network round trip.
    #[arg(short = 'j', long, value_name = "N")]
    threads: Option<usize>,

    /// Do not descend into directories on other filesystems.
    #[arg(short = 'x', long)]
    one_file_system: bool,

    /// Follow symbolic links (loops are detected and reported).
    #[arg(short = 'L', long)]
    follow: bool,

    /// Descend at most N levels below the given paths (0: the paths only).
    #[arg(long, value_name = "N")]
    max_depth: Option<usize>,

    /// Keep only paths matching this shell glob over the whole path
    /// (`*` matches `/` too); repeatable, any match keeps.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,

    /// Drop paths matching this glob; excluded directories are not entered.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,

    /// Also descend into directories named .snapshots (skipped by default).
    #[arg(long)]
    include_snapshots: bool,

    /// getdents64 buffer per thread, in bytes (K and M suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "128K", value_parser = parse_size)]
    getdents_buffer: usize,

    /// Show a progress line on stderr (default: when stderr is a terminal).
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,

    /// Never show a progress line.
    #[arg(long)]
    no_progress: bool,
}

/// How entries are written (shared by scan and snapdiff).
#[derive(Args)]
struct OutputArgs {
    /// Write raw paths, each followed by a NUL byte (like find -print0).
    #[arg(short = '0', long = "null", conflicts_with_all = ["batch", "summary"])]
    null: bool,

    /// Write one JSON array of path objects per batch, one batch per line.
    #[arg(long, conflicts_with = "summary")]
    batch: bool,

    /// Most paths per batch (seed setting file_batch_size).
    #[arg(long, default_value_t = 40, value_name = "N")]
    file_batch_size: usize,

    /// Most file data per batch in GB (10^9 bytes; seed setting
    /// file_batch_gb; 0 for no limit). Whichever limit is hit first
    /// closes the batch.
    #[arg(long, default_value_t = 1.0, value_name = "GB")]
    file_batch_gb: f64,

    /// Grow the batch size with the number of paths found so far
    /// (seed setting enable_auto_file_batch_sizing; see docs/batching.md).
    #[arg(long)]
    auto_batch_size: bool,

    /// Use large streaming batches (10,000 paths or 1 MiB of JSON) instead
    /// of the file_batch_* limits.
    #[arg(long, requires = "batch")]
    stream_batches: bool,

    /// Print only a status object with counts, not the entries.
    #[arg(long)]
    summary: bool,
}

impl OutputArgs {
    /// The output format, or `None` for a summary only.
    fn format(&self, fields: Fields) -> Option<Format> {
        if self.summary {
            None
        } else if self.null {
            Some(Format::Nul)
        } else if self.batch {
            let limits = if self.stream_batches {
                BatchLimits::STREAMING
            } else {
                BatchLimits::from_seed(self.file_batch_size, self.file_batch_gb, self.auto_batch_size)
            };
            Some(Format::Batches(fields, limits))
        } else {
            Some(Format::JsonLines(fields))
        }
    }
}

/// The fileset and where its run state lives (snapdiff and rotate).
#[derive(Args)]
struct FilesetArgs {
    /// The fileset: a GPFS independent fileset's junction, a btrfs
    /// subvolume, or any directory (with --provider none).
    #[arg(value_name = "FILESET")]
    fileset: PathBuf,

    /// How snapshots are taken: btrfs (read-only subvolume snapshots),
    /// gpfs (mmcrsnapshot and mmapplypolicy), none (no snapshots: the
    /// previous run's manifest of the live tree is the baseline), or auto
    /// (btrfs for a btrfs subvolume, otherwise none).
    #[arg(long, value_enum, default_value = "auto")]
    provider: ProviderKind,

    /// Directory for the last-snap, manifest and lock files
    /// [default: <filesystem root>/.rotate].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Prefix of snapshot and state file names (snapshots are called
    /// <prefix>.snapdiff.<UTC time>).
    #[arg(long, default_value = "ferry", value_name = "NAME")]
    prefix: String,

    /// Seconds after which another run's lock counts as stale and is taken
    /// over (site setting lock_threshold).
    #[arg(long, default_value_t = 86400, value_name = "SECONDS")]
    lock_threshold: u64,

    /// Seconds to keep retrying a snapshot create or delete that fails
    /// for a transient reason (snapshot_create_delete_retry_timeout; 0:
    /// no retries).
    #[arg(long, default_value_t = 1000, value_name = "SECONDS")]
    snapshot_retry_timeout: u64,

    /// Directory of GPFS's mm* commands.
    #[arg(long, value_name = "DIR", default_value = "/usr/lpp/mmfs/bin")]
    gpfs_bin: PathBuf,

    /// GPFS filesystem device (e.g. gpfs0) [default: from the mount table].
    #[arg(long, value_name = "DEVICE")]
    gpfs_device: Option<String>,

    /// Nodes to run the GPFS policy scan on (mmapplypolicy -N; worker
    /// setting gpfs_nodes), comma-separated.
    #[arg(long, value_name = "NODES", value_delimiter = ',')]
    gpfs_nodes: Vec<String>,

    /// Inode scan threads for the policy scan (mmapplypolicy -a; site
    /// setting iscanThreads).
    #[arg(long, value_name = "N")]
    gpfs_iscan_threads: Option<u32>,

    /// Read snapshots by walking them (<fileset>/.snapshots/<name>) instead
    /// of the provider's fast way: btrfs's tree search (needs root),
    /// GPFS's mmapplypolicy inode scan.
    #[arg(long, alias = "gpfs-walk")]
    walk: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProviderKind {
    Auto,
    Btrfs,
    Gpfs,
    None,
}

impl FilesetArgs {
    fn open(&self) -> Result<Box<dyn Provider>, String> {
        let kind = match self.provider {
            ProviderKind::Auto => Kind::Auto,
            ProviderKind::Btrfs => Kind::Btrfs,
            ProviderKind::Gpfs => Kind::Gpfs,
            ProviderKind::None => Kind::None,
        };
        let opts = ProviderOptions {
            walk: self.walk,
            gpfs: GpfsOptions {
                bin_dir: Some(self.gpfs_bin.clone()),
                device: self.gpfs_device.clone(),
                nodes: self.gpfs_nodes.clone(),
                iscan_threads: self.gpfs_iscan_threads,
            },
        };
        provider::open(kind, &self.fileset, &opts).map_err(|e| format!("{}: {e}", self.fileset.display()))
    }

    fn options(&self) -> SnapdiffOptions {
        SnapdiffOptions {
            state_dir: self.state_dir.clone(),
            prefix: self.prefix.clone(),
            lock_threshold: Duration::from_secs(self.lock_threshold),
            retry_timeout: Duration::from_secs(self.snapshot_retry_timeout),
            ..SnapdiffOptions::default()
        }
    }
}

/// Find what was created, updated, moved and deleted in a fileset since
/// the last successful run.
///
/// Takes a snapshot, reads it into a manifest (every entry keyed by inode
/// and generation), diffs it against the manifest of the last synced
/// snapshot, writes the changes, and rotates: the new snapshot becomes the
/// last synced one and older ones are deleted. The first run reports
/// everything as created. Each path object carries "state" (created,
/// updated, moved, deleted) and, for moves, "source". Changes come in the
/// order that makes applying them safe (docs/snapdiff.md). Only one run per
/// fileset at a time: a second fails with SnapdiffLockError (exit 3).
#[derive(Args)]
struct SnapdiffArgs {
    #[command(flatten)]
    fileset: FilesetArgs,

    #[command(flatten)]
    output: OutputArgs,

    /// Comma-separated fields of each path object: path, type, size,
    /// mtime, ctime, inode, generation, mode, uid, gid, nlink, or all
    /// (except atime, which manifests do not keep).
    #[arg(long, value_name = "LIST", default_value = DEFAULT_FIELDS)]
    fields: String,

    /// Seed extra_fields, written under "additional_metadata": inode,
    /// generation, is_metadata_only_update.
    #[arg(long, value_name = "LIST", default_value = "")]
    extra_fields: String,

    /// Report every entry under a moved directory as moved too (seed
    /// condense_moves=false); by default a moved directory is one change.
    #[arg(long)]
    no_condense_moves: bool,

    /// Leave out created and updated entries whose ctime is older than the
    /// previous snapshot (seed skip_old_ctimes).
    #[arg(long)]
    skip_old_ctimes: bool,

    /// Diff and write the changes, but delete the new snapshot and leave
    /// the last-snap file as it was.
    #[arg(long, conflicts_with = "hold")]
    dry_run: bool,

    /// Keep the lock and the new snapshot after writing the changes; a
    /// later `ferry rotate` commits or rolls back (as the seed's separate
    /// rotate_snapshot task does).
    #[arg(long)]
    hold: bool,

    /// Memory budget (K, M, G suffixes; at least 16M): sorting manifests
    /// and changes spills to disk in the state directory beyond it, less
    /// 8 MiB kept for the rest of the process. Directory tables (about 50
    /// bytes per directory) come on top.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_bytes)]
    mem_limit: usize,

    /// Walker threads (metadata calls in flight).
    #[arg(short = 'j', long, value_name = "N")]
    threads: Option<usize>,
}

/// Finish a run held with `ferry snapdiff --hold`: rotate (the new
/// snapshot becomes the last synced one) or roll back (it is deleted, and
/// the next run diffs from the old one again).
///
/// With --failed, the sync failed: the run still rotates, as the seed's
/// default "always rotate on error" does, unless --no-rotate-on-error.
#[derive(Args)]
struct RotateArgs {
    #[command(flatten)]
    fileset: FilesetArgs,

    /// The sync of the held changes failed.
    #[arg(long)]
    failed: bool,

    /// With --failed, roll back instead of rotating (runtime field
    /// snappdiff_rotate_on_error=False).
    #[arg(long)]
    no_rotate_on_error: bool,
}

/// Inspect a manifest file: print its header and counts, every record as
/// a JSON line, or just check it.
#[derive(Args)]
struct ManifestArgs {
    /// The manifest file (in the state directory:
    /// <prefix>.manifest.name.<fileset>.id.<id>.<snapshot>).
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Print every record as a JSON line with its rebuilt path.
    #[arg(long, conflicts_with = "verify")]
    records: bool,

    /// Only check it (checksums, order, counts); exit 1 if it is damaged.
    #[arg(long)]
    verify: bool,
}

fn parse_bytes(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes < 2 * MEM_RESERVE {
        return Err("at least 16M".into());
    }
    Ok(bytes)
}

/// Memory a snapdiff needs besides its sorts: code, I/O and search buffers.
const MEM_RESERVE: usize = 8 << 20;

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let bytes = n * mult;
    if bytes < MIN_GETDENTS_BUFFER {
        return Err(format!("at least {MIN_GETDENTS_BUFFER} bytes (64K)"));
    }
    Ok(bytes)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Scan(args) => run_scan(args),
        Command::Snapdiff(args) => run_snapdiff(args),
        Command::Rotate(args) => run_rotate(args),
        Command::Manifest(args) => run_manifest(args),
        Command::Migrate(c) => cli::ops::run_migrate(c),
        Command::Premigrate(c) => cli::ops::run_premigrate(c),
        Command::Recall(c) => cli::ops::run_recall(c),
        Command::ReverseStub(c) => cli::ops::run_reverse_stub(c),
        Command::Move(c) => cli::ops::run_move(c),
        Command::Delete(c) => cli::ops::run_delete(c),
        Command::Unmanage(c) => cli::ops::run_unmanage(c),
        Command::Stat(c) => cli::ops::run_stat(c),
        Command::Agent(c) => cli::agent::run_agent(c),
        Command::GenTree { shape, files, dir } => match generate(&dir, shape, files) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry: cannot generate {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn run_scan(a: ScanArgs) -> ExitCode {
    match scan_request(&a).and_then(|req| {
        let stdout = io::stdout().lock();
        let report = scan(&req, BufWriter::with_capacity(256 * 1024, stdout), &mut io::stderr())
            .map_err(|e| format!("scan failed: {e}"))?;
        if a.output.summary {
            write_status(&mut io::stdout().lock(), &req.roots, &report).map_err(|e| format!("output error: {e}"))?;
        }
        Ok(report)
    }) {
        Ok(report) if report.summary.failures == 0 || report.output_closed => ExitCode::SUCCESS,
        Ok(report) => {
            let _ = io::stdout().flush();
            eprintln!("ferry: {} path(s) could not be read", report.summary.failures);
            ExitCode::from(1)
        }
        Err(msg) => {
            eprintln!("ferry: {msg}");
            ExitCode::from(2)
        }
    }
}

fn scan_request(a: &ScanArgs) -> Result<ScanRequest, String> {
    let filter = Filter::new(&a.include, &a.exclude).map_err(|e| e.to_string())?;
    let o = &a.output;
    let fields = if o.null {
        Fields::PATH
    } else {
        Fields::parse(&a.fields)?
    };
    let format = o.format(fields);
    let batch_needs_size = o.batch && !o.stream_batches && o.file_batch_gb > 0.0;
    let mut walk = WalkOptions {
        one_file_system: a.one_file_system,
        follow_links: a.follow,
        max_depth: a.max_depth,
        filter,
        skip_snapshots: if a.include_snapshots {
            SnapshotDirs::Never
        } else {
            SnapshotDirs::Everywhere
        },
        stat: o.summary || batch_needs_size || (format.is_some() && fields.needs_stat()),
        // Counts and byte-limited batches need sizes; the output needs its fields.
        stat_mask: Fields::SIZE.with(fields).stat_mask(),
        generation: !o.summary && fields.contains(Fields::GENERATION),
        getdents_buffer: a.getdents_buffer,
        ..WalkOptions::default()
    };
    if let Some(t) = a.threads {
        if t == 0 {
            return Err("--threads must be at least 1".into());
        }
        walk.threads = t;
    }
    let progress = if a.no_progress {
        Some(false)
    } else {
        a.progress.then_some(true)
    };
    let roots = a.paths.iter().map(|p| p.clone().into_vec()).collect();
    Ok(ScanRequest {
        roots,
        walk,
        format,
        progress,
    })
}

/// Exit status for a snapdiff refused because another run holds the lock.
const EXIT_LOCKED: u8 = 3;

fn snapdiff_exit(e: &SnapdiffError) -> ExitCode {
    eprintln!("ferry: {e}");
    match e {
        SnapdiffError::Lock(AcquireError::Held(_)) => ExitCode::from(EXIT_LOCKED),
        _ => ExitCode::from(2),
    }
}

fn run_snapdiff(a: SnapdiffArgs) -> ExitCode {
    let setup = || -> Result<_, String> {
        let provider = a.fileset.open()?;
        let fields = if a.output.null {
            Fields::PATH
        } else {
            Fields::parse(&a.fields)?
        };
        let extra = ExtraFields::parse(&a.extra_fields)?;
        let mut opts = a.fileset.options();
        opts.diff.condense_moves = !a.no_condense_moves;
        opts.diff.skip_old_ctimes = a.skip_old_ctimes;
        // The manifest sort and the diff run one after the other; each gets
        // the budget less what the process needs besides (code, I/O buffers).
        let sort = a.mem_limit - MEM_RESERVE;
        opts.diff.mem_limit = sort;
        opts.mem_limit = sort;
        opts.dry_run = a.dry_run;
        opts.hold = a.hold;
        if let Some(t) = a.threads {
            opts.threads = t.max(1);
        }
        Ok((provider, fields, extra, opts))
    };
    let (provider, fields, extra, opts) = match setup() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("ferry: {msg}");
            return ExitCode::from(2);
        }
    };
    let root = provider.fileset().path.clone();
    let stdout = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut writer = match a.output.format(fields) {
        Some(f) => match ChangeWriter::new(stdout, f, &root, extra) {
            Ok(w) => Some(w),
            Err(msg) => {
                eprintln!("ferry: {msg}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut log = |m: &str| eprintln!("ferry: {m}");
    match snapdiff(provider.as_ref(), &opts, &mut writer, &mut log) {
        Ok(report) => {
            for w in &report.warnings {
                eprintln!("ferry: warning: {w}");
            }
            if a.output.summary
                && let Err(e) = write_report(&mut io::stdout().lock(), &root, &report)
            {
                eprintln!("ferry: output error: {e}");
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(e) => snapdiff_exit(&e),
    }
}

fn run_rotate(a: RotateArgs) -> ExitCode {
    let provider = match a.fileset.open() {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("ferry: {msg}");
            return ExitCode::from(2);
        }
    };
    let opts = a.fileset.options();
    let mut log = |m: &str| eprintln!("ferry: {m}");
    match rotate(provider.as_ref(), &opts, !a.failed, !a.no_rotate_on_error, &mut log) {
        Ok(report) => {
            for w in &report.warnings {
                eprintln!("ferry: warning: {w}");
            }
            match write_report(&mut io::stdout().lock(), &provider.fileset().path, &report) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferry: output error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => snapdiff_exit(&e),
    }
}

fn run_manifest(a: ManifestArgs) -> ExitCode {
    let out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mode = if a.verify {
        DumpMode::Verify
    } else if a.records {
        DumpMode::Records
    } else {
        DumpMode::Summary
    };
    match File::open(&a.file)
        .map_err(ManifestError::from)
        .and_then(|f| dump(f, out, mode))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(ManifestError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {}: {e}", a.file.display());
            ExitCode::from(1)
        }
    }
}
