//! Stores written by an older ferry stay readable: a tree migrated by ferry
//! at commit 53a13dd to a directory endpoint (stubs with their `user.ferry.*`
//! xattrs, objects named as that version named them, metadata in the
//! `user.ferry.object` xattr) is recalled, and rebuilt elsewhere with
//! reverse-stub, by the ferry under test, and `ferry endpoint check` finds
//! nothing in it to remove. Every file must come back exactly as the
//! manifest recorded it before the old ferry touched it: content (SHA-256),
//! size, mode, owner, mtime to the nanosecond, user xattrs.
//!
//! The fixture is `tests/fixtures/store-53a13dd.tar.gz` (GNU tar, pax format,
//! with xattrs, since git keeps none) with its manifest
//! `tests/fixtures/store-53a13dd.manifest.json`; `tests/fixtures/README.md`
//! says how they were made.

mod common;

use common::ops::{FERRY, PREFIX, Run, run_cmd, state_field, unmask};
use common::{require_root, run_within, skip_or_fail};
use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const ARCHIVE: &str = "store-53a13dd.tar.gz";
const MANIFEST: &str = "store-53a13dd.manifest.json";

/// One file of the manifest, as it was before the old ferry migrated it.
#[derive(Debug)]
struct Expected {
    /// Relative to the tree.
    rel: Vec<u8>,
    /// `migrated` (a stub), `premigrated`, or `link` (a second name of the
    /// entry `link_of`, migrated through that one).
    kind: String,
    link_of: Option<Vec<u8>>,
    size: u64,
    sha256: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// `user.` xattrs outside ferry's prefix, sorted.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The state xattr the old ferry wrote.
    state: String,
    /// The object key (the location xattr).
    key: String,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s:?}: {e}")))
        .collect()
}

fn manifest() -> (Value, Vec<Expected>) {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(MANIFEST)).unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();
    let num = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("number: {v}"));
    let files = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Expected {
            rel: hex(f["path_hex"].as_str().unwrap()),
            kind: f["kind"].as_str().unwrap().to_string(),
            link_of: f.get("link_of_hex").map(|v| hex(v.as_str().unwrap())),
            size: num(&f["size"]),
            sha256: f["sha256"].as_str().unwrap().to_string(),
            mode: num(&f["mode"]) as u32,
            uid: num(&f["uid"]) as u32,
            gid: num(&f["gid"]) as u32,
            mtime: (f["mtime"][0].as_i64().unwrap(), f["mtime"][1].as_i64().unwrap()),
            xattrs: f["xattrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (hex(p[0].as_str().unwrap()), hex(p[1].as_str().unwrap())))
                .collect(),
            state: f["state"].as_str().unwrap().to_string(),
            key: f["key"].as_str().unwrap().to_string(),
        })
        .collect();
    (m, files)
}

/// The extracted fixture in a temporary directory, with a configuration
/// whose endpoint `arch` has the extracted store and `root` the extracted
/// tree.
struct Fixture {
    tmp: tempfile::TempDir,
    tree: PathBuf,
    store: PathBuf,
    config: PathBuf,
    manifest: Value,
    files: Vec<Expected>,
}

