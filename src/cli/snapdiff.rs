//! `ferry snapdiff`, `ferry rotate`, `ferry manifest` and `ferry journal`: flags into a
//! [`SnapdiffRequest`] or [`RotateRequest`], the same types the agent reads
//! from a task's arguments.

use super::args::{ByteSize, Concurrency, ConfigArg, GpfsArgs, OutputArgs, byte_size_at_least};
use super::exit::Failure;
use clap::Args;
use ferry::config::gpfs::parse_nodes;
use ferry::config::{BadValue, GpfsSettings, defaults, parse_xattr_prefix};
use ferry::entry::Fields;
use ferry::snapdiff::inspect::{DumpMode, dump_path};
use ferry::snapdiff::journal;
use ferry::snapdiff::manifest::ManifestError;
use ferry::snapdiff::memory::MIN_MEMORY;
use ferry::snapdiff::output::{ChangeWriter, DEFAULT_FIELDS, ExtraFields, write_report};
use ferry::snapdiff::provider::none::NoSnapshots;
use ferry::snapdiff::provider::{Kind, Provider};
use ferry::snapdiff::request::{FilesetRequest, RotateRequest, SnapdiffRequest};
use ferry::snapdiff::run::{SnapdiffError, SnapdiffOptions, rotate, snapdiff};
use ferry::snapdiff::set::{CompactError, compact_file};
use ferry::snapdiff::state::AcquireError;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::time::Duration;

/// The fileset and where its run state lives (snapdiff and rotate).
#[derive(Args)]
pub struct FilesetArgs {
    /// The fileset: a GPFS independent fileset's junction, a btrfs
    /// subvolume, or any directory (with --provider none).
    #[arg(value_name = "FILESET")]
    fileset: PathBuf,

    /// How snapshots are taken: btrfs (read-only subvolume snapshots),
    /// gpfs (mmcrsnapshot and mmapplypolicy), none (no snapshots: the
    /// previous run's manifest of the live tree is the baseline), or auto
    /// (btrfs for a btrfs subvolume, otherwise none).
    #[arg(long, default_value = "auto", value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(Kind::NAMES), |s| s.parse::<Kind>().expect("a possible value")))]
    provider: Kind,

    /// Directory for the last-snap, manifest and lock files
    /// [default: <filesystem root>/.rotate].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Prefix of snapshot and state file names (snapshots are called
    /// <prefix>.snapdiff.<UTC time>).
    #[arg(long, default_value = defaults::STATE_PREFIX, value_name = "NAME")]
    prefix: String,

    /// Seconds after which another run's lock counts as stale and is taken
    /// over (site setting lock_threshold).
    #[arg(long, default_value_t = defaults::LOCK_THRESHOLD.as_secs(), value_name = "SECONDS")]
    lock_threshold: u64,

    /// Seconds to keep retrying a snapshot create or delete that fails
    /// for a transient reason (snapshot_create_delete_retry_timeout; 0:
    /// no retries).
    #[arg(long, default_value_t = defaults::SNAPSHOT_RETRY_TIMEOUT.as_secs(), value_name = "SECONDS")]
    snapshot_retry_timeout: u64,

    #[command(flatten)]
    config: ConfigArg,

    #[command(flatten)]
    gpfs: GpfsArgs,

    /// Nodes to run the GPFS policy scan on (mmapplypolicy -N), comma-separated
    /// [default: gpfs_nodes in the configuration].
    #[arg(long, value_name = "NODES", value_parser = node_list)]
    gpfs_nodes: Option<NodeList>,

    /// Inode scan threads for the policy scan (mmapplypolicy -a)
    /// [default: gpfs_iscan_threads in the configuration].
    #[arg(long, value_name = "N")]
    gpfs_iscan_threads: Option<u32>,

    /// Inode scan buckets for the policy scan (mmapplypolicy -A)
    /// [default: gpfs_iscan_buckets in the configuration].
    #[arg(long, value_name = "N")]
    gpfs_iscan_buckets: Option<u32>,

    /// Read snapshots by walking them (<fileset>/.snapshots/<name>) instead
    /// of the provider's fast way: btrfs's tree search (needs root),
    /// GPFS's mmapplypolicy inode scan.
    #[arg(long, alias = "gpfs-walk")]
    walk: bool,
}

impl FilesetArgs {
    fn request(&self) -> FilesetRequest {
        FilesetRequest {
            provider: self.provider,
            state_dir: self.state_dir.clone(),
            prefix: self.prefix.clone(),
            walk: self.walk,
        }
    }

