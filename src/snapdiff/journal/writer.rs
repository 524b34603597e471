//! The journal writer: reads the fanotify queue of a fileset's filesystem
//! and appends its events to the journal, synced at least every
//! [`SYNC_EVERY`] and at once after a barrier.

use super::{BARRIER_PREFIX, JournalError, JournalFiles, Line, MAGIC, ROTATE_BYTES};
use crate::sys::fanotify::{self, Fanotify, mask};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Events are synced to disk at least this often.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The read buffer (the kernel hands over as many whole events as fit).
const READ_BUFFER: usize = 256 << 10;

/// What the writer has done, for its log and its tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Events journaled.
    pub events: u64,
    /// Barriers journaled.
    pub barriers: u64,
    /// Queue overflows journaled.
    pub overflows: u64,
}

/// Journals the changes on the filesystem of the fileset at `fileset`
/// into `files` until `stop` is set. Takes the journal's lock first (one
/// writer per journal); writes a session record, so that runs whose
/// baseline came before it walk the whole tree.
pub fn run(
    fileset: &Path,
    files: &JournalFiles,
    stop: &AtomicBool,
    log: &mut dyn FnMut(&str),
) -> Result<WriterStats, JournalError> {
    let watch = |source| JournalError::Watch {
        path: fileset.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&files.dir).map_err(|e| JournalError::io(&files.dir, e))?;
    let lock = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.lock)
        .map_err(|e| JournalError::io(&files.lock, e))?;
    match crate::sys::try_lock_exclusive(&lock) {
        Ok(true) => {}
        Ok(false) => {
            return Err(JournalError::Busy {
                path: files.current.clone(),
            });
        }
        Err(e) => return Err(JournalError::io(&files.lock, e)),
    }
    let root = File::open(fileset).map_err(watch)?;
    let root_fid = fanotify::handle_of(root.as_fd()).map_err(watch)?;
    if root_fid.ino().is_none() {
        return Err(JournalError::Handles {
            path: fileset.to_path_buf(),
            handle_type: root_fid.handle_type,
        });
    }
    let state = File::open(&files.dir).map_err(|e| JournalError::io(&files.dir, e))?;
    let state_fid = fanotify::handle_of(state.as_fd()).map_err(|e| JournalError::io(&files.dir, e))?;
    let group = Fanotify::new().map_err(watch)?;
    let c = CString::new(fileset.as_os_str().as_bytes()).map_err(|e| watch(io::Error::other(e)))?;
    match group.mark_filesystem(&c, mask::JOURNAL) {
        // A btrfs subvolume reports its own fsid, and the kernel marks a
        // filesystem only through a path with the filesystem's own: mark
        // it at its mount point (events still carry the subvolume's fsid).
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let top = std::fs::canonicalize(fileset)
                .and_then(|p| crate::snapdiff::provider::mount_point(&p))
                .map_err(watch)?;
            let c = CString::new(top.as_os_str().as_bytes()).map_err(|e| watch(io::Error::other(e)))?;
            group.mark_filesystem(&c, mask::JOURNAL).map_err(watch)?;
        }
        other => other.map_err(watch)?,
    }

    let mut out = Output::open(files)?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_or_else(|_| "-".into(), |s| s.trim().to_string());
    out.push(|seq| Line::Session {
        seq,
        boot: boot.clone(),
        pid: std::process::id(),
    })?;
    out.sync()?;
    log(&format!(
        "journaling changes of {} into {} from sequence {}",
        fileset.display(),
        files.current.display(),
        out.seq
    ));
    let mut stats = WriterStats::default();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut synced = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let n = group.read(&mut buf, Duration::from_millis(100)).map_err(watch)?;
        let events = match fanotify::parse_events(&buf[..n]) {
            Ok(events) => events,
            // Events that cannot be read are events lost: a gap.
            Err(e) => {
                log(&format!("{e}: the next run walks the whole tree"));
                out.push(|seq| Line::Overflow { seq })?;
                stats.overflows += 1;
                Vec::new()
            }
        };
        let mut barrier = false;
        for ev in events {
            if ev.mask & mask::Q_OVERFLOW != 0 {
                out.push(|seq| Line::Overflow { seq })?;
                stats.overflows += 1;
                log("the kernel's event queue overflowed: the next run walks the whole tree");
                continue;
            }
            let Some((dir, name)) = ev.dir else {
                // An event on an inode alone (a file a rename replaced
                // loses a link).
                if let Some(t) = ev.target.filter(|t| t.btrfs_root() == root_fid.btrfs_root()) {
                    out.push(|seq| Line::Event {
                        seq,
                        mask: ev.mask,
                        dir: None,
                        target: Some(t),
                    })?;
                    stats.events += 1;
                }
                continue;
            };
            if dir.same_object(&state_fid) {
                // The state directory: only barriers (the journal's own
                // writes would feed back into it).
                if ev.mask & mask::CREATE != 0
                    && let Some(token) = name.strip_prefix(BARRIER_PREFIX.as_bytes())
                {
                    out.push(|seq| Line::Barrier {
                        seq,
                        token: String::from_utf8_lossy(token).into_owned(),
                    })?;
                    stats.barriers += 1;
                    barrier = true;
                }
                continue;
            }
            // The mark is on one filesystem, but on btrfs inode numbers
            // repeat in each subvolume: keep the fileset's.
            if dir.btrfs_root() != root_fid.btrfs_root() {
                continue;
            }
            out.push(|seq| Line::Event {
                seq,
                mask: ev.mask,
                dir: Some((dir, name)),
                target: ev.target,
            })?;
            stats.events += 1;
        }
        if barrier || synced.elapsed() >= SYNC_EVERY {
            out.sync()?;
            synced = Instant::now();
            if out.len >= ROTATE_BYTES {
                out.rotate(files)?;
            }
        }
    }
    out.sync()?;
    Ok(stats)
}

