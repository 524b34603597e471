//! The cloud-side tasks on real files and real endpoints (a directory
//! store and S3 on moto): `remove-from-cloud`, `move-in-cloud`,
//! `ensure-in-cloud` (`dynamo.tasks.remove_from_cloud`, `move_in_cloud`,
//! `ensure_cloud_file_exists`), and the endpoint primitives under them
//! (server-side copy with metadata, ranged download). Each case runs
//! against both stores: the normal path, a missing object, the refusals
//! that keep data safe, a second run (a redelivered task) that ends in
//! the same state, and names with a newline and invalid UTF-8.

mod common;

use common::ops::*;
use ferry::endpoint::{Endpoint, ObjectMeta, TransferError};
use ferry::ops::OpContext;
use ferry::sys::Timestamp;
use object_store::path::Path as ObjPath;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A name with a newline and a byte that is not UTF-8, and its key.
const ODD: &[u8] = b"odd\nname\xff";
const ODD_KEY: &str = "odd%0Aname%FF";

/// Writes `n` bytes of pseudo-random content (seed `seed`) at `name`.
fn file(env: &Env, name: &[u8], seed: u64, n: usize) -> PathBuf {
    let p = env.path(name);
    std::fs::write(&p, random_bytes(seed, n)).unwrap();
    p
}

/// ferry's xattrs on `path` (state and every location).
fn ferry_xattrs(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = xattr::list(path)
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    v.sort();
    v
}

/// Asserts a run's outcomes, path by path: (path, state, message part).
fn assert_outcomes(run: &Run, want: &[(&Path, &str, &str)]) {
    assert_eq!(run.results().len(), want.len(), "{}", run.show());
    for (p, state, part) in want {
        let r = run.of_path(p);
        assert_eq!(r.state, *state, "{}: {r:?}\n{}", p.display(), run.show());
        let msg = r.message.join(" ");
        assert!(msg.contains(part), "{}: {msg:?} lacks {part:?}", p.display());
    }
}

// ---------------------------------------------------------------------------
// remove-from-cloud

