//! Fixtures for the operation tests (`migrate`, `premigrate`, `recall`): a
//! tree and an endpoint (directory or S3) with a configuration naming it,
//! running `ferry` with a deadline, reading its results (both output
//! formats, surrogateescape paths included), and what a file looks like
//! (content, owner, mode, times, user xattrs) to compare before and after.

#![allow(dead_code)]

use super::btrfs::{DEADLINE, json_members, json_path};
use super::s3::S3Server;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The ferry binary under test.
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// ferry's xattr prefix in every configuration made here.
pub const PREFIX: &str = "user.ferry.";
/// The state xattr.
pub const STATE: &str = "user.ferry.state";
/// The endpoint name in every configuration made here.
pub const EP: &str = "arch";

/// Which kind of endpoint a test runs against.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A directory target at this path.
    Dir(PathBuf),
    /// An S3 bucket on the given server URL.
    S3 { url: String, bucket: String },
}

/// A tree under a temporary directory and an endpoint for it.
pub struct Env {
    pub tmp: tempfile::TempDir,
    /// Local files live here (the endpoint's `root`).
    pub tree: PathBuf,
    pub config: PathBuf,
    pub backend: Backend,
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-ops-")
        .tempdir()
        .expect("tempdir")
}

impl Env {
    /// A directory endpoint under the same temporary directory.
    pub fn dir() -> Env {
        let tmp = tempdir();
        let arch = tmp.path().join("arch");
        std::fs::create_dir(&arch).unwrap();
        Env::with_backend(tmp, Backend::Dir(arch))
    }

    /// A directory endpoint at `arch` (made by the caller, e.g. a mount).
    pub fn dir_at(tmp: tempfile::TempDir, arch: PathBuf) -> Env {
        Env::with_backend(tmp, Backend::Dir(arch))
    }

    /// An S3 endpoint on a fresh bucket; `None` (skip, said loudly) when no
    /// server can be started outside CI.
    pub fn s3(test: &str) -> Option<Env> {
        let server = S3Server::get()?;
        let bucket = server.unique_bucket(test);
        Some(Env::with_backend(
            tempdir(),
            Backend::S3 {
                url: server.endpoint,
                bucket,
            },
        ))
    }

    /// An S3 endpoint on a fresh bucket with the tree under `tmp` (made by
    /// the caller, e.g. on a loop mount); `None` as for [`Env::s3`].
    pub fn s3_in(tmp: tempfile::TempDir, test: &str) -> Option<Env> {
        let server = S3Server::get()?;
        let bucket = server.unique_bucket(test);
        Some(Env::with_backend(
            tmp,
            Backend::S3 {
                url: server.endpoint,
                bucket,
            },
        ))
    }

    /// An S3 endpoint at a URL that nothing answers.
    pub fn s3_at(url: &str) -> Env {
        Env::with_backend(
            tempdir(),
            Backend::S3 {
                url: url.to_string(),
                bucket: "nowhere".into(),
            },
        )
    }

    fn with_backend(tmp: tempfile::TempDir, backend: Backend) -> Env {
        let tree = tmp.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let config = tmp.path().join("ferry.conf");
        let store = match &backend {
            Backend::Dir(p) => format!("type = directory\npath = {}\n", p.display()),
            Backend::S3 { url, bucket } => {
                format!("type = s3\nbucket = {bucket}\nurl = {url}\naccess_key_id = test\nsecret_access_key = test\n")
            }
        };
        std::fs::write(
            &config,
            format!(
                "[settings]\nxattr_prefix = {PREFIX}\n\n[Endpoint {EP}]\n{store}root = {}\n",
                tree.display()
            ),
        )
        .unwrap();
        Env {
            tmp,
            tree,
            config,
            backend,
        }
    }

    /// `tree/name` (name may hold any bytes but `/` and NUL).
    pub fn path(&self, name: &[u8]) -> PathBuf {
        self.tree.join(OsStr::from_bytes(name))
    }

