//! The event journal of the `none` provider (`ferry journal`): runs that
//! read only what the journal points at must report exactly what a full
//! walk of the same tree reports, and every gap in the journal (a queue
//! overflow, the writer stopped while files changed, no writer at all)
//! must lead to a full walk that says why and misses nothing.
//!
//! Real filesystems on loop images (ext4, and a btrfs subvolume, whose
//! inode numbers repeat across subvolumes of one filesystem), as root.

mod common;

use common::Rng;
use common::btrfs::{FERRY, LoopBtrfs, output};
use common::loopfs::LoopFs;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writers start one at a time: the overflow test lowers the kernel's
/// queue size for the writer it starts, and a writer's queue size is fixed
/// when it starts.
static WRITER_START: Mutex<()> = Mutex::new(());

/// A fileset with its journal writer.
struct Journaled {
    fileset: PathBuf,
    outside: PathBuf,
    state: PathBuf,
    writer: Option<Child>,
}

impl Journaled {
    fn new(fs_root: &Path, fileset: PathBuf) -> Journaled {
        let mut j = Journaled::without_writer(fs_root, fileset);
        j.start(None);
        j
    }

    /// The fileset with no writer started (the agent's test starts one).
    fn without_writer(fs_root: &Path, fileset: PathBuf) -> Journaled {
        let outside = fs_root.join("outside");
        fs::create_dir_all(&outside).unwrap();
        Journaled {
            fileset,
            outside,
            state: fs_root.join("state"),
            writer: None,
        }
    }

