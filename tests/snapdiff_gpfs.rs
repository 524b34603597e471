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
