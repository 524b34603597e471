//! Namespace operations end to end through the `ferry` binary: `move`,
//! `delete`, `reverse-stub`, `unmanage` and `stat`.
//!
//! Every test works in its own temporary directory. Tests that need root
//! (mounting a tmpfs, btrfs) are skipped loudly when not root, and fail
//! under `CI=true`.

// `args!` builds the Vec that some callers extend and others only borrow.
#![allow(clippy::useless_vec)]

mod common;

use common::btrfs::{DEADLINE, LoopBtrfs, json_members, json_path, parse_time};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

// ---------------------------------------------------------------------------
// Running ferry

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<Line> {
        std::str::from_utf8(&self.stdout)
            .expect("output is UTF-8")
            .lines()
            .filter(|l| !l.is_empty())
            .map(Line::parse)
            .collect()
    }

    fn show(&self) -> String {
        format!(
            "exit {}\nstdout: {}\nstderr: {}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

/// Runs ferry with `args`, feeding `stdin`, within the shared deadline.
fn ferry_in(args: &[OsString], stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(FERRY);
    cmd.args(args).env_remove("FERRY_CONFIG").env_remove("CI_FERRY_UNUSED");
    let out = common::run_within(&mut cmd, stdin, DEADLINE, None);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ferry(args: &[OsString]) -> Run {
    ferry_in(args, None)
}

/// `args![a, b, ...]`: each a reference to something `AsRef<OsStr>`.
macro_rules! args {
    ($($x:expr),* $(,)?) => { vec![$(OsString::from($x)),*] };
}

/// One line of `--jsonl` output.
#[derive(Debug, Clone)]
struct Line {
    path: Vec<u8>,
    source: Option<Vec<u8>>,
    state: String,
    message: String,
    members: BTreeMap<String, String>,
    raw: String,
}

impl Line {
    fn parse(text: &str) -> Line {
        let m: BTreeMap<String, String> = json_members(text).into_iter().collect();
        let message = m
            .get("message")
            .map(|v| {
                serde_json::from_str::<Vec<String>>(v)
                    .map(|v| v.join(" | "))
                    .unwrap_or_else(|_| v.clone())
            })
            .unwrap_or_default();
        Line {
            path: json_path(m.get("path").unwrap_or_else(|| panic!("no path in {text}"))),
            source: m.get("source").map(|s| json_path(s)),
            state: serde_json::from_str(m.get("state").unwrap_or_else(|| panic!("no state in {text}"))).unwrap(),
            message,
            members: m,
            raw: text.to_string(),
        }
    }

    fn get_str(&self, k: &str) -> String {
        serde_json::from_str(self.members.get(k).unwrap_or_else(|| panic!("no {k} in {}", self.raw))).unwrap()
    }

    fn get_num(&self, k: &str) -> u64 {
        self.members
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {}", self.raw))
            .parse()
            .unwrap()
    }
}

/// The one line about `path` (panics if there is not exactly one).
fn line_for<'a>(lines: &'a [Line], path: &Path) -> &'a Line {
    let want = path.as_os_str().as_bytes();
    let found: Vec<&Line> = lines.iter().filter(|l| l.path == want).collect();
    assert_eq!(found.len(), 1, "one line for {} in {lines:#?}", path.display());
    found[0]
}

fn assert_state(lines: &[Line], path: &Path, state: &str, message_has: &str) {
    let l = line_for(lines, path);
    assert_eq!(l.state, state, "state of {}: {}", path.display(), l.raw);
    assert!(
        l.message.contains(message_has),
        "message of {} should contain {message_has:?}: {}",
        path.display(),
        l.raw
    );
}

// ---------------------------------------------------------------------------
// Files

fn put(p: &Path, content: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, content).unwrap();
}

fn get(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ferry-ns-").tempdir().unwrap()
}

