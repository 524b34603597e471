//! The event journal: a durable record of what changed in a fileset
//! without snapshots (`none`), so that a run looks only where the journal
//! points instead of walking the whole tree
//! (`../shared/reference/snapdiff-change-proportional.md` §3).
//!
//! A writer ([`writer::run`], `ferry journal`, or the agent) holds a
//! filesystem-wide fanotify mark and appends every change event of the
//! fileset's filesystem to `<state dir>/journal.<key>`, one line per
//! record, each with a sequence number that only grows:
//!
//! ```text
//! ferry-journal 1
//! S <seq> <boot id> <pid>                    a writer started: a gap
//! E <seq> <mask> <dir fid|-> <name|-> <fid|->  a change event
//! B <seq> <token>                            a run's barrier
//! O <seq>                                    the kernel queue overflowed: a gap
//! ```
//!
//! (`fid` = `<fsid>.<fsid>.<handle type>.<handle>`, all hex; names hex.)
//!
//! A run synchronises with the writer through a barrier: it creates
//! `.ferry-barrier.<token>` in the state directory (on the same
//! filesystem, so the event comes through the same queue after every
//! change made before it) and waits for the writer to journal it. The
//! barrier's sequence number is the run's position, recorded in its
//! manifest as `otransid`. The next run reads the records between the
//! two barriers. Any `S` or `O` between them, or a baseline barrier the
//! journal no longer holds, is a gap: the run walks the whole tree and
//! says why. A writer that is not running (its lock is free) or that
//! does not journal the barrier in time is a gap too.

pub mod changes;
pub mod writer;

use crate::sys;
use crate::sys::fanotify::Fid;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The first line of a journal file.
pub const MAGIC: &str = "ferry-journal 1";
/// Name prefix of the barrier files runs create in the state directory.
pub const BARRIER_PREFIX: &str = ".ferry-barrier.";
/// A journal file is rotated (to `<file>.1`, replacing the one before)
/// past this size, so at most twice this is kept.
pub const ROTATE_BYTES: u64 = 64 << 20;

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A writer started (events before it may be lost).
    Session {
        /// Sequence number.
        seq: u64,
        /// `/proc/sys/kernel/random/boot_id` of the writer's boot.
        boot: String,
        /// The writer's process id.
        pid: u32,
    },
    /// A change event.
    Event {
        /// Sequence number.
        seq: u64,
        /// fanotify event bits.
        mask: u64,
        /// The directory holding the entry and the entry's name (`.`: the
        /// directory itself); none for events on an inode alone (the link
        /// count of a file a rename replaced).
        dir: Option<(Fid, Vec<u8>)>,
        /// The object itself, when the event names it.
        target: Option<Fid>,
    },
    /// A run's barrier.
    Barrier {
        /// Sequence number.
        seq: u64,
        /// The token in the barrier file's name.
        token: String,
    },
    /// The kernel's queue overflowed: events were lost.
    Overflow {
        /// Sequence number.
        seq: u64,
    },
}

impl Line {
    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Line::Session { seq, .. }
            | Line::Event { seq, .. }
            | Line::Barrier { seq, .. }
            | Line::Overflow { seq } => *seq,
        }
    }

    /// The line as written (with its newline).
    pub fn encode(&self) -> String {
        match self {
            Line::Session { seq, boot, pid } => format!("S {seq} {boot} {pid}\n"),
            Line::Event { seq, mask, dir, target } => {
                let (d, n) = dir
                    .as_ref()
                    .map_or_else(|| ("-".into(), "-".into()), |(d, n)| (fid_text(d), hex(n)));
                format!(
                    "E {seq} {mask:x} {d} {n} {}\n",
                    target.as_ref().map_or_else(|| "-".into(), fid_text)
                )
            }
            Line::Barrier { seq, token } => format!("B {seq} {token}\n"),
            Line::Overflow { seq } => format!("O {seq}\n"),
        }
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Line, &'static str> {
        let text = std::str::from_utf8(line).map_err(|_| "not ASCII")?;
        let mut f = text.split(' ');
        let kind = f.next().ok_or("empty")?;
        let seq = f
            .next()
            .ok_or("no sequence number")?
            .parse()
            .map_err(|_| "bad sequence number")?;
        let mut next = || f.next().ok_or("too few fields");
        let out = match kind {
            "S" => Line::Session {
                seq,
                boot: next()?.to_string(),
                pid: next()?.parse().map_err(|_| "bad pid")?,
            },
            "E" => Line::Event {
                seq,
                mask: u64::from_str_radix(next()?, 16).map_err(|_| "bad mask")?,
                dir: match (next()?, next()?) {
                    ("-", "-") => None,
                    (d, n) => Some((parse_fid(d)?, unhex(n)?)),
                },
                target: match next()? {
                    "-" => None,
                    t => Some(parse_fid(t)?),
                },
            },
            "B" => Line::Barrier {
                seq,
                token: next()?.to_string(),
            },
            "O" => Line::Overflow { seq },
            _ => return Err("unknown record"),
        };
        if f.next().is_some() {
            return Err("too many fields");
        }
        Ok(out)
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Result<Vec<u8>, &'static str> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err("odd hex length");
    }
    // Byte by byte into a vector of the right size: `u8::from_str_radix`
    // on each pair was a tenth of a run that read 49,000 events, and
    // collecting through an iterator of results (no size hint, so the
    // vector grew three times for a handle) half of a window's parse.
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err("bad hex"),
    };
    let mut out = Vec::with_capacity(b.len() / 2);
    for p in b.chunks_exact(2) {
        out.push(nibble(p[0])? << 4 | nibble(p[1])?);
    }
    Ok(out)
}

