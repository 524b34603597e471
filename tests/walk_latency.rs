//! Walks over the metadata-latency filesystem (`tests/latencyfs/`): a tree
//! seen through it reads the same as the tree underneath, each stat is a
//! round trip the filesystem answered, and `ferry scan -j N` keeps many of
//! those round trips in flight at once (the whole point of a parallel walk
//! on GPFS, Lustre or NFS). Speed is measured by `scripts/bench-latency.sh`,
//! never here.

mod common;

use common::latencyfs::{self, Mount};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// `DIRS` directories of `FILES` files each, and awkward names at the top.
const DIRS: usize = 40;
const FILES: usize = 50;

fn tree(root: &Path) -> usize {
    std::fs::create_dir(root).unwrap();
    for d in 0..DIRS {
        let dir = root.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..FILES {
            std::fs::write(dir.join(format!("f{f:02}")), vec![b'x'; f]).unwrap();
        }
    }
    let odd: [&[u8]; 4] = [b"new\nline", b"\xff\xfe bad utf-8", b"tab\tname", b"-dash"];
    for name in odd {
        std::fs::write(root.join(OsStr::from_bytes(name)), b"odd").unwrap();
    }
    std::os::unix::fs::symlink("d00/f01", root.join("link")).unwrap();
    std::fs::hard_link(root.join("d00/f02"), root.join("hard")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    // Entries below the root: directories, files, the awkward names, the
    // link, the hard link and the empty directory.
    DIRS + DIRS * FILES + odd.len() + 3
}

/// The NUL-separated paths of `out`, relative to `root`, sorted.
fn relative(out: &[u8], root: &Path) -> Vec<Vec<u8>> {
    let prefix = root.as_os_str().as_bytes();
    let mut v: Vec<Vec<u8>> = out
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| {
            assert!(
                p.starts_with(prefix),
                "{:?} is not under the root",
                String::from_utf8_lossy(p)
            );
            p[prefix.len()..].to_vec()
        })
        .collect();
    v.sort();
    v
}