/// Every path below `dir` whose name starts with `.ferry-move-`.
fn staging_litter(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_bytes().starts_with(b".ferry-move-"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

fn assert_no_litter(dir: &Path) {
    let l = staging_litter(dir);
    assert!(l.is_empty(), "staging directories left behind: {l:?}");
}

fn ts(sec: i64, nsec: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(sec as u64, nsec)
}

fn set_times(p: &Path, atime: SystemTime, mtime: SystemTime) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_times(std::fs::FileTimes::new().set_accessed(atime).set_modified(mtime))
        .unwrap();
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A tmpfs mounted at a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn xattr_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = xattr::list(p)
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn ferry_xattrs(p: &Path) -> Vec<String> {
    xattr_names(p)
        .into_iter()
        .filter(|n| n.starts_with("user.ferry."))
        .collect()
}

fn state_xattr(p: &Path) -> Option<String> {
    xattr::get(p, "user.ferry.state")
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// A configuration file naming directory endpoints: (name, object dir, root).
fn config(dir: &Path, file: &str, endpoints: &[(&str, &Path, &Path)]) -> PathBuf {
    let mut text = String::new();
    for (name, objdir, root) in endpoints {
        std::fs::create_dir_all(objdir).unwrap();
        text.push_str(&format!(
            "[Endpoint {name}]\ntype = directory\npath = {}\nroot = {}\n\n",
            objdir.display(),
            root.display()
        ));
    }
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

/// Deterministic, incompressible-ish content.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// move

/// `ferry move --jsonl` with SOURCE DEST argument pairs.
fn move_pairs(extra: &[&str], pairs: &[(&Path, &Path)]) -> Run {
    let mut a: Vec<OsString> = args!["move", "--jsonl"];
    a.extend(extra.iter().map(OsString::from));
    for (s, d) in pairs {
        a.push(s.as_os_str().to_owned());
        a.push(d.as_os_str().to_owned());
    }
    ferry(&a)
}

#[test]
fn move_swaps_cycles_and_chains_of_files() {
    let t = tmp();
    let d = t.path();
    let p = |n: &str| d.join(n);
    for n in ["a", "b", "c1", "c2", "c3", "x", "y"] {
        put(&p(n), n.as_bytes());
    }
    let r = move_pairs(
        &[],
        &[
            // swap
            (&p("a"), &p("b")),
            (&p("b"), &p("a")),
            // 3-cycle
            (&p("c1"), &p("c2")),
            (&p("c2"), &p("c3")),
            (&p("c3"), &p("c1")),
            // chain into a new name: x→y, y→z
            (&p("x"), &p("y")),
            (&p("y"), &p("z")),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    assert_eq!(lines.len(), 7);
    assert!(lines.iter().all(|l| l.state == "processed"), "{}", r.show());
    assert_eq!(
        line_for(&lines, &p("b")).source.as_deref(),
        Some(p("a").as_os_str().as_bytes())
    );
    assert_eq!(get(&p("a")), b"b");
    assert_eq!(get(&p("b")), b"a");
    assert_eq!(get(&p("c1")), b"c3");
    assert_eq!(get(&p("c2")), b"c1");
    assert_eq!(get(&p("c3")), b"c2");
    assert!(!exists(&p("x")));
    assert_eq!(get(&p("y")), b"x");
    assert_eq!(get(&p("z")), b"y");
    assert_no_litter(d);
}

#[test]
fn move_swaps_and_cycles_of_directories() {
    let t = tmp();
    let d = t.path();
    let p = |n: &str| d.join(n);
    for n in ["A", "B", "C", "D", "E"] {
        put(&p(n).join("inner").join("f"), n.as_bytes());
        put(&p(n).join("top"), format!("top-{n}").as_bytes());
    }
    let r = move_pairs(
        &[],
        &[
            (&p("A"), &p("B")),
            (&p("B"), &p("A")),
            (&p("C"), &p("D")),
            (&p("D"), &p("E")),
            (&p("E"), &p("C")),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.lines().iter().all(|l| l.state == "processed"), "{}", r.show());
    for (at, from) in [("A", "B"), ("B", "A"), ("C", "E"), ("D", "C"), ("E", "D")] {
        assert_eq!(get(&p(at).join("inner/f")), from.as_bytes(), "{at}");
        assert_eq!(get(&p(at).join("top")), format!("top-{from}").as_bytes(), "{at}");
    }
    assert_no_litter(d);
}

#[test]
fn move_directory_and_a_file_into_it_in_either_order() {
    for reversed in [false, true] {
        let t = tmp();
        let d = t.path();
        put(&d.join("X/old"), b"old");
        put(&d.join("Z"), b"zzz");
        let x_y = (d.join("X"), d.join("Y"));
        let z_g = (d.join("Z"), d.join("Y/g"));
        let mut pairs = vec![(x_y.0.as_path(), x_y.1.as_path()), (z_g.0.as_path(), z_g.1.as_path())];
        if reversed {
            pairs.reverse();
        }
        let r = move_pairs(&[], &pairs);
        assert_eq!(r.code, 0, "reversed={reversed}: {}", r.show());
        assert!(r.lines().iter().all(|l| l.state == "processed"), "{}", r.show());
        assert!(!exists(&d.join("X")) && !exists(&d.join("Z")));
        assert_eq!(get(&d.join("Y/old")), b"old");
        assert_eq!(get(&d.join("Y/g")), b"zzz");
        assert_no_litter(d);
    }
}

#[test]
fn move_file_out_of_a_moved_directory_in_either_order() {
    for reversed in [false, true] {
        let t = tmp();
        let d = t.path();
        put(&d.join("X/f"), b"fff");
        put(&d.join("X/stay"), b"stay");
        std::fs::create_dir(d.join("W")).unwrap();
        let f_w = (d.join("X/f"), d.join("W/f"));
        let x_y = (d.join("X"), d.join("Y"));
        let mut pairs = vec![(f_w.0.as_path(), f_w.1.as_path()), (x_y.0.as_path(), x_y.1.as_path())];
        if reversed {
            pairs.reverse();
        }
        let r = move_pairs(&[], &pairs);
        assert_eq!(r.code, 0, "reversed={reversed}: {}", r.show());
        assert!(r.lines().iter().all(|l| l.state == "processed"), "{}", r.show());
        assert_eq!(get(&d.join("W/f")), b"fff");
        assert_eq!(get(&d.join("Y/stay")), b"stay");
        assert!(!exists(&d.join("Y/f")), "f must not stay in the moved directory");
        assert!(!exists(&d.join("X")));
        assert_no_litter(d);
    }
}

#[test]
fn move_failures_leave_sources_in_place_and_the_rest_of_the_batch_works() {
    let t = tmp();
    let d = t.path();
    let p = |n: &str| d.join(n);
    put(&p("ok"), b"ok");
    put(&p("orphan"), b"orphan-data");
    put(&p("file"), b"file-data");
    put(&p("full/inside"), b"inside");
    put(&p("srcdir/x"), b"x");
    put(&p("swap1"), b"1");
    put(&p("swap2"), b"2");
    let r = move_pairs(
        &[],
        &[
            (&p("ok"), &p("ok2")),
            (&p("missing"), &p("whatever")),
            (&p("orphan"), &p("no/such/parent/orphan")),
            (&p("file"), &p("full")),
            (&p("srcdir"), &p("full")),
            (&p("swap1"), &p("swap2")),
            (&p("swap2"), &p("swap1")),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &p("ok2"), "processed", "");
    assert_state(&lines, &p("whatever"), "failures", "source missing");
    assert_state(&lines, &p("no/such/parent/orphan"), "failures", "source left in place");
    let full: Vec<&Line> = lines
        .iter()
        .filter(|l| l.path == p("full").as_os_str().as_bytes())
        .collect();
    assert_eq!(full.len(), 2);
    assert!(full.iter().all(|l| l.state == "failures"), "{full:#?}");
    assert_eq!(get(&p("ok2")), b"ok");
    assert_eq!(get(&p("orphan")), b"orphan-data");
    assert_eq!(get(&p("file")), b"file-data");
    assert_eq!(get(&p("srcdir/x")), b"x");
    assert_eq!(get(&p("full/inside")), b"inside");
    assert_eq!(std::fs::read_dir(p("full")).unwrap().count(), 1);
    assert_eq!(get(&p("swap1")), b"2");
    assert_eq!(get(&p("swap2")), b"1");
    assert!(!exists(&p("no")));
    assert_no_litter(d);
}

/// An entry whose destination cannot be reached and whose source
/// directory was itself moved in the batch can go neither forward nor back:
/// it stays in the staging directory, with the plan, and the message says
/// where. Nothing is lost.
#[test]
fn move_stuck_entry_keeps_the_staging_directory_and_plan() {
    let t = tmp();
    let d = t.path();
    put(&d.join("X/f"), b"fff");
    let r = move_pairs(
        &[],
        &[(&d.join("X/f"), &d.join("nowhere/f")), (&d.join("X"), &d.join("Y"))],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &d.join("Y"), "processed", "");
    let l = line_for(&lines, &d.join("nowhere/f"));
    assert_eq!(l.state, "failures", "{}", l.raw);
    let at = l.message.rsplit("it is at ").next().unwrap();
    assert_eq!(get(Path::new(at)), b"fff", "{}", l.raw);
    let litter = staging_litter(d);
    assert_eq!(litter.len(), 1, "{litter:?}");
    let plan = String::from_utf8(get(&litter[0].join("plan"))).unwrap();
    assert!(plan.contains(&d.join("X/f").display().to_string()), "{plan}");
    assert!(plan.contains(&d.join("nowhere/f").display().to_string()), "{plan}");
}

/// Moving a name onto another hard link of the same file: rename(2) does
/// nothing when both names are links to one inode, so the move must still
/// end with the source name gone (and, two-step, no staging litter).
#[test]
fn move_onto_a_hard_link_of_the_same_file() {
    for one_step in [false, true] {
        let t = tmp();
        let d = t.path();
        put(&d.join("a"), b"linked");
        std::fs::hard_link(d.join("a"), d.join("b")).unwrap();
        let extra: &[&str] = if one_step { &["--one-step"] } else { &[] };
        let r = move_pairs(extra, &[(&d.join("a"), &d.join("b"))]);
        let lines = r.lines();
        assert_eq!(get(&d.join("b")), b"linked");
        assert_eq!(lines[0].state, "processed", "one_step={one_step}: {}", r.show());
        assert!(
            !exists(&d.join("a")),
            "one_step={one_step}: source name still there after a processed move: {}",
            r.show()
        );
        assert_no_litter(d);
    }
}

#[test]
fn move_same_path_and_into_itself() {
    let t = tmp();
    let d = t.path();
    put(&d.join("s/f"), b"s");
    let r = move_pairs(&[], &[(&d.join("s"), &d.join("s")), (&d.join("s"), &d.join("s/sub"))]);
    let lines = r.lines();
    assert_eq!(lines[0].state, "skipped", "{}", r.show());
    assert_eq!(lines[1].state, "failures", "{}", r.show());
    assert!(lines[1].message.contains("into itself"), "{}", r.show());
    assert_eq!(get(&d.join("s/f")), b"s");
    assert_no_litter(d);
}

#[test]
fn move_target_max_age() {
    let t = tmp();
    let d = t.path();
    let p = |n: &str| d.join(n);
    put(&p("src_new"), b"source1");
    put(&p("dst_new"), b"destination1");
    put(&p("src_old"), b"source2");
    put(&p("dst_old"), b"destination2");
    put(&p("src_free"), b"source3");
    let now = now_secs();
    // The destination's ctime (now) is after the maximum: it wins.
    let r = move_pairs(
        &["--target-max-age", &(now - 1000).to_string()],
        &[(&p("src_new"), &p("dst_new")), (&p("src_free"), &p("dst_free"))],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &p("dst_new"), "processed", "kept it and removed the source");
    assert_state(&lines, &p("dst_free"), "processed", "");
    assert!(!exists(&p("src_new")));
    assert_eq!(get(&p("dst_new")), b"destination1");
    assert_eq!(get(&p("dst_free")), b"source3", "no destination: moved regardless");
    // The destination is older than the maximum: it is overwritten.
    let r = move_pairs(
        &["--target-max-age", &(now + 1000).to_string()],
        &[(&p("src_old"), &p("dst_old"))],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &p("dst_old"), "processed", "");
    assert!(!exists(&p("src_old")));
    assert_eq!(get(&p("dst_old")), b"source2");
    // Same with --one-step.
    put(&p("s1"), b"s1");
    put(&p("d1"), b"d1");
    let r = move_pairs(
        &["--one-step", "--target-max-age", &(now - 1000).to_string()],
        &[(&p("s1"), &p("d1"))],
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(!exists(&p("s1")));
    assert_eq!(get(&p("d1")), b"d1");
    assert_no_litter(d);
}

#[test]
fn one_step_swap_loses_a_file_as_documented() {
    let t = tmp();
    let d = t.path();
    put(&d.join("a"), b"A");
    put(&d.join("b"), b"B");
    let r = move_pairs(
        &["--one-step"],
        &[(&d.join("a"), &d.join("b")), (&d.join("b"), &d.join("a"))],
    );
    // a→b overwrites b; b→a then moves A back: B is gone.
    let lines = r.lines();
    assert_eq!(lines[0].state, "processed", "{}", r.show());
    assert_eq!(lines[1].state, "processed", "{}", r.show());
    assert_eq!(get(&d.join("a")), b"A");
    assert!(!exists(&d.join("b")));
    assert!(staging_litter(d).is_empty(), "one-step uses no staging directory");
}

#[test]
fn move_odd_names_through_a_nul_list() {
    let t = tmp();
    let d = t.path();
    let name = |b: &[u8]| d.join(OsStr::from_bytes(b));
    let a = name(b"new\nline");
    let b = name(b"bad\xff\xfename");
    let c = name(b"caf\xc3\xa9 \"q\"");
    put(&a, b"1");
    put(&b, b"2");
    put(&c, b"3");
    // A 3-cycle of odd names.
    let mut list = Vec::new();
    for (s, dst) in [(&a, &b), (&b, &c), (&c, &a)] {
        list.extend_from_slice(s.as_os_str().as_bytes());
        list.push(0);
        list.extend_from_slice(dst.as_os_str().as_bytes());
        list.push(0);
    }
    let r = ferry_in(&args!["move", "--jsonl", "-0", "-"], Some(&list));
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    assert_eq!(lines.len(), 3, "{}", r.show());
    assert!(lines.iter().all(|l| l.state == "processed"), "{}", r.show());
    assert_eq!(get(&b), b"1");
    assert_eq!(get(&c), b"2");
    assert_eq!(get(&a), b"3");
    // Output encodes the raw bytes with surrogateescape.
    let lb = line_for(&lines, &b);
    assert!(lb.raw.contains(r"bad\udcff\udcfename"), "{}", lb.raw);
    assert_eq!(lb.source.as_deref(), Some(a.as_os_str().as_bytes()));
    assert!(
        line_for(&lines, &a).raw.contains(r#"caf\u00e9 \"q\""#) || line_for(&lines, &a).raw.contains("café \\\"q\\\"")
    );
    assert_no_litter(d);
}

#[test]
fn move_reads_snapdiff_style_json_lines_and_writes_the_result_object() {
    let t = tmp();
    let d = t.path();
    // Names are UTF-8 here so that serde_json can read the result object
    // (odd bytes are covered by move_odd_names_through_a_nul_list).
    let x = d.join("x\u{e9}");
    put(&x, b"x");
    put(&d.join("y"), b"y");
    let mut list = Vec::new();
    // A moved record as snapdiff writes it, with extra keys kept.
    list.extend_from_slice(
        format!(
            "{{\"state\":\"moved\",\"path\":\"{}/y\",\"source\":\"{}/x\\u00e9\",\"size\":1,\"type\":\"file\"}}\n",
            d.display(),
            d.display()
        )
        .as_bytes(),
    );
    list.extend_from_slice(
        format!(
            "{{\"path\":\"{}/x\u{e9}\",\"source\":\"{}/y\"}}\n",
            d.display(),
            d.display()
        )
        .as_bytes(),
    );
    let r = ferry_in(&args!["move", "-"], Some(&list));
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(get(&x), b"y");
    assert_eq!(get(&d.join("y")), b"x");
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("one result object");
    assert_eq!(v["jobid"], serde_json::Value::Null);
    let st = &v["status"];
    assert_eq!(st["task"], "dynamo.tasks.move_paths_on_gpfs");
    assert_eq!(st["input_total"], 2);
    assert_eq!(
        st["summary"],
        serde_json::json!({"processed":2,"skipped":0,"aborted":0,"failures":0})
    );
    assert_eq!(st["details"]["processed"][0]["size"], 1);
    assert_eq!(v["paths"].as_array().unwrap().len(), 2);
    assert_no_litter(d);
}

#[test]
fn move_bad_arguments_exit_2() {
    let t = tmp();
    let r = ferry(&args!["move", t.path().join("lonely")]);
    assert_eq!(r.code, 2, "{}", r.show());
    let r = ferry(&args!["move"]);
    assert_eq!(r.code, 2, "{}", r.show());
}

/// A swap whose two halves fall into different commit windows (512 paths
/// each) of one invocation must still end swapped: the command promises
/// that swaps in its input work, and snapdiff lists can be long.
#[test]
fn move_swap_across_the_commit_window_keeps_both_files() {
    let t = tmp();
    let d = t.path();
    let mut a: Vec<OsString> = args!["move", "--jsonl"];
    for i in 0..511 {
        let s = d.join(format!("f{i}"));
        put(&s, b"filler");
        a.push(s.into_os_string());
        a.push(d.join(format!("g{i}")).into_os_string());
    }
    put(&d.join("a"), b"A");
    put(&d.join("b"), b"B");
    // Entries 511 and 512: the first ends the first window.
    a.extend(args![d.join("a"), d.join("b"), d.join("b"), d.join("a")]);
    let r = ferry(&a);
    let lines = r.lines();
    assert_eq!(lines.len(), 513);
    assert_eq!(
        (get_opt(&d.join("a")), get_opt(&d.join("b"))),
        (Some(b"B".to_vec()), Some(b"A".to_vec())),
        "swap split across windows: states {} / {}",
        lines[511].raw,
        lines[512].raw
    );
    assert_no_litter(d);
}

fn get_opt(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

/// A pair of moves within a mounted filesystem, batched with moves on the
/// filesystem above it: every rename is within one filesystem, so all
/// must succeed (a one-step move does).
#[test]
fn move_batch_spanning_a_mount_point() {
    if !common::require_root("moving across a tmpfs mount") {
        return;
    }
    let t = tmp();
    let d = t.path();
    let _m = Tmpfs::mount(&d.join("m"));
    put(&d.join("m/a"), b"in-mount");
    put(&d.join("c"), b"outside");
    let r = move_pairs(&[], &[(&d.join("m/a"), &d.join("m/b")), (&d.join("c"), &d.join("e"))]);
    let lines = r.lines();
    assert_eq!(get(&d.join("e")), b"outside", "{}", r.show());
    assert_eq!(
        get_opt(&d.join("m/a")).or(get_opt(&d.join("m/b"))),
        Some(b"in-mount".to_vec())
    );
    assert_state(&lines, &d.join("m/b"), "processed", "");
    assert_eq!(get(&d.join("m/b")), b"in-mount");
    assert_no_litter(d);
}

#[test]
fn move_delete_remote_xattrs() {
    let t = tmp();
    let d = t.path();
    let root = d.join("tree");
    let cfg = config(d, "c.conf", &[("e", &d.join("obj"), &root)]);
    put(&root.join("pre"), b"premigrated data");
    put(&root.join("stub"), &content(1, 50_000));
    let r = ferry(&args![
        "premigrate",
        "--config",
        &cfg,
        "--endpoint",
        "e",
        "--jsonl",
        root.join("pre")
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    let r = ferry(&args![
        "migrate",
        "--config",
        &cfg,
        "--endpoint",
        "e",
        "--jsonl",
        root.join("stub")
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    let r = ferry(&args![
        "move",
        "--config",
        &cfg,
        "--jsonl",
        "--delete-remote-xattrs",
        root.join("pre"),
        root.join("pre2"),
        root.join("stub"),
        root.join("stub2")
    ]);
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &root.join("pre2"), "processed", "");
    assert_state(&lines, &root.join("stub2"), "processed", "location xattrs kept");
    assert_eq!(ferry_xattrs(&root.join("pre2")), Vec::<String>::new());
    assert_eq!(get(&root.join("pre2")), b"premigrated data");
    assert!(state_xattr(&root.join("stub2")).unwrap().starts_with("migrated "));
    assert!(ferry_xattrs(&root.join("stub2")).contains(&"user.ferry.loc.e".to_string()));
    assert_no_litter(d);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, .. ProptestConfig::default() })]

    /// Random permutations of files in one or two directories, given in a
    /// random order: every content ends at its destination.
    #[test]
    fn move_random_permutations(
        (n, perm, order, two_dirs) in (2usize..10).prop_flat_map(|n| (
            Just(n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            any::<bool>(),
        ))
    ) {
        let t = tmp();
        let d = t.path();
        let name = |i: usize| if two_dirs { d.join(format!("d{}/f{i}", i % 2)) } else { d.join(format!("f{i}")) };
        for i in 0..n {
            put(&name(i), format!("content {i}").as_bytes());
        }
        let moves: Vec<(PathBuf, PathBuf)> = order
            .iter()
            .filter(|&&i| perm[i] != i)
            .map(|&i| (name(i), name(perm[i])))
            .collect();
        if !moves.is_empty() {
            let pairs: Vec<(&Path, &Path)> = moves.iter().map(|(s, d)| (s.as_path(), d.as_path())).collect();
            let r = move_pairs(&[], &pairs);
            prop_assert_eq!(r.code, 0, "{}", r.show());
        }
        for (i, &dest) in perm.iter().enumerate().take(n) {
            prop_assert_eq!(get(&name(dest)), format!("content {i}").into_bytes());
        }
        prop_assert!(staging_litter(d).is_empty());
    }
}

// ---------------------------------------------------------------------------
// delete

fn delete(extra: &[&str], paths: &[&Path]) -> Run {
    let mut a: Vec<OsString> = args!["delete", "--jsonl"];
    a.extend(extra.iter().map(OsString::from));
    a.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    ferry(&a)
}

#[test]
fn delete_files_directories_and_trees() {
    let t = tmp();
    let d = t.path();
    let p = |n: &str| d.join(n);
    put(&p("file"), b"x");
    std::fs::create_dir(p("empty")).unwrap();
    put(&p("full/f"), b"x");
    put(&p("tree/a/b/c"), b"x");
    put(&p("tree/a/d"), b"x");
    std::fs::create_dir_all(p("tree/e/f/g")).unwrap();
    let r = delete(&[], &[&p("file"), &p("missing"), &p("empty"), &p("full")]);
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &p("file"), "processed", "");
    assert_state(&lines, &p("missing"), "skipped", "not found");
    assert_state(&lines, &p("empty"), "processed", "");
    assert_state(&lines, &p("full"), "skipped", "not empty");
    assert!(!exists(&p("file")) && !exists(&p("empty")));
    assert_eq!(get(&p("full/f")), b"x");
    let r = delete(&["-r"], &[&p("tree"), &p("full")]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(
        r.lines().iter().all(|l| l.state == "processed" && l.message.is_empty()),
        "{}",
        r.show()
    );
    assert!(!exists(&p("tree")) && !exists(&p("full")));
    // Default output: the result object.
    put(&p("again"), b"x");
    let r = ferry(&args!["delete", p("again")]);
    assert_eq!(r.code, 0, "{}", r.show());
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["status"]["task"], "dynamo.tasks.delete_paths_from_gpfs");
    assert_eq!(v["status"]["summary"]["processed"], 1);
}

#[test]
fn delete_keeps_snapshot_directories_and_does_not_follow_symlinks() {
    let t = tmp();
    let d = t.path();
    let p = |n: &str| d.join(n);
    put(&p("tree/a/.snapshots/snap1/f"), b"snap");
    put(&p("tree/a/other"), b"x");
    put(&p("tree/b"), b"x");
    put(&p("outside/precious"), b"keep me");
    put(&p("outside/sub/deep"), b"keep me too");
    std::os::unix::fs::symlink(p("outside"), p("tree/link")).unwrap();
    std::os::unix::fs::symlink(p("outside"), p("tree/a/link2")).unwrap();
    std::os::unix::fs::symlink(p("outside"), p("toplink")).unwrap();
    put(&p("alone/.snapshots/s/f"), b"snap");
    std::os::unix::fs::symlink(p("outside"), p("slashlink")).unwrap();
    let slashed = PathBuf::from(format!("{}/", p("slashlink").display()));
    let r = delete(&["-r"], &[&p("tree"), &p("alone/.snapshots"), &p("toplink"), &slashed]);
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    let l = line_for(&lines, &p("tree"));
    assert_eq!(l.state, "processed", "{}", l.raw);
    assert!(l.message.starts_with("removed all but: "), "{}", l.raw);
    assert!(
        l.message
            .contains(&format!("{} (snapshot directory)", p("tree/a/.snapshots").display())),
        "{}",
        l.raw
    );
    assert_state(&lines, &p("alone/.snapshots"), "skipped", "snapshot directory");
    assert_state(&lines, &p("toplink"), "processed", "");
    // A trailing slash is dropped from the path: the link goes, not the target's content.
    assert_state(&lines, &p("slashlink"), "processed", "");
    assert!(!exists(&p("slashlink")));
    assert_eq!(get(&p("tree/a/.snapshots/snap1/f")), b"snap");
    assert!(!exists(&p("tree/a/other")) && !exists(&p("tree/b")));
    assert!(!exists(&p("tree/link")) && !exists(&p("tree/a/link2")) && !exists(&p("toplink")));
    assert_eq!(get(&p("outside/precious")), b"keep me");
    assert_eq!(get(&p("outside/sub/deep")), b"keep me too");
    assert_eq!(get(&p("alone/.snapshots/s/f")), b"snap");
    // Only the path to the snapshot directory stays.
    let left: Vec<_> = std::fs::read_dir(p("tree"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![OsString::from("a")]);
}

#[test]
fn delete_keeps_a_mount_point_inside_the_tree() {
    if !common::require_root("deleting around a tmpfs mount") {
        return;
    }
    let t = tmp();
    let d = t.path();
    put(&d.join("tree/x/file"), b"x");
    let m = Tmpfs::mount(&d.join("tree/x/mnt"));
    put(&m.0.join("data"), b"mounted data");
    put(&m.0.join("sub/more"), b"more");
    let r = delete(&["-r"], &[&d.join("tree")]);
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &d.join("tree"), "processed", "(mount point)");
    assert!(
        line_for(&lines, &d.join("tree"))
            .message
            .contains(&d.join("tree/x/mnt").display().to_string())
    );
    assert_eq!(get(&m.0.join("data")), b"mounted data");
    assert_eq!(get(&m.0.join("sub/more")), b"more");
    assert!(!exists(&d.join("tree/x/file")));
}

#[test]
fn delete_keeps_a_btrfs_subvolume_inside_the_tree() {
    let Some(fs) = LoopBtrfs::new(128) else { return };
    let tree = fs.path().join("tree");
    put(&tree.join("plain/f"), b"x");
    let sv = fs.subvolume("tree/sv");
    put(&sv.join("inside"), b"subvolume data");
    let r = delete(&["-r"], &[&tree]);
    assert_eq!(r.code, 0, "{}", r.show());
    let lines = r.lines();
    let l = line_for(&lines, &tree);
    assert_eq!(get(&sv.join("inside")), b"subvolume data", "the subvolume must be kept");
    assert!(!exists(&tree.join("plain")));
    assert_eq!(l.state, "processed", "{}", l.raw);
    assert!(
        l.message.contains(&format!("{} (subvolume root)", sv.display())),
        "a btrfs subvolume should be reported as a subvolume root: {}",
        l.raw
    );
}

// ---------------------------------------------------------------------------
// reverse-stub

struct Site {
    _t: tempfile::TempDir,
    d: PathBuf,
    a: PathBuf,
    objdir: PathBuf,
    cfg_a: PathBuf,
}

const MTIME: (i64, u32) = (1_600_000_000, 123_456_789);
const ATIME: (i64, u32) = (1_500_000_000, 987_654_321);

/// Tree A with files migrated to a directory endpoint `e`.
fn migrated_site() -> Site {
    let t = tmp();
    let d = t.path().to_path_buf();
    let a = d.join("A");
    let objdir = d.join("obj");
    let cfg_a = config(&d, "a.conf", &[("e", &objdir, &a)]);
    let files: [(&str, Vec<u8>); 4] = [
        ("big", content(7, 1 << 20)),
        ("sub/deeper/nested", content(8, 300_000)),
        ("small", b"tiny".to_vec()),
        ("conflict", content(9, 10_000)),
    ];
    for (n, data) in &files {
        let p = a.join(n);
        put(&p, data);
        xattr::set(&p, "user.color", b"blue").unwrap();
        xattr::set(&p, "user.bin", b"\0\xff\x01").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        if common::is_root() {
            std::os::unix::fs::chown(&p, Some(1234), Some(4321)).unwrap();
        }
        set_times(&p, ts(ATIME.0, ATIME.1), ts(MTIME.0, MTIME.1));
    }
    let mut args = args!["migrate", "--config", &cfg_a, "--endpoint", "e", "--jsonl"];
    args.extend(files.iter().map(|(n, _)| a.join(n).into_os_string()));
    let r = ferry(&args);
    assert_eq!(r.code, 0, "migrate: {}", r.show());
    assert!(r.lines().iter().all(|l| l.state == "processed"), "{}", r.show());
    Site {
        _t: t,
        d,
        a,
        objdir,
        cfg_a,
    }
}

fn reverse_stub(cfg: &Path, extra: &[&str], paths: &[PathBuf]) -> Run {
    let mut a = args!["reverse-stub", "--config", cfg, "--endpoint", "e", "--jsonl"];
    a.extend(extra.iter().map(OsString::from));
    a.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    ferry(&a)
}

fn original(n: &str) -> Vec<u8> {
    match n {
        "big" => content(7, 1 << 20),
        "sub/deeper/nested" => content(8, 300_000),
        "small" => b"tiny".to_vec(),
        "conflict" => content(9, 10_000),
        _ => unreachable!(),
    }
}

fn assert_same_metadata(p: &Path, size: u64) {
    let m = p.symlink_metadata().unwrap();
    assert!(m.is_file());
    assert_eq!(m.size(), size, "{}", p.display());
    assert_eq!(m.mode() & 0o7777, 0o640, "{}", p.display());
    if common::is_root() {
        assert_eq!((m.uid(), m.gid()), (1234, 4321), "{}", p.display());
    }
    assert_eq!((m.mtime(), m.mtime_nsec() as u32), MTIME, "{}", p.display());
    assert_eq!((m.atime(), m.atime_nsec() as u32), ATIME, "{}", p.display());
    assert_eq!(xattr::get(p, "user.color").unwrap().as_deref(), Some(&b"blue"[..]));
    assert_eq!(xattr::get(p, "user.bin").unwrap().as_deref(), Some(&b"\0\xff\x01"[..]));
    assert!(xattr::get(p, "user.ferry.loc.e").unwrap().is_some(), "{}", p.display());
    let user: Vec<String> = xattr_names(p)
        .into_iter()
        .filter(|n| !n.starts_with("user.ferry."))
        .collect();
    assert_eq!(user, vec!["user.bin".to_string(), "user.color".to_string()]);
}

#[test]
fn reverse_stub_creates_stubs_that_recall_to_the_original() {
    let s = migrated_site();
    let b = s.d.join("B");
    let cfg_b = config(&s.d, "b.conf", &[("e", &s.objdir, &b)]);
    let names = ["big", "sub/deeper/nested", "small"];
    let paths: Vec<PathBuf> = names.iter().map(|n| b.join(n)).collect();
    let r = reverse_stub(&cfg_b, &[], &paths);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.lines().iter().all(|l| l.state == "processed"), "{}", r.show());
    for n in names {
        let p = b.join(n);
        let size = original(n).len() as u64;
        assert_same_metadata(&p, size);
        assert!(state_xattr(&p).unwrap().starts_with("migrated "), "{n}");
        assert!(
            p.metadata().unwrap().blocks() <= 16,
            "{n}: a stub should hold almost no blocks, has {}",
            p.metadata().unwrap().blocks()
        );
    }
    // No temporary file left, parents made.
    let litter: Vec<_> = walkdir::WalkDir::new(&b)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ferry-reverse-stub"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
    assert!(b.join("sub/deeper").is_dir());
    // stat reports them as migrated.
    let mut a = args!["stat", "--jsonl"];
    a.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    let st = ferry(&a);
    assert!(
        st.lines().iter().all(|l| l.get_str("hsm") == "migrated"),
        "{}",
        st.show()
    );
    // Recall through the second configuration.
    let mut a = args!["recall", "--config", &cfg_b, "--jsonl"];
    a.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    let r = ferry(&a);
    assert_eq!(r.code, 0, "recall: {}", r.show());
    for n in names {
        let p = b.join(n);
        assert!(get(&p) == original(n), "{n}: recalled content differs");
        assert!(state_xattr(&p).unwrap().starts_with("premigrated "), "{n}");
        let m = p.metadata().unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec() as u32), MTIME, "{n}");
    }
    // Reverse-stubbing again: already a copy of this object.
    let r = reverse_stub(&cfg_b, &[], &paths);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.lines().iter().all(|l| l.state == "skipped"), "{}", r.show());
    // Tree A's stubs are untouched by all this.
    assert!(state_xattr(&s.a.join("big")).unwrap().starts_with("migrated "));
    let _ = &s.cfg_a;
}

#[test]
fn reverse_stub_without_an_endpoint_finds_each_object_on_the_endpoint_whose_root_holds_its_path() {
    let s = migrated_site();
    // Site B mounts the objects' tree at another path: keyed under its own
    // root, as migrate keyed them under A's.
    let b = s.d.join("B-by-root");
    let cfg_b = config(&s.d, "b-root.conf", &[("e", &s.objdir, &b)]);
    let outside = s.d.join("elsewhere").join("small");
    let paths = [b.join("big"), b.join("small"), outside.clone()];
    let mut a = args!["reverse-stub", "--config", &cfg_b, "--jsonl"];
    a.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    let r = ferry(&a);
    let lines = r.lines();
    assert_eq!(lines.len(), 3, "{}", r.show());
    assert_eq!(
        (lines[0].state.as_str(), lines[1].state.as_str()),
        ("processed", "processed"),
        "{}",
        r.show()
    );
    assert_eq!(lines[2].path, outside.as_os_str().as_bytes(), "{}", r.show());
    assert_eq!(lines[2].state, "failures", "{}", r.show());
    assert!(
        lines[2].message.contains("no endpoint's root holds this path"),
        "{}",
        r.show()
    );
    assert_ne!(r.code, 0, "a failed path fails the command: {}", r.show());
    assert_same_metadata(&b.join("big"), original("big").len() as u64);
    assert!(!outside.exists());
}

#[test]
fn reverse_stub_hydrate_and_stub_size() {
    let s = migrated_site();
    let b = s.d.join("H");
    let cfg = config(&s.d, "h.conf", &[("e", &s.objdir, &b)]);
    let r = reverse_stub(&cfg, &["--hydrate"], &[b.join("big"), b.join("sub/deeper/nested")]);
    assert_eq!(r.code, 0, "{}", r.show());
    for n in ["big", "sub/deeper/nested"] {
        let p = b.join(n);
        // Metadata first: reading the content updates the atime.
        assert_same_metadata(&p, original(n).len() as u64);
        assert!(get(&p) == original(n), "{n}: hydrated content differs");
        assert!(state_xattr(&p).unwrap().starts_with("premigrated "), "{n}");
    }
    let st = ferry(&args!["stat", "--jsonl", b.join("big")]);
    assert_eq!(st.lines()[0].get_str("hsm"), "premigrated");
    // A stub keeping its first 8 KiB: the head is there, the rest is a hole.
    let b2 = s.d.join("S");
    let cfg2 = config(&s.d, "s.conf", &[("e", &s.objdir, &b2)]);
    let r = reverse_stub(&cfg2, &["--stub-size", "8192"], &[b2.join("big"), b2.join("small")]);
    assert_eq!(r.code, 0, "{}", r.show());
    let data = get(&b2.join("big"));
    assert_eq!(data.len(), 1 << 20);
    assert!(data[..8192] == original("big")[..8192], "resident head");
    assert!(data[8192..].iter().all(|&b| b == 0), "beyond the head: a hole");
    assert!(state_xattr(&b2.join("big")).unwrap().starts_with("migrated "));
    // A file no larger than the stub size is written whole.
    assert_eq!(get(&b2.join("small")), b"tiny");
    assert!(state_xattr(&b2.join("small")).unwrap().starts_with("premigrated "));
}

#[test]
fn reverse_stub_conflicts() {
    let s = migrated_site();
    let c = s.d.join("C");
    let cfg = config(&s.d, "c.conf", &[("e", &s.objdir, &c)]);
    let target = c.join("conflict");
    // Identical content, different metadata: skipped.
    put(&target, &original("conflict"));
    let r = reverse_stub(&cfg, &[], std::slice::from_ref(&target));
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &target, "skipped", "same content");
    // Different content: refused without a policy.
    put(&target, b"local edit");
    let r = reverse_stub(&cfg, &[], std::slice::from_ref(&target));
    assert_eq!(r.code, 1, "{}", r.show());
    assert_state(&r.lines(), &target, "failures", "different local file");
    assert_eq!(get(&target), b"local edit");
    // conflict_preference local: kept.
    let r = reverse_stub(&cfg, &["--conflict-preference", "local"], std::slice::from_ref(&target));
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &target, "skipped", "kept the local file");
    assert_eq!(get(&target), b"local edit");
    // newest, local newer than the object (2020): kept.
    let r = reverse_stub(
        &cfg,
        &["--conflict-preference", "newest", "--hydrate"],
        std::slice::from_ref(&target),
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &target, "skipped", "kept the local file");
    assert_eq!(get(&target), b"local edit");
    // newest, local older: replaced.
    set_times(&target, ts(1_000_000_000, 0), ts(1_000_000_000, 0));
    let r = reverse_stub(
        &cfg,
        &["--conflict-preference", "newest", "--hydrate"],
        std::slice::from_ref(&target),
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &target, "processed", "");
    assert!(get(&target) == original("conflict"));
    // --overwrite replaces (a fresh, unmanaged local file: see
    // reverse_stub_does_not_trust_a_stale_state_on_an_edited_file).
    std::fs::remove_file(&target).unwrap();
    put(&target, b"another local edit");
    let r = reverse_stub(&cfg, &["--overwrite", "--hydrate"], std::slice::from_ref(&target));
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &target, "processed", "");
    assert_same_metadata(&target, original("conflict").len() as u64);
    assert!(get(&target) == original("conflict"));
    // ignore replaces too (and makes a stub).
    std::fs::remove_file(&target).unwrap();
    put(&target, b"yet another edit");
    let r = reverse_stub(
        &cfg,
        &["--conflict-preference", "ignore"],
        std::slice::from_ref(&target),
    );
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &target, "processed", "");
    assert!(state_xattr(&target).unwrap().starts_with("migrated "));
    assert_eq!(target.metadata().unwrap().size(), original("conflict").len() as u64);
    // A bad preference is a bad argument.
    let r = reverse_stub(&cfg, &["--conflict-preference", "mine"], std::slice::from_ref(&target));
    assert_eq!(r.code, 2, "{}", r.show());
    // A directory in the way.
    std::fs::create_dir_all(c.join("small")).unwrap();
    let r = reverse_stub(&cfg, &[], &[c.join("small")]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_state(&r.lines(), &c.join("small"), "failures", "in the way");
}

/// A premigrated copy that was edited afterwards (its state xattr, kept by
/// an in-place write, no longer matches its size and mtime) is not "a copy
/// of this object": without a policy it is a conflict, and --overwrite
/// replaces it.
#[test]
fn reverse_stub_does_not_trust_a_stale_state_on_an_edited_file() {
    let s = migrated_site();
    let c = s.d.join("E");
    let cfg = config(&s.d, "e.conf", &[("e", &s.objdir, &c)]);
    let target = c.join("conflict");
    let r = reverse_stub(&cfg, &["--hydrate"], std::slice::from_ref(&target));
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(state_xattr(&target).unwrap().starts_with("premigrated "));
    // Edited in place: the xattrs stay, the content does not.
    std::fs::write(&target, b"edited at this site").unwrap();
    let r = reverse_stub(&cfg, &["--overwrite", "--hydrate"], std::slice::from_ref(&target));
    let l = line_for(&r.lines(), &target).clone();
    assert!(
        get(&target) == original("conflict"),
        "--overwrite must replace an edited file whose state is stale; got {} and content {:?}",
        l.raw,
        String::from_utf8_lossy(&get(&target)[..get(&target).len().min(40)])
    );
    assert_eq!(l.state, "processed", "{}", l.raw);
}

#[test]
fn reverse_stub_missing_or_foreign_objects_fail() {
    let s = migrated_site();
    let b = s.d.join("M");
    let cfg = config(&s.d, "m.conf", &[("e", &s.objdir, &b)]);
    put(&s.objdir.join("plain.txt"), b"not written by ferry");
    let r = reverse_stub(
        &cfg,
        &[],
        &[b.join("nothing-here"), b.join("plain.txt"), b.join("small")],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &b.join("nothing-here"), "failures", "no object");
    assert_state(&lines, &b.join("plain.txt"), "failures", "no ferry metadata");
    assert_state(&lines, &b.join("small"), "processed", "");
    assert!(!exists(&b.join("nothing-here")) && !exists(&b.join("plain.txt")));
    // Outside the endpoint's root.
    let r = reverse_stub(&cfg, &[], &[s.d.join("elsewhere/x")]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_state(&r.lines(), &s.d.join("elsewhere/x"), "failures", "outside");
}

// ---------------------------------------------------------------------------
// unmanage

fn two_endpoint_site() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tmp();
    let d = t.path().to_path_buf();
    let root = d.join("tree");
    let cfg = config(
        &d,
        "u.conf",
        &[("e1", &d.join("obj1"), &root), ("e2", &d.join("obj2"), &root)],
    );
    (t, root, cfg)
}

fn op(cfg: &Path, cmd: &str, extra: &[&str], paths: &[&Path]) -> Run {
    let mut a = args![cmd, "--config", cfg, "--jsonl"];
    a.extend(extra.iter().map(OsString::from));
    a.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    ferry(&a)
}

#[test]
fn unmanage_premigrated_stub_and_unmanaged_files() {
    let (t, root, cfg) = two_endpoint_site();
    let d = t.path();
    let pre = root.join("pre");
    let stub = root.join("stub");
    let plain = root.join("plain");
    put(&pre, b"premigrated");
    put(&stub, &content(3, 20_000));
    put(&plain, b"plain");
    xattr::set(&pre, "user.keep", b"mine").unwrap();
    assert_eq!(op(&cfg, "premigrate", &["--endpoint", "e1"], &[&pre]).code, 0);
    assert_eq!(op(&cfg, "migrate", &["--endpoint", "e1"], &[&stub]).code, 0);
    let r = op(
        &cfg,
        "unmanage",
        &[],
        &[&pre, &stub, &plain, &root.join("missing"), &root],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    let lines = r.lines();
    assert_state(&lines, &pre, "processed", "");
    assert_state(&lines, &stub, "failures", "recall it");
    assert_state(&lines, &plain, "skipped", "not managed");
    assert_state(&lines, &root.join("missing"), "failures", "no such file");
    // A directory carries no locations: skipped (the message says "not
    // managed", as open(O_RDONLY) of a directory succeeds).
    assert_eq!(line_for(&lines, &root).state, "skipped");
    assert_eq!(ferry_xattrs(&pre), Vec::<String>::new());
    assert_eq!(xattr::get(&pre, "user.keep").unwrap().as_deref(), Some(&b"mine"[..]));
    assert_eq!(get(&pre), b"premigrated");
    assert!(d.join("obj1/pre").is_file(), "the object is kept");
    // The stub is intact and still recalls.
    assert!(state_xattr(&stub).unwrap().starts_with("migrated "));
    assert!(xattr::get(&stub, "user.ferry.loc.e1").unwrap().is_some());
    let r = op(&cfg, "recall", &[], &[&stub]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(get(&stub) == content(3, 20_000));
    // Once recalled (premigrated) it can be unmanaged.
    let r = op(&cfg, "unmanage", &[], &[&stub]);
    assert_state(&r.lines(), &stub, "processed", "");
    assert_eq!(ferry_xattrs(&stub), Vec::<String>::new());
}

#[test]
fn unmanage_by_storage_key() {
    let (t, root, cfg) = two_endpoint_site();
    let d = t.path();
    let f = root.join("f");
    let g = root.join("g");
    put(&f, b"two endpoints");
    put(&g, &content(4, 30_000));
    for e in ["e1", "e2"] {
        let r = op(&cfg, "premigrate", &["--endpoint", e], &[&f, &g]);
        assert_eq!(r.code, 0, "{}", r.show());
    }
    assert_eq!(
        ferry_xattrs(&f),
        vec!["user.ferry.loc.e1", "user.ferry.loc.e2", "user.ferry.state"]
    );
    // Only e1.
    let r = op(&cfg, "unmanage", &["--storage-key", "e1"], &[&f]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_state(&r.lines(), &f, "processed", "");
    assert_eq!(ferry_xattrs(&f), vec!["user.ferry.loc.e2", "user.ferry.state"]);
    // No match left for e1: skipped, nothing changes.
    let r = op(&cfg, "unmanage", &["--storage-key", "e1|x*"], &[&f]);
    assert_state(&r.lines(), &f, "skipped", "not managed");
    assert_eq!(ferry_xattrs(&f), vec!["user.ferry.loc.e2", "user.ferry.state"]);
    // A glob alternative matching e2: everything goes.
    let r = op(&cfg, "unmanage", &["--storage-key", "nope|e?"], &[&f]);
    assert_state(&r.lines(), &f, "processed", "");
    assert_eq!(ferry_xattrs(&f), Vec::<String>::new());
    assert!(d.join("obj1/f").is_file() && d.join("obj2/f").is_file());
    // A stub at two endpoints: one location may go, the last may not.
    let r = op(&cfg, "migrate", &["--endpoint", "e1"], &[&g]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(state_xattr(&g).unwrap().starts_with("migrated "));
    let r = op(&cfg, "unmanage", &["--storage-key", "e2"], &[&g]);
    assert_state(&r.lines(), &g, "processed", "");
    assert_eq!(ferry_xattrs(&g), vec!["user.ferry.loc.e1", "user.ferry.state"]);
    let r = op(&cfg, "unmanage", &["--storage-key", "e1"], &[&g]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_state(&r.lines(), &g, "failures", "recall it");
    assert_eq!(ferry_xattrs(&g), vec!["user.ferry.loc.e1", "user.ferry.state"]);
    // --moved and --storage-key conflict.
    let r = op(&cfg, "unmanage", &["--moved", "--storage-key", "e1"], &[&g]);
    assert_eq!(r.code, 2, "{}", r.show());
}

/// A file premigrated to e1, then changed and migrated to e2: e1's location
/// names the old content, so it goes; the stub's only location is e2's,
/// which `unmanage --storage-key e2` must then refuse to remove, and a plain
/// recall restores the new content.
#[test]
fn migrate_of_changed_content_drops_other_endpoints_locations() {
    let (_t, root, cfg) = two_endpoint_site();
    let f = root.join("f");
    put(&f, b"old content");
    assert_eq!(op(&cfg, "premigrate", &["--endpoint", "e1"], &[&f]).code, 0);
    put(&f, b"new content, longer");
    let r = op(&cfg, "migrate", &["--endpoint", "e2"], &[&f]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(ferry_xattrs(&f), vec!["user.ferry.loc.e2", "user.ferry.state"]);
    let r = op(&cfg, "unmanage", &["--storage-key", "e2"], &[&f]);
    assert_state(&r.lines(), &f, "failures", "recall it");
    let r = op(&cfg, "recall", &[], &[&f]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(get(&f), b"new content, longer");
}

/// A stub written into within its resident head is not taken for a stub
/// whose making was interrupted: migrate fails it ("recall it first") and
/// leaves its mtime alone, and recall refuses to overwrite the edit.
#[test]
fn edited_stub_head_is_not_an_interrupted_stub() {
    let t = tmp();
    let d = t.path();
    let root = d.join("tree");
    let cfg = config(d, "s.conf", &[("e", &d.join("obj"), &root)]);
    let f = root.join("f");
    put(&f, &content(9, 200_000));
    assert_eq!(
        op(&cfg, "migrate", &["--endpoint", "e", "--stub-size", "65536"], &[&f]).code,
        0
    );
    {
        use std::os::unix::fs::FileExt;
        let h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        h.write_all_at(b"IMPORTANT EDIT", 0).unwrap();
    }
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let r = op(&cfg, "migrate", &["--endpoint", "e", "--stub-size", "65536"], &[&f]);
    assert_state(&r.lines(), &f, "failures", "recall it first");
    assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), mtime);
    let r = op(&cfg, "recall", &[], &[&f]);
    assert_state(&r.lines(), &f, "failures", "differs from its object");
    assert_eq!(&get(&f)[..14], b"IMPORTANT EDIT");
}

// ---------------------------------------------------------------------------
// stat

#[test]
fn stat_reports_attributes_without_following_links() {
    let t = tmp();
    let d = t.path();
    let root = d.join("tree");
    let cfg = config(d, "s.conf", &[("e", &d.join("obj"), &root)]);
    let f = root.join("f");
    put(&f, b"hello");
    set_times(&f, ts(ATIME.0, ATIME.1), ts(MTIME.0, MTIME.1));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
    let pre = root.join("pre");
    let mig = root.join("mig");
    put(&pre, b"pre");
    put(&mig, &content(5, 20_000));
    assert_eq!(op(&cfg, "premigrate", &["--endpoint", "e"], &[&pre]).code, 0);
    assert_eq!(op(&cfg, "migrate", &["--endpoint", "e"], &[&mig]).code, 0);
    let link = root.join("link");
    std::os::unix::fs::symlink(d, &link).unwrap();
    let odd = root.join(OsStr::from_bytes(b"odd\xff\nname"));
    put(&odd, b"");
    let r = ferry(&args![
        "stat",
        "--jsonl",
        &f,
        &root,
        &link,
        root.join("missing"),
        &pre,
        &mig,
        &odd
    ]);
    assert_eq!(r.code, 1, "{}", r.show());
    let lines = r.lines();
    let lf = line_for(&lines, &f);
    let m = f.symlink_metadata().unwrap();
    assert_eq!(lf.state, "processed");
    assert_eq!(lf.get_str("type"), "file");
    assert_eq!(lf.get_num("size"), 5);
    assert_eq!(parse_time(&lf.members["mtime"]), MTIME);
    assert_eq!(parse_time(&lf.members["atime"]), ATIME);
    assert_eq!(parse_time(&lf.members["ctime"]), (m.ctime(), m.ctime_nsec() as u32));
    assert_eq!(lf.get_num("mode"), u64::from(m.mode()));
    assert_eq!(lf.get_num("mode") as u32 & 0o7777, 0o604);
    assert_eq!(lf.get_num("uid"), u64::from(m.uid()));
    assert_eq!(lf.get_num("gid"), u64::from(m.gid()));
    assert_eq!(lf.get_num("inode"), m.ino());
    assert_eq!(lf.get_num("nlink"), 1);
    assert!(!lf.members.contains_key("hsm"), "{}", lf.raw);
    assert_eq!(line_for(&lines, &root).get_str("type"), "directory");
    let ll = line_for(&lines, &link);
    assert_eq!(ll.get_str("type"), "symlink");
    assert_eq!(ll.get_num("inode"), link.symlink_metadata().unwrap().ino());
    assert_eq!(ll.get_num("size"), d.as_os_str().len() as u64);
    assert_state(&lines, &root.join("missing"), "failures", "no such file");
    assert_eq!(line_for(&lines, &pre).get_str("hsm"), "premigrated");
    let lm = line_for(&lines, &mig);
    assert_eq!(lm.get_str("hsm"), "migrated");
    assert_eq!(lm.get_num("size"), 20_000);
    let lo = line_for(&lines, &odd);
    assert!(lo.raw.contains(r"odd\udcff\nname"), "{}", lo.raw);
    assert_eq!(lo.get_str("type"), "file");
}
