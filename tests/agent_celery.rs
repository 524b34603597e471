//! `ferry agent` driven by a real Python Celery client (`tests/agent/client.py`):
//! recursive discovery with a migrate rule, results read with
//! `AsyncResult.get`, and the files checked on disk and in the archive.
//!
//! The large test migrates a 100,000-file tree (`FERRY_E2E_FILES` to change
//! the count) while the broker is restarted and the agent is killed with
//! SIGKILL, and checks that every file ends migrated exactly once in effect
//! and every child's result is readable.
//!
//! That client uses a durable, never auto-deleted reply queue (a subclass
//! of Celery's rpc:// backend): Celery's own rpc:// reply queue is
//! auto-deleted when the broker stops, so results published before the
//! client declares it again are dropped by the broker whatever the worker
//! does. With it, "every result readable" can be checked strictly. Objects
//! are what the archive directory holds outside ferry's own files (uploads
//! staged in `#staging/`, which a kill in the middle of a write leaves;
//! `ferry endpoint check` must find only those, and its repair remove
//! them).
//!
//! A smaller test queues tasks before the agent starts (as after a crash)
//! and checks that it runs all of them.
//!
//! The tests restart the broker, so they run one at a time (a lock), and
//! other agent tests running at the same moment may see the broker go away.

mod common;

use common::agent::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The broker URL as Python's kombu writes it.
const PY_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672//";

/// ferry's xattrs, default prefix (src/ops/xattrs.rs).
const STATE_XATTR: &str = "user.ferry.state";
const LOC_XATTR: &str = "user.ferry.loc.archive";
/// The xattr a directory endpoint keeps on each object (src/target/mod.rs).
const OBJECT_XATTR: &str = "user.ferry.object";

/// Tests here restart the broker: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the small tests start from: the broker (or a skip), the lock, a
/// fresh agent (not started) and its log kept on failure.
fn small_test() -> Option<(MutexGuard<'static, ()>, Agent, KeepLog)> {
    if !broker_or_skip() {
        return None;
    }
    let serial = serial();
    let agent = Agent::new("");
    let keep = KeepLog::new(&agent);
    Some((serial, agent, keep))
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agent/client.py")
}

/// Runs the Python client with `spec` and parses its JSON report.
fn client(spec: &Value) -> Value {
    let out = python(&client_script(), &[&spec.to_string()]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("client output is not JSON ({e}):\n{out}"))
}

/// On a panic, copies the agent's log out of its temporary directory and
/// prints its tail.
struct KeepLog {
    log: PathBuf,
    site: String,
}

impl KeepLog {
    fn new(agent: &Agent) -> KeepLog {
        KeepLog {
            log: agent.dir.path().join("agent.log"),
            site: agent.site.clone(),
        }
    }
}

impl Drop for KeepLog {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let kept = std::env::temp_dir().join(format!("ferry-agent-celery-{}.log", self.site));
        let _ = std::fs::write(&kept, &text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        eprintln!(
            "\n--- agent log kept at {} ({} lines); last 60 lines:\n{tail}\n---",
            kept.display(),
            lines.len()
        );
        let client_log = self.log.with_file_name("client.log");
        if let Ok(text) = std::fs::read_to_string(&client_log) {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- client log, last 40 lines:\n{tail}\n---");
        }
    }
}

/// The client's log file (in the agent's directory).
fn client_log(agent: &Agent) -> PathBuf {
    agent.dir.path().join("client.log")
}

/// The migrate rule the tests submit.
fn migrate_rules() -> Value {
    json!([{"state": "all", "type": "file",
            "action": [{"name": "dynamo.tasks.migrate", "endpoint": "archive", "premigrate": false}]}])
}

/// Deterministic content of a few hundred bytes, different for every file.
fn content(tag: &str, n: usize) -> Vec<u8> {
    let len = 100 + (n * 37) % 300;
    let seed = format!("<{tag}:{n}>");
    seed.bytes().cycle().take(len).collect()
}

