//! What a sync between two sites needs from the operations, end to end
//! through the `ferry` binary against a directory endpoint:
//!
//! - `delete` of a deleted tree as a snapshot diff lists it (parent before
//!   children) removes the deepest paths first, so no directory is found
//!   "not empty";
//! - `move -p` makes a destination's missing parents (mode 0755, marked as
//!   made parents), and without it the move fails and the source stays;
//! - metadata-only changes (chown, chmod, xattrs, `touch`) on site A travel
//!   with `--overwrite` through `premigrate` and `reverse-stub --hydrate`
//!   to site B and are applied in place (same inode), and nothing churns
//!   when nothing changed;
//! - `unmanage --moved` removes only the locations that no longer name the
//!   file (a moved file), and keeps them on the file at its own key and on
//!   a new hard link of a file already sent;
//! - `move --relocate` on B copies a moved stub's object (a moved
//!   directory's stubs too) to its new path's key, so A reusing the old
//!   key does not cut the stub off its data; a moved whole file forgets
//!   its stale location;
//! - a hard link made on A after its file was sent joins the group on B
//!   (one inode, no link index left), and a separate copy on B heals into
//!   the group with `--overwrite` only.
//!
//! Site B shares site A's endpoint (same directory, another root), so a
//! file's object key is the same on both sites.

mod common;

use common::ops::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Site B: another tree (root) on site A's directory endpoint.
fn site_b(a: &Env) -> Env {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-sync-b-")
        .tempdir()
        .expect("tempdir");
    Env::dir_at(tmp, a.arch().to_path_buf())
}

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

fn nlink(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().nlink()
}

/// `reverse-stub --endpoint arch --hydrate --jsonl EXTRA PATHS`.
fn hydrate(env: &Env, extra: &[&str], paths: &[PathBuf]) -> Run {
    let mut a = vec!["--endpoint", EP, "--hydrate", "--jsonl"];
    a.extend_from_slice(extra);
    env.run("reverse-stub", &a, paths)
}

/// Asserts the one outcome of `run` is `path` in `state` with exactly
/// `message` (an empty message is no message).
fn assert_one(run: &Run, path: &Path, state: &str, message: &str) {
    assert_eq!(run.results().len(), 1, "{}", run.show());
    let r = run.of_path(path);
    assert_eq!(r.state, state, "{}", run.show());
    let want: Vec<String> = if message.is_empty() {
        Vec::new()
    } else {
        vec![message.to_string()]
    };
    assert_eq!(r.message, want, "{}", run.show());
}