    /// A `ferry SUB --config C --no-progress ARGS...` command.
    pub fn cmd(&self, sub: &str, args: &[&OsStr]) -> Command {
        let mut c = Command::new(FERRY);
        c.arg(sub).arg("--config").arg(&self.config).arg("--no-progress");
        c.args(args);
        c
    }

    /// Runs `ferry SUB ARGS PATHS...` to the end.
    pub fn run(&self, sub: &str, args: &[&str], paths: &[PathBuf]) -> Run {
        let mut c = self.cmd(sub, &args.iter().map(OsStr::new).collect::<Vec<_>>());
        c.args(paths);
        Run::of(run_cmd(c, None))
    }

    /// Runs `ferry SUB ARGS -` with `stdin` as the path list.
    pub fn run_stdin(&self, sub: &str, args: &[&str], stdin: &[u8]) -> Run {
        let mut c = self.cmd(sub, &args.iter().map(OsStr::new).collect::<Vec<_>>());
        c.arg("-");
        Run::of(run_cmd(c, Some(stdin)))
    }

    /// `migrate --endpoint arch ARGS PATHS`.
    pub fn migrate(&self, args: &[&str], paths: &[PathBuf]) -> Run {
        let mut a = vec!["--endpoint", EP];
        a.extend_from_slice(args);
        self.run("migrate", &a, paths)
    }

    /// `premigrate --endpoint arch ARGS PATHS`.
    pub fn premigrate(&self, args: &[&str], paths: &[PathBuf]) -> Run {
        let mut a = vec!["--endpoint", EP];
        a.extend_from_slice(args);
        self.run("premigrate", &a, paths)
    }

    /// `recall ARGS PATHS`.
    pub fn recall(&self, args: &[&str], paths: &[PathBuf]) -> Run {
        self.run("recall", args, paths)
    }

    /// The object key of a file under the tree (plain names only).
    pub fn key_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.tree)
            .unwrap()
            .to_str()
            .expect("plain name")
            .to_string()
    }

    /// Whether the endpoint holds an object at `key` (plain keys only).
    pub fn object_exists(&self, key: &str) -> bool {
        match &self.backend {
            Backend::Dir(d) => d.join(key).is_file(),
            // moto refuses unsigned HEADs but lists a bucket.
            Backend::S3 { url, bucket } => {
                let out = Command::new("curl")
                    .args(["-sS", "--max-time", "30", "-G", "--data-urlencode", "list-type=2"])
                    .arg("--data-urlencode")
                    .arg(format!("prefix={key}"))
                    .arg(format!("{url}/{bucket}"))
                    .output()
                    .expect("curl");
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                assert!(text.contains("<ListBucketResult"), "listing {bucket}: {text}");
                text.contains(&format!("<Key>{key}</Key>"))
            }
        }
    }

    /// The directory target's path (panics for S3).
    pub fn arch(&self) -> &Path {
        match &self.backend {
            Backend::Dir(d) => d,
            Backend::S3 { .. } => panic!("not a directory target"),
        }
    }
}

/// Runs a command to success (a test's own set-up: `touch`, `setfacl`,
/// `cp`, ...).
pub fn sh<A: AsRef<OsStr> + std::fmt::Debug>(cmd: &str, args: &[A]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `c` with `stdin` (or none), capturing its output, within the
/// fixtures' deadline.
pub fn run_cmd(mut c: Command, stdin: Option<&[u8]>) -> Output {
    super::run_within(&mut c, stdin, DEADLINE, None)
}

/// One path's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathResult {
    pub path: Vec<u8>,
    pub state: String,
    pub message: Vec<String>,
}

