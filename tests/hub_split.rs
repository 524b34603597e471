//! Distributed discovery: one job's walk split over four agents of a
//! site, on a real hub and broker, counted exactly, also when an agent
//! walking a piece is killed.

mod common;

use common::hub::{HubSite, sqlite};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// 20 × 10 directories of 1,000 files each (200,000 files), names with
/// a newline, a tab, quotes, a backslash, spaces and non-ASCII letters;
/// every file's path as the hub shows it.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in 0..20 {
        for b in 0..10 {
            let dir = root.join(format!("a{a:02} é")).join(format!("b{b}\nline"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..1000 {
                let name = match f % 4 {
                    0 => format!("f{f}"),
                    1 => format!("f{f}\twith \"quotes\""),
                    2 => format!("f{f}\\back slash"),
                    _ => format!("-f{f}ü"),
                };
                let p = dir.join(name);
                std::fs::write(&p, b"x").unwrap();
                out.insert(p.to_str().unwrap().to_string());
            }
        }
    }
    out
}

/// A site of four agents that split walks at once, and a workflow that
/// stats every file and keeps a row of each.
fn site() -> (HubSite, String) {
    let mut s = HubSite::new(sqlite(), 4, "");
    s.agent_settings("walk_split_after = 0\nwalk_threads = 4");
    s.start_hub();
    for i in 0..4 {
        s.start_agent(i);
    }
    s.wait_online(4, Duration::from_secs(30));
    s.batch_size(100);
    let name = s.workflow("dynamo.tasks.stat_paths", json!({}));
    let id = s.workflow_id(&name);
    s.api(
        "PATCH",
        &format!("/api/workflows/{id}/"),
        Some(json!({"record_files": "all"})),
        200,
    );
    (s, name)
}

/// The job's walks: (counted discovery tasks, nodes that ran one).
fn walks(s: &HubSite, id: i64) -> Vec<Value> {
    s.api(
        "GET",
        &format!("/api/tasks/?job_id={id}&tasktype=dynamo.tasks.recursive_navigate&page_size=0"),
        None,
        200,
    )["results"]
        .as_array()
        .unwrap()
        .clone()
}

/// Checks that job `id` ended with exactly `files` found, processed and
/// recorded, by more than one walk on more than one node.
fn check(s: &HubSite, id: i64, files: &BTreeSet<String>) -> Value {
    let done = s.wait_job(id, Duration::from_secs(600));
    let c = &done["counts"];
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["dir_walk_complete"], true, "{done}");
    assert_eq!(c["files_found"], files.len(), "{done}");
    assert_eq!(c["processed"], files.len(), "{done}");
    assert_eq!(c["results_expected"], c["results_counted"], "{done}");
    let walks = walks(s, id);
    let nodes: BTreeSet<&str> = walks.iter().filter_map(|w| w["node"].as_str()).collect();
    assert!(
        walks.len() > 1 && nodes.len() > 1,
        "the walk was not split: {} walks on {nodes:?}",
        walks.len()
    );
    let page = s.api(
        "GET",
        &format!("/api/jobs/{id}/files/?category=completed&page_size=0"),
        None,
        200,
    );
    let recorded: BTreeSet<String> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(recorded == *files, "the recorded paths differ from the tree's");
    done
}

#[test]
fn a_walk_split_over_four_agents_batches_every_file_once_even_when_one_is_killed() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let (mut s, workflow) = site();
    let root = s.data().join("tree");
    let files = tree(&root);

    // Four agents, none lost: every file in exactly one counted batch.
    let id = s.submit(&workflow, &root)["id"].as_i64().unwrap();
    let done = check(&s, id, &files);
    assert_eq!(done["counts"]["results_orphaned"], 0, "{done}");

    // Again, and an agent that walks a piece is killed mid-walk: its
    // pieces go back to the queue and the others walk them. The hub's
    // STARTED can be stale, so the walker is stopped first and killed only
    // if its log shows the piece unfinished: it logs a task's end before
    // it acks it, so the piece is then surely unacknowledged.
    let id = s.submit(&workflow, &root)["id"].as_i64().unwrap();
    let t0 = Instant::now();
    let (victim, piece) = loop {
        let started = walks(&s, id)
            .into_iter()
            .skip(1)
            .find(|w| w["state"] == "STARTED" && w["node"].is_string());
        if let Some(w) = started {
            let node = w["node"].as_str().unwrap().to_string();
            let victim = (0..4).find(|i| node.ends_with(&format!("-n{i}"))).unwrap();
            let piece = w["task_id"].as_str().unwrap().to_string();
            s.signal_agent(victim, "STOP");
            let log = s.log(&format!("agent{victim}.log"));
            let ended = [
                format!("task succeeded id={piece} "),
                format!("task failed id={piece} "),
            ];
            if !ended.iter().any(|e| log.contains(e.as_str())) {
                break (victim, piece);
            }
            s.signal_agent(victim, "CONT");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no piece was caught mid-walk: {}",
            s.job(id)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    s.stop_agent(victim, true);
    check(&s, id, &files);
    // The piece the victim was walking is walked again by another agent.
    // When the victim also ran the walk that sent it, the piece is an
    // orphan of that lost execution (the walk's rerun sends new pieces):
    // it still runs, but the job can end before it does.
    let again = format!("task started id={piece} ");
    let t0 = Instant::now();
    while !(0..4)
        .filter(|i| *i != victim)
        .any(|i| s.log(&format!("agent{i}.log")).contains(&again))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "piece {piece} was not walked again after agent {victim} was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
