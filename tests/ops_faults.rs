//! Faults during `ferry migrate` and `ferry recall`: SIGKILL at random
//! moments, a full target, an unreachable S3 endpoint, a file rewritten
//! during its copy, a corrupt or missing object, a file held open, a file
//! locked by someone else.
//!
//! After every fault one invariant must hold for every file: it has its
//! original content, or it is a stub (state `migrated`, recording the
//! original size and hash) whose resident data is a prefix of the
//! original's blocks, and whose object brings the original back on recall.

mod common;

use common::ops::*;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Every file made here gets this mtime, which a recall must restore.
const MTIME: (u64, u32) = (1_500_000_000, 123_456_789);

/// Files and their original contents.
type Originals = Vec<(PathBuf, Vec<u8>)>;

/// `n` small files of random sizes (0 to 64 KiB) and the `big` sizes given.
fn make_tree(env: &Env, seed: u64, n: usize, big: &[usize]) -> Originals {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let dirs = [env.tree.join("a"), env.tree.join("b/c")];
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 0..n {
        let size = match rng.below(10) {
            0 => 0,
            1 => 4096,
            _ => rng.below(64 * 1024) as usize,
        };
        let p = dirs[i % 2].join(format!("small-{i}"));
        let data = random_bytes(seed * 1000 + i as u64, size);
        std::fs::write(&p, &data).unwrap();
        set_mtime(&p, MTIME.0, MTIME.1);
        out.push((p, data));
    }
    for (i, size) in big.iter().enumerate() {
        let p = env.tree.join(format!("big-{i}"));
        let data = random_bytes(seed * 7 + i as u64, *size);
        std::fs::write(&p, &data).unwrap();
        set_mtime(&p, MTIME.0, MTIME.1);
        out.push((p, data));
    }
    out
}

/// The invariant: each file is whole, or a consistent stub of its
/// original whose resident blocks are the original's.
fn check_invariant(files: &Originals, when: &str) {
    for (p, orig) in files {
        let now = std::fs::read(p).unwrap_or_else(|e| panic!("{when}: {}: {e}", p.display()));
        let st = state(p);
        let hash = blake3::hash(orig).to_hex().to_string();
        if let Some(st) = &st {
            // Whatever the state, it describes the original.
            assert_eq!(state_field(st, "blake3"), hash, "{when}: {}: state {st}", p.display());
            assert_eq!(
                state_field(st, "size"),
                orig.len().to_string(),
                "{when}: {}",
                p.display()
            );
        }
        if &now == orig {
            continue;
        }
        let st = st.unwrap_or_else(|| {
            panic!(
                "{when}: {}: content changed ({} bytes, original {}) and no state xattr: DATA LOST",
                p.display(),
                now.len(),
                orig.len()
            )
        });
        assert!(
            st.starts_with("migrated "),
            "{when}: {}: content differs from the original but state is {st:?}",
            p.display()
        );
        assert_eq!(now.len(), orig.len(), "{when}: {}: stub size", p.display());
        for (i, (a, b)) in now.chunks(4096).zip(orig.chunks(4096)).enumerate() {
            assert!(
                a == b || a.iter().all(|&x| x == 0),
                "{when}: {}: block {i} holds data that is neither the original nor a hole",
                p.display()
            );
        }
    }
}

/// Asserts every file has its original content and mtime (after a full
/// recall).
fn check_all_original(files: &Originals, when: &str) {
    for (p, orig) in files {
        let now = std::fs::read(p).unwrap();
        if &now != orig {
            panic!(
                "{when}: {}: not the original content (state {:?})",
                p.display(),
                state(p)
            );
        }
        let md = std::fs::metadata(p).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (MTIME.0 as i64, i64::from(MTIME.1)),
            "{when}: {}: mtime not restored",
            p.display()
        );
    }
}

