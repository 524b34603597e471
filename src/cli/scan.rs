//! `ferry scan` (and the hidden `ferry gen-tree` that makes benchmark
//! trees): flags into a [`ScanRequest`].

use super::args::{ByteSize, Concurrency, OutputArgs, ProgressArgs, byte_size_at_least};
use super::exit::Failure;
use clap::Args;
use ferry::config::{BadValue, defaults};
use ferry::entry::Fields;
use ferry::rules::Filter;
use ferry::scan::{ScanRequest, scan, write_status};
use ferry::testtree::{Shape, generate};
use ferry::walk::{MIN_GETDENTS_BUFFER, SnapshotDirs, WalkOptions};
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

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
pub struct ScanCmd {
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

    #[command(flatten)]
    concurrency: Concurrency,

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

    /// getdents64 buffer per thread, in bytes (K, M and G suffixes allowed;
    /// at least 64K).
    #[arg(long, value_name = "BYTES", default_value_t = ByteSize(defaults::GETDENTS_BUFFER), value_parser = getdents_buffer)]
    getdents_buffer: ByteSize,

    #[command(flatten)]
    progress: ProgressArgs,
}

fn getdents_buffer(s: &str) -> Result<ByteSize, BadValue> {
    byte_size_at_least(s, MIN_GETDENTS_BUFFER)
}

/// Generate a test tree for benchmarks (wide, deep, flat or mixed).
#[derive(Args)]
pub struct GenTreeCmd {
    /// wide (files over 10,000 dirs), deep (50 levels), flat (one dir) or mixed.
    #[arg(long)]
    shape: Shape,
    /// How many files to create.
    #[arg(long, default_value_t = 100_000)]
    files: usize,
    /// Directory to create (must not exist).
    dir: PathBuf,
}

/// `ferry scan`.
pub fn run(a: ScanCmd) -> Result<(), Failure> {
    let req = request(&a)?;
    let stdout = io::stdout().lock();
    let report = scan(&req, BufWriter::with_capacity(256 * 1024, stdout), &mut io::stderr())
        .map_err(|e| Failure::setup(format!("scan failed: {e}")))?;
    if a.output.summary {
        write_status(&mut io::stdout().lock(), &req.roots, &report)
            .map_err(|e| Failure::setup(format!("output error: {e}")))?;
    }
    if report.summary.failures == 0 || report.output_closed {
        return Ok(());
    }
    let _ = io::stdout().flush();
    Err(Failure::paths(format!(
        "{} path(s) could not be read",
        report.summary.failures
    )))
}

/// The scan the flags ask for.
fn request(a: &ScanCmd) -> Result<ScanRequest, Failure> {
    let filter = Filter::new(&a.include, &a.exclude).map_err(Failure::setup)?;
    let o = &a.output;
    let fields = if o.null {
        Fields::PATH
    } else {
        Fields::parse(&a.fields).map_err(Failure::setup)?
    };
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
        getdents_buffer: a.getdents_buffer.0,
        ..WalkOptions::default()
    };
    if let Some(t) = a.concurrency.threads {
        walk.threads = t;
    }
    let roots = a.paths.iter().map(|p| p.clone().into_vec()).collect();
    Ok(ScanRequest::new(
        roots,
        walk,
        fields,
        o.format(fields),
        a.progress.choice(),
    ))
}

/// `ferry gen-tree`.
pub fn run_gen_tree(c: GenTreeCmd) -> Result<(), Failure> {
    generate(&c.dir, c.shape, c.files).map_err(|e| Failure::setup(format!("cannot generate {}: {e}", c.dir.display())))
}