    /// The configuration's GPFS settings with the flags applied. Only the
    /// GPFS provider reads the configuration file: a btrfs or plain
    /// directory run does not depend on it.
    fn gpfs(&self) -> Result<GpfsSettings, Failure> {
        let mut g = if self.provider == Kind::Gpfs {
            self.config.load().map_err(Failure::setup)?.gpfs
        } else {
            GpfsSettings::default()
        };
        self.gpfs.apply(&mut g);
        if let Some(NodeList(n)) = &self.gpfs_nodes {
            g.nodes = n.clone();
        }
        if let Some(t) = self.gpfs_iscan_threads {
            g.iscan_threads = Some(t);
        }
        if let Some(b) = self.gpfs_iscan_buckets {
            g.iscan_buckets = Some(b);
        }
        Ok(g)
    }

    /// Opens the fileset.
    fn open(&self) -> Result<Box<dyn Provider>, Failure> {
        Ok(self.request().open(&self.fileset, &self.gpfs()?)?)
    }

    fn lock_threshold(&self) -> Duration {
        Duration::from_secs(self.lock_threshold)
    }

    /// `o` with the flags the request types do not carry.
    fn tune(&self, mut o: SnapdiffOptions) -> SnapdiffOptions {
        o.retry_timeout = Duration::from_secs(self.snapshot_retry_timeout);
        o
    }
}

/// A `--gpfs-nodes` value: one list (clap would otherwise take the
/// parser's `Vec` for many values of the flag).
#[derive(Clone, Debug)]
struct NodeList(Vec<String>);

fn node_list(s: &str) -> Result<NodeList, BadValue> {
    parse_nodes(s).map(NodeList)
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
pub struct SnapdiffCmd {
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
    #[arg(long, value_name = "LIST", default_value = "", value_parser = ExtraFields::parse)]
    extra_fields: ExtraFields,

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

    /// Read every inode of the new snapshot and diff whole manifests, even
    /// where only what changed could be read (btrfs reads only the tree
    /// leaves written since the last synced snapshot, and falls back to a
    /// full read by itself when more than 40 % of the fileset changed).
    #[arg(long)]
    full: bool,

    /// Prefix of ferry's own xattrs (the configuration's xattr_prefix): a
    /// file whose ctime alone changed, and whose other xattrs are the same
    /// in both snapshots, is unchanged (migrate stamping its location moved
    /// the ctime).
    #[arg(long, value_name = "PREFIX", default_value = defaults::XATTR_PREFIX, value_parser = parse_xattr_prefix)]
    xattr_prefix: String,

    /// Report every file whose ctime changed as updated, also when only
    /// ferry's own xattrs did.
    #[arg(long)]
    every_ctime: bool,

    /// Share of the fileset (0 to 1) that may have changed before a read of
    /// changes gives up and reads the whole snapshot (1: never).
    #[arg(long, value_name = "FRACTION", default_value_t = ferry::snapdiff::run::CHANGES_LIMIT)]
    changes_limit: f64,

    /// Keep the lock and the new snapshot after writing the changes; a
    /// later `ferry rotate` commits or rolls back (as the seed's separate
    /// rotate_snapshot task does).
    #[arg(long)]
    hold: bool,

    /// Memory budget of the whole run (K, M, G suffixes; at least 36M):
    /// its peak resident set stays within it. 18 MiB are kept for the
    /// program, 3 MiB per thread (-j), 4 MiB for merging spilled runs and
    /// 200 bytes per directory of the last run for the directory tables;
    /// sorting manifests and changes spills to disk in the state
    /// directory beyond the rest, and a read of changes gives way to a
    /// full read when the changes would not fit. A budget that cannot hold
    /// the threads and the directory tables is refused before any
    /// snapshot is taken, saying how much would do.
    #[arg(long, value_name = "BYTES", default_value_t = ByteSize(defaults::SNAPDIFF_MEMORY), value_parser = mem_limit)]
    mem_limit: ByteSize,

    #[command(flatten)]
    concurrency: Concurrency,
}

fn mem_limit(s: &str) -> Result<ByteSize, BadValue> {
    byte_size_at_least(s, MIN_MEMORY)
}

/// Finish a run held with `ferry snapdiff --hold`: rotate (the new
/// snapshot becomes the last synced one) or roll back (it is deleted, and
/// the next run diffs from the old one again).
///
/// With --failed, the sync failed: the run still rotates, as the seed's
/// default "always rotate on error" does, unless --no-rotate-on-error.
#[derive(Args)]
pub struct RotateCmd {
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

/// Inspect a manifest: print its header and counts, every record as a JSON
/// line, or just check it; or compact a chain of deltas into a new base.
#[derive(Args)]
pub struct ManifestCmd {
    /// A manifest file or manifest set in the state directory
    /// (<prefix>.manifest.name.<fileset>.id.<id>.<snapshot>, or
    /// <prefix>.manifest-set.… for a base with deltas, read as one, or
    /// <prefix>.delta.… for one run's delta on its own).
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Print every record as a JSON line with its rebuilt path.
    #[arg(long, conflicts_with_all = ["verify", "compact"])]
    records: bool,

    /// Only check it (checksums, order, counts; every file of a set); exit
    /// 1 if it is damaged.
    #[arg(long, conflicts_with = "compact")]
    verify: bool,

    /// Merge the set's base and deltas into a new base now (runs do it
    /// when the deltas outgrow a quarter of the base); takes the fileset's
    /// lock. Prints what it did as JSON.
    #[arg(long)]
    compact: bool,
}

/// Keep an event journal of a fileset, so that its snapdiff runs look
/// only where files changed.
///
/// Watches the whole filesystem holding FILESET with fanotify (create,
/// delete, move, attribute, modify and close-write events; never open or
/// access) and appends the events to
/// <state dir>/journal.name.<fileset>.id.<id>, synced every second. While
/// it runs, `ferry snapdiff --provider none` of the fileset (with the same
/// --state-dir) reads only the entries the events since the last run
/// name, instead of walking the whole tree; of a btrfs subvolume,
/// `--provider btrfs` reads from its snapshot only the inodes they name,
/// instead of every tree leaf written since. Any gap makes the next run
/// read the whole tree or snapshot and say why: the kernel's queue
/// overflowed, the journal was not running (stopped, crashed, rebooted),
/// the filesystem was remounted.
///
/// Needs root (CAP_SYS_ADMIN), Linux 5.17 or later, and a filesystem
/// whose file handles carry inode numbers (btrfs, ext4, xfs). Changes made
/// on other nodes of a network or cluster filesystem (NFS, GPFS) are not
/// seen: do not use it there. Stops on SIGTERM or SIGINT.
#[derive(Args)]
pub struct JournalCmd {
    /// The fileset (any directory).
    #[arg(value_name = "FILESET")]
    fileset: PathBuf,

    /// The runs' state directory, where the journal is kept; it must be on
    /// the fileset's filesystem [default: <filesystem root>/.rotate].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `ferry journal`: runs until SIGTERM or SIGINT.
pub fn run_journal(a: JournalCmd) -> Result<(), Failure> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tree = NoSnapshots::open(&a.fileset, a.state_dir.as_deref())
        .map_err(|e| Failure::setup(format!("{}: {e}", a.fileset.display())))?;
    let files = tree.journal_files().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                if let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
                {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
            });
        }
        flag.store(true, Ordering::Relaxed);
    });
    let mut log = |m: &str| eprintln!("ferry: {m}");
    let stats = journal::writer::run(&a.fileset, &files, &stop, &mut log).map_err(Failure::setup)?;
    eprintln!(
        "ferry: journal stopped: {} events, {} barriers, {} overflows",
        stats.events, stats.barriers, stats.overflows
    );
    Ok(())
}