/// Starts `ferry SUB ... -0 -` on the files and SIGKILLs it after `delay`
/// (or lets it end first). Returns whether it was killed.
fn run_and_kill(env: &Env, sub: &str, args: &[&str], files: &Originals, delay: Duration) -> bool {
    let mut c = env.cmd(sub, &args.iter().map(std::ffi::OsStr::new).collect::<Vec<_>>());
    c.args(["-0", "--jsonl", "-"]);
    c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let list = nul_list(&files.iter().map(|f| f.0.clone()).collect::<Vec<_>>());
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &list).unwrap();
    drop(stdin);
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if start.elapsed() >= delay {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn paths(files: &Originals) -> Vec<PathBuf> {
    files.iter().map(|f| f.0.clone()).collect()
}

/// Runs `ferry SUB ARGS -0 -` to the end on the files.
fn run_all(env: &Env, sub: &str, args: &[&str], files: &Originals) -> Run {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-0", "--jsonl"]);
    env.run_stdin(sub, &a, &nul_list(&paths(files)))
}

fn empty_dir(d: &Path) {
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
}

/// (a) SIGKILL at random moments of a migrate; then a migrate to the end
/// must work, and a recall must bring every file back.
#[test]
fn sigkill_during_migrate() {
    let env = Env::dir();
    let files = make_tree(&env, 11, 200, &[20 * MIB, 9 * MIB]);
    let mut rng = Rng(0x5eed_0001);
    let mut killed = 0;
    let mut stuck = Vec::new();
    for round in 0..10 {
        let sub_batch = ["1", "7", "64", "512"][rng.below(4) as usize];
        let threads = (1 + rng.below(8)).to_string();
        let stub = ["0", "4096", "10000"][rng.below(3) as usize];
        // Migrate of this tree takes about 250-400 ms here: kill within it.
        let delay = Duration::from_millis(rng.below(180));
        let args = [
            "--endpoint",
            EP,
            "--sub-batch",
            sub_batch,
            "-j",
            &threads,
            "--stub-size",
            stub,
        ];
        let when = format!("round {round} (migrate {args:?} killed after {delay:?})");
        killed += usize::from(run_and_kill(&env, "migrate", &args, &files, delay));
        check_invariant(&files, &when);

        // A migrate to the end finishes the job. Failures are collected (the
        // data is checked first) and reported at the end.
        let run = run_all(&env, "migrate", &args, &files);
        for r in run.results() {
            if r.state == "failures" {
                let p = Path::new(std::ffi::OsStr::new(std::str::from_utf8(&r.path).unwrap()));
                let md = std::fs::metadata(p).unwrap();
                stuck.push(format!(
                    "{when}: {}: {:?}; stub mtime now {}.{:09}, state {:?}",
                    p.display(),
                    r.message,
                    md.mtime(),
                    md.mtime_nsec(),
                    state(p)
                ));
            }
        }
        assert!(
            run.code == Some(0)
                || run
                    .results()
                    .iter()
                    .all(|r| r.state != "failures" || r.message[0].contains("stub changed since it was migrated")),
            "{when}, then migrate to the end: {}",
            run.show()
        );
        for (p, orig) in &files {
            let st = state(p).unwrap_or_else(|| panic!("{when}: {} has no state", p.display()));
            assert!(st.starts_with("migrated "), "{when}: {}: {st}", p.display());
            assert_eq!(state_field(&st, "blake3"), blake3::hash(orig).to_hex().to_string());
            assert_eq!(
                state_field(&st, "mtime"),
                format!("{}.{:09}", MTIME.0, MTIME.1),
                "{when}"
            );
        }
        check_invariant(&files, &format!("{when}, migrated to the end"));

        let rec = run_all(&env, "recall", &["--delete-remote"], &files);
        assert_eq!(rec.code, Some(0), "{when}, recall: {}", rec.show());
        check_all_original(&files, &format!("{when}, recalled"));
        // Fresh copies next round: drop whatever the kill left behind.
        empty_dir(env.arch());
    }
    eprintln!("sigkill_during_migrate: {killed} of 10 runs killed before they ended");
    assert!(
        killed >= 5,
        "most runs must be killed to test anything ({killed} of 10)"
    );
    assert!(
        stuck.is_empty(),
        "after a SIGKILL, a second migrate must finish the job, but these stubs (data safe: they \
         recalled correctly) were refused as changed:\n{}",
        stuck.join("\n")
    );
}

/// (b) SIGKILL at random moments of a recall; a recall to the end must then
/// bring every file back.
#[test]
fn sigkill_during_recall() {
    let env = Env::dir();
    let files = make_tree(&env, 22, 200, &[20 * MIB, 9 * MIB]);
    let run = run_all(&env, "migrate", &["--endpoint", EP], &files);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let mut rng = Rng(0x5eed_0002);
    let mut killed = 0;
    for round in 0..10 {
        let sub_batch = ["1", "7", "64", "512"][rng.below(4) as usize];
        let threads = (1 + rng.below(8)).to_string();
        // Recall of this tree takes about 150-300 ms here: kill within it.
        let delay = Duration::from_millis(rng.below(120));
        let args = ["--sub-batch", sub_batch, "-j", &threads];
        let when = format!("round {round} (recall {args:?} killed after {delay:?})");
        killed += usize::from(run_and_kill(&env, "recall", &args, &files, delay));
        check_invariant(&files, &when);

        let rec = run_all(&env, "recall", &[], &files);
        assert_eq!(rec.code, Some(0), "{when}, then recall to the end: {}", rec.show());
        check_all_original(&files, &format!("{when}, recalled to the end"));

        // Stub again for the next round (the objects are still there).
        let run = run_all(&env, "migrate", &["--endpoint", EP], &files);
        assert_eq!(run.code, Some(0), "{when}, migrate again: {}", run.show());
        check_invariant(&files, &format!("{when}, migrated again"));
    }
    let rec = run_all(&env, "recall", &[], &files);
    assert_eq!(rec.code, Some(0), "{}", rec.show());
    check_all_original(&files, "final recall");
    eprintln!("sigkill_during_recall: {killed} of 10 runs killed before they ended");
    assert!(
        killed >= 5,
        "most runs must be killed to test anything ({killed} of 10)"
    );
}

/// A tmpfs mounted for one test.
struct Tmpfs {
    mount: PathBuf,
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
    }
}