/// Where the data of a regular file begins, `None` if it holds none (a
/// stub punched out entirely).
fn first_data(file: &std::fs::File) -> Option<i64> {
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let r = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "SEEK_DATA: {e}");
        None
    } else {
        Some(r)
    }
}

fn xattr_text(path: &Path, name: &str) -> Option<String> {
    xattr::get(path, name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()))
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// What the archive directory holds: object keys (paths relative to it)
/// and ferry's own files (a component with `#`: uploads staged in
/// `#staging/`, which a killed agent leaves, and metadata sidecars).
fn archive_listing(archive: &Path) -> (BTreeSet<Vec<u8>>, Vec<PathBuf>) {
    let mut objects = BTreeSet::new();
    let mut staging = Vec::new();
    for e in walkdir::WalkDir::new(archive) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(archive).unwrap().as_os_str().as_bytes().to_vec();
        if rel.contains(&b'#') {
            staging.push(e.path().to_path_buf());
        } else {
            objects.insert(rel);
        }
    }
    (objects, staging)
}

/// Checks that every file in `expected` (path → content) is a migrated stub
/// whose state records its size and BLAKE3 hash, with no data left on
/// disk, and whose recorded object in `archive` holds exactly its content;
/// and that the archive holds no other object. Returns the problems found.
fn verify_migrated(expected: &BTreeMap<PathBuf, Vec<u8>>, archive: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut keys = BTreeSet::new();
    let mut recorded = BTreeMap::new();
    for (path, want) in expected {
        let p = path.display();
        let md = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{p}: {e}"));
                continue;
            }
        };
        if md.len() != want.len() as u64 {
            problems.push(format!("{p}: size {} instead of {}", md.len(), want.len()));
        }
        let hash = blake3::hash(want).to_hex().to_string();
        match xattr_text(path, STATE_XATTR) {
            None => problems.push(format!("{p}: no {STATE_XATTR}")),
            Some(state) => {
                let words: Vec<&str> = state.split(' ').collect();
                let ok = words.first() == Some(&"migrated")
                    && words.contains(&format!("size={}", want.len()).as_str())
                    && words.contains(&"stub=0")
                    && words.contains(&format!("blake3={hash}").as_str());
                if !ok {
                    problems.push(format!(
                        "{p}: state {state:?}, expected migrated size={} blake3={hash}",
                        want.len()
                    ));
                }
            }
        }
        let f = std::fs::File::open(path).unwrap();
        if let Some(at) = first_data(&f) {
            problems.push(format!(
                "{p}: recorded as migrated but holds data at offset {at} (not stubbed)"
            ));
        }
        let Some(key) = xattr_text(path, LOC_XATTR) else {
            problems.push(format!("{p}: no {LOC_XATTR}"));
            continue;
        };
        let obj = archive.join(&key);
        match std::fs::read(&obj) {
            Ok(data) if data == *want => {}
            Ok(data) => problems.push(format!("{p}: object {key} holds {} other bytes", data.len())),
            Err(e) => problems.push(format!("{p}: object {key}: {e}")),
        }
        match xattr_text(&obj, OBJECT_XATTR) {
            Some(m) if m.contains(&format!("\"blake3\":\"{hash}\"")) => {}
            other => problems.push(format!("{p}: object {key} metadata {other:?} does not record {hash}")),
        }
        if !keys.insert(key.as_bytes().to_vec()) {
            problems.push(format!("{p}: object {key} is recorded by two files"));
        }
        recorded.insert(key, path);
    }
    let (objects, staging) = archive_listing(archive);
    if !staging.is_empty() {
        eprintln!(
            "note: {} staging leftovers in the archive (not objects), e.g. {}",
            staging.len(),
            staging[0].display()
        );
    }
    let extra: Vec<_> = objects.difference(&keys).collect();
    if !extra.is_empty() {
        problems.push(format!(
            "{} objects in the archive belong to no file (more than one object per file), e.g. {:?}",
            extra.len(),
            extra
                .iter()
                .take(5)
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        ));
        // What they are: the stray object, and the object its file records
        // now if that is a sibling (`<key>.<suffix>`).
        for k in extra.iter().take(5) {
            let k = String::from_utf8_lossy(k).into_owned();
            let obj = archive.join(&k);
            let describe = |o: &Path| {
                let md = std::fs::metadata(o).ok();
                format!(
                    "{} bytes, written {:?}, meta {:?}",
                    md.as_ref().map_or(0, |m| m.len()),
                    md.and_then(|m| m.modified().ok()),
                    xattr_text(o, OBJECT_XATTR)
                )
            };
            let mut line = format!("stray object {k}: {}", describe(&obj));
            let prefix = format!("{k}.");
            for (rk, file) in recorded.range(prefix.clone()..) {
                if !rk.starts_with(&prefix) {
                    break;
                }
                let same = std::fs::read(&obj).ok().as_ref() == expected.get(*file);
                line += &format!(
                    "; {} records {rk}: {}; the stray object holds the file's content: {same}",
                    file.display(),
                    describe(&archive.join(rk))
                );
            }
            problems.push(line);
        }
    }
    problems
}

fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problems, first ones:\n{}",
        problems.len(),
        problems.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn summary_sum(children: &[Value], key: &str) -> u64 {
    children.iter().map(|c| c["summary"][key].as_u64().unwrap_or(0)).sum()
}

#[test]
fn python_client_discovers_and_migrates_a_tree() {
    let Some((_serial, mut agent, _keep)) = small_test() else {
        return;
    };
    let data = agent.data();

    // A nested tree: 15 directories up to four levels deep, 20 files each,
    // an empty directory, and names that are not UTF-8, hold a newline, or
    // hold characters the key encoding escapes.
    let mut expected = BTreeMap::new();
    let mut dirs = vec![data.clone()];
    for a in 0..3 {
        let da = data.join(format!("a{a}"));
        dirs.push(da.clone());
        for b in 0..2 {
            let db = da.join(format!("b{b}"));
            dirs.push(db.clone());
            if b == 1 {
                dirs.push(db.join("c").join("d"));
                dirs.push(db.join("c"));
            }
        }
    }
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut n = 0;
    for d in &dirs {
        for i in 0..20 {
            let p = d.join(format!("file-{i:02}.dat"));
            let c = content("t1", n);
            std::fs::write(&p, &c).unwrap();
            expected.insert(p, c);
            n += 1;
        }
    }
    let odd: [&[u8]; 5] = [
        b"not-utf8-\xff\xfe.bin",
        b"new\nline",
        b"with space",
        b"hash#and%percent",
        b"caf\xc3\xa9",
    ];
    for (k, name) in odd.iter().enumerate() {
        let p = data.join("a1").join(OsStr::from_bytes(name));
        let c = content("odd", k);
        std::fs::write(&p, &c).unwrap();
        expected.insert(p, c);
    }
    std::fs::create_dir(data.join("empty")).unwrap();
    let n_dirs = dirs.len() + 1; // with `empty`, and the root itself
    let n_files = expected.len();
    assert_eq!(n_files, 20 * dirs.len() + odd.len());

    agent.start();

    // A rule set with a bad type: a clear failure, and nothing migrated.
    let bad = client(&json!({
        "broker": PY_BROKER, "queue": agent.queue("discovery"), "timeout": 60,
        "kwargs": {"paths": [data.to_str().unwrap()], "jobid": 6,
                   "filter_rules": [{"state": "all", "type": "blob",
                                     "action": [{"name": "dynamo.tasks.migrate", "endpoint": "archive"}]}]},
    }));
    assert_eq!(bad["seed"]["state"], "FAILURE", "{bad}");
    let msg = bad["seed"]["exc_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("rule 1") && msg.contains("type must be") && msg.contains("\"blob\""),
        "unclear failure: {bad}"
    );
    assert!(bad.get("children").is_none(), "{bad}");

    // An unknown task: NotRegistered raised on the Python side.
    let unknown = client(&json!({
        "broker": PY_BROKER, "queue": agent.queue("worker"), "timeout": 60,
        "task": "dynamo.tasks.no_such_task", "kwargs": {"paths": [], "jobid": 1},
    }));
    assert_eq!(unknown["seed"]["state"], "FAILURE", "{unknown}");
    assert_eq!(unknown["seed"]["exc_type"], "NotRegistered", "{unknown}");
    assert!(
        unknown["seed"]["exc_message"]
            .as_str()
            .unwrap_or_default()
            .contains("dynamo.tasks.no_such_task"),
        "{unknown}"
    );
    assert!(
        !agent.log().contains("task=dynamo.tasks.migrate"),
        "a failed submission ran migrations:\n{}",
        agent.log()
    );
    for p in expected.keys() {
        assert_eq!(xattr_text(p, STATE_XATTR), None, "{} was touched", p.display());
    }

    // The real run.
    let t0 = Instant::now();
    let r = client(&json!({
        "broker": PY_BROKER, "queue": agent.queue("discovery"), "timeout": 120, "detail": true,
        "kwargs": {"paths": [data.to_str().unwrap()], "jobid": 7, "filter_rules": migrate_rules()},
    }));
    eprintln!(
        "{n_files} files migrated through the Python client in {:?}",
        t0.elapsed()
    );
    let seed = &r["seed"];
    assert_eq!(seed["state"], "SUCCESS", "{seed}");
    let res = &seed["result"];
    assert_eq!(res["jobid"], 7, "{res}");
    assert_eq!(res["status"]["task"], "dynamo.tasks.recursive_navigate", "{res}");
    assert_eq!(res["status"]["input_total"], 1, "{res}");
    assert_eq!(res["status"]["has_dynamic_children"], true, "{res}");
    let sum = &res["status"]["summary"];
    assert_eq!(sum["files"], n_files, "{res}");
    assert_eq!(sum["dirs"], n_dirs, "{res}");
    assert_eq!(sum["failures"], 0, "{res}");
    let children = r["children"].as_array().expect("children");
    assert!(!children.is_empty(), "{r}");
    assert_eq!(sum["children"], children.len(), "{res}");
    for c in children {
        assert_eq!(c["state"], "SUCCESS", "child not readable or failed: {c}");
        assert_eq!(c["task"], "dynamo.tasks.migrate", "{c}");
        assert_eq!(c["result"]["jobid"], 7, "{c}");
        assert_eq!(c["summary"]["failures"], 0, "{c}");
    }
    assert_eq!(summary_sum(children, "processed"), n_files as u64, "{r}");
    assert_eq!(summary_sum(children, "skipped"), 0, "{r}");
    // The children's inputs are exactly the files, each once.
    let got: Vec<&str> = r["inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut want: Vec<String> = expected.keys().map(|p| hex(p.as_os_str().as_bytes())).collect();
    want.sort();
    assert_eq!(got, want, "children's inputs are not the files, each once");

    assert_no_problems(&verify_migrated(&expected, &agent.dir.path().join("archive")));

    // Recall a sample, the odd names among them: the content comes back.
    let sample: BTreeSet<&PathBuf> = expected
        .keys()
        .filter(|p| p.parent() == Some(&data.join("a1")))
        .chain(expected.keys().step_by(37))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("recall")
        .arg("--config")
        .arg(agent.dir.path().join("ferry.conf"))
        .args(["--endpoint", "archive", "--no-progress"])
        .args(&sample)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry recall failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &sample {
        assert_eq!(std::fs::read(p).unwrap(), expected[*p], "{} after recall", p.display());
        let state = xattr_text(p, STATE_XATTR).unwrap();
        assert!(state.starts_with("premigrated "), "{}: {state}", p.display());
    }
}