fn fid_text(f: &Fid) -> String {
    format!(
        "{:x}.{:x}.{:x}.{}",
        f.fsid[0],
        f.fsid[1],
        f.handle_type as u32,
        hex(&f.handle)
    )
}

fn parse_fid(s: &str) -> Result<Fid, &'static str> {
    let mut p = s.split('.');
    let mut num = || u32::from_str_radix(p.next().ok_or("short file handle")?, 16).map_err(|_| "bad file handle");
    let fsid = [num()?, num()?];
    let handle_type = num()? as i32;
    let handle = unhex(p.next().ok_or("short file handle")?)?;
    if p.next().is_some() || handle.len() > 128 {
        return Err("bad file handle");
    }
    Ok(Fid {
        fsid,
        handle_type,
        handle,
    })
}

/// Why the journal could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file of the journal could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line does not parse.
    #[error("{} line {line}: {problem}", path.display())]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        problem: &'static str,
    },
    /// fanotify could not watch the filesystem.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The fileset.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another writer holds the journal.
    #[error("{} is already written by another process", path.display())]
    Busy {
        /// The journal.
        path: PathBuf,
    },
    /// The filesystem's file handles do not say their inode numbers.
    #[error("{}: file handles of type {handle_type:#x} are not understood (btrfs, ext4 and xfs are)", path.display())]
    Handles {
        /// The fileset.
        path: PathBuf,
        /// The handle type the filesystem uses.
        handle_type: i32,
    },
}

