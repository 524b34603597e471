//! A btrfs filesystem on a loop-mounted image, made for one test and torn
//! down after it. Needs root and mkfs.btrfs: without them the test fails
//! under CI (`CI=true`) and is skipped with a loud message elsewhere.
//!
//! Also what the snapdiff tests share: running commands within a deadline,
//! and reading `ferry snapdiff` JSON lines with their surrogateescape paths.

#![allow(dead_code)]

use super::loopfs::LoopFs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A mounted btrfs image.
pub struct LoopBtrfs {
    fs: LoopFs,
}

impl LoopBtrfs {
    /// Makes and mounts a `size_mb` MiB btrfs image, or explains why not:
    /// `None` means skip (not under CI); under CI it panics.
    pub fn new(size_mb: u64) -> Option<LoopBtrfs> {
        LoopFs::new(&["mkfs.btrfs", "-q"], size_mb).map(|fs| LoopBtrfs { fs })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.fs.path()
    }

    /// Unmounts and mounts the image again: btrfs then hands out inode
    /// numbers from one past the highest in use in each subvolume, so the
    /// numbers of the highest inodes deleted before come back.
    pub fn remount(&self) {
        self.fs.remount();
    }

    /// Creates subvolume `name` at the top of the filesystem.
    pub fn subvolume(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        let out = output(Command::new("btrfs").args(["subvolume", "create"]).arg(&p));
        assert!(
            out.status.success(),
            "btrfs subvolume create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }
}

// ---------------------------------------------------------------------------
// Running ferry and reading its snapdiff output (shared by the snapdiff tests)

/// The ferry binary under test.
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// How long any one command may run before the test fails (a hung command
/// must fail the test, not hang the suite; no result depends on it).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cmd` with no stdin, capturing stdout and stderr, within [`DEADLINE`].
pub fn output(cmd: &mut Command) -> Output {
    super::run_within(cmd, None, DEADLINE, None)
}

/// The subvolume id btrfs gives `path` (ferry's fileset id for it).
pub fn subvolume_id(path: &Path) -> String {
    let out = output(Command::new("btrfs").args(["inspect-internal", "rootid"]).arg(path));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A path's bytes.
pub fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// Bytes made printable for messages (`\n`, `\xff`, ...).
pub fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// The members of one JSON object, in order: key and the raw text of the
/// value (a string value keeps its quotes and escapes, so that lone
/// surrogates, which no Rust `String` can hold, reach
/// `ferry::task::surrogate::decode` intact).
pub fn json_members(text: &str) -> Vec<(String, String)> {
    let s = text.trim().as_bytes();
    assert!(
        s.first() == Some(&b'{') && s.last() == Some(&b'}'),
        "not an object: {text}"
    );
    let mut out = Vec::new();
    let mut i = 1;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    // The end (exclusive) of the string literal starting at `i`.
    let string_end = |mut i: usize| -> usize {
        assert_eq!(s[i], b'"', "expected a string in {text}");
        i += 1;
        while s[i] != b'"' {
            i += if s[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    loop {
        skip_ws(&mut i);
        if s[i] == b'}' {
            return out;
        }
        let kend = string_end(i);
        let key = ferry::task::surrogate::decode(&text.trim()[i..kend]).expect("key");
        i = kend;
        skip_ws(&mut i);
        assert_eq!(s[i], b':', "{text}");
        i += 1;
        skip_ws(&mut i);
        let start = i;
        if s[i] == b'"' {
            i = string_end(i);
        } else {
            let mut depth = 0usize;
            while i < s.len() {
                match s[i] {
                    b'"' => {
                        i = string_end(i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' | b'}' if depth == 0 => break,
                    _ => {}
                }
                i += 1;
            }
        }
        out.push((
            String::from_utf8(key).unwrap(),
            text.trim()[start..i].trim().to_string(),
        ));
        skip_ws(&mut i);
        if s[i] == b',' {
            i += 1;
        }
    }
}

/// A JSON string literal as path bytes (surrogateescape).
pub fn json_path(literal: &str) -> Vec<u8> {
    ferry::task::surrogate::decode(literal).unwrap_or_else(|e| panic!("{literal}: {e}"))
}

/// One line of `ferry snapdiff` JSON output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeLine {
    /// created, updated, moved or deleted.
    pub state: String,
    /// Absolute path, exact bytes.
    pub path: Vec<u8>,
    /// For moves, the old absolute path.
    pub source: Option<Vec<u8>>,
    /// file, directory, symlink, ...
    pub kind: String,
    /// st_mode.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Link count.
    pub nlink: u64,
    /// `additional_metadata.inode`, if asked for.
    pub inode: Option<u64>,
    /// `additional_metadata.generation`, if asked for.
    pub generation: Option<u64>,
    /// `additional_metadata.is_metadata_only_update`, if present.
    pub metadata_only: Option<bool>,
    /// The line as written.
    pub raw: String,
}

/// "1700000000.000000123" as (seconds, nanoseconds).
pub fn parse_time(t: &str) -> (i64, u32) {
    let (s, ns) = t.split_once('.').unwrap_or((t, "0"));
    assert!(!s.starts_with('-'), "negative times are not used here: {t}");
    assert_eq!(ns.len(), 9, "nanoseconds in {t}");
    (s.parse().unwrap(), ns.parse().unwrap())
}

impl ChangeLine {
    /// Parses one JSON line of `ferry snapdiff` output.
    pub fn parse(line: &str) -> ChangeLine {
        let m = json_members(line);
        let get = |k: &str| m.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let num = |k: &str| -> u64 {
            get(k)
                .unwrap_or_else(|| panic!("no {k} in {line}"))
                .parse()
                .unwrap_or_else(|e| panic!("{k} in {line}: {e}"))
        };
        let text =
            |k: &str| String::from_utf8(json_path(get(k).unwrap_or_else(|| panic!("no {k} in {line}")))).unwrap();
        let extra = get("additional_metadata").map(json_members).unwrap_or_default();
        let xget = |k: &str| extra.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        ChangeLine {
            state: text("state"),
            path: json_path(get("path").expect("path")),
            source: get("source").map(json_path),
            kind: text("type"),
            mode: num("mode") as u32,
            uid: num("uid") as u32,
            gid: num("gid") as u32,
            size: num("size"),
            mtime: parse_time(get("mtime").expect("mtime")),
            nlink: num("nlink"),
            inode: xget("inode").map(|v| v.parse().unwrap()),
            generation: xget("generation").map(|v| v.parse().unwrap()),
            metadata_only: xget("is_metadata_only_update").map(|v| v == "true"),
            raw: line.to_string(),
        }
    }
}

/// Every line of `ferry snapdiff` JSON Lines output.
pub fn parse_changes(stdout: &[u8]) -> Vec<ChangeLine> {
    std::str::from_utf8(stdout)
        .expect("JSON output is UTF-8")
        .lines()
        .filter(|l| !l.is_empty())
        .map(ChangeLine::parse)
        .collect()
}

/// A running `ferry journal` (the event journal's writer) for a fileset,
/// stopped when dropped.
pub struct JournalWriter(std::process::Child);

impl JournalWriter {
    /// Starts the writer of `fileset` with its journal in `state` and
    /// waits until it journals (its session line is written).
    pub fn start(state: &Path, fileset: &Path) -> JournalWriter {
        std::fs::create_dir_all(state).unwrap();
        let child = Command::new(FERRY)
            .arg("journal")
            .arg("--state-dir")
            .arg(state)
            .arg(fileset)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut w = JournalWriter(child);
        let started = || {
            std::fs::read_dir(state).unwrap().filter_map(Result::ok).any(|e| {
                let n = e.file_name();
                n.as_bytes().starts_with(b"journal.")
                    && !n.as_bytes().ends_with(b".lock")
                    && std::fs::read(e.path())
                        .unwrap_or_default()
                        .windows(3)
                        .any(|w| w == b"\nS ")
            })
        };
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while !started() {
            if let Some(st) = w.0.try_wait().unwrap() {
                panic!("ferry journal exited with {st}");
            }
            assert!(
                std::time::Instant::now() < end,
                "ferry journal did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