/// (c) The directory target fills up: the files that did not fit fail with
/// a reason and stay whole; those that fit are good stubs.
#[test]
fn directory_target_full() {
    if !common::require(common::is_root(), "directory_target_full needs root to mount a tmpfs") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("ferry-ops-").tempdir().unwrap();
    let mount = tmp.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    if !st.success() {
        common::skip_or_fail("directory_target_full: mount -t tmpfs failed");
        return;
    }
    let _guard = Tmpfs { mount: mount.clone() };
    let env = Env::dir_at(tmp, mount.clone());
    let mut files = make_tree(&env, 33, 20, &[]);
    for i in 0..4 {
        let p = env.tree.join(format!("two-mib-{i}"));
        let data = random_bytes(330 + i, 2 * MIB);
        std::fs::write(&p, &data).unwrap();
        set_mtime(&p, MTIME.0, MTIME.1);
        files.push((p, data));
    }
    // One bigger than the whole target, streamed.
    let p = env.tree.join("nine-mib");
    let data = random_bytes(339, 9 * MIB);
    std::fs::write(&p, &data).unwrap();
    set_mtime(&p, MTIME.0, MTIME.1);
    files.push((p, data));

    let start = Instant::now();
    let run = run_all(&env, "migrate", &["--endpoint", EP], &files);
    assert_eq!(run.code, Some(1), "some files cannot fit: {}", run.show());
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
    let results = run.results();
    assert!(results.iter().any(|r| r.state == "failures"), "{}", run.show());
    for r in &results {
        let p = Path::new(std::ffi::OsStr::new(std::str::from_utf8(&r.path).unwrap()));
        let orig = &files.iter().find(|f| f.0 == p).unwrap().1;
        match r.state.as_str() {
            "failures" => {
                assert!(!r.message.is_empty() && !r.message[0].is_empty(), "{r:?}");
                assert_same_data(&std::fs::read(p).unwrap(), orig, p);
                let st = state(p);
                assert!(
                    st.as_deref().is_none_or(|s| !s.starts_with("migrated ")),
                    "{}: failed but {st:?}",
                    p.display()
                );
            }
            "processed" => assert!(state(p).unwrap().starts_with("migrated "), "{r:?}"),
            other => panic!("{other}: {r:?}"),
        }
    }
    eprintln!(
        "directory_target_full: failures: {:?}",
        results
            .iter()
            .filter(|r| r.state == "failures")
            .map(|r| r.message.join("; "))
            .collect::<std::collections::BTreeSet<_>>()
    );
    check_invariant(&files, "target full");
    let rec = run_all(&env, "recall", &[], &files);
    assert_eq!(rec.code, Some(0), "{}", rec.show());
    check_all_original(&files, "target full, recalled");
}