/// Runs ferry within a minute: a filesystem that stopped answering fails
/// the test instead of hanging the suite.
fn ferry(args: &[&OsStr]) -> Vec<u8> {
    let out = common::run_within(Command::new(FERRY).args(args), None, Duration::from_secs(60), None);
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The counts of `ferry scan --summary -j 16 ROOT` (its `summary` object).
fn summary(root: &Path) -> serde_json::Value {
    let out = ferry(&[
        "scan".as_ref(),
        "--summary".as_ref(),
        "-j".as_ref(),
        "16".as_ref(),
        root.as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["summary"].clone()
}

#[test]
fn a_scan_through_latencyfs_lists_the_tree_underneath_and_keeps_round_trips_in_flight() {
    if !latencyfs::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let entries = tree(&src);
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(&src, &mnt, &["--latency", "2"]);

    // The paths: every entry underneath, once, however awkward its name.
    let want = relative(&ferry(&["scan".as_ref(), "-0".as_ref(), src.as_os_str()]), &src);
    assert_eq!(want.len(), entries + 1, "the source's entries and its root");
    let got = relative(
        &ferry(&[
            "scan".as_ref(),
            "-0".as_ref(),
            "-j".as_ref(),
            "16".as_ref(),
            mnt.as_os_str(),
        ]),
        &mnt,
    );
    assert_eq!(got, want);

    // The stat'ed fields: sizes, counts and bytes as underneath.
    assert_eq!(summary(&mnt), summary(&src));

    let stats = m.finish();
    // Two walks: the paths (no stat: the types come from getdents, and
    // only the directories are looked up, to be opened) and the summary (a
    // stat of every entry, and again an open of each directory, which the
    // 1 ms cache may answer when it follows the directory's stat closely).
    // Names are not cached from one walk to the next.
    let (dirs, entries) = (DIRS as u64 + 1, entries as u64);
    let lookups = stats.count("lookup");
    assert!(
        (entries + dirs..=entries + 2 * dirs).contains(&lookups),
        "each stat and each open is one round trip: {stats:?}"
    );
    assert!(stats.count("opendir") >= 2 * (DIRS as u64 + 2), "{stats:?}");
    // Sixteen threads keep at least twelve requests in flight at the peak:
    // each thread waits on its own round trip, none waits on another.
    assert!(
        stats.count("peak_in_flight") >= 12,
        "the walk did not keep its round trips in flight: {stats:?}"
    );
}

#[test]
fn a_big_directory_on_a_slow_filesystem_is_stat_ed_by_the_whole_pool() {
    if !latencyfs::available() {
        return;
    }
    // One directory, read in one buffer: before ferry noticed the round
    // trips, the thread that read a buffer stat'ed all of it alone (one
    // request in flight for 3,000 round trips). That it is one buffer (two
    // readdir requests, the second finding the end) depends on the kernel
    // filling ferry's 128 KiB getdents buffer from FUSE, as Linux 6.18
    // here does; a kernel that answers a page at a time would hand the
    // later buffers out even without the change.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    const N: usize = 3000;
    for i in 0..N {
        std::fs::write(src.join(format!("file-{i:05}")), b"x").unwrap();
    }
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(&src, &mnt, &["--latency", "2"]);
    let counts = summary(&mnt);
    assert_eq!(counts["files"], N, "{counts}");
    let stats = m.finish();
    assert_eq!(
        stats.count("lookup"),
        N as u64,
        "one stat, one round trip, per file: {stats:?}"
    );
    assert_eq!(stats.count("readdir"), 2, "read in one buffer: {stats:?}");
    assert!(
        stats.count("peak_in_flight") >= 12,
        "the directory's stats were not spread over the pool: {stats:?}"
    );
}

/// The place of a child task among its parent's children, from its id
/// (`agent::celery::ChildId`: the low 62 bits of the UUID's second half).
fn child_seq(task_id: &str) -> u64 {
    let hex: String = task_id.chars().filter(|c| *c != '-').collect();
    u64::from_str_radix(&hex[16..], 16).unwrap() & (u64::MAX >> 2)
}

#[test]
fn a_walk_on_a_slow_filesystem_sends_its_first_batch_before_it_is_full() {
    use common::hub::{HubSite, sqlite};
    if !latencyfs::available() || !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    s.batch_size(100);
    // 30 directories of 7 files: a batch of 100 needs 15 of them, each a
    // few round trips away.
    let src = s.data().join("src");
    for d in 0..30 {
        let dir = src.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..7 {
            std::fs::write(dir.join(format!("f{f}")), b"x").unwrap();
        }
    }
    let mnt = s.data().join("slow");
    let m = Mount::new(&src, &mnt, &["--latency", "2"]);
    let w = s.workflow("dynamo.tasks.stat_paths", serde_json::json!({}));
    let id = s.submit(&w, &mnt)["id"].as_i64().unwrap();
    let done = s.wait_job(id, Duration::from_secs(120));
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["counts"]["processed"], 210, "{done}");
    let tasks = s.api(
        "GET",
        &format!("/api/tasks/?job_id={id}&tasktype=dynamo.tasks.stat_paths&page_size=0"),
        None,
        200,
    );
    let tasks = tasks["results"].as_array().unwrap();
    let first = tasks
        .iter()
        .find(|t| child_seq(t["task_id"].as_str().unwrap()) == 0)
        .expect("the walk's first child");
    let first = s.api("GET", &format!("/api/tasks/{}/", first["id"]), None, 200);
    let n = first["summary"]["processed"].as_u64().unwrap();
    assert!(
        n > 0 && n < 100,
        "the first batch waited to be full ({n} files): {first}"
    );
    // Only the first goes early: the others fill up as before.
    let mut sizes: Vec<u64> = Vec::new();
    for t in tasks {
        let t = s.api("GET", &format!("/api/tasks/{}/", t["id"]), None, 200);
        sizes.push(t["summary"]["processed"].as_u64().unwrap());
    }
    assert_eq!(sizes.iter().sum::<u64>(), 210, "{sizes:?}");
    assert_eq!(sizes.len() as u64, 1 + (210 - n).div_ceil(100), "{sizes:?}");
    drop(m);
}
