//! The hub's web page in a real browser: `ferry hub serve` on SQLite with
//! two agents of one site on RabbitMQ, driven by Python Playwright with
//! Debian's Chromium (tests/hub/ui.py).
//!
//! The jobs: one finished with two unreadable files (mode 000: the
//! fixture's agents run without CAP_DAC_OVERRIDE), one named with `<`,
//! quotes and a byte that is not UTF-8; and two left running: their
//! discoveries run on an agent that takes no batches (`worker = false`),
//! so their batches wait in the worker queue until the test starts an
//! agent that does — after the browser has seen a cancel turn the job
//! DEQUEUING, so that it sees CANCELLED come by the page's own refresh.
//!
//! Screenshots of the jobs, job and health pages go to
//! `<target dir>/ui-screenshots/`.

mod common;

use common::hub::{HubSite, sqlite};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether Chromium and Python Playwright are there (scripts/test
/// installs them); a skip, or under CI a failure, when not.
fn browser_or_skip() -> bool {
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    common::require(
        Path::new(CHROMIUM).exists() && playwright,
        "the web page test needs Debian's chromium (/usr/bin/chromium) and Python playwright (scripts/test installs both)",
    )
}

/// `n` small files under `dir`.
fn files(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:03}.dat")), format!("{i}\n")).unwrap();
    }
}

/// Where the screenshots go: `ui-screenshots/` in the target directory.
fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(&tmp).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The id of a task of job `id` that failed files.
fn failed_task(s: &HubSite, id: i64) -> i64 {
    let tasks = s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=100"), None, 200);
    tasks["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_i64())
        // Read raw: a JSON parser that makes Rust strings refuses the
        // `\udcff` escape of the odd name.
        .find(|t| {
            s.raw(&format!("/api/tasks/{t}/files/"))
                .contains("\"state\":\"failures\"")
        })
        .unwrap_or_else(|| panic!("no task with failed files: {tasks}"))
}

fn wait_walked(s: &HubSite, id: i64) {
    let t0 = Instant::now();
    loop {
        let j = s.job(id);
        if j["dir_walk_complete"] == true && ["PENDING", "STARTED"].contains(&j["state"].as_str().unwrap_or("")) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "job {id} did not walk: {j}\n{}",
            s.log("hub.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_web_page_in_a_browser() {
    if !common::agent::broker_or_skip() || !browser_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 2, "");
    // Agent 1 walks but takes no batch.
    s.agent_settings_of(1, "worker = false");
    s.start_hub();
    s.start_agent(0);
    s.wait_online(1, Duration::from_secs(20));

    // A finished job with two unreadable files, one of them named with
    // markup, quotes and a byte that is not UTF-8.
    let done = s.data().join("projects").join("done");
    files(&done, 30);
    let odd = std::ffi::OsStr::from_bytes(b"bad <b>\"q\" caf\xff.dat");
    let bad = [done.join("unreadable.dat"), done.join(odd)];
    for b in &bad {
        std::fs::write(b, "secret\n").unwrap();
        std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let finished = s.submit("premigrate", &done);
    let finished_id = finished["id"].as_i64().unwrap();
    let j = s.wait_job(finished_id, Duration::from_secs(120));
    assert_eq!(j["state"], "FAILURE", "{j}");
    assert_eq!(j["counts"]["failures"], 2, "{j}");
    // The API gives the odd name back as the agent sent it, `\udcff`
    // escape and all (decoded into a Rust string, it came out as null).
    for list in [
        format!("/api/jobstats/?job={finished_id}"),
        format!("/api/tasks/{}/files/", failed_task(&s, finished_id)),
    ] {
        let body = s.raw(&list);
        assert!(body.contains("caf\\udcff.dat\""), "{list}: {body}");
    }

    // Two jobs that stay running: walked, their batches queued unserved.
    s.stop_agent(0, false);
    s.start_agent(1);
    let mut running = Vec::new();
    for name in ["running-a", "running-b"] {
        let dir = s.data().join("projects").join(name);
        files(&dir, 12);
        running.push(s.submit("premigrate", &dir)["id"].as_i64().unwrap());
    }
    for id in &running {
        wait_walked(&s, *id);
    }

    // A schedule that does not fire by itself (disabled), to run by hand.
    let sched = s.api(
        "POST",
        "/api/schedules/",
        Some(serde_json::json!({"name": "nightly", "site": s.site, "enabled": false,
            "managed_paths": [s.data().join("projects").join("done").to_str().unwrap()],
            "minute": "30", "hour": "2", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"})),
        201,
    );
    let sched_id = sched["id"].as_i64().unwrap();
    s.api(
        "POST",
        &format!("/api/schedules/{sched_id}/workflows/"),
        Some(serde_json::json!({"workflow": "premigrate", "site": s.site, "queue": "default", "fields": {}})),
        201,
    );

    let shots = screenshot_dir();
    let signals = tempfile::tempdir().unwrap();
    let shown: Vec<String> = bad
        .iter()
        .map(|b| ferry::hub::ui::format::path_bytes(b.as_os_str().as_bytes()))
        .collect();
    let spec = serde_json::json!({
        "url": s.url,
        "user": common::hub::USER,
        "password": common::hub::PASSWORD,
        "site": s.site,
        "finished": finished_id,
        "finished_name": finished["friendly_name"],
        "bad_paths": shown,
        "cancel_js": running[0],
        "cancel_nojs": running[1],
        "schedule": sched_id,
        "schedule_path": s.data().join("projects").join("running-a"),
        "signals": signals.path(),
        "screenshots": shots,
        "chromium": CHROMIUM,
    });
    let mut py = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hub/ui.py"))
        .arg(spec.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes meanwhile, so that neither fills.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = String::new();
            let _ = r.read_to_string(&mut v);
            v
        })
    };
    let out = drain(Box::new(py.stdout.take().unwrap()));
    let err = drain(Box::new(py.stderr.take().unwrap()));
    // Once the browser has seen DEQUEUING, an agent that takes batches
    // starts: it refuses the cancelled jobs' queued batches, and the jobs
    // end CANCELLED.
    let t0 = Instant::now();
    let mut worker = false;
    let status = loop {
        if let Some(st) = py.try_wait().unwrap() {
            break st;
        }
        if !worker && signals.path().join("dequeuing").exists() {
            s.start_agent(0);
            worker = true;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = py.kill();
            let _ = py.wait();
            panic!(
                "ui.py did not finish within 300 s:\n{}\n{}",
                err.join().unwrap(),
                s.log("hub.log")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    eprintln!("{err}");
    assert!(status.success(), "ui.py failed:\n{err}\nhub log:\n{}", s.log("hub.log"));
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(worker, "the browser never saw DEQUEUING: {report}");
    for id in &running {
        assert_eq!(s.wait_job(*id, Duration::from_secs(60))["state"], "CANCELLED");
    }
    // The schedule made, changed and deleted in the editor is gone, and
    // the one run by hand still has its workflow.
    let made = report["edited_schedule"].as_i64().unwrap();
    s.api("GET", &format!("/api/schedules/{made}/"), None, 404);
    let subs = s.api("GET", &format!("/api/schedules/{sched_id}/workflows/"), None, 200);
    assert_eq!(subs["count"], 1, "{subs}");
    for name in ["jobs.png", "job.png", "health.png", "schedule.png"] {
        let p = shots.join(name);
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{}: {size} bytes", p.display());
    }
    // A log in refused is logged as the API's are.
    assert!(s.log("hub.log").contains("log in refused"), "{}", s.log("hub.log"));
    eprintln!("screenshots in {}", shots.display());
}