/// (d) An S3 endpoint where nothing listens: every file fails with a
/// reason, nothing is stubbed or marked, and it does not take long.
#[test]
fn s3_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = Env::s3_at(&format!("http://127.0.0.1:{port}"));
    let files = make_tree(&env, 44, 5, &[9 * MIB]);
    let start = Instant::now();
    let run = run_all(&env, "migrate", &["--endpoint", EP], &files);
    let took = start.elapsed();
    eprintln!("s3_unreachable: took {took:?}: {}", run.show());
    assert_eq!(run.code, Some(1), "{}", run.show());
    run.assert_all("failures", files.len());
    for r in run.results() {
        let m = r.message.join(" ");
        assert!(
            m.contains(&port.to_string()) || m.to_lowercase().contains("connect") || m.contains("error"),
            "a reason naming the problem: {m}"
        );
    }
    for (p, orig) in &files {
        assert_same_data(&std::fs::read(p).unwrap(), orig, p);
        assert_eq!(state(p), None, "{}", p.display());
        assert_eq!(location(p), None, "{}", p.display());
    }
    assert!(took < Duration::from_secs(30), "an unreachable endpoint took {took:?}");
    // recall with no reachable endpoint: nothing to do either (not migrated).
    let rec = run_all(&env, "recall", &[], &files);
    assert_eq!(rec.code, Some(0), "{}", rec.show());
}

/// (e) A 200 MiB file rewritten (open, write 4 MiB, close, over and over)
/// while migrate copies it: it may fail or succeed, but a stub must always
/// recall to the content the file had.
#[test]
fn file_rewritten_during_migrate() {
    const CHUNK: usize = 4 * MIB;
    const N: usize = 50;
    let env = Env::dir();
    let p = env.path(b"busy");
    let fill = |pass: usize, i: usize| vec![((pass * 7 + i * 13) % 251 + 1) as u8; CHUNK];
    let mut outcomes = Vec::new();
    for (round, stop_after) in [Some(0u64), None, Some(30), Some(150), Some(600)]
        .into_iter()
        .enumerate()
    {
        {
            let f = std::fs::File::create(&p).unwrap();
            for i in 0..N {
                f.write_all_at(&fill(0, i), (i * CHUNK) as u64).unwrap();
            }
        }
        let _ = xattr::remove(&p, STATE);
        let _ = xattr::remove(&p, format!("{PREFIX}loc.{EP}"));
        empty_dir(env.arch());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, p) = (stop.clone(), p.clone());
            std::thread::spawn(move || {
                let mut model = vec![0usize; N];
                let start = Instant::now();
                let mut rng = Rng(round as u64 * 31 + 7);
                'outer: for pass in 1.. {
                    for _ in 0..N {
                        if stop.load(Ordering::SeqCst)
                            || stop_after.is_some_and(|ms| start.elapsed().as_millis() as u64 > ms)
                        {
                            break 'outer;
                        }
                        let i = rng.below(N as u64) as usize;
                        let f = std::fs::File::options().write(true).open(&p).unwrap();
                        f.write_all_at(&fill(pass, i), (i * CHUNK) as u64).unwrap();
                        drop(f);
                        model[i] = pass;
                    }
                }
                model
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        let run = env.migrate(&["--jsonl"], std::slice::from_ref(&p));
        stop.store(true, Ordering::SeqCst);
        let model = writer.join().unwrap();
        let expect: Vec<u8> = (0..N).flat_map(|i| fill(model[i], i)).collect();
        let r = run.of_path(&p);
        let st = state(&p);
        eprintln!("rewritten, round {round}: {r:?}, state {st:?}");
        outcomes.push(r.state.clone());
        match r.state.as_str() {
            "processed" => {
                let st = st.unwrap();
                assert!(st.starts_with("migrated "), "{st}");
                // The object is what the file held when it was stubbed; if
                // the writer went on writing into the stub afterwards, recall
                // must refuse rather than mix the two.
                let rec = env.recall(&["--jsonl"], std::slice::from_ref(&p));
                let rr = rec.of_path(&p);
                let written_after = std::fs::metadata(&p).unwrap().mtime().to_string()
                    != state_field(&st, "mtime").split('.').next().unwrap();
                if rr.state == "processed" {
                    assert_same_data(&std::fs::read(&p).unwrap(), &expect, &p);
                } else {
                    assert!(written_after, "recall of an untouched stub failed: {rr:?}");
                }
            }
            "failures" | "skipped" => {
                assert_same_data(&std::fs::read(&p).unwrap(), &expect, &p);
                assert!(
                    st.as_deref().is_none_or(|s| !s.starts_with("migrated ")),
                    "not stubbed but state {st:?}"
                );
            }
            other => panic!("{other}"),
        }
    }
    eprintln!("file_rewritten_during_migrate outcomes: {outcomes:?}");
}

