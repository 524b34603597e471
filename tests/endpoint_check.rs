//! `ferry endpoint check [--repair] [--grace S] [--json]` against directory
//! stores and S3 (moto), and the agent's scheduled upkeep.
//!
//! Every kind of leftover an interrupted write can leave is planted by hand
//! (staging files, a staging file a live upload holds under `flock`, the
//! old layout's `name#N` files, orphan sidecars, objects whose metadata is
//! missing or unreadable, S3 objects that are not ferry's, multipart
//! uploads never completed) and the check must report, keep and remove
//! exactly the right ones: fresh leftovers stay for the grace period, an
//! object stays while a local file's location points at it or while the
//! local tree could not be read in full, foreign S3 objects always stay.

mod common;

use common::ops::{EP, Env, FERRY, location, random_bytes, set_mtime};
use serde_json::Value;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The metadata xattr on a directory store's objects.
const META: &str = "user.ferry.object";

/// Limit for one `ferry endpoint check`.
const CHECK_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Running the check

/// One finished `ferry endpoint check`.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn show(&self) -> String {
        format!("exit {:?}\nstdout: {}\nstderr: {}", self.code, self.stdout, self.stderr)
    }
}

/// `ferry endpoint check --config CONFIG --endpoint NAME ARGS...`.
fn check_cmd(config: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut c = Command::new(FERRY);
    c.args(["endpoint", "check", "--config"])
        .arg(config)
        .args(["--endpoint", endpoint])
        .args(args);
    c
}

fn run(mut c: Command) -> Out {
    let o = common::run_within(&mut c, None, CHECK_DEADLINE, None);
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The text report.
fn check_text(config: &Path, args: &[&str]) -> Out {
    run(check_cmd(config, EP, args))
}

/// A JSON report and the run that wrote it.
struct Report {
    v: Value,
    out: Out,
}

/// Runs the check with `--json` and parses its report.
fn check_json(config: &Path, args: &[&str]) -> Report {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = run(check_cmd(config, EP, &a));
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.show()));
    assert_eq!(out.stdout.lines().count(), 1, "one JSON line: {}", out.show());
    assert_eq!(v["endpoint"], EP, "{}", out.show());
    Report { v, out }
}

impl Report {
    fn code(&self) -> Option<i32> {
        self.out.code
    }

    fn show(&self) -> String {
        self.out.show()
    }

    fn num(&self, key: &str) -> u64 {
        self.v[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} is not a number: {}", self.show()))
    }

    /// `files_scanned`, which is there only when an object was to go.
    fn files_scanned(&self) -> Option<u64> {
        self.v.get("files_scanned").map(|n| n.as_u64().unwrap())
    }

    fn errors(&self) -> Vec<String> {
        self.v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect()
    }

    fn leftovers(&self) -> &Vec<Value> {
        self.v["leftovers"].as_array().unwrap()
    }

