//! `ferry scan` end to end: the real binary on real directory trees, checked
//! against GNU find, `lstat` and Python's JSON decoder.
//!
//! Tests that need root (mounting a tmpfs, switching to an unprivileged user
//! with `setpriv`) fail when `CI=true` and are skipped loudly otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

mod common;

use common::{require_root, wait_with_deadline};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// How long any one command may run before the test fails (a hung walker
/// must fail the test, not hang the suite).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The longest path the kernel accepts in one call (`PATH_MAX`).
const PATH_MAX: usize = 4096;

/// Builds a `Vec<OsString>` from a mix of `&str`, `&Path`, `PathBuf`, ...
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(OsString::from(AsRef::<OsStr>::as_ref(&$a))),*]
    };
}

// ---------------------------------------------------------------------------
// Running commands

struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    desc: String,
}

impl Output {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn assert_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(want),
            "{}: want exit status {want}, got {:?} (signal {:?})\nstderr:\n{}",
            self.desc,
            self.code(),
            self.status.signal(),
            self.stderr
        );
        self
    }

    fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }

    fn assert_no_panic(&self) -> &Self {
        assert!(
            !self.stderr.contains("panicked"),
            "{} panicked:\n{}",
            self.desc,
            self.stderr
        );
        self
    }

    fn stdout_str(&self) -> &str {
        std::str::from_utf8(&self.stdout).unwrap_or_else(|_| panic!("{}: stdout is not UTF-8", self.desc))
    }
}

/// Runs `cmd` to completion with no stdin, capturing its output; fails the
/// test if it runs longer than [`TIMEOUT`].
fn run(mut cmd: Command) -> Output {
    let mut desc = format!("{cmd:?}");
    if desc.len() > 600 {
        desc.truncate(600);
        desc.push_str("...");
    }
    let out = common::run_within(&mut cmd, None, TIMEOUT, Some(&desc));
    Output {
        status: out.status,
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        desc,
    }
}

fn ferry_cmd(args: Vec<OsString>) -> Command {
    let mut c = Command::new(FERRY);
    c.args(args);
    c
}

fn ferry(args: Vec<OsString>) -> Output {
    run(ferry_cmd(args))
}

/// `find [pre...] ROOTS... [expr...]`
fn find_cmd(pre: &[&str], roots: &[&Path], expr: &[&str]) -> Command {
    let mut c = Command::new("find");
    c.args(pre).args(roots).args(expr);
    c
}

fn find(pre: &[&str], roots: &[&Path], expr: &[&str]) -> Output {
    run(find_cmd(pre, roots, expr))
}

/// Runs a command as `nobody` (uid/gid 65534, no supplementary groups).
fn as_nobody(program: &Path, args: Vec<OsString>) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .args(args);
    c
}