/// Migrates `files` with a 4 KiB stub, for the recall faults.
fn migrated(env: &Env, sizes: &[usize]) -> Originals {
    let mut files = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let p = env.path(format!("f{i}").as_bytes());
        let data = random_bytes(600 + i as u64, *size);
        std::fs::write(&p, &data).unwrap();
        set_mtime(&p, MTIME.0, MTIME.1);
        files.push((p, data));
    }
    let run = env.migrate(&["--stub-size", "4096", "--jsonl"], &paths(&files));
    assert_eq!(run.code, Some(0), "{}", run.show());
    files
}

/// Everything recall must leave alone on a stub it refuses.
#[derive(Debug, PartialEq, Eq)]
struct StubView {
    data: Vec<u8>,
    blocks: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    xattrs: Vec<(String, Vec<u8>)>,
}

fn stub_view(p: &Path) -> StubView {
    let md = std::fs::metadata(p).unwrap();
    let mut xattrs: Vec<_> = xattr::list(p)
        .unwrap()
        .map(|n| {
            let v = xattr::get(p, &n).unwrap().unwrap_or_default();
            (n.to_string_lossy().into_owned(), v)
        })
        .collect();
    xattrs.sort();
    StubView {
        data: std::fs::read(p).unwrap(),
        blocks: md.blocks(),
        mtime: (md.mtime(), md.mtime_nsec()),
        ctime: (md.ctime(), md.ctime_nsec()),
        xattrs,
    }
}

fn assert_stub_untouched(p: &Path, before: &StubView, when: &str) {
    let now = stub_view(p);
    assert!(now.data == before.data, "{when}: {}: stub content changed", p.display());
    assert_eq!(
        (now.blocks, now.mtime, now.ctime, &now.xattrs),
        (before.blocks, before.mtime, before.ctime, &before.xattrs),
        "{when}: {}: (blocks, mtime, ctime, xattrs) changed",
        p.display()
    );
}

/// (f) A corrupt object (one byte flipped, metadata xattr kept): recall
/// fails with a hash mismatch and leaves the stub exactly as it was; a
/// deleted or truncated object fails too. Both the in-memory (small) and
/// the staged (over 8 MiB) download paths.
#[test]
fn corrupt_or_missing_object() {
    let env = Env::dir();
    let files = migrated(&env, &[100_000, 12 * MIB, 3 * MIB]);
    let views: Vec<_> = files.iter().map(|(p, _)| stub_view(p)).collect();
    // Flip one byte past the stub and one inside the kept head.
    let flips = [(0usize, 50_000u64), (1, 11 * MIB as u64), (1, 100)];
    for &(i, at) in &flips {
        let obj = env.arch().join(env.key_of(&files[i].0));
        let f = std::fs::File::options().read(true).write(true).open(&obj).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
        assert!(xattr::get(&obj, "user.ferry.object").unwrap().is_some());
    }
    let obj2 = env.arch().join(env.key_of(&files[2].0));
    std::fs::remove_file(&obj2).unwrap();

    let rec = env.recall(&["--jsonl"], &paths(&files));
    assert_eq!(rec.code, Some(1), "{}", rec.show());
    for (i, (p, _)) in files.iter().enumerate() {
        let r = rec.of_path(p);
        assert_eq!(r.state, "failures", "{r:?}");
        let m = r.message.join(" ");
        if i < 2 {
            assert!(m.contains("hash mismatch"), "{}: {m}", p.display());
        } else {
            assert!(m.contains("does not hold the object"), "{}: {m}", p.display());
        }
        assert_stub_untouched(p, &views[i], "recall of a corrupt or missing object");
    }
    // A truncated object: its size no longer matches.
    let obj0 = env.arch().join(env.key_of(&files[0].0));
    let f = std::fs::File::options().write(true).open(&obj0).unwrap();
    f.set_len(99_999).unwrap();
    drop(f);
    let rec = env.recall(&["--jsonl"], std::slice::from_ref(&files[0].0));
    assert_eq!(rec.of_path(&files[0].0).state, "failures", "{}", rec.show());
    assert_stub_untouched(&files[0].0, &views[0], "recall of a truncated object");

    // Repair the big one: now it recalls, proving the stub was still good.
    let obj1 = env.arch().join(env.key_of(&files[1].0));
    let f = std::fs::File::options().read(true).write(true).open(&obj1).unwrap();
    for &(i, at) in &flips {
        if i == 1 {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
        }
    }
    drop(f);
    let rec = env.recall(&["--jsonl"], std::slice::from_ref(&files[1].0));
    assert_eq!(rec.code, Some(0), "{}", rec.show());
    assert_same_data(&std::fs::read(&files[1].0).unwrap(), &files[1].1, &files[1].0);
}

