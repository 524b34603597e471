//! A tree travels through an endpoint (directory and S3): `premigrate` on
//! site A records its files, directories (mode, owner, times, user xattrs,
//! ACLs) and symbolic links; `reverse-stub --hydrate` builds it again, in
//! several calls and in any order, and `rsync -aHAXn --delete` finds
//! nothing to change between the two.

mod common;

use common::ops::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Sets the access and modification times of `p` itself (a link's own).
fn touch(p: &Path, sec: u64, nsec: u32) {
    let at = format!("@{sec}.{nsec:09}");
    sh("touch", &["-h".as_ref(), "-d".as_ref(), at.as_ref(), p.as_os_str()]);
}

/// Sets a link's own times and owner.
fn dress_link(p: &Path, uid: u32, sec: u64) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid + 1)).unwrap();
    touch(p, sec, 123_456_789);
}

/// Gives a directory a mode, owner, user xattr and times (times last of
/// all, by the caller, deepest first).
fn dress_dir(p: &Path, mode: u32, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid + 7)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    xattr::set(p, "user.dir", format!("d-{uid}").as_bytes()).unwrap();
}

/// Site A's tree under `tree/t`: nested directories with odd modes,
/// owners, times, xattrs and ACLs, files, absolute, relative and dangling
/// links, hard-link groups, and names with a newline and invalid UTF-8.
/// Returns the directories, and the other paths (the hard links last:
/// `h1`, `h2`, `h3`, then `p1`, `p2`).
fn make_tree(env: &Env) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let t = env.path(b"t");
    let d1 = t.join("d1");
    let d2 = d1.join("d2");
    let odd = t.join(OsStr::from_bytes(b"odd\nname\xff"));
    for d in [&t, &d1, &d2, &odd] {
        std::fs::create_dir(d).unwrap();
    }
    let f = d2.join("f");
    std::fs::write(&f, random_bytes(1, 70_000)).unwrap();
    let g = odd.join(OsStr::from_bytes(b"x\ny\x80"));
    std::fs::write(&g, b"in an odd place").unwrap();
    let top = t.join("top");
    std::fs::write(&top, b"top").unwrap();
    for (n, p) in [&f, &g, &top].into_iter().enumerate() {
        std::os::unix::fs::chown(p, Some(2000 + n as u32), Some(3000)).unwrap();
        xattr::set(p, "user.file", &[n as u8, 0xff]).unwrap();
        set_mtime(p, 1_500_000_000 + n as u64, 7 + n as u32);
    }
    // ACLs: an access ACL on a directory and a file, a default ACL.
    sh("setfacl", &["-m".as_ref(), "u:1234:rwx".as_ref(), d1.as_os_str()]);
    sh(
        "setfacl",
        &["-d".as_ref(), "-m".as_ref(), "g:77:rx".as_ref(), d1.as_os_str()],
    );
    sh("setfacl", &["-m".as_ref(), "u:4321:r".as_ref(), f.as_os_str()]);
    let abs = t.join("abs");
    let rel = d1.join("rel");
    let dangling = odd.join(OsStr::from_bytes(b"dangling\xfe"));
    std::os::unix::fs::symlink("/etc/hostname", &abs).unwrap();
    std::os::unix::fs::symlink("d2/f", &rel).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"../nowhere\n\xff"), &dangling).unwrap();
    for (n, p) in [&abs, &rel, &dangling].into_iter().enumerate() {
        dress_link(p, 4000 + n as u32, 1_400_000_000 + n as u64);
    }
    // Hard links: a group of three names in three directories, and one
    // of two.
    let h1 = t.join("h1");
    std::fs::write(&h1, random_bytes(2, 10_000)).unwrap();
    xattr::set(&h1, "user.linked", b"yes").unwrap();
    set_mtime(&h1, 1_450_000_000, 11);
    let h2 = d1.join("h2");
    let h3 = odd.join(OsStr::from_bytes(b"h3\n\xff"));
    std::fs::hard_link(&h1, &h2).unwrap();
    std::fs::hard_link(&h1, &h3).unwrap();
    let p1 = d2.join("p1");
    std::fs::write(&p1, b"pair").unwrap();
    let p2 = t.join("p2");
    std::fs::hard_link(&p1, &p2).unwrap();
    dress_dir(&t, 0o750, 1001);
    dress_dir(&d1, 0o700, 1002);
    // The ACL's mask follows the mode's group bits: set them after.
    dress_dir(&d2, 0o2775, 1003);
    dress_dir(&odd, 0o1777, 1004);
    for (n, d) in [&d2, &odd, &d1, &t].into_iter().enumerate() {
        touch(d, 1_300_000_000 + n as u64, 900 + n as u32);
    }
    (
        vec![t, d1, d2, odd],
        vec![f, g, top, abs, rel, dangling, h1, h2, h3, p1, p2],
    )
}