    /// (kind, name, action) of every leftover, in report order.
    fn rows(&self) -> Vec<(String, String, String)> {
        self.leftovers()
            .iter()
            .map(|l| {
                (
                    l["kind"].as_str().unwrap().to_string(),
                    l["name"].as_str().unwrap().to_string(),
                    l["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The leftover called `name`.
    fn leftover(&self, name: &str) -> &Value {
        let all: Vec<_> = self.leftovers().iter().filter(|l| l["name"] == name).collect();
        assert_eq!(all.len(), 1, "one leftover {name:?}: {}", self.show());
        all[0]
    }

    /// Asserts the report is exactly `rows` (kind, name, action), in order.
    fn assert_rows(&self, rows: &[(&str, &str, &str)]) {
        let want: Vec<(String, String, String)> = rows
            .iter()
            .map(|(k, n, a)| (k.to_string(), n.to_string(), a.to_string()))
            .collect();
        assert_eq!(self.rows(), want, "{}", self.show());
    }

    /// Asserts the report's counts: committed objects, their bytes, uploads
    /// under way, and no unreadable parts.
    fn assert_counts(&self, objects: u64, bytes: u64, in_progress: u64) {
        assert_eq!(
            (self.num("objects"), self.num("bytes"), self.num("in_progress")),
            (objects, bytes, in_progress),
            "(objects, bytes, in_progress): {}",
            self.show()
        );
    }
}

/// The rows, all with one action.
fn with_action<'a>(rows: &[(&'a str, &'a str)], action: &'a str) -> Vec<(&'a str, &'a str, &'a str)> {
    rows.iter().map(|(k, n)| (*k, *n, action)).collect()
}

// ---------------------------------------------------------------------------
// Planting leftovers

/// Writes `data` at `path`, making its parents.
fn plant(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A staging file a live upload holds: created, written and held under an
/// exclusive `flock` until the returned file is dropped.
fn plant_locked(path: &Path, data: &[u8]) -> File {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut &f, data).unwrap();
    // SAFETY: a valid open descriptor; flock has no other preconditions.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
    f
}

/// Sets an object's metadata xattr to `value`.
fn set_meta(path: &Path, value: &[u8]) {
    xattr::set(path, META, value).unwrap();
}

/// A sidecar pointer (`{"v":1,"sidecar":HASH,"len":N}`) to a sidecar that
/// was never written.
fn dangling_pointer() -> String {
    format!(
        "{{\"v\":1,\"sidecar\":\"{}\",\"len\":321}}",
        blake3::hash(b"a sidecar that never arrived").to_hex()
    )
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Makes `path` look `secs` seconds old (mtime).
fn make_old(path: &Path, secs: u64) {
    set_mtime(path, now_secs() - secs, 0);
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Writes the files `(name, size)` into the tree and migrates them; returns
/// their paths.
fn migrate_files(env: &Env, files: &[(&str, usize)]) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, (name, size))| {
            let p = env.path(name.as_bytes());
            std::fs::write(&p, random_bytes(i as u64 + 1, *size)).unwrap();
            p
        })
        .collect();
    let run = env.migrate(&[], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", paths.len());
    paths
}

/// A user xattr big enough (3000 bytes) that the object's metadata
/// document goes to a sidecar: over ext4's one xattr block once base64'd,
/// over S3's 2 KiB of user metadata.
fn give_big_xattr(path: &Path) {
    xattr::set(path, "user.big", &random_bytes(77, 3000)).unwrap();
}

// ---------------------------------------------------------------------------
// 1. A clean directory store

/// After migrating files (one of them with its metadata in a sidecar) the
/// store is clean: exit 0, every object committed, no leftovers, nothing
/// under way; the text report says the counts; a repair does nothing.
#[test]
fn dir_clean_store_after_migrate() {
    let env = Env::dir();
    let a = env.path(b"a.txt");
    std::fs::write(&a, random_bytes(1, 1000)).unwrap();
    give_big_xattr(&a);
    let paths = migrate_files(&env, &[("b.txt", 2000), ("c.txt", 3000)]);
    let run = env.migrate(&[], std::slice::from_ref(&a));
    assert_eq!(run.code, Some(0), "{}", run.show());
    // a.txt's document did not fit in the object's xattrs: it is in a
    // sidecar, and the xattr is a pointer.
    assert!(env.arch().join("a.txt#m").is_file(), "a.txt has a sidecar");
    let ptr = xattr::get(env.arch().join("a.txt"), META).unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&ptr).contains("\"sidecar\""),
        "pointer: {}",
        String::from_utf8_lossy(&ptr)
    );
    assert_eq!(paths.len(), 2);

    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_counts(3, 6000, 0);
    r.assert_rows(&[]);
    assert_eq!(r.v["repair"], false);
    assert_eq!(r.files_scanned(), None, "{}", r.show());
    assert_eq!(r.errors().len(), 0, "{}", r.show());

    let t = check_text(&env.config, &[]);
    assert_eq!(t.code, Some(0), "{}", t.show());
    assert_eq!(
        t.stdout,
        "endpoint `arch`: 3 committed object(s), 6000 byte(s); 0 upload(s) under way; 0 leftover(s)\n",
        "{}",
        t.show()
    );
    assert_eq!(t.stderr, "", "{}", t.show());

    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_counts(3, 6000, 0);
    r.assert_rows(&[]);
    assert_eq!(r.v["repair"], true);
    // Nothing was to go, so the local tree was not read.
    assert_eq!(r.files_scanned(), None, "{}", r.show());
    assert!(env.arch().join("a.txt#m").is_file(), "the live sidecar stays");
}

// ---------------------------------------------------------------------------
// 2. Every leftover kind in a directory store

/// Each kind of leftover, planted by hand beside two committed objects:
/// reported without --repair, kept while fresh with the default grace,
/// removed with --grace 0 — except the staging file an upload holds under
/// flock, which is an upload in progress, never a leftover. The objects
/// still recall afterwards.
#[test]
fn dir_every_leftover_kind() {
    let env = Env::dir();
    let paths = migrate_files(&env, &[("a.txt", 100), ("b.txt", 200)]);
    let arch = env.arch().to_path_buf();
    let staging_dead = arch.join("#staging/dead");
    let staging_live = arch.join("#staging/live");
    let legacy = arch.join("old.txt#3");
    let legacy_deep = arch.join("sub/deep.bin#12");
    let ghost_sidecar = arch.join("ghost#m");
    let inline_sidecar = arch.join("a.txt#m");
    let raw = arch.join("raw.bin");
    let garbled = arch.join("garbled.bin");
    let lost = arch.join("lost.bin");

    plant(&staging_dead, b"partial");
    let lock = plant_locked(&staging_live, b"live");
    plant(&legacy, b"12345");
    plant(&legacy_deep, b"123456");
    plant(&ghost_sidecar, b"{\"v\":1}");
    // a.txt carries its document inline: a sidecar beside it is no one's.
    plant(&inline_sidecar, b"{}");
    plant(&raw, b"no metadata at all");
    plant(&garbled, b"unreadable metadata");
    set_meta(&garbled, b"this is not JSON");
    plant(&lost, b"names a missing sidecar");
    set_meta(&lost, dangling_pointer().as_bytes());
    let removable = [
        &staging_dead,
        &legacy,
        &legacy_deep,
        &ghost_sidecar,
        &inline_sidecar,
        &raw,
        &garbled,
        &lost,
    ];

    let kinds = [
        ("staging", "#staging/dead"),
        ("legacy_staging", "old.txt#3"),
        ("legacy_staging", "sub/deep.bin#12"),
        ("orphan_sidecar", "a.txt#m"),
        ("orphan_sidecar", "ghost#m"),
        ("uncommitted", "garbled.bin"),
        ("uncommitted", "lost.bin"),
        ("uncommitted", "raw.bin"),
    ];

    // Report only.
    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(2, 300, 1);
    r.assert_rows(&with_action(&kinds, "reported"));
    assert_eq!(r.v["repair"], false);
    assert_eq!(r.files_scanned(), None, "{}", r.show());
    assert_eq!(r.errors().len(), 0, "{}", r.show());
    assert_eq!(r.leftover("#staging/dead")["size"], 7);
    assert_eq!(r.leftover("sub/deep.bin#12")["size"], 6);
    assert_eq!(r.leftover("raw.bin")["detail"], "no metadata", "{}", r.show());
    let garbled_detail = r.leftover("garbled.bin")["detail"].as_str().unwrap().to_string();
    assert!(
        garbled_detail.starts_with("object metadata is unreadable"),
        "{garbled_detail}"
    );
    assert_eq!(
        r.leftover("lost.bin")["detail"],
        "object metadata is unreadable: the metadata sidecar the object names is missing",
        "{}",
        r.show()
    );
    for l in r.leftovers() {
        assert!(l["age_seconds"].as_u64().unwrap() < 60, "fresh: {l}");
        assert!(l.get("error").is_none(), "{l}");
        if l["kind"] != "uncommitted" {
            assert!(l.get("detail").is_none(), "{l}");
        }
    }
    assert!(
        r.out
            .stderr
            .contains("endpoint `arch`: 8 leftover(s) remain, 0 part(s) unreadable"),
        "{}",
        r.show()
    );
    for p in removable {
        assert!(exists(p), "{} is still there", p.display());
    }

    // The text report names each one with its kind and action.
    let t = check_text(&env.config, &[]);
    assert_eq!(t.code, Some(1), "{}", t.show());
    let lines: Vec<&str> = t.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 8, "{}", t.show());
    assert_eq!(
        lines[0],
        "endpoint `arch`: 2 committed object(s), 300 byte(s); 1 upload(s) under way; 8 leftover(s)"
    );
    for (line, (kind, name)) in lines[1..].iter().zip(kinds) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((words[0], words[1]), (kind, "reported"), "{line}");
        assert!(line.contains(name), "{line} names {name}");
    }
    assert!(lines[8].ends_with("raw.bin  (no metadata)"), "{}", lines[8]);

