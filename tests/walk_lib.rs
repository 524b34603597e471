//! The walker as a library: completeness on generated trees, counters,
//! generations, depth limits and cancellation.

mod common;

use common::loopfs::LoopFs;
use ferry::entry::{Entry, FileType};
use ferry::testtree::{DEEP_LEVELS, Shape, generate};
use ferry::walk::{Walk, WalkEvent, WalkOptions};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn collect(root: &Path, opts: WalkOptions) -> (Vec<Entry>, usize, ferry::task::Summary) {
    let walk = Walk::start(vec![root.as_os_str().as_bytes().to_vec()], opts).unwrap();
    let mut walk = walk;
    let mut entries = Vec::new();
    let mut errors = 0;
    for ev in walk.by_ref() {
        match ev {
            WalkEvent::Entries(mut v) => entries.append(&mut v),
            WalkEvent::Error(_) => errors += 1,
        }
    }
    let summary = walk.finish().unwrap();
    (entries, errors, summary)
}

#[test]
fn mixed_tree_is_complete_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    generate(&root, Shape::Mixed, 20_000).unwrap();
    for threads in [1, 3, 16] {
        let opts = WalkOptions {
            threads,
            ..WalkOptions::default()
        };
        let (entries, errors, s) = collect(&root, opts);
        assert_eq!(errors, 0);
        let unique: HashSet<&[u8]> = entries.iter().map(|e| &e.path[..]).collect();
        assert_eq!(unique.len(), entries.len(), "duplicates with {threads} threads");
        assert_eq!(s.files, 20_000, "{s:?}");
        assert_eq!(s.symlinks, 100);
        assert_eq!(s.empty_dirs, 100);
        assert_eq!(s.entries(), entries.len() as u64);
        let bytes: u64 = entries.iter().map(Entry::data_size).sum();
        assert_eq!(s.bytes, bytes);
        assert!(entries.iter().all(|e| e.meta.is_some()), "stat requested");
    }
}

#[test]
fn names_only_walk_does_not_stat() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    generate(&root, Shape::Wide, 500).unwrap();
    let (entries, _, s) = collect(
        &root,
        WalkOptions {
            stat: false,
            ..WalkOptions::default()
        },
    );
    assert_eq!(s.files, 500);
    // No entry carries attributes, not even the root (which the walker
    // stats to learn its type, but does not report).
    assert_eq!(entries.iter().filter(|e| e.meta.is_some()).count(), 0);
    assert!(entries.iter().all(|e| e.ino != 0));
}

/// The first levels of [`Shape::Deep`] with `max_depth: Some(3)` and
/// generations asked for, walked under `dir`.
fn deep_to_depth_3(dir: &Path) -> Vec<Entry> {
    let root = dir.join("t");
    generate(&root, Shape::Deep, DEEP_LEVELS * 2).unwrap();
    let (entries, errors, _) = collect(
        &root,
        WalkOptions {
            max_depth: Some(3),
            generation: true,
            ..WalkOptions::default()
        },
    );
    assert_eq!(errors, 0);
    // Depth 0: root; 1: level00; 2: level01 + level00's 2 files;
    // 3: level02 + level01's 2 files.
    assert_eq!(entries.len(), 1 + 1 + 3 + 3);
    entries
}

/// The depth limit, on whatever filesystem TMPDIR is.
#[test]
fn depth_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let files = deep_to_depth_3(tmp.path())
        .into_iter()
        .filter(|e| e.file_type == FileType::File)
        .count();
    assert_eq!(files, 4);
}

/// Generations, on a filesystem made for the test that has them (TMPDIR's
/// may not: tmpfs has none): each file's is the one `FS_IOC_GETVERSION`
/// gives.
#[test]
fn generations_on_ext4() {
    let Some(fs) = LoopFs::ext4(32) else { return };
    let entries = deep_to_depth_3(fs.path());
    let files: Vec<&Entry> = entries.iter().filter(|e| e.file_type == FileType::File).collect();
    assert_eq!(files.len(), 4);
    assert!(
        files.iter().all(|e| e.generation.is_some()),
        "ext4 has inode generations"
    );
    for e in files {
        let path = Path::new(std::ffi::OsStr::from_bytes(&e.path));
        assert_eq!(e.generation, Some(inode_generation(path)), "{}", path.display());
    }
}

/// `FS_IOC_GETVERSION` on `path`, asked directly.
fn inode_generation(path: &Path) -> u32 {
    let f = std::fs::File::open(path).unwrap();
    let mut v: libc::c_long = 0;
    // SAFETY: the ioctl writes at most a long (ext4: an int) into `v`.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::FS_IOC_GETVERSION, &mut v) };
    assert_eq!(
        r,
        0,
        "FS_IOC_GETVERSION on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // An int written into a long: its low bits (little-endian machines).
    v as u32
}

#[test]
fn dropping_a_walk_cancels_it_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    generate(&root, Shape::Flat, 30_000).unwrap();
    let opts = WalkOptions {
        channel_chunks: 1,
        chunk_entries: 16,
        ..WalkOptions::default()
    };
    let mut walk = Walk::start(vec![root.as_os_str().as_bytes().to_vec()], opts).unwrap();
    assert!(matches!(walk.next(), Some(WalkEvent::Entries(_))));
    let t0 = Instant::now();
    drop(walk);
    assert!(t0.elapsed() < Duration::from_secs(5), "cancel took {:?}", t0.elapsed());
}

#[test]
fn missing_root_is_an_error_not_a_panic() {
    let (entries, errors, s) = collect(Path::new("/nonexistent/ferry/root"), WalkOptions::default());
    assert!(entries.is_empty());
    assert_eq!((errors, s.failures), (1, 1));
}