impl JournalError {
    fn io(path: &Path, source: io::Error) -> JournalError {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The id by which a directory tree's journal, and the `none` provider's
/// run state, are known in their state directory (the name is the other
/// half of the key): the root's inode number; on btrfs its subvolume's id
/// too, as inode numbers repeat in every subvolume (each one's root is
/// 256), so two subvolumes of one name (`/srv/a/data`, `/srv/b/data`)
/// would otherwise share a journal and a manifest, and one's runs would
/// diff against the other's; and where the state directory is on another
/// filesystem than the tree (`state_dir` set, perhaps shared by trees of
/// several filesystems, whose inode numbers repeat), a digest of the
/// tree's path, which no two trees have at once.
pub fn tree_id(root: BorrowedFd<'_>, path: &Path, state_dir: Option<&Path>) -> io::Result<String> {
    let st = sys::stat_fd(root, sys::StatMask::ALL)?;
    let mut id = if sys::btrfs::is_btrfs(root)? {
        format!("{}.subvolume.{}", st.ino, sys::btrfs::subvolume_id(root)?)
    } else {
        st.ino.to_string()
    };
    if let Some(dir) = state_dir
        && elsewhere(dir, st.dev)?
    {
        let digest = blake3::hash(path.as_os_str().as_bytes()).to_hex();
        id.push_str(&format!(".path.{}", &digest[..16]));
    }
    Ok(id)
}

/// Whether state directory `dir` (or, while it does not exist yet, the
/// nearest directory above it that does) is on another filesystem than
/// device `dev`.
fn elsewhere(dir: &Path, dev: u64) -> io::Result<bool> {
    let mut at = Some(dir);
    while let Some(d) = at {
        match std::fs::metadata(d) {
            Ok(m) => return Ok(m.dev() != dev),
            Err(e) if e.kind() == io::ErrorKind::NotFound => at = d.parent(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
        }
    }
    Ok(true)
}

/// The files of one fileset's journal in a state directory.
#[derive(Clone, Debug)]
pub struct JournalFiles {
    /// The state directory.
    pub dir: PathBuf,
    /// `journal.<key>`: the current file.
    pub current: PathBuf,
    /// The file before the last rotation.
    pub previous: PathBuf,
    /// The lock the writer holds while it runs.
    pub lock: PathBuf,
}

impl JournalFiles {
    /// The journal of the fileset `name` (id `id`) on the filesystem at
    /// `fs_root`, in the state directory `state_dir` (default
    /// `<fs_root>/.rotate`, as for runs).
    pub fn of(name: &str, id: &str, fs_root: &Path, state_dir: Option<&Path>) -> JournalFiles {
        let dir = state_dir.map_or_else(|| fs_root.join(".rotate"), Path::to_path_buf);
        JournalFiles::new(&dir, &crate::snapdiff::state::state_key(name, id))
    }

    /// The journal of the directory tree named `name` at `path`, whose
    /// root directory is open as `root`, on the filesystem at `fs_root`
    /// (see [`JournalFiles::of`]), keyed by [`tree_id`].
    pub fn of_tree(
        name: &str,
        root: BorrowedFd<'_>,
        path: &Path,
        fs_root: &Path,
        state_dir: Option<&Path>,
    ) -> io::Result<JournalFiles> {
        let id = tree_id(root, path, state_dir)?;
        Ok(JournalFiles::of(name, &id, fs_root, state_dir))
    }

    /// The journal of the fileset with state key `key` in `dir`.
    pub fn new(dir: &Path, key: &str) -> JournalFiles {
        let current = dir.join(format!("journal.{key}"));
        JournalFiles {
            dir: dir.to_path_buf(),
            previous: dir.join(format!("journal.{key}.1")),
            lock: dir.join(format!("journal.{key}.lock")),
            current,
        }
    }

    /// Whether a journal was ever written here.
    pub fn exists(&self) -> bool {
        self.current.exists()
    }

    /// The files that can hold record `seq` and those after it, oldest
    /// first: the current file alone when it starts at or before `seq`,
    /// else the one before it too.
    pub fn holding_from(&self, seq: u64) -> Result<Vec<&Path>, JournalError> {
        let first = match File::open(&self.current) {
            Ok(f) => {
                let mut rd = BufReader::new(f);
                let mut line = Vec::new();
                let mut first = None;
                // The magic line, then the first record.
                for _ in 0..2 {
                    line.clear();
                    rd.read_until(b'\n', &mut line)
                        .map_err(|e| JournalError::io(&self.current, e))?;
                    first = seq_of(line.strip_suffix(b"\n").unwrap_or(&line));
                }
                first
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(JournalError::io(&self.current, e)),
        };
        Ok(match first {
            Some(f) if f <= seq => vec![&self.current],
            _ => vec![&self.previous, &self.current],
        })
    }

    /// Reads the lines of `path` (none if it does not exist) from byte
    /// `offset` on, handing each whose sequence number is above `after`
    /// to `f` in order (the others are not parsed). A line `offset` cuts is
    /// skipped, and so is a last line without its newline (being written,
    /// or a writer killed mid-write). Returns where the whole lines end.
    ///
    /// The lines are parsed on up to `threads` threads, each taking a
    /// contiguous part: a run's window of 50,000 events took 70 ms to
    /// parse on one (the uniform 1 % set of `scripts/bench-snapdiff.sh`).
    /// What is read is held in memory: the caller bounds the window (a
    /// run asks for no more events than its memory budget holds).
    pub fn read_file(
        path: &Path,
        offset: u64,
        after: u64,
        threads: usize,
        mut f: impl FnMut(Line),
    ) -> Result<u64, JournalError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(JournalError::io(path, e)),
        };
        // The number of the first line read: the magic line is line 1,
        // and a read from within the file never sees it.
        let mut first_line = 1;
        let mut cut = false;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset - 1))
                .map_err(|e| JournalError::io(path, e))?;
            let mut b = [0u8];
            cut = file.read(&mut b).map_err(|e| JournalError::io(path, e))? == 1 && b[0] != b'\n';
            first_line = 2;
        }
        let len = file.metadata().map_or(0, |m| m.len().saturating_sub(offset));
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes).map_err(|e| JournalError::io(path, e))?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut text = &bytes[..whole];
        if cut && !text.is_empty() {
            take_line(&mut text);
            first_line += 1;
        }
        if first_line == 1 && !text.is_empty() {
            if take_line(&mut text).strip_suffix(b"\n") != Some(MAGIC.as_bytes()) {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: 1,
                    problem: "not a ferry journal",
                });
            }
            first_line = 2;
        }
        let parts = match split_lines(text, threads).as_slice() {
            // A run's barrier is looked for every few hundred
            // microseconds: one part is parsed here, not on a new thread.
            [one] => vec![parse_part(one, after)],
            parts => crate::snapdiff::parallel::each_on_a_thread(parts, |part| parse_part(part, after)),
        };
        let mut line = first_line;
        for part in parts {
            if let Some((at, problem)) = part.error {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: line + at,
                    problem,
                });
            }
            line += part.count;
            part.lines.into_iter().for_each(&mut f);
        }
        Ok(offset + whole as u64)
    }
}

