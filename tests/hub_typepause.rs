//! Pausing one task type cluster-wide on real components: a hub, two
//! agents and RabbitMQ. While `dynamo.tasks.delete_paths_from_gpfs` is
//! paused, a job whose rules run it and `dynamo.tasks.stat_paths` stats
//! its files but deletes none: every delete task waits in the type's
//! parking queue (never started, so the hub has no record of it, only
//! the results it still expects); resumed, the job ends SUCCESS with exact counts.
//! A job cancelled while its tasks are parked by type ends CANCELLED once
//! the type resumes.

mod common;

use common::agent::depth;
use common::hub::{HubSite, sqlite};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const DELETE: &str = "dynamo.tasks.delete_paths_from_gpfs";
const STAT: &str = "dynamo.tasks.stat_paths";

/// `n` files `k<i>.keep` and `n` files `d<i>.del` in `root`.
fn files(root: &Path, n: usize) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..n {
        std::fs::write(root.join(format!("k{i:03}.keep")), b"x").unwrap();
        std::fs::write(root.join(format!("d{i:03}.del")), b"x").unwrap();
    }
}

fn dels(root: &Path) -> usize {
    std::fs::read_dir(root)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".del"))
        .count()
}

/// A workflow statting `*.keep` files and deleting `*.del` ones.
fn stat_and_delete(s: &HubSite) -> String {
    let name = format!("w{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    s.api(
        "POST",
        "/api/workflows/",
        Some(
            json!({"name": name, "label": name, "discovery": "recursive", "filter_rules": [
            {"state": "all", "type": "file", "include": ["*.keep"], "action": [{"name": STAT}]},
            {"state": "all", "type": "file", "include": ["*.del"], "action": [{"name": DELETE}]}]}),
        ),
        201,
    );
    name
}

/// How many of job `id`'s tasks named `task` are in `states` (any, when
/// empty).
fn tasks_in(s: &HubSite, id: i64, task: &str, states: &[&str]) -> i64 {
    let q: String = states.iter().map(|st| format!("&state={st}")).collect();
    s.api("GET", &format!("/api/tasks/?job_id={id}&tasktype={task}{q}"), None, 200)["count"]
        .as_i64()
        .unwrap()
}

fn tasktype(s: &HubSite, name: &str) -> Value {
    let all = s.api("GET", "/api/tasktypes/?page_size=0", None, 200);
    all["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {all}"))
        .clone()
}

fn started_site() -> HubSite {
    let s = HubSite::running(sqlite(), 2, "");
    s.batch_size(10);
    s
}

