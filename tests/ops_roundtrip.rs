//! `ferry migrate` / `premigrate` / `recall` round trips on a real tree,
//! against both a directory endpoint and S3 (moto; skipped loudly when it
//! cannot be started outside CI): after migrate each file is a stub that
//! keeps its size, owner, mode, times and head; after recall it is exactly
//! what it was (content, holes, owner, mode, mtime to the nanosecond, user
//! xattrs, inode).

mod common;

use common::ops::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// Writes `data` at `offsets` of a file of `size` bytes (holes elsewhere).
fn sparse_file(path: &Path, size: u64, parts: &[(u64, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in parts {
        f.write_all_at(data, *off).unwrap();
    }
}

/// Gives a file an owner, mode, nanosecond mtime and user xattrs that a
/// restore must bring back.
fn dress(path: &Path, n: u32) {
    std::os::unix::fs::chown(path, Some(1234 + n), Some(5678)).unwrap();
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(if n.is_multiple_of(2) { 0o640 } else { 0o751 }),
    )
    .unwrap();
    xattr::set(path, "user.project", format!("alpha-{n}").as_bytes()).unwrap();
    xattr::set(path, "user.raw", &[0xff, 0x00, 0x80, b'x']).unwrap();
    set_mtime(path, 1_600_000_000 + u64::from(n), 123_456_789 + n);
}

/// The files of the main round trip: (name, content as written).
fn make_kinds(env: &Env) -> Vec<(PathBuf, FileSnap, u64)> {
    let mut out = Vec::new();
    let mut add = |name: &str, n: u32, make: &dyn Fn(&Path)| {
        let p = env.path(name.as_bytes());
        make(&p);
        dress(&p, n);
        // Allocation as ext4 settles it, for the hole comparison later.
        std::fs::File::open(&p).unwrap().sync_all().unwrap();
        let b = blocks(&p);
        out.push((p.clone(), snap(&p), b));
    };
    add("empty", 0, &|p| std::fs::write(p, b"").unwrap());
    add("one-byte", 1, &|p| std::fs::write(p, b"x").unwrap());
    for (i, size) in [4095usize, 4096, 4097].into_iter().enumerate() {
        add(&format!("s{size}"), 2 + i as u32, &|p| {
            std::fs::write(p, random_bytes(size as u64, size)).unwrap()
        });
    }
    add("one-mib", 5, &|p| std::fs::write(p, random_bytes(5, MIB)).unwrap());
    // More than 8 MiB: streamed upload, recall staged in a file.
    add("twenty-mib", 6, &|p| {
        std::fs::write(p, random_bytes(6, 20 * MIB)).unwrap()
    });
    add("zeros-written", 7, &|p| {
        std::fs::write(p, vec![0u8; 64 * 1024]).unwrap()
    });
    add("sparse", 8, &|p| {
        sparse_file(
            p,
            3 * MIB as u64,
            &[
                (0, random_bytes(80, 4096)),
                (MIB as u64, random_bytes(81, 8192)),
                (3 * MIB as u64 - 100, random_bytes(82, 100)),
            ],
        )
    });
    add("sparse-big", 9, &|p| {
        sparse_file(
            p,
            24 * MIB as u64,
            &[
                (0, random_bytes(90, 10_000)),
                (10 * MIB as u64 + 7, random_bytes(91, 70_000)),
                (24 * MIB as u64 - 4096, random_bytes(92, 4096)),
            ],
        )
    });
    add("sparse-hole-head", 10, &|p| {
        sparse_file(p, 2 * MIB as u64, &[(MIB as u64, random_bytes(100, 5000))])
    });
    out
}

fn kinds_round_trip(env: Env) {
    let files = make_kinds(&env);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();

    let run = env.migrate(&["--stub-size", "4096"], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let (obj, results) = run.object();
    assert_eq!(obj["status"]["task"], "dynamo.tasks.migrate");
    assert_eq!(obj["status"]["input_total"].as_u64(), Some(paths.len() as u64));
    assert_eq!(results.len(), paths.len());
    for r in &results {
        assert_eq!(r.state, "processed", "{r:?}");
    }
    // The input order is kept in input_paths.
    let inputs: Vec<Vec<u8>> = obj["status"]["input_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| unmask(p["path"].as_str().unwrap()))
        .collect();
    assert_eq!(inputs, paths.iter().map(|p| pbytes(p)).collect::<Vec<_>>());

    for (p, before, blocks_before) in &files {
        let st = state(p).unwrap_or_else(|| panic!("{}: no state after migrate", p.display()));
        let size = before.data.len();
        assert!(
            st.starts_with(&format!("migrated size={size} ")),
            "{}: {st}",
            p.display()
        );
        assert_eq!(state_field(&st, "stub"), "4096", "{st}");
        assert_eq!(
            state_field(&st, "blake3"),
            blake3::hash(&before.data).to_hex().to_string(),
            "{}: hash",
            p.display()
        );
        assert_eq!(
            state_field(&st, "mtime"),
            format!("{}.{:09}", before.mtime.0, before.mtime.1),
            "{st}"
        );
        assert_eq!(location(p).as_deref(), Some(env.key_of(p).as_str()));
        // The stub: same size, owner, mode, mtime, xattrs; head readable;
        // everything past the (block-rounded) stub size punched.
        let now = snap(p);
        assert_eq!(now.data.len(), size, "{}: size kept", p.display());
        assert_eq!(
            (now.mode, now.uid, now.gid, now.mtime, &now.xattrs),
            (before.mode, before.uid, before.gid, before.mtime, &before.xattrs),
            "{}: stub metadata",
            p.display()
        );
        let head = size.min(4096);
        assert_same_data(&now.data[..head], &before.data[..head], p);
        let blksize = std::os::unix::fs::MetadataExt::blksize(&std::fs::metadata(p).unwrap()) as usize;
        let kept = 4096usize.div_ceil(blksize) * blksize;
        if size > kept {
            assert!(
                now.data[kept..].iter().all(|&b| b == 0),
                "{}: data beyond the stub size was not punched",
                p.display()
            );
        }
        if size >= MIB && blocks_before > &100 {
            let after = blocks(p);
            assert!(
                after * 4 < *blocks_before,
                "{}: st_blocks {blocks_before} before, {after} as a stub: not freed",
                p.display()
            );
        }
        if let Backend::Dir(arch) = &env.backend {
            let o = arch.join(env.key_of(p));
            assert_same_data(&std::fs::read(&o).unwrap(), &before.data, &o);
            let meta = xattr::get(&o, "user.ferry.object")
                .unwrap()
                .expect("object metadata xattr");
            let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
            assert_eq!(meta["size"].as_u64(), Some(size as u64), "{meta}");
            assert_eq!(meta["blake3"], blake3::hash(&before.data).to_hex().as_str(), "{meta}");
            assert_eq!(meta["uid"].as_u64(), Some(u64::from(before.uid)), "{meta}");
        } else {
            assert!(env.object_exists(&env.key_of(p)), "{}: no object", p.display());
        }
    }

    // Again: nothing to do.
    let again = env.migrate(&["--stub-size", "4096", "--jsonl"], &paths);
    assert_eq!(again.code, Some(0), "{}", again.show());
    again.assert_all("skipped", paths.len());
    for r in again.results() {
        assert_eq!(r.message, vec!["already migrated".to_string()], "{r:?}");
    }

    let rec = env.recall(&[], &paths);
    assert_eq!(rec.code, Some(0), "{}", rec.show());
    let (obj, _) = rec.object();
    assert_eq!(obj["status"]["task"], "dynamo.tasks.recall");
    rec.assert_all("processed", paths.len());
    for (p, before, blocks_before) in &files {
        assert_restored(p, before);
        let st = state(p).unwrap();
        assert!(st.starts_with("premigrated "), "{}: {st}", p.display());
        // Holes stay holes (a little slack for ext4's extent blocks).
        let after = blocks(p);
        assert!(
            after <= blocks_before + 16,
            "{}: {blocks_before} blocks before migrate, {after} after recall: holes filled",
            p.display()
        );
    }
    let rec2 = env.recall(&["--jsonl"], &paths);
    assert_eq!(rec2.code, Some(0), "{}", rec2.show());
    rec2.assert_all("skipped", paths.len());
}
both!(kinds_round_trip);

/// --stub-size 10000 (not a block multiple): the head up to the next block
/// boundary stays, files no larger than that are not punched at all.
fn stub_size_not_block_multiple(env: Env) {
    let mut files = Vec::new();
    for (i, size) in [9_999usize, 10_000, 10_001, 12_288, 12_289, 40_000, MIB]
        .into_iter()
        .enumerate()
    {
        let p = env.path(format!("f{size}").as_bytes());
        std::fs::write(&p, random_bytes(1000 + i as u64, size)).unwrap();
        std::fs::File::open(&p).unwrap().sync_all().unwrap();
        files.push((p.clone(), snap(&p), blocks(&p)));
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    let run = env.migrate(&["--stub-size", "10000", "--jsonl"], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", paths.len());
    for (p, before, blocks_before) in &files {
        let now = std::fs::read(p).unwrap();
        let size = before.data.len();
        assert_eq!(now.len(), size);
        let blksize = std::os::unix::fs::MetadataExt::blksize(&std::fs::metadata(p).unwrap()) as usize;
        let kept = 10_000usize.div_ceil(blksize) * blksize;
        assert_same_data(&now[..size.min(kept)], &before.data[..size.min(kept)], p);
        assert!(
            now[size.min(kept)..].iter().all(|&b| b == 0),
            "{}: not punched",
            p.display()
        );
        assert_eq!(state_field(&state(p).unwrap(), "stub"), "10000");
        if size == MIB {
            assert!(blocks(p) * 4 < *blocks_before, "{}: blocks not freed", p.display());
        }
    }
    let rec = env.recall(&["--jsonl"], &paths);
    assert_eq!(rec.code, Some(0), "{}", rec.show());
    rec.assert_all("processed", paths.len());
    for (p, before, _) in &files {
        assert_restored(p, before);
    }
}
both!(stub_size_not_block_multiple);

/// Two names of one inode in one batch. Whatever ferry reports, no data may
/// be lost: after recall both names read the original content, and the
/// state is consistent. Expected (the brief's contract): one name processed,
/// the other skipped.
fn hard_links_in_one_batch(env: Env) {
    let a = env.path(b"link-a");
    let b = env.path(b"link-b");
    let data = random_bytes(77, 300_000);
    std::fs::write(&a, &data).unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    let run = env.migrate(&["--jsonl"], &[a.clone(), b.clone()]);
    let ra = run.of_path(&a);
    let rb = run.of_path(&b);
    eprintln!("hard links, migrate: {ra:?}\n{rb:?}");
    let st = state(&a);
    eprintln!("state after: {st:?}, location {:?}", location(&a));
    // Never a stub without the data at the endpoint, whatever happened.
    let recall = env.recall(&["--jsonl"], &[a.clone(), b.clone()]);
    eprintln!("hard links, recall: {}", recall.show());
    assert_same_data(&std::fs::read(&a).unwrap(), &data, &a);
    assert_same_data(&std::fs::read(&b).unwrap(), &data, &b);
    // A name reported "migrated meanwhile by another operation" must be a
    // stub indeed.
    let st = st.expect("a state after migrate");
    for r in [&ra, &rb] {
        if r.message.iter().any(|m| m.contains("migrated meanwhile")) {
            assert!(
                st.starts_with("migrated "),
                "{} reported skipped ({:?}) but the inode is not migrated: state {st:?}",
                String::from_utf8_lossy(&r.path),
                r.message
            );
        }
    }
    let mut states = [ra.state.as_str(), rb.state.as_str()];
    states.sort();
    assert_eq!(
        states,
        ["processed", "skipped"],
        "two links of one inode in one batch: expected one processed and one skipped\n{}",
        run.show()
    );
    assert!(st.starts_with("migrated "));
}
both!(hard_links_in_one_batch);

/// Names that are not UTF-8 or hold a newline, by NUL-separated stdin and
/// by `ferry scan DIR | ferry migrate -`.
fn odd_names(env: Env) {
    let names: [&[u8]; 5] = [
        b"caf\xe9",
        b"new\nline",
        b"tab\there",
        "\u{fc}n\u{ef}c\u{f6}d\u{e9}".as_bytes(),
        b"\xff\xfe",
    ];
    let sub = env.path(b"sub");
    std::fs::create_dir(&sub).unwrap();
    let mut files = Vec::new();
    for (i, n) in names.iter().enumerate() {
        for dir in [&env.tree, &sub] {
            let p = dir.join(std::ffi::OsStr::from_bytes(n));
            std::fs::write(&p, random_bytes(i as u64 + 500, 5000 + i * 1000)).unwrap();
            files.push((p.clone(), snap(&p)));
        }
    }
    let top: Vec<PathBuf> = files
        .iter()
        .map(|f| f.0.clone())
        .filter(|p| p.parent() == Some(&env.tree))
        .collect();
    let inner: Vec<PathBuf> = files
        .iter()
        .map(|f| f.0.clone())
        .filter(|p| p.parent() == Some(&sub))
        .collect();

    // NUL-separated list.
    let run = env.run_stdin("migrate", &["--endpoint", EP, "-0"], &nul_list(&top));
    assert_eq!(run.code, Some(0), "{}", run.show());
    let r = run.results();
    assert_eq!(
        sorted_paths(&r),
        {
            let mut v: Vec<_> = top.iter().map(|p| pbytes(p)).collect();
            v.sort();
            v
        },
        "paths come back byte-exact in the result object"
    );
    assert!(r.iter().all(|x| x.state == "processed"), "{}", run.show());

    // ferry scan's JSON lines piped in.
    let scan = run_cmd(
        {
            let mut c = std::process::Command::new(FERRY);
            c.arg("scan").arg(&sub);
            c
        },
        None,
    );
    assert!(scan.status.success(), "scan: {}", String::from_utf8_lossy(&scan.stderr));
    let run = env.run_stdin("migrate", &["--endpoint", EP, "--jsonl"], &scan.stdout);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let r = run.results();
    for p in &inner {
        let got: Vec<_> = r.iter().filter(|x| x.path == pbytes(p)).collect();
        assert_eq!(got.len(), 1, "{:?} in {}", p, run.show());
        assert_eq!(got[0].state, "processed", "{:?}", got[0]);
    }
    // Anything else the scan listed (the directory itself) is recorded.
    for x in &r {
        if !inner.iter().any(|p| pbytes(p) == x.path) {
            assert_eq!(x.state, "processed", "{x:?}");
        }
    }
    for (p, _) in &files {
        assert!(state(p).unwrap().starts_with("migrated "), "{p:?}");
    }

    // Recall them all through -0, outcomes as JSON lines.
    let all: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    let run = env.run_stdin("recall", &["-0", "--jsonl"], &nul_list(&all));
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", all.len());
    for (p, before) in &files {
        assert_restored(p, before);
    }
}
both!(odd_names);

/// premigrate keeps the data; a second premigrate skips; migrate then only
/// stubs; recall brings it back.
fn premigrate_then_migrate(env: Env) {
    let mut files = Vec::new();
    for (i, size) in [0usize, 3000, 200_000, 9 * MIB].into_iter().enumerate() {
        let p = env.path(format!("p{i}").as_bytes());
        std::fs::write(&p, random_bytes(i as u64 + 40, size)).unwrap();
        dress(&p, i as u32);
        files.push((p.clone(), snap(&p)));
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    let run = env.premigrate(&["--jsonl"], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", paths.len());
    for (p, before) in &files {
        assert_restored(p, before);
        let st = state(p).unwrap();
        assert!(st.starts_with("premigrated "), "{st}");
        assert!(env.object_exists(&env.key_of(p)));
    }
    let again = env.premigrate(&["--jsonl"], &paths);
    assert_eq!(again.code, Some(0), "{}", again.show());
    again.assert_all("skipped", paths.len());

    // The objects as premigrate left them; migrate must not write new ones.
    let stamps: Vec<_> = match &env.backend {
        Backend::Dir(arch) => paths
            .iter()
            .map(|p| std::fs::metadata(arch.join(env.key_of(p))).unwrap().modified().unwrap())
            .collect(),
        Backend::S3 { .. } => Vec::new(),
    };
    let run = env.migrate(&["--jsonl"], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", paths.len());
    for (p, before) in &files {
        let st = state(p).unwrap();
        assert!(st.starts_with("migrated "), "{st}");
        assert_eq!(location(p).as_deref(), Some(env.key_of(p).as_str()), "same object");
        let now = snap(p);
        assert_eq!(now.mtime, before.mtime);
        if before.data.len() > 4096 {
            assert!(now.data[4096..].iter().all(|&b| b == 0), "{}: not stubbed", p.display());
        }
    }
    if let Backend::Dir(arch) = &env.backend {
        for (p, t) in paths.iter().zip(&stamps) {
            assert_eq!(
                &std::fs::metadata(arch.join(env.key_of(p))).unwrap().modified().unwrap(),
                t,
                "{}: object rewritten",
                p.display()
            );
        }
        // No second instance beside any object (`#staging` holds uploads
        // in progress, none now).
        let n = std::fs::read_dir(arch)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "#staging")
            .count();
        assert_eq!(std::fs::read_dir(arch.join("#staging")).unwrap().count(), 0);
        assert_eq!(n, paths.len(), "objects in the target");
    }
    let rec = env.recall(&["--jsonl"], &paths);
    assert_eq!(rec.code, Some(0), "{}", rec.show());
    rec.assert_all("processed", paths.len());
    for (p, before) in &files {
        assert_restored(p, before);
    }
}
both!(premigrate_then_migrate);

/// recall --delete-remote: data back, object gone, ferry's xattrs gone; a
/// premigrated file is released from the endpoint the same way.
fn recall_delete_remote(env: Env) {
    let a = env.path(b"stubbed");
    let b = env.path(b"premigrated");
    std::fs::write(&a, random_bytes(1, 100_000)).unwrap();
    std::fs::write(&b, random_bytes(2, 100_000)).unwrap();
    dress(&a, 1);
    dress(&b, 2);
    let (sa, sb) = (snap(&a), snap(&b));
    let m = env.migrate(&["--jsonl"], std::slice::from_ref(&a));
    assert_eq!(m.code, Some(0), "{}", m.show());
    let m = env.premigrate(&["--jsonl"], std::slice::from_ref(&b));
    assert_eq!(m.code, Some(0), "{}", m.show());
    assert!(env.object_exists("stubbed") && env.object_exists("premigrated"));

    let rec = env.recall(&["--delete-remote", "--jsonl"], &[a.clone(), b.clone()]);
    assert_eq!(rec.code, Some(0), "{}", rec.show());
    rec.assert_all("processed", 2);
    for (p, s) in [(&a, &sa), (&b, &sb)] {
        assert_restored(p, s);
        let ferry_xattrs: Vec<_> = xattr::list(p)
            .unwrap()
            .filter(|n| n.as_bytes().starts_with(PREFIX.as_bytes()))
            .collect();
        assert!(ferry_xattrs.is_empty(), "{}: {ferry_xattrs:?} left", p.display());
        assert!(!env.object_exists(&env.key_of(p)), "{}: object left", p.display());
    }
    // Now an ordinary file again: recall skips it, migrate copies it anew.
    let rec = env.recall(&["--jsonl"], std::slice::from_ref(&a));
    rec.assert_all("skipped", 1);
    let m = env.migrate(&["--jsonl"], std::slice::from_ref(&a));
    m.assert_all("processed", 1);
    assert!(env.object_exists("stubbed"));
}
both!(recall_delete_remote);

/// Directories and symlinks are recorded (their targets untouched), FIFOs
/// are skipped, missing files fail (or are aborted with --abort-missing),
/// and the exit status says so.
#[test]
fn non_files_and_missing() {
    let env = Env::dir();
    let d = env.path(b"dir");
    std::fs::create_dir(&d).unwrap();
    let target = env.path(b"target");
    std::fs::write(&target, random_bytes(3, 50_000)).unwrap();
    let before = snap(&target);
    let l = env.path(b"link");
    std::os::unix::fs::symlink(&target, &l).unwrap();
    let fifo = env.path(b"fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let missing = env.path(b"missing");
    let run = env.migrate(&[], &[d.clone(), l.clone(), fifo.clone(), missing.clone()]);
    assert_eq!(run.code, Some(1), "{}", run.show());
    for p in [&d, &l] {
        assert_eq!(run.of_path(p).state, "processed", "{}", run.show());
    }
    assert_eq!(run.of_path(&fifo).state, "skipped", "{}", run.show());
    assert!(env.object_exists("dir#d") && env.object_exists("link"));
    let m = run.of_path(&missing);
    assert_eq!(m.state, "failures");
    assert!(m.message[0].contains("no such file"), "{m:?}");
    // The link's target is untouched.
    assert_restored(&target, &before);
    assert_eq!(state(&target), None);

    let run = env.migrate(&["--abort-missing"], std::slice::from_ref(&missing));
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(run.of_path(&missing).state, "aborted");

    let bad = env.cmd(
        "migrate",
        &[std::ffi::OsStr::new("--endpoint"), std::ffi::OsStr::new("nope")],
    );
    let mut bad = bad;
    bad.arg(&target);
    let out = run_cmd(bad, None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown endpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&target), None);
}

/// Without --endpoint, each file goes to the endpoint whose root holds it
/// (the deepest such root), as the seed's target file match does; a file
/// no root holds fails with that reason, and the others still migrate.
#[test]
fn migrate_without_an_endpoint_follows_the_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for sub in ["data/projects", "other", "store-data", "store-projects"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let config = d.join("ferry.conf");
    std::fs::write(
        &config,
        format!(
            "[Endpoint data]\ntype = directory\npath = {0}/store-data\nroot = {0}/data\n\n\
             [Endpoint projects]\ntype = directory\npath = {0}/store-projects\nroot = {0}/data/projects\n",
            d.display()
        ),
    )
    .unwrap();
    let files = [
        d.join("data/a.txt"),
        d.join("data/projects/b.txt"),
        d.join("other/c.txt"),
    ];
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, vec![b'x' + i as u8; 1000 * (i + 1)]).unwrap();
    }
    let mut c = std::process::Command::new(FERRY);
    c.args(["premigrate", "--jsonl", "--no-progress", "--config"])
        .arg(&config)
        .args(&files);
    let out = run_cmd(c, None);
    let run = Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(run.code, Some(1), "{}", run.show());
    let states: Vec<(String, Vec<String>)> = files
        .iter()
        .map(|f| {
            let r = run.of_path(f);
            (r.state.clone(), r.message.clone())
        })
        .collect();
    assert_eq!(states[0], ("processed".into(), vec![]), "{}", run.show());
    assert_eq!(states[1], ("processed".into(), vec![]), "{}", run.show());
    assert_eq!(states[2].0, "failures", "{}", run.show());
    assert!(
        states[2].1[0].starts_with("no endpoint's root holds this path"),
        "{:?}",
        states[2]
    );
    let loc = |f: &Path, ep: &str| xattr::get(f, format!("{PREFIX}loc.{ep}")).unwrap();
    assert_eq!(loc(&files[0], "data").as_deref(), Some(&b"a.txt"[..]));
    assert_eq!(loc(&files[1], "projects").as_deref(), Some(&b"b.txt"[..]));
    assert_eq!(loc(&files[1], "data"), None, "the deepest root wins");
    assert_eq!(std::fs::read(d.join("store-data/a.txt")).unwrap(), vec![b'x'; 1000]);
    assert_eq!(std::fs::read(d.join("store-projects/b.txt")).unwrap(), vec![b'y'; 2000]);
    assert!(state(&files[2]).is_none());
}