/// `rsync -aHAXn --delete --itemize-changes a/ b/`: what would change.
fn rsync_diff(a: &Path, b: &Path) -> String {
    let slash = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push("/");
        s
    };
    let out = Command::new("rsync")
        .args(["-aHAXn", "--delete", "--itemize-changes"])
        .arg(slash(a))
        .arg(slash(b))
        .output()
        .expect("rsync");
    assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An entry's relative path, mode, uid, gid, mtime (s, ns) and link count.
type Facts = (Vec<u8>, u32, u32, u32, i64, i64, u64);

/// Every entry under `a` (itself included) with its type, mode, owner,
/// mtime to the nanosecond (rsync compares whole seconds only) and, but
/// for directories, its link count.
fn lstat_all(a: &Path) -> Vec<Facts> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let p = a.join(&rel);
        let m = p.symlink_metadata().unwrap();
        out.push((
            rel.as_os_str().as_bytes().to_vec(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec(),
            if m.is_dir() { 0 } else { m.nlink() },
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    out.sort();
    out
}

/// Asserts that `b` is `a` again: nothing for rsync to change, and the
/// same times to the nanosecond.
fn assert_same_tree(a: &Path, b: &Path, what: &str) {
    assert_eq!(rsync_diff(a, b), "", "{what}");
    assert_eq!(lstat_all(a), lstat_all(b), "{what}");
}

fn reverse_stub(env: &Env, paths: &[PathBuf]) -> Run {
    env.run("reverse-stub", &["--endpoint", EP, "--hydrate", "--jsonl"], paths)
}

fn tree_travels(env: Env) {
    let (dirs, files) = make_tree(&env);
    let all: Vec<PathBuf> = dirs.iter().chain(&files).cloned().collect();
    let run = env.premigrate(&["--jsonl"], &all);
    assert_eq!(run.code, Some(0), "{}", run.show());
    // One name of each hard-link group carries the data; the others are
    // skipped as handled through it, and recorded as its other names.
    assert_eq!(run.count("processed"), all.len() - 3, "{}", run.show());
    assert_eq!(run.count("skipped"), 3, "{}", run.show());
    // Site B: the same paths, with site A's tree moved out of the way
    // (within its parent, so nothing of it changes).
    let orig = env.path(b"orig");
    std::fs::rename(env.path(b"t"), &orig).unwrap();

    // Directories first, then their contents: every child's arrival
    // changes its directory, whose times must still end as the source's.
    let run = reverse_stub(&env, &dirs);
    run.assert_all("processed", dirs.len());
    let t = env.path(b"t");
    assert_eq!(
        t.metadata().unwrap().mtime(),
        orig.metadata().unwrap().mtime(),
        "directory times applied"
    );
    // The hard links arrive in separate calls: h1 and p2 with the rest,
    // then h3 and p1, then h2.
    let (rest, links) = files.split_at(files.len() - 5);
    let mut first: Vec<PathBuf> = rest.to_vec();
    first.extend([links[0].clone(), links[4].clone()]);
    for part in [first, vec![links[2].clone(), links[3].clone()], vec![links[1].clone()]] {
        let run = reverse_stub(&env, &part);
        run.assert_all("processed", part.len());
    }
    assert_same_tree(&orig, &t, "the tree arrived whole");
    // Complete groups leave no index entry, and then no index.
    assert!(!env.path(b".ferry-links").exists(), "the link index stays");

    // Redelivery: nothing changes, nothing fails.
    let run = reverse_stub(&env, &all);
    assert_eq!(run.count("failures"), 0, "{}", run.show());
    run.assert_all("skipped", all.len());
    assert_same_tree(&orig, &t, "redelivery changed nothing");
}
both!(tree_travels);

/// Children first: their parents are made as missing parents, marked,
/// and get their own metadata when their objects arrive.
fn children_before_directories(env: Env) {
    let (dirs, files) = make_tree(&env);
    let all: Vec<PathBuf> = dirs.iter().chain(&files).cloned().collect();
    env.premigrate(&[], &all);
    let orig = env.path(b"orig");
    std::fs::rename(env.path(b"t"), &orig).unwrap();
    let t = env.path(b"t");
    let run = reverse_stub(&env, &files);
    run.assert_all("processed", files.len());
    let d2 = t.join("d1/d2");
    assert_eq!(
        d2.metadata().unwrap().mode() & 0o7777,
        0o755,
        "made as a missing parent"
    );
    assert_eq!(xattr::get(&d2, "user.ferry.parent").unwrap(), Some(Vec::new()));
    let run = reverse_stub(&env, &dirs);
    run.assert_all("processed", dirs.len());
    assert_eq!(xattr::get(&d2, "user.ferry.parent").unwrap(), None, "mark removed");
    assert_same_tree(&orig, &t, "directories after their children");
}
both!(children_before_directories);

/// A real migrate records directories and links and changes nothing about
/// them; an existing directory keeps its own metadata unless `overwrite`.
fn migrate_only_records_directories_and_links(env: Env) {
    let (dirs, files) = make_tree(&env);
    let t = env.path(b"t");
    let copy = env.tmp.path().join("copy");
    sh("cp", &["-a".as_ref(), t.as_os_str(), copy.as_os_str()]);
    let entries: Vec<PathBuf> = dirs.iter().chain(&files[3..6]).cloned().collect();
    let run = env.migrate(&["--jsonl"], &entries);
    run.assert_all("processed", entries.len());
    assert_same_tree(&copy, &t, "migrate changed a directory or a link");
    assert!(env.object_exists("t#d") && env.object_exists("t/d1/d2#d"));
    assert!(env.object_exists("t/abs") && env.object_exists("t/d1/rel"));
    // The endpoint's root has its own directory object too (`#d`), so a
    // synced tree's top directory keeps its attributes.
    let run = env.migrate(&["--jsonl"], std::slice::from_ref(&env.tree));
    assert_eq!(run.code, Some(0), "{}", run.show());
    run.assert_all("processed", 1);
    assert!(env.object_exists("#d"));

    // The directory exists on this site with other metadata: kept, unless
    // overwrite applies the object's.
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o711)).unwrap();
    let run = reverse_stub(&env, std::slice::from_ref(&t));
    let r = run.of_path(&t);
    assert_eq!(r.state, "skipped", "{}", run.show());
    assert!(r.message.join(" ").contains("set overwrite"), "{r:?}");
    assert_eq!(t.metadata().unwrap().mode() & 0o7777, 0o711);
    let run = env.run(
        "reverse-stub",
        &["--endpoint", EP, "--overwrite", "--jsonl"],
        std::slice::from_ref(&t),
    );
    run.assert_all("processed", 1);
    assert_eq!(t.metadata().unwrap().mode() & 0o7777, 0o750);
    assert_same_tree(&copy, &t, "overwrite applied the directory's object");

    // A link to another target is replaced only with overwrite.
    let rel = t.join("d1/rel");
    std::fs::remove_file(&rel).unwrap();
    std::os::unix::fs::symlink("elsewhere", &rel).unwrap();
    let run = reverse_stub(&env, std::slice::from_ref(&rel));
    assert_eq!(run.of_path(&rel).state, "failures", "{}", run.show());
    assert_eq!(std::fs::read_link(&rel).unwrap(), Path::new("elsewhere"));
    let run = env.run(
        "reverse-stub",
        &["--endpoint", EP, "--overwrite", "--jsonl"],
        std::slice::from_ref(&rel),
    );
    run.assert_all("processed", 1);
    assert_eq!(std::fs::read_link(&rel).unwrap(), Path::new("d2/f"));
}
both!(migrate_only_records_directories_and_links);