fn remove_from_cloud(env: Env) {
    let kept = file(&env, b"kept", 1, 5000);
    let odd = file(&env, ODD, 2, 70_000);
    let stub = file(&env, b"stub", 3, 100_000);
    let never = file(&env, b"never", 4, 10);
    let gone = file(&env, b"gone", 5, 10);
    let data = |p: &Path| std::fs::read(p).unwrap();
    let (kept_data, odd_data) = (data(&kept), data(&odd));
    let run = env.premigrate(&[], &[kept.clone(), odd.clone(), gone.clone()]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let run = env.migrate(&[], std::slice::from_ref(&stub));
    assert_eq!(run.code, Some(0), "{}", run.show());
    std::fs::remove_file(&gone).unwrap();
    let all = [kept.clone(), odd.clone(), stub.clone(), never.clone(), gone.clone()];

    for round in 0..2 {
        let run = env.run("remove-from-cloud", &["--endpoint", EP], &all);
        assert_eq!(run.code, Some(1), "the stub fails: {}", run.show());
        let done = if round == 0 { "processed" } else { "skipped" };
        assert_outcomes(
            &run,
            &[
                (&kept, done, ""),
                (&odd, done, ""),
                (&stub, "failures", "recall it first"),
                (&never, "skipped", "no object at never"),
                (&gone, done, ""),
            ],
        );
        for (key, present) in [("kept", false), (ODD_KEY, false), ("stub", true), ("gone", false)] {
            assert_eq!(env.object_exists(key), present, "round {round}: object {key}");
        }
        // The resident files keep their data and lose only ferry's xattrs.
        assert_eq!(ferry_xattrs(&kept), Vec::<String>::new());
        assert_eq!(ferry_xattrs(&odd), Vec::<String>::new());
        assert_eq!(data(&kept), kept_data);
        assert_eq!(data(&odd), odd_data);
        assert!(state(&stub).unwrap().starts_with("migrated "));
        assert_eq!(location(&stub).as_deref(), Some("stub"));
    }
    // The refused stub's data is still whole behind it.
    let run = env.recall(&[], std::slice::from_ref(&stub));
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(data(&stub), random_bytes(3, 100_000));
}
both!(remove_from_cloud);

// ---------------------------------------------------------------------------
// move-in-cloud

fn move_in_cloud(env: Env) {
    let a = file(&env, b"a", 11, 3000);
    let s = file(&env, b"s", 12, 200_000);
    let o = file(&env, ODD, 13, 10_000);
    assert_eq!(env.premigrate(&[], &[a.clone(), o.clone()]).code, Some(0));
    assert_eq!(env.migrate(&[], std::slice::from_ref(&s)).code, Some(0));
    let (a2, s2, o2) = (env.path(b"a2"), env.path(b"dir/s2"), env.path(b"odd2\n\xfe"));
    std::fs::create_dir(env.path(b"dir")).unwrap();
    for (from, to) in [(&a, &a2), (&s, &s2), (&o, &o2)] {
        std::fs::rename(from, to).unwrap();
    }
    let pairs = vec![a.clone(), a2.clone(), s.clone(), s2.clone(), o.clone(), o2.clone()];
    for round in 0..2 {
        let run = env.run("move-in-cloud", &["--endpoint", EP], &pairs);
        assert_eq!(run.code, Some(0), "{}", run.show());
        let done = if round == 0 { "processed" } else { "skipped" };
        assert_outcomes(&run, &[(&a2, done, ""), (&s2, done, ""), (&o2, done, "")]);
        for (old, new, file) in [("a", "a2", &a2), ("s", "dir/s2", &s2), (ODD_KEY, "odd2%0A%FE", &o2)] {
            assert!(!env.object_exists(old), "round {round}: {old} still there");
            assert!(env.object_exists(new), "round {round}: {new} missing");
            assert_eq!(location(file).as_deref(), Some(new), "{}", file.display());
        }
    }
    // The moved stub recalls from its new object, whole.
    let run = env.recall(&[], std::slice::from_ref(&s2));
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(std::fs::read(&s2).unwrap(), random_bytes(12, 200_000));
}
both!(move_in_cloud);

fn move_in_cloud_refusals(env: Env) {
    // No object at the source's key.
    let n2 = file(&env, b"n2", 21, 100);
    // A stub at the destination whose data is the object there: moving
    // another object onto that key would lose it.
    let v = file(&env, b"v", 22, 5000);
    let w = file(&env, b"w", 23, 50_000);
    assert_eq!(env.premigrate(&[], std::slice::from_ref(&v)).code, Some(0));
    assert_eq!(env.migrate(&[], std::slice::from_ref(&w)).code, Some(0));
    // A moved directory: its files' objects move file by file.
    let d2 = env.path(b"d2");
    std::fs::create_dir(&d2).unwrap();
    let run = env.run(
        "move-in-cloud",
        &["--endpoint", EP],
        &[
            env.path(b"n"),
            n2.clone(),
            v.clone(),
            w.clone(),
            env.path(b"d"),
            d2.clone(),
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert_outcomes(
        &run,
        &[
            (&n2, "failures", "source object missing: no object at n "),
            (&w, "failures", "would lose its data"),
            (&d2, "failures", "give it the files under the moved directory"),
        ],
    );
    assert!(env.object_exists("v") && env.object_exists("w"));
    let run = env.recall(&[], std::slice::from_ref(&w));
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(std::fs::read(&w).unwrap(), random_bytes(23, 50_000));
}
both!(move_in_cloud_refusals);

// ---------------------------------------------------------------------------
// ensure-in-cloud

fn ensure_in_cloud(env: Env) {
    let here = file(&env, b"here", 31, 4000);
    let odd = file(&env, ODD, 32, 4000);
    let other = file(&env, b"other", 33, 4000);
    let never = file(&env, b"never", 34, 10);
    assert_eq!(
        env.premigrate(&[], &[here.clone(), odd.clone(), other.clone()]).code,
        Some(0)
    );
    // `other` records a hash its object does not have.
    let st = state(&other).unwrap();
    let wrong = st.replace(&state_field(&st, "blake3"), blake3::hash(b"x").to_hex().as_str());
    xattr::set(&other, STATE, wrong.as_bytes()).unwrap();
    let all = [here.clone(), odd.clone(), other.clone(), never.clone()];
    for _ in 0..2 {
        let started = Instant::now();
        let run = env.run("ensure-in-cloud", &["--endpoint", EP, "--retry-pause", "0.4"], &all);
        let took = started.elapsed();
        assert_eq!(run.code, Some(1), "{}", run.show());
        assert_outcomes(
            &run,
            &[
                (&here, "processed", ""),
                (&odd, "processed", ""),
                (&other, "failures", "holds other content than the file records"),
                (&never, "failures", "no object at never on `arch` (after 3 checks)"),
            ],
        );
        // Two retries, each after the pause.
        assert!(
            took >= Duration::from_millis(800),
            "checked only once or twice: {took:?}"
        );
    }
}
both!(ensure_in_cloud);

// ---------------------------------------------------------------------------
// Endpoint primitives, in process

/// The test endpoint, opened as an operation opens it.
fn open(env: &Env) -> (OpContext, Arc<Endpoint>) {
    let config = ferry::config::Config::load(Some(&env.config)).unwrap();
    let ctx = OpContext::new(config, Some(2)).unwrap();
    let ep = ctx.endpoint(EP).unwrap();
    (ctx, ep)
}

/// Uploads `data` to `key` with metadata carrying `xattr_len` bytes of
/// user xattrs (over 64 KiB: a sidecar on both stores).
fn put(env: &Env, ep: &Endpoint, key: &str, data: &[u8], xattr_len: usize) -> ObjectMeta {
    let src = env.tmp.path().join(format!("src-{}", key.replace('/', "_")));
    std::fs::write(&src, data).unwrap();
    let meta = ObjectMeta {
        size: data.len() as u64,
        hash: blake3::hash(b""),
        mode: 0o100640,
        uid: 1,
        gid: 2,
        mtime: Timestamp { sec: 5, nsec: 6 },
        atime: Timestamp { sec: 7, nsec: 8 },
        xattrs: vec![(b"user.big".to_vec(), vec![b'v'; xattr_len])],
        path: None,
        kind: Default::default(),
        link: None,
    };
    let f = std::fs::File::open(&src).unwrap();
    let meta = ep.upload(&ObjPath::from(key), &f, meta).unwrap();
    ep.sync().unwrap();
    meta
}

fn range(ep: &Endpoint, key: &str, start: u64, end: u64) -> Result<Vec<u8>, TransferError> {
    let mut got = Vec::new();
    ep.download_range(&ObjPath::from(key), start, end, &mut |c| {
        got.extend_from_slice(c);
        Ok(())
    })
    .map(|()| got)
}

fn ranges_and_bounds(env: Env) {
    let (_ctx, ep) = open(&env);
    let data = random_bytes(41, 3 << 20);
    put(&env, &ep, "r", &data, 10);
    let n = data.len() as u64;
    for (s, e) in [(0, n), (5, 1_000_005), (n - 1, n), (n, n), (7, 7)] {
        assert_eq!(
            range(&ep, "r", s, e).unwrap(),
            &data[s as usize..e as usize],
            "{s}..{e}"
        );
    }
    for (s, e, why) in [
        (0, n + 1, "past the object's end (3145728 bytes)"),
        (n + 1, n + 2, "past the object's end"),
        (9, 8, "ends before it starts"),
    ] {
        let err = range(&ep, "r", s, e).unwrap_err().to_string();
        assert!(err.contains(why), "{s}..{e}: {err}");
    }
    let err = range(&ep, "none", 0, 1).unwrap_err().to_string();
    assert!(err.contains("no object at none"), "{err}");
}
both!(ranges_and_bounds);

fn copy_carries_metadata_and_sidecar(env: Env) {
    let (_ctx, ep) = open(&env);
    let (from, to) = (ObjPath::from("from/big"), ObjPath::from("to/big"));
    let data = random_bytes(51, 100_000);
    let meta = put(&env, &ep, "from/big", &data, 70_000);
    ep.copy(&from, &to).unwrap();
    ep.sync().unwrap();
    let head = ep.head(&to).unwrap().expect("the copy");
    assert_eq!(head.size, data.len() as u64);
    assert_eq!(head.meta.unwrap().unwrap(), meta, "the copy's metadata");
    assert!(env.object_exists("to/big#m"), "the sidecar came along");
    assert!(
        env.object_exists("from/big") && env.object_exists("from/big#m"),
        "the original stays"
    );
    assert_eq!(range(&ep, "to/big", 0, data.len() as u64).unwrap(), data);
    // A small document replacing it leaves no stale sidecar behind.
    let small = put(&env, &ep, "from/small", b"tiny", 10);
    ep.copy(&ObjPath::from("from/small"), &to).unwrap();
    assert_eq!(ep.head(&to).unwrap().unwrap().meta.unwrap().unwrap(), small);
    assert!(!env.object_exists("to/big#m"), "stale sidecar kept");
    // Nothing to copy, or onto itself: refused, nothing written.
    let err = ep.copy(&ObjPath::from("nothing"), &ObjPath::from("t2")).unwrap_err();
    assert!(err.to_string().contains("no object at nothing"), "{err}");
    assert!(!env.object_exists("t2"));
    let err = ep.copy(&to, &to).unwrap_err();
    assert!(err.to_string().contains("onto itself"), "{err}");
}
both!(copy_carries_metadata_and_sidecar);

/// A directory store refuses to copy an object whose bytes no longer match
/// its metadata, and leaves nothing at the destination.
#[test]
fn dir_copy_refuses_a_corrupt_object() {
    let env = Env::dir();
    let (_ctx, ep) = open(&env);
    put(&env, &ep, "c", &random_bytes(61, 9000), 10);
    let obj = env.arch().join("c");
    let f = std::fs::OpenOptions::new().write(true).open(&obj).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", 100).unwrap();
    let err = ep.copy(&ObjPath::from("c"), &ObjPath::from("d")).unwrap_err();
    assert!(err.to_string().contains("does not match its metadata"), "{err}");
    assert!(!env.arch().join("d").exists());
    let staging: Vec<_> = std::fs::read_dir(env.arch().join("#staging")).unwrap().collect();
    assert!(staging.is_empty(), "staging debris: {staging:?}");
}

/// Paths with odd names reach the primitives as keys, not as bytes.
#[test]
fn odd_names_have_escaped_keys() {
    let env = Env::dir();
    let (_ctx, ep) = open(&env);
    let (key, _) = ep.key(&pbytes(&env.path(ODD))).unwrap();
    assert_eq!(key.as_ref(), ODD_KEY);
    assert!(OsStr::from_bytes(ODD).to_str().is_none());
}

// ---------------------------------------------------------------------------
// recall --range / --location (recall_bytes)

fn recall_bytes(env: Env) {
    const N: usize = 300_000;
    let s = file(&env, b"s", 71, N);
    let odd = file(&env, ODD, 72, N);
    let t = file(&env, b"t", 73, N);
    let plain = file(&env, b"plain", 74, 10);
    std::fs::set_permissions(&s, std::os::unix::fs::PermissionsExt::from_mode(0o604)).unwrap();
    let run = env.migrate(&["--stub-size", "4096"], &[s.clone(), odd.clone(), t.clone()]);
    assert_eq!(run.code, Some(0), "{}", run.show());
    let stub_state = state(&s).unwrap();
    let out = env.tmp.path().join("out/sub");
    let loc = out.to_str().unwrap();

    // A range to a new file; the stub stays a stub. Twice: the same end.
    for round in 0..2 {
        let run = env.recall(
            &["--range", "1000:250000", "--location", loc, "--default-mode-dir", "700"],
            &[s.clone(), odd.clone()],
        );
        assert_eq!(run.code, Some(0), "{}", run.show());
        let done = if round == 0 { "processed" } else { "skipped" };
        assert_outcomes(&run, &[(&s, done, ""), (&odd, done, "")]);
        assert_eq!(
            std::fs::read(out.join("s")).unwrap(),
            &random_bytes(71, N)[1000..250_000]
        );
        let odd_out = out.join(OsStr::from_bytes(ODD));
        assert_eq!(std::fs::read(&odd_out).unwrap(), &random_bytes(72, N)[1000..250_000]);
        assert_eq!(snap(&out.join("s")).mode & 0o7777, 0o604, "the object's mode");
        assert_eq!(
            state(&s).as_deref(),
            Some(stub_state.as_str()),
            "the stub is left alone"
        );
        assert!(
            std::fs::read(&s).unwrap()[8192..].iter().all(|&b| b == 0),
            "still punched"
        );
    }
    let dir_mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&out).unwrap());
    assert_eq!(dir_mode & 0o7777, 0o700, "--default-mode-dir");
    // Open-ended: to the object's end.
    let out2 = env.tmp.path().join("out2");
    let run = env.recall(
        &["--range", "299000:", "--location", out2.to_str().unwrap()],
        std::slice::from_ref(&s),
    );
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_eq!(std::fs::read(out2.join("s")).unwrap(), &random_bytes(71, N)[299_000..]);

    // Refusals: past the end, a different file in the way, in place, no
    // object, not managed.
    let out3 = env.tmp.path().join("out3");
    std::fs::create_dir(&out3).unwrap();
    std::fs::write(out3.join("odd"), b"mine").unwrap();
    let odd3 = env.path(b"odd");
    std::fs::rename(&odd, &odd3).unwrap();
    let (_ctx, ep) = open(&env);
    ep.delete(&ObjPath::from("t")).unwrap();
    let run = env.recall(
        &["--range", "0:300001", "--location", out3.to_str().unwrap()],
        std::slice::from_ref(&s),
    );
    assert_outcomes(&run, &[(&s, "failures", "goes past the object's end (300000 bytes)")]);
    let run = env.recall(
        &["--range", "0:10", "--location", out3.to_str().unwrap()],
        &[odd3.clone(), t.clone(), plain.clone()],
    );
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert_outcomes(
        &run,
        &[
            (&odd3, "failures", "a different file exists at"),
            (&t, "failures", "does not hold the object recorded for this file"),
            (&plain, "failures", "not managed by ferry"),
        ],
    );
    assert_eq!(std::fs::read(out3.join("odd")).unwrap(), b"mine");
    assert!(!out3.join("s").exists() && !out3.join("t").exists());
    let run = env.recall(&["--range", "0:10"], std::slice::from_ref(&s));
    assert_outcomes(&run, &[(&s, "failures", "byte-range recall in place is refused")]);
    assert_eq!(state(&s).as_deref(), Some(stub_state.as_str()));
    // The whole range in place is a recall.
    let run = env.recall(&["--range", "0:"], std::slice::from_ref(&s));
    assert_outcomes(&run, &[(&s, "processed", "")]);
    assert_eq!(std::fs::read(&s).unwrap(), random_bytes(71, N));
    assert!(state(&s).unwrap().starts_with("premigrated "));
}
both!(recall_bytes);

/// The task's arguments as a hub sends them: a location that is not UTF-8
/// (surrogateescape), modes as octal strings or numbers.
#[test]
fn recall_bytes_arguments() {
    use ferry::ops::Operation;
    use ferry::ops::recall_bytes::{LocalPath, Mode};
    use ferry::task::TaskName;
    let parse = |kwargs: &str| Operation::from_task(TaskName::RecallBytes, kwargs).unwrap();
    let Ok(Operation::RecallBytes(a)) =
        parse(r#"{"location": "/x/\udcff\n", "default_mode_dir": "0750", "remote_offset_end": 5, "paths": []}"#)
    else {
        panic!("not parsed");
    };
    assert_eq!(a.location, Some(LocalPath(b"/x/\xff\n".to_vec())));
    assert_eq!(
        (a.default_mode_dir, a.remote_offset_start, a.remote_offset_end),
        (Some(Mode(0o750)), 0, Some(5))
    );
    let Ok(Operation::RecallBytes(a)) = parse(r#"{"default_mode_dir": 488}"#) else {
        panic!("not parsed");
    };
    assert_eq!(a.default_mode_dir, Some(Mode(0o750)));
    for bad in [
        r#"{"location": "relative"}"#,
        r#"{"default_mode_dir": "9"}"#,
        r#"{"default_mode_dir": 65536}"#,
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------
// sync-metadata (ngenea_sync_metadata)

/// Removes ferry's xattrs from `path` (a file that lost its record).
fn strip(path: &Path) {
    for n in ferry_xattrs(path) {
        xattr::remove(path, n).unwrap();
    }
}

fn sync_metadata(env: Env) {
    let r1 = file(&env, b"r1", 81, 5000);
    let odd = file(&env, ODD, 82, 5000);
    let r2 = file(&env, b"r2", 83, 5000);
    let r3 = file(&env, b"r3", 84, 5000);
    let r4 = file(&env, b"r4", 85, 5000);
    let m1 = file(&env, b"m1", 86, 90_000);
    let m2 = file(&env, b"m2", 87, 90_000);
    let m3 = file(&env, b"m3", 88, 90_000);
    xattr::set(&m1, "user.project", b"alpha").unwrap();
    set_mtime(&m1, 1_600_000_000, 5);
    let m1_before = snap(&m1);
    let resident = [r1.clone(), odd.clone(), r2.clone(), r3.clone(), r4.clone()];
    assert_eq!(env.premigrate(&[], &resident).code, Some(0));
    assert_eq!(env.migrate(&[], &[m1.clone(), m2.clone(), m3.clone()]).code, Some(0));
    let r1_state = state(&r1).unwrap();
    // r1 and odd lost their record; r2 too, and its content changed; r3
    // changed with its record in place; r4's object is gone.
    for p in [&r1, &odd, &r2] {
        strip(p);
    }
    std::fs::write(&r2, random_bytes(99, 5000)).unwrap();
    std::fs::write(&r3, random_bytes(98, 5000)).unwrap();
    let (_ctx, ep) = open(&env);
    ep.delete(&ObjPath::from("r4")).unwrap();
    // m1's metadata drifted from its object's; m2's object is gone; m3
    // records another content than its object's.
    std::os::unix::fs::chown(&m1, Some(999), Some(998)).unwrap();
    std::fs::set_permissions(&m1, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    xattr::set(&m1, "user.project", b"beta").unwrap();
    xattr::set(&m1, "user.extra", b"x").unwrap();
    set_mtime(&m1, 1_700_000_000, 1);
    ep.delete(&ObjPath::from("m2")).unwrap();
    let st = state(&m3).unwrap();
    let wrong = st.replace(&state_field(&st, "blake3"), blake3::hash(b"x").to_hex().as_str());
    xattr::set(&m3, STATE, wrong.as_bytes()).unwrap();

    let all = [&resident[..], &[m1.clone(), m2.clone(), m3.clone()]].concat();
    let run = env.run("sync-metadata", &["--endpoint", EP], &all);
    assert_eq!(run.code, Some(1), "{}", run.show());
    assert_outcomes(
        &run,
        &[
            (&r1, "processed", "recorded as premigrated"),
            (&odd, "processed", "recorded as premigrated"),
            (&r2, "failures", "local content differs from the object at r2"),
            (&r3, "processed", "removed the file's location and state"),
            (&r4, "processed", "is gone; removed the file's location and state"),
            (&m1, "processed", "took the object's owner, mode, xattrs, times"),
            (&m2, "failures", "this stub's data beyond its head is lost"),
            (&m3, "failures", "is not this stub's content"),
        ],
    );
    assert_eq!(state(&r1).as_deref(), Some(r1_state.as_str()));
    assert_eq!(location(&r1).as_deref(), Some("r1"));
    assert_eq!(location(&odd).as_deref(), Some(ODD_KEY));
    for p in [&r2, &r3, &r4] {
        assert_eq!(ferry_xattrs(p), Vec::<String>::new(), "{}", p.display());
    }
    assert_eq!(location(&m2), None);
    assert!(
        state(&m2).unwrap().starts_with("migrated "),
        "the lost stub keeps its state"
    );
    let m1_now = snap(&m1);
    assert_eq!(
        (m1_now.mode, m1_now.uid, m1_now.gid, m1_now.mtime, &m1_now.xattrs),
        (
            m1_before.mode,
            m1_before.uid,
            m1_before.gid,
            m1_before.mtime,
            &m1_before.xattrs
        )
    );

    // Again: the same end state, nothing more to do.
    let run = env.run("sync-metadata", &["--endpoint", EP], &all);
    assert_outcomes(
        &run,
        &[
            (&r1, "skipped", "already recorded"),
            (&odd, "skipped", "already recorded"),
            (&r2, "failures", "nothing recorded"),
            (&r3, "failures", "nothing recorded"),
            (&r4, "skipped", "no object at r4"),
            (&m1, "skipped", "already in line"),
            (&m2, "skipped", "no object at m2"),
            (&m3, "failures", "is not this stub's content"),
        ],
    );
    // --skip-hash compares sizes only: r2 is taken for its object's copy.
    let run = env.run(
        "sync-metadata",
        &["--endpoint", EP, "--skip-hash"],
        std::slice::from_ref(&r2),
    );
    assert_outcomes(&run, &[(&r2, "processed", "recorded as premigrated")]);
    // The synced stub still recalls whole, its times as they were.
    let run = env.recall(&[], std::slice::from_ref(&m1));
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_restored(&m1, &m1_before);
}
both!(sync_metadata);

/// move-in-cloud takes path objects with `source` (as `ferry snapdiff`
/// writes moved entries and the task receives them), names that are not
/// UTF-8 in surrogateescape form.
#[test]
fn move_in_cloud_takes_path_objects() {
    let env = Env::dir();
    let a = file(&env, ODD, 91, 2000);
    assert_eq!(env.premigrate(&[], std::slice::from_ref(&a)).code, Some(0));
    let b = env.path(b"b\xfe");
    std::fs::rename(&a, &b).unwrap();
    let esc = |p: &Path| {
        let mut out = Vec::new();
        ferry::task::surrogate::encode(&pbytes(p), &mut out);
        String::from_utf8(out).unwrap()
    };
    let line = format!("{{\"path\": {}, \"source\": {}}}\n", esc(&b), esc(&a));
    let run = env.run_stdin("move-in-cloud", &["--endpoint", EP], line.as_bytes());
    assert_eq!(run.code, Some(0), "{}", run.show());
    assert_outcomes(&run, &[(&b, "processed", "")]);
    assert!(env.arch().join("b%FE").is_file() && !env.arch().join(ODD_KEY).exists());
    assert_eq!(location(&b).as_deref(), Some("b%FE"));
    // A path object without `source` is a failure of that path alone.
    let run = env.run_stdin(
        "move-in-cloud",
        &["--endpoint", EP],
        format!("{{\"path\": {}}}\n", esc(&b)).as_bytes(),
    );
    assert_outcomes(&run, &[(&b, "failures", "no \"source\"")]);
}

/// Bad --range and --default-mode-dir values are usage errors (status 2),
/// and nothing is read.
#[test]
fn recall_range_flags_are_checked() {
    let env = Env::dir();
    let f = file(&env, b"f", 95, 10);
    for args in [
        &["--range", "5", "--location", "/tmp"][..],
        &["--range", "a:b", "--location", "/tmp"],
        &["--location", "/tmp", "--default-mode-dir", "9"],
        &["--range", "0:1", "--location", "/tmp", "--delete-remote"],
    ] {
        let run = env.recall(args, std::slice::from_ref(&f));
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.show());
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.show());
    }
}

/// The agent runs each task by its seed name, with no arguments (the seed
/// gives none) or the ones ferry adds; a wrong type is refused.
#[test]
fn tasks_by_seed_name() {
    use ferry::ops::Operation;
    use ferry::task::TaskName;
    for (name, pairs) in [
        ("dynamo.tasks.remove_from_cloud", false),
        ("dynamo.tasks.move_in_cloud", true),
        ("dynamo.tasks.ensure_cloud_file_exists", false),
        ("dynamo.tasks.recall_bytes", false),
        ("dynamo.tasks.ngenea_sync_metadata", false),
    ] {
        let task = TaskName::parse(name).unwrap_or_else(|| panic!("{name} unknown"));
        let op = Operation::from_task(task, r#"{"paths": [], "jobid": 7}"#)
            .unwrap()
            .unwrap();
        assert_eq!(op.task_name().as_str(), name);
        assert_eq!(op.takes_pairs(), pairs, "{name}");
        let bad = Operation::from_task(task, r#"{"endpoint": 5}"#).unwrap();
        assert!(bad.is_err(), "{name}: a numeric endpoint was taken");
    }
}

/// An object that appears after the first check passes a later one.
fn ensure_retries_until_the_object_appears(env: Env) {
    use ferry::ops::ensure_in_cloud::{EnsureArgs, ensure_cloud_file_exists};
    use ferry::task::{FileState, PathObject};
    let (ctx, ep) = open(&env);
    let late = file(&env, b"late", 97, 100);
    let args = EnsureArgs {
        endpoint: Some(EP.into()),
        retry_pause: Some(2.0),
    };
    let paths = [PathObject::new(pbytes(&late))];
    // The first check runs at once, before the object is written (unless
    // this machine stalls for half a second, when it passes at once).
    let outcomes = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            put(&env, &ep, "late", b"whatever", 10);
        });
        ensure_cloud_file_exists(&ctx, &args, &paths).unwrap()
    });
    assert_eq!(outcomes[0].state, FileState::Processed, "{:?}", outcomes[0]);
}
both!(ensure_retries_until_the_object_appears);
