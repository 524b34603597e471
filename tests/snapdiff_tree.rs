//! The btrfs tree search reads a snapshot into exactly the records a walk
//! of the same snapshot gives: same inodes, generations (birth times),
//! links, names and attributes, across many search buffers.

mod common;

use common::btrfs::LoopBtrfs;
use std::os::unix::fs::symlink;
use std::process::Command;

fn snapdiff(fs: &std::path::Path, state: &std::path::Path, walk: bool) -> Vec<u8> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args([
        "snapdiff",
        "--provider",
        "btrfs",
        "--dry-run",
        "--extra-fields",
        "inode,generation",
    ]);
    if walk {
        c.arg("--walk");
    }
    let out = c
        .arg("--fields")
        .arg("path,type,size,mtime,ctime,inode,mode,uid,gid,nlink")
        .arg("--state-dir")
        .arg(state)
        .arg(fs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn tree_search_matches_a_walk() {
    let Some(b) = LoopBtrfs::new(1024) else { return };
    let fs = b.subvolume("fs");
    // Enough inodes for several 4 MiB search buffers, and awkward ones.
    for d in 0..40 {
        let dir = fs.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            std::fs::write(dir.join(format!("f{f}")), vec![b'x'; f % 7]).unwrap();
        }
    }
    std::fs::write(fs.join("new\nline \u{ff}"), b"1").unwrap();
    std::fs::hard_link(fs.join("d1/f1"), fs.join("d2/link")).unwrap();
    // Many hard links in one directory spill into extended refs.
    for i in 0..300 {
        std::fs::hard_link(fs.join("d3/f3"), fs.join(format!("d4/l{i}-{}", "n".repeat(200)))).unwrap();
    }
    symlink("d1/f1", fs.join("sym")).unwrap();
    Command::new("mkfifo").arg(fs.join("fifo")).status().unwrap();
    std::fs::create_dir_all(fs.join("x/y/z")).unwrap();
    std::fs::create_dir(fs.join(".snapshots")).unwrap();
    std::fs::write(fs.join(".snapshots/ignored"), b"").unwrap();
    let state = b.path().join("state");
    let tree = snapdiff(&fs, &state, false);
    let walk = snapdiff(&fs, &state, true);
    assert_eq!(tree.iter().filter(|&&c| c == b'\n').count(), 40 * 1000 + 40 + 300 + 8);
    assert!(tree == walk, "tree search and walk differ");
}