/// A finished run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    fn of(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// For messages.
    pub fn show(&self) -> String {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }

    /// The outcomes, from whichever format the run wrote.
    pub fn results(&self) -> Vec<PathResult> {
        let text = std::str::from_utf8(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.show()));
        let t = text.trim_start();
        if t.starts_with("{\"jobid\"") {
            parse_result_object(t).1
        } else {
            parse_jsonl(text)
        }
    }

    /// The result object (default output), with its outcomes.
    pub fn object(&self) -> (serde_json::Value, Vec<PathResult>) {
        parse_result_object(std::str::from_utf8(&self.stdout).unwrap())
    }

    /// The outcome of `path`; panics unless exactly one.
    pub fn of_path(&self, path: &Path) -> PathResult {
        let want = path.as_os_str().as_bytes();
        let all: Vec<_> = self.results().into_iter().filter(|r| r.path == want).collect();
        assert_eq!(all.len(), 1, "one outcome for {}: {}", path.display(), self.show());
        all.into_iter().next().unwrap()
    }

    /// Asserts every outcome is `state`, and there are `n` of them.
    pub fn assert_all(&self, state: &str, n: usize) {
        let r = self.results();
        assert_eq!(r.len(), n, "{}", self.show());
        for x in &r {
            assert_eq!(x.state, state, "{x:?}\n{}", self.show());
        }
    }

    /// Counts outcomes by state.
    pub fn count(&self, state: &str) -> usize {
        self.results().iter().filter(|r| r.state == state).count()
    }
}

