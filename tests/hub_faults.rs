//! The hub under faults, on real components: nodes that stop
//! heart-beating, a hub killed while results stream, an agent killed
//! mid-walk, and a plain Celery client driving the same agents.

mod common;

use common::agent::depth;
use common::hub::{HubSite, sqlite};
use std::path::Path;
use std::time::{Duration, Instant};

fn tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:05}")), b"x").unwrap();
        }
    }
}

/// Two agents and a hub, and a job of `dynamo.tasks.stat_paths` on
/// 100,000 files in batches of 20 (5,000 tasks and the discovery, which
/// is never split: tests/hub_split.rs splits walks).
fn big_job() -> (HubSite, i64) {
    let mut s = HubSite::new(sqlite(), 2, "");
    s.agent_settings("walk_split_after = off");
    let id = submit_big(&mut s);
    (s, id)
}

/// Starts the hub and agents 0 and 1 of `s`, and submits the job of
/// [`big_job`]; its id.
fn submit_big(s: &mut HubSite) -> i64 {
    s.start_hub();
    s.start_agent(0);
    s.start_agent(1);
    s.wait_online(2, Duration::from_secs(20));
    s.batch_size(20);
    let root = s.data().join("big");
    tree(&root, 50, 2000);
    let w = s.workflow("dynamo.tasks.stat_paths", serde_json::json!({}));
    let job = s.submit(&w, &root);
    assert_eq!(job["queue_nodes_online"], 2, "{job}");
    job["id"].as_i64().unwrap()
}