// ---------------------------------------------------------------------------
// Paths and comparisons

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn join(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

fn cstring(b: &[u8]) -> CString {
    CString::new(b).unwrap()
}

fn show(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    if s.len() > 160 {
        let head: String = s.chars().take(120).collect();
        format!("{head:?}...[{} bytes]", p.len())
    } else {
        format!("{s:?}")
    }
}

/// Splits `-print0` style output into paths; every path must end in NUL.
fn nul_paths(out: &[u8]) -> Vec<Vec<u8>> {
    if out.is_empty() {
        return Vec::new();
    }
    assert_eq!(out.last(), Some(&0), "NUL output must end with a NUL byte");
    out[..out.len() - 1].split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// Asserts that two lists of paths hold the same paths the same number of
/// times, and shows a readable difference otherwise.
fn assert_same_paths(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    let count = |v: &[Vec<u8>]| {
        let mut m: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for p in v {
            *m.entry(p.clone()).or_default() += 1;
        }
        m
    };
    let (g, w) = (count(got), count(want));
    if g == w {
        return;
    }
    let mut msg = format!("{what}: got {} paths, want {}\n", got.len(), want.len());
    let missing: Vec<_> = w.keys().filter(|p| !g.contains_key(*p)).collect();
    let extra: Vec<_> = g.keys().filter(|p| !w.contains_key(*p)).collect();
    let miscount: Vec<_> = g
        .iter()
        .filter(|(p, n)| w.get(*p).is_some_and(|m| m != *n))
        .map(|(p, n)| (p, *n, w[p]))
        .collect();
    for (label, list) in [("missing", &missing), ("unexpected", &extra)] {
        if !list.is_empty() {
            msg += &format!("  {label} ({}):\n", list.len());
            for p in list.iter().take(20) {
                msg += &format!("    {}\n", show(p));
            }
        }
    }
    for (p, n, m) in miscount.iter().take(20) {
        msg += &format!("  {} listed {n} times, want {m}\n", show(p));
    }
    panic!("{msg}");
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// mkdir with an explicit mode (independent of the umask).
fn mkdir(p: &Path) {
    fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    set_mode(p, 0o755);
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    set_mode(p, 0o644);
}

fn mkfifo(p: &Path) {
    let c = cstring(&bytes(p));
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", p.display());
    set_mode(p, 0o644);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `n` names `f00000`... in `dir`, hard links to one 3-byte file (creating
/// inodes is slow on some test machines; links are cheap and still distinct
/// directory entries).
fn flat_links(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let src = dir.join("src");
    write(&src, b"abc");
    let mut paths = vec![bytes(dir), bytes(&src)];
    for i in 0..n {
        let p = dir.join(format!("f{i:05}"));
        fs::hard_link(&src, &p).unwrap();
        paths.push(bytes(&p));
    }
    paths
}

// ---------------------------------------------------------------------------
// The awkward tree

/// A tree of awkward names; puts back the unreadable directory's mode on
/// drop so the temporary directory can be removed by anyone.
struct Tree {
    root: PathBuf,
    /// A full path longer than PATH_MAX (the deep leaf), when built deep.
    deep_leaf: Option<Vec<u8>>,
    unreadable: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.unreadable, fs::Permissions::from_mode(0o755));
    }
}

#[derive(Clone, Copy)]
struct TreeOpts {
    /// A chain of directories whose full paths exceed PATH_MAX.
    deep: bool,
    /// The symlink cycle `a -> b`, `b -> a`.
    cycle: bool,
}

impl TreeOpts {
    /// Everything, including the beyond-PATH_MAX chain and the link cycle.
    const ALL: TreeOpts = TreeOpts {
        deep: true,
        cycle: true,
    };
    /// No deep chain (GNU `find -L` cannot walk it), with the link cycle.
    const SHALLOW: TreeOpts = TreeOpts {
        deep: false,
        cycle: true,
    };
    /// Neither.
    const PLAIN: TreeOpts = TreeOpts {
        deep: false,
        cycle: false,
    };
}

fn awkward_tree(tmp: tempfile::TempDir, o: TreeOpts) -> Tree {
    set_mode(tmp.path(), 0o755);
    let root = tmp.path().join("tree root");
    mkdir(&root);
    let r = |name: &[u8]| join(&root, name);

    mkdir(&r(b"with space"));
    mkdir(&r(b"with space/a b"));
    write(&r(b"with space/a b/f 1"), b"x");
    mkdir(&r(b"new\nline"));
    write(&r(b"new\nline/x\ny"), b"yy");
    write(&r(b"trailing newline\n"), b"");
    mkdir(&r(b"\xff\xfe"));
    write(&r(b"\xff\xfe/\x80file"), b"z");
    for name in [
        &b"quote\"back\\slash"[..],
        b"tab\there",
        b"ctl\x01\x1f\x7f",
        "é ✓ utf-8".as_bytes(),
        b"bad\xc3(seq",
        b"\xed\xa0\x80surrogate",
        b"trunc\xe2\x82",
        b"-dash",
    ] {
        write(&r(name), b"n");
    }
    // 255-byte names (the NAME_MAX of ext4), one of them multi-byte UTF-8.
    let long = vec![b'L'; 255];
    write(&r(&long), b"q");
    let mut long_dir = "é".repeat(127).into_bytes();
    long_dir.push(b'D');
    assert_eq!(long_dir.len(), 255);
    mkdir(&r(&long_dir));
    write(&join(&r(&long_dir), &[b'M'; 255]), b"");

    symlink(".", r(b"loop")).unwrap();
    if o.cycle {
        symlink("b", r(b"a")).unwrap();
        symlink("a", r(b"b")).unwrap();
    }
    symlink("nowhere", r(b"dangling")).unwrap();
    symlink("with space", r(b"dirlink")).unwrap();
    symlink("tab\there", r(b"filelink")).unwrap();
    mkfifo(&r(b"fifo"));
    mkdir(&r(b"empty"));
    mkdir(&r(b"empty/nested empty"));

    let unreadable = r(b"noread");
    mkdir(&unreadable);
    write(&unreadable.join("secret"), b"s");
    mkdir(&unreadable.join("sub"));
    set_mode(&unreadable, 0o000);

    let deep_leaf = o.deep.then(|| {
        let deep = r(b"deep");
        mkdir(&deep);
        let (leaf, _) = deep_chain(&deep, 20, 0);
        assert!(leaf.len() > PATH_MAX, "deep leaf must exceed PATH_MAX");
        leaf
    });
    Tree {
        root,
        deep_leaf,
        unreadable,
        _tmp: tmp,
    }
}

/// Builds `levels` nested directories of 250-byte names below `parent`, each
/// level also holding `siblings` empty directories, with mkdirat/openat
/// relative steps (a path this long cannot be passed to mkdir). The deepest
/// directory holds a file `leaf` and a symlink `up -> ..`. Returns the leaf's
/// full path and every directory created.
fn deep_chain(parent: &Path, levels: usize, siblings: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut fd: OwnedFd = File::open(parent).unwrap().into();
    let mut path = bytes(parent);
    let mut dirs = Vec::new();
    let mkdirat = |fd: &OwnedFd, name: &CString| {
        // SAFETY: valid descriptor and NUL-terminated name.
        let r = unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) };
        assert_eq!(r, 0, "mkdirat: {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let r = unsafe { libc::fchmodat(fd.as_raw_fd(), name.as_ptr(), 0o755, 0) };
        assert_eq!(r, 0, "fchmodat: {}", std::io::Error::last_os_error());
    };
    for i in 0..levels {
        for s in 0..siblings {
            let name = format!("s{s}_{i:02}{}", "x".repeat(200));
            mkdirat(&fd, &cstring(name.as_bytes()));
            dirs.push([&path[..], b"/", name.as_bytes()].concat());
        }
        let name = format!("{i:03}{}", "d".repeat(247));
        let c = cstring(name.as_bytes());
        mkdirat(&fd, &c);
        // SAFETY: valid descriptor and name; the result is checked and owned.
        let nfd = unsafe {
            libc::openat(
                fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(nfd >= 0, "openat: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor that nothing else owns.
        fd = unsafe { OwnedFd::from_raw_fd(nfd) };
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        dirs.push(path.clone());
    }
    let leaf = cstring(b"leaf");
    // SAFETY: valid descriptor and name; the descriptor is closed at once.
    let f = unsafe {
        libc::openat(
            fd.as_raw_fd(),
            leaf.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(f >= 0, "create leaf: {}", std::io::Error::last_os_error());
    // SAFETY: `f` is ours; fchmod then close it.
    unsafe {
        libc::fchmod(f, 0o644);
        libc::close(f);
    }
    // SAFETY: valid strings and descriptor.
    let r = unsafe { libc::symlinkat(cstring(b"..").as_ptr(), fd.as_raw_fd(), cstring(b"up").as_ptr()) };
    assert_eq!(r, 0, "symlinkat: {}", std::io::Error::last_os_error());
    (path.iter().chain(b"/leaf").copied().collect(), dirs)
}

fn assert_gnu_find() {
    let mut c = Command::new("find");
    c.arg("--version");
    let v = run(c);
    assert!(
        v.stdout_str().contains("GNU findutils"),
        "these tests compare with GNU find; `find --version` says:\n{}",
        v.stdout_str()
    );
}

// ---------------------------------------------------------------------------
// Python's view of JSON output

/// One path object as Python decodes it.
#[derive(Debug)]
struct PyObj {
    /// Index of the output line (the batch, in batch mode).
    line: usize,
    /// The `type` value, `"None"` when absent or null.
    kind: String,
    /// The `size` value, when present and not null.
    size: Option<u64>,
    /// The object's keys, sorted and comma-joined.
    keys: String,
    /// `os.fsencode(obj["path"])`.
    path: Vec<u8>,
}

const PY_DECODE: &str = r#"
import json, os, sys
out = sys.stdout.buffer
for n, line in enumerate(sys.stdin.buffer.read().split(b"\n")):
    if not line:
        continue
    doc = json.loads(line)
    for o in (doc if isinstance(doc, list) else [doc]):
        size = o.get("size")
        out.write(b"%d\0%s\0%s\0%s\0" % (
            n, str(o.get("type")).encode(), b"" if size is None else b"%d" % size,
            ",".join(sorted(o)).encode()))
        out.write(os.fsencode(o["path"]) + b"\0")
"#;

/// Decodes JSON-lines or batch output with Python's `json.loads` and
/// `os.fsencode` (the contract for non-UTF-8 names).
fn py_decode(json: &[u8]) -> Vec<PyObj> {
    let mut child = Command::new("python3")
        .args(["-c", PY_DECODE])
        .env("PYTHONUTF8", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to check JSON output");
    let mut stdin = child.stdin.take().unwrap();
    let input = json.to_vec();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "python could not decode ferry's JSON: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields = nul_paths(&out.stdout);
    assert_eq!(fields.len() % 5, 0);
    fields
        .chunks(5)
        .map(|f| {
            let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            PyObj {
                line: s(&f[0]).parse().unwrap(),
                kind: s(&f[1]),
                size: (!f[2].is_empty()).then(|| s(&f[2]).parse().unwrap()),
                keys: s(&f[3]),
                path: f[4].clone(),
            }
        })
        .collect()
}

fn py_paths(objs: &[PyObj]) -> Vec<Vec<u8>> {
    objs.iter().map(|o| o.path.clone()).collect()
}

/// Parses one JSON line whose values are plain (ASCII paths): key -> raw JSON text.
fn raw_fields(line: &str) -> BTreeMap<String, String> {
    let m: BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
    m.into_iter().map(|(k, v)| (k, v.get().to_string())).collect()
}

// ---------------------------------------------------------------------------
// 1. The awkward tree against find

#[test]
fn awkward_tree_nul_output_matches_find() {
    assert_gnu_find();
    let t = awkward_tree(tempdir(), TreeOpts::ALL);
    let f = find(&[], &[&t.root], &["-print0"]);
    let want = nul_paths(&f.stdout);
    // GNU find handles paths beyond PATH_MAX; the comparison relies on it.
    let leaf = t.deep_leaf.as_ref().unwrap();
    assert!(want.contains(leaf), "GNU find did not list the deep leaf");
    assert!(want.iter().any(|p| p.ends_with(b"/\x80file")));

    let out = ferry(args!["scan", "-0", t.root]);
    out.assert_no_panic();
    // As root every directory is readable; otherwise both fail on noread.
    assert_eq!(
        out.code() == Some(0),
        f.code() == Some(0),
        "{}\n{}",
        out.stderr,
        f.stderr
    );
    if common::is_root() {
        out.assert_ok();
        assert!(out.stderr.is_empty(), "unexpected stderr: {}", out.stderr);
    }
    let got = nul_paths(&out.stdout);
    assert_same_paths("ferry scan -0 vs find -print0", &got, &want);

    // The same with a single worker thread.
    let one = ferry(args!["scan", "-0", "--threads", "1", t.root]);
    assert_same_paths("ferry scan -0 -j1 vs find", &nul_paths(&one.stdout), &want);
}

#[test]
fn awkward_tree_follow_links_matches_find_l() {
    // GNU `find -L` cannot walk paths beyond PATH_MAX, so no deep chain here.
    let t = awkward_tree(tempdir(), TreeOpts::SHALLOW);
    let f = find(&["-L"], &[&t.root], &["-print0"]);
    // find reports both kinds of loop and does not list them.
    assert!(f.stderr.contains("loop"), "{}", f.stderr);
    assert!(f.stderr.contains("Too many levels of symbolic links"), "{}", f.stderr);
    let want = nul_paths(&f.stdout);
    assert!(!want.contains(&bytes(&t.root.join("loop"))));
    assert!(want.contains(&bytes(&t.root.join("dirlink/a b/f 1"))));

    let out = ferry(args!["scan", "-0", "-L", t.root]);
    out.assert_no_panic().assert_code(1);
    assert!(
        out.stderr.contains(&format!("{}'", t.root.join("loop").display())),
        "the directory loop must be reported:\n{}",
        out.stderr
    );
    assert_same_paths("ferry scan -0 -L vs find -L", &nul_paths(&out.stdout), &want);
    // The cycle a -> b -> a is a loop too: reported, not listed.
    for name in ["a", "b"] {
        assert!(
            out.stderr.contains(&format!("{}'", t.root.join(name).display())),
            "symlink cycle member {name} not reported:\n{}",
            out.stderr
        );
    }
}

#[test]
fn follow_links_descends_symlinked_dirs_and_reports_directory_loops() {
    let t = awkward_tree(tempdir(), TreeOpts::PLAIN);
    let f = find(&["-L"], &[&t.root], &["-print0"]);
    let want = nul_paths(&f.stdout);
    let out = ferry(args!["scan", "-0", "-L", t.root]);
    out.assert_no_panic().assert_code(1);
    assert_same_paths("ferry -L vs find -L (no symlink cycle)", &nul_paths(&out.stdout), &want);
    let loop_path = t.root.join("loop");
    assert!(
        out.stderr.contains(&format!("'{}'", loop_path.display())) && out.stderr.contains("loop"),
        "loop not reported:\n{}",
        out.stderr
    );
    // The dangling link is listed as a symlink; the file link as its target's type.
    let json = ferry(args!["scan", "-L", "--fields", "path,type", t.root]);
    let objs = py_decode(&json.stdout);
    let kind = |name: &str| {
        let p = bytes(&t.root.join(name));
        objs.iter().find(|o| o.path == p).map(|o| o.kind.clone())
    };
    assert_eq!(kind("dangling").as_deref(), Some("symlink"));
    assert_eq!(kind("filelink").as_deref(), Some("file"));
    assert_eq!(kind("dirlink").as_deref(), Some("directory"));
    assert_eq!(kind("loop"), None);
}

#[test]
fn unreadable_directory_as_unprivileged_user() {
    if !require_root("unreadable_directory_as_unprivileged_user") {
        return;
    }
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv (util-linux) is needed"
    );
    // In /tmp explicitly: the unprivileged user must be able to traverse it.
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    set_mode(tmp.path(), 0o755);
    let bin = tmp.path().join("ferry");
    if fs::hard_link(FERRY, &bin).is_err() {
        fs::copy(FERRY, &bin).unwrap();
    }
    set_mode(&bin, 0o755);
    let t = awkward_tree(tmp, TreeOpts::ALL);
    let noread = bytes(&t.unreadable);

    let mut fc = as_nobody(Path::new("find"), args![t.root, "-print0"]);
    fc.current_dir("/");
    let f = run(fc);
    f.assert_code(1);
    assert!(f.stderr.contains("Permission denied"), "{}", f.stderr);
    let want = nul_paths(&f.stdout);
    assert!(want.contains(&noread), "find lists the unreadable directory itself");
    assert!(!want.contains(&bytes(&t.unreadable.join("secret"))));

    let mut c = as_nobody(&bin, args!["scan", "-0", t.root]);
    c.current_dir("/");
    let out = run(c);
    out.assert_no_panic().assert_code(1);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(&*t.unreadable.to_string_lossy()))
        .unwrap_or_else(|| panic!("no error naming {}:\n{}", t.unreadable.display(), out.stderr));
    assert!(line.contains("Permission denied"), "{line}");
    assert_same_paths("as nobody: ferry -0 vs find", &nul_paths(&out.stdout), &want);

    // The summary counts the failure and still exits 1.
    let mut c = as_nobody(&bin, args!["scan", "--summary", t.root]);
    c.current_dir("/");
    let s = run(c);
    s.assert_code(1);
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["summary"]["failures"], 1, "{v}");
}

/// With few descriptors the walker cannot keep every parent open and opens
/// some directories by full path, which fails beyond PATH_MAX although find
/// handles the same tree under the same limit.
#[test]
fn deep_tree_beyond_path_max_with_few_descriptors() {
    let tmp = tempdir();
    let root = tmp.path().join("w");
    mkdir(&root);
    let (leaf, _) = deep_chain(&root, 24, 4);
    let limited = |mut c: Command| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 90,
                    rlim_max: 90,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run(c)
    };
    let f = limited(find_cmd(&[], &[&root], &["-print0"]));
    f.assert_ok();
    let want = nul_paths(&f.stdout);
    assert!(want.contains(&leaf));
    let out = limited(ferry_cmd(args!["scan", "-0", "--threads", "1", root]));
    out.assert_no_panic();
    assert_same_paths(
        "ferry -0 -j1 with RLIMIT_NOFILE=90 vs find",
        &nul_paths(&out.stdout),
        &want,
    );
    out.assert_ok();
}

// ---------------------------------------------------------------------------
// 2. JSON lines

#[test]
fn json_lines_round_trip_paths_via_python() {
    let t = awkward_tree(tempdir(), TreeOpts::ALL);
    let f = find(&[], &[&t.root], &["-print0"]);
    let want = nul_paths(&f.stdout);
    for fields in [None, Some("path"), Some("all")] {
        let mut a = args!["scan", t.root];
        if let Some(fl) = fields {
            a.extend(args!["--fields", fl]);
        }
        let out = ferry(a);
        out.assert_no_panic();
        assert!(out.stdout.ends_with(b"\n"));
        assert!(
            out.stdout.iter().all(|&b| b >= 0x20 || b == b'\n'),
            "JSON lines must not carry raw control bytes"
        );
        let objs = py_decode(&out.stdout);
        assert_eq!(
            objs.len(),
            out.stdout.iter().filter(|&&b| b == b'\n').count(),
            "one object per line"
        );
        assert_same_paths(
            &format!("JSON paths (fields {fields:?}) decoded by python vs find"),
            &py_paths(&objs),
            &want,
        );
    }
}

#[test]
fn json_default_fields_match_lstat() {
    let tmp = tempdir();
    let root = tmp.path().join("meta");
    mkdir(&root);
    let known = root.join("known");
    write(&known, &[7u8; 1234]);
    fs::hard_link(&known, root.join("known-link")).unwrap();
    set_mode(&known, 0o640);
    let t = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&known)
        .unwrap()
        .set_modified(t)
        .unwrap();
    if common::is_root() {
        std::os::unix::fs::chown(&known, Some(4321), Some(8765)).unwrap();
    }
    // Before 1970: -1.5 s is sec -2 + 0.5 s; written as -1.500000000.
    let old = root.join("old");
    write(&old, b"");
    let before = UNIX_EPOCH - Duration::from_millis(1500);
    File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(before)
        .unwrap();
    mkdir(&root.join("dir"));
    symlink("known", root.join("link")).unwrap();
    mkfifo(&root.join("fifo"));

    let out = ferry(args!["scan", root]);
    out.assert_ok();
    let lines: Vec<BTreeMap<String, String>> = out.stdout_str().lines().map(raw_fields).collect();
    assert_eq!(lines.len(), 7, "{}", out.stdout_str());
    // Seconds as a decimal: -1.5 s is stored as sec -2, nsec 500000000.
    let ts = |s: i64, ns: i64| {
        if s < 0 && ns > 0 {
            format!("-{}.{:09}", -(s + 1), 1_000_000_000 - ns)
        } else {
            format!("{s}.{ns:09}")
        }
    };
    let mut seen = BTreeSet::new();
    for l in &lines {
        for key in [
            "path", "type", "size", "mtime", "ctime", "atime", "inode", "mode", "uid", "gid", "nlink",
        ] {
            assert!(l.contains_key(key), "default output lacks {key}: {l:?}");
        }
        let path: String = serde_json::from_str(&l["path"]).unwrap();
        let m = fs::symlink_metadata(&path).unwrap();
        let kind = match m.file_type() {
            ft if ft.is_file() => "file",
            ft if ft.is_dir() => "directory",
            ft if ft.is_symlink() => "symlink",
            _ => "other",
        };
        assert_eq!(l["type"], format!("\"{kind}\""), "{path}");
        assert_eq!(l["size"], m.size().to_string(), "{path}");
        assert_eq!(l["mtime"], ts(m.mtime(), m.mtime_nsec()), "{path}");
        assert_eq!(l["ctime"], ts(m.ctime(), m.ctime_nsec()), "{path}");
        // Reading a directory may update its atime (relatime), so only
        // entries ferry does not read are compared.
        if kind != "directory" {
            assert_eq!(l["atime"], ts(m.atime(), m.atime_nsec()), "{path}");
        }
        assert_eq!(l["inode"], m.ino().to_string(), "{path}");
        assert_eq!(l["mode"], m.mode().to_string(), "{path}");
        assert_eq!(l["uid"], m.uid().to_string(), "{path}");
        assert_eq!(l["gid"], m.gid().to_string(), "{path}");
        assert_eq!(l["nlink"], m.nlink().to_string(), "{path}");
        seen.insert((path, kind));
    }
    let p = |n: &str| root.join(n).to_string_lossy().into_owned();
    for (name, kind) in [
        ("known", "file"),
        ("dir", "directory"),
        ("link", "symlink"),
        ("fifo", "other"),
    ] {
        assert!(seen.contains(&(p(name), kind)), "{name} as {kind} missing: {seen:?}");
    }
    let by_path = |n: &str| lines.iter().find(|l| l["path"] == format!("\"{}\"", p(n))).unwrap();
    let k = by_path("known");
    assert_eq!(k["size"], "1234");
    assert_eq!(k["mtime"], "1600000000.123456789");
    assert_eq!(k["nlink"], "2");
    assert_eq!(k["mode"], (libc::S_IFREG | 0o640).to_string());
    if common::is_root() {
        assert_eq!((k["uid"].as_str(), k["gid"].as_str()), ("4321", "8765"));
    }
    assert_eq!(by_path("old")["mtime"], "-1.500000000");
    assert_eq!(by_path("link")["size"], "5", "a symlink's size is its target's length");
}

#[test]
fn json_fields_selection_and_types_match_find() {
    let t = awkward_tree(tempdir(), TreeOpts::ALL);
    let f = find(&[], &[&t.root], &["-printf", "%y\\0%p\\0"]);
    let parts = nul_paths(&f.stdout);
    let want: BTreeMap<Vec<u8>, &str> = parts
        .chunks(2)
        .map(|c| {
            let kind = match c[0].as_slice() {
                b"f" => "file",
                b"d" => "directory",
                b"l" => "symlink",
                _ => "other",
            };
            (c[1].clone(), kind)
        })
        .collect();
    for (fields, keys) in [
        ("path,type", "path,type"),
        ("type", "path,type"),
        ("path,size", "path,size"),
    ] {
        let out = ferry(args!["scan", "--fields", fields, t.root]);
        out.assert_no_panic();
        let objs = py_decode(&out.stdout);
        assert_eq!(objs.len(), want.len(), "--fields {fields}");
        for o in &objs {
            assert_eq!(o.keys, keys, "--fields {fields}: keys of {}", show(&o.path));
            if keys.contains("type") {
                assert_eq!(Some(&o.kind.as_str()), want.get(&o.path), "type of {}", show(&o.path));
            }
        }
    }
    let bad = ferry(args!["scan", "--fields", "path,bogus", t.root]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("bogus") && bad.stdout.is_empty(), "{}", bad.stderr);
}

// ---------------------------------------------------------------------------
// 3. Depth, filesystems, globs, snapshots

#[test]
fn max_depth_matches_find_maxdepth() {
    let t = awkward_tree(tempdir(), TreeOpts::ALL);
    for n in [0, 1, 2, 3, 7, 30] {
        let ns = n.to_string();
        let want = nul_paths(&find(&[], &[&t.root], &["-maxdepth", &ns, "-print0"]).stdout);
        let out = ferry(args!["scan", "-0", "--max-depth", ns, t.root]);
        out.assert_no_panic();
        assert_same_paths(
            &format!("--max-depth {n} vs find -maxdepth {n}"),
            &nul_paths(&out.stdout),
            &want,
        );
        let json = ferry(args!["scan", "--max-depth", ns, t.root]);
        assert_same_paths(
            &format!("JSON --max-depth {n}"),
            &py_paths(&py_decode(&json.stdout)),
            &want,
        );
    }
    // A file root at depth 0.
    let file = t.root.join("-dash");
    let out = ferry(args!["scan", "-0", "--max-depth", "0", file]);
    assert_eq!(nul_paths(&out.stdout), vec![bytes(&file)]);
}

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.0).status();
        if !st.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn one_file_system_matches_find_xdev() {
    if !require_root("one_file_system_matches_find_xdev") {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path().join("x");
    mkdir(&root);
    mkdir(&root.join("a"));
    write(&root.join("a/f"), b"1");
    write(&root.join("z"), b"2");
    let mnt = root.join("mnt");
    mkdir(&mnt);
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount -t tmpfs failed (root but no mount privilege?)");
    let _mount = Mount(mnt.clone());
    write(&mnt.join("inner"), b"3");
    mkdir(&mnt.join("sub"));
    write(&mnt.join("sub/deeper"), b"4");

    let want = nul_paths(&find(&[], &[&root], &["-xdev", "-print0"]).stdout);
    assert!(want.contains(&bytes(&mnt)), "find -xdev lists the mount point");
    assert!(!want.contains(&bytes(&mnt.join("inner"))));
    for extra in [&["-0"][..], &["-0", "--threads", "1"]] {
        let mut a = args!["scan", "-x", root];
        a.extend(extra.iter().map(OsString::from));
        let out = ferry(a);
        out.assert_ok();
        assert_same_paths(&format!("-x {extra:?} vs find -xdev"), &nul_paths(&out.stdout), &want);
    }
    for fields in ["path", "path,size"] {
        let out = ferry(args!["scan", "-x", "--fields", fields, root]);
        out.assert_ok();
        assert_same_paths(
            &format!("-x --fields {fields} vs find -xdev"),
            &py_paths(&py_decode(&out.stdout)),
            &want,
        );
    }
    // Without -x the tmpfs is entered (so the mount really happened).
    let all = nul_paths(&ferry(args!["scan", "-0", root]).stdout);
    assert!(all.contains(&bytes(&mnt.join("sub/deeper"))));
    assert_same_paths(
        "no -x vs find",
        &all,
        &nul_paths(&find(&[], &[&root], &["-print0"]).stdout),
    );
}

fn glob_tree(tmp: &tempfile::TempDir) -> PathBuf {
    let root = tmp.path().join("g");
    for d in ["", "a", "skip", "skip/in", "sub", "sub/deep", "sub/skip"] {
        mkdir(&root.join(d));
    }
    for f in [
        "keep.txt",
        "a/b.txt",
        "a/new\nline.txt",
        "a/c.dat",
        "skip/x.txt",
        "skip/in/y.txt",
        "d.dat",
        "sub/deep/e.txt",
        "sub/deep/skip.txt",
        "sub/skip/z.txt",
    ] {
        write(&root.join(f), b"g");
    }
    root
}

#[test]
fn include_exclude_globs() {
    let tmp = tempdir();
    let root = glob_tree(&tmp);
    let r = root.to_str().unwrap();
    assert!(
        !r.contains(['*', '?', '[', '{', '\\']),
        "temp path must be glob-safe: {r}"
    );
    let ps = |names: &[&str]| -> Vec<Vec<u8>> { names.iter().map(|n| bytes(&root.join(n))).collect() };
    let scan = |extra: Vec<OsString>| {
        let mut a = args!["scan", "-0"];
        a.extend(extra);
        a.push(root.clone().into_os_string());
        let out = ferry(a);
        out.assert_ok();
        nul_paths(&out.stdout)
    };
    let found = |expr: &[&str]| nul_paths(&find(&[], &[&root], expr).stdout);

    // Kept if an include matches and no exclude does; `*` matches `/`;
    // excluded directories are not entered (skip/x.txt matches the include);
    // non-matching directories (a, sub, sub/deep) are entered but not listed.
    let got = scan(args!["--include", "*.txt", "--exclude", "*/skip"]);
    // `*` matches a newline in a name, as with find.
    let want = ps(&[
        "keep.txt",
        "a/b.txt",
        "a/new\nline.txt",
        "sub/deep/e.txt",
        "sub/deep/skip.txt",
    ]);
    assert_same_paths("include *.txt exclude */skip", &got, &want);
    let oracle = found(&["-path", "*/skip", "-prune", "-o", "-path", "*.txt", "-print0"]);
    assert_same_paths("same vs find -path/-prune", &got, &oracle);
    // The stat path (JSON) filters the same way.
    let out = ferry(args!["scan", "--include", "*.txt", "--exclude", "*/skip", root]);
    assert_same_paths("JSON include/exclude", &py_paths(&py_decode(&out.stdout)), &want);

    // `*` crosses directory levels.
    let got = scan(args!["--include", format!("{r}/s*t")]);
    let want = found(&["-path", &format!("{r}/s*t"), "-print0"]);
    assert_same_paths("include ROOT/s*t", &got, &want);
    assert!(got.contains(&bytes(&root.join("sub/deep/skip.txt"))));
    assert!(got.contains(&bytes(&root.join("skip/in/y.txt"))));

    // Exclude only: everything else, pruned below excluded directories.
    let got = scan(args!["--exclude", "*.dat", "--exclude", "*/in"]);
    let want = found(&[
        "(", "-path", "*.dat", "-o", "-path", "*/in", ")", "-prune", "-o", "-print0",
    ]);
    assert_same_paths("exclude *.dat and */in", &got, &want);
    assert!(got.contains(&bytes(&root.join("skip/x.txt"))));
    assert!(!got.contains(&bytes(&root.join("skip/in/y.txt"))));

    // An included directory does not include its contents; any include keeps.
    let got = scan(args!["--include", "*/a", "--include", "*/d.dat"]);
    assert_same_paths("include */a, */d.dat", &got, &ps(&["a", "d.dat"]));

    // Excluding the root lists nothing.
    assert_eq!(scan(args!["--exclude", r]), Vec::<Vec<u8>>::new());
}

#[test]
fn snapshots_directories_skipped_by_default() {
    let tmp = tempdir();
    let root = tmp.path().join("s");
    for d in [
        "",
        ".snapshots",
        ".snapshots/s1",
        "sub",
        "sub/.snapshots",
        "sub/.snapshots/s2",
        ".snapshotsX",
    ] {
        mkdir(&root.join(d));
    }
    for f in [
        ".snapshots/s1/f",
        "sub/.snapshots/s2/h",
        "sub/file",
        ".snapshotsX/k",
        "sub/x.snapshots",
        ".snapshotsX/.snapshots",
    ] {
        write(&root.join(f), b"s");
    }
    // Only directories named .snapshots are skipped; a file of that name is listed.
    let skipped = nul_paths(
        &find(
            &[],
            &[&root],
            &["-name", ".snapshots", "-type", "d", "-prune", "-o", "-print0"],
        )
        .stdout,
    );
    assert!(skipped.contains(&bytes(&root.join(".snapshotsX/.snapshots"))));
    let all = nul_paths(&find(&[], &[&root], &["-print0"]).stdout);
    let out = ferry(args!["scan", "-0", root]);
    out.assert_ok();
    assert_same_paths("default skips .snapshots", &nul_paths(&out.stdout), &skipped);
    assert!(nul_paths(&out.stdout).contains(&bytes(&root.join(".snapshotsX/k"))));
    let out = ferry(args!["scan", "-0", "--include-snapshots", root]);
    out.assert_ok();
    assert_same_paths("--include-snapshots", &nul_paths(&out.stdout), &all);
    let json = ferry(args!["scan", "--fields", "path,size", root]);
    assert_same_paths(
        "JSON default skips .snapshots",
        &py_paths(&py_decode(&json.stdout)),
        &skipped,
    );
}

// ---------------------------------------------------------------------------
// 4. Summary

#[test]
fn summary_counts_known_tree() {
    let tmp = tempdir();
    let root = tmp.path().join("sum");
    for d in ["", "sub", "sub/empty1", "empty2", ".snapshots"] {
        mkdir(&root.join(d));
    }
    write(&root.join("a.txt"), &[1; 10]);
    write(&root.join("b.bin"), &[2; 1000]);
    write(&root.join("sub/c"), b"");
    let d = File::create(root.join("sub/d")).unwrap();
    d.set_len(12_345).unwrap();
    fs::hard_link(root.join("a.txt"), root.join("hard")).unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    mkfifo(&root.join("fifo"));
    write(&root.join(".snapshots/snapfile"), &[3; 100]);

    let check = |extra: &[&str], roots: Vec<OsString>, want: serde_json::Value, code: i32| {
        let mut a = args!["scan", "--summary"];
        a.extend(extra.iter().map(OsString::from));
        a.extend(roots.iter().cloned());
        let out = ferry(a);
        out.assert_no_panic().assert_code(code);
        let text = out.stdout_str();
        assert_eq!(text.lines().count(), 1, "one JSON object on one line: {text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["task"], "scan");
        let inputs: Vec<String> = roots.iter().map(|r| r.to_string_lossy().into_owned()).collect();
        assert_eq!(v["input_paths"], serde_json::json!(inputs));
        assert_eq!(v["input_total"], roots.len());
        assert_eq!(v["summary"], want, "summary of {extra:?}");
        let started = v["started"].as_str().unwrap();
        let b = started.as_bytes();
        assert!(
            b.len() == 32
                && b[4] == b'-'
                && b[10] == b'T'
                && b[19] == b'.'
                && started.ends_with("+00:00")
                && started[..4].parse::<u32>().is_ok_and(|y| y >= 2020),
            "started is not ISO 8601 UTC with microseconds: {started}"
        );
        out
    };
    let root_os = root.clone().into_os_string();
    check(
        &[],
        vec![root_os.clone()],
        serde_json::json!({"dirs": 4, "files": 5, "symlinks": 2, "other": 1, "empty_dirs": 2,
                           "aborted": 0, "failures": 0, "bytes": 10 + 1000 + 12_345 + 10}),
        0,
    );
    check(
        &["--include-snapshots"],
        vec![root_os.clone()],
        serde_json::json!({"dirs": 5, "files": 6, "symlinks": 2, "other": 1, "empty_dirs": 2,
                           "aborted": 0, "failures": 0, "bytes": 10 + 1000 + 12_345 + 10 + 100}),
        0,
    );
    // Filters apply to the counts: only kept entries are counted, empty
    // directories included.
    check(
        &["--include", "*.txt"],
        vec![root_os.clone()],
        serde_json::json!({"dirs": 0, "files": 1, "symlinks": 0, "other": 0, "empty_dirs": 0,
                           "aborted": 0, "failures": 0, "bytes": 10}),
        0,
    );
    check(
        &["--exclude", "*/sub"],
        vec![root_os.clone()],
        serde_json::json!({"dirs": 2, "files": 3, "symlinks": 2, "other": 1, "empty_dirs": 1,
                           "aborted": 0, "failures": 0, "bytes": 10 + 1000 + 10}),
        0,
    );
    // A missing root is a failure; the other root is still counted.
    let missing = tmp.path().join("missing");
    let out = check(
        &[],
        vec![missing.clone().into_os_string(), root_os],
        serde_json::json!({"dirs": 4, "files": 5, "symlinks": 2, "other": 1, "empty_dirs": 2,
                           "aborted": 0, "failures": 1, "bytes": 10 + 1000 + 12_345 + 10}),
        1,
    );
    assert!(out.stderr.contains(&*missing.to_string_lossy()), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// 5. Batches

/// Decodes batch output: one batch (JSON array) per line.
fn batches(out: &Output) -> Vec<Vec<PyObj>> {
    let objs = py_decode(&out.stdout);
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    let mut v: Vec<Vec<PyObj>> = (0..lines).map(|_| Vec::new()).collect();
    for o in objs {
        let i = o.line;
        v[i].push(o);
    }
    assert!(v.iter().all(|b| !b.is_empty()), "empty batch in output");
    v
}

fn all_batched_paths(b: &[Vec<PyObj>]) -> Vec<Vec<u8>> {
    b.iter().flat_map(|b| b.iter().map(|o| o.path.clone())).collect()
}

#[test]
fn batch_path_count_limit() {
    let tmp = tempdir();
    let root = tmp.path().join("b");
    mkdir(&root);
    for i in 0..10 {
        write(&root.join(format!("file{i}")), b"0123");
    }
    let want = nul_paths(&find(&[], &[&root], &["-print0"]).stdout);
    assert_eq!(want.len(), 11, "10 files and the directory");
    let out = ferry(args!["scan", "--batch", "--file-batch-size", "3", root]);
    out.assert_ok();
    let b = batches(&out);
    // The batcher counts every path, the directory too: 11 -> 3, 3, 3, 2.
    let sizes: Vec<usize> = b.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 3, 2], "batch sizes");
    assert_same_paths("every path once across batches", &all_batched_paths(&b), &want);
    for o in b.iter().flatten() {
        if o.kind == "file" {
            assert_eq!(o.size, Some(4), "batches carry the default fields");
        }
    }
}

#[test]
fn batch_byte_limit_sparse_files() {
    let tmp = tempdir();
    let root = tmp.path().join("big");
    mkdir(&root);
    const SIZE: u64 = 600_000_000;
    for i in 0..4 {
        File::create(root.join(format!("sparse{i}")))
            .unwrap()
            .set_len(SIZE)
            .unwrap();
    }
    let want = nul_paths(&find(&[], &[&root], &["-print0"]).stdout);

    // 2 x 600 MB > 1 GB: every batch holds exactly one file (the directory,
    // 0 bytes of data, rides along with one of them).
    let out = ferry(args!["scan", "--batch", "--file-batch-gb", "1", root]);
    out.assert_ok();
    let b = batches(&out);
    assert_eq!(b.len(), 4, "batches: {b:?}");
    for batch in &b {
        let files: Vec<_> = batch.iter().filter(|o| o.kind == "file").collect();
        assert_eq!(files.len(), 1, "one 600 MB file per 1 GB batch: {batch:?}");
        assert_eq!(files[0].size, Some(SIZE));
    }
    assert_same_paths("1 GB batches", &all_batched_paths(&b), &want);

    // 3 x 600 MB <= 2 GB < 4 x 600 MB: three files, then one.
    let out = ferry(args!["scan", "--batch", "--file-batch-gb", "2", root]);
    out.assert_ok();
    let b = batches(&out);
    let mut files: Vec<usize> = b
        .iter()
        .map(|b| b.iter().filter(|o| o.kind == "file").count())
        .collect();
    files.sort();
    assert_eq!(files, [1, 3], "files per 2 GB batch");
    assert_same_paths("2 GB batches", &all_batched_paths(&b), &want);

    // A fractional limit below one file: each file travels alone.
    let out = ferry(args![
        "scan",
        "--batch",
        "--file-batch-gb",
        "0.5",
        "--fields",
        "path,type",
        root
    ]);
    out.assert_ok();
    let b = batches(&out);
    assert!(
        b.iter().all(|b| b.iter().filter(|o| o.kind == "file").count() <= 1),
        "{b:?}"
    );
    assert_eq!(b.len(), 5, "four lone files and the directory: {b:?}");
    assert_same_paths("0.5 GB batches", &all_batched_paths(&b), &want);
}

#[test]
fn stream_batches() {
    let tmp = tempdir();
    let root = tmp.path().join("st");
    mkdir(&root);
    let want = flat_links(&root, 12_000);

    // Path limit: short objects, 10,000 paths per batch.
    let out = ferry(args!["scan", "--batch", "--stream-batches", "--fields", "path", root]);
    out.assert_ok();
    let b = batches(&out);
    let sizes: Vec<usize> = b.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10_000, 2_002], "streaming batch sizes");
    assert_same_paths("stream batches, every path once", &all_batched_paths(&b), &want);

    // Message limit: full objects, at most 1 MiB per batch, and each batch
    // but the last is closed only because the next object did not fit.
    let out = ferry(args!["scan", "--batch", "--stream-batches", root]);
    out.assert_ok();
    let lines: Vec<&[u8]> = out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "{} batches", lines.len());
    let b = batches(&out);
    for (i, (line, batch)) in lines.iter().zip(&b).enumerate() {
        // "[" + objects joined by "," + "]": the objects plus one byte each.
        let message = line.len() - 1;
        assert!(message <= 1 << 20, "batch {i} is {message} bytes");
        if i + 1 < lines.len() {
            let per = message / batch.len();
            assert!(message + 2 * per > 1 << 20, "batch {i} closed early: {message} bytes");
        }
    }
    assert_same_paths("stream batches by size", &all_batched_paths(&b), &want);

    // --stream-batches needs --batch.
    let bad = ferry(args!["scan", "--stream-batches", root]);
    bad.assert_code(2);
}

// ---------------------------------------------------------------------------
// 6. Behaviour in scripts

#[test]
fn no_progress_on_non_terminal_stderr() {
    let tmp = tempdir();
    let root = tmp.path().join("p");
    mkdir(&root);
    flat_links(&root, 3000);
    for a in [
        args!["scan", root],
        args!["scan", "-0", root],
        args!["scan", "--summary", root],
    ] {
        let out = ferry(a);
        out.assert_ok();
        assert!(
            out.stderr.is_empty(),
            "{}: stderr must stay empty:\n{:?}",
            out.desc,
            out.stderr
        );
    }
}

#[test]
fn early_close_of_stdout_ends_promptly() {
    let tmp = tempdir();
    let root = tmp.path().join("h");
    mkdir(&root);
    // Far more output than a pipe and ferry's own buffer hold.
    flat_links(&root, 5000);
    for extra in [&[] as &[&str], &["-0"], &["--batch"], &["--fields", "path"]] {
        let mut c = Command::new(FERRY);
        c.arg("scan")
            .args(extra)
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut se = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            se.read_to_string(&mut s).map(|_| s)
        });
        let mut first = Vec::new();
        {
            let mut r = BufReader::new(child.stdout.take().unwrap());
            let sep = if extra == ["-0"] { 0 } else { b'\n' };
            r.read_until(sep, &mut first).unwrap();
        } // like `| head -1`: the read end is closed here
        assert!(!first.is_empty(), "{extra:?}: no first record");
        let closed = Instant::now();
        let status = wait_with_deadline(&mut child, Duration::from_secs(10), &format!("ferry scan {extra:?}"));
        let stderr = err.join().unwrap().unwrap();
        assert!(
            closed.elapsed() < Duration::from_secs(5),
            "{extra:?}: took {:?} to stop",
            closed.elapsed()
        );
        assert!(!stderr.contains("panicked"), "{extra:?}: {stderr}");
        assert!(
            status.success(),
            "{extra:?}: status {status:?} after the reader went away; stderr: {stderr}"
        );
        assert!(stderr.is_empty(), "{extra:?}: unexpected stderr: {stderr}");
    }
}