impl From<SnapdiffError> for Failure {
    /// A run refused because another holds the lock is status 3; every
    /// other failure of a run is bad setup (the run rolled back).
    fn from(e: SnapdiffError) -> Failure {
        match e {
            SnapdiffError::Lock(AcquireError::Held(_)) => Failure::locked(e),
            e => Failure::setup(e),
        }
    }
}

/// `ferry snapdiff`.
pub fn run_snapdiff(a: SnapdiffCmd) -> Result<(), Failure> {
    let provider = a.fileset.open()?;
    let fields = if a.output.null {
        Fields::PATH
    } else {
        Fields::parse(&a.fields).map_err(Failure::setup)?
    };
    let request = SnapdiffRequest {
        fileset: a.fileset.request(),
        condense_moves: !a.no_condense_moves,
        skip_old_ctimes: a.skip_old_ctimes,
        extra_fields: a.extra_fields,
        hold: a.hold,
        full: a.full,
        ..SnapdiffRequest::default()
    };
    let threads = a.concurrency.threads.unwrap_or_else(defaults::walk_threads);
    let mut opts = a.fileset.tune(request.options(a.fileset.lock_threshold(), threads));
    opts.memory = a.mem_limit.0;
    opts.dry_run = a.dry_run;
    if !(0.0..=1.0).contains(&a.changes_limit) {
        return Err(Failure::setup(format!(
            "--changes-limit {} is not between 0 and 1",
            a.changes_limit
        )));
    }
    opts.changes_limit = a.changes_limit;
    opts.own_xattrs = (!a.every_ctime).then(|| a.xattr_prefix.clone());
    let root = provider.fileset().path.clone();
    let stdout = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut writer = match a.output.format(fields) {
        Some(f) => Some(ChangeWriter::new(stdout, f, &root, request.extra_fields).map_err(Failure::setup)?),
        None => None,
    };
    let mut log = |m: &str| eprintln!("ferry: {m}");
    let report = snapdiff(provider.as_ref(), &opts, &mut writer, &mut log)?;
    for w in &report.warnings {
        eprintln!("ferry: warning: {w}");
    }
    if a.output.summary {
        write_report(&mut io::stdout().lock(), &root, &report)
            .map_err(|e| Failure::setup(format!("output error: {e}")))?;
    }
    Ok(())
}