/// Pauses the delete type with `reason`; checks the answer.
fn pause_deletes(s: &HubSite, reason: &str) {
    let p = s.api(
        "POST",
        &format!("/api/tasktypes/{DELETE}/pause/"),
        Some(json!({"reason": reason})),
        201,
    );
    assert_eq!(
        (p["name"].as_str(), p["paused"].as_bool(), p["reason"].as_str()),
        (Some(DELETE), Some(true), Some(reason)),
        "{p}"
    );
    // Every agent has been told before the job's tasks reach it.
    for log in ["agent0.log", "agent1.log"] {
        let t0 = Instant::now();
        while !s.log(log).contains("pause received") {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{log}: no pause:\n{}",
                s.log(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_paused_task_type_starts_no_task_of_any_job_until_resumed_then_the_job_completes_exactly() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = started_site();
    let root = s.data().join("tree");
    files(&root, 100);
    let park = format!("{}.hub.parked.tasktype.{DELETE}", s.site);

    // Every task type is listed, none paused; unknown names are 404.
    let all = s.api("GET", "/api/tasktypes/?page_size=0", None, 200);
    assert_eq!(all["count"], ferry::task::TaskName::ALL.len(), "{all}");
    assert!(
        all["results"].as_array().unwrap().iter().all(|t| t["paused"] == false),
        "{all}"
    );
    s.api("POST", "/api/tasktypes/dynamo.tasks.nope/pause/", Some(json!({})), 404);
    s.api("GET", "/api/tasktypes/dynamo.tasks.nope/", None, 404);
    let r = s.api("POST", &format!("/api/tasktypes/{STAT}/resume/"), None, 409);
    assert_eq!(r["state"], "RUNNING", "{r}");

    pause_deletes(&s, "disk swap");
    let again = s.api(
        "POST",
        &format!("/api/tasktypes/{DELETE}/pause/"),
        Some(json!({"reason": "twice"})),
        409,
    );
    assert_eq!(again["state"], "PAUSED", "{again}");
    assert!(again["detail"].as_str().unwrap().contains("paused already"), "{again}");
    assert_eq!(
        tasktype(&s, DELETE)["reason"],
        "disk swap",
        "the second pause changed the first"
    );

    let w = stat_and_delete(&s);
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    // The stat tasks run to the end (100 files in batches of 10); the
    // delete tasks wait, parked, and none ever starts.
    let t0 = Instant::now();
    let j = loop {
        assert_eq!(tasks_in(&s, id, DELETE, &[]), 0, "a delete task started");
        let j = s.job(id);
        if j["counts"]["processed"] == 100 && tasks_in(&s, id, STAT, &["SUCCESS"]) == 10 {
            break j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the stat tasks did not end: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(j["dir_walk_complete"], true, "{j}");
    let c = &j["counts"];
    let deletes = c["results_expected"].as_i64().unwrap() - c["results_counted"].as_i64().unwrap();
    assert_eq!(
        deletes, 10,
        "the root and 10 stat tasks counted, 10 delete tasks awaited: {j}"
    );
    let t0 = Instant::now();
    while depth(&park) < deletes as u32 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} of {deletes} parked",
            depth(&park)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Held for a while: nothing of the type starts, no file is deleted.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(depth(&park), deletes as u32);
    assert_eq!(tasks_in(&s, id, DELETE, &[]), 0, "a delete task started");
    assert_eq!(dels(&root), 100, "a paused delete deleted");
    let later = s.job(id);
    assert_eq!(later["state"], "STARTED", "{later}");
    assert_eq!(later["counts"], j["counts"], "work was done while paused");
    let listed = tasktype(&s, DELETE);
    assert_eq!(listed["parked"], deletes, "{listed}");
    assert!(listed["since"].is_string(), "{listed}");

    let r = s.api("POST", &format!("/api/tasktypes/{DELETE}/resume/"), None, 201);
    assert_eq!(r["paused"], false, "{r}");
    let r = s.api("POST", &format!("/api/tasktypes/{DELETE}/resume/"), None, 409);
    assert_eq!(r["state"], "RUNNING", "{r}");

    let done = s.wait_job(id, Duration::from_secs(120));
    let c = &done["counts"];
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(c["processed"], 200, "{done}");
    assert_eq!(c["failures"], 0, "{done}");
    assert_eq!(c["results_counted"], c["results_expected"], "{done}");
    assert_eq!(tasks_in(&s, id, DELETE, &["SUCCESS"]), deletes);
    assert_eq!(dels(&root), 0, "the resumed deletes did not run");
    assert_eq!(depth(&park), 0, "tasks left parked");
    assert_eq!(tasktype(&s, DELETE)["parked"], 0);
}

#[test]
fn a_job_cancelled_while_its_tasks_are_parked_by_type_ends_cancelled_once_the_type_resumes() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = started_site();
    let root = s.data().join("tree");
    files(&root, 50);
    let park = format!("{}.hub.parked.tasktype.{DELETE}", s.site);
    pause_deletes(&s, "audit");
    let id = s.submit(&stat_and_delete(&s), &root)["id"].as_i64().unwrap();
    let t0 = Instant::now();
    while depth(&park) < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} parked: {}",
            depth(&park),
            s.job(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let j = s.api("POST", &format!("/api/jobs/{id}/cancel/"), None, 201);
    assert_eq!(j["state"], "DEQUEUING", "{j}");
    // It waits for the type: its parked tasks are not accounted for yet.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.job(id)["state"], "DEQUEUING");
    assert_eq!(depth(&park), 5);

    s.api("POST", &format!("/api/tasktypes/{DELETE}/resume/"), None, 201);
    let done = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(done["state"], "CANCELLED", "{done}");
    let c = &done["counts"];
    assert_eq!(c["results_counted"], c["results_expected"], "{done}");
    assert_eq!(tasks_in(&s, id, DELETE, &["CANCELLED"]), 5, "{done}");
    assert_eq!(tasks_in(&s, id, DELETE, &[]), 5, "a delete task ran");
    assert_eq!(dels(&root), 50, "a cancelled job's delete ran");
    assert_eq!(depth(&park), 0, "tasks left parked");
}
