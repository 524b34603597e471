//! The `sys` wrappers against real kernel objects on the test machine's
//! filesystem: directories, stat, inode generations and xattrs.

use ferry::sys::{self, Base, DirReader, StatMask};
use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The names and `d_type`s one `read_batch` (one `getdents64` call) hands out.
type Batch = Vec<(Vec<u8>, u8)>;

/// Every entry a `DirReader` hands out, batch by batch, `.` and `..` left out.
fn read_batches(dir: &Path, buf: &mut [MaybeUninit<u8>]) -> io::Result<Vec<Batch>> {
    let fd = sys::open_dir_at(Base::Cwd, &cstr(dir), false).unwrap();
    let mut reader = DirReader::new(fd.as_fd(), buf);
    let mut batches = Vec::new();
    loop {
        let mut batch = Vec::new();
        if !reader.read_batch(|d| batch.push((d.name.to_bytes().to_vec(), d.d_type)))? {
            return Ok(batches);
        }
        batches.push(batch);
    }
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
    let mut buf = vec![MaybeUninit::uninit(); 64 * 1024];
    let batches = read_batches(tmp.path(), &mut buf).unwrap();
    let mut got = BTreeSet::new();
    for (name, d_type) in batches.iter().flatten() {
        assert_eq!(*d_type, libc::DT_REG);
        assert!(got.insert(name.clone()), "listed twice");
    }
    assert_eq!(got, want);
    assert!(batches.len() > 1, "5000 long names need more than one 64 KiB buffer");
}

#[test]
fn a_one_record_buffer_lists_a_directory_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let want: BTreeSet<Vec<u8>> = ["a", "bb", "ccc", "dddd", "e"].map(|n| n.as_bytes().to_vec()).into();
    for name in &want {
        fs::write(tmp.path().join(OsStr::from_bytes(name)), b"").unwrap();
    }
    // A linux_dirent64 record is 19 bytes of header and the NUL-terminated
    // name, rounded up to 8: 24 bytes for names of up to 4 bytes, `.` and
    // `..` included. A 24-byte buffer, aligned as the records are, holds
    // exactly one record per getdents64 call.
    let mut storage = [MaybeUninit::uninit(); 64];
    let start = storage.as_ptr().align_offset(8);
    let batches = read_batches(tmp.path(), &mut storage[start..start + 24]).unwrap();
    assert_eq!(
        batches.len(),
        want.len() + 2,
        "one call per entry, `.` and `..` included"
    );
    assert_eq!(
        batches.iter().filter(|b| b.is_empty()).count(),
        2,
        "exactly the calls that returned `.` and `..` hand out nothing: {batches:?}"
    );
    let got: Vec<Vec<u8>> = batches.into_iter().flatten().map(|(name, _)| name).collect();
    assert_eq!(got.len(), want.len(), "each entry exactly once: {got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
}

#[test]
fn a_buffer_too_small_for_one_record_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = [MaybeUninit::uninit(); 64];
    let start = storage.as_ptr().align_offset(8);
    let e = read_batches(tmp.path(), &mut storage[start..start + 16]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
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
