//! A job without discovery (`discovery: null`): the hub applies the
//! workflow's filter rules to the input paths itself (with the agent's
//! rule code), cuts batches by the site's `file_batch_size`, and publishes
//! the action tasks; their results complete the job.

mod common;

use common::hub::{HubSite, sqlite};
use serde_json::json;
use std::time::Duration;

#[test]
fn a_job_without_discovery_runs_the_rules_in_the_hub() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    s.batch_size(2);
    let data = s.data();
    let names = ["a", "b.tmp", "c", "d", "e"];
    for n in names {
        std::fs::write(data.join(n), n).unwrap();
    }
    s.api(
        "POST",
        "/api/workflows/",
        Some(json!({"name": "stat_some", "label": "Stat", "discovery": null,
            "filter_rules": [{"state": "all", "type": "file", "exclude": ["*.tmp"],
                              "action": [{"name": "dynamo.tasks.stat_paths"}]}]})),
        201,
    );
    let paths: Vec<String> = names.iter().map(|n| data.join(n).display().to_string()).collect();
    let job = s.api(
        "POST",
        "/api/file/workflow/",
        Some(json!({"workflow": "stat_some", "site": s.site, "paths": paths})),
        201,
    );
    assert_eq!(job["discovery"], serde_json::Value::Null);
    // 4 paths the rule takes, 2 per batch: 2 tasks, published by the hub.
    assert_eq!(job["counts"]["roots"], 2, "{job}");
    assert_eq!(job["dir_walk_complete"], true);
    let id = job["id"].as_i64().unwrap();
    let j = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(j["state"], "SUCCESS", "{j}");
    assert_eq!(j["counts"]["processed"], 4, "{j}");
    assert_eq!(j["counts"]["results_counted"], 2);
    let tasks = s.api("GET", &format!("/api/tasks/?job_id={id}"), None, 200);
    assert_eq!(
        tasks["stats"]["tasktype"],
        json!({"dynamo.tasks.stat_paths": 2}),
        "{tasks}"
    );
    // A submission none of whose paths any rule takes ends at once.
    let only_tmp = s.api(
        "POST",
        "/api/file/workflow/",
        Some(json!({"workflow": "stat_some", "site": s.site, "paths": [data.join("b.tmp")]})),
        201,
    );
    assert_eq!(only_tmp["state"], "SUCCESS", "{only_tmp}");
    assert_eq!(only_tmp["counts"]["roots"], 0);
}

#[test]
fn a_submission_within_a_running_job_joins_it_and_an_ended_job_takes_none() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 1, "");
    s.start_hub();
    s.create_site(&s.site);
    s.batch_size(2);
    let data = s.data();
    for n in ["a", "b", "c"] {
        std::fs::write(data.join(n), n).unwrap();
    }
    std::fs::create_dir(data.join("tree")).unwrap();
    for n in 0..5 {
        std::fs::write(data.join("tree").join(format!("f{n}")), "x").unwrap();
    }
    let stat = s.workflow("dynamo.tasks.stat_paths", json!({}));
    // No agent yet: the job waits, PENDING.
    let paths: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| data.join(n).display().to_string())
        .collect();
    let first = s.api(
        "POST",
        "/api/file/workflow/",
        Some(json!({"workflow": stat, "site": s.site, "paths": paths, "discovery": null})),
        201,
    );
    let id = first["id"].as_i64().unwrap();
    assert_eq!(
        (first["state"].as_str(), first["counts"]["roots"].as_i64()),
        (Some("PENDING"), Some(2))
    );
    // A walk of the tree joins it: one more root, and the walk not done.
    let joined = s.api(
        "POST",
        "/api/file/workflow/",
        Some(json!({"workflow": stat, "site": s.site, "paths": [data.join("tree")], "job": id})),
        201,
    );
    assert_eq!(joined["id"], id, "{joined}");
    assert_eq!(joined["counts"]["roots"], 3, "{joined}");
    assert_eq!(joined["dir_walk_complete"], false, "{joined}");
    assert_eq!(s.api("GET", "/api/jobs/", None, 200)["count"], 1);
    s.start_agent(0);
    let j = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(j["state"], "SUCCESS", "{j}");
    // 3 files in 2 batches, and the walk with its 3 batches of 5 files.
    assert_eq!(j["counts"]["processed"], 8, "{j}");
    assert_eq!(j["counts"]["results_counted"], 6, "{j}");
    for (job, want) in [
        (json!(id), "has ended (SUCCESS)"),
        (json!(999_999), "job: no job 999999"),
    ] {
        let e = s.api(
            "POST",
            "/api/file/workflow/",
            Some(json!({"workflow": stat, "site": s.site, "paths": [data.join("a")], "job": job})),
            400,
        );
        assert!(e["detail"].as_str().unwrap().contains(want), "{e}");
    }
    assert_eq!(s.api("GET", &format!("/api/tasks/?job_id={id}"), None, 200)["count"], 6);
}