/// A stub someone wrote into after migration (same size, data where the
/// stub had a hole): recall fails and never overwrites the foreign data.
fn foreign_data_stub(env: &Env) -> (PathBuf, Vec<u8>, StubView, Run) {
    let files = migrated(env, &[1 << 20]);
    let (p, orig) = files[0].clone();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.write_all_at(b"new data written into the stub", 500_000).unwrap();
    drop(f);
    let before = stub_view(&p);
    let rec = env.recall(&["--jsonl"], std::slice::from_ref(&p));
    (p, orig, before, rec)
}

#[test]
fn stub_written_after_migration_keeps_foreign_data() {
    let env = Env::dir();
    let (p, orig, before, rec) = foreign_data_stub(&env);
    let r = rec.of_path(&p);
    assert_eq!(r.state, "failures", "{r:?}");
    assert!(r.message[0].contains("differs"), "{r:?}");
    let now = std::fs::read(&p).unwrap();
    assert_eq!(&now[500_000..500_030], b"new data written into the stub");
    assert!(state(&p).unwrap().starts_with("migrated "));
    // Nothing but original data or holes elsewhere; the head kept.
    for (i, (a, b)) in now.chunks(4096).zip(orig.chunks(4096)).enumerate() {
        if (i * 4096..(i + 1) * 4096).contains(&500_000) {
            continue;
        }
        assert!(a == b || a.iter().all(|&x| x == 0), "block {i}");
    }
    assert_eq!(&now[..4096], &before.data[..4096]);
}

/// Stricter: a recall that is refused changes nothing at all (content,
/// allocation, mtime), like the hash-mismatch refusal.
#[test]
fn refused_recall_changes_nothing() {
    let env = Env::dir();
    let (p, _, before, rec) = foreign_data_stub(&env);
    assert_eq!(rec.of_path(&p).state, "failures");
    let now = stub_view(&p);
    let filled = now
        .data
        .chunks(4096)
        .zip(before.data.chunks(4096))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        (filled, now.blocks, now.mtime),
        (0, before.blocks, before.mtime),
        "recall refused the stub (foreign data at 500000) yet filled {filled} of its 4 KiB blocks \
         (blocks {} -> {}, mtime {:?} -> {:?})",
        before.blocks,
        now.blocks,
        before.mtime,
        now.mtime
    );
}

