//! `ferry snapdiff`, `ferry rotate` and `ferry manifest` end to end: the
//! real binary on loop-mounted btrfs subvolumes (or, for `--provider none`,
//! a temporary directory): first and unchanged runs, the fileset lock under
//! contention, stale locks, dry runs, held runs and rotation, rollback when
//! the output fails or the tree cannot be read, manifest inspection, and
//! names that are not UTF-8 or hold newlines.
//!
//! Nothing here waits for time to pass: contention is made certain by a
//! held lock, or by a winner blocked on a full stdout pipe.

mod common;

use common::btrfs::{self, ChangeLine, FERRY, LoopBtrfs, bytes, output, parse_changes, show};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

const LOCK_MESSAGE: &str =
    "SnapdiffLockError: Could not perform snapdiff as one is currently running for provided fileset";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "want exit status {code}, got {}\nstderr:\n{}",
        o.status,
        stderr(o)
    );
}

/// A btrfs subvolume `fs1` on its own loop-mounted image, with its state
/// directory next to it.
struct Sub {
    fs: LoopBtrfs,
    root: PathBuf,
    state: PathBuf,
    id: String,
}

fn subvolume() -> Option<Sub> {
    let fs = LoopBtrfs::new(320)?;
    let root = fs::canonicalize(fs.subvolume("fs1")).unwrap();
    let state = fs.path().join("state");
    let id = btrfs::subvolume_id(&root);
    Some(Sub { fs, root, state, id })
}

impl Sub {
    /// `ferry <sub> --provider btrfs --state-dir STATE ARGS... FILESET`.
    fn cmd(&self, sub: &str, args: &[&str]) -> Command {
        let mut c = Command::new(FERRY);
        c.arg(sub)
            .args(["--provider", "btrfs", "--state-dir"])
            .arg(&self.state)
            .args(args)
            .arg(&self.root);
        c
    }

    fn run(&self, sub: &str, args: &[&str]) -> Output {
        output(&mut self.cmd(sub, args))
    }

    /// A successful snapdiff's changes.
    #[track_caller]
    fn snapdiff(&self, args: &[&str]) -> (Vec<ChangeLine>, Vec<u8>) {
        let o = self.run("snapdiff", args);
        assert_code(&o, 0);
        (parse_changes(&o.stdout), o.stdout)
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn key(&self) -> String {
        format!("name.fs1.id.{}", self.id)
    }

    fn lastsnap_path(&self) -> PathBuf {
        self.state.join(format!("ferry.lastsnap.{}", self.key()))
    }

    fn lock_path(&self) -> PathBuf {
        self.state.join(format!("snapdiff.{}.lock", self.key()))
    }

    fn pending_path(&self) -> PathBuf {
        self.state.join(format!("ferry.pending.{}", self.key()))
    }

    fn manifest_path(&self, snap: &str) -> PathBuf {
        self.state.join(format!("ferry.manifest.{}.{snap}", self.key()))
    }

    fn delta_path(&self, snap: &str) -> PathBuf {
        self.state.join(format!("ferry.delta.{}.{snap}", self.key()))
    }

    fn set_path(&self, snap: &str) -> PathBuf {
        self.state.join(format!("ferry.manifest-set.{}.{snap}", self.key()))
    }

    /// The last synced snapshot, from the last-snap file.
    fn lastsnap(&self) -> Option<String> {
        let text = fs::read_to_string(self.lastsnap_path()).ok()?;
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "last-snap file {text:?}"
        );
        Some(text.trim_end().to_string())
    }

    fn snapshots(&self) -> BTreeSet<String> {
        names(&self.root.join(".snapshots"))
    }

    /// Every file in the state directory, with its content.
    fn state_files(&self) -> BTreeMap<String, Vec<u8>> {
        names(&self.state)
            .into_iter()
            .map(|n| {
                let data = fs::read(self.state.join(&n)).unwrap();
                (n, data)
            })
            .collect()
    }

    /// Everything `find` lists in the fileset except `.snapshots`.
    fn find(&self) -> BTreeSet<Vec<u8>> {
        find_paths(&self.root)
    }

    /// The files `snap`'s manifest is made of: its base, or its set file
    /// and the base and deltas the set names.
    fn manifest_files(&self, snap: &str) -> BTreeSet<String> {
        match fs::read(self.set_path(snap)) {
            Ok(b) => {
                let set: serde_json::Value = serde_json::from_slice(&b).unwrap();
                let mut files = BTreeSet::from([file_name(&self.set_path(snap))]);
                files.insert(set["base"]["file"].as_str().unwrap().to_string());
                for d in set["deltas"].as_array().unwrap() {
                    files.insert(d["file"].as_str().unwrap().to_string());
                }
                files
            }
            Err(_) => BTreeSet::from([file_name(&self.manifest_path(snap))]),
        }
    }