impl Fixture {
    /// `None` (a loud skip, a failure under CI) without root, or when the
    /// temporary directory's filesystem has no user xattrs.
    fn extract(test: &str) -> Option<Fixture> {
        // The stubs and objects belong to other owners, which only root's
        // tar keeps, and recall must write into them.
        if !require_root(test) {
            return None;
        }
        let tmp = tempfile::Builder::new().prefix("ferry-old-layout-").tempdir().unwrap();
        let probe = tmp.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        if let Err(e) = xattr::set(&probe, "user.ferry-probe", b"1") {
            skip_or_fail(&format!(
                "{test}: the temporary directory {} has no user xattrs ({e})",
                tmp.path().display()
            ));
            return None;
        }
        std::fs::remove_file(&probe).unwrap();
        let mut tar = Command::new("tar");
        tar.args(["--xattrs", "--xattrs-include=*", "-xzf"])
            .arg(Path::new(FIXTURES).join(ARCHIVE))
            .arg("-C")
            .arg(tmp.path());
        let out = run_within(&mut tar, None, Duration::from_secs(60), None);
        assert!(
            out.status.success(),
            "extracting {ARCHIVE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (manifest, files) = manifest();
        let tree = tmp.path().join(manifest["tree"].as_str().unwrap());
        let store = tmp.path().join(manifest["store"].as_str().unwrap());
        assert_eq!(manifest["xattr_prefix"], PREFIX);
        let ep = manifest["endpoint"].as_str().unwrap();
        let config = tmp.path().join("ferry.conf");
        std::fs::write(
            &config,
            format!(
                "[settings]\nxattr_prefix = {PREFIX}\n\n[Endpoint {ep}]\ntype = directory\npath = {}\nroot = {}\n",
                store.display(),
                tree.display()
            ),
        )
        .unwrap();
        let f = Fixture {
            tmp,
            tree,
            store,
            config,
            manifest,
            files,
        };
        f.check_extracted();
        Some(f)
    }

    /// The extraction kept what the old ferry left (xattrs above all), so
    /// that a failure later is ferry's and not tar's.
    fn check_extracted(&self) {
        for e in &self.files {
            let p = self.path(&e.rel);
            let md = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
            assert_eq!(md.len(), e.size, "{}: size", p.display());
            assert_eq!(
                xattr::get(&p, format!("{PREFIX}state")).unwrap().as_deref(),
                Some(e.state.as_bytes()),
                "{}: the extracted stub lost its state xattr",
                p.display()
            );
            assert_eq!(location(&p).as_deref(), Some(e.key.as_str()), "{}", p.display());
            // The old layout: an object's file is named exactly by its key.
            if e.kind != "link" {
                assert!(self.store.join(&e.key).is_file(), "no object file at key {:?}", e.key);
            }
        }
        let objects = self.manifest["store_files"].as_array().unwrap();
        assert_eq!(
            objects.len(),
            self.files.len() - self.count("link"),
            "one object per inode"
        );
        for s in objects {
            let p = self
                .store
                .join(OsStr::from_bytes(&hex(s["path_hex"].as_str().unwrap())));
            let md = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
            assert_eq!(md.len(), s["size"].as_u64().unwrap(), "{}", p.display());
            assert_eq!(
                xattr::get(&p, format!("{PREFIX}object")).unwrap().as_deref(),
                Some(s["object_xattr"].as_str().unwrap().as_bytes()),
                "{}: the extracted object lost its metadata xattr",
                p.display()
            );
        }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        self.tree.join(OsStr::from_bytes(rel))
    }

    /// Runs `ferry SUB --config CONFIG --no-progress -0 ARGS -` on `paths`.
    fn run(&self, config: &Path, sub: &str, args: &[&str], paths: &[PathBuf]) -> Run {
        let mut c = Command::new(FERRY);
        c.arg(sub)
            .arg("--config")
            .arg(config)
            .arg("--no-progress")
            .arg("-0")
            .args(args)
            .arg("-");
        let mut list = Vec::new();
        for p in paths {
            list.extend_from_slice(p.as_os_str().as_bytes());
            list.push(0);
        }
        let o = run_cmd(c, Some(&list));
        Run {
            code: o.status.code(),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn count(&self, kind: &str) -> usize {
        self.files.iter().filter(|e| e.kind == kind).count()
    }
}

fn location(p: &Path) -> Option<String> {
    xattr::get(p, format!("{PREFIX}loc.arch"))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// `user.` xattrs outside ferry's prefix, sorted.
fn user_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = xattr::list(p)
        .unwrap()
        .map(|n| n.as_bytes().to_vec())
        .filter(|n| n.starts_with(b"user.") && !n.starts_with(PREFIX.as_bytes()))
        .map(|n| {
            let value = xattr::get(p, OsStr::from_bytes(&n)).unwrap().unwrap_or_default();
            (n, value)
        })
        .collect();
    v.sort();
    v
}

/// SHA-256 of `data` as lowercase hex, by coreutils' `sha256sum`.
fn sha256(data: &[u8]) -> String {
    let out = run_within(
        &mut Command::new("sha256sum"),
        Some(data),
        Duration::from_secs(30),
        None,
    );
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Asserts the file at `p` is `e` restored: content, size, mode, owner,
/// mtime, user xattrs; and premigrated with the old object's size, mtime and
/// hash, at the old key.
fn assert_restored(p: &Path, e: &Expected) {
    let shown = p.display();
    let data = std::fs::read(p).unwrap_or_else(|err| panic!("{shown}: {err}"));
    assert_eq!(data.len() as u64, e.size, "{shown}: size");
    assert_eq!(sha256(&data), e.sha256, "{shown}: content differs from the original");
    let md = std::fs::symlink_metadata(p).unwrap();
    assert_eq!(
        (md.mode(), md.uid(), md.gid(), (md.mtime(), md.mtime_nsec())),
        (e.mode, e.uid, e.gid, e.mtime),
        "{shown}: (mode, uid, gid, mtime)"
    );
    assert_eq!(user_xattrs(p), e.xattrs, "{shown}: user xattrs");
    let state = xattr::get(p, format!("{PREFIX}state"))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
        .unwrap_or_else(|| panic!("{shown}: no state xattr"));
    assert!(state.starts_with("premigrated "), "{shown}: state {state:?}");
    for word in ["size", "mtime", "blake3"] {
        assert_eq!(
            state_field(&state, word),
            state_field(&e.state, word),
            "{shown}: `{word}` of the state {state:?}, was {:?}",
            e.state
        );
    }
    assert_eq!(
        state_field(&state, "blake3"),
        blake3::hash(&data).to_hex().as_str(),
        "{shown}: state hash"
    );
    assert_eq!(location(p).as_deref(), Some(e.key.as_str()), "{shown}: location");
}

/// `ferry stat` sees the stubs and the premigrated file as the old ferry
/// left them; `ferry recall` of every file fills each stub from its old
/// object (the premigrated file and the second hard link are skipped);
/// every file is then what it was; a second recall has nothing to do; the
/// store is untouched.
#[test]
fn recall_from_a_53a13dd_store() {
    let Some(fx) = Fixture::extract("recall_from_a_53a13dd_store") else {
        return;
    };
    let paths: Vec<PathBuf> = fx.files.iter().map(|e| fx.path(&e.rel)).collect();
    let migrated = fx.count("migrated");
    let premigrated = fx.count("premigrated");
    let links = fx.count("link");
    assert_eq!(migrated + premigrated + links, fx.files.len(), "kinds in {MANIFEST}");
    // The fixture as made: a manifest that lost entries must not pass.
    assert_eq!((migrated, premigrated, links), (20, 1, 1), "kinds in {MANIFEST}");

    // stat: residency as the old ferry recorded it.
    let run = fx.run(&fx.config, "stat", &[], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let (obj, results) = run.object();
    assert_eq!(results.len(), paths.len(), "{}", run.show());
    let hsm: Vec<(Vec<u8>, String)> = obj["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                unmask(p["path"].as_str().unwrap()),
                p["hsm"].as_str().unwrap_or("none").to_string(),
            )
        })
        .collect();
    for e in &fx.files {
        let want = match e.kind.as_str() {
            "premigrated" => "premigrated",
            _ => "migrated",
        };
        let p = fx.path(&e.rel);
        let got: Vec<_> = hsm.iter().filter(|(q, _)| q == p.as_os_str().as_bytes()).collect();
        assert_eq!(got.len(), 1, "{}: stat outcomes {}", p.display(), run.show());
        assert_eq!(got[0].1, want, "{}: hsm", p.display());
    }

    // Stubs before the recall: same size, data punched out.
    let stub = fx.path(b"plain.txt");
    assert!(
        std::fs::read(&stub).unwrap().iter().all(|&b| b == 0),
        "plain.txt should be a stub with no data"
    );

    let run = fx.run(&fx.config, "recall", &[], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let (obj, results) = run.object();
    assert_eq!(obj["status"]["task"], "dynamo.tasks.recall");
    let summary = &obj["status"]["summary"];
    assert_eq!(
        (
            summary["processed"].as_u64(),
            summary["skipped"].as_u64(),
            summary["aborted"].as_u64(),
            summary["failures"].as_u64()
        ),
        (
            Some(migrated as u64),
            Some((premigrated + links) as u64),
            Some(0),
            Some(0)
        ),
        "{}",
        run.show()
    );
    // Each inode is recalled once: of two hard links, whichever name a
    // worker reaches first is processed and the other skipped.
    let mut processed_inodes = std::collections::HashSet::new();
    for e in &fx.files {
        let p = fx.path(&e.rel);
        let r: Vec<_> = results.iter().filter(|r| r.path == p.as_os_str().as_bytes()).collect();
        assert_eq!(r.len(), 1, "{}: {}", p.display(), run.show());
        let ino = std::fs::metadata(&p).unwrap().ino();
        match e.kind.as_str() {
            "premigrated" => assert_eq!(r[0].state, "skipped", "{}: {:?}", p.display(), r[0]),
            _ if r[0].state == "processed" => {
                assert!(processed_inodes.insert(ino), "{}: inode recalled twice", p.display());
            }
            _ => assert_eq!(r[0].state, "skipped", "{}: {:?}", p.display(), r[0]),
        }
    }
    assert_eq!(processed_inodes.len(), migrated, "{}", run.show());

    for e in &fx.files {
        assert_restored(&fx.path(&e.rel), e);
    }
    // Hard links are still one inode.
    for e in fx.files.iter().filter(|e| e.kind == "link") {
        let a = std::fs::metadata(fx.path(&e.rel)).unwrap();
        let b = std::fs::metadata(fx.path(e.link_of.as_ref().unwrap())).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "hard link {:?}", e.rel);
    }
    // Holes came back as holes (ext4 counts an external xattr block too).
    let sparse = std::fs::metadata(fx.path(b"sparse.bin")).unwrap();
    assert!(
        sparse.blocks() * 512 <= 16384,
        "sparse.bin: {} blocks allocated for 8 KiB of data",
        sparse.blocks()
    );

    // Again: nothing to recall.
    let run = fx.run(&fx.config, "recall", &[], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("skipped", paths.len());

    // The store is as the old ferry left it.
    for s in fx.manifest["store_files"].as_array().unwrap() {
        let p = fx.store.join(OsStr::from_bytes(&hex(s["path_hex"].as_str().unwrap())));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), s["size"].as_u64().unwrap());
    }
}

/// The receiving half of a sync reads the old store by key alone: a second
/// configuration with the same store and another, empty `root` gets every
/// file back with `reverse-stub` (stubs with a 4 KiB head; files no larger
/// than that whole), and recalling those stubs makes every file what it
/// was. The second hard link has no object of its own and is left out.
#[test]
fn reverse_stub_from_a_53a13dd_store() {
    let Some(fx) = Fixture::extract("reverse_stub_from_a_53a13dd_store") else {
        return;
    };
    let site2 = fx.tmp.path().join("site2");
    std::fs::create_dir(&site2).unwrap();
    let config2 = fx.tmp.path().join("site2.conf");
    std::fs::write(
        &config2,
        format!(
            "[settings]\nxattr_prefix = {PREFIX}\n\n[Endpoint arch]\ntype = directory\npath = {}\nroot = {}\n",
            fx.store.display(),
            site2.display()
        ),
    )
    .unwrap();
    let files: Vec<&Expected> = fx.files.iter().filter(|e| e.kind != "link").collect();
    let paths: Vec<PathBuf> = files.iter().map(|e| site2.join(OsStr::from_bytes(&e.rel))).collect();

    let run = fx.run(
        &config2,
        "reverse-stub",
        &["--endpoint", "arch", "--stub-size", "4096"],
        &paths,
    );
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", paths.len());
    let whole = files.iter().filter(|e| e.size <= 4096).count();
    for (p, e) in paths.iter().zip(&files) {
        let md = std::fs::symlink_metadata(p).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
        assert_eq!(md.len(), e.size, "{}: size", p.display());
        let state = String::from_utf8(xattr::get(p, format!("{PREFIX}state")).unwrap().unwrap()).unwrap();
        let want = if e.size <= 4096 { "premigrated " } else { "migrated " };
        assert!(state.starts_with(want), "{}: state {state:?}", p.display());
    }

    let run = fx.run(&config2, "recall", &[], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(
        (run.count("processed"), run.count("skipped"), run.results().len()),
        (files.len() - whole, whole, files.len()),
        "{}",
        run.show()
    );
    for (p, e) in paths.iter().zip(&files) {
        assert_restored(p, e);
    }
}

/// `ferry endpoint check` counts every object of the old store as committed
/// and finds nothing to remove, and `--repair` (with no grace period)
/// removes nothing: old objects are neither leftovers nor uncommitted.
#[test]
fn endpoint_check_keeps_a_53a13dd_store() {
    let Some(fx) = Fixture::extract("endpoint_check_keeps_a_53a13dd_store") else {
        return;
    };
    let objects = fx.manifest["store_files"].as_array().unwrap();
    let bytes: u64 = objects.iter().map(|s| s["size"].as_u64().unwrap()).sum();
    for args in [&["--json"][..], &["--json", "--repair", "--grace", "0"][..]] {
        let mut c = Command::new(FERRY);
        c.args(["endpoint", "check", "--config"])
            .arg(&fx.config)
            .args(["--endpoint", "arch"])
            .args(args);
        let out = run_cmd(c, None);
        let text = String::from_utf8_lossy(&out.stdout);
        let shown = format!("{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{shown}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {shown}"));
        assert_eq!(v["objects"].as_u64(), Some(objects.len() as u64), "{shown}");
        assert_eq!(v["bytes"].as_u64(), Some(bytes), "{shown}");
        assert_eq!(v["in_progress"].as_u64(), Some(0), "{shown}");
        assert_eq!(v["leftovers"], serde_json::json!([]), "{shown}");
        assert_eq!(v["errors"], serde_json::json!([]), "{shown}");
    }
    fx.check_extracted();
}
