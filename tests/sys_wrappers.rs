//! The `sys` wrappers against real kernel objects on the test machine's
//! filesystem: directories, stat, inode generations and xattrs.

use ferry::sys::{self, Base, DirEntries, StatMask};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn getdents_lists_a_big_directory_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut want = BTreeSet::new();
    for i in 0..5000 {
        let name = format!("entry-{i:05}-{}", "x".repeat(i % 40));
        fs::write(tmp.path().join(&name), b"").unwrap();
        want.insert(name.into_bytes());
    }
    let fd = sys::open_dir_at(Base::Cwd, &cstr(tmp.path()), false).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = BTreeSet::new();
    let mut calls = 0;
    loop {
        let n = sys::getdents(fd.as_fd(), &mut buf).unwrap();
        if n == 0 {
            break;
        }
        calls += 1;
        for d in DirEntries::new(&buf[..n]) {
            let name = d.name.to_bytes().to_vec();
            if name != b"." && name != b".." {
                assert_eq!(d.d_type, libc::DT_REG);
                assert!(got.insert(name), "listed twice");
            }
        }
    }
    assert_eq!(got, want);
    assert!(calls > 1, "5000 long names need more than one 64 KiB buffer");
}

#[test]
fn dirent_parser_stops_on_a_truncated_buffer() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a"), b"").unwrap();
    let fd = sys::open_dir_at(Base::Cwd, &cstr(tmp.path()), false).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = sys::getdents(fd.as_fd(), &mut buf).unwrap();
    for cut in 0..n {
        // Any prefix parses to at most the full set, never out of bounds.
        assert!(DirEntries::new(&buf[..cut]).count() <= 3);
    }
    assert_eq!(DirEntries::new(&buf[..n]).count(), 3);
}

#[test]
fn stat_matches_std_and_respects_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("file");
    fs::write(&f, b"hello").unwrap();
    symlink("file", tmp.path().join("link")).unwrap();
    let dir = sys::open_dir_at(Base::Cwd, &cstr(tmp.path()), false).unwrap();
    let base = Base::Dir(dir.as_fd());

    let st = sys::stat_at(base, c"file", false, StatMask::ALL).unwrap();
    let m = fs::symlink_metadata(&f).unwrap();
    assert_eq!(
        (st.ino, st.size, st.mode, st.uid, st.gid, st.nlink),
        (m.ino(), 5, m.mode(), m.uid(), m.gid(), 1)
    );
    assert_eq!((st.mtime.sec, st.mtime.nsec as i64), (m.mtime(), m.mtime_nsec()));
    assert_eq!(st.dev, m.dev());

    let l = sys::stat_at(base, c"link", false, StatMask::ALL).unwrap();
    assert_eq!(l.mode & libc::S_IFMT, libc::S_IFLNK);
    let followed = sys::stat_at(base, c"link", true, StatMask::ALL).unwrap();
    assert_eq!(followed.ino, st.ino);

    let t = sys::stat_at(base, c"file", false, StatMask::TYPE).unwrap();
    assert_eq!(t.mode & libc::S_IFMT, libc::S_IFREG);

    let e = sys::stat_at(base, c"missing", false, StatMask::ALL).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn open_dir_refuses_a_symlink_unless_following() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("real")).unwrap();
    symlink("real", tmp.path().join("link")).unwrap();
    let dir = sys::open_dir_at(Base::Cwd, &cstr(tmp.path()), false).unwrap();
    let e = sys::open_dir_at(Base::Dir(dir.as_fd()), c"link", false).unwrap_err();
    assert!(
        matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
        "{e}"
    );
    sys::open_dir_at(Base::Dir(dir.as_fd()), c"link", true).unwrap();
    let e = sys::open_dir_at(Base::Cwd, c"/nonexistent-ferry-test", false).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn inode_generation_matches_lsattr() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("gen");
    fs::write(&f, b"x").unwrap();
    let dir = sys::open_dir_at(Base::Cwd, &cstr(tmp.path()), false).unwrap();
    let fd = sys::open_file_at(Base::Dir(dir.as_fd()), c"gen").unwrap();
    let generation = match sys::inode_generation(fd.as_fd()) {
        Ok(g) => g,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP)) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "the CI filesystem must support FS_IOC_GETVERSION"
            );
            eprintln!("SKIPPED: this filesystem has no inode generations ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // lsattr -v prints "<generation> <flags> <path>".
    let out = Command::new("lsattr")
        .arg("-v")
        .arg(&f)
        .output()
        .expect("lsattr (e2fsprogs) is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let want: u32 = text.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(generation, want);
}

#[test]
fn xattrs_are_listed_without_following_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("file");
    fs::write(&f, b"x").unwrap();
    xattr::set(&f, "user.ferry.state", b"migrated").unwrap();
    xattr::set(&f, "user.other", b"").unwrap();
    let names: BTreeSet<Vec<u8>> = sys::list_xattrs(&cstr(&f)).unwrap().into_iter().collect();
    assert!(names.contains(&b"user.ferry.state"[..]));
    assert!(names.contains(&b"user.other"[..]));

    let link = tmp.path().join("link");
    symlink("file", &link).unwrap();
    let on_link = sys::list_xattrs(&cstr(&link)).unwrap();
    assert!(
        !on_link.iter().any(|n| n.starts_with(b"user.")),
        "followed the symlink: {on_link:?}"
    );

    let e = sys::list_xattrs(&cstr(&tmp.path().join("missing"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn nofile_limit_is_raised_to_the_hard_limit() {
    let soft = sys::raise_nofile_limit();
    // "Max open files            1024                 524288               files"
    let limits = fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let as_limit = |w: &str| if w == "unlimited" { u64::MAX } else { w.parse().unwrap() };
    let (now_soft, hard) = (as_limit(words[3]), as_limit(words[4]));
    assert_eq!((soft, now_soft), (hard, hard), "{line}");
    assert!(soft >= 1024, "soft limit {soft}");
    assert_eq!(sys::raise_nofile_limit(), soft, "idempotent");
}