/// Parses `--jsonl` output.
pub fn parse_jsonl(text: &str) -> Vec<PathResult> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let m = json_members(l);
            let get = |k: &str| m.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            PathResult {
                path: json_path(&get("path").unwrap_or_else(|| panic!("no path: {l}"))),
                state: serde_json::from_str(&get("state").unwrap_or_else(|| panic!("no state: {l}"))).unwrap(),
                message: get("message")
                    .map(|v| serde_json::from_str(&v).unwrap())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Surrogate escapes `\udcNN` become private-use characters U+F7NN so that
/// serde_json accepts the text; [`unmask`] turns them back into bytes.
fn mask_surrogates(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b[i + 1..].starts_with(b"udc") || b[i + 1..].starts_with(b"uDC") {
                out.push_str("\\uf7");
                out.push_str(&text[i + 4..i + 6]);
                i += 6;
            } else {
                out.push_str(&text[i..i + 2]);
                i += 2;
            }
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// A masked JSON string as path bytes.
pub fn unmask(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for c in s.chars() {
        let u = c as u32;
        if (0xF780..=0xF7FF).contains(&u) {
            out.push((u - 0xF700) as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

/// Parses the result object, checking its shape: the summary counts agree
/// with the details, `paths` lists the processed ones, `input_total` the
/// inputs.
pub fn parse_result_object(text: &str) -> (serde_json::Value, Vec<PathResult>) {
    let v: serde_json::Value =
        serde_json::from_str(&mask_surrogates(text.trim())).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v.get("jobid").is_some(), "jobid: {text}");
    let status = &v["status"];
    assert!(status["task"].as_str().unwrap().starts_with("dynamo.tasks."), "{text}");
    assert!(status["started"].is_string(), "{text}");
    let mut out = Vec::new();
    for state in ["processed", "skipped", "aborted", "failures"] {
        let list = status["details"][state]
            .as_array()
            .unwrap_or_else(|| panic!("details.{state}: {text}"));
        assert_eq!(
            status["summary"][state].as_u64(),
            Some(list.len() as u64),
            "summary.{state} vs details: {text}"
        );
        for p in list {
            out.push(PathResult {
                path: unmask(p["path"].as_str().unwrap()),
                state: state.to_string(),
                message: p
                    .get("message")
                    .and_then(|m| m.as_array())
                    .map(|m| m.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            });
        }
    }
    let inputs = status["input_paths"].as_array().unwrap();
    assert_eq!(status["input_total"].as_u64(), Some(inputs.len() as u64), "{text}");
    assert_eq!(inputs.len(), out.len(), "every input has one outcome: {text}");
    // `paths` goes on to a workflow's next step: processed and skipped.
    let mut going_on: Vec<_> = ["processed", "skipped"]
        .iter()
        .flat_map(|s| {
            status["details"][s]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["path"].clone())
        })
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let mut paths: Vec<_> = v["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    going_on.sort();
    paths.sort();
    assert_eq!(paths, going_on, "`paths` lists the processed and skipped files: {text}");
    (v, out)
}

/// What a file is, to compare before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSnap {
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    /// `user.` xattrs outside ferry's prefix, sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub ino: u64,
}

/// Reads what `path` is now.
pub fn snap(path: &Path) -> FileSnap {
    let md = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    FileSnap {
        data: std::fs::read(path).unwrap(),
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        xattrs: user_xattrs(path),
        ino: md.ino(),
    }
}

/// `user.` xattrs outside ferry's prefix, sorted.
pub fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = xattr::list(path)
        .unwrap()
        .map(|n| n.as_bytes().to_vec())
        .filter(|n| n.starts_with(b"user.") && !n.starts_with(PREFIX.as_bytes()))
        .map(|n| {
            let v = xattr::get(path, OsStr::from_bytes(&n)).unwrap().unwrap_or_default();
            (n, v)
        })
        .collect();
    out.sort();
    out
}

/// Asserts `path` is exactly `want` again (content, mode, owner, mtime,
/// user xattrs, inode).
pub fn assert_restored(path: &Path, want: &FileSnap) {
    let now = snap(path);
    assert_same_data(&now.data, &want.data, path);
    assert_eq!(
        (now.mode, now.uid, now.gid, now.mtime, now.ino),
        (want.mode, want.uid, want.gid, want.mtime, want.ino),
        "{}: (mode, uid, gid, mtime, inode)",
        path.display()
    );
    assert_eq!(now.xattrs, want.xattrs, "{}: user xattrs", path.display());
}

/// Asserts two contents are equal, reporting the first difference.
pub fn assert_same_data(got: &[u8], want: &[u8], path: &Path) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{}: content differs: {} bytes vs {} expected, first difference at {first:?}",
            path.display(),
            got.len(),
            want.len()
        );
    }
}

/// The state xattr, as text.
pub fn state(path: &Path) -> Option<String> {
    xattr::get(path, STATE).unwrap().map(|v| String::from_utf8(v).unwrap())
}

/// The location xattr for the endpoint.
pub fn location(path: &Path) -> Option<String> {
    xattr::get(path, format!("{PREFIX}loc.{EP}"))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// One `key=value` word of a state xattr.
pub fn state_field(state: &str, key: &str) -> String {
    state
        .split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {state:?}"))
        .to_string()
}

/// `st_blocks` (512-byte units).
pub fn blocks(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

/// Deterministic pseudo-random bytes (xorshift), never all-zero blocks.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A small deterministic generator for test choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Sets the file's mtime to `sec.nsec` (and atime one second earlier).
pub fn set_mtime(path: &Path, sec: u64, nsec: u32) {
    use std::time::{Duration, UNIX_EPOCH};
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_times(
        std::fs::FileTimes::new()
            .set_modified(UNIX_EPOCH + Duration::new(sec, nsec))
            .set_accessed(UNIX_EPOCH + Duration::new(sec - 1, nsec)),
    )
    .unwrap();
}

/// A path list of NUL-ended paths.
pub fn nul_list(paths: &[PathBuf]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in paths {
        v.extend_from_slice(p.as_os_str().as_bytes());
        v.push(0);
    }
    v
}

/// The paths of a list of outcomes, sorted.
pub fn sorted_paths(r: &[PathResult]) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = r.iter().map(|x| x.path.clone()).collect();
    v.sort();
    v
}

/// The bytes of a path.
pub fn pbytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// Runs a test body against a directory endpoint and against S3: `both!(f)`
/// makes `f::dir` and `f::s3`, each calling `f` with the test file's `Env`.
#[allow(unused_macros)]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn dir() {
                super::$name(super::Env::dir());
            }
            #[test]
            fn s3() {
                if let Some(env) = super::Env::s3(stringify!($name)) {
                    super::$name(env);
                }
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both;
