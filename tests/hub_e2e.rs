//! The hub end to end on real components: RabbitMQ, two `ferry agent`
//! processes of one site, `ferry hub serve` on SQLite and on PostgreSQL,
//! driven by a Python `requests` client that uses only the seed's paths
//! and fields (tests/hub/e2e.py).

mod common;

use common::hub::{HubSite, both};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `dirs` directories of `per_dir` one-line files under `root`.
fn tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}\n")).unwrap();
        }
    }
}

#[test]
fn a_recursive_premigrate_runs_through_two_agents_on_both_engines() {
    if !common::agent::broker_or_skip() {
        return;
    }
    for db in both() {
        let engine = db.engine;
        let s = HubSite::running(db, 2, "");
        // 10,000 files, 5 of them unreadable to the agents.
        let root = s.data().join("tree");
        tree(&root, 20, 500);
        let bad: Vec<_> = (0..5).map(|i| root.join(format!("d{:03}/f0007", i * 3))).collect();
        for b in &bad {
            std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        // Batches of 80, fixed: 125 of them or more (a walk split between
        // the agents ends a batch per piece) and the discovery make more
        // than one page of 100 (the dynamic sizing would make 62 tasks).
        s.batch_size(80);
        let out = s.python("e2e.py", &[root.to_str().unwrap()]);
        let job = &out["job"];
        let counts = &job["counts"];
        assert_eq!(job["state"], "FAILURE", "{engine}: {job}");
        assert_eq!(counts["files_found"], 10_000, "{engine}: {job}");
        assert_eq!(
            counts["processed"].as_i64().unwrap() + counts["failures"].as_i64().unwrap(),
            10_000,
            "{engine}"
        );
        assert_eq!(counts["failures"], 5, "{engine}");
        assert_eq!(counts["results_counted"], counts["results_expected"], "{engine}");
        assert_eq!(job["dir_walk_complete"], true);
        let tasks = out["pages"]["0"]["count"].as_i64().unwrap();
        assert!(tasks > 101, "{engine}: {tasks} tasks");
        assert_eq!(out["pages"]["19"]["results"], 20, "{engine}: page_size 19 → 20");
        assert_eq!(out["pages"]["101"]["results"], 100, "{engine}: page_size 101 → 100");
        assert_eq!(
            out["pages"]["0"]["results"].as_i64(),
            Some(tasks),
            "{engine}: page_size 0 → all"
        );
        assert_eq!(out["pages"]["0"]["next"], Value::Null);
        assert!(
            out["pages"]["19"]["next"].as_str().unwrap().starts_with(&s.url),
            "{}",
            out["pages"]["19"]
        );
        assert_eq!(
            out["pages"]["0"]["stats"]["state"]["ERROR"], 5,
            "{engine}: {}",
            out["pages"]["0"]["stats"]
        );
        keyset_walk(engine, &out["keyset"], tasks, job["tasks_count"].as_i64().unwrap());
        let failures = out["failures"].as_array().unwrap();
        let mut paths: Vec<&str> = failures.iter().map(|f| f["path"].as_str().unwrap()).collect();
        paths.sort_unstable();
        let want: Vec<String> = bad.iter().map(|b| b.display().to_string()).collect();
        assert_eq!(paths, want, "{engine}");
        for f in failures {
            assert_eq!(f["code"], "EACCES", "{engine}: {f}");
            assert!(f["message"][0].as_str().unwrap().contains("Permission denied"), "{f}");
        }
        // Both agents took part.
        for i in 0..2 {
            assert!(
                s.log(&format!("agent{i}.log")).contains("task succeeded"),
                "{engine}: agent {i} ran nothing"
            );
        }
        // And a clean tree succeeds.
        let clean = s.data().join("clean");
        tree(&clean, 2, 30);
        let out = s.python("e2e.py", &[clean.to_str().unwrap()]);
        assert_eq!(out["job"]["state"], "SUCCESS", "{engine}: {}", out["job"]);
        assert_eq!(out["job"]["counts"]["processed"], 60, "{engine}");
        assert_eq!(out["failures"], serde_json::json!([]));
    }
}

/// What e2e.py saw walking the job's `tasks` tasks 20 at a time with
/// `after=` (following `next`): every task exactly once, in id order, as
/// the whole list has them; full pages but the last; `next` links that
/// carry `after` and no `page`; `count` on every page the job's task
/// counters' (its `tasks_count`), not the rows after `after`; a bad
/// `after` (or one with `page`) refused with 400.
fn keyset_walk(engine: &str, k: &Value, tasks: i64, counted: i64) {
    let all: Vec<i64> = k["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(all.len() as i64, tasks, "{engine}: page_size=0 lists every task");
    let pages: Vec<Vec<i64>> = k["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
        .collect();
    let walked: Vec<i64> = pages.concat();
    assert_eq!(walked, all, "{engine}: keyset pages give every task once, by id");
    assert_eq!(pages.len() as i64, (tasks + 19) / 20, "{engine}: pages of 20");
    let (last, full) = pages.split_last().unwrap();
    assert!(
        full.iter().all(|p| p.len() == 20),
        "{engine}: every page but the last is full"
    );
    assert!(
        !last.is_empty() && last.len() <= 20,
        "{engine}: last page {}",
        last.len()
    );
    let links = k["links"].as_array().unwrap();
    for (i, link) in links.iter().enumerate() {
        match link.as_str() {
            Some(l) => {
                assert!(
                    l.contains(&format!("after={}", pages[i][19])) && !l.contains("page="),
                    "{engine}: next of page {i}: {l}"
                );
                assert!(l.contains("page_size=20"), "{engine}: {l}");
            }
            None => assert_eq!(i, links.len() - 1, "{engine}: only the last page has no next"),
        }
    }
    assert!(
        k["counts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.as_i64() == Some(counted)),
        "{engine}: {}",
        k["counts"]
    );
    assert!(k["previous"].as_array().unwrap().iter().all(Value::is_null), "{engine}");
    for bad in ["x", "-1", "1.5"] {
        assert_eq!(k["refused"][bad], 400, "{engine}: after={bad}");
    }
    assert_eq!(k["with_page"], 400, "{engine}: after with page");
}
