//! The `ferry` command line: parses arguments and calls the library.

use clap::{Args, Parser, Subcommand};
use ferry::batch::BatchLimits;
use ferry::entry::Fields;
use ferry::output::Format;
use ferry::rules::Filter;
use ferry::scan::{ScanRequest, scan, write_status};
use ferry::testtree::{Shape, generate};
use ferry::walk::{MIN_GETDENTS_BUFFER, WalkOptions};
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;

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

    /// Print only a status object with counts (dirs, files, symlinks,
    /// other, empty_dirs, failures, bytes), not the entries.
    #[arg(long)]
    summary: bool,

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
        if a.summary {
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
    let fields = if a.null {
        Fields::PATH
    } else {
        Fields::parse(&a.fields)?
    };
    let format = if a.summary {
        None
    } else if a.null {
        Some(Format::Nul)
    } else if a.batch {
        let limits = if a.stream_batches {
            BatchLimits::STREAMING
        } else {
            BatchLimits::from_seed(a.file_batch_size, a.file_batch_gb, a.auto_batch_size)
        };
        Some(Format::Batches(fields, limits))
    } else {
        Some(Format::JsonLines(fields))
    };
    let batch_needs_size = a.batch && !a.stream_batches && a.file_batch_gb > 0.0;
    let mut walk = WalkOptions {
        one_file_system: a.one_file_system,
        follow_links: a.follow,
        max_depth: a.max_depth,
        filter,
        skip_snapshots: !a.include_snapshots,
        stat: a.summary || batch_needs_size || (format.is_some() && fields.needs_stat()),
        // Counts and byte-limited batches need sizes; the output needs its fields.
        stat_mask: Fields::SIZE.with(fields).stat_mask(),
        generation: !a.summary && fields.contains(Fields::GENERATION),
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