/// (g) A file another process (the test) holds open: copied and marked
/// premigrated, never stubbed, content intact; once closed, migrate stubs
/// it.
#[test]
fn file_held_open_at_migrate() {
    let env = Env::dir();
    let p = env.path(b"open");
    let data = random_bytes(7, 500_000);
    std::fs::write(&p, &data).unwrap();
    let before = snap(&p);
    let holder = std::fs::File::open(&p).unwrap();
    let run = env.migrate(&["--jsonl"], std::slice::from_ref(&p));
    assert_eq!(run.code, Some(1), "{}", run.show());
    let r = run.of_path(&p);
    assert_eq!(r.state, "failures");
    assert!(r.message[0].contains("premigrated but not stubbed"), "{r:?}");
    assert_restored(&p, &before);
    assert!(state(&p).unwrap().starts_with("premigrated "));
    drop(holder);
    let run = env.migrate(&["--jsonl"], std::slice::from_ref(&p));
    run.assert_all("processed", 1);
    assert!(state(&p).unwrap().starts_with("migrated "));
    let rec = env.recall(&["--jsonl"], std::slice::from_ref(&p));
    rec.assert_all("processed", 1);
    assert_restored(&p, &before);
}

/// (h) A file flocked by someone else: `partial` and `implicit` fail it as
/// locked and leave it alone; `none` ignores the lock. Recall (partial by
/// default) refuses a locked stub.
#[test]
fn file_flocked_elsewhere() {
    let env = Env::dir();
    let p = env.path(b"locked");
    let data = random_bytes(8, 300_000);
    std::fs::write(&p, &data).unwrap();
    let before = snap(&p);
    let lock = std::fs::File::open(&p).unwrap();
    lock.lock().unwrap();
    for level in ["partial", "implicit"] {
        let run = env.migrate(&["--jsonl", "--lock-level", level], std::slice::from_ref(&p));
        assert_eq!(run.code, Some(1), "{level}: {}", run.show());
        let r = run.of_path(&p);
        assert_eq!(r.state, "failures", "{level}");
        assert!(r.message[0].contains("locked by another operation"), "{level}: {r:?}");
        assert_restored(&p, &before);
        assert_eq!(state(&p), None, "{level}");
    }
    // `none` ignores the flock. The holder keeps the file open (a flock
    // lives on an open file), so the write lease is refused: copied and
    // premigrated, not stubbed. Once it lets go, migrate stubs the file.
    let run = env.migrate(&["--jsonl", "--lock-level", "none"], std::slice::from_ref(&p));
    let r = run.of_path(&p);
    assert!(
        !r.message.iter().any(|m| m.contains("locked")),
        "none must not take the lock: {r:?}"
    );
    assert_eq!(r.state, "failures", "{r:?}");
    assert!(r.message[0].contains("premigrated but not stubbed"), "{r:?}");
    assert_restored(&p, &before);
    drop(lock);
    let run = env.migrate(&["--jsonl", "--lock-level", "none"], std::slice::from_ref(&p));
    run.assert_all("processed", 1);
    assert!(state(&p).unwrap().starts_with("migrated "));

    let lock = std::fs::File::open(&p).unwrap();
    lock.lock().unwrap();
    let stub = stub_view(&p);
    let rec = env.recall(&["--jsonl"], std::slice::from_ref(&p));
    let r = rec.of_path(&p);
    assert_eq!(r.state, "failures", "{r:?}");
    assert!(r.message[0].contains("locked"), "{r:?}");
    assert_stub_untouched(&p, &stub, "recall of a locked stub");
    drop(lock);
    let rec = env.recall(&["--jsonl"], std::slice::from_ref(&p));
    rec.assert_all("processed", 1);
    assert_restored(&p, &before);
}

/// A premigrated file rewritten afterwards with the same size, its mtime
/// then set back to the old value (as `cp -p`, `rsync -t` or `tar x` do
/// when they restore times): migrate must not stub it against the old
/// object, or the new content is lost (recall would bring the old one
/// back). The ctime shows the change even though size and mtime do not.
#[test]
fn premigrated_file_rewritten_with_mtime_restored() {
    let env = Env::dir();
    let p = env.path(b"rewritten");
    let old = random_bytes(1, 200_000);
    std::fs::write(&p, &old).unwrap();
    set_mtime(&p, MTIME.0, MTIME.1);
    let run = env.premigrate(&["--jsonl"], std::slice::from_ref(&p));
    run.assert_all("processed", 1);
    let new = random_bytes(2, 200_000);
    std::fs::write(&p, &new).unwrap();
    set_mtime(&p, MTIME.0, MTIME.1);
    let run = env.migrate(&["--jsonl"], std::slice::from_ref(&p));
    eprintln!("{}", run.show());
    let st = state(&p).unwrap_or_default();
    if st.starts_with("migrated ") {
        let rec = env.recall(&["--jsonl"], std::slice::from_ref(&p));
        eprintln!("{}", rec.show());
        let got = std::fs::read(&p).unwrap();
        assert!(
            got == new,
            "the file was stubbed against the object of its earlier content: after recall it holds the {} \
             content (state {st:?}; migrate said {:?})",
            if got == old { "OLD" } else { "a mixed" },
            run.of_path(&p)
        );
    } else {
        assert_same_data(&std::fs::read(&p).unwrap(), &new, &p);
    }
}