#[test]
fn invalid_glob_is_exit_2_with_clear_message() {
    let tmp = tempdir();
    for (flag, pat) in [("--include", "[a-"), ("--exclude", "a{b"), ("--include", "ok*")] {
        let mut a = args!["scan", flag, pat];
        if pat == "ok*" {
            a.extend(args!["--exclude", "x[!"]);
        }
        a.push(tmp.path().as_os_str().to_owned());
        let out = ferry(a);
        out.assert_no_panic().assert_code(2);
        let bad = if pat == "ok*" { "x[!" } else { pat };
        assert!(
            out.stderr.contains("invalid glob") && out.stderr.contains(bad),
            "message for {bad:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn nonexistent_root_is_reported_and_other_roots_scanned() {
    let tmp = tempdir();
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    for d in [&one, &two] {
        mkdir(d);
        write(&d.join("f"), b"1");
    }
    let missing = tmp.path().join("does not exist");
    let f = find(&[], &[&one, &missing, &two], &["-print0"]);
    f.assert_code(1);
    for a in [
        args!["scan", "-0", one, missing, two],
        args!["scan", "--fields", "path", one, missing, two],
    ] {
        let null = a.iter().any(|x| x == "-0");
        let out = ferry(a);
        out.assert_no_panic().assert_code(1);
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&*missing.to_string_lossy()))
            .unwrap_or_else(|| panic!("missing root not named:\n{}", out.stderr));
        assert!(line.contains("No such file or directory"), "{line}");
        let got = if null {
            nul_paths(&out.stdout)
        } else {
            py_paths(&py_decode(&out.stdout))
        };
        assert_same_paths("roots around a missing one vs find", &got, &nul_paths(&f.stdout));
    }
}

