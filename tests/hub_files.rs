//! Which files a job keeps rows for (`record_files`), dry runs, and files
//! still being written (`min_age`), on a real hub, broker and agent.

mod common;

use common::hub::{HubSite, sqlite};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `dirs` directories of `per_dir` files each; every file's bytes are its
/// name, so the tree's size is known. Returns the files' paths.
fn tree(root: &Path, dirs: usize, per_dir: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let p = dir.join(format!("f{f:02}"));
            std::fs::write(&p, format!("d{d}/f{f:02}")).unwrap();
            out.push(p);
        }
    }
    out
}

fn paths(page: &Value) -> BTreeSet<String> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

fn files(s: &HubSite, id: i64, category: &str) -> Value {
    s.api(
        "GET",
        &format!("/api/jobs/{id}/files/?category={category}&page_size=0"),
        None,
        200,
    )
}

/// A premigrate workflow with `patch` applied (record_files,
/// discovery_options): its name and id.
fn workflow(s: &HubSite, patch: Value) -> (String, Value) {
    let name = s.workflow("dynamo.tasks.migrate", json!({"premigrate": true}));
    let id = s.workflow_id(&name);
    let w = s.api("PATCH", &format!("/api/workflows/{id}/"), Some(patch.clone()), 200);
    for (k, v) in patch.as_object().unwrap() {
        assert_eq!(&w[k], v, "{w}");
    }
    (name, id)
}

#[test]
fn record_files_dry_runs_and_young_files_behave_as_documented() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    s.batch_size(7);
    let data = s.data();

    // record_files = all: every processed file has a row.
    let (all, all_id) = workflow(&s, json!({"record_files": "all"}));
    let root = data.join("all");
    let planted: BTreeSet<String> = tree(&root, 3, 10)
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let id = s.submit(&all, &root)["id"].as_i64().unwrap();
    let done = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["record_files"], "all", "{done}");
    assert_eq!(done["counts"]["processed"], 30, "{done}");
    let completed = files(&s, id, "completed");
    assert_eq!(completed["count"], 30, "{completed}");
    assert_eq!(paths(&completed), planted);
    assert_eq!(files(&s, id, "failed")["count"], 0);

    // The default (failures) and none, with two unreadable files: counts
    // are exact either way; only `failures` keeps their rows.
    let root = data.join("bad");
    let made = tree(&root, 2, 10);
    for p in &made[..2] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let bad: BTreeSet<String> = made[..2].iter().map(|p| p.to_str().unwrap().to_string()).collect();
    for (setting, rows) in [("failures", 2), ("none", 0)] {
        let (w, _) = workflow(&s, json!({"record_files": setting}));
        let id = s.submit(&w, &root)["id"].as_i64().unwrap();
        let done = s.wait_job(id, Duration::from_secs(60));
        assert_eq!(done["state"], "FAILURE", "{setting}: {done}");
        assert_eq!(done["counts"]["failures"], 2, "{setting}: {done}");
        // Premigrated by the first run, skipped by the second.
        let done_files = done["counts"]["processed"].as_i64().unwrap() + done["counts"]["skipped"].as_i64().unwrap();
        assert_eq!(done_files, 18, "{setting}: {done}");
        let failed = files(&s, id, "failed");
        assert_eq!(failed["count"], rows, "{setting}: {failed}");
        if rows > 0 {
            assert_eq!(paths(&failed), bad, "{setting}");
        }
        assert_eq!(files(&s, id, "completed")["count"], 0, "{setting}");
    }
    s.api(
        "PATCH",
        &format!("/api/workflows/{all_id}/"),
        Some(json!({"record_files": "some"})),
        400,
    );

    // A dry run: counts and bytes per rule, no action run.
    let root = data.join("dry");
    let made = tree(&root, 2, 5);
    let bytes: u64 = made.iter().map(|p| p.metadata().unwrap().len()).sum();
    let sub = json!({"workflow": all, "site": s.site, "paths": [root.to_str().unwrap()], "dry_run": true});
    let id = s.api("POST", "/api/file/workflow/", Some(sub), 201)["id"]
        .as_i64()
        .unwrap();
    let done = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["dry_run"], true, "{done}");
    assert_eq!(
        done["plan"],
        json!([{"rule": 0, "actions": ["dynamo.tasks.migrate"], "entries": 10, "bytes": bytes}]),
        "{done}"
    );
    assert_eq!(done["counts"]["processed"], 0, "{done}");
    let tasks = s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=0"), None, 200);
    let types: Vec<&str> = tasks["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tasktype"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["dynamo.tasks.recursive_navigate"], "{tasks}");
    // A dry run needs the recursive discovery.
    let sub = json!({"workflow": all, "site": s.site, "paths": [root.to_str().unwrap()],
                     "dry_run": true, "discovery": null});
    let e = s.api("POST", "/api/file/workflow/", Some(sub), 400);
    assert!(e.to_string().contains("dry_run"), "{e}");

    // min_age: files changed within the last 3 s are left alone and
    // reported as aborted, with the reason; the rest are processed.
    let (w, w_id) = workflow(&s, json!({"discovery_options": {"min_age": 3}}));
    let root = data.join("young");
    let made = tree(&root, 2, 5);
    std::thread::sleep(Duration::from_secs(4));
    for p in &made[..3] {
        std::fs::write(p, b"still being written").unwrap();
    }
    let young: BTreeSet<String> = made[..3].iter().map(|p| p.to_str().unwrap().to_string()).collect();
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    let done = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["counts"]["aborted"], 3, "{done}");
    assert_eq!(done["counts"]["processed"], 7, "{done}");
    let aborted = files(&s, id, "failed");
    assert_eq!(paths(&aborted), young, "{aborted}");
    for r in aborted["results"].as_array().unwrap() {
        assert_eq!(r["state"], "aborted", "{r}");
        assert!(r["message"].to_string().contains("min_age of 3 s"), "{r}");
    }
    s.api(
        "PATCH",
        &format!("/api/workflows/{w_id}/"),
        Some(json!({"discovery_options": {"min_age": -1}})),
        400,
    );
}