/// A kill between an object's data and its metadata (directory endpoint)
/// leaves an object without `user.ferry.object`. The next migrate of the
/// same file takes it over when it holds the file's content, so the
/// endpoint ends with one object, not two; an object without metadata that
/// holds something else is never overwritten.
#[test]
fn object_without_metadata_is_taken_over_only_when_it_matches() {
    let env = Env::dir();
    let same = env.path(b"same");
    let other = env.path(b"other");
    std::fs::write(&same, b"the file's content").unwrap();
    std::fs::write(&other, b"this file's content").unwrap();
    let arch = env.arch().to_path_buf();
    std::fs::write(arch.join(env.key_of(&same)), b"the file's content").unwrap();
    std::fs::write(arch.join(env.key_of(&other)), b"someone else's data").unwrap();

    let run = env.migrate(&["--jsonl"], &[same.clone(), other.clone()]);
    run.assert_all("processed", 2);
    let names = |prefix: &str| -> Vec<String> {
        std::fs::read_dir(&arch)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(prefix))
            .collect()
    };
    assert_eq!(names("same"), ["same"], "one object for the matching file");
    let meta = xattr::get(arch.join("same"), "user.ferry.object").unwrap();
    assert!(meta.is_some(), "the object got its metadata");
    let mut others = names("other");
    others.sort();
    assert_eq!(others.len(), 2, "{others:?}");
    assert_eq!(std::fs::read(arch.join("other")).unwrap(), b"someone else's data");
    let recall = env.recall(&["--jsonl"], &[same.clone(), other.clone()]);
    recall.assert_all("processed", 2);
    assert_eq!(std::fs::read(&same).unwrap(), b"the file's content");
    assert_eq!(std::fs::read(&other).unwrap(), b"this file's content");
}

/// A kill between recording a file as migrated and punching its data
/// leaves a file marked migrated that still holds its data. The next
/// migrate finishes the stub (after checking content and object) instead
/// of skipping it as done.
#[test]
fn migrated_state_with_data_left_is_finished() {
    let env = Env::dir();
    let f = env.path(b"f");
    let data = vec![7u8; 200_000];
    std::fs::write(&f, &data).unwrap();
    env.premigrate(&["--jsonl"], std::slice::from_ref(&f))
        .assert_all("processed", 1);
    // What the kill leaves: the state says migrated, the data is all there.
    let state = xattr::get(&f, "user.ferry.state").unwrap().unwrap();
    let text = String::from_utf8(state).unwrap();
    let migrated = text.replacen("premigrated", "migrated", 1);
    assert_ne!(migrated, text);
    xattr::set(&f, "user.ferry.state", migrated.as_bytes()).unwrap();

    // A file stubbed in one go, for the blocks a stub keeps (its xattrs may
    // take a block of their own).
    let reference = env.path(b"reference");
    std::fs::write(&reference, &data).unwrap();
    let run = env.migrate(&["--jsonl"], &[f.clone(), reference.clone()]);
    run.assert_all("processed", 2);
    let st = std::fs::metadata(&f).unwrap();
    assert_eq!(st.len(), 200_000);
    assert!(
        st.blocks() < 200_000 / 512,
        "the data was punched out: {} blocks",
        st.blocks()
    );
    assert_eq!(st.blocks(), std::fs::metadata(&reference).unwrap().blocks());
    // Done now: a further migrate skips it.
    env.migrate(&["--jsonl"], std::slice::from_ref(&f))
        .assert_all("skipped", 1);
    env.recall(&["--jsonl"], std::slice::from_ref(&f))
        .assert_all("processed", 1);
    assert_eq!(std::fs::read(&f).unwrap(), data);
}