/// The mtime of `p` to the nanosecond.
fn mtime_ns(p: &Path) -> (i64, i64) {
    let m = p.symlink_metadata().unwrap();
    (m.mtime(), m.mtime_nsec())
}

/// With `--keep-parent-times`, move (both kinds) and delete leave the
/// times of the directories whose entries they change as they were;
/// without it, those directories' mtimes move on as usual.
#[test]
fn moves_and_deletes_keep_parent_times_when_asked() {
    let env = Env::dir();
    let (a, b) = (env.path(b"a"), env.path(b"b\n\xff"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
    }
    for n in ["1", "2", "3", "4"] {
        std::fs::write(a.join(n), n).unwrap();
    }
    let old = |p: &Path| touch(p, 1_200_000_000, 5);
    let at = |p: &Path| mtime_ns(p) == (1_200_000_000, 5);
    for keep in [true, false] {
        let mut flags = vec!["--jsonl"];
        if keep {
            flags.push("--keep-parent-times");
        }
        let (src, dst) = if keep { ("1", "2") } else { ("2", "1") };
        let run = |sub: &str, extra: &[&str], paths: &[PathBuf]| {
            old(&a);
            old(&b);
            let args: Vec<&str> = flags.iter().chain(extra).copied().collect();
            let run = env.run(sub, &args, paths);
            run.assert_all("processed", paths.len() / if sub == "move" { 2 } else { 1 });
            assert_eq!(at(&a) && at(&b), keep, "{sub} {extra:?} keep={keep}");
        };
        // Two-step (staged beside the sources), one-step, delete.
        run("move", &[], &[a.join(src), b.join(src)]);
        run("move", &["--one-step"], &[b.join(src), a.join(src)]);
        run("move", &[], &[a.join(dst), b.join(dst)]);
        run("delete", &[], &[b.join(dst)]);
        std::fs::write(a.join(dst), dst).unwrap();
    }
}

/// Names of one file premigrated in separate batches arrive as one inode
/// whatever the order; a group whose content changed between the sends of
/// its names arrives as separate files with each name's content (a link
/// is made only to a file holding the same content).
fn hard_link_groups_across_batches(env: Env) {
    let d = env.path(b"g");
    std::fs::create_dir(&d).unwrap();
    let (a, b, c) = (d.join("a"), d.join(OsStr::from_bytes(b"b\n\xff")), d.join("c"));
    std::fs::write(&a, random_bytes(9, 5000)).unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    std::fs::hard_link(&a, &c).unwrap();
    for p in [&a, &b, &c] {
        let run = env.premigrate(&["--jsonl"], std::slice::from_ref(p));
        assert_eq!(run.code, Some(0), "{}", run.show());
    }
    assert!(env.object_exists("g/a") && env.object_exists("g/c"));
    let orig = env.path(b"orig");
    std::fs::rename(&d, &orig).unwrap();
    for p in [&c, &a, &b] {
        reverse_stub(&env, std::slice::from_ref(p)).assert_all("processed", 1);
    }
    let ino = |p: &Path| p.metadata().unwrap().ino();
    assert!(ino(&a) == ino(&b) && ino(&b) == ino(&c), "one inode");
    assert_eq!(a.metadata().unwrap().nlink(), 3, "no index entry left");
    assert_eq!(std::fs::read(&c).unwrap(), random_bytes(9, 5000));
    // Redelivered: already there.
    reverse_stub(&env, &[a.clone(), b.clone(), c.clone()]).assert_all("skipped", 3);

    // Site A: x and y are one file; x is sent, then the file changes, then
    // y is sent with the new content. Site B must not link y to x's old
    // content, nor lose either.
    let e = env.path(b"h");
    std::fs::create_dir(&e).unwrap();
    let (x, y) = (e.join("x"), e.join("y"));
    std::fs::write(&x, b"first content").unwrap();
    std::fs::hard_link(&x, &y).unwrap();
    env.premigrate(&["--jsonl"], std::slice::from_ref(&x))
        .assert_all("processed", 1);
    std::fs::write(&x, b"second content, longer").unwrap();
    env.premigrate(&["--jsonl"], std::slice::from_ref(&y))
        .assert_all("processed", 1);
    std::fs::rename(&e, env.path(b"orig-h")).unwrap();
    reverse_stub(&env, std::slice::from_ref(&x)).assert_all("processed", 1);
    reverse_stub(&env, std::slice::from_ref(&y)).assert_all("processed", 1);
    assert_ne!(ino(&x), ino(&y), "different content is never linked");
    assert_eq!(std::fs::read(&x).unwrap(), b"first content");
    assert_eq!(std::fs::read(&y).unwrap(), b"second content, longer");
}
both!(hard_link_groups_across_batches);

/// Writes an object the way another tool would: no ferry metadata.
fn put_foreign(env: &Env, key: &str, data: &[u8]) {
    match &env.backend {
        Backend::Dir(d) => {
            let p = d.join(key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        Backend::S3 { url, bucket } => {
            let body = env.tmp.path().join("body");
            std::fs::write(&body, data).unwrap();
            let out = Command::new("curl")
                // A form content type would make moto store an empty body.
                .args(["-sS", "--fail", "--max-time", "30", "-X", "PUT"])
                .args(["-H", "Content-Type: application/octet-stream", "--data-binary"])
                .arg(format!("@{}", body.display()))
                .arg(format!("{url}/{bucket}/{key}"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "PUT {key}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn import(env: &Env, args: &[&str], keys: &[&str]) -> Run {
    let mut a = vec![EP, "--jsonl"];
    a.extend_from_slice(args);
    a.extend_from_slice(keys);
    env.run("import", &a, &[])
}

/// `ferry import` of a prefix: every object under it, ferry's (files,
/// directories, links) and another tool's, as stubs at their paths, as
/// premigrated files under `--location`, and as plain copies that ignore
/// the objects' metadata.
fn imports(env: Env) {
    let (dirs, files) = make_tree(&env);
    let all: Vec<PathBuf> = dirs.iter().chain(&files).cloned().collect();
    env.premigrate(&[], &all);
    put_foreign(&env, "t/foreign.txt", b"written by another tool");
    put_foreign(&env, "t/d1/deeper/other", b"also foreign");
    let orig = env.path(b"orig");
    std::fs::rename(env.path(b"t"), &orig).unwrap();
    let t = env.path(b"t");

    // Stubs at their own paths (the key's path under the root).
    let run = import(&env, &["--default-uid", "4444", "--default-gid", "5555"], &["t/"]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let r = run.results();
    assert_eq!(r.len(), 1, "one result per key");
    assert_eq!(r[0].path, b"t/");
    assert_eq!(r[0].state, "processed", "{}", run.show());
    assert!(state(&t.join("d1/d2/f")).unwrap().starts_with("migrated "));
    assert_eq!(std::fs::read_link(t.join("d1/rel")).unwrap(), Path::new("d2/f"));
    let foreign = t.join("foreign.txt");
    assert_eq!(std::fs::read(&foreign).unwrap(), b"written by another tool");
    let m = foreign.metadata().unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 4444, 5555));
    assert!(state(&foreign).unwrap().starts_with("premigrated "), "imported whole");
    assert_eq!(std::fs::read(t.join("d1/deeper/other")).unwrap(), b"also foreign");
    // The directories' own objects applied after their contents.
    assert_eq!(mtime_ns(&t), mtime_ns(&orig));
    assert_eq!(mtime_ns(&t.join("d1/d2")), mtime_ns(&orig.join("d1/d2")));
    let ino = |p: &Path| p.metadata().unwrap().ino();
    assert_eq!(ino(&t.join("h1")), ino(&t.join("d1/h2")), "hard links stay one file");
    // Again: everything is there already.
    let again = import(&env, &[], &["t/"]);
    assert_eq!(again.results()[0].state, "processed", "{}", again.show());
    assert!(
        again.results()[0].message.join(" ").contains(" 0 imported"),
        "{}",
        again.show()
    );

    // Hydrated, under another directory, from the key's last component.
    let loc = env.tmp.path().join("elsewhere");
    let loc_s = loc.to_str().unwrap();
    let run = import(&env, &["--hydrate", "--location", loc_s], &["t/d1/"]);
    assert_eq!(run.results()[0].state, "processed", "{}", run.show());
    let f = loc.join("d1/d2/f");
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(orig.join("d1/d2/f")).unwrap());
    assert!(state(&f).unwrap().starts_with("premigrated "));
    let (a, b) = (snap(&f), snap(&orig.join("d1/d2/f")));
    assert_eq!(
        (a.mode, a.uid, a.gid, a.mtime, a.xattrs),
        (b.mode, b.uid, b.gid, b.mtime, b.xattrs)
    );
    // One object by its key.
    let run = import(&env, &["--hydrate", "--location", loc_s], &["t/top"]);
    run.assert_all("processed", 1);
    assert_eq!(std::fs::read(loc.join("top")).unwrap(), b"top");

    // Plain copies ignoring the objects' metadata.
    let copies = env.tmp.path().join("copies");
    let copies_s = copies.to_str().unwrap();
    let run = import(
        &env,
        &[
            "--copy",
            "--ignore-metadata",
            "--default-uid",
            "7",
            "--default-gid",
            "8",
            "--location",
            copies_s,
        ],
        &["t/"],
    );
    assert_eq!(run.results()[0].state, "processed", "{}", run.show());
    let f = copies.join("t/d1/d2/f");
    assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(orig.join("d1/d2/f")).unwrap());
    let m = f.metadata().unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 7, 8));
    assert_eq!(state(&f), None, "no link to the endpoint");
    assert!(user_xattrs(&f).is_empty(), "no xattrs from the object");
    assert_eq!(copies.join("t/d1").metadata().unwrap().mode() & 0o7777, 0o755);

    // Nothing there: the key fails.
    let run = import(&env, &[], &["nothing/here/"]);
    assert_eq!(run.results()[0].state, "failures", "{}", run.show());
}
both!(imports);

/// A prefix of more objects than one listing page holds is imported whole.
#[test]
fn imports_page_through_large_prefixes() {
    let env = Env::dir();
    for i in 0..1203 {
        put_foreign(&env, &format!("many/{:02}/{i:05}", i % 7), format!("{i}").as_bytes());
    }
    let loc = env.tmp.path().join("out");
    let run = import(&env, &["--copy", "--location", loc.to_str().unwrap()], &["many"]);
    assert_eq!(run.results()[0].state, "processed", "{}", run.show());
    assert!(
        run.results()[0].message.join(" ").contains("1203 object(s)"),
        "{}",
        run.show()
    );
    for i in [0, 999, 1000, 1202] {
        let p = loc.join(format!("many/{:02}/{i:05}", i % 7));
        assert_eq!(std::fs::read(&p).unwrap(), format!("{i}").as_bytes());
    }
}

/// `ferry import-bytes`: a byte range of an object to a new file, with the
/// object's owner and mode, or the defaults for another tool's object.
fn import_bytes_ranges(env: Env) {
    let f = env.path(b"src");
    let data = random_bytes(5, 100_000);
    std::fs::write(&f, &data).unwrap();
    std::os::unix::fs::chown(&f, Some(321), Some(654)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    env.premigrate(&[], std::slice::from_ref(&f)).assert_all("processed", 1);
    put_foreign(&env, "raw/obj", b"0123456789");
    let loc = env.tmp.path().join("bytes");
    let loc_s = loc.to_str().unwrap();
    let bytes = |args: &[&str], key: &str| {
        let mut a = vec![EP, "--jsonl", "--location", loc_s];
        a.extend_from_slice(args);
        a.push(key);
        env.run("import-bytes", &a, &[])
    };

    bytes(&["--start", "70000", "--end", "90001"], "src").assert_all("processed", 1);
    let got = loc.join("src");
    assert_eq!(std::fs::read(&got).unwrap(), &data[70_000..90_001]);
    let m = got.metadata().unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 321, 654));
    assert_eq!(state(&got), None, "a range is not the object");

    let raw = [
        "--start",
        "3",
        "--default-uid",
        "9",
        "--default-gid",
        "10",
        "--default-mode-file",
        "600",
    ];
    bytes(&raw, "raw/obj").assert_all("processed", 1);
    let got = loc.join("obj");
    assert_eq!(std::fs::read(&got).unwrap(), b"3456789");
    let m = got.metadata().unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 9, 10));

    // Never over an existing file; never past the object's end.
    let again = bytes(&[], "raw/obj");
    assert_eq!(again.results()[0].state, "failures", "{}", again.show());
    assert_eq!(std::fs::read(&got).unwrap(), b"3456789");
    let past = bytes(&["--end", "11"], "raw/obj");
    assert_eq!(past.results()[0].state, "failures", "{}", past.show());

    // Missing parents get the directory mode.
    let run = env.run(
        "import-bytes",
        &[EP, "--jsonl", "--default-mode-dir", "700", "--end", "4", "raw/obj"],
        &[],
    );
    run.assert_all("processed", 1);
    assert_eq!(std::fs::read(env.path(b"raw/obj")).unwrap(), b"0123");
    assert_eq!(env.path(b"raw").metadata().unwrap().mode() & 0o7777, 0o700);
}
both!(import_bytes_ranges);