/// (uid, gid, permission bits) of `p`.
fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn mtime_ns(p: &Path) -> (i64, i64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

// ---------------------------------------------------------------------------
// delete

/// A directory listed before its contents (as a snapshot diff lists a
/// deleted tree) is removed after them: deepest first, even on one thread
/// and without `--recursive`.
#[test]
fn delete_goes_deepest_first_within_a_batch() {
    let env = Env::dir();
    let d = env.path(b"d");
    let sub = d.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(d.join("x"), b"x").unwrap();
    std::fs::write(sub.join("y"), b"y").unwrap();
    let paths = vec![d.clone(), sub.clone(), sub.join("y"), d.join("x")];
    let run = env.run("delete", &["--jsonl", "-j", "1"], &paths);
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", 4);
    for p in &paths {
        assert_one_of(&run, p, "processed");
        assert!(std::fs::symlink_metadata(p).is_err(), "{} is gone", p.display());
    }
    assert!(env.tree.is_dir(), "the tree itself stays");
}

/// `path`'s outcome in a run of several is `state` with no message.
fn assert_one_of(run: &Run, path: &Path, state: &str) {
    let r = run.of_path(path);
    assert_eq!((r.state.as_str(), r.message.len()), (state, 0), "{}", run.show());
}

// ---------------------------------------------------------------------------
// move -p

/// Without `-p` a move into a missing directory fails and the source
/// stays; with it the parents are made with mode 0755 and the made-parent
/// mark (`user.ferry.parent`, empty), so a later directory object gives
/// them their own attributes.
#[test]
fn move_make_parents() {
    let env = Env::dir();
    let src = env.path(b"src");
    std::fs::write(&src, b"moving").unwrap();
    let (n1, n2) = (env.path(b"new1"), env.path(b"new1/new2"));
    let dst = n2.join("dst");

    let run = env.run("move", &["--jsonl"], &[src.clone(), dst.clone()]);
    let r = run.of_path(&dst);
    assert_eq!(r.state, "failures", "{}", run.show());
    assert_eq!(std::fs::read(&src).unwrap(), b"moving", "the source stays");
    assert!(!n1.exists(), "no parent made without -p");

    for flag in ["-p", "--make-parents"] {
        let run = env.run("move", &["--jsonl", flag], &[src.clone(), dst.clone()]);
        assert_eq!(run.code, Some(0), "{}", run.show());
        assert_one(&run, &dst, "processed", "");
        assert_eq!(std::fs::read(&dst).unwrap(), b"moving");
        assert!(!src.exists(), "the source moved");
        for d in [&n1, &n2] {
            let m = std::fs::symlink_metadata(d).unwrap();
            assert!(m.is_dir(), "{}", d.display());
            assert_eq!(m.mode() & 0o7777, 0o755, "{}", d.display());
            assert_eq!(
                xattr::get(d, "user.ferry.parent").unwrap(),
                Some(Vec::new()),
                "{} is marked as a made parent",
                d.display()
            );
        }
        // Back again for the long flag's turn.
        std::fs::rename(&dst, &src).unwrap();
        std::fs::remove_dir(&n2).unwrap();
        std::fs::remove_dir(&n1).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Flushing a window together

/// How many times `ferry ARGS PATHS` called each of `calls`, counted by
/// `strace -f -c`; the command must succeed.
fn syscalls(env: &Env, sub: &str, args: &[&str], paths: &[PathBuf], calls: &[&str]) -> Vec<u64> {
    let c = env.cmd(sub, &args.iter().map(std::ffi::OsStr::new).collect::<Vec<_>>());
    let summary = tempfile::NamedTempFile::new().unwrap();
    let mut s = std::process::Command::new("strace");
    s.args(["-f", "-c", "-U", "calls,name", "-e"])
        .arg(format!("trace={}", calls.join(",")))
        .arg("-o")
        .arg(summary.path())
        .arg(c.get_program())
        .args(c.get_args())
        .args(paths);
    let out = run_cmd(s, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(summary.path()).unwrap();
    calls
        .iter()
        .map(|call| {
            text.lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let n = w.next()?.parse::<u64>().ok()?;
                    (w.next()? == *call).then_some(n)
                })
                .sum()
        })
        .collect()
}

/// reverse-stub writes a window's new files, makes them durable with one
/// `syncfs`, renames them into place and makes that durable with one
/// more: 40 files cost 2 `syncfs` and no `fsync`, where they cost 80
/// `fsync`s (each file, then its directory) before.
#[test]
fn reverse_stub_flushes_a_window_with_two_syncfs_not_an_fsync_per_file() {
    let a = Env::dir();
    let b = site_b(&a);
    let on_a: Vec<PathBuf> = (0..40).map(|i| a.path(format!("f{i}").as_bytes())).collect();
    for (i, p) in on_a.iter().enumerate() {
        std::fs::write(p, vec![i as u8; 5000]).unwrap();
    }
    a.premigrate(&["--jsonl"], &on_a).assert_all("processed", 40);
    let on_b: Vec<PathBuf> = (0..40).map(|i| b.path(format!("f{i}").as_bytes())).collect();
    let calls = ["fsync", "fdatasync", "syncfs"];
    let n = syscalls(&b, "reverse-stub", &["--endpoint", EP, "--hydrate"], &on_b, &calls);
    assert_eq!(n, [0, 0, 2], "{calls:?}");
    for (i, p) in on_b.iter().enumerate() {
        assert_eq!(std::fs::read(p).unwrap(), vec![i as u8; 5000], "{}", p.display());
        assert!(state(p).unwrap().starts_with("premigrated "));
    }
    assert_eq!(
        std::fs::read_dir(&b.tree).unwrap().count(),
        40,
        "no temporary file left"
    );
}

/// A hydrated file whose written data ends at its size is not truncated
/// to that size (a filesystem transaction for nothing); one that ends in
/// a hole (zero blocks are left unwritten) is, and reads back whole.
#[test]
fn reverse_stub_truncates_only_a_file_whose_data_ends_short_of_its_size() {
    let a = Env::dir();
    let b = site_b(&a);
    let mut tail_hole = vec![7u8; 4096];
    tail_hole.extend_from_slice(&[0u8; 8192]);
    let contents: Vec<Vec<u8>> = (0..8u8)
        .map(|i| vec![i + 1; 5000])
        .chain([vec![0u8; 8192], tail_hole])
        .collect();
    let on_a: Vec<PathBuf> = (0..contents.len())
        .map(|i| a.path(format!("t{i}").as_bytes()))
        .collect();
    for (p, c) in on_a.iter().zip(&contents) {
        std::fs::write(p, c).unwrap();
    }
    a.premigrate(&["--jsonl"], &on_a)
        .assert_all("processed", contents.len());
    let on_b: Vec<PathBuf> = (0..contents.len())
        .map(|i| b.path(format!("t{i}").as_bytes()))
        .collect();
    let n = syscalls(
        &b,
        "reverse-stub",
        &["--endpoint", EP, "--hydrate"],
        &on_b,
        &["ftruncate"],
    );
    assert_eq!(n, [2], "only the two files that end in a hole");
    for (p, c) in on_b.iter().zip(&contents) {
        assert_eq!(&std::fs::read(p).unwrap(), c, "{}", p.display());
    }
}

// ---------------------------------------------------------------------------
// Relocating moved stubs

/// A's files premigrated, and stubbed (or with `whole`, hydrated) on B at
/// the same names.
fn stubbed_on_b(a: &Env, b: &Env, files: &[(&str, &[u8])], whole: bool) -> Vec<PathBuf> {
    let on_a: Vec<PathBuf> = files.iter().map(|(n, _)| a.path(n.as_bytes())).collect();
    for ((_, data), p) in files.iter().zip(&on_a) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    a.premigrate(&["--overwrite", "--jsonl"], &on_a)
        .assert_all("processed", files.len());
    let on_b: Vec<PathBuf> = files.iter().map(|(n, _)| b.path(n.as_bytes())).collect();
    for p in &on_b {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    }
    let mut args = vec!["--endpoint", EP, "--jsonl"];
    if whole {
        args.push("--hydrate");
    }
    b.run("reverse-stub", &args, &on_b).assert_all("processed", files.len());
    on_b
}

/// Stubs moved on B with `--relocate` (a directory of two and a file)
/// still recall their own data after A rewrote the objects at their old
/// keys; the same move without it leaves a stub whose recall fails. A
/// moved whole file forgets the location of its old key.
#[test]
fn move_relocate_keeps_moved_stubs_recallable() {
    let a = Env::dir();
    let b = site_b(&a);
    let stubs = stubbed_on_b(
        &a,
        &b,
        &[
            ("d/f1", b"first one"),
            ("d/f2", b"second"),
            ("g", b"gee"),
            ("plain", b"not relocated"),
            ("s1", b"swapped one"),
            ("s2", b"swapped two"),
            ("c1", b"chain one"),
            ("c2", b"chain two"),
        ],
        false,
    );
    let whole = stubbed_on_b(&a, &b, &[("w", b"whole")], true);
    assert!(state(&stubs[0]).unwrap().contains("migrated"), "{:?}", state(&stubs[0]));
    let moves = [
        (b.path(b"d"), b.path(b"e")),
        (b.path(b"g"), b.path(b"h")),
        (whole[0].clone(), b.path(b"w2")),
        // A swap (a cycle: one object is parked under a temporary key) and
        // a chain listed in the order that would overwrite c2's object
        // first (c1 -> c2 -> c3).
        (b.path(b"s1"), b.path(b"s2")),
        (b.path(b"s2"), b.path(b"s1")),
        (b.path(b"c1"), b.path(b"c2")),
        (b.path(b"c2"), b.path(b"c3")),
    ];
    let list: Vec<PathBuf> = moves.iter().flat_map(|(s, d)| [s.clone(), d.clone()]).collect();
    let run = b.run("move", &["--jsonl", "--relocate"], &list);
    assert_eq!(run.code, Some(0), "{}", run.show());
    for (to, copied, forgotten) in [
        ("e", 2, 0),
        ("h", 1, 0),
        ("w2", 0, 1),
        ("s1", 1, 0),
        ("s2", 1, 0),
        ("c2", 1, 0),
        ("c3", 1, 0),
    ] {
        let r = run.of_path(&b.path(to.as_bytes()));
        assert_eq!(r.state, "processed", "{}", run.show());
        assert_eq!(
            r.message,
            vec![format!(
                "moved; {copied} stub object(s) copied to their new keys, {forgotten} stale location(s) forgotten"
            )],
            "{}",
            run.show()
        );
    }
    // The control: a stub moved without relocating.
    let run = b.run("move", &["--jsonl"], &[stubs[3].clone(), b.path(b"plain2")]);
    assert_one(&run, &b.path(b"plain2"), "processed", "");

    // A writes new files at the paths the moves left empty, replacing
    // their keys' objects.
    let old: Vec<PathBuf> = ["d/f1", "d/f2", "g", "plain", "w", "c1"]
        .iter()
        .map(|n| a.path(n.as_bytes()))
        .collect();
    for p in &old {
        std::fs::write(p, b"A's new file at the old path").unwrap();
    }
    a.premigrate(&["--overwrite", "--jsonl"], &old)
        .assert_all("processed", old.len());

    let moved = [
        (b.path(b"e/f1"), b"first one".as_slice()),
        (b.path(b"e/f2"), b"second"),
        (b.path(b"h"), b"gee"),
        (b.path(b"s1"), b"swapped two"),
        (b.path(b"s2"), b"swapped one"),
        (b.path(b"c2"), b"chain one"),
        (b.path(b"c3"), b"chain two"),
    ];
    for (p, _) in &moved {
        assert_eq!(location(p).as_deref(), Some(b.key_of(p).as_str()), "{}", p.display());
    }
    let paths: Vec<PathBuf> = moved.iter().map(|(p, _)| p.clone()).collect();
    let run = b.recall(&["--jsonl"], &paths);
    run.assert_all("processed", moved.len());
    for (p, data) in &moved {
        assert_eq!(std::fs::read(p).unwrap(), *data, "{}", p.display());
    }
    assert_eq!(location(&b.path(b"w2")), None, "the whole file forgot its old key");
    assert_eq!(std::fs::read(b.path(b"w2")).unwrap(), b"whole");
    let parked: Vec<_> = std::fs::read_dir(a.arch())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("ferry-relocating"))
        .collect();
    assert!(parked.is_empty(), "temporary objects left: {parked:?}");
    let run = b.recall(&["--jsonl"], &[b.path(b"plain2")]);
    assert_eq!(run.of_path(&b.path(b"plain2")).state, "failures", "{}", run.show());
}

// ---------------------------------------------------------------------------
// Metadata-only changes

/// Site A's `f` premigrated and hydrated on site B; returns (A's f, B's f).
fn sent_to_b(a: &Env, b: &Env, name: &str, data: &[u8]) -> (PathBuf, PathBuf) {
    let fa = a.path(name.as_bytes());
    std::fs::write(&fa, data).unwrap();
    std::os::unix::fs::chown(&fa, Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(&fa, std::fs::Permissions::from_mode(0o644)).unwrap();
    xattr::set(&fa, "user.tag", b"v1").unwrap();
    set_mtime(&fa, 1_500_000_000, 111);
    let run = a.premigrate(&["--overwrite", "--jsonl"], std::slice::from_ref(&fa));
    assert_one(&run, &fa, "processed", "");
    let fb = b.path(name.as_bytes());
    let run = hydrate(b, &["--overwrite"], std::slice::from_ref(&fb));
    assert_one(&run, &fb, "processed", "");
    assert_eq!(std::fs::read(&fb).unwrap(), data);
    (fa, fb)
}

/// chown, chmod and an xattr change on A travel to B with `--overwrite`
/// and are applied in place; `touch -d` travels the same way.
#[test]
fn metadata_only_changes_travel_with_overwrite() {
    let a = Env::dir();
    let b = site_b(&a);
    let data = random_bytes(3, 20_000);
    let (fa, fb) = sent_to_b(&a, &b, "f", &data);
    let ino_b = ino(&fb);
    assert_eq!(owner_mode(&fb), (1000, 1001, 0o644));
    assert_eq!(user_xattrs(&fb), vec![(b"user.tag".to_vec(), b"v1".to_vec())]);

    // Nothing changed: nothing to do on either side.
    let run = a.premigrate(&["--overwrite", "--jsonl"], std::slice::from_ref(&fa));
    assert_one(&run, &fa, "skipped", "already premigrated");
    let run = hydrate(&b, &["--overwrite"], std::slice::from_ref(&fb));
    assert_one(&run, &fb, "skipped", "already a premigrated copy of this object");

    std::os::unix::fs::chown(&fa, Some(1002), Some(1003)).unwrap();
    std::fs::set_permissions(&fa, std::fs::Permissions::from_mode(0o640)).unwrap();
    xattr::set(&fa, "user.tag", b"v2").unwrap();

    // Without overwrite the metadata change is not sent.
    let run = a.premigrate(&["--jsonl"], std::slice::from_ref(&fa));
    assert_one(&run, &fa, "skipped", "already premigrated");
    let run = a.premigrate(&["--overwrite", "--jsonl"], std::slice::from_ref(&fa));
    assert_one(&run, &fa, "processed", "");

    // B: without overwrite the local copy is kept as it is.
    let run = hydrate(&b, &[], std::slice::from_ref(&fb));
    assert_one(&run, &fb, "skipped", "already a premigrated copy of this object");
    assert_eq!(owner_mode(&fb), (1000, 1001, 0o644));

    let run = hydrate(&b, &["--overwrite"], std::slice::from_ref(&fb));
    assert_one(&run, &fb, "processed", "same content; applied the object's metadata");
    assert_eq!(owner_mode(&fb), (1002, 1003, 0o640));
    assert_eq!(user_xattrs(&fb), vec![(b"user.tag".to_vec(), b"v2".to_vec())]);
    assert_eq!(ino(&fb), ino_b, "applied in place, not rebuilt");
    assert_eq!(std::fs::read(&fb).unwrap(), data);
    assert_eq!(mtime_ns(&fb), mtime_ns(&fa));
    let run = hydrate(&b, &["--overwrite"], std::slice::from_ref(&fb));
    assert_one(&run, &fb, "skipped", "already a premigrated copy of this object");

    // touch -d: a new mtime, the same content.
    sh("touch", &["-d", "@1600000000.123456789", fa.to_str().unwrap()]);
    assert_eq!(mtime_ns(&fa), (1_600_000_000, 123_456_789));
    let run = a.premigrate(&["--overwrite", "--jsonl"], std::slice::from_ref(&fa));
    assert_one(&run, &fa, "processed", "");
    let run = hydrate(&b, &["--overwrite"], std::slice::from_ref(&fb));
    assert_one(&run, &fb, "processed", "same content; applied the object's metadata");
    assert_eq!(mtime_ns(&fb), (1_600_000_000, 123_456_789));
    assert_eq!(ino(&fb), ino_b, "applied in place, not rebuilt");
    assert_eq!(owner_mode(&fb), (1002, 1003, 0o640));
    // The recorded state follows the new time: nothing more to do.
    let st = state(&fb).expect("state");
    assert!(st.starts_with("premigrated "), "{st}");
    let run = hydrate(&b, &["--overwrite"], std::slice::from_ref(&fb));
    assert_one(&run, &fb, "skipped", "already a premigrated copy of this object");
}

// ---------------------------------------------------------------------------
// unmanage --moved

/// `unmanage --moved` keeps a location that still names the file: its own
/// key, or another name of the same inode; it removes one left by a move.
#[test]
fn unmanage_moved_keeps_locations_that_still_name_the_file() {
    let env = Env::dir();
    let f = env.path(b"f");
    std::fs::write(&f, b"sent once").unwrap();
    env.premigrate(&["--jsonl"], std::slice::from_ref(&f))
        .assert_all("processed", 1);
    assert_eq!(location(&f).as_deref(), Some("f"));

    let moved = |p: &Path| env.run("unmanage", &["--moved", "--jsonl"], &[p.to_path_buf()]);
    let run = moved(&f);
    assert_one(&run, &f, "skipped", "no location xattrs of moved files");
    assert_eq!(location(&f).as_deref(), Some("f"), "at its own key: kept");
    assert!(state(&f).unwrap().starts_with("premigrated "));

    let g = env.path(b"g");
    std::fs::rename(&f, &g).unwrap();
    assert_eq!(location(&g).as_deref(), Some("f"));
    let run = moved(&g);
    assert_one(&run, &g, "processed", "");
    assert_eq!(location(&g), None, "moved: its location goes");
    assert_eq!(state(&g), None, "and the state with the last location");
    assert_eq!(std::fs::read(&g).unwrap(), b"sent once");

    // A new hard link of a file already sent.
    let f2 = env.path(b"f2");
    std::fs::write(&f2, b"linked later").unwrap();
    env.premigrate(&["--jsonl"], std::slice::from_ref(&f2))
        .assert_all("processed", 1);
    let h = env.path(b"h");
    std::fs::hard_link(&f2, &h).unwrap();
    let run = moved(&h);
    assert_one(&run, &h, "skipped", "no location xattrs of moved files");
    assert_eq!(location(&h).as_deref(), Some("f2"), "another name of the file: kept");
    assert_eq!(location(&f2).as_deref(), Some("f2"));
    assert!(state(&f2).unwrap().starts_with("premigrated "));
}

// ---------------------------------------------------------------------------
// Hard-link groups across sites

/// A/f1 sent to B/f1, then `ln f1 f2` on A and f2 premigrated: f2 is only
/// recorded as another name of f1's file.
fn link_on_a(a: &Env, b: &Env) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let data = random_bytes(8, 30_000);
    let (a1, b1) = sent_to_b(a, b, "f1", &data);
    let a2 = link_and_record(a, &a1);
    (a1, a2, b1, b.path(b"f2"))
}

/// `ln f1 f2` on A and f2 premigrated: recorded as another name only.
fn link_and_record(a: &Env, a1: &Path) -> PathBuf {
    let a2 = a.path(b"f2");
    std::fs::hard_link(a1, &a2).unwrap();
    let run = a.premigrate(&["--overwrite", "--jsonl"], std::slice::from_ref(&a2));
    assert_one(
        &run,
        &a2,
        "skipped",
        "already premigrated; recorded as another name of the file whose object is f1",
    );
    a2
}

/// The new name arrives on B as another name of B's f1.
#[test]
fn hard_link_groups_join_on_the_destination() {
    let a = Env::dir();
    let b = site_b(&a);
    let (_a1, _a2, b1, b2) = link_on_a(&a, &b);
    let run = hydrate(&b, &["--overwrite"], std::slice::from_ref(&b2));
    assert_one(&run, &b2, "processed", "");
    assert_eq!(ino(&b2), ino(&b1), "one inode");
    assert_eq!(nlink(&b1), 2);
    assert_eq!(std::fs::read(&b2).unwrap(), random_bytes(8, 30_000));
    assert!(
        std::fs::symlink_metadata(b.path(b".ferry-links")).is_err(),
        "no link index left"
    );
    // Redelivered: already there.
    let run = hydrate(&b, &["--overwrite"], &[b1.clone(), b2.clone()]);
    run.assert_all("skipped", 2);
    assert_eq!(nlink(&b1), 2);
}

/// B holds f2 as a separate copy of the group's content (same state
/// xattrs): it stays separate without `--overwrite`, and becomes a name
/// of B's f1 with it.
#[test]
fn a_separate_copy_heals_into_the_group() {
    let a = Env::dir();
    let b = site_b(&a);
    let data = random_bytes(8, 30_000);
    let (a1, b1) = sent_to_b(&a, &b, "f1", &data);
    let b2 = b.path(b"f2");
    sh("cp", &["-a", b1.to_str().unwrap(), b2.to_str().unwrap()]);
    assert_ne!(ino(&b1), ino(&b2));
    assert_eq!(state(&b2), state(&b1), "cp -a carries the state");
    link_and_record(&a, &a1);

    let copy_ino = ino(&b2);
    let run = hydrate(&b, &[], std::slice::from_ref(&b2));
    assert_one(&run, &b2, "skipped", "already a premigrated copy of this object");
    assert_eq!(ino(&b2), copy_ino, "kept separate without overwrite");
    assert_eq!((nlink(&b1), nlink(&b2)), (1, 1));

    let run = hydrate(&b, &["--overwrite"], std::slice::from_ref(&b2));
    assert_one(&run, &b2, "processed", "");
    assert_eq!(ino(&b2), ino(&b1), "healed into one inode");
    assert_eq!(nlink(&b1), 2);
    assert_eq!(std::fs::read(&b2).unwrap(), data);
    assert!(
        std::fs::symlink_metadata(b.path(b".ferry-links")).is_err(),
        "no link index left"
    );
}