/// `ferry rotate`.
pub fn run_rotate(a: RotateCmd) -> Result<(), Failure> {
    let provider = a.fileset.open()?;
    let request = RotateRequest {
        fileset: a.fileset.request(),
        failed: a.failed,
        snappdiff_rotate_on_error: !a.no_rotate_on_error,
    };
    let opts = a.fileset.tune(
        request
            .fileset
            .options(a.fileset.lock_threshold(), defaults::walk_threads()),
    );
    let mut log = |m: &str| eprintln!("ferry: {m}");
    let report = rotate(
        provider.as_ref(),
        &opts,
        !request.failed,
        request.snappdiff_rotate_on_error,
        &mut log,
    )?;
    for w in &report.warnings {
        eprintln!("ferry: warning: {w}");
    }
    write_report(&mut io::stdout().lock(), &provider.fileset().path, &report)
        .map_err(|e| Failure::setup(format!("output error: {e}")))
}

/// `ferry manifest`: a manifest that cannot be read or is damaged is the
/// one path of this command failing (status 1).
pub fn run_manifest(a: ManifestCmd) -> Result<(), Failure> {
    if a.compact {
        let done = compact_file(&a.file, defaults::LOCK_THRESHOLD).map_err(|e| match e {
            CompactError::Lock(AcquireError::Held(_)) => Failure::locked(e),
            e => Failure::paths(format!("{}: {e}", a.file.display())),
        })?;
        let v = match done {
            Some(c) => {
                serde_json::json!({"compacted": true, "files": c.files, "entries": c.entries, "seconds": c.seconds})
            }
            None => serde_json::json!({"compacted": false}),
        };
        println!("{v}");
        return Ok(());
    }
    let out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mode = if a.verify {
        DumpMode::Verify
    } else if a.records {
        DumpMode::Records
    } else {
        DumpMode::Summary
    };
    match dump_path(&a.file, out, mode) {
        Ok(()) => Ok(()),
        Err(ManifestError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::paths(format!("{}: {e}", a.file.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn fileset(args: &[&str]) -> FilesetArgs {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Snapdiff(c) => c.fileset,
            _ => panic!("not a snapdiff"),
        }
    }

    #[test]
    fn gpfs_flags_override_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("ferry.conf");
        std::fs::write(
            &conf,
            "[settings]\ngpfs_bin_dir = /opt/mm\ngpfs_nodes = [\"c1\"]\ngpfs_iscan_threads = 3\n",
        )
        .unwrap();
        let conf = conf.to_str().unwrap();
        let f = fileset(&["ferry", "snapdiff", "--provider", "gpfs", "--config", conf, "/fs"]);
        let g = f.gpfs().unwrap();
        assert_eq!(
            (g.bin_dir.to_str().unwrap(), &g.nodes[..], g.iscan_threads),
            ("/opt/mm", &["c1".to_string()][..], Some(3))
        );
        let f = fileset(&[
            "ferry",
            "snapdiff",
            "--provider",
            "gpfs",
            "--config",
            conf,
            "--gpfs-nodes",
            "a,b",
            "--gpfs-iscan-buckets",
            "4",
            "--gpfs-bin",
            "/bin2",
            "/fs",
        ]);
        let g = f.gpfs().unwrap();
        assert_eq!(g.nodes, ["a", "b"]);
        assert_eq!((g.iscan_buckets, g.iscan_threads), (Some(4), Some(3)));
        assert_eq!(g.bin_dir.to_str(), Some("/bin2"));
        // Other providers never read the file: a broken one does not matter.
        let f = fileset(&[
            "ferry",
            "snapdiff",
            "--provider",
            "none",
            "--config",
            "/nonexistent/ferry.conf",
            "/fs",
        ]);
        assert_eq!(f.gpfs().unwrap(), GpfsSettings::default());
    }
}