/// The first line of `text` (with its newline); `text` moves past it.
fn take_line<'a>(text: &mut &'a [u8]) -> &'a [u8] {
    let n = text.iter().position(|&b| b == b'\n').map_or(text.len(), |i| i + 1);
    let (line, rest) = text.split_at(n);
    *text = rest;
    line
}

/// `text` (whole lines) cut into up to `parts` pieces of about equal
/// size, each of whole lines.
fn split_lines(text: &[u8], parts: usize) -> Vec<&[u8]> {
    /// Below this a part is not worth a thread.
    const LEAST: usize = 256 << 10;
    let per = text.len().div_ceil(parts.max(1)).max(LEAST);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = match rest.get(per..).and_then(|r| r.iter().position(|&b| b == b'\n')) {
            Some(i) => per + i + 1,
            None => rest.len(),
        };
        let (part, after) = rest.split_at(cut);
        out.push(part);
        rest = after;
    }
    out
}

/// The lines of one part of a journal, parsed.
struct Parsed {
    /// Those above the caller's sequence number.
    lines: Vec<Line>,
    /// How many lines the part has.
    count: u64,
    /// The first line that does not parse (0-based in the part), and why.
    error: Option<(u64, &'static str)>,
}

/// Parses the lines of `part` (whole lines) whose sequence number is
/// above `after`, up to the first that does not parse.
fn parse_part(part: &[u8], after: u64) -> Parsed {
    let mut out = Parsed {
        lines: Vec::new(),
        count: 0,
        error: None,
    };
    for line in part.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let at = out.count;
        out.count += 1;
        if seq_of(line).is_some_and(|s| s <= after) {
            continue;
        }
        match Line::parse(line) {
            Ok(l) => out.lines.push(l),
            Err(problem) => {
                out.error = Some((at, problem));
                break;
            }
        }
    }
    out
}

/// The sequence number of a journal line, without parsing the rest.
/// A byte offset of `path` at or before the line with sequence number
/// `seq`, found by bisection (the lines' numbers only grow), so that a run
/// reads its window without passing over every line before it: the
/// journal keeps up to 64 MiB of older lines. 0 when the file cannot be
/// read (the reader then reports why) or the line is near its start.
pub fn offset_before(path: &Path, seq: u64) -> u64 {
    /// Bisection stops within this many bytes; the reader passes over
    /// the rest by sequence number.
    const NEAR: u64 = 64 << 10;
    let Ok(mut file) = File::open(path) else { return 0 };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return 0;
    };
    let (mut lo, mut hi) = (0u64, len);
    let mut buf = vec![0u8; 4096];
    while hi - lo > NEAR {
        let mid = lo + (hi - lo) / 2;
        // The first whole line after `mid`.
        let first = file
            .seek(SeekFrom::Start(mid))
            .and_then(|_| file.read(&mut buf))
            .ok()
            .and_then(|n| {
                let chunk = &buf[..n];
                let start = chunk.iter().position(|&b| b == b'\n')? + 1;
                let end = start + chunk[start..].iter().position(|&b| b == b'\n')?;
                seq_of(&chunk[start..end])
            });
        match first {
            Some(s) if s < seq => lo = mid,
            Some(_) => hi = mid,
            // A line longer than the chunk, or a read error: stop here.
            None => break,
        }
    }
    lo
}