/// The open journal file and the next sequence number.
struct Output {
    file: std::io::BufWriter<File>,
    path: std::path::PathBuf,
    seq: u64,
    len: u64,
}

impl Output {
    /// Opens the journal for appending; the sequence goes on from its
    /// last record (or the previous file's).
    fn open(files: &JournalFiles) -> Result<Output, JournalError> {
        let (_, before) = tail(&files.previous)?;
        // A writer killed mid-line left part of a line: it is cut off.
        let (mut len, last) = tail(&files.current)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&files.current)
            .map_err(|e| JournalError::io(&files.current, e))?;
        let io_err = |e| JournalError::io(&files.current, e);
        file.set_len(len).map_err(io_err)?;
        if len == 0 {
            file.write_all(format!("{MAGIC}\n").as_bytes()).map_err(io_err)?;
            len = MAGIC.len() as u64 + 1;
        }
        Ok(Output {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            path: files.current.clone(),
            seq: last.max(before),
            len,
        })
    }

    fn push(&mut self, line: impl FnOnce(u64) -> Line) -> Result<(), JournalError> {
        self.seq += 1;
        let text = line(self.seq).encode();
        self.len += text.len() as u64;
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| JournalError::io(&self.path, e))
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        self.file.flush().map_err(|e| JournalError::io(&self.path, e))?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| JournalError::io(&self.path, e))
    }

    /// Moves the current file aside (replacing the one before) and starts
    /// a new one; the sequence goes on.
    fn rotate(&mut self, files: &JournalFiles) -> Result<(), JournalError> {
        self.sync()?;
        std::fs::rename(&files.current, &files.previous).map_err(|e| JournalError::io(&files.current, e))?;
        let seq = self.seq;
        *self = Output::open(files)?;
        self.seq = seq;
        Ok(())
    }
}

/// The end of the last whole line of `path` and that line's sequence
/// number (both 0 if it does not exist or holds none). Only the last
/// 64 KiB is read: a line is well under 1 KiB.
fn tail(path: &Path) -> Result<(u64, u64), JournalError> {
    let io_err = |e| JournalError::io(path, e);
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_err(e)),
    };
    let len = file.metadata().map_err(io_err)?.len();
    let from = len.saturating_sub(64 << 10);
    file.seek(SeekFrom::Start(from)).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err)?;
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Ok((from, 0));
    };
    let last = bytes[..end]
        .rsplit(|&b| b == b'\n')
        .find_map(|l| Line::parse(l).ok())
        .map_or(0, |l| l.seq());
    Ok((from + end as u64 + 1, last))
}