#[test]
fn threads_zero_is_rejected() {
    let tmp = tempdir();
    for flag in ["--threads", "-j"] {
        let out = ferry(args!["scan", flag, "0", tmp.path()]);
        out.assert_no_panic().assert_code(2);
        assert!(out.stderr.contains("threads"), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    let out = ferry(args!["scan", "--threads", "1", tmp.path()]);
    out.assert_ok();
}

#[test]
fn multiple_roots_match_find() {
    let t = awkward_tree(tempdir(), TreeOpts::SHALLOW);
    let a = t.root.join("with space");
    let b = t.root.join(OsStr::from_bytes(b"\xff\xfe"));
    let file = t.root.join("tab\there");
    let link = t.root.join("dirlink");
    // Overlapping roots are listed once per root, as find does.
    let roots = [&a, &b, &file, &link, &a.join("a b")];
    let f = find(&[], &roots.map(PathBuf::as_path), &["-print0"]);
    f.assert_ok();
    let mut args = args!["scan", "-0"];
    args.extend(roots.iter().map(|p| p.as_os_str().to_owned()));
    let out = ferry(args);
    out.assert_ok();
    assert_same_paths("multiple roots vs find", &nul_paths(&out.stdout), &nul_paths(&f.stdout));
    // Trailing slash and "." keep find's spelling.
    let slash = OsString::from_vec([bytes(&a), b"/".to_vec()].concat());
    let f = run({
        let mut c = Command::new("find");
        c.arg(&slash).arg("-print0");
        c
    });
    let out = ferry(args!["scan", "-0", slash]);
    assert_same_paths(
        "root with trailing slash",
        &nul_paths(&out.stdout),
        &nul_paths(&f.stdout),
    );
    let f = run({
        let mut c = Command::new("find");
        c.args([".", "-print0"]).current_dir(&a);
        c
    });
    let mut c = ferry_cmd(args!["scan", "-0", "."]);
    c.current_dir(&a);
    let out = run(c);
    assert_same_paths("root .", &nul_paths(&out.stdout), &nul_paths(&f.stdout));
}

// ---------------------------------------------------------------------------
// 7. A large flat directory

#[test]
fn large_flat_directory_lists_every_file_once() {
    let tmp = tempdir();
    let root = tmp.path().join("flat");
    mkdir(&root);
    let mut want = flat_links(&root, 50_000);
    // Some subdirectories among the files, found by the stat hand-off too.
    for i in 0..100 {
        let d = root.join(format!("dir{i:03}"));
        mkdir(&d);
        fs::hard_link(root.join("src"), d.join("inner")).unwrap();
        want.push(bytes(&d));
        want.push(bytes(&d.join("inner")));
    }

    // Without stat (names and d_type only).
    let out = ferry(args!["scan", "-0", "--threads", "4", root]);
    out.assert_ok();
    assert_same_paths("flat dir -0 -j4", &nul_paths(&out.stdout), &want);

    // With stat: later getdents buffers are stat'ed on other threads.
    for threads in ["4", "2"] {
        let out = ferry(args!["scan", "--fields", "path,size", "--threads", threads, root]);
        out.assert_ok();
        let mut got = Vec::with_capacity(want.len());
        for line in out.stdout_str().lines() {
            let f = raw_fields(line);
            let path: String = serde_json::from_str(&f["path"]).unwrap();
            let is_dir = path == root.to_str().unwrap() || path.rsplit('/').next().unwrap().starts_with("dir");
            if !is_dir {
                assert_eq!(f["size"], "3", "{path}");
            }
            got.push(path.into_bytes());
        }
        assert_same_paths(&format!("flat dir --fields path,size -j{threads}"), &got, &want);
    }

    // Default settings (thread count, fields).
    let out = ferry(args!["scan", root]);
    out.assert_ok();
    let got: Vec<Vec<u8>> = out
        .stdout_str()
        .lines()
        .map(|l| {
            serde_json::from_str::<String>(&raw_fields(l)["path"])
                .unwrap()
                .into_bytes()
        })
        .collect();
    assert_same_paths("flat dir, defaults", &got, &want);

    let out = ferry(args!["scan", "--summary", "--threads", "4", root]);
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["summary"],
        serde_json::json!({"dirs": 101, "files": 50_101, "symlinks": 0, "other": 0, "empty_dirs": 0,
                           "aborted": 0, "failures": 0, "bytes": 3 * 50_101})
    );
}

#[test]
fn follow_links_with_depth_limit_reports_loops_it_does_not_enter() {
    let tmp = tempdir();
    let root = tmp.path().join("l");
    mkdir(&root);
    std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
    write(&root.join("f"), b"x");
    let want = find(&["-L"], &[&root], &["-maxdepth", "1", "-print0"]);
    let out = ferry(args!["scan", "-0", "-L", "--max-depth", "1", root]);
    assert_same_paths("-L --max-depth 1", &nul_paths(&out.stdout), &nul_paths(&want.stdout));
    assert!(!nul_paths(&out.stdout).contains(&bytes(&root.join("loop"))));
    assert_eq!(out.status.code(), Some(1), "a loop is a reported failure");
    assert!(out.stderr.contains("loop"), "{}", out.stderr);
}

#[test]
fn files_of_maximum_size_do_not_overflow_counts_or_batches() {
    // ext4 caps file sizes at 16 TiB; tmpfs takes i64::MAX sparse files.
    let tmp = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is available");
    for i in 0..3 {
        std::fs::File::create(tmp.path().join(format!("f{i}")))
            .unwrap()
            .set_len(i64::MAX as u64)
            .unwrap();
    }
    let out = ferry(args!["scan", "--summary", tmp.path()]);
    out.assert_ok();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["summary"]["files"], 3);
    assert_eq!(status["summary"]["bytes"], u64::MAX, "saturates, never wraps");
    // Without a data limit everything shares one batch. With 2e10 GB the
    // limit is u64::MAX bytes: two files (2^64 - 2 bytes) fit, three never.
    let out = ferry(args!["scan", "--batch", "--file-batch-gb", "0", tmp.path()]);
    out.assert_ok();
    assert_eq!(batches(&out).iter().map(Vec::len).collect::<Vec<_>>(), vec![4]);
    let out = ferry(args!["scan", "--batch", "--file-batch-gb", "2e10", tmp.path()]);
    out.assert_ok();
    let b = batches(&out);
    assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 4);
    for batch in &b {
        let files = batch.iter().filter(|o| o.kind == "file").count();
        assert!(
            files <= 2,
            "a batch of {files} files of i64::MAX bytes exceeds u64::MAX bytes"
        );
    }
}