/// Lines of the agent's log that report a finished `task`.
fn succeeded(log: &str, task: &str) -> Vec<String> {
    let needle = format!("task={task} ");
    log.lines()
        .filter(|l| l.contains("task succeeded") && l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn rabbitmqctl(arg: &str) {
    let out = Command::new("rabbitmqctl").arg(arg).output().expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {arg}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How long the broker stays stopped: longer than a client's connect
/// timeout (kombu's 4 s), so the Celery client's first reconnect fails and
/// it must subscribe to its reply queue again once the broker is back (the
/// case that left it reading nothing: tests/agent/client.py).
const BROKER_DOWN: Duration = Duration::from_secs(6);

/// Restarts the broker's application; starts it again even if the test
/// panics in between.
fn restart_broker() {
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            rabbitmqctl("start_app");
        }
    }
    let _restart = Restart;
    rabbitmqctl("stop_app");
    std::thread::sleep(BROKER_DOWN);
}

/// How long the agent may go without finishing or starting a task while
/// work is outstanding before a test calls it stuck.
const STALL: Duration = Duration::from_secs(90);

/// Task activity in the agent's log: lines that start, finish or re-answer a task.
fn activity(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("task started")
                || l.contains("task succeeded")
                || l.contains("task failed")
                || l.contains("sending its result again")
        })
        .count()
}