    // Repair with the default grace (an hour): everything is too fresh.
    let r = check_json(&env.config, &["--repair"]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(2, 300, 1);
    r.assert_rows(&with_action(&kinds, "kept_recent"));
    assert_eq!(r.files_scanned(), None, "{}", r.show());
    for p in removable {
        assert!(exists(p), "{} is still there", p.display());
    }

    // Repair with no grace: all of it goes; the locked upload stays.
    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_counts(2, 300, 1);
    r.assert_rows(&with_action(&kinds, "removed"));
    // Objects were to go, so the two stubs' location xattrs were read.
    assert_eq!(r.files_scanned(), Some(2), "{}", r.show());
    assert_eq!(r.errors().len(), 0, "{}", r.show());
    for p in removable {
        assert!(!exists(p), "{} was removed", p.display());
    }
    assert!(staging_live.is_file(), "the live upload's file stays");
    assert!(arch.join("a.txt").is_file() && arch.join("b.txt").is_file());

    // Clean now, apart from the upload under way.
    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_counts(2, 300, 1);
    r.assert_rows(&[]);

    // The upload's process dies (its lock goes): a leftover like any other.
    drop(lock);
    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(2, 300, 0);
    r.assert_rows(&[("staging", "#staging/live", "reported")]);
    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_rows(&[("staging", "#staging/live", "removed")]);
    assert_eq!(r.files_scanned(), None, "no object was to go: {}", r.show());
    assert!(!exists(&staging_live));

    // The committed objects are intact: both files recall.
    let before: Vec<Vec<u8>> = [100, 200]
        .iter()
        .enumerate()
        .map(|(i, n)| random_bytes(i as u64 + 1, *n))
        .collect();
    let run = env.recall(&[], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    for (p, want) in paths.iter().zip(before) {
        assert_eq!(std::fs::read(p).unwrap(), want, "{}", p.display());
    }
}

/// The grace period works both ways: with --grace 60, leftovers of every
/// kind that stood two hours go and fresh ones stay (kept_recent).
#[test]
fn dir_grace_removes_old_and_keeps_fresh() {
    let env = Env::dir();
    let arch = env.arch().to_path_buf();
    let old = [
        arch.join("#staging/old"),
        arch.join("o.dat#1"),
        arch.join("old#m"),
        arch.join("old.bin"),
    ];
    let fresh = [
        arch.join("#staging/new"),
        arch.join("n.dat#1"),
        arch.join("new#m"),
        arch.join("new.bin"),
    ];
    for p in old.iter().chain(&fresh) {
        plant(p, b"x");
    }
    for p in &old {
        make_old(p, 7200);
    }

    let r = check_json(&env.config, &["--repair", "--grace", "60"]);
    assert_eq!(r.code(), Some(1), "fresh leftovers remain: {}", r.show());
    r.assert_counts(0, 0, 0);
    r.assert_rows(&[
        ("staging", "#staging/new", "kept_recent"),
        ("staging", "#staging/old", "removed"),
        ("legacy_staging", "n.dat#1", "kept_recent"),
        ("legacy_staging", "o.dat#1", "removed"),
        ("orphan_sidecar", "new#m", "kept_recent"),
        ("orphan_sidecar", "old#m", "removed"),
        ("uncommitted", "new.bin", "kept_recent"),
        ("uncommitted", "old.bin", "removed"),
    ]);
    for name in ["#staging/old", "o.dat#1", "old#m", "old.bin"] {
        let age = r.leftover(name)["age_seconds"].as_u64().unwrap();
        assert!((7200..7300).contains(&age), "{name}: age {age}");
    }
    for name in ["#staging/new", "n.dat#1", "new#m", "new.bin"] {
        let age = r.leftover(name)["age_seconds"].as_u64().unwrap();
        assert!(age < 60, "{name}: age {age}");
    }
    // old.bin was to go: the (empty) tree was read for references.
    assert_eq!(r.files_scanned(), Some(0), "{}", r.show());
    for p in &old {
        assert!(!exists(p), "{} is gone", p.display());
    }
    for p in &fresh {
        assert!(exists(p), "{} stays", p.display());
    }

    // A grace longer than their age keeps even old leftovers.
    for p in &fresh {
        make_old(p, 7200);
    }
    let r = check_json(&env.config, &["--repair", "--grace", "9000"]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_rows(&[
        ("staging", "#staging/new", "kept_recent"),
        ("legacy_staging", "n.dat#1", "kept_recent"),
        ("orphan_sidecar", "new#m", "kept_recent"),
        ("uncommitted", "new.bin", "kept_recent"),
    ]);
    assert_eq!(r.files_scanned(), None, "{}", r.show());
    let r = check_json(&env.config, &["--repair", "--grace", "7000"]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_rows(&[
        ("staging", "#staging/new", "removed"),
        ("legacy_staging", "n.dat#1", "removed"),
        ("orphan_sidecar", "new#m", "removed"),
        ("uncommitted", "new.bin", "removed"),
    ]);
    for p in &fresh {
        assert!(!exists(p), "{} is gone", p.display());
    }
}

// ---------------------------------------------------------------------------
// 3. Safety: objects a file points at, and a tree that could not be read

/// An uncommitted object that a local file's location xattr names is
/// kept_referenced and survives --repair --grace 0 (twice); one named only
/// by another endpoint's location xattr, or by none, is removed.
#[test]
fn dir_referenced_uncommitted_object_is_kept() {
    let env = Env::dir();
    let paths = migrate_files(&env, &[("a.txt", 500), ("b.txt", 600)]);
    let arch = env.arch().to_path_buf();
    assert_eq!(location(&paths[0]).as_deref(), Some("a.txt"));
    // a.txt's object loses its metadata: uncommitted, but the stub a.txt
    // holds its only copy.
    xattr::remove(arch.join("a.txt"), META).unwrap();
    // planted.bin: an object with no metadata that a plain file names by hand.
    plant(&arch.join("planted.bin"), b"planted");
    let c = env.path(b"sub/c.txt");
    plant(&c, b"c");
    xattr::set(&c, format!("user.ferry.loc.{EP}"), b"planted.bin").unwrap();
    // other.bin: named only by another endpoint's location.
    plant(&arch.join("other.bin"), b"other");
    xattr::set(&c, "user.ferry.loc.elsewhere", b"other.bin").unwrap();
    plant(&arch.join("raw.bin"), b"raw");

    for round in 0..2 {
        let r = check_json(&env.config, &["--repair", "--grace", "0"]);
        assert_eq!(r.code(), Some(1), "round {round}: {}", r.show());
        r.assert_counts(1, 600, 0);
        if round == 0 {
            r.assert_rows(&[
                ("uncommitted", "a.txt", "kept_referenced"),
                ("uncommitted", "other.bin", "removed"),
                ("uncommitted", "planted.bin", "kept_referenced"),
                ("uncommitted", "raw.bin", "removed"),
            ]);
        } else {
            r.assert_rows(&[
                ("uncommitted", "a.txt", "kept_referenced"),
                ("uncommitted", "planted.bin", "kept_referenced"),
            ]);
        }
        assert_eq!(r.files_scanned(), Some(3), "{}", r.show());
        assert_eq!(r.errors().len(), 0, "{}", r.show());
        assert!(
            r.out.stderr.contains("2 leftover(s) remain, 0 part(s) unreadable"),
            "{}",
            r.show()
        );
    }
    assert_eq!(std::fs::read(arch.join("a.txt")).unwrap(), random_bytes(1, 500));
    assert!(arch.join("planted.bin").is_file());
    assert!(!exists(&arch.join("other.bin")) && !exists(&arch.join("raw.bin")));
}

/// When the endpoint's local root cannot be read (it does not exist), no
/// file's location can be ruled out: uncommitted objects are
/// kept_unverified, the failure is reported, the exit status is 1; other
/// leftovers are removed as usual.
#[test]
fn dir_missing_root_keeps_objects_unverified() {
    let tmp = tempfile::tempdir().unwrap();
    let arch = tmp.path().join("arch");
    let root = tmp.path().join("no-such-root");
    std::fs::create_dir(&arch).unwrap();
    let config = tmp.path().join("ferry.conf");
    std::fs::write(
        &config,
        format!(
            "[settings]\nxattr_prefix = user.ferry.\n\n[Endpoint {EP}]\ntype = directory\npath = {}\nroot = {}\n",
            arch.display(),
            root.display()
        ),
    )
    .unwrap();
    plant(&arch.join("raw.bin"), b"raw");
    plant(&arch.join("ghost#m"), b"{}");
    plant(&arch.join("#staging/dead"), b"dead");

    let r = check_json(&config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(0, 0, 0);
    r.assert_rows(&[
        ("staging", "#staging/dead", "removed"),
        ("orphan_sidecar", "ghost#m", "removed"),
        ("uncommitted", "raw.bin", "kept_unverified"),
    ]);
    let errors = r.errors();
    assert_eq!(errors.len(), 1, "{}", r.show());
    assert!(
        errors[0].contains(&root.display().to_string()),
        "the error names the root: {errors:?}"
    );
    assert_eq!(r.files_scanned(), Some(0), "{}", r.show());
    assert!(
        r.out.stderr.contains("1 leftover(s) remain, 1 part(s) unreadable"),
        "{}",
        r.show()
    );
    assert!(arch.join("raw.bin").is_file(), "the object stays");
    assert!(!exists(&arch.join("ghost#m")) && !exists(&arch.join("#staging/dead")));
}

/// A directory under the root that the checking user cannot read (mode
/// 000; the check runs as `nobody` through setpriv, since root reads
/// anything): uncommitted objects are kept_unverified.
#[test]
fn dir_unreadable_subdirectory_keeps_objects_unverified() {
    if !common::require_root("running the check as another user") {
        return;
    }
    let have_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !common::require(have_setpriv, "setpriv (util-linux) is needed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let arch = tmp.path().join("arch");
    let root = tmp.path().join("tree");
    std::fs::create_dir(&arch).unwrap();
    std::fs::create_dir(&root).unwrap();
    plant(&root.join("readable.txt"), b"r");
    plant(&root.join("locked/hidden.txt"), b"h");
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    plant(&arch.join("raw.bin"), b"raw");
    let nobody = 65534;
    for p in [arch.clone(), arch.join("raw.bin")] {
        std::os::unix::fs::chown(&p, Some(nobody), Some(nobody)).unwrap();
    }
    let config = tmp.path().join("ferry.conf");
    std::fs::write(
        &config,
        format!(
            "[settings]\nxattr_prefix = user.ferry.\n\n[Endpoint {EP}]\ntype = directory\npath = {}\nroot = {}\n",
            arch.display(),
            root.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", FERRY])
        .args(["endpoint", "check", "--config"])
        .arg(&config)
        .args(["--endpoint", EP, "--repair", "--grace", "0", "--json"]);
    let out = run(c);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.show()));
    let r = Report { v, out };
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(0, 0, 0);
    r.assert_rows(&[("uncommitted", "raw.bin", "kept_unverified")]);
    let errors = r.errors();
    assert_eq!(errors.len(), 1, "{}", r.show());
    assert!(
        errors[0].contains("locked"),
        "the error names the directory: {errors:?}"
    );
    assert_eq!(r.files_scanned(), Some(1), "{}", r.show());
    assert!(arch.join("raw.bin").is_file(), "the object stays");
}

/// An upload whose staging lock is held at that moment by a check's probe
/// (here: the test holds it while strace delays the upload's `flock`) waits
/// for it rather than running on without it, so a later check still sees
/// the upload as in progress and a repair leaves its file alone.
#[test]
fn dir_upload_whose_lock_was_busy_stays_in_progress() {
    let have_strace = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::require(have_strace, "strace (fault injection) is needed") {
        return;
    }
    let env = Env::dir();
    let file = env.path(b"big.bin");
    std::fs::write(&file, random_bytes(9, 30 << 20)).unwrap();
    let log = env.tmp.path().join("strace.log");
    // Each flock waits 1 s before it runs, each write 0.5 s (the copy takes
    // 8 writes of 4 MiB).
    let mut child = Command::new("strace")
        .args(["-f", "-o"])
        .arg(&log)
        .args(["-e", "trace=flock,write", "-e", "inject=flock:delay_enter=1000000"])
        .args(["-e", "inject=write:delay_enter=500000", FERRY, "migrate", "--config"])
        .arg(&env.config)
        .args(["--no-progress", "--endpoint", EP])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staging = env.arch().join("#staging");
    let t0 = Instant::now();
    let staged = loop {
        assert!(t0.elapsed() < Duration::from_secs(20), "no staging file appeared");
        if let Some(e) = std::fs::read_dir(&staging).ok().and_then(|mut d| d.next()) {
            break e.unwrap().path();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The test probes the lock, as a check does, while the upload's flock
    // is still delayed; it lets go once the upload has asked for the lock
    // (which then waits for the probe instead of failing).
    let probe = File::open(&staged).unwrap();
    // SAFETY: a valid open descriptor.
    let r = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "the upload's flock has not run yet");
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("flock(") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the upload never asked for its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the injected delay: the upload's flock is now waiting on ours.
    std::thread::sleep(Duration::from_millis(1200));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains("EAGAIN"),
        "the upload did not wait for the lock:\n{log_text}"
    );
    drop(probe);
    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    let status = common::wait_with_deadline(&mut child, Duration::from_secs(60), "migrate");
    assert!(status.success(), "the migrate failed: {}", r.show());
    r.assert_counts(0, 0, 1);
    r.assert_rows(&[]);
}

// ---------------------------------------------------------------------------
// 4. S3

/// A metadata document as ferry writes into sidecars (of an empty file).
const SIDECAR_DOC: &str = r#"{"v":1,"size":0,"blake3":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262","mode":33188,"uid":0,"gid":0,"mtime":[0,0],"atime":[0,0]}"#;

/// Runs Python `code` with `s3` a boto3 client for the moto server and `B`
/// the bucket; returns its stdout.
fn s3py(url: &str, bucket: &str, code: &str) -> String {
    let script = format!(
        "import base64, json, boto3\ns3 = boto3.client('s3', endpoint_url={url:?}, aws_access_key_id={:?}, aws_secret_access_key={:?}, region_name={:?})\nB = {bucket:?}\n{code}\n",
        common::s3::ACCESS_KEY,
        common::s3::SECRET_KEY,
        common::s3::REGION
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether boto3 can be imported (moto brings it); a failure under CI.
fn boto3_or_skip() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    common::require(ok, "the S3 leftovers are made with boto3 (python3 -c 'import boto3')")
}

/// An S3 environment and boto3; `None` to skip.
fn s3_env(test: &str) -> Option<(Env, String, String)> {
    let env = Env::s3(test)?;
    if !boto3_or_skip() {
        return None;
    }
    let (url, bucket) = match &env.backend {
        common::ops::Backend::S3 { url, bucket } => (url.clone(), bucket.clone()),
        common::ops::Backend::Dir(_) => unreachable!(),
    };
    Some((env, url, bucket))
}

/// Every key in the bucket, sorted.
fn s3_keys(url: &str, bucket: &str) -> Vec<String> {
    let out = s3py(
        url,
        bucket,
        "print(json.dumps(sorted(o['Key'] for o in s3.list_objects_v2(Bucket=B).get('Contents', []))))",
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// The keys of every unfinished multipart upload, sorted.
fn s3_uploads(url: &str, bucket: &str) -> Vec<String> {
    let out = s3py(
        url,
        bucket,
        "print(json.dumps(sorted(u['Key'] for u in s3.list_multipart_uploads(Bucket=B).get('Uploads', []))))",
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Starts a multipart upload of `key` with one part and leaves it.
fn s3_start_upload(url: &str, bucket: &str, key: &str) {
    s3py(
        url,
        bucket,
        &format!(
            "u = s3.create_multipart_upload(Bucket=B, Key={key:?})\ns3.upload_part(Bucket=B, Key={key:?}, UploadId=u['UploadId'], PartNumber=1, Body=b'x' * 1024)"
        ),
    );
}

/// After migrate (one file's metadata in a sidecar object) the bucket is
/// clean: exit 0, every object committed, no leftovers.
#[test]
fn s3_clean_bucket_after_migrate() {
    let Some((env, url, bucket)) = s3_env("s3_clean_bucket_after_migrate") else {
        return;
    };
    let a = env.path(b"a.txt");
    std::fs::write(&a, random_bytes(1, 1000)).unwrap();
    give_big_xattr(&a);
    migrate_files(&env, &[("b.txt", 2000)]);
    let run = env.migrate(&[], std::slice::from_ref(&a));
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(s3_keys(&url, &bucket), ["a.txt", "a.txt#m", "b.txt"]);

    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_counts(2, 3000, 0);
    r.assert_rows(&[]);
    assert_eq!(r.errors().len(), 0, "{}", r.show());

    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_rows(&[]);
    assert_eq!(r.files_scanned(), None, "{}", r.show());
    assert_eq!(s3_keys(&url, &bucket), ["a.txt", "a.txt#m", "b.txt"]);
    assert_eq!(s3_uploads(&url, &bucket), Vec::<String>::new());
}

/// Every S3 leftover kind beside two committed objects: a foreign object
/// (no ferry metadata) is kept_foreign always and never sets exit 1; an
/// orphan sidecar, objects whose metadata is unreadable or names a missing
/// sidecar, and an unfinished multipart upload are removed (the upload
/// aborted) by --repair --grace 0.
#[test]
fn s3_every_leftover_kind() {
    let Some((env, url, bucket)) = s3_env("s3_every_leftover_kind") else {
        return;
    };
    migrate_files(&env, &[("a.txt", 100), ("b.txt", 200)]);

    // A foreign object alone: reported, kept, exit 0.
    s3py(
        &url,
        &bucket,
        "s3.put_object(Bucket=B, Key='foreign.txt', Body=b'not ferry')",
    );
    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(0), "a foreign object is no failure: {}", r.show());
    r.assert_counts(2, 300, 0);
    r.assert_rows(&[("foreign", "foreign.txt", "kept_foreign")]);
    assert_eq!(r.leftover("foreign.txt")["size"], 9);

    // A sidecar holds a metadata document (an object that does not is
    // someone else's).
    s3py(
        &url,
        &bucket,
        &format!("s3.put_object(Bucket=B, Key='ghost#m', Body=b'{SIDECAR_DOC}')"),
    );
    s3py(
        &url,
        &bucket,
        &format!(
            "s3.put_object(Bucket=B, Key='lost-sidecar.bin', Body=b'0123456789', Metadata={{'ferry': base64.b64encode({:?}.encode()).decode()}})",
            dangling_pointer()
        ),
    );
    s3py(
        &url,
        &bucket,
        "s3.put_object(Bucket=B, Key='garbled.bin', Body=b'x', Metadata={'ferry': 'not-base64!'})",
    );
    s3_start_upload(&url, &bucket, "big.bin");
    assert_eq!(s3_uploads(&url, &bucket), ["big.bin"]);
    let kinds = [
        ("orphan_sidecar", "ghost#m"),
        ("incomplete_upload", "big.bin"),
        ("uncommitted", "garbled.bin"),
        ("uncommitted", "lost-sidecar.bin"),
    ];
    let mut reported = with_action(&kinds, "reported");
    reported.push(("foreign", "foreign.txt", "kept_foreign"));

    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(2, 300, 0);
    r.assert_rows(&reported);
    assert_eq!(r.errors().len(), 0, "{}", r.show());
    assert_eq!(
        r.leftover("lost-sidecar.bin")["detail"],
        "object metadata is unreadable: the metadata sidecar the object names is missing"
    );
    assert!(
        r.leftover("garbled.bin")["detail"]
            .as_str()
            .unwrap()
            .starts_with("object metadata is unreadable: base64"),
        "{}",
        r.show()
    );
    assert_eq!(r.leftover("big.bin")["size"], 0);
    // The upload's age comes from its Initiated time (moto says 2010), not
    // the epoch fallback.
    let age = r.leftover("big.bin")["age_seconds"].as_u64().unwrap();
    assert!(age < now_secs() - 365 * 86_400, "upload age {age}");
    assert!(
        r.out.stderr.contains("4 leftover(s) remain, 0 part(s) unreadable"),
        "{}",
        r.show()
    );

    // A grace longer than any age keeps everything (moto dates every
    // upload in 2010, so an hour would not do for the upload).
    let r = check_json(&env.config, &["--repair", "--grace", "2000000000"]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    let mut kept = with_action(&kinds, "kept_recent");
    kept.push(("foreign", "foreign.txt", "kept_foreign"));
    r.assert_rows(&kept);
    assert_eq!(r.files_scanned(), None, "{}", r.show());

    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(0), "only the foreign object remains: {}", r.show());
    r.assert_counts(2, 300, 0);
    let mut removed = with_action(&kinds, "removed");
    removed.push(("foreign", "foreign.txt", "kept_foreign"));
    r.assert_rows(&removed);
    assert_eq!(r.files_scanned(), Some(2), "{}", r.show());
    assert_eq!(r.errors().len(), 0, "{}", r.show());
    assert_eq!(s3_keys(&url, &bucket), ["a.txt", "b.txt", "foreign.txt"]);
    assert_eq!(s3_uploads(&url, &bucket), Vec::<String>::new());

    let r = check_json(&env.config, &[]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_rows(&[("foreign", "foreign.txt", "kept_foreign")]);
}

/// A bucket that cannot be listed (it does not exist) is an unreadable part
/// of the store: exit 1, one error, no leftovers.
#[test]
fn s3_missing_bucket_is_unreadable() {
    let Some(server) = common::s3::S3Server::get() else {
        return;
    };
    let env = Env::s3_at(&server.endpoint);
    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(0, 0, 0);
    r.assert_rows(&[]);
    let errors = r.errors();
    assert_eq!(errors.len(), 1, "{}", r.show());
    assert!(errors[0].contains("NoSuchBucket"), "{errors:?}");
    assert!(
        r.out.stderr.contains("0 leftover(s) remain, 1 part(s) unreadable"),
        "{}",
        r.show()
    );
}

/// An uncommitted S3 object a stub's location names is kept_referenced.
#[test]
fn s3_referenced_uncommitted_object_is_kept() {
    let Some((env, url, bucket)) = s3_env("s3_referenced_uncommitted_object_is_kept") else {
        return;
    };
    let paths = migrate_files(&env, &[("a.txt", 100)]);
    assert_eq!(location(&paths[0]).as_deref(), Some("a.txt"));
    // Replace a.txt's object by one whose metadata is unreadable.
    s3py(
        &url,
        &bucket,
        "s3.put_object(Bucket=B, Key='a.txt', Body=b'x' * 100, Metadata={'ferry': 'not-base64!'})",
    );
    s3py(
        &url,
        &bucket,
        "s3.put_object(Bucket=B, Key='raw.bin', Body=b'x', Metadata={'ferry': 'not-base64!'})",
    );
    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(1), "{}", r.show());
    r.assert_counts(0, 0, 0);
    r.assert_rows(&[
        ("uncommitted", "a.txt", "kept_referenced"),
        ("uncommitted", "raw.bin", "removed"),
    ]);
    assert_eq!(r.files_scanned(), Some(1), "{}", r.show());
    assert_eq!(s3_keys(&url, &bucket), ["a.txt"]);
}

/// Writes an S3 configuration with key prefix `prefix` for the bucket.
fn s3_config_with_prefix(env: &Env, url: &str, bucket: &str, prefix: &str) -> PathBuf {
    let config = env.tmp.path().join("prefixed.conf");
    std::fs::write(
        &config,
        format!(
            "[settings]\nxattr_prefix = user.ferry.\n\n[Endpoint {EP}]\ntype = s3\nbucket = {bucket}\nurl = {url}\naccess_key_id = test\nsecret_access_key = test\nprefix = {prefix}\nroot = {}\n",
            env.tree.display()
        ),
    )
    .unwrap();
    config
}

/// An endpoint with a key prefix surveys only its prefix: objects beside
/// it are not its leftovers.
#[test]
fn s3_prefix_limits_the_object_survey() {
    let Some((env, url, bucket)) = s3_env("s3_prefix_limits_the_object_survey") else {
        return;
    };
    let config = s3_config_with_prefix(&env, &url, &bucket, "data");
    s3py(&url, &bucket, "s3.put_object(Bucket=B, Key='data/f.txt', Body=b'f')");
    s3py(
        &url,
        &bucket,
        "s3.put_object(Bucket=B, Key='database/g.txt', Body=b'g')",
    );
    s3py(&url, &bucket, "s3.put_object(Bucket=B, Key='other#m', Body=b'{}')");
    s3_start_upload(&url, &bucket, "data/big.bin");
    let r = check_json(&config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_rows(&[
        ("incomplete_upload", "data/big.bin", "removed"),
        ("foreign", "data/f.txt", "kept_foreign"),
    ]);
    assert_eq!(s3_keys(&url, &bucket), ["data/f.txt", "database/g.txt", "other#m"]);
    assert_eq!(s3_uploads(&url, &bucket), Vec::<String>::new());
}

/// The prefix is a directory for uploads as for objects: another
/// application's unfinished upload to `database/…` is not the `data`
/// endpoint's to report or abort.
#[test]
fn s3_prefix_limits_the_upload_survey() {
    let Some((env, url, bucket)) = s3_env("s3_prefix_limits_the_upload_survey") else {
        return;
    };
    let config = s3_config_with_prefix(&env, &url, &bucket, "data");
    s3_start_upload(&url, &bucket, "database/theirs.bin");
    let r = check_json(&config, &["--repair", "--grace", "0"]);
    assert_eq!(r.code(), Some(0), "{}", r.show());
    r.assert_rows(&[]);
    assert_eq!(s3_uploads(&url, &bucket), ["database/theirs.bin"], "not ours to abort");
}

/// An object another application stored as `notes#m` is not a sidecar
/// because of its name: it holds no metadata document, so it is foreign and
/// never removed.
#[test]
fn s3_foreign_object_named_like_a_sidecar_is_kept() {
    let Some((env, url, bucket)) = s3_env("s3_foreign_object_named_like_a_sidecar_is_kept") else {
        return;
    };
    s3py(
        &url,
        &bucket,
        "s3.put_object(Bucket=B, Key='notes#m', Body=b'my notes')",
    );
    let r = check_json(&env.config, &["--repair", "--grace", "0"]);
    assert_eq!(s3_keys(&url, &bucket), ["notes#m"], "{}", r.show());
    r.assert_rows(&[("foreign", "notes#m", "kept_foreign")]);
}

/// A directory store shared by two endpoints (different `prefix` and
/// `root`): checking one never removes the other's uncommitted object that
/// the other's stub points at.
#[test]
fn dir_shared_store_other_endpoints_objects_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (root1, root2) = (tmp.path().join("fs1"), tmp.path().join("fs2"));
    for d in [&store, &root1, &root2] {
        std::fs::create_dir(d).unwrap();
    }
    let config = tmp.path().join("ferry.conf");
    std::fs::write(
        &config,
        format!(
            "[settings]\nxattr_prefix = user.ferry.\n\n[Endpoint {EP}]\ntype = directory\npath = {s}\nprefix = fs1\nroot = {}\n\n[Endpoint two]\ntype = directory\npath = {s}\nprefix = fs2\nroot = {}\n",
            root1.display(),
            root2.display(),
            s = store.display()
        ),
    )
    .unwrap();
    let f = root2.join("f.txt");
    std::fs::write(&f, b"the only copy").unwrap();
    let mut c = Command::new(FERRY);
    c.args(["migrate", "--config"])
        .arg(&config)
        .args(["--no-progress", "--endpoint", "two"])
        .arg(&f);
    let out = run(c);
    assert_eq!(out.code, Some(0), "{}", out.show());
    assert!(store.join("fs2/f.txt").is_file());
    // fs2/f.txt loses its metadata; endpoint two's stub still points at it.
    xattr::remove(store.join("fs2/f.txt"), META).unwrap();
    let r = check_json(&config, &["--repair", "--grace", "0"]);
    assert!(
        store.join("fs2/f.txt").is_file(),
        "endpoint two's object stays: {}",
        r.show()
    );
}

// ---------------------------------------------------------------------------
// 5. The agent's upkeep

/// With `endpoint_check_interval = 1` and `endpoint_check_grace = 0` the
/// agent removes a dead staging file and an orphan sidecar within seconds,
/// logging one line for each, and leaves a locked (live) upload alone.
#[test]
fn agent_upkeep_removes_leftovers() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut agent = common::agent::Agent::new("endpoint_check_interval = 1\nendpoint_check_grace = 0");
    let store = agent.dir.path().join("archive");
    let dead = store.join("#staging/dead");
    let sidecar = store.join("ghost#m");
    plant(&dead, b"dead upload");
    plant(&sidecar, b"{}");
    let live = store.join("#staging/live");
    let _lock = plant_locked(&live, b"live upload");
    agent.start();
    let t0 = Instant::now();
    while exists(&dead) || exists(&sidecar) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "leftovers still there after 20 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two more runs after the one that removed them: nothing more goes.
    let done = agent.log().matches("endpoint upkeep done").count();
    agent.wait_log_n("endpoint upkeep done", done + 2, Duration::from_secs(20));
    let log = agent.log();
    assert_eq!(log.matches("endpoint upkeep scheduled").count(), 1, "{log}");
    let scheduled = log.lines().find(|l| l.contains("endpoint upkeep scheduled")).unwrap();
    assert!(
        scheduled.contains("every_seconds=1") && scheduled.contains("grace_seconds=0"),
        "{scheduled}"
    );
    let removed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("endpoint upkeep removed a leftover"))
        .collect();
    assert_eq!(removed.len(), 2, "{log}");
    assert!(
        removed
            .iter()
            .any(|l| l.contains("#staging/dead") && l.contains("Staging")),
        "{removed:?}"
    );
    assert!(
        removed
            .iter()
            .any(|l| l.contains("ghost#m") && l.contains("OrphanSidecar")),
        "{removed:?}"
    );
    assert_eq!(log.matches("endpoint upkeep could not").count(), 0, "{log}");
    assert!(live.is_file(), "the live upload stays");
    for l in log.lines().filter(|l| l.contains("endpoint upkeep done")) {
        assert!(l.contains("in_progress=1"), "{l}");
    }
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
}

/// `endpoint_check_interval = 0` schedules no upkeep: nothing in the log,
/// leftovers stay.
#[test]
fn agent_upkeep_off_with_interval_zero() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut agent = common::agent::Agent::new("endpoint_check_interval = 0\nendpoint_check_grace = 0");
    let dead = agent.dir.path().join("archive/#staging/dead");
    plant(&dead, b"dead upload");
    agent.start();
    std::thread::sleep(Duration::from_millis(2500));
    let log = agent.log();
    assert_eq!(log.matches("endpoint upkeep").count(), 0, "{log}");
    assert!(dead.is_file(), "nothing removed it");
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
}

// ---------------------------------------------------------------------------
// 6. Configuration and usage errors

/// A configuration with one directory endpoint and `extra` in [settings].
fn config_with(tmp: &Path, extra: &str) -> PathBuf {
    let arch = tmp.join("arch");
    std::fs::create_dir_all(&arch).unwrap();
    let config = tmp.join("ferry.conf");
    std::fs::write(
        &config,
        format!(
            "[settings]\nxattr_prefix = user.ferry.\n{extra}\n\n[Endpoint {EP}]\ntype = directory\npath = {}\nroot = {}\n",
            arch.display(),
            tmp.display()
        ),
    )
    .unwrap();
    config
}

/// Bad `endpoint_check_interval`/`endpoint_check_grace` values are
/// file:line errors (exit 2) for the check and the agent alike; an unknown
/// endpoint, a store that does not exist and a bad --grace are exit 2 with
/// a clear message and no report.
#[test]
fn config_and_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (line, value) in [
        ("endpoint_check_interval", "abc"),
        ("endpoint_check_interval", "1.5"),
        ("endpoint_check_grace", "-1"),
        ("endpoint_check_grace", "1h"),
    ] {
        let config = config_with(tmp.path(), &format!("{line} = {value}"));
        let want = format!(
            "{}:3: `{line}`: expected a whole number of seconds (0 or more), found {value:?}",
            config.display()
        );
        let out = run(check_cmd(&config, EP, &[]));
        assert_eq!(out.code, Some(2), "{}", out.show());
        assert_eq!(out.stdout, "", "{}", out.show());
        assert!(out.stderr.contains(&want), "want {want:?}: {}", out.show());
        let mut agent = Command::new(FERRY);
        agent.args(["agent", "--config"]).arg(&config);
        let out = run(agent);
        assert_eq!(out.code, Some(2), "{}", out.show());
        assert!(out.stderr.contains(&want), "agent: want {want:?}: {}", out.show());
    }

    let config = config_with(tmp.path(), "endpoint_check_interval = 0\nendpoint_check_grace = 0");
    let out = run(check_cmd(&config, EP, &[]));
    assert_eq!(out.code, Some(0), "valid values: {}", out.show());

    let out = run(check_cmd(&config, "nope", &["--json"]));
    assert_eq!(out.code, Some(2), "{}", out.show());
    assert_eq!(out.stdout, "", "{}", out.show());
    let want = format!("no endpoint `nope` in {} (defined: {EP})", config.display());
    assert!(out.stderr.contains(&want), "want {want:?}: {}", out.show());

    let out = run(check_cmd(&config, EP, &["--grace", "1.5"]));
    assert_eq!(out.code, Some(2), "{}", out.show());
    assert!(
        out.stderr
            .contains("expected a whole number of seconds (0 or more), found \"1.5\""),
        "{}",
        out.show()
    );

    std::fs::remove_dir(tmp.path().join("arch")).unwrap();
    let out = run(check_cmd(&config, EP, &[]));
    assert_eq!(out.code, Some(2), "{}", out.show());
    assert_eq!(out.stdout, "", "{}", out.show());
    assert!(
        out.stderr
            .contains(&format!("directory {}", tmp.path().join("arch").display()))
            && out.stderr.contains("No such file or directory"),
        "{}",
        out.show()
    );
}