    fn journal_sessions(&self) -> usize {
        let Ok(rd) = fs::read_dir(&self.state) else { return 0 };
        rd.filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let n = n.as_bytes();
                n.starts_with(b"journal.") && !n.ends_with(b".lock") && !n.ends_with(b".1")
            })
            .map(|e| {
                fs::read(e.path())
                    .unwrap_or_default()
                    .split(|&b| b == b'\n')
                    .filter(|l| l.starts_with(b"S "))
                    .count()
            })
            .sum()
    }

    /// Starts the writer (with the kernel's queue limited to `queue`
    /// events) and waits until it journals.
    fn start(&mut self, queue: Option<u32>) {
        const MAX_QUEUED: &str = "/proc/sys/fs/fanotify/max_queued_events";
        let _one = WRITER_START.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.journal_sessions();
        let saved = fs::read_to_string(MAX_QUEUED).unwrap();
        if let Some(q) = queue {
            fs::write(MAX_QUEUED, q.to_string()).unwrap();
        }
        let child = Command::new(FERRY)
            .arg("journal")
            .arg("--state-dir")
            .arg(&self.state)
            .arg(&self.fileset)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.writer = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        while self.journal_sessions() <= before {
            if let Some(s) = self.writer.as_mut().unwrap().try_wait().unwrap() {
                fs::write(MAX_QUEUED, &saved).unwrap();
                panic!("ferry journal exited with {s}");
            }
            assert!(Instant::now() < end, "ferry journal did not start within 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        fs::write(MAX_QUEUED, &saved).unwrap();
    }

    /// Stops the writer as systemd would (SIGTERM) and waits for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.writer.take() {
            unsafe_kill(c.id(), libc::SIGTERM);
            let s = common::wait_with_deadline(&mut c, Duration::from_secs(30), "ferry journal");
            assert!(s.success(), "ferry journal ended with {s}");
        }
    }

    fn signal(&self, sig: i32) {
        unsafe_kill(self.writer.as_ref().unwrap().id(), sig);
    }

    fn snapdiff(&self, extra: &[&str]) -> Output {
        let out = output(
            Command::new(FERRY)
                .args(["snapdiff", "--provider", "none", "--changes-limit", "1", "--state-dir"])
                .arg(&self.state)
                .args(extra)
                .arg(&self.fileset),
        );
        assert!(
            out.status.success(),
            "snapdiff {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// How the next run reads the tree (`changes` or `full`), by a dry run.
    fn read_method(&self) -> String {
        let out = self.snapdiff(&["--dry-run", "--summary"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text.find("\"read\":\"").expect("a read field") + 8;
        text[at..].split('"').next().unwrap().to_string()
    }

    /// A committed run must print exactly what a full walk of the same
    /// tree prints; returns its log.
    fn run_and_compare(&self, what: &str) -> String {
        let full = self.snapdiff(&["--dry-run", "--full"]);
        let run = self.snapdiff(&[]);
        assert!(
            full.stdout == run.stdout,
            "{what}: the run and a full walk disagree\n--- full walk\n{}\n--- run (log: {})\n{}",
            String::from_utf8_lossy(&full.stdout),
            String::from_utf8_lossy(&run.stderr),
            String::from_utf8_lossy(&run.stdout)
        );
        String::from_utf8_lossy(&run.stderr).into_owned()
    }
}

impl Drop for Journaled {
    fn drop(&mut self) {
        if let Some(mut c) = self.writer.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// The directories and the other entries under `root` (root included in
/// the directories).
fn tree(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut other) = (vec![root.to_path_buf()], Vec::new());
    let mut i = 0;
    while i < dirs.len() {
        let d = dirs[i].clone();
        for e in fs::read_dir(&d).unwrap().map(Result::unwrap) {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                other.push(e.path());
            }
        }
        i += 1;
    }
    (dirs, other)
}

/// The `examined` count of a run's `--summary`.
fn examined_in(summary: &str) -> u64 {
    let at = summary.find("\"examined\":").expect("an examined field") + 11;
    summary[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn awkward_name(rng: &mut Rng, n: u64) -> Vec<u8> {
    let mut name = match rng.below(5) {
        0 => b"line\nbreak-".to_vec(),
        1 => b"bad\xff-".to_vec(),
        2 => "\u{e9}t\u{e9} ".as_bytes().to_vec(),
        _ => b"f-".to_vec(),
    };
    name.extend_from_slice(n.to_string().as_bytes());
    name
}

fn join(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// One random change to the tree at `root`; `outside` is a directory on
/// the same filesystem outside the fileset. Failures (a rename into its
/// own subtree, a name taken) are part of the game and ignored.
fn change(rng: &mut Rng, root: &Path, outside: &Path, n: u64) {
    let (dirs, files) = tree(root);
    let sub: Vec<PathBuf> = dirs[1..].to_vec();
    let dir = rng.pick(&dirs).unwrap().clone();
    let regular: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.is_file() && !f.is_symlink())
        .cloned()
        .collect();
    let _ = match rng.below(15) {
        0 | 1 => fs::write(join(&dir, &awkward_name(rng, n)), vec![b'x'; rng.below(3000)]),
        2 => match rng.pick(&regular) {
            Some(f) => fs::OpenOptions::new()
                .append(true)
                .open(f)
                .and_then(|mut h| std::io::Write::write_all(&mut h, b"more")),
            None => Ok(()),
        },
        3 => match rng.pick(&regular) {
            // Same size, new bytes.
            Some(f) => fs::read(f).and_then(|d| fs::write(f, d.iter().map(|b| b.wrapping_add(1)).collect::<Vec<_>>())),
            None => Ok(()),
        },
        4 => match rng.pick(&files).or(rng.pick(&sub)) {
            Some(p) if !p.is_symlink() => {
                fs::set_permissions(p, fs::Permissions::from_mode(0o600 + rng.below(0o100) as u32))
            }
            _ => Ok(()),
        },
        5 => match rng.pick(&regular) {
            Some(f) => xattr(f, rng.below(1000)),
            None => Ok(()),
        },
        6 => match rng.pick(&files) {
            Some(f) => fs::rename(f, join(&dir, &awkward_name(rng, n))),
            None => Ok(()),
        },
        7 => match rng.pick(&sub) {
            Some(d) => fs::rename(d, join(&dir, &awkward_name(rng, n))),
            None => Ok(()),
        },
        8 => match rng.pick(&regular) {
            Some(f) => fs::hard_link(f, join(&dir, &awkward_name(rng, n))),
            None => Ok(()),
        },
        9 => match rng.pick(&files) {
            Some(f) => fs::remove_file(f),
            None => Ok(()),
        },
        10 => match rng.pick(&sub) {
            Some(d) => fs::remove_dir_all(d),
            None => Ok(()),
        },
        11 => fs::create_dir(join(&dir, &awkward_name(rng, n)))
            .and_then(|_| fs::write(join(&join(&dir, &awkward_name(rng, n)), b"inside"), b"i").or(Ok(()))),
        12 => symlink(format!("target-{n}"), join(&dir, &awkward_name(rng, n))),
        13 => match rng.pick(&sub) {
            // Out of the fileset, and something else in from outside.
            Some(d) => fs::rename(d, outside.join(format!("out-{n}"))).and_then(|_| {
                let came = outside.join(format!("in-{n}"));
                fs::create_dir_all(came.join("deep"))?;
                fs::write(came.join("deep/file"), b"from outside")?;
                fs::rename(&came, join(&dir, &awkward_name(rng, n)))
            }),
            None => Ok(()),
        },
        _ => match (rng.pick(&regular), rng.pick(&regular)) {
            // A rename over an existing file.
            (Some(a), Some(b)) if a != b => fs::rename(a, b),
            _ => Ok(()),
        },
    };
}

fn xattr(p: &Path, v: usize) -> std::io::Result<()> {
    let out = Command::new("setfattr")
        .args(["-n", "user.k", "-v", &v.to_string()])
        .arg(p)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("setfattr"))
    }
}

/// Rounds of random changes, each followed by a run that must read only
/// the journal's changes and print what a full walk prints.
fn rounds(j: &Journaled, seed: u64, rounds: u64) {
    let mut rng = Rng(seed);
    let mut n = 0;
    for round in 0..rounds {
        for _ in 0..1 + rng.below(12) {
            n += 1;
            change(&mut rng, &j.fileset, &j.outside, n);
        }
        assert_eq!(
            j.read_method(),
            "journal",
            "round {round}: the run did not read the journal"
        );
        j.run_and_compare(&format!("round {round}"));
    }
}

fn seed_tree(root: &Path) {
    for d in ["a/b/c", "d", "e/f"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (i, d) in ["a", "a/b", "a/b/c", "d", "e/f", ""].iter().enumerate() {
        for k in 0..4 {
            fs::write(root.join(d).join(format!("file-{i}-{k}")), vec![b'a'; k * 100 + 1]).unwrap();
        }
    }
}

fn ext4() -> Option<(LoopFs, Journaled)> {
    if !common::require_root("the event journal") {
        return None;
    }
    let fs = LoopFs::ext4(256)?;
    let fileset = fs.path().join("fileset");
    fs::create_dir(&fileset).unwrap();
    seed_tree(&fileset);
    let j = Journaled::new(fs.path(), fileset);
    Some((fs, j))
}

#[test]
fn journal_guided_runs_on_ext4_report_what_a_full_walk_reports() {
    let Some((_fs, j)) = ext4() else { return };
    let log = j.run_and_compare("first run");
    assert!(
        !log.contains("journal"),
        "a first run has nothing to say of the journal: {log}"
    );
    // More sequences with FERRY_PROPTEST_CASES (as the other property
    // tests take it).
    let cases: u64 = std::env::var("FERRY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for case in 0..cases {
        rounds(&j, 0x9e37_79b9_7f4a_7c15 ^ case.wrapping_mul(0x1000_0001), 20);
    }
}

#[test]
fn journal_guided_runs_on_a_btrfs_subvolume_report_what_a_full_walk_reports() {
    if !common::require_root("the event journal") {
        return;
    }
    let Some(btr) = LoopBtrfs::new(512) else { return };
    // Another subvolume with the same inode numbers, changed all along:
    // its events must not be taken for the fileset's.
    let other = btr.subvolume("other");
    let fileset = btr.subvolume("fileset");
    seed_tree(&other);
    seed_tree(&fileset);
    let j = Journaled::new(btr.path(), fileset);
    j.run_and_compare("first run");
    let mut noise = Rng(7);
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    for round in 0..12 {
        for k in 0..1 + rng.below(10) {
            change(&mut rng, &j.fileset, &j.outside, round * 100 + k as u64);
            change(
                &mut noise,
                &other,
                &btr.path().join("outside"),
                10_000 + round * 100 + k as u64,
            );
        }
        assert_eq!(j.read_method(), "journal", "round {round}");
        j.run_and_compare(&format!("round {round}"));
    }
    // Snapshots in the fileset's `.snapshots` (subvolumes, whose root is
    // inode 256 like the fileset's) are no part of it, as for a walk.
    fs::create_dir(j.fileset.join(".snapshots")).unwrap();
    let snap = j.fileset.join(".snapshots/s1");
    let out = output(
        Command::new("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(&other)
            .arg(&snap),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fs::write(j.fileset.join("next-to-a-snapshot"), b"n").unwrap();
    assert_eq!(j.read_method(), "journal", "a snapshot in .snapshots");
    j.run_and_compare("a snapshot in .snapshots");
    // A subvolume inside the fileset: the run says why it walks.
    let nested = j.fileset.join("nested");
    let out = output(Command::new("btrfs").args(["subvolume", "create"]).arg(&nested));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = j.run_and_compare("a nested subvolume");
    assert!(log.contains("on another filesystem or subvolume"), "{log}");
}

#[test]
fn a_run_examines_what_the_events_name_not_the_tree() {
    let Some((_fs, j)) = ext4() else { return };
    for d in 0..20 {
        let dir = j.fileset.join(format!("bulk-{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}")), b"x").unwrap();
        }
    }
    j.run_and_compare("first run");
    // A write, a rename, a delete and a create: a handful of events
    // (each write is a modify and a close-write), not 2,000 entries.
    fs::write(j.fileset.join("bulk-3/f7"), b"changed").unwrap();
    fs::rename(j.fileset.join("bulk-4/f1"), j.fileset.join("bulk-5/moved")).unwrap();
    fs::remove_file(j.fileset.join("bulk-6/f2")).unwrap();
    fs::write(j.fileset.join("bulk-7/new"), b"n").unwrap();
    let out = j.snapdiff(&["--dry-run", "--summary"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"read\":\"journal\""), "{text}");
    let examined = examined_in(&text);
    assert!((4..=20).contains(&examined), "examined {examined}: {text}");
    // A directory that comes in from outside is read whole: its 30 entries.
    let came = j.outside.join("came");
    fs::create_dir(&came).unwrap();
    for f in 0..30 {
        fs::write(came.join(format!("c{f}")), b"c").unwrap();
    }
    j.run_and_compare("before the move in");
    fs::rename(&came, j.fileset.join("came")).unwrap();
    let out = j.snapdiff(&["--dry-run", "--summary"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let examined = examined_in(&text);
    assert!((31..=40).contains(&examined), "examined {examined}: {text}");
    j.run_and_compare("the move in");
}

/// A dry run's `open_by_handle_at` calls (`strace -f`), and its summary,
/// which must say it read the journal.
fn traced_handle_opens(j: &Journaled) -> (String, String) {
    let trace = j.state.join("handles.trace");
    let out = output(
        Command::new("strace")
            .args(["-f", "-e", "trace=open_by_handle_at", "-o"])
            .arg(&trace)
            .args([FERRY, "snapdiff", "--provider", "none", "--changes-limit", "1"])
            .args(["--dry-run", "--summary", "--state-dir"])
            .arg(&j.state)
            .arg(&j.fileset),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("\"read\":\"journal\""),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (fs::read_to_string(&trace).unwrap(), text)
}

/// How many handles a dry run opens, and its summary.
fn handle_opens(j: &Journaled) -> (usize, String) {
    let (trace, text) = traced_handle_opens(j);
    (trace.lines().filter(|l| l.contains("open_by_handle_at(")).count(), text)
}

#[test]
fn deleted_files_are_proved_gone_by_the_baseline_without_opening_their_handles() {
    let Some((_fs, j)) = ext4() else { return };
    let many = j.fileset.join("many");
    fs::create_dir(&many).unwrap();
    for f in 0..40 {
        fs::write(many.join(format!("f{f}")), b"x").unwrap();
    }
    // Two links inside; one inside and one outside the fileset.
    fs::write(j.fileset.join("hl-a"), b"a").unwrap();
    fs::hard_link(j.fileset.join("hl-a"), j.fileset.join("d/hl-b")).unwrap();
    fs::write(j.fileset.join("hl-x"), b"x").unwrap();
    fs::hard_link(j.fileset.join("hl-x"), j.outside.join("hl-x-out")).unwrap();
    j.run_and_compare("first run");
    for f in 0..40 {
        fs::remove_file(many.join(format!("f{f}"))).unwrap();
    }
    // Neither of these is gone: `hl-b` still holds one, and `hl-x-out`,
    // outside, the other (which leaves the fileset, as a move out would).
    fs::remove_file(j.fileset.join("hl-a")).unwrap();
    fs::remove_file(j.fileset.join("hl-x")).unwrap();
    let (trace, text) = traced_handle_opens(&j);
    assert!(
        text.contains("\"deleted\":42"),
        "40 files, hl-x (left the fileset) and the link hl-a: {text}"
    );
    // The directories the deletes touched and the two inodes with a link
    // the events did not touch are opened; of the deleted files' stale
    // handles none (what is stale is the state directory's barrier files,
    // on the same filesystem: a few).
    let opens: Vec<&str> = trace.lines().filter(|l| l.contains("open_by_handle_at(")).collect();
    let stale = trace.lines().filter(|l| l.contains("ESTALE")).count();
    assert!(
        opens.len() <= 10 && stale <= 4,
        "{} handles opened, {stale} stale:\n{trace}",
        opens.len()
    );
    j.run_and_compare("after the deletes");
}

#[test]
fn touched_directories_are_opened_by_their_baseline_path_and_moved_ones_by_handle() {
    let Some((_fs, j)) = ext4() else { return };
    let top = j.fileset.join("top");
    let dirs = |from: &Path, prefix: &str| (0..30).map(|d| from.join(format!("{prefix}{d}"))).collect::<Vec<_>>();
    for dir in dirs(&top, "d") {
        fs::create_dir_all(&dir).unwrap();
        for f in 0..5 {
            fs::write(dir.join(format!("f{f}")), b"x").unwrap();
        }
    }
    fs::create_dir(j.fileset.join("moved")).unwrap();
    j.run_and_compare("first run");
    let append = |dir: &Path| {
        let mut f = fs::OpenOptions::new().append(true).open(dir.join("f0")).unwrap();
        f.write_all(b"more").unwrap();
    };
    dirs(&top, "d").iter().for_each(|d| append(d));
    // Each of the 30 directories is found where the baseline had it:
    // what a run opens by handle is the state directory and what came
    // and went in it (outside the fileset, on the same filesystem), as
    // many after every change set: 2 here (opened by handle, the 30
    // directories made 32).
    let (in_place, text) = handle_opens(&j);
    assert!(text.contains("\"updated\":30"), "{text}");
    assert!(in_place < 10, "{in_place} handles opened for 30 directories in place");
    j.run_and_compare("appends in place");
    // Moved since the baseline, their old paths lead nowhere: their
    // handles open them.
    for (from, to) in dirs(&top, "d").iter().zip(dirs(&j.fileset.join("moved"), "m")) {
        fs::rename(from, &to).unwrap();
        append(&to);
    }
    let (moved, text) = handle_opens(&j);
    assert!(
        moved >= 30,
        "{moved} handles opened for 30 directories moved since ({in_place} for none): {text}"
    );
    j.run_and_compare("appends in moved directories");
}

#[test]
fn more_events_than_the_memory_budget_holds_lead_to_a_full_walk_that_misses_nothing() {
    let Some((_fs, j)) = ext4() else { return };
    let dir = j.fileset.join("renamed");
    fs::create_dir(&dir).unwrap();
    for f in 0..500 {
        fs::write(dir.join(format!("f{f}.0")), b"x").unwrap();
    }
    j.run_and_compare("first run");
    // 500 files renamed 18 times each, every time to a name never used
    // before: about 10,500 journal records (12 renames made 7,000), well
    // under the kernel's queue of 16,384, on 501 inodes.
    for f in 0..500 {
        for k in 0..18 {
            fs::rename(dir.join(format!("f{f}.{k}")), dir.join(format!("f{f}.{}", k + 1))).unwrap();
        }
    }
    // The default budget holds them: the run reads what they name.
    assert_eq!(j.read_method(), "journal");
    // 37M leaves 9 MiB past the program, two threads and the merge, less
    // the directory tables: about 6,100 events of 1.5 KiB, fewer than the
    // window holds (and more than the 501 inodes they touch).
    let budget = ["--mem-limit", "37M", "-j", "2"];
    let dry = j.snapdiff(&[&["--dry-run", "--summary"][..], &budget[..]].concat());
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("\"read\":\"full\""), "{text}");
    let log = String::from_utf8_lossy(&dry.stderr);
    assert!(
        log.contains("events journaled"),
        "the run must say why it walked: {log}"
    );
    let full = j.snapdiff(&["--dry-run", "--full"]);
    let run = j.snapdiff(&budget);
    assert!(
        full.stdout == run.stdout,
        "the run within 37M and a full walk disagree\n--- full walk\n{}\n--- run\n{}",
        String::from_utf8_lossy(&full.stdout),
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(run.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() >= 500);
}

#[test]
fn a_queue_overflow_leads_to_a_full_walk_that_misses_nothing() {
    let Some((_fs, mut j)) = ext4() else { return };
    j.run_and_compare("first run");
    // A writer whose kernel queue holds 64 events, stopped while 500
    // files are created: the queue overflows.
    j.stop();
    j.start(Some(64));
    j.run_and_compare("after the restart");
    j.signal(libc::SIGSTOP);
    for i in 0..500 {
        fs::write(j.fileset.join(format!("burst-{i}")), b"b").unwrap();
    }
    fs::remove_file(j.fileset.join("a/file-0-0")).unwrap();
    j.signal(libc::SIGCONT);
    assert_eq!(j.read_method(), "full", "an overflow must lead to a full walk");
    let log = j.run_and_compare("after the overflow");
    assert!(log.contains("overflowed"), "the run must say why it walked: {log}");
    // The journal goes on: the next run reads only the changes again.
    fs::write(j.fileset.join("after"), b"a").unwrap();
    assert_eq!(j.read_method(), "journal");
    j.run_and_compare("after the overflow's run");
}

#[test]
fn changes_made_while_the_journal_is_stopped_are_found_by_a_full_walk() {
    let Some((_fs, mut j)) = ext4() else { return };
    j.run_and_compare("first run");
    j.stop();
    // Unseen by any journal: a delete, a rename, an append, a create.
    fs::remove_file(j.fileset.join("d/file-3-1")).unwrap();
    fs::rename(j.fileset.join("a/b"), j.fileset.join("e/b-moved")).unwrap();
    fs::write(j.fileset.join("file-5-0"), b"rewritten, longer").unwrap();
    fs::write(j.fileset.join("e/unseen"), b"u").unwrap();
    j.start(None);
    // The writer came back: what happened while it was away is a gap.
    assert_eq!(j.read_method(), "full");
    let log = j.run_and_compare("writer restarted");
    assert!(log.contains("restarted"), "{log}");
    fs::remove_file(j.fileset.join("e/unseen")).unwrap();
    assert_eq!(j.read_method(), "journal");
    j.run_and_compare("journal again");
    // No writer at all: the run walks and says why, and so does the next
    // one, which has no position to start from.
    j.stop();
    fs::write(j.fileset.join("e/unseen-2"), b"u").unwrap();
    let log = j.run_and_compare("no writer");
    assert!(log.contains("the journal writer is not running"), "{log}");
    j.start(None);
    fs::remove_file(j.fileset.join("e/unseen-2")).unwrap();
    let log = j.run_and_compare("after a run without a writer");
    assert!(log.contains("no position"), "{log}");
    fs::write(j.fileset.join("e/seen"), b"s").unwrap();
    assert_eq!(j.read_method(), "journal");
    j.run_and_compare("journal once more");
}

#[test]
fn the_agent_keeps_the_journal_and_an_agent_stopped_while_files_change_is_a_gap() {
    if !common::require_root("the event journal") || !common::agent::broker_or_skip() {
        return;
    }
    let Some(fs) = LoopFs::ext4(256) else { return };
    let fileset = fs.path().join("fileset");
    fs::create_dir(&fileset).unwrap();
    seed_tree(&fileset);
    let j = Journaled::without_writer(fs.path(), fileset);
    let mut agent = common::agent::Agent::new(&format!(
        "journal = {}\njournal_state_dir = {}",
        j.fileset.display(),
        j.state.display()
    ));
    agent.spawn();
    agent.wait_log("journaling changes", Duration::from_secs(30));
    j.run_and_compare("first run");
    let mut rng = Rng(99);
    for n in 0..8 {
        change(&mut rng, &j.fileset, &j.outside, n);
    }
    assert_eq!(j.read_method(), "journal", "the agent's journal must be read");
    j.run_and_compare("with the agent's journal");
    // The agent stops (as for an upgrade), files change, it comes back.
    assert!(agent.stop().success());
    for n in 100..108 {
        change(&mut rng, &j.fileset, &j.outside, n);
    }
    agent.spawn();
    agent.wait_log_n("journaling changes", 2, Duration::from_secs(30));
    let log = j.run_and_compare("agent restarted");
    assert!(log.contains("restarted"), "{log}");
    change(&mut rng, &j.fileset, &j.outside, 200);
    assert_eq!(j.read_method(), "journal");
    j.run_and_compare("journal again");
}

/// `ferry snapdiff --provider none` of `fileset` with state in `state`
/// (the filesystem's `.rotate` when `None`): its stdout.
fn none_run(fileset: &Path, state: Option<&Path>) -> Vec<u8> {
    let mut c = Command::new(FERRY);
    c.args(["snapdiff", "--provider", "none"]);
    if let Some(s) = state {
        c.arg("--state-dir").arg(s);
    }
    let out = output(c.arg(fileset));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The last-snap files in state directory `dir`.
fn lastsnaps(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .as_bytes()
                .starts_with(b"ferry.lastsnap.")
        })
        .count()
}

#[test]
fn trees_of_one_name_and_root_inode_keep_their_own_run_state() {
    if !common::require_root("loop filesystems") {
        return;
    }
    // Two btrfs subvolumes called `data` (each one's root is inode 256),
    // state in the filesystem's own `.rotate`.
    let Some(btr) = LoopBtrfs::new(256) else { return };
    let mut trees = Vec::new();
    for side in ["a", "b"] {
        fs::create_dir(btr.path().join(side)).unwrap();
        let t = btr.subvolume(&format!("{side}/data"));
        fs::write(t.join(format!("only-in-{side}")), side).unwrap();
        trees.push(t);
    }
    // Two ext4 filesystems, each with a `fileset` of the same inode
    // number, state in one directory on neither.
    let (e1, e2) = (LoopFs::ext4(64).unwrap(), LoopFs::ext4(64).unwrap());
    let shared = tempfile::tempdir().unwrap();
    let mut ext = Vec::new();
    for (fs_, side) in [(&e1, "c"), (&e2, "d")] {
        let t = fs_.path().join("fileset");
        fs::create_dir(&t).unwrap();
        fs::write(t.join(format!("only-in-{side}")), side).unwrap();
        ext.push(t);
    }
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(&ext[0]).unwrap().ino(),
        fs::metadata(&ext[1]).unwrap().ino(),
        "the set-up needs one inode number"
    );
    let cases: [(&PathBuf, Option<&Path>); 4] = [
        (&trees[0], None),
        (&trees[1], None),
        (&ext[0], Some(shared.path())),
        (&ext[1], Some(shared.path())),
    ];
    for (t, state) in cases {
        let first = String::from_utf8_lossy(&none_run(t, state)).into_owned();
        assert!(first.contains("only-in-"), "{}: {first}", t.display());
    }
    // Unchanged, each is diffed against its own manifest: nothing to say
    // (against the other's, its file would be new and the other's gone).
    for (t, state) in cases {
        let again = none_run(t, state);
        assert!(
            again.is_empty(),
            "{} was diffed against another tree's state: {}",
            t.display(),
            String::from_utf8_lossy(&again)
        );
    }
    assert_eq!(lastsnaps(&btr.path().join(".rotate")), 2);
    assert_eq!(lastsnaps(shared.path()), 2);
}

#[test]
fn a_barrier_of_the_last_runs_number_but_not_its_token_leads_to_a_full_walk() {
    let Some((_fs, j)) = ext4() else { return };
    j.run_and_compare("first run");
    // The journal now holds, at the last run's number, a barrier that is
    // not the last run's (as a journal that started over could): its
    // token is overwritten in place, the same length, under the writer.
    let journal = fs::read_dir(&j.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().as_bytes();
            n.starts_with(b"journal.") && !n.ends_with(b".lock") && !n.ends_with(b".1")
        })
        .unwrap();
    let text = fs::read(&journal).unwrap();
    let at = text
        .split(|&b| b == b'\n')
        .rfind(|l| l.starts_with(b"B "))
        .map(|l| l.as_ptr() as usize - text.as_ptr() as usize)
        .expect("the first run's barrier");
    let line_end = at + text[at..].iter().position(|&b| b == b'\n').unwrap();
    let token_at = at + 2 + text[at + 2..].iter().position(|&b| b == b' ').unwrap() + 1;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&journal).unwrap();
        f.seek(SeekFrom::Start(token_at as u64)).unwrap();
        f.write_all(&vec![b'x'; line_end - token_at]).unwrap();
    }
    fs::write(j.fileset.join("after-the-barrier"), b"a").unwrap();
    assert_eq!(j.read_method(), "full", "a barrier of another token opened the window");
    let log = j.run_and_compare("a barrier not the last run's");
    assert!(log.contains("no longer holds the last run's position"), "{log}");
    fs::write(j.fileset.join("next"), b"n").unwrap();
    assert_eq!(j.read_method(), "journal");
    j.run_and_compare("journal again");
}