/// The broker's view of the agent's queues, for failure messages.
fn queue_state(agent: &Agent) -> String {
    // The client logs the name of its reply queue.
    let log = std::fs::read_to_string(client_log(agent)).unwrap_or_default();
    let reply = log
        .split("reply_to ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string);
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut lines = vec!["queue ready unacked consumers".to_string()];
    lines.extend(
        out.lines()
            .filter(|l| l.contains(&agent.site) || reply.as_ref().is_some_and(|r| l.starts_with(r.as_str())))
            .map(str::to_string),
    );
    lines.join("\n")
}

/// Creates the client's stop file when dropped (a finished or failed test),
/// so a client still waiting for results gives up at once.
struct StopClient(PathBuf);

impl Drop for StopClient {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
    }
}

/// Polls the agent's log until `f` returns something; panics when the
/// agent shows no task activity for [`STALL`].
fn wait_for<T>(agent: &Agent, what: &str, mut f: impl FnMut(&str) -> Option<T>) -> T {
    let (mut seen, mut since) = (usize::MAX, Instant::now());
    loop {
        let log = agent.log();
        if let Some(x) = f(&log) {
            return x;
        }
        let a = activity(&log);
        if a != seen {
            (seen, since) = (a, Instant::now());
        }
        assert!(
            since.elapsed() < STALL,
            "waiting for {what}: the agent did nothing for {STALL:?}\n{}",
            queue_state(agent)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the client thread; if the agent shows no task activity for
/// [`STALL`] meanwhile, stops the client and panics.
fn join_client(py: std::thread::JoinHandle<Value>, agent: &Agent, stop: &StopClient) -> Value {
    let (mut seen, mut since) = (usize::MAX, Instant::now());
    let mut stalled = None;
    while !py.is_finished() {
        let a = activity(&agent.log());
        if a != seen {
            (seen, since) = (a, Instant::now());
        } else if stalled.is_none() && since.elapsed() > STALL {
            stalled = Some(queue_state(agent));
            std::fs::write(&stop.0, b"").unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = py.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    if let Some(queues) = stalled {
        let unread = report["children"]
            .as_array()
            .or(report["results"].as_array())
            .map_or(0, |v| v.iter().filter(|c| c["state"] == "UNREADABLE").count());
        panic!(
            "the agent did nothing for {STALL:?} while the client waited ({unread} results unread); the broker says:\n{queues}"
        );
    }
    report
}

#[test]
fn agent_started_with_a_backlog_runs_all_of_it() {
    let Some((_serial, mut agent, _keep)) = small_test() else {
        return;
    };
    let file = agent.data().join("a");
    std::fs::write(&file, b"abc").unwrap();
    // The tasks wait in the agent's queue (as after a crash) before it starts.
    let sent = agent.dir.path().join("sent");
    let stop = StopClient(agent.dir.path().join("stop-client"));
    let tasks: Vec<Value> = (0..12)
        .map(|i| {
            json!({"task": "dynamo.tasks.stat_paths", "queue": agent.queue("worker"),
                   "kwargs": {"paths": [file.to_str().unwrap()], "jobid": i}})
        })
        .collect();
    let spec = json!({"broker": PY_BROKER, "timeout": 300, "tasks": tasks,
                      "sent_file": sent, "stop_file": stop.0, "log_file": client_log(&agent)});
    let py = std::thread::spawn(move || client(&spec));
    let t0 = Instant::now();
    while !sent.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60) && !py.is_finished(),
            "the client sent nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.start();
    let report = join_client(py, &agent, &stop);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 12);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["state"], "SUCCESS", "task {i}: {r}");
        assert_eq!(r["result"]["jobid"], i, "{r}");
        assert_eq!(r["result"]["status"]["summary"]["processed"], 1, "{r}");
    }
}

#[test]
fn hundred_thousand_files_survive_broker_restart_and_agent_kill() {
    if !broker_or_skip() {
        return;
    }
    let _serial = serial();
    let n: usize = std::env::var("FERRY_E2E_FILES")
        .ok()
        .map(|v| v.parse().expect("FERRY_E2E_FILES: a number of files"))
        .unwrap_or(100_000);
    let dirs = 100.min(n.max(1));
    let mut agent = Agent::new("");
    let _keep = KeepLog::new(&agent);
    let data = agent.data();

    let t_all = Instant::now();
    // File i goes to directory i % dirs; four threads write them.
    let expected: BTreeMap<PathBuf, Vec<u8>> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let data = &data;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for d in (t..dirs).step_by(4) {
                        let dir = data.join(format!("d{d:03}"));
                        std::fs::create_dir(&dir).unwrap();
                        for i in (d..n).step_by(dirs) {
                            let p = dir.join(format!("f{i:06}"));
                            let c = content("big", i);
                            std::fs::write(&p, &c).unwrap();
                            mine.push((p, c));
                        }
                    }
                    mine
                })
            })
            .collect();
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(expected.len(), n);
    let t_create = t_all.elapsed();
    eprintln!("created {n} files in {dirs} directories in {t_create:?}");

    agent.start();
    let t_run = Instant::now();
    let stop = StopClient(agent.dir.path().join("stop-client"));
    let spec = json!({
        "broker": PY_BROKER, "queue": agent.queue("discovery"), "timeout": 3600, "durable_reply": true,
        "stop_file": stop.0, "log_file": client_log(&agent),
        "kwargs": {"paths": [data.to_str().unwrap()], "jobid": 100, "filter_rules": migrate_rules()},
    });
    let py = std::thread::spawn(move || client(&spec));

    // Discovery publishes all children; its log line says how many.
    let children: usize = wait_for(&agent, "discovery to finish", |log| {
        let line = succeeded(log, "dynamo.tasks.recursive_navigate").pop()?;
        let k = line.split("children=").nth(1)?.trim();
        Some(k.parse().expect("children=N"))
    });
    eprintln!("discovery done after {:?}: {children} children", t_run.elapsed());
    assert!(children >= 8, "too few children ({children}) to disrupt in the middle");

    // Broker restart after a quarter of the children finished.
    let at_restart = wait_for(&agent, "a quarter of the children", |log| {
        let k = succeeded(log, "dynamo.tasks.migrate").len();
        (k >= children / 4).then_some(k)
    });
    assert!(
        at_restart < children,
        "all {children} children finished before the broker restart"
    );
    eprintln!(
        "restarting the broker after {at_restart}/{children} children, {:?}",
        t_run.elapsed()
    );
    restart_broker();
    agent.wait_log_n("connected; consuming", 2, Duration::from_secs(120));
    eprintln!("agent reconnected, {:?}", t_run.elapsed());

    // SIGKILL after half of them (counting re-runs) finished, then a new agent.
    let at_kill = wait_for(&agent, "half of the children", |log| {
        let k = succeeded(log, "dynamo.tasks.migrate").len();
        (k >= children / 2).then_some(k)
    });
    let log_before_kill = agent.log().len();
    agent.kill();
    eprintln!("killed the agent after {at_kill} child runs, {:?}", t_run.elapsed());
    assert!(
        at_kill < children,
        "all {children} children finished before the kill; nothing left to recover"
    );
    agent.start();
    agent.wait_log_n("connected; consuming", 3, Duration::from_secs(60));

    let report = join_client(py, &agent, &stop);
    let t_total = t_run.elapsed();
    let log = agent.log();
    let after_kill = &log[log_before_kill..];
    eprintln!(
        "client done: {:.1}s (seed result after {:.1}s), {} retries: {:?}",
        report["seconds_all"].as_f64().unwrap_or(0.0),
        report["seconds_seed"].as_f64().unwrap_or(0.0),
        report["retries"].as_array().map_or(0, Vec::len),
        report["retries"]
    );
    // The restart reached the client too, which read on after it.
    let client_said = std::fs::read_to_string(client_log(&agent)).unwrap_or_default();
    assert!(
        client_said.contains("reading results again after a lost connection"),
        "the client never subscribed again after the broker restart:\n{client_said}"
    );

    // The seed's result.
    let seed = &report["seed"];
    assert_eq!(seed["state"], "SUCCESS", "{seed}");
    let sum = &seed["result"]["status"]["summary"];
    assert_eq!(sum["files"], n, "{seed}");
    assert_eq!(sum["dirs"], dirs + 1, "{seed}");
    assert_eq!(sum["failures"], 0, "{seed}");
    assert_eq!(sum["children"], children, "{seed}");

    // Every child listed is readable and succeeded; together they took
    // every file once and failed none.
    let kids = report["children"].as_array().expect("children");
    assert_eq!(kids.len(), children);
    let unreadable: Vec<&Value> = kids.iter().filter(|c| c["state"] != "SUCCESS").collect();
    assert!(
        unreadable.is_empty(),
        "{} of {children} children not readable or failed, e.g. {}",
        unreadable.len(),
        unreadable[0]
    );
    let processed = summary_sum(kids, "processed");
    let skipped = summary_sum(kids, "skipped");
    eprintln!("children: {processed} processed + {skipped} skipped (already migrated by an earlier run)");
    assert_eq!(report["inputs_total"], n, "children's inputs");
    assert_eq!(report["inputs_distinct"], n, "children's inputs");
    assert_eq!(processed + skipped, n as u64);
    assert_eq!(summary_sum(kids, "failures"), 0, "failed files");
    assert_eq!(summary_sum(kids, "aborted"), 0, "aborted files");

    // The disruptions really interrupted work: tasks in flight at the kill
    // ran again on the new agent.
    assert!(
        after_kill.contains("redelivered=true"),
        "no task was redelivered after the kill"
    );
    assert!(!log.contains("panicked"), "the agent panicked");

    // On disk: every file a stub of its own verified object, one object each.
    let t_verify = Instant::now();
    let problems = verify_migrated(&expected, &agent.dir.path().join("archive"));
    eprintln!(
        "TIMING files={n}: create {t_create:?}, run (submit to last result, with disruptions) {t_total:?}, verify {:?}, test total {:?}",
        t_verify.elapsed(),
        t_all.elapsed()
    );
    assert_no_problems(&problems);

    // What the kill left in the store is staging debris only, which a
    // repair removes.
    let conf = agent.dir.path().join("ferry.conf");
    let check = |extra: &[&str]| {
        let out = std::process::Command::new(common::ops::FERRY)
            .args(["endpoint", "check", "--json", "--endpoint", "archive", "--config"])
            .arg(&conf)
            .args(extra)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), report)
    };
    let (_, report) = check(&["--repair", "--grace", "0"]);
    let leftovers = report["leftovers"].as_array().unwrap();
    assert!(
        leftovers
            .iter()
            .all(|l| l["kind"] == "staging" && l["action"] == "removed"),
        "{report}"
    );
    assert_eq!(report["objects"].as_u64(), Some(n as u64), "{report}");
    let (code, report) = check(&[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["leftovers"].as_array().unwrap().len(), 0, "{report}");
}
