//! Retries and error categories on real components: a step with
//! `max_tries` whose endpoint is away for 20 s is tried again with backoff
//! and the job ends SUCCESS with exact counts; a permanent error (EACCES)
//! fails at once, shown with its category.

mod common;

use common::hub::{HubSite, sqlite};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn tree(root: &std::path::Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}\n")).unwrap();
        }
    }
}

/// Every task of job `id`.
fn tasks(s: &HubSite, id: i64) -> Vec<Value> {
    s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=0"), None, 200)["results"]
        .as_array()
        .unwrap()
        .clone()
}

/// How many of `tasks` ran the migrate step (first tries and retries).
fn migrates(tasks: &[Value]) -> usize {
    tasks.iter().filter(|t| t["tasktype"] == "dynamo.tasks.migrate").count()
}

#[test]
fn an_unreachable_endpoint_is_retried_until_it_returns_and_a_permanent_error_fails_at_once() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 1, "");
    s.start_hub();
    // The endpoint's directory is away when the agent first needs it.
    let archive = s.dir.path().join("archive");
    let away = s.dir.path().join("archive.away");
    std::fs::rename(&archive, &away).unwrap();
    s.start_agent(0);
    s.wait_online(1, Duration::from_secs(20));
    s.batch_size(50);
    let root = s.data().join("tree");
    tree(&root, 4, 50);
    let w = s.workflow(
        "dynamo.tasks.migrate",
        serde_json::json!({"premigrate": true, "max_tries": 6}),
    );
    let t0 = Instant::now();
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    // Back after 20 s: tries at +2, +6, +14 s fail, the one at +30 s works.
    std::thread::sleep(Duration::from_secs(20));
    let early = s.job(id);
    assert!(
        !["SUCCESS", "FAILURE"].contains(&early["state"].as_str().unwrap()),
        "the job ended while the endpoint was away: {early}"
    );
    std::fs::rename(&away, &archive).unwrap();
    let done = s.wait_job(id, Duration::from_secs(120));
    assert_eq!(done["state"], "SUCCESS", "{done}\n{}", s.log("agent0.log"));
    assert_eq!(done["counts"]["processed"], 200, "{done}");
    assert_eq!(done["counts"]["failures"], 0, "{done}");
    assert!(t0.elapsed() >= Duration::from_secs(20));
    // 4 batches of 50, each tried at least four times (three failed tries
    // within the 20 s, the one that worked after).
    let all = tasks(&s, id);
    assert!(migrates(&all) >= 16, "{} migrate tasks: {all:?}", migrates(&all));
    let first = all.iter().find(|t| t["tasktype"] == "dynamo.tasks.migrate").unwrap();
    let one = s.api("GET", &format!("/api/tasks/{}/", first["id"]), None, 200);
    assert_eq!(one["result"]["status"]["summary"]["retried"], 50, "{one}");
    assert_eq!(one["children_count"], 1, "{one}");
    assert_eq!(done["counts"]["results_counted"], done["counts"]["results_expected"]);

    // A file nobody may read: EACCES fails at once, categorised permanent,
    // although tries remain.
    let bad = root.join("d00/f007");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o000)).unwrap();
    let root2 = s.data().join("tree");
    let id = s.submit(&w, &root2)["id"].as_i64().unwrap();
    let done = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(done["state"], "FAILURE", "{done}");
    assert_eq!(done["counts"]["failures"], 1, "{done}");
    assert_eq!(migrates(&tasks(&s, id)), 4, "a permanent error was retried");
    let f = s.api("GET", &format!("/api/jobstats/?job={id}&state[]=failures"), None, 200);
    let r = &f["results"][0];
    assert_eq!(r["path"], bad.to_str().unwrap(), "{f}");
    assert_eq!(r["code"], "EACCES", "{f}");
    assert_eq!(r["category"], "permanent", "{f}");

    // The job's files by category, and the task's own.
    let failed = s.api("GET", &format!("/api/jobs/{id}/files/"), None, 200);
    assert_eq!(failed["count"], 1, "{failed}");
    assert_eq!(failed["results"][0]["path"], bad.to_str().unwrap());
    let all = s.api(
        "GET",
        &format!("/api/jobs/{id}/files/?category=failed&page_size=0"),
        None,
        200,
    );
    assert_eq!(all["results"].as_array().map(Vec::len), Some(1), "{all}");
    for category in ["completed", "queued"] {
        let none = s.api("GET", &format!("/api/jobs/{id}/files/?category={category}"), None, 200);
        assert_eq!(none["count"], 0, "{category}: {none}");
    }
    s.api("GET", &format!("/api/jobs/{id}/files/?category=bogus"), None, 400);
    let task = r["task"].as_str().unwrap();
    let tf = s.api("GET", &format!("/api/tasks/{task}/files/?page_size=1000"), None, 200);
    assert_eq!(tf["count"], 1, "{tf}");
    assert_eq!(tf["results"][0]["state"], "failures", "{tf}");
    assert_eq!(tf["results"][0]["path"], bad.to_str().unwrap(), "{tf}");
}