/// The node names the health answer shows online, and the site's health.
fn online(s: &HubSite) -> (Vec<String>, String) {
    let site = s.site_health();
    let names = site["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["online"] == true)
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    (names, site["health"].as_str().unwrap_or("").to_string())
}

#[test]
fn nodes_that_stop_beating_go_offline_and_the_site_degrades() {
    let _shared = common::agent::control_shared();
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::running(sqlite(), 2, "node_health_last_heartbeat_interval = 5");
    assert_eq!(online(&s).1, "ok");
    // Killed: no goodbye, only silence.
    s.stop_agent(0, true);
    let t0 = Instant::now();
    while online(&s).0.len() != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(7),
            "node 0 still online after 7 s: {}",
            s.site_health()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (names, health) = online(&s);
    assert_eq!(names, [format!("ferry@{}-n1", s.site)]);
    assert_eq!(health, "warning");
    assert_eq!(s.health()["overall_health"], "warning");
    s.stop_agent(1, false);
    let t0 = Instant::now();
    while !online(&s).0.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(7),
            "node 1 still online after 7 s: {}",
            s.site_health()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(online(&s).1, "critical");
    assert_eq!(s.health()["overall_health"], "critical");
    // Back again.
    s.start_agent(0);
    s.wait_online(1, Duration::from_secs(10));
    assert_eq!(online(&s).1, "warning");

    // A node shown in another site until its next heartbeat.
    let other = format!("{}x", s.site);
    s.create_site(&other);
    let nodes = s.api("GET", "/api/nodes/?page_size=0", None, 200);
    let name = format!("ferry@{}-n0", s.site);
    let node = nodes["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{nodes}"));
    let path = format!("/api/nodes/{}/", node["id"]);
    let moved = s.api(
        "PATCH",
        &path,
        Some(serde_json::json!({"site": other, "name": name})),
        200,
    );
    assert_eq!(moved["site"], other.as_str(), "{moved}");
    let t0 = Instant::now();
    while s.api("GET", &path, None, 200)["site"] != s.site.as_str() {
        assert!(t0.elapsed() < Duration::from_secs(5), "no heartbeat set the site back");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (body, want) in [
        (serde_json::json!({"name": "ferry@elsewhere"}), "name: a node's name"),
        (serde_json::json!({"site": "nope"}), "site: no site named \"nope\""),
        (serde_json::json!({"online": false}), "unknown field `online`"),
    ] {
        let e = s.api("PATCH", &path, Some(body), 400);
        assert!(e["detail"].as_str().unwrap().contains(want), "{e}");
    }
    s.api(
        "PATCH",
        "/api/nodes/999999/",
        Some(serde_json::json!({"site": other})),
        404,
    );
}

#[test]
fn a_hub_killed_three_times_while_results_stream_counts_every_file_once() {
    let _shared = common::agent::control_shared();
    if !common::agent::broker_or_skip() {
        return;
    }
    let (mut s, id) = big_job();
    let mut seen = 0;
    for round in 0..3 {
        // Kill once more results have been counted since the last restart.
        let t0 = Instant::now();
        loop {
            let got = s.job(id)["counts"]["results_counted"].as_i64().unwrap_or(0);
            if got > seen {
                seen = got;
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "round {round}: no progress: {}",
                s.log("hub.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s.kill_hub();
        std::thread::sleep(Duration::from_millis(300));
        s.start_hub();
    }
    let j = s.wait_job(id, Duration::from_secs(300));
    let c = &j["counts"];
    assert_eq!(j["state"], "SUCCESS", "{j}");
    assert_eq!(c["files_found"], 100_000, "{j}");
    assert_eq!(c["processed"], 100_000, "{j}");
    assert_eq!(c["failures"], 0);
    assert_eq!(c["results_counted"], c["results_expected"]);
    // 100,000 / 20 children and the discovery.
    assert_eq!(c["results_expected"], 5_001, "{j}");
    assert!(s.log("hub.log").matches("ferry hub starting").count() >= 4);

    // All its tasks at once (page_size=0): written while read, in chunks
    // (no length is known before), each row once, the counts after them.
    let out = std::process::Command::new("curl")
        .args(["-sk", "-i", "-H", &format!("Authorization: Api-Key {}", s.key())])
        .arg(format!("{}/api/tasks/?job_id={id}&page_size=0", s.url))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("transfer-encoding: chunked") && !head.contains("content-length"),
        "{head}"
    );
    let all: serde_json::Value = serde_json::from_str(body).unwrap();
    let ids: std::collections::BTreeSet<i64> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!((all["count"].as_i64(), ids.len()), (Some(5_001), 5_001));
    assert_eq!(all["stats"]["state"]["SUCCESS"], 5_001, "{}", all["stats"]);
    assert_eq!(
        (&all["next"], &all["previous"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
    s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=0&page=2"), None, 404);
    let jobs = s.api("GET", "/api/jobs/?page_size=0", None, 200);
    assert_eq!(jobs["results"][0]["id"], id, "{jobs}");
    assert_eq!(
        (jobs["count"].as_i64(), jobs["owners"].as_array().map(Vec::len)),
        (Some(1), Some(1)),
        "{jobs}"
    );
}

#[test]
fn an_agent_killed_mid_walk_leaves_exact_counts() {
    let _shared = common::agent::control_shared();
    if !common::agent::broker_or_skip() {
        return;
    }
    let (mut s, id) = big_job();
    // Which node walks: the discovery's row says once it started.
    let t0 = Instant::now();
    let node = loop {
        let t = s.api(
            "GET",
            &format!("/api/tasks/?job_id={id}&tasktype=dynamo.tasks.recursive_navigate"),
            None,
            200,
        );
        if let Some(n) = t["results"][0]["node"].as_str() {
            break n.to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the discovery did not start: {t}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let walker = (0..2).find(|i| node.ends_with(&format!("-n{i}"))).unwrap();
    // Some children have been sent: kill it mid-walk.
    let t0 = Instant::now();
    while s.job(id)["counts"]["results_counted"].as_i64().unwrap_or(0) == 0
        && s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=20"), None, 200)["count"]
            .as_i64()
            .unwrap()
            < 3
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    s.stop_agent(walker, true);
    assert_eq!(
        s.job(id)["dir_walk_complete"],
        false,
        "the walk ended before the kill: make the tree bigger"
    );
    s.start_agent(walker);
    let j = s.wait_job(id, Duration::from_secs(300));
    let c = &j["counts"];
    assert_eq!(j["state"], "SUCCESS", "{j}");
    assert_eq!(c["files_found"], 100_000, "{j}");
    assert_eq!(c["processed"], 100_000, "{j}");
    let walk = s.api(
        "GET",
        &format!("/api/tasks/?job_id={id}&tasktype=dynamo.tasks.recursive_navigate"),
        None,
        200,
    );
    let walk = s.api("GET", &format!("/api/tasks/{}/", walk["results"][0]["id"]), None, 200);
    assert_eq!(c["results_expected"], 5_001, "{j}\n{walk}");
    assert_eq!(c["results_counted"], 5_001, "{j}");
    // The first walk's children came back and were not counted.
    assert!(c["results_orphaned"].as_i64().unwrap() > 0, "{j}");
}

#[test]
fn a_celery_client_drives_the_same_agents_and_the_hub_records_none_of_it() {
    let _shared = common::agent::control_shared();
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::running(sqlite(), 1, "");
    let root = s.data().join("small");
    tree(&root, 2, 10);
    let spec = serde_json::json!({
        "broker": common::agent::BROKER,
        "queue": format!("{}.default#discovery", s.site),
        "kwargs": {"paths": [root.to_str().unwrap()],
                   "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}]},
        "timeout": 120,
    });
    let out = common::agent::python(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agent/client.py"),
        &[&spec.to_string()],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["seed"]["state"], "SUCCESS", "{v}");
    assert_eq!(v["children"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["children"][0]["state"], "SUCCESS", "{v}");
    // Let the hub hear whatever it would hear.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.api("GET", "/api/tasks/", None, 200)["count"], 0);
    assert_eq!(s.api("GET", "/api/jobs/", None, 200)["count"], 0);
}

#[test]
fn a_job_cancelled_during_discovery_ends_cancelled_with_every_task_terminal() {
    // Alone: every hub answers every node's worker-online, and another
    // test's answer, which does not name this job, let agent 2 start
    // taking tasks before this hub's (seen in CI: a batch of the
    // cancelled job ran).
    let _alone = common::agent::control_alone();
    if !common::agent::broker_or_skip() {
        return;
    }
    // Agents 0 and 1 walk, publishing one child at a time (each confirmed
    // before the next), and run no batch: the children wait in the worker
    // queue. Agent 2 runs batches and starts only after the cancel, so it
    // must learn of the cancel (from the hub's answer to its
    // worker-online) before it takes a task. Its wait for that answer is
    // long: a hub busy filing this job's results on a loaded machine may
    // take longer than the default 2 s to hear the worker-online, and the
    // test is about what the answer does, not how soon it comes.
    let mut s = HubSite::new(sqlite(), 3, "");
    s.agent_settings("confirm_window = 1\nworker = false");
    s.agent_settings_of(2, "control_wait = 60");
    let id = submit_big(&mut s);
    let worker = format!("{}.default#worker", s.site);
    let t0 = Instant::now();
    while depth(&worker) < 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no batch was queued: {}",
            s.log("hub.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let j = s.api("POST", &format!("/api/jobs/{id}/cancel/"), None, 201);
    assert_eq!(j["state"], "DEQUEUING", "{j}");
    // The walk stops and reports its children; they wait, unanswered.
    let t0 = Instant::now();
    while s.job(id)["dir_walk_complete"] != true {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the walk did not end: {}",
            s.job(id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let queued = depth(&worker);
    assert!(queued >= 10, "{queued} batches queued");
    s.start_agent(2);
    let j = s.wait_job(id, Duration::from_secs(120));
    assert_eq!(j["state"], "CANCELLED", "{j}");
    let c = &j["counts"];
    assert_eq!(c["results_counted"], c["results_expected"], "{j}");
    assert_eq!(
        c["results_expected"],
        queued as i64 + 1,
        "the discovery and its queued children: {j}"
    );
    assert!(
        c["results_expected"].as_i64().unwrap() < 5_001,
        "the walk did not stop: {j}"
    );
    // Every task row terminal; each batch refused, none started at all.
    let tasks = s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=0"), None, 200);
    let rows = tasks["results"].as_array().unwrap();
    assert_eq!(rows.len() as i64, tasks["count"].as_i64().unwrap());
    assert_eq!(rows.len(), queued as usize + 1, "{}", tasks["stats"]);
    for t in rows {
        let st = t["state"].as_str().unwrap();
        if t["tasktype"] == "dynamo.tasks.recursive_navigate" {
            assert_eq!(st, "SUCCESS", "{t}");
        } else {
            assert_eq!(st, "CANCELLED", "{t}");
            assert!(t["started"].is_null(), "a batch of a cancelled job ran: {t}");
        }
    }
    let learned = s.log("agent2.log");
    assert!(learned.contains("control snapshot added roots"), "{learned}");
    assert!(!learned.contains("no cancel snapshot within control_wait"), "{learned}");
}

#[test]
fn a_result_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_filed() {
    let _shared = common::agent::control_shared();
    if !common::agent::broker_or_skip() {
        return;
    }
    let Some(db) = common::hub::postgres() else {
        return;
    };
    // No agent: the test answers the job's root itself.
    let mut s = HubSite::new(db, 0, "");
    s.start_hub();
    s.create_site(&s.site);
    let w = s.workflow("dynamo.tasks.stat_paths", serde_json::json!({}));
    let job = s.submit(&w, &s.data());
    let id = job["id"].as_i64().unwrap();
    let root = s.api("GET", &format!("/api/tasks/?job_id={id}"), None, 200)["results"][0]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = |task_id: &str| {
        serde_json::json!({"status": "SUCCESS", "task_id": task_id, "parent_id": null, "jobid": id,
            "result": {"status": {"task": "dynamo.tasks.recursive_navigate", "summary": {"files": 0, "children": 0}}},
            "traceback": null, "children": [], "children_count": 0, "run": "0000000000000001",
            "date_done": "2026-12-05T00:00:00+00:00", "name": "dynamo.tasks.recursive_navigate",
            "worker": "ferry@n1", "queue": format!("{}.default#discovery", s.site)})
        .to_string()
    };
    // PostgreSQL text cannot hold a NUL: a retry would fail forever.
    let poison = doc("bad\u{0}id");
    let results = format!("{}.hub.results", s.site);
    let rejected = format!("{}.hub.rejected", s.site);
    let reason = common::agent::rt().block_on(async {
        let c = common::agent::Client::connect().await;
        for body in [&poison, &doc(&root)] {
            c.ch.basic_publish(
                "".into(),
                results.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        let t0 = Instant::now();
        loop {
            let got =
                c.ch.basic_get(
                    rejected.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap();
            if let Some(m) = got {
                assert_eq!(m.delivery.data, poison.as_bytes());
                let h = m.delivery.properties.headers().clone().unwrap();
                match h.inner().get("x-ferry-reason") {
                    Some(lapin::types::AMQPValue::LongString(r)) => {
                        break String::from_utf8_lossy(r.as_bytes()).into_owned();
                    }
                    other => panic!("no reason: {other:?}"),
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "nothing set aside: {}",
                s.log("hub.log")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(reason.contains("the database refuses it"), "{reason}");
    let j = s.wait_job(id, Duration::from_secs(30));
    assert_eq!(j["state"], "SUCCESS", "{j}");
    assert!(
        s.log("hub.log").contains("filing its results one at a time"),
        "{}",
        s.log("hub.log")
    );
    // Counted as set aside, not as filed.
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", s.url)])
        .output()
        .unwrap();
    let m = String::from_utf8(out.stdout).unwrap();
    for line in [
        "ferry_hub_results_total{state=\"SUCCESS\"} 1\n",
        "ferry_hub_rejected_messages_total 1\n",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
}