    /// After a successful rotation to `snap`: it is the only snapshot, the
    /// last-snap file names it, and the state holds exactly its manifest's
    /// files and the last-snap file (no lock, no pending run, no temporary
    /// file).
    #[track_caller]
    fn assert_rotated_to(&self, snap: &str) {
        assert_eq!(self.lastsnap().as_deref(), Some(snap));
        assert_eq!(self.snapshots(), BTreeSet::from([snap.to_string()]));
        let mut want = self.manifest_files(snap);
        want.insert(file_name(&self.lastsnap_path()));
        assert_eq!(self.state_files().into_keys().collect::<BTreeSet<_>>(), want);
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

fn names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().expect("UTF-8 name"))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn find_paths(root: &Path) -> BTreeSet<Vec<u8>> {
    let snapshots = root.join(".snapshots");
    let o = output(
        Command::new("find")
            .arg(root)
            .arg("-path")
            .arg(&snapshots)
            .args(["-prune", "-o", "-print0"]),
    );
    assert_code(&o, 0);
    nul_paths(&o.stdout)
}

/// The paths of NUL-separated output (`find -print0`, `ferry -0`).
fn nul_paths(out: &[u8]) -> BTreeSet<Vec<u8>> {
    out.split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

fn mkdir(p: &Path) {
    fs::create_dir(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// A small tree with a bit of everything.
fn populate(root: &Path) {
    mkdir(&root.join("d"));
    mkdir(&root.join("d/e"));
    mkdir(&root.join("d/e/f"));
    write(&root.join("d/e/f/deep"), b"deep");
    write(&root.join("d/file"), b"0123456789");
    write(&root.join("empty"), b"");
    write(&root.join("nl\nname"), b"newline");
    write(&root.join(OsStr::from_bytes(b"bad\xffutf8")), b"not utf-8");
    fs::hard_link(root.join("d/file"), root.join("d/e/link")).unwrap();
    symlink("d/file", root.join("sym")).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// `n` files in a new directory `dir`: enough output to fill a pipe.
fn many_files(dir: &Path, n: usize) {
    mkdir(dir);
    for i in 0..n {
        write(&dir.join(format!("file-with-a-rather-long-name-{i:05}")), b"x");
    }
}

fn states(c: &[ChangeLine]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for x in c {
        *m.entry(x.state.clone()).or_default() += 1;
    }
    m
}

fn set_mtime(p: &Path, t: SystemTime) {
    File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// Writes a lock file as ferry does (JSON holder and a newline).
fn write_lock(path: &Path, pid: u32, host: &str, run: &str) {
    let info = serde_json::json!({"pid": pid, "host": host, "run": run, "started": "2020-01-01T00:00:00Z"});
    let mut text = serde_json::to_vec(&info).unwrap();
    text.push(b'\n');
    write(path, &text);
}

// ---------------------------------------------------------------------------

#[test]
fn first_run_reports_everything_and_an_unchanged_tree_nothing() {
    let Some(s) = subvolume() else { return };
    populate(&s.root);
    let want = s.find();

    let (first, _) = s.snapdiff(&["--extra-fields", "inode"]);
    assert!(first.iter().all(|c| c.state == "created"), "{first:#?}");
    assert_eq!(first.len(), want.len(), "one line per path");
    let got: BTreeSet<Vec<u8>> = first.iter().map(|c| c.path.clone()).collect();
    assert_eq!(got, want);
    // Every reported attribute is the one on disk (nothing changed since).
    for c in &first {
        let m = fs::symlink_metadata(OsStr::from_bytes(&c.path)).unwrap();
        let p = show(&c.path);
        assert_eq!(c.mode, m.mode(), "{p}");
        assert_eq!((c.uid, c.gid), (m.uid(), m.gid()), "{p}");
        assert_eq!(c.size, m.size(), "{p}");
        assert_eq!(c.nlink, m.nlink(), "{p}");
        assert_eq!(c.mtime, (m.mtime(), m.mtime_nsec() as u32), "{p}");
        assert_eq!(c.inode, Some(m.ino()), "{p}");
    }

    // The state: a last-snap file naming the one snapshot, its manifest.
    let snap1 = s.lastsnap().expect("a last-snap file after the first run");
    let stamp = snap1.strip_prefix("ferry.snapdiff.").expect("snapshot prefix");
    let b = stamp.as_bytes();
    assert!(
        b.len() == 23
            && b[8] == b'T'
            && b[15] == b'.'
            && b[22] == b'Z'
            && b.iter()
                .enumerate()
                .all(|(i, c)| [8, 15, 22].contains(&i) || c.is_ascii_digit()),
        "snapshot name {snap1}"
    );
    s.assert_rotated_to(&snap1);

    // The first run made `.snapshots` before taking its snapshot, so the
    // root's new mtime is already in that snapshot; the second snapshot
    // changes only `.snapshots`, which is not part of the fileset. Nothing
    // changed, so nothing at all is reported, not even the root.
    let (second, raw) = s.snapdiff(&[]);
    assert!(raw.is_empty(), "an unchanged tree reports nothing: {second:#?}");
    let snap2 = s.lastsnap().unwrap();
    assert_ne!(snap2, snap1);
    s.assert_rotated_to(&snap2);

    // The summary says the same in numbers: a full read compares every
    // entry, a read of changes none.
    let n = want.len() as u64;
    let full = summary_of(&s.run("snapdiff", &["--summary", "--dry-run", "--full"]));
    assert_eq!(full["read"], "full", "{full}");
    assert_eq!(full["summary"]["unchanged"], n, "{full}");
    assert_eq!(full["summary"]["records"], 2 * n, "{full}");
    let o = s.run("snapdiff", &["--summary"]);
    let v = summary_of(&o);
    assert_eq!(v["read"], "changes", "{v}");
    assert_eq!(v["manifest_bytes"], 0, "a run that found nothing writes no delta: {v}");
    assert_eq!(v["first_run"], false, "{v}");
    assert_eq!(v["outcome"], "rotated", "{v}");
    assert_eq!(v["old_snapshot"], snap2.as_str(), "{v}");
    assert_eq!(v["entries"], n, "{v}");
    let sum = &v["summary"];
    for k in [
        "created",
        "updated",
        "metadata_only",
        "moved",
        "deleted",
        "skipped_old_ctime",
    ] {
        assert_eq!(sum[k], 0, "{k} in {v}");
    }
    assert_eq!(sum["unchanged"], 0, "{v}");
    assert_eq!(sum["records"], 0, "{v}");
    s.assert_rotated_to(v["new_snapshot"].as_str().unwrap());
}

#[test]
fn a_held_lock_refuses_a_second_run_with_exit_3() {
    let Some(s) = subvolume() else { return };
    populate(&s.root);
    s.snapdiff(&[]);
    let snap1 = s.lastsnap().unwrap();
    write(&s.p("new"), b"new");

    // --hold keeps the lock (pid 0: only the threshold expires it).
    let (held, _) = s.snapdiff(&["--hold"]);
    assert_eq!(states(&held)["created"], 1);
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(s.lock_path()).unwrap()).unwrap();
    assert_eq!(lock["pid"], 0, "{lock}");
    assert_eq!(lock["host"], hostname().as_str(), "{lock}");
    let snaps = s.snapshots();
    assert_eq!(snaps.len(), 2);

    for args in [&[][..], &["--lock-threshold", "3600"], &["--dry-run"]] {
        let o = s.run("snapdiff", args);
        assert_code(&o, 3);
        assert!(stderr(&o).contains(LOCK_MESSAGE), "{}", stderr(&o));
        assert!(o.stdout.is_empty(), "a refused run writes no changes");
    }
    // The refused runs took no snapshot and left the held run alone.
    assert_eq!(s.snapshots(), snaps);
    assert_eq!(s.lastsnap().as_deref(), Some(snap1.as_str()));
    assert!(s.lock_path().exists() && s.pending_path().exists());

    let o = s.run("rotate", &[]);
    assert_code(&o, 0);
    let snap2 = s.lastsnap().unwrap();
    assert_ne!(snap2, snap1);
    s.assert_rotated_to(&snap2);
    let (after, _) = s.snapdiff(&[]);
    assert!(after.is_empty(), "{after:#?}");
}

#[test]
fn of_four_racing_runs_exactly_one_proceeds() {
    let Some(s) = subvolume() else { return };
    // Enough output that the winner blocks on its full stdout pipe (64 KiB)
    // until this test reads it: it holds the lock while the others try.
    many_files(&s.p("many"), 1500);
    let mut children: Vec<_> = (0..4)
        .map(|_| {
            let mut c = s.cmd("snapdiff", &[]);
            c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            let mut err = child.stderr.take().unwrap();
            let errs = std::thread::spawn(move || {
                let mut v = String::new();
                err.read_to_string(&mut v).map(|_| v)
            });
            (child, Some(errs))
        })
        .collect();

    // Three must give up while the fourth is stuck writing.
    let deadline = std::time::Instant::now() + btrfs::DEADLINE;
    let mut done: BTreeMap<usize, std::process::ExitStatus> = BTreeMap::new();
    while done.len() < 3 {
        for (i, (c, _)) in children.iter_mut().enumerate() {
            if let std::collections::btree_map::Entry::Vacant(e) = done.entry(i)
                && let Some(st) = c.try_wait().unwrap()
            {
                e.insert(st);
            }
        }
        assert!(std::time::Instant::now() < deadline, "runs did not finish: {done:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let winner = (0..4).find(|i| !done.contains_key(i)).unwrap();
    assert!(done.values().all(|st| st.code() == Some(3)), "exit statuses {done:?}");
    for (i, (_, errs)) in children.iter_mut().enumerate() {
        if i != winner {
            let text = errs.take().unwrap().join().unwrap().unwrap();
            assert!(text.contains(LOCK_MESSAGE), "{text}");
        }
    }
    assert!(
        children[winner].0.try_wait().unwrap().is_none(),
        "the winner ended early"
    );

    let (child, errs) = &mut children[winner];
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let st = common::wait_with_deadline(child, btrfs::DEADLINE, "the winning snapdiff");
    let text = errs.take().unwrap().join().unwrap().unwrap();
    assert_eq!(st.code(), Some(0), "{text}");
    assert!(out.len() > 128 << 10, "output too small to block: {} bytes", out.len());
    assert_eq!(parse_changes(&out).len(), s.find().len());
    s.assert_rotated_to(&s.lastsnap().unwrap());
}

#[test]
fn stale_locks_are_taken_over_and_live_ones_are_not() {
    let Some(s) = subvolume() else { return };
    populate(&s.root);
    fs::create_dir_all(&s.state).unwrap();
    let lock = s.lock_path();
    let me = std::process::id();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);

    // Held by a live process on this host, but two hours old: with the
    // default threshold (a day) it holds, with 60 s it is stale.
    write_lock(&lock, me, &hostname(), "old-run");
    set_mtime(&lock, two_hours_ago);
    let o = s.run("snapdiff", &[]);
    assert_code(&o, 3);
    assert!(
        stderr(&o).contains(LOCK_MESSAGE) && stderr(&o).contains("old-run"),
        "{}",
        stderr(&o)
    );
    assert!(s.lastsnap().is_none() && s.snapshots().is_empty());
    let (c, _) = s.snapdiff(&["--lock-threshold", "60"]);
    assert_eq!(c.len(), s.find().len());
    assert!(!lock.exists(), "the run released the lock it took over");
    let snap1 = s.lastsnap().unwrap();

    // A fresh lock of a live process holds whatever the threshold.
    write_lock(&lock, me, &hostname(), "fresh-run");
    let before = fs::read(&lock).unwrap();
    for args in [&[][..], &["--lock-threshold", "60"]] {
        let o = s.run("snapdiff", args);
        assert_code(&o, 3);
        assert!(
            stderr(&o).contains(LOCK_MESSAGE) && stderr(&o).contains("fresh-run"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(fs::read(&lock).unwrap(), before, "a refused run leaves the lock alone");
    assert_eq!(s.lastsnap().as_deref(), Some(snap1.as_str()));

    // A fresh lock of a process that is gone: on another host nobody can
    // tell, so it holds; on this host it is stale at once.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    write_lock(&lock, dead, "some-other-host", "elsewhere-run");
    assert_code(&s.run("snapdiff", &[]), 3);
    write_lock(&lock, dead, &hostname(), "crashed-run");
    s.snapdiff(&[]);
    assert!(!lock.exists());
    s.assert_rotated_to(&s.lastsnap().unwrap());
}

/// A baseline run, then one of each kind of change.
fn baseline_and_changes(s: &Sub) -> String {
    populate(&s.root);
    s.snapdiff(&[]);
    write(&s.p("created"), b"created");
    write(&s.p("d/file"), b"0123456789 and more");
    fs::rename(s.p("d/e"), s.p("moved")).unwrap();
    fs::remove_file(s.p("empty")).unwrap();
    s.lastsnap().unwrap()
}

#[test]
fn a_dry_run_leaves_no_trace_and_the_next_run_reports_the_same() {
    let Some(s) = subvolume() else { return };
    let snap1 = baseline_and_changes(&s);
    let before = s.state_files();

    let (dry, raw) = s.snapdiff(&["--dry-run"]);
    let got = states(&dry);
    for st in ["created", "updated", "moved", "deleted"] {
        assert!(got.contains_key(st), "no {st} change: {dry:#?}");
    }
    assert_eq!(s.state_files(), before, "the state directory is unchanged");
    assert_eq!(s.snapshots(), BTreeSet::from([snap1.clone()]));

    let (_, real) = s.snapdiff(&[]);
    assert_eq!(show(&real), show(&raw), "the real run reports what the dry run did");
    assert_ne!(s.lastsnap().unwrap(), snap1);
}

#[test]
fn a_memory_budget_that_cannot_hold_the_run_is_refused_before_any_snapshot() {
    let Some(s) = subvolume() else { return };
    let snap1 = baseline_and_changes(&s);
    let before = s.state_files();

    // 18 MiB for the program and 3 MiB per thread: 66 MiB; with the
    // directory tables (a few KiB here), the least sort and the merge's
    // buffers (12 MiB), 79M is the least that holds it.
    let o = s.run("snapdiff", &["-j", "16", "--mem-limit", "64M"]);
    assert_code(&o, 2);
    let e = stderr(&o);
    assert!(
        e.contains("the program and its 16 threads take 66 MiB") && e.contains("give --mem-limit 79M or more"),
        "{e}"
    );
    assert_eq!(s.state_files(), before, "no lock or manifest left behind");
    assert_eq!(s.snapshots(), BTreeSet::from([snap1.clone()]), "no snapshot taken");

    let o = s.run("snapdiff", &["-j", "16", "--mem-limit", "79M", "--dry-run"]);
    assert_code(&o, 0);
    let o = s.run("snapdiff", &["--mem-limit", "35M"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("at least 37748736 bytes (36M)"), "{}", stderr(&o));
}

#[test]
fn held_runs_rotate_or_roll_back_on_rotate() {
    let Some(s) = subvolume() else { return };
    let snap0 = baseline_and_changes(&s);

    // Success: rotate.
    let (held, _) = s.snapdiff(&["--hold"]);
    assert!(!held.is_empty());
    assert_eq!(s.lastsnap().as_deref(), Some(snap0.as_str()), "held: not rotated yet");
    let snaps = s.snapshots();
    assert!(snaps.contains(&snap0) && snaps.len() == 2);
    let snap1 = snaps.iter().find(|n| **n != snap0).unwrap().clone();
    assert!(s.pending_path().exists() && s.lock_path().exists());
    let o = s.run("rotate", &[]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "rotated", "{v}");
    assert_eq!(v["old_snapshot"], snap0.as_str(), "{v}");
    assert_eq!(v["new_snapshot"], snap1.as_str(), "{v}");
    s.assert_rotated_to(&snap1);
    assert!(s.snapdiff(&[]).1.is_empty(), "rotated: nothing left to report");
    let snap1 = s.lastsnap().unwrap();

    // Failed sync: still rotates by default.
    write(&s.p("second"), b"2");
    s.snapdiff(&["--hold"]);
    let o = s.run("rotate", &["--failed"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "rotated", "{v}");
    let snap2 = s.lastsnap().unwrap();
    assert_ne!(snap2, snap1);
    s.assert_rotated_to(&snap2);

    // Failed sync without rotate-on-error: rolls back.
    write(&s.p("third"), b"3");
    fs::rename(s.p("second"), s.p("d/second")).unwrap();
    let (_, held_raw) = s.snapdiff(&["--hold"]);
    let o = s.run("rotate", &["--failed", "--no-rotate-on-error"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "rolled_back", "{v}");
    s.assert_rotated_to(&snap2);
    let (again, raw) = s.snapdiff(&[]);
    assert_eq!(show(&raw), show(&held_raw), "rolled back: the same changes again");
    assert_eq!(states(&again)["moved"], 1);

    // Nothing held any more.
    let o = s.run("rotate", &[]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("no held run"), "{}", stderr(&o));
}

/// `ferry snapdiff ... | head -c 10`: reads 10 bytes, closes the pipe.
fn snapdiff_into_closed_pipe(s: &Sub) -> Output {
    let mut c = s.cmd("snapdiff", &[]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut first = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let mut err = child.stderr.take().unwrap();
    let st = common::wait_with_deadline(&mut child, btrfs::DEADLINE, "snapdiff into a closed pipe");
    let mut text = Vec::new();
    err.read_to_end(&mut text).unwrap();
    assert_eq!(&first, b"{\"path\":\"/");
    Output {
        status: st,
        stdout: Vec::new(),
        stderr: text,
    }
}

#[test]
fn an_output_failure_rolls_back() {
    let Some(s) = subvolume() else { return };
    // A first run whose reader goes away: no state at all is left.
    many_files(&s.p("many"), 1500);
    let o = snapdiff_into_closed_pipe(&s);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("writing changes failed"), "{}", stderr(&o));
    assert!(s.snapshots().is_empty(), "{:?}", s.snapshots());
    assert!(s.state_files().is_empty(), "{:?}", s.state_files().keys());
    let (all, _) = s.snapdiff(&[]);
    assert_eq!(all.len(), s.find().len());
    let snap1 = s.lastsnap().unwrap();
    let before = s.state_files();

    // A later run: the baseline stays.
    many_files(&s.p("more"), 1500);
    let o = snapdiff_into_closed_pipe(&s);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("writing changes failed"), "{}", stderr(&o));
    assert_eq!(s.state_files(), before);
    assert_eq!(s.snapshots(), BTreeSet::from([snap1]));
    let (c, _) = s.snapdiff(&[]);
    let created: BTreeSet<Vec<u8>> = c
        .iter()
        .filter(|c| c.state == "created")
        .map(|c| c.path.clone())
        .collect();
    let want: BTreeSet<Vec<u8>> = find_paths(&s.p("more"));
    assert_eq!(created, want);
    assert_eq!(c.len(), want.len() + 1, "and the root's update");
    assert!(c.iter().any(|c| c.state == "updated" && c.path == bytes(&s.root)));
}

#[test]
fn manifest_prints_counts_records_and_detects_damage() {
    let Some(s) = subvolume() else { return };
    populate(&s.root);
    s.snapdiff(&[]);
    let snap = s.lastsnap().unwrap();
    let manifest = s.manifest_path(&snap);
    let want = s.find();
    let meta: BTreeMap<Vec<u8>, fs::Metadata> = want
        .iter()
        .map(|p| (p.clone(), fs::symlink_metadata(OsStr::from_bytes(p)).unwrap()))
        .collect();

    let o = output(Command::new(FERRY).arg("manifest").arg(&manifest));
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dirs = meta.values().filter(|m| m.is_dir()).count() as u64;
    let bytes_total: u64 = meta.values().filter(|m| !m.is_dir()).map(|m| m.size()).sum();
    assert_eq!(v["format"], "ferry-manifest", "{v}");
    assert_eq!(v["root"], s.root.to_str().unwrap(), "{v}");
    assert_eq!(v["root_ino"], 256, "{v}");
    assert_eq!(v["provider"], "btrfs", "{v}");
    assert_eq!(v["snapshot"], snap.as_str(), "{v}");
    assert_eq!(v["entries"], want.len() as u64, "{v}");
    assert_eq!(v["directories"], dirs, "{v}");
    assert_eq!(v["non_directories"], want.len() as u64 - dirs, "{v}");
    assert_eq!(v["bytes"], bytes_total, "{v}");

    assert_records_match_disk(&manifest, &meta);

    let verify = |p: &Path| output(Command::new(FERRY).args(["manifest", "--verify"]).arg(p));
    let o = verify(&manifest);
    assert_code(&o, 0);
    assert!(o.stdout.is_empty());
    let good = fs::read(&manifest).unwrap();
    let n = good.len();
    let copy = s.state.join("damaged");
    // Every 7th byte, and the last one (each flip must be found).
    for at in (0..n).step_by(7).chain([n - 1]) {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        write(&copy, &bad);
        let o = verify(&copy);
        assert_code(&o, 1);
        assert!(
            stderr(&o).contains(copy.to_str().unwrap()),
            "byte {at} of {n} flipped: {}",
            stderr(&o)
        );
    }
    for len in [0, 8, 40, n / 2, n - 16, n - 1] {
        write(&copy, &good[..len]);
        let o = verify(&copy);
        assert_code(&o, 1);
        assert!(
            stderr(&o).contains(copy.to_str().unwrap()),
            "cut to {len} of {n}: {}",
            stderr(&o)
        );
    }
    // Anything after the end block is damage too.
    write(&copy, &[&good[..], b"more"].concat());
    assert_code(&verify(&copy), 1);
}

/// `ferry manifest --records FILE` lists exactly the paths of `meta`, each
/// with its inode, size, mode, link count and mtime on disk.
#[track_caller]
fn assert_records_match_disk(manifest: &Path, meta: &BTreeMap<Vec<u8>, fs::Metadata>) {
    let o = output(Command::new(FERRY).args(["manifest", "--records"]).arg(manifest));
    assert_code(&o, 0);
    let mut seen = BTreeSet::new();
    for line in std::str::from_utf8(&o.stdout).unwrap().lines() {
        let m: BTreeMap<String, String> = btrfs::json_members(line).into_iter().collect();
        let path = btrfs::json_path(&m["path"]);
        let st = meta
            .get(&path)
            .unwrap_or_else(|| panic!("record of a path not on disk: {}", show(&path)));
        let num = |k: &str| m[k].parse::<u64>().unwrap();
        assert_eq!(num("inode"), st.ino(), "{line}");
        assert_eq!(num("size"), st.size(), "{line}");
        assert_eq!(num("mode"), u64::from(st.mode()), "{line}");
        assert_eq!(num("nlink"), st.nlink(), "{line}");
        assert_eq!(
            btrfs::parse_time(&m["mtime"]),
            (st.mtime(), st.mtime_nsec() as u32),
            "{line}"
        );
        assert!(seen.insert(path), "two records of one path: {line}");
    }
    assert_eq!(seen.len(), meta.len());
}

/// Every path of the live fileset with its metadata.
fn disk(s: &Sub) -> BTreeMap<Vec<u8>, fs::Metadata> {
    s.find()
        .into_iter()
        .map(|p| {
            let m = fs::symlink_metadata(OsStr::from_bytes(&p)).unwrap();
            (p, m)
        })
        .collect()
}

/// The report of a `--summary` run.
fn summary_of(o: &Output) -> serde_json::Value {
    assert_code(o, 0);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// With a baseline, a run writes only a delta (bytes in proportion to the
/// change) and a set file naming the base and every delta since; the set
/// reads as the whole tree; a change bigger than a quarter of the base
/// folds the chain into a new base, and so does `ferry manifest --compact`.
#[test]
fn runs_write_deltas_and_compaction_folds_them_into_a_base() {
    let Some(s) = subvolume() else { return };
    many_files(&s.p("many"), 3000);
    s.snapdiff(&[]);
    let snap1 = s.lastsnap().unwrap();
    let base = fs::metadata(s.manifest_path(&snap1)).unwrap().len();
    let mut deltas = Vec::new();
    for i in 0..4 {
        write(&s.p(&format!("many/file-with-a-rather-long-name-{i:05}")), b"changed");
        let r = summary_of(&s.run("snapdiff", &["--summary"]));
        assert_eq!(r["summary"]["updated"], 1, "{r}");
        assert_eq!(r["entries"], 3002, "{r}");
        assert!(r["compaction"].is_null(), "{r}");
        let written = r["manifest_bytes"].as_u64().unwrap();
        assert!(
            written > 0 && written < base / 20,
            "a delta of {written} bytes against a base of {base}"
        );
        let snap = s.lastsnap().unwrap();
        deltas.push(file_name(&s.delta_path(&snap)));
        let mut want = BTreeSet::from([
            file_name(&s.lastsnap_path()),
            file_name(&s.manifest_path(&snap1)),
            file_name(&s.set_path(&snap)),
        ]);
        want.extend(deltas.iter().cloned());
        assert_eq!(s.state_files().into_keys().collect::<BTreeSet<_>>(), want);
        assert_records_match_disk(&s.set_path(&snap), &disk(&s));
        let v = summary_of(&output(Command::new(FERRY).arg("manifest").arg(s.set_path(&snap))));
        assert_eq!(
            (v["files"].as_u64(), v["entries"].as_u64()),
            (Some(2 + i), Some(3002)),
            "{v}"
        );
        assert_code(
            &output(
                Command::new(FERRY)
                    .args(["manifest", "--verify"])
                    .arg(s.set_path(&snap)),
            ),
            0,
        );
    }
    // A delta on its own: its records and tombstones.
    let v = summary_of(&output(
        Command::new(FERRY).arg("manifest").arg(s.state.join(&deltas[0])),
    ));
    assert_eq!(
        (v["kind"].as_str(), v["entries"].as_u64()),
        (Some("delta"), Some(1)),
        "{v}"
    );

    // Deleting a third of the files: the delta outgrows a quarter of the
    // base, and the run compacts after it rotates.
    for i in 0..1000 {
        fs::remove_file(s.p(&format!("many/file-with-a-rather-long-name-{i:05}"))).unwrap();
    }
    let r = summary_of(&s.run("snapdiff", &["--summary"]));
    assert_eq!(r["summary"]["deleted"], 1000, "{r}");
    assert_eq!(r["compaction"]["files"], 6, "{r}");
    assert_eq!(r["compaction"]["entries"], 2002, "{r}");
    let snap = s.lastsnap().unwrap();
    s.assert_rotated_to(&snap);
    assert_records_match_disk(&s.manifest_path(&snap), &disk(&s));

    // Two small runs, then a compaction asked for.
    for i in 1000..1002 {
        write(&s.p(&format!("many/file-with-a-rather-long-name-{i:05}")), b"again");
        summary_of(&s.run("snapdiff", &["--summary"]));
    }
    let snap = s.lastsnap().unwrap();
    assert!(s.set_path(&snap).exists());
    let v = summary_of(&output(
        Command::new(FERRY)
            .args(["manifest", "--compact"])
            .arg(s.set_path(&snap)),
    ));
    assert_eq!(
        (v["compacted"].as_bool(), v["files"].as_u64()),
        (Some(true), Some(3)),
        "{v}"
    );
    s.assert_rotated_to(&snap);
    assert_records_match_disk(&s.manifest_path(&snap), &disk(&s));
    let v = summary_of(&output(
        Command::new(FERRY)
            .args(["manifest", "--compact"])
            .arg(s.manifest_path(&snap)),
    ));
    assert_eq!(v["compacted"], false, "{v}");
    let (c, _) = s.snapdiff(&[]);
    assert!(c.is_empty(), "{c:?}");
}

/// A run or a compaction killed at each step of writing and committing its
/// manifest loses nothing: before the last-snap file names the new
/// snapshot, the next run reports the same change again; after it, the
/// committed manifest (base and deltas) is whole and the next run reports
/// nothing.
#[test]
fn a_kill_at_any_step_of_a_commit_or_a_compaction_loses_nothing() {
    let Some(s) = subvolume() else { return };
    many_files(&s.p("many"), 2000);
    s.snapdiff(&[]);
    type Point = (&'static str, &'static str, bool, fn(&Sub, &[u8]) -> bool);
    let points: [Point; 5] = [
        ("rename", "the delta into place", false, |_, n| {
            n.starts_with(b"ferry.delta.")
        }),
        ("rename", "the set file into place", false, |_, n| {
            n.starts_with(b"ferry.manifest-set.")
        }),
        ("rename", "the last-snap file (the commit)", false, |_, n| {
            n.starts_with(b"ferry.lastsnap.")
        }),
        ("rename", "the compacted base into place", true, |_, n| {
            n.starts_with(b"ferry.manifest.name.")
        }),
        ("unlink", "the set file (the compaction's commit)", true, |s, n| {
            // The new snapshot's own set, once the compacted base is there.
            s.lastsnap()
                .is_some_and(|l| n == file_name(&s.set_path(&l)).as_bytes() && s.manifest_path(&l).exists())
        }),
    ];
    for (round, (call, what, compacting, at)) in points.into_iter().enumerate() {
        // A change big enough to compact, or one file.
        let n = if compacting { 800 } else { 1 };
        for i in 0..n {
            write(
                &s.p(&format!("many/file-with-a-rather-long-name-{i:05}")),
                format!("round {round}").as_bytes(),
            );
        }
        let before = s.lastsnap().unwrap();
        let (mut child, path) = stop_at(s.cmd("snapdiff", &["--summary"]), |c, p| {
            c == call
                && Path::new(OsStr::from_bytes(p))
                    .file_name()
                    .is_some_and(|f| at(&s, f.as_bytes()))
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let committed = s.lastsnap().unwrap() != before;
        assert_eq!(committed, compacting, "killed at the {what} ({})", show(&path));
        let o = s.run("snapdiff", &["--summary"]);
        let r = summary_of(&o);
        assert!(
            !stderr(&o).contains("rebuilding"),
            "the committed manifest was lost by a kill at the {what}: {}",
            stderr(&o)
        );
        let want = if committed { 0 } else { n as u64 };
        assert_eq!(r["summary"]["updated"], want, "after a kill at the {what}: {r}");
        let snap = s.lastsnap().unwrap();
        let m = if s.set_path(&snap).exists() {
            s.set_path(&snap)
        } else {
            s.manifest_path(&snap)
        };
        assert_code(&output(Command::new(FERRY).args(["manifest", "--verify"]).arg(&m)), 0);
        assert_records_match_disk(&m, &disk(&s));
        assert!(!s.lock_path().exists(), "after a kill at the {what}");
        assert!(
            s.state_files().keys().all(|f| !f.contains(".tmp")),
            "a temporary file outlived the next run: {:?}",
            s.state_files().keys()
        );
    }
}

/// The hardest cases for a read of changes, each checked against a full
/// read of the same snapshot: the last link of a multiply-linked file
/// deleted, one of its links deleted, a directory deleted after some of
/// its children moved out (and a deep tree deleted whole), a swap, and a
/// directory moved with a file deleted inside it.
/// A migrate stamps a file's location and state in ferry's own xattrs
/// after the snapshot its run sent it from, which moves the file's ctime:
/// the next run counts it unchanged, on the read of changes as on the full
/// read, while a user's xattr, a chmod or a write beside it are reported.
/// With --every-ctime the stamped files are updates again; with another
/// --xattr-prefix, that prefix is ferry's.
#[test]
fn a_ctime_moved_by_ferrys_own_xattrs_alone_is_no_change_and_a_users_xattr_is() {
    let Some(s) = subvolume() else { return };
    many_files(&s.p("bulk"), 50);
    for f in ["user-xattr", "chmod", "write", "site-xattr"] {
        write(&s.p(f), b"x");
    }
    mkdir(&s.p("made"));
    s.snapdiff(&[]);

    let stamped: Vec<PathBuf> = (0..10)
        .map(|i| s.p(&format!("bulk/file-with-a-rather-long-name-{i:05}")))
        .chain([s.p("made")])
        .collect();
    for p in &stamped {
        xattr::set(p, "user.ferry.loc.archive", b"some/key").unwrap();
        xattr::set(p, "user.ferry.state", b"migrated").unwrap();
    }
    xattr::set(s.p("user-xattr"), "user.project", b"climate").unwrap();
    xattr::set(s.p("site-xattr"), "user.site.mark", b"1").unwrap();
    fs::set_permissions(s.p("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&s.p("write"), b"xy");

    let updated = |args: &[&str]| {
        let mut all = vec!["--dry-run"];
        all.extend_from_slice(args);
        let (changes, _) = s.snapdiff(&all);
        assert!(changes.iter().all(|c| c.state == "updated"), "{changes:?}");
        changes.into_iter().map(|c| c.path).collect::<BTreeSet<_>>()
    };
    let users: BTreeSet<Vec<u8>> = ["user-xattr", "chmod", "write", "site-xattr"]
        .iter()
        .map(|p| bytes(&s.p(p)))
        .collect();
    let r = summary_of(&s.run("snapdiff", &["--dry-run", "--summary"]));
    assert_eq!(r["read"], "changes", "{r}");
    assert_eq!(
        (&r["summary"]["own_xattrs_only"], &r["summary"]["updated"]),
        (&serde_json::json!(11), &serde_json::json!(4)),
        "{r}"
    );
    assert_eq!(updated(&[]), users, "the read of changes");
    assert_eq!(updated(&["--full"]), users, "the full read");
    let every: BTreeSet<Vec<u8>> = users.iter().cloned().chain(stamped.iter().map(|p| bytes(p))).collect();
    assert_eq!(updated(&["--every-ctime"]), every);
    let mut site = every.clone();
    site.remove(&bytes(&s.p("site-xattr")));
    assert_eq!(
        updated(&["--xattr-prefix", "user.site."]),
        site,
        "with another prefix, user.ferry. is a user's and user.site. is ferry's"
    );
    // Committed, the stamps are in the manifest: the next run sees nothing.
    s.snapdiff(&[]);
    assert_eq!(updated(&[]), BTreeSet::new());
}

/// The check of ctime-only changes reads xattrs from the two snapshots'
/// btrfs trees by inode number, and answers as the read by path does:
/// ferry's stamps ignored, a user's value, a new name and a removed name
/// seen, long values and many names per file read whole.
#[test]
fn the_own_xattrs_check_reads_btrfs_trees_by_inode_and_agrees_with_paths() {
    use ferry::snapdiff::diff::OwnChanges;
    use ferry::snapdiff::own_xattrs::OwnXattrs;
    let Some(s) = subvolume() else { return };
    let names = ["stamped", "value", "added", "removed", "many"];
    for f in names {
        write(&s.p(f), b"x");
        xattr::set(s.p(f), "user.keep", &[7u8; 3000]).unwrap();
    }
    for i in 0..40 {
        xattr::set(s.p("many"), format!("user.n{i:02}"), format!("v{i}").as_bytes()).unwrap();
    }
    xattr::set(s.p("removed"), "user.gone", b"1").unwrap();
    let snaps = s.fs.path().join("snaps");
    fs::create_dir_all(&snaps).unwrap();
    let snap = |name: &str| {
        let to = snaps.join(name);
        let o = output(
            Command::new("btrfs")
                .args(["subvolume", "snapshot", "-r"])
                .arg(&s.root)
                .arg(&to),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        to
    };
    let old = snap("old");
    for f in names {
        xattr::set(s.p(f), "user.ferry.state", b"stamped").unwrap();
    }
    xattr::set(s.p("value"), "user.keep", &[8u8; 3000]).unwrap();
    xattr::set(s.p("added"), "user.new", b"").unwrap();
    xattr::remove(s.p("removed"), "user.gone").unwrap();
    let new = snap("new");
    let trees = OwnXattrs::new("user.ferry.", &old, &new);
    let paths = OwnXattrs::by_paths("user.ferry.", &old, &new);
    assert!(trees.reads_trees(), "two btrfs snapshots, as root");
    assert!(!paths.reads_trees());
    let mut answers = BTreeMap::new();
    for f in names.iter().chain(&[""]) {
        let ino = if f.is_empty() {
            256
        } else {
            fs::metadata(s.p(f)).unwrap().ino()
        };
        let by_tree = trees.only_own(ino, f.as_bytes(), f.as_bytes());
        assert_eq!(by_tree, paths.only_own(ino, f.as_bytes(), f.as_bytes()), "{f:?}");
        answers.insert(*f, by_tree);
    }
    let expect: BTreeMap<&str, bool> = [
        ("", true),
        ("stamped", true),
        ("many", true),
        ("value", false),
        ("added", false),
        ("removed", false),
    ]
    .into();
    assert_eq!(answers, expect);
    // An inode the trees do not hold cannot be read: a change, as a path
    // that is not there is.
    let ghost = fs::metadata(s.p("stamped")).unwrap().ino() + 1000;
    assert!(!trees.only_own(ghost, b"", b""), "no such inode");
    for snap in [&old, &new] {
        let o = output(Command::new("btrfs").args(["subvolume", "delete"]).arg(snap));
        assert!(o.status.success());
    }
}

/// A rename moves an inode's ctime too: a renamed file or directory whose
/// xattrs stayed is only moved, one whose user xattr changed in the same
/// interval is moved and updated; with --every-ctime every renamed entry
/// is updated too, as before the xattrs were compared.
#[test]
fn a_renamed_entry_is_updated_too_only_when_its_xattrs_changed() {
    let Some(s) = subvolume() else { return };
    write(&s.p("plain"), b"p");
    write(&s.p("tagged"), b"t");
    mkdir(&s.p("dir"));
    write(&s.p("dir/in"), b"i");
    s.snapdiff(&[]);
    fs::rename(s.p("plain"), s.p("plain2")).unwrap();
    fs::rename(s.p("tagged"), s.p("tagged2")).unwrap();
    xattr::set(s.p("tagged2"), "user.tag", b"1").unwrap();
    fs::rename(s.p("dir"), s.p("dir2")).unwrap();
    let got = |args: &[&str]| {
        let mut all = vec!["--dry-run"];
        all.extend_from_slice(args);
        let (changes, _) = s.snapdiff(&all);
        let root = bytes(&s.root);
        changes
            .into_iter()
            .filter(|c| c.path != root)
            .map(|c| (c.state, c.path))
            .collect::<BTreeSet<_>>()
    };
    let set = |v: &[(&str, &str)]| -> BTreeSet<(String, Vec<u8>)> {
        v.iter().map(|(st, p)| (st.to_string(), bytes(&s.p(p)))).collect()
    };
    let want = set(&[
        ("moved", "plain2"),
        ("moved", "tagged2"),
        ("updated", "tagged2"),
        ("moved", "dir2"),
    ]);
    assert_eq!(got(&[]), want, "the read of changes");
    assert_eq!(got(&["--full"]), want, "the full read");
    let every = set(&[
        ("moved", "plain2"),
        ("updated", "plain2"),
        ("moved", "tagged2"),
        ("updated", "tagged2"),
        ("moved", "dir2"),
        ("updated", "dir2"),
    ]);
    assert_eq!(got(&["--every-ctime"]), every);
}

#[test]
fn reading_changes_settles_deletes_and_links_as_a_full_read_does() {
    settles_deletes_and_links(false);
}

/// The same, with the read of changes guided by the event journal
/// (`ferry journal` running on the subvolume): only the inodes its events
/// name are read from the snapshot, and what is gone is what they name
/// that the snapshot lacks.
#[test]
fn a_read_guided_by_the_journal_settles_deletes_and_links_as_a_full_read_does() {
    settles_deletes_and_links(true);
}

fn settles_deletes_and_links(journal: bool) {
    let Some(s) = subvolume() else { return };
    let _writer = journal.then(|| common::btrfs::JournalWriter::start(&s.state, &s.root));
    mkdir(&s.p("a"));
    mkdir(&s.p("a/b"));
    mkdir(&s.p("a/b/c"));
    write(&s.p("a/b/c/deep"), b"deep");
    write(&s.p("a/keep"), b"keep");
    write(&s.p("a/b/out"), b"moves out");
    write(&s.p("two"), b"two links");
    fs::hard_link(s.p("two"), s.p("a/two-again")).unwrap();
    write(&s.p("three"), b"three links");
    fs::hard_link(s.p("three"), s.p("three-b")).unwrap();
    fs::hard_link(s.p("three"), s.p("a/three-c")).unwrap();
    write(&s.p("x"), b"x");
    write(&s.p("y"), b"y");
    mkdir(&s.p("m"));
    write(&s.p("m/gone"), b"gone");
    write(&s.p("m/stays"), b"stays");
    many_files(&s.p("bulk"), 200);
    s.snapdiff(&[]);

    fs::rename(s.p("a/b/out"), s.p("out")).unwrap();
    fs::rename(s.p("a/keep"), s.p("keep")).unwrap();
    fs::remove_dir_all(s.p("a")).unwrap();
    fs::remove_file(s.p("two")).unwrap();
    fs::remove_file(s.p("three-b")).unwrap();
    fs::rename(s.p("x"), s.p("tmp")).unwrap();
    fs::rename(s.p("y"), s.p("x")).unwrap();
    fs::rename(s.p("tmp"), s.p("y")).unwrap();
    fs::rename(s.p("m"), s.p("bulk/m")).unwrap();
    fs::remove_file(s.p("bulk/m/gone")).unwrap();

    let full = s.run("snapdiff", &["--dry-run", "--full"]);
    assert_code(&full, 0);
    let r = summary_of(&s.run("snapdiff", &["--dry-run", "--summary"]));
    assert_eq!(r["read"], if journal { "journal" } else { "changes" }, "{r}");
    // The diff joined only the changed inodes, not the 200-odd of the tree.
    assert!(r["summary"]["records"].as_u64().unwrap() < 60, "{r}");
    let changes = s.run("snapdiff", &[]);
    assert_code(&changes, 0);
    assert_eq!(
        String::from_utf8_lossy(&changes.stdout),
        String::from_utf8_lossy(&full.stdout),
        "reading changes and reading everything disagree"
    );
    let got: BTreeSet<(String, Vec<u8>)> = parse_changes(&changes.stdout)
        .into_iter()
        .filter(|c| c.state != "updated")
        .map(|c| (c.state, c.path))
        .collect();
    let want: BTreeSet<(String, Vec<u8>)> = [
        ("deleted", "a/b/c/deep"),
        ("deleted", "a/b/c"),
        ("deleted", "a/b"),
        ("deleted", "a/two-again"),
        ("deleted", "a/three-c"),
        ("deleted", "a"),
        ("deleted", "two"),
        ("deleted", "three-b"),
        ("deleted", "m/gone"),
        ("moved", "out"),
        ("moved", "keep"),
        ("moved", "x"),
        ("moved", "y"),
        ("moved", "bulk/m"),
    ]
    .into_iter()
    .map(|(st, p)| (st.to_string(), bytes(&s.p(p))))
    .collect();
    // `m/gone` is reported by its old path, under the directory's old name.
    assert_eq!(got, want);
    assert_records_match_disk(&s.set_path(&s.lastsnap().unwrap()), &disk(&s));
}

/// The event journal guides a btrfs run only from a position the last
/// run recorded, and a run guided by it may be followed only by a read
/// that sees every change: an event can come in after the snapshot that
/// holds its change, and the tree search from that snapshot's
/// transaction would miss it. So: no position recorded, the tree search;
/// then the journal; then, with the writer gone, the whole snapshot
/// (saying why); then, from a run that recorded no position, the tree
/// search again. Each run reports exactly its changes.
#[test]
fn after_a_run_guided_by_the_journal_a_journal_that_cannot_guide_means_a_full_read() {
    let Some(s) = subvolume() else { return };
    many_files(&s.p("bulk"), 40);
    s.snapdiff(&[]);
    let method = |s: &Sub| -> (String, String) {
        let o = s.run("snapdiff", &["--dry-run", "--summary"]);
        let r = summary_of(&o);
        (r["read"].as_str().unwrap().to_string(), stderr(&o))
    };
    let step = |s: &Sub, want: &str, change: &str, path: &str| {
        let (read, log) = method(s);
        assert_eq!(read, want, "{log}");
        let (changes, _) = s.snapdiff(&[]);
        let got: Vec<(String, Vec<u8>)> = changes
            .into_iter()
            .filter(|c| c.state != "updated")
            .map(|c| (c.state, c.path))
            .collect();
        assert_eq!(got, [(change.to_string(), bytes(&s.p(path)))], "read {want}");
        log
    };
    let writer = btrfs::JournalWriter::start(&s.state, &s.root);
    write(&s.p("a"), b"a");
    step(&s, "changes", "created", "a");
    write(&s.p("b"), b"b");
    step(&s, "journal", "created", "b");
    drop(writer);
    fs::remove_file(s.p("a")).unwrap();
    let log = step(&s, "full", "deleted", "a");
    assert!(
        log.contains("the journal writer is not running")
            && log.contains("the last run was guided by the event journal")
            && log.contains("reading the whole snapshot"),
        "{log}"
    );
    write(&s.p("c"), b"c");
    step(&s, "changes", "created", "c");
}

/// Two subvolumes of one name on one filesystem (`fs1` and `other/fs1`),
/// both with the root inode 256, keep journals of their own: a writer of
/// the other one must not guide this one's runs, whose windows in the
/// other's journal would hold none of its changes.
#[test]
fn the_journal_of_another_subvolume_of_the_same_name_does_not_guide_a_run() {
    let Some(s) = subvolume() else { return };
    fs::create_dir(s.fs.path().join("other")).unwrap();
    let other = fs::canonicalize(s.fs.subvolume("other/fs1")).unwrap();
    let _writer = btrfs::JournalWriter::start(&s.state, &other);
    many_files(&s.p("bulk"), 40);
    s.snapdiff(&[]);
    write(&s.p("a"), b"a");
    s.snapdiff(&[]);
    write(&s.p("b"), b"b");
    let r = summary_of(&s.run("snapdiff", &["--dry-run", "--summary"]));
    assert_eq!(r["read"], "changes", "{r}");
    let (changes, _) = s.snapdiff(&[]);
    let created: Vec<&[u8]> = changes
        .iter()
        .filter(|c| c.state == "created")
        .map(|c| c.path.as_slice())
        .collect();
    assert_eq!(created, [bytes(&s.p("b")).as_slice()]);
}

/// Inode numbers used again, on btrfs (issue 18; only the model test
/// covered it): btrfs hands out inode numbers from one past the highest in
/// use when it loads a subvolume, so the numbers of the newest inodes,
/// deleted and followed by a remount, come back for the next ones made.
/// Each reuse (a file under its old name, a file under another name, a
/// file where a directory was, a directory where a file was) must be a
/// delete of the old path and a create of the new one (the birth time, as
/// the generation, tells the inodes apart), never an update or a move;
/// and a read of changes must print exactly what a full read prints.
#[test]
fn a_reused_inode_number_is_a_delete_and_a_create_in_a_read_of_changes() {
    let Some(s) = subvolume() else { return };
    let extra = ["--extra-fields", "inode,generation"];
    write(&s.p("keep"), b"keep");
    // Enough unchanged files that a read of changes is worth it.
    many_files(&s.p("bulk"), 40);
    // The first run makes `.snapshots`, below the inodes made next.
    s.snapdiff(&extra);
    // The highest inode numbers of the subvolume, in this order.
    let olds = ["same", "old-name", "dir", "dir/inner"];
    write(&s.p("same"), b"old");
    write(&s.p("old-name"), b"old");
    mkdir(&s.p("dir"));
    write(&s.p("dir/inner"), b"old");
    let (baseline, _) = s.snapdiff(&extra);
    let created = |c: &[ChangeLine], rel: &str| -> ChangeLine {
        let p = bytes(&s.p(rel));
        c.iter()
            .find(|c| c.path == p && c.state == "created")
            .unwrap_or_else(|| panic!("no create of {rel} in {c:#?}"))
            .clone()
    };
    let old: Vec<ChangeLine> = olds.iter().map(|r| created(&baseline, r)).collect();

    fs::remove_file(s.p("same")).unwrap();
    fs::remove_file(s.p("old-name")).unwrap();
    fs::remove_dir_all(s.p("dir")).unwrap();
    s.fs.remount();
    // Made in the order of the numbers they take.
    let news = ["same", "new-name", "was-a-dir", "was-a-file"];
    write(&s.p("same"), b"new");
    write(&s.p("new-name"), b"new");
    write(&s.p("was-a-dir"), b"new");
    mkdir(&s.p("was-a-file"));
    for (o, n) in old.iter().zip(news) {
        let ino = fs::symlink_metadata(s.p(n)).unwrap().ino();
        assert_eq!(
            Some(ino),
            o.inode,
            "btrfs did not give {n} the number of deleted {} after a remount: the recipe for reuse no longer works",
            show(&o.path)
        );
    }

    let full = s.run("snapdiff", &["--dry-run", "--full", extra[0], extra[1]]);
    assert_code(&full, 0);
    let r = summary_of(&s.run("snapdiff", &["--dry-run", "--summary"]));
    assert_eq!(r["read"], "changes", "{r}");
    let (changes, stdout) = s.snapdiff(&extra);
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&full.stdout),
        "reading changes and reading everything disagree"
    );
    let reused: BTreeSet<u64> = old.iter().map(|o| o.inode.unwrap()).collect();
    let got: BTreeSet<(String, String, u64)> = changes
        .iter()
        .filter(|c| reused.contains(&c.inode.unwrap()))
        .map(|c| (c.state.clone(), show(&c.path), c.inode.unwrap()))
        .collect();
    let mut want = BTreeSet::new();
    for (o, n) in old.iter().zip(news) {
        let ino = o.inode.unwrap();
        want.insert(("deleted".to_string(), show(&o.path), ino));
        want.insert(("created".to_string(), show(&bytes(&s.p(n))), ino));
        let gone = changes
            .iter()
            .find(|c| c.state == "deleted" && c.path == o.path)
            .unwrap();
        assert_eq!(gone.generation, o.generation, "the delete of {}", show(&o.path));
        let new = created(&changes, n);
        assert_ne!(
            new.generation, o.generation,
            "{n} has the generation of the inode it replaced"
        );
        assert_eq!(new.kind, if n == "was-a-file" { "directory" } else { "file" });
    }
    assert_eq!(got, want, "changes:\n{}", String::from_utf8_lossy(&stdout));
}

#[test]
fn an_unreadable_directory_fails_the_run_and_reports_no_deletes() {
    if !common::require_root("an_unreadable_directory_fails_the_run_and_reports_no_deletes (setpriv)") {
        return;
    }
    // In /tmp, traversable by the unprivileged user, with its own ferry.
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = tmp.path().join("ferry");
    if fs::hard_link(FERRY, &bin).is_err() {
        fs::copy(FERRY, &bin).unwrap();
    }
    let tree = tmp.path().join("tree");
    let state = tmp.path().join("state");
    mkdir(&tree);
    mkdir(&state);
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    write(&tree.join("top"), b"1");
    mkdir(&tree.join("sub"));
    write(&tree.join("sub/x"), b"2");
    mkdir(&tree.join("sub/deeper"));
    write(&tree.join("sub/deeper/y"), b"3");
    let run = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["snapdiff", "--provider", "none", "--state-dir"])
            .arg(&state)
            .arg(&tree)
            .current_dir("/");
        output(&mut c)
    };

    let o = run();
    assert_code(&o, 0);
    assert_eq!(parse_changes(&o.stdout).len(), 6);
    let before = names(&state)
        .into_iter()
        .map(|n| (n.clone(), fs::read(state.join(n)).unwrap()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(before.len(), 2, "a last-snap file and a manifest: {:?}", before.keys());

    fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o000)).unwrap();
    let o = run();
    assert_code(&o, 2);
    assert!(stderr(&o).contains("could not be read"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "no change (and no delete) written");
    let after = names(&state)
        .into_iter()
        .map(|n| (n.clone(), fs::read(state.join(n)).unwrap()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(after, before, "the state is untouched");

    // Readable again: nothing was lost; only sub's ctime changed.
    fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    let o = run();
    assert_code(&o, 0);
    let c = parse_changes(&o.stdout);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(
        (c[0].state.as_str(), c[0].path.clone()),
        ("updated", bytes(&tree.join("sub")))
    );
}

#[test]
fn names_with_newlines_and_invalid_utf8_survive() {
    let Some(s) = subvolume() else { return };
    let names: [&[u8]; 8] = [
        b"new\nline",
        b"\xff\xfe",
        b"\xc3\xa9 and \xe9 x",
        b"quote\"back\\slash",
        b"tab\tcr\r",
        b"\x01ctl\x7f",
        b" lead and trail ",
        "emoji \u{1f600}".as_bytes(),
    ];
    let odd = s.root.join(OsStr::from_bytes(b"dir\n\xff"));
    mkdir(&odd);
    for n in names {
        write(&s.root.join(OsStr::from_bytes(n)), n);
        write(&odd.join(OsStr::from_bytes(n)), n);
    }
    let want = s.find();

    // -0 writes the raw bytes; JSON's surrogateescape decodes to them.
    let o = s.run("snapdiff", &["-0", "--dry-run"]);
    assert_code(&o, 0);
    let raw = nul_paths(&o.stdout);
    assert_eq!(raw, want);
    let (c, _) = s.snapdiff(&[]);
    assert_eq!(c.iter().map(|c| c.path.clone()).collect::<BTreeSet<_>>(), want);

    let to_dir = s.root.join(OsStr::from_bytes(b"moved\xfe\ndir"));
    let to_file = s.root.join(OsStr::from_bytes(b"x\xff\"\n"));
    fs::rename(&odd, &to_dir).unwrap();
    fs::rename(s.root.join(OsStr::from_bytes(b"\xff\xfe")), &to_file).unwrap();
    let (c, _) = s.snapdiff(&[]);
    let moved: BTreeSet<(Vec<u8>, Vec<u8>)> = c
        .iter()
        .filter(|c| c.state == "moved")
        .map(|c| (c.source.clone().unwrap(), c.path.clone()))
        .collect();
    assert_eq!(
        moved,
        BTreeSet::from([
            (bytes(&odd), bytes(&to_dir)),
            (bytes(&s.root.join(OsStr::from_bytes(b"\xff\xfe"))), bytes(&to_file))
        ])
    );
    // A rename changes the ctime; the moved entries' xattrs stayed (both
    // snapshots say so), so they are only moved, and the root, whose
    // entries changed, is the one update.
    let updated: BTreeSet<Vec<u8>> = c
        .iter()
        .filter(|c| c.state == "updated")
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(updated, BTreeSet::from([bytes(&s.root)]), "the root's update: {c:#?}");
    assert_eq!(c.len(), 3, "two moves and one update: {c:#?}");
}

#[test]
fn rotate_and_manifest_refuse_what_they_cannot_use() {
    let Some(s) = subvolume() else { return };
    let o = s.run("rotate", &["--failed"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("no held run"), "{}", stderr(&o));
    let o = output(
        Command::new(FERRY)
            .args(["manifest", "--verify"])
            .arg(s.root.join("nope")),
    );
    assert_code(&o, 1);
    let mut f = File::create(s.fs.path().join("notes")).unwrap();
    f.write_all(b"not a manifest at all").unwrap();
    let o = output(Command::new(FERRY).arg("manifest").arg(s.fs.path().join("notes")));
    assert_code(&o, 1);
}

/// Starts `cmd` traced and stops it at the entry of its first flock system
/// call (the takeover of a stale lock starts by flock'ing it), before the
/// kernel performs it; returns the child and the path of the file it is
/// about to flock. No timing is involved: the child simply does not run on
/// until it is detached.
fn stop_at_first_flock(cmd: Command) -> (std::process::Child, Vec<u8>) {
    stop_at(cmd, |call, _| call == "flock")
}

/// A NUL-terminated string in the memory of stopped tracee `pid`.
fn tracee_str(pid: libc::pid_t, addr: u64) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    mem.seek(SeekFrom::Start(addr)).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = mem.read(&mut buf).unwrap();
    buf.truncate(n);
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(end);
    buf
}

/// Starts `cmd` traced and stops it at the entry of the first system call
/// for which `want(call, path)` holds, before the kernel performs it:
/// `flock` (the path of the descriptor), `rename` (the new path) or
/// `unlink`. Returns the child and the path; the caller ends and waits
/// for it.
#[allow(clippy::zombie_processes)]
fn stop_at(mut cmd: Command, mut want: impl FnMut(&str, &[u8]) -> bool) -> (std::process::Child, Vec<u8>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe and touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let wait = || {
        let mut status = 0;
        // SAFETY: waits for our own child; status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
        assert!(
            libc::WIFSTOPPED(status),
            "the traced run ended (status {status:#x}) before the system call waited for"
        );
        libc::WSTOPSIG(status)
    };
    // Stopped by SIGTRAP at exec.
    assert_eq!(wait(), libc::SIGTRAP);
    let opts = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL;
    // SAFETY: plain ptrace requests on our stopped tracee.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, opts) }, 0);
    let mut deliver = 0;
    loop {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, deliver) }, 0);
        let sig = wait();
        deliver = 0;
        if sig != libc::SIGTRAP | 0x80 {
            deliver = sig;
            continue;
        }
        // SAFETY: all-zero is a valid ptrace_syscall_info, which the kernel fills.
        let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of_val(&info);
        // SAFETY: the kernel writes at most `size` bytes into `info`.
        let r = unsafe { libc::ptrace(libc::PTRACE_GET_SYSCALL_INFO, pid, size, &mut info) };
        assert!(r > 0, "PTRACE_GET_SYSCALL_INFO: {}", std::io::Error::last_os_error());
        if info.op != libc::PTRACE_SYSCALL_INFO_ENTRY {
            continue;
        }
        // SAFETY: op says the entry member is the one filled in.
        let entry = unsafe { info.u.entry };
        let (call, path) = match entry.nr as libc::c_long {
            libc::SYS_flock => {
                let fd = entry.args[0];
                let path = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
                ("flock", path.as_os_str().as_bytes().to_vec())
            }
            libc::SYS_rename => ("rename", tracee_str(pid, entry.args[1])),
            libc::SYS_renameat | libc::SYS_renameat2 => ("rename", tracee_str(pid, entry.args[3])),
            libc::SYS_unlink => ("unlink", tracee_str(pid, entry.args[0])),
            libc::SYS_unlinkat => ("unlink", tracee_str(pid, entry.args[1])),
            _ => continue,
        };
        if want(call, &path) {
            return (child, path);
        }
    }
}

/// Two runs find the same stale lock. The first takes it over; the second,
/// which judged the *old* file stale, must not then remove the first run's
/// fresh lock too ("of several runs that find
/// it stale only one wins", docs/snapdiff.md).
#[test]
fn only_one_of_two_runs_that_find_a_lock_stale_takes_it_over() {
    let Some(s) = subvolume() else { return };
    populate(&s.root);
    fs::create_dir_all(&s.state).unwrap();
    let lock = s.lock_path();
    write_lock(&lock, std::process::id(), &hostname(), "stale-run");
    set_mtime(&lock, SystemTime::now() - Duration::from_secs(7200));

    // Run B has found the lock stale and is about to take it over.
    let mut b = s.cmd("snapdiff", &["--lock-threshold", "60"]);
    b.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (mut b, locking) = stop_at_first_flock(b);
    assert_eq!(show(&locking), show(&bytes(&lock)), "B's first flock is the takeover");

    // Meanwhile run A takes the stale lock over and holds it (--hold).
    let a = s.run("snapdiff", &["--hold", "--lock-threshold", "60"]);
    assert_code(&a, 0);
    let held: serde_json::Value = serde_json::from_slice(&fs::read(&lock).unwrap()).unwrap();
    assert_eq!(held["pid"], 0, "A holds the lock: {held}");

    // B goes on. The lock is A's now, fresh: B must give up.
    // SAFETY: detaching our stopped tracee lets it run on.
    assert_eq!(
        unsafe { libc::ptrace(libc::PTRACE_DETACH, b.id() as libc::pid_t, 0, 0) },
        0
    );
    let (mut so, mut se) = (b.stdout.take().unwrap(), b.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        so.read_to_end(&mut v).map(|_| v)
    });
    let mut err = String::new();
    se.read_to_string(&mut err).unwrap();
    let st = common::wait_with_deadline(&mut b, btrfs::DEADLINE, "run B");
    let b_out = out.join().unwrap().unwrap();
    let now_lock = fs::read_to_string(&lock).unwrap_or_else(|e| format!("({e})"));
    assert_eq!(
        st.code(),
        Some(3),
        "run B took over the lock that run A had just taken over and holds: both runs \
         proceeded (B wrote {} changes; lock file now {now_lock:?})\nB's stderr:\n{err}",
        parse_changes(&b_out).len()
    );
    assert!(err.contains(LOCK_MESSAGE), "{err}");
    // A's held run is intact and can be finished.
    assert_code(&s.run("rotate", &[]), 0);
}

#[test]
fn a_lost_manifest_is_rebuilt_from_its_snapshot_and_a_lost_baseline_is_refused() {
    let Some(s) = subvolume() else { return };
    populate(&s.root);
    s.snapdiff(&[]);
    let snap1 = s.lastsnap().unwrap();

    // The manifest is gone but the snapshot is there: rebuilt, same diff.
    fs::remove_file(s.manifest_path(&snap1)).unwrap();
    write(&s.p("new"), b"new");
    let o = s.run("snapdiff", &[]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains(&format!("rebuilding the manifest of snapshot {snap1}")),
        "{}",
        stderr(&o)
    );
    let c = parse_changes(&o.stdout);
    let got: BTreeSet<(String, Vec<u8>)> = c.iter().map(|c| (c.state.clone(), c.path.clone())).collect();
    let want = BTreeSet::from([
        ("created".to_string(), bytes(&s.p("new"))),
        ("updated".to_string(), bytes(&s.root)),
    ]);
    assert_eq!(got, want);
    let snap2 = s.lastsnap().unwrap();
    s.assert_rotated_to(&snap2);

    // Manifest and snapshot both gone: refused, nothing changed, and the
    // message says what to do.
    for f in s.manifest_files(&snap2) {
        fs::remove_file(s.state.join(f)).unwrap();
    }
    let del = output(
        Command::new("btrfs")
            .args(["subvolume", "delete"])
            .arg(s.root.join(".snapshots").join(&snap2)),
    );
    assert_code(&del, 0);
    let o = s.run("snapdiff", &[]);
    assert_code(&o, 2);
    let lastsnap = s.lastsnap_path();
    assert!(
        stderr(&o).contains("has neither a manifest nor a snapshot") && stderr(&o).contains(lastsnap.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    assert_eq!(s.lastsnap().as_deref(), Some(snap2.as_str()));
    assert!(s.snapshots().is_empty());
    assert!(!s.lock_path().exists());

    // Removing the last-snap file makes the next run a first run.
    fs::remove_file(lastsnap).unwrap();
    let (all, _) = s.snapdiff(&[]);
    assert!(all.iter().all(|c| c.state == "created"));
    assert_eq!(all.len(), s.find().len());
}

/// Only the fileset's own `<fileset>/.snapshots` holds ferry's snapshots;
/// a user's directory called `.snapshots` deeper down is data. Both ways of
/// reading a btrfs snapshot (the tree search, and `--walk`) must see the
/// same tree, and neither may drop that directory.
#[test]
fn both_snapshot_readers_see_a_nested_directory_named_snapshots() {
    let Some(s) = subvolume() else { return };
    populate(&s.root);
    mkdir(&s.p("d/.snapshots"));
    write(&s.p("d/.snapshots/precious"), b"user data");
    let want = s.find();
    let listed = |args: &[&str]| -> BTreeSet<Vec<u8>> {
        let o = s.run("snapdiff", args);
        assert_code(&o, 0);
        nul_paths(&o.stdout)
    };
    let tree = listed(&["-0", "--dry-run"]);
    let walk = listed(&["-0", "--dry-run", "--walk"]);
    let only = |a: &BTreeSet<Vec<u8>>, b: &BTreeSet<Vec<u8>>| a.difference(b).map(|p| show(p)).collect::<Vec<_>>();
    assert!(
        tree == want,
        "tree search: missing {:?}, extra {:?}",
        only(&want, &tree),
        only(&tree, &want)
    );
    assert!(
        walk == want,
        "--walk: missing {:?}, extra {:?}",
        only(&want, &walk),
        only(&walk, &want)
    );
}
