//! The GPFS provider against the fake `mm*` commands in tests/fake-mm
//! (IBM's documented interfaces and formats, on btrfs subvolumes).

mod common;

use common::btrfs::LoopBtrfs;
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Gpfs {
    fs: LoopBtrfs,
    fileset: PathBuf,
    config: PathBuf,
    state: PathBuf,
}

fn setup() -> Option<Gpfs> {
    let fs = LoopBtrfs::new(512)?;
    let fileset = fs.subvolume("fs1");
    std::fs::create_dir(fs.path().join("fs1/dep")).unwrap();
    let config = fs.path().join("mm.json");
    let cfg = serde_json::json!({
        "devices": {"gpfs0": {"mount": fs.path()}},
        "filesets": {"gpfs0": [
            {"name": "fs1", "id": 7, "path": fileset, "independent": true},
            {"name": "dep", "id": 8, "path": fileset.join("dep"), "independent": false},
        ]},
    });
    std::fs::write(&config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let state = fs.path().join("state");
    Some(Gpfs {
        fs,
        fileset,
        config,
        state,
    })
}

impl Gpfs {
    fn ferry(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.args(args)
            .args(["--provider", "gpfs", "--gpfs-device", "gpfs0", "--gpfs-bin"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-mm"))
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--snapshot-retry-timeout")
            .arg("3")
            .env("FAKE_MM_CONFIG", &self.config);
        for (k, v) in env {
            c.env(k, v);
        }
        c.arg(&self.fileset).output().unwrap()
    }

    fn snapdiff(&self, extra: &[&str], env: &[(&str, &str)]) -> Vec<Line> {
        let mut args = vec!["snapdiff"];
        args.extend(extra);
        let out = self.ferry(&args, env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        changes(&out.stdout)
    }

    fn snapshots(&self) -> Vec<String> {
        std::fs::read_dir(self.fileset.join(".snapshots"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn lastsnap(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join("ferry.lastsnap.name.fs1.id.7")).ok()
    }
}

/// One change line: state, path and source.
type Line = (String, Vec<u8>, Option<Vec<u8>>);

/// (state, path, source) of every change line.
fn changes(stdout: &[u8]) -> Vec<Line> {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            let path = |k: &str| {
                v.get(k)
                    .map(|p| ferry::task::surrogate::decode(&serde_json::to_string(p).unwrap()).unwrap())
            };
            (
                v["state"].as_str().unwrap().to_string(),
                path("path").unwrap(),
                path("source"),
            )
        })
        .collect()
}

fn set(c: &[Line], state: &str) -> BTreeSet<Vec<u8>> {
    c.iter().filter(|x| x.0 == state).map(|x| x.1.clone()).collect()
}

#[test]
fn policy_scan_snapdiff_round_trip() {
    let Some(g) = setup() else { return };
    let f = &g.fileset;
    std::fs::write(f.join("a"), b"1").unwrap();
    std::fs::write(f.join("dep/b\nc"), b"2").unwrap();
    std::fs::write(f.join("x\u{ff}%20 y"), b"3").unwrap();
    std::fs::create_dir(f.join("dir")).unwrap();
    std::fs::write(f.join("dir/in"), b"4").unwrap();
    std::fs::hard_link(f.join("a"), f.join("dir/a-link")).unwrap();

    let first = g.snapdiff(&[], &[]);
    let created = set(&first, "created");
    let find = Command::new("find")
        .arg(f)
        .args(["-path", "*/.snapshots", "-prune", "-o", "-print0"])
        .output()
        .unwrap();
    let want: BTreeSet<Vec<u8>> = find
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(created, want);
    assert_eq!(first.len(), want.len());
    assert_eq!(g.snapshots().len(), 1);

    // Move a directory, delete, create, rewrite, rename a hard link.
    std::fs::rename(f.join("dir"), f.join("dep/dir2")).unwrap();
    std::fs::remove_file(f.join("a")).unwrap();
    std::fs::write(f.join("new"), b"5").unwrap();
    std::fs::write(f.join("dep/b\nc"), b"longer").unwrap();
    let second = g.snapdiff(&["--extra-fields", "inode"], &[]);
    let moved: Vec<_> = second.iter().filter(|c| c.0 == "moved").collect();
    assert_eq!(moved.len(), 1, "{second:?}");
    assert_eq!(moved[0].1, f.join("dep/dir2").as_os_str().as_bytes());
    assert_eq!(moved[0].2.as_deref(), Some(f.join("dir").as_os_str().as_bytes()));
    assert_eq!(
        set(&second, "deleted"),
        BTreeSet::from([f.join("a").as_os_str().as_bytes().to_vec()])
    );
    assert_eq!(
        set(&second, "created"),
        BTreeSet::from([f.join("new").as_os_str().as_bytes().to_vec()])
    );
    assert!(set(&second, "updated").contains(f.join("dep/b\nc").as_os_str().as_bytes()));
    // Rotated: one snapshot, the one the last-snap file names.
    let snaps = g.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(g.lastsnap().unwrap().trim(), snaps[0]);

    // Walking the snapshot instead of a policy scan sees the same tree:
    // after a touch, both report exactly that change.
    std::fs::write(f.join("new"), b"66").unwrap();
    let walked = g.snapdiff(&["--gpfs-walk", "--dry-run"], &[]);
    let listed = g.snapdiff(&["--dry-run"], &[]);
    let paths = |c: &[Line]| -> BTreeSet<(String, Vec<u8>)> {
        c.iter()
            .filter(|x| x.0 != "updated" || !x.1.ends_with(b"fs1"))
            .map(|x| (x.0.clone(), x.1.clone()))
            .collect()
    };
    assert!(paths(&listed).contains(&("updated".to_string(), f.join("new").as_os_str().as_bytes().to_vec())));
    assert!(paths(&walked).contains(&("updated".to_string(), f.join("new").as_os_str().as_bytes().to_vec())));
    let _ = &g.fs;
}

#[test]
fn transient_snapshot_failures_are_retried_and_final_ones_roll_back() {
    let Some(g) = setup() else { return };
    std::fs::write(g.fileset.join("a"), b"1").unwrap();
    g.snapdiff(&[], &[]);
    let last = g.lastsnap().unwrap();

    // Two quiesce failures, then success, within the retry timeout.
    std::fs::write(g.fileset.join("b"), b"2").unwrap();
    let c = g.snapdiff(&[], &[("FAKE_MM_FAIL", "mmcrsnapshot:2")]);
    assert_eq!(set(&c, "created").len(), 1);
    assert_ne!(g.lastsnap().unwrap(), last);
    let last = g.lastsnap().unwrap();

    // A create that happened but reported failure (a timeout) counts.
    std::fs::write(g.fileset.join("c"), b"3").unwrap();
    let c = g.snapdiff(&[], &[("FAKE_MM_FAIL", "mmcrsnapshot:1:after")]);
    assert_eq!(set(&c, "created").len(), 1);
    assert_ne!(g.lastsnap().unwrap(), last);
    let last = g.lastsnap().unwrap();

    // Failing for longer than the timeout: the run fails, nothing changes,
    // and the next run reports the change.
    std::fs::write(g.fileset.join("d"), b"4").unwrap();
    let out = g.ferry(&["snapdiff"], &[("FAKE_MM_FAIL", "mmcrsnapshot:100")]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unable to quiesce"));
    assert_eq!(g.lastsnap().unwrap(), last);
    assert_eq!(g.snapshots().len(), 1);
    let c = g.snapdiff(&[], &[("FAKE_MM_FAIL", "mmcrsnapshot:0")]);
    assert_eq!(
        set(&c, "created"),
        BTreeSet::from([g.fileset.join("d").as_os_str().as_bytes().to_vec()])
    );

    // An old snapshot that cannot be deleted is a warning; the next
    // successful rotation removes it.
    std::fs::write(g.fileset.join("e"), b"5").unwrap();
    let out = g.ferry(&["snapdiff"], &[("FAKE_MM_FAIL", "mmdelsnapshot:100")]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was not deleted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(g.snapshots().len(), 2);
    g.snapdiff(&[], &[("FAKE_MM_FAIL", "mmdelsnapshot:0")]);
    assert_eq!(g.snapshots().len(), 1);
}

#[test]
fn dependent_filesets_are_refused() {
    let Some(g) = setup() else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["snapdiff", "--provider", "gpfs", "--gpfs-device", "gpfs0", "--gpfs-bin"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-mm"))
        .arg(g.fileset.join("dep"))
        .env("FAKE_MM_CONFIG", &g.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("independent fileset"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ferry delete -r` keeps GPFS fileset junctions: it asks `mmlsfileset`
/// for them, keeps a dependent fileset (a plain directory here) with its
/// contents, refuses a junction given as the path, and deletes nothing when
/// the filesets cannot be listed.
#[test]
fn delete_keeps_fileset_junctions() {
    let Some(g) = setup() else { return };
    let work = g.fileset.join("work");
    std::fs::create_dir_all(work.join("dep2/inner")).unwrap();
    std::fs::create_dir_all(work.join("plain/sub")).unwrap();
    std::fs::write(work.join("dep2/inner/keep"), b"k").unwrap();
    std::fs::write(work.join("plain/sub/gone"), b"g").unwrap();
    let cfg = serde_json::json!({
        "devices": {"gpfs0": {"mount": g.fs.path()}},
        "filesets": {"gpfs0": [
            {"name": "fs1", "id": 7, "path": g.fileset, "independent": true},
            {"name": "dep2", "id": 9, "path": work.join("dep2"), "independent": false},
        ]},
    });
    std::fs::write(&g.config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let delete = |path: &Path, device: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["delete", "-r", "--jsonl", "--gpfs-device", device, "--gpfs-bin"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-mm"))
            .arg(path)
            .env("FAKE_MM_CONFIG", &g.config)
            .output()
            .unwrap()
    };

    // mmlsfileset fails for a device it does not know.
    let out = delete(&work, "gpfs9");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"failures\"") && text.contains("cannot list GPFS fileset junctions"),
        "{text}"
    );
    assert!(
        work.join("plain/sub/gone").exists(),
        "nothing may go when junctions are unknown"
    );

    let out = delete(&work.join("dep2"), "gpfs0");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not deleted: fileset junction"), "{text}");

    let out = delete(&work, "gpfs0");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("dep2 (fileset junction)"), "{text}");
    assert_eq!(std::fs::read(work.join("dep2/inner/keep")).unwrap(), b"k");
    assert!(!work.join("plain").exists());
}

// ---------------------------------------------------------------------------
// The incremental inode scan, against the fake libgpfs.so (tests/fake-libgpfs)

/// Builds the fake `libgpfs.so` into `dir` (with the C compiler, `cc`):
/// a test that cannot build it fails.
fn fake_libgpfs(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-libgpfs/fakegpfs.c");
    let lib = dir.join("libgpfs.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .expect("cc (the fake libgpfs.so is built with it)");
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

impl Gpfs {
    /// `ferry snapdiff` with `extra`; its stdout and stderr.
    fn run(&self, extra: &[&str], env: &[(&str, &str)]) -> (Vec<u8>, String) {
        let mut args = vec!["snapdiff", "--changes-limit", "1", "--extra-fields", "inode,generation"];
        args.extend(extra);
        let out = self.ferry(&args, env);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "ferry {args:?}: {err}");
        (out.stdout, err)
    }

    /// A run with a baseline: a dry run must read only the changes, and
    /// say so; the run must print exactly what a dry run reading the whole
    /// snapshot with the policy scan prints. Returns the run's changes.
    fn changes_match_full(&self, env: &[(&str, &str)], step: &str) -> Vec<Line> {
        let (summary, err) = self.run(&["--dry-run", "--summary"], env);
        let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap();
        assert_eq!(summary["read"], "changes", "{step}: the read was not of changes: {err}");
        let (full, _) = self.run(&["--dry-run", "--full"], env);
        let (read, err) = self.run(&[], env);
        assert!(
            full == read,
            "{step}: reading changes and the policy scan disagree ({err}):\nfull:\n{}\nchanges:\n{}",
            String::from_utf8_lossy(&full),
            String::from_utf8_lossy(&read)
        );
        changes(&read)
    }
}

/// Creates, appends, chmod, renames of files and directories, hard links
/// added and removed, deletes of files and of trees: after each, a read of
/// changes through the fake libgpfs.so gives what the policy scan gives.
fn incremental_scan_steps(deleted: &str) {
    let Some(g) = setup() else { return };
    let work = tempfile::tempdir().unwrap();
    let lib = fake_libgpfs(work.path());
    let env = [("FERRY_LIBGPFS", lib.to_str().unwrap()), ("FAKE_GPFS_DELETED", deleted)];
    let f = &g.fileset;
    let w = |p: &str, b: &[u8]| std::fs::write(f.join(p), b).unwrap();
    w("a", b"1");
    w("b", b"2");
    std::fs::create_dir_all(f.join("d/e")).unwrap();
    w("d/in", b"3");
    w("d/e/deep", b"4");
    w("h1", b"hard");
    std::fs::hard_link(f.join("h1"), f.join("d/h2")).unwrap();
    std::fs::hard_link(f.join("h1"), f.join("dep/h3")).unwrap();
    std::fs::create_dir_all(f.join("t/u/v")).unwrap();
    w("t/u/v/leaf", b"5");
    w("t/top", b"6");
    std::os::unix::fs::symlink("a", f.join("s")).unwrap();
    std::fs::create_dir(f.join("m")).unwrap();
    w("m/keep", b"7");
    w("m/gone", b"8");
    let first = g.run(&[], &env).0;
    assert!(!changes(&first).is_empty());

    // Creates, an append, a chmod.
    w("n", b"new");
    std::fs::OpenOptions::new()
        .append(true)
        .open(f.join("a"))
        .and_then(|mut x| std::io::Write::write_all(&mut x, b"more"))
        .unwrap();
    std::fs::set_permissions(f.join("b"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::create_dir(f.join("newdir")).unwrap();
    w("newdir/x", b"9");
    let c = g.changes_match_full(&env, "create/append/chmod");
    assert!(
        set(&c, "created").contains(f.join("newdir/x").as_os_str().as_bytes()),
        "{c:?}"
    );

    // Renames of a file and of a directory (across the dependent fileset).
    std::fs::rename(f.join("a"), f.join("d/a2")).unwrap();
    std::fs::rename(f.join("d"), f.join("dep/d2")).unwrap();
    let c = g.changes_match_full(&env, "renames");
    assert!(c.iter().any(|l| l.0 == "moved"), "{c:?}");

    // A hard link added; one link of a thrice-linked file removed.
    std::fs::hard_link(f.join("b"), f.join("newdir/b-link")).unwrap();
    std::fs::remove_file(f.join("dep/h3")).unwrap();
    g.changes_match_full(&env, "hard links");

    // The last links of a file; a file; a whole tree.
    std::fs::remove_file(f.join("h1")).unwrap();
    std::fs::remove_file(f.join("dep/d2/h2")).unwrap();
    std::fs::remove_file(f.join("n")).unwrap();
    std::fs::remove_dir_all(f.join("t")).unwrap();
    let c = g.changes_match_full(&env, "deletes");
    assert!(
        set(&c, "deleted").contains(f.join("t/u/v/leaf").as_os_str().as_bytes()),
        "{c:?}"
    );

    // A file moved out of a directory that is then deleted.
    std::fs::rename(f.join("m/keep"), f.join("kept")).unwrap();
    std::fs::remove_dir_all(f.join("m")).unwrap();
    let c = g.changes_match_full(&env, "move out of a deleted directory");
    assert!(
        set(&c, "deleted").contains(f.join("m/gone").as_os_str().as_bytes()),
        "{c:?}"
    );

    // Nothing changed.
    g.changes_match_full(&env, "no change");
}

#[test]
fn incremental_scan_matches_policy_scan_with_deleted_inodes_reported() {
    incremental_scan_steps("report");
}

#[test]
fn incremental_scan_matches_policy_scan_with_deleted_inodes_omitted() {
    incremental_scan_steps("omit");
}

/// Without the library (or with a scan it refuses), the run reads the
/// whole snapshot with the policy scan, says why, and gives the same
/// changes.
#[test]
fn without_libgpfs_the_policy_scan_reads_and_the_log_says_why() {
    let Some(g) = setup() else { return };
    let work = tempfile::tempdir().unwrap();
    let lib = fake_libgpfs(work.path());
    let with = [("FERRY_LIBGPFS", lib.to_str().unwrap())];
    std::fs::write(g.fileset.join("a"), b"1").unwrap();
    g.run(&[], &with);

    std::fs::write(g.fileset.join("b"), b"2").unwrap();
    let missing = work.path().join("missing/libgpfs.so");
    let without = [("FERRY_LIBGPFS", missing.to_str().unwrap())];
    let (summary, err) = g.run(&["--dry-run", "--summary"], &without);
    let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["read"], "full", "{err}");
    assert!(
        err.contains("no incremental inode scan") && err.contains(missing.to_str().unwrap()),
        "the log does not say why: {err}"
    );
    let (full, _) = g.run(&["--dry-run", "--full"], &with);
    let (out, _) = g.run(&[], &without);
    assert_eq!(out, full);
    assert_eq!(
        set(&changes(&out), "created"),
        BTreeSet::from([g.fileset.join("b").as_os_str().as_bytes().to_vec()])
    );

    // A manifest made without the library has no snapshot id: the next
    // run reads the whole snapshot, and records one.
    std::fs::write(g.fileset.join("c"), b"3").unwrap();
    g.run(&[], &with);

    // The library is there, but the scan is not available (ENOSYS).
    std::fs::write(g.fileset.join("d"), b"4").unwrap();
    let refused = [
        ("FERRY_LIBGPFS", lib.to_str().unwrap()),
        ("FAKE_GPFS_FAIL", "gpfs_open_inodescan64:38"),
    ];
    let (summary, err) = g.run(&["--dry-run", "--summary"], &refused);
    let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["read"], "full", "{err}");
    assert!(err.contains("gpfs_open_inodescan64"), "the log does not say why: {err}");
    g.changes_match_full(&with, "after a refused scan");
}