#[test]
fn statx_asks_only_for_what_the_output_needs() {
    let tmp = tempdir();
    let root = tmp.path().join("m");
    mkdir(&root);
    write(&root.join("a"), b"abc");
    let trace = tmp.path().join("trace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-e", "trace=statx", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["scan", "--fields", "path,size"]).arg(&root);
    let out = run(cmd);
    out.assert_ok();
    let text = fs::read_to_string(&trace).unwrap();
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("AT_NO_AUTOMOUNT")).collect();
    assert_eq!(ours.len(), 2, "the root and its one file:\n{text}");
    for line in ours {
        assert!(
            line.contains(", STATX_TYPE|STATX_INO|STATX_SIZE, "),
            "mask not minimal: {line}"
        );
    }
}

#[test]
fn progress_line_is_drawn_on_a_terminal() {
    let tmp = tempdir();
    let root = tmp.path().join("p");
    mkdir(&root);
    write(&root.join("a"), b"abc");
    // script(1) gives ferry a pseudo-terminal as stdout and stderr; the
    // entries go to /dev/null, so what remains is the progress line.
    let inner = format!(
        "{} scan --progress {} >/dev/null",
        env!("CARGO_BIN_EXE_ferry"),
        root.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"]);
    let out = run(cmd);
    out.assert_ok();
    let screen = String::from_utf8_lossy(&out.stdout);
    // The line is drawn as soon as the scan starts (later updates, with
    // counts, depend on timing).
    assert!(
        screen.contains("starting"),
        "no progress line on the terminal: {screen:?}"
    );
}
