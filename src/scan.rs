//! `ferry scan`: walk the given roots and write what is found.

use crate::entry::Fields;
use crate::output::{EntryWriter, Format};
use crate::progress::Progress;
use crate::task::Summary;
use crate::task::status::{Status, now_iso8601};
use crate::walk::{Walk, WalkEvent, WalkOptions};
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// One scan, as the command line describes it.
#[derive(Clone, Debug)]
pub struct ScanRequest {
    /// Root paths as raw bytes.
    pub roots: Vec<Vec<u8>>,
    /// How to walk.
    pub walk: WalkOptions,
    /// How to write entries; `None` writes none (summary only).
    pub format: Option<Format>,
    /// Show a progress line: `Some(true)` always, `Some(false)` never,
    /// `None` when stderr is a terminal.
    pub progress: Option<bool>,
}

impl ScanRequest {
    /// A scan of `roots` that writes `format` (`None`: counts only) with
    /// the attributes in `fields`: `walk` is told to stat only when the
    /// output, the counts or byte-limited batches need it, for only the
    /// attributes they need (a names-only walk never stats).
    pub fn new(
        roots: Vec<Vec<u8>>,
        mut walk: WalkOptions,
        fields: Fields,
        format: Option<Format>,
        progress: Option<bool>,
    ) -> ScanRequest {
        let bytes_limited = matches!(format, Some(Format::Batches(_, l)) if l.max_data_bytes.is_some());
        let summary = format.is_none();
        // Counts and byte-limited batches need sizes; the output needs its fields.
        walk.stat = summary || bytes_limited || fields.needs_stat();
        walk.stat_mask = Fields::SIZE.with(fields).stat_mask();
        walk.generation = !summary && fields.contains(Fields::GENERATION);
        ScanRequest {
            roots,
            walk,
            format,
            progress,
        }
    }
}

/// What a finished scan found.
#[derive(Clone, Debug)]
pub struct ScanReport {
    /// The counts.
    pub summary: Summary,
    /// When the scan started (ISO 8601, UTC, microseconds).
    pub started: String,
    /// How long it ran.
    pub elapsed: Duration,
    /// The reader of the output went away (e.g. `| head`), so the scan
    /// stopped before the end.
    pub output_closed: bool,
}

/// Runs a scan, writing entries to `out` and one line per failed path to
/// `errors`. Failed paths do not stop the scan; they are counted.
pub fn scan(req: &ScanRequest, out: impl Write, errors: &mut impl Write) -> io::Result<ScanReport> {
    let started = now_iso8601();
    let t0 = Instant::now();
    let mut walk = Walk::start(req.roots.clone(), req.walk.clone())?;
    let progress = Progress::start(walk.counters().clone(), req.progress);
    let mut writer = req.format.map(|f| EntryWriter::new(out, f));
    let mut output_closed = false;
    for ev in walk.by_ref() {
        match ev {
            WalkEvent::Entries(entries) => {
                if let Some(w) = writer.as_mut()
                    && let Err(e) = entries.iter().try_for_each(|e| w.write(e))
                {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        output_closed = true;
                        break;
                    }
                    return Err(e);
                }
            }
            WalkEvent::Error(e) => progress.suspend(|| writeln!(errors, "ferry: {e}"))?,
        }
    }
    if let Some(w) = writer {
        match w.finish() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => output_closed = true,
            other => drop(other?),
        }
    }
    let summary = walk.finish()?;
    Ok(ScanReport {
        summary,
        started,
        elapsed: t0.elapsed(),
        output_closed,
    })
}

/// Writes the scan's status object in the seed's shape:
/// `{"task", "input_paths", "input_total", "summary", "started", "elapsed"}`.
pub fn write_status(out: &mut impl Write, roots: &[Vec<u8>], report: &ScanReport) -> io::Result<()> {
    let mut status = Status::new("scan");
    status
        .input_raw_paths(roots)
        .value("summary", &report.summary)
        .string("started", &report.started)
        .raw("elapsed", format!("{:.6}", report.elapsed.as_secs_f64()).as_bytes());
    let mut buf = status.finish();
    buf.push(b'\n');
    out.write_all(&buf)?;
    out.flush()
}