fn seq_of(line: &[u8]) -> Option<u64> {
    let rest = line.get(2..)?;
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_awkward_names() {
        let fid = |t| Fid {
            fsid: [0xdead, 7],
            handle_type: t,
            handle: vec![1, 2, 0xff],
        };
        let lines = [
            Line::Session {
                seq: 1,
                boot: "b0".into(),
                pid: 42,
            },
            Line::Event {
                seq: 2,
                mask: 0x4000_0100,
                dir: Some((fid(0x4d), b"a b\n\xff".to_vec())),
                target: Some(fid(1)),
            },
            Line::Event {
                seq: 3,
                mask: 2,
                dir: Some((fid(-1), b".".to_vec())),
                target: None,
            },
            Line::Event {
                seq: 4,
                mask: 4,
                dir: None,
                target: Some(fid(1)),
            },
            Line::Barrier {
                seq: 5,
                token: "t-1".into(),
            },
            Line::Overflow { seq: 6 },
        ];
        for l in &lines {
            let text = l.encode();
            assert!(text.ends_with('\n') && !text[..text.len() - 1].contains('\n'));
            assert_eq!(&Line::parse(text.trim_end().as_bytes()).unwrap(), l);
        }
        for bad in [
            "",
            "E 1",
            "E x 2 a.b.c.00 00 -",
            "E 1 2 a.b.00 00 -",
            "B 1 t extra",
            "Z 1",
            "E 1 2 a.b.c.0 00 -",
        ] {
            assert!(Line::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_file_before_is_read_only_when_the_current_one_starts_later() {
        let dir = tempfile::tempdir().unwrap();
        let files = JournalFiles::new(dir.path(), "k");
        let both = vec![files.previous.as_path(), files.current.as_path()];
        assert_eq!(files.holding_from(3).unwrap(), both);
        std::fs::write(&files.current, format!("{MAGIC}\nB 10 t\nO 11\n")).unwrap();
        assert_eq!(files.holding_from(10).unwrap(), vec![files.current.as_path()]);
        assert_eq!(files.holding_from(12).unwrap(), vec![files.current.as_path()]);
        assert_eq!(files.holding_from(9).unwrap(), both);
    }

    #[test]
    fn a_window_is_found_by_bisection_not_by_reading_every_line_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut text = format!("{MAGIC}\n");
        let mut at = 0;
        for seq in 1..=40_000u64 {
            if seq == 30_000 {
                at = text.len() as u64;
            }
            text.push_str(
                &Line::Barrier {
                    seq,
                    token: format!("t{seq}"),
                }
                .encode(),
            );
        }
        std::fs::write(&path, &text).unwrap();
        let from = offset_before(&path, 30_000);
        // At or before the line, and within the bisection's last step.
        assert!(from <= at && at - from <= 2 * (64 << 10), "{from} {at}");
        assert!(from > 0);
        let mut first = None;
        JournalFiles::read_file(&path, from, 29_999, 1, |l| {
            first.get_or_insert(l.seq());
        })
        .unwrap();
        assert_eq!(first, Some(30_000));
        assert_eq!(offset_before(&path, 1), 0);
        assert_eq!(offset_before(&dir.path().join("none"), 5), 0);
    }

    /// A window parsed on several threads gives the lines in order, as on
    /// one, and a line that does not parse is reported by its number in
    /// the file (counted from the read's start), whichever part held it.
    #[test]
    fn a_journal_parsed_in_parts_gives_what_one_thread_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.k");
        let fid = Fid {
            fsid: [7, 9],
            handle_type: 0x4d,
            handle: (0..20).collect(),
        };
        let mut text = format!("{MAGIC}\n");
        for seq in 1..=20_000u64 {
            let line = match seq % 500 {
                0 => Line::Barrier {
                    seq,
                    token: format!("t{seq}"),
                },
                _ => Line::Event {
                    seq,
                    mask: seq,
                    dir: Some((fid.clone(), format!("name {seq}\n").into_bytes())),
                    target: Some(fid.clone()),
                },
            };
            text.push_str(&line.encode());
        }
        // Well over two parts of the least a thread takes.
        assert!(text.len() > 4 * (256 << 10), "{}", text.len());
        std::fs::write(&path, &text).unwrap();
        let read = |threads| {
            let mut lines = Vec::new();
            let end = JournalFiles::read_file(&path, 0, 100, threads, |l| lines.push(l)).unwrap();
            (lines, end)
        };
        let (one, end) = read(1);
        assert_eq!(end, text.len() as u64);
        assert_eq!(one.len(), 19_900);
        assert_eq!(one.first().map(Line::seq), Some(101));
        assert!(one.windows(2).all(|w| w[0].seq() + 1 == w[1].seq()));
        assert_eq!(read(4).0, one);
        assert_eq!(split_lines(text.as_bytes(), 4).len(), 4);
        // A bad line three quarters in: line 15,002 of the file (the magic
        // line is line 1), in the last part.
        let bad = text.replacen("E 15001 ", "E 15001 zz", 1);
        std::fs::write(&path, &bad).unwrap();
        for threads in [1, 4] {
            match JournalFiles::read_file(&path, 0, 0, threads, |_| {}) {
                Err(JournalError::Corrupt { line, problem, .. }) => {
                    assert_eq!((line, problem), (15_002, "bad mask"), "{threads} threads")
                }
                other => panic!("{threads} threads: {other:?}"),
            }
        }
    }
}
