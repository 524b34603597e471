//! Pause, resume and resubmit on real components: a hub, two agents and
//! RabbitMQ. A paused job's queued tasks are parked in the job's own
//! queue and none starts; resumed, the job completes with exact counts;
//! a paused job that is cancelled ends CANCELLED with every task
//! terminal; a finished job's failed files are submitted again alone.

mod common;

use common::agent::depth;
use common::hub::{HubSite, sqlite};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `dirs` directories of `per_dir` one-byte files under `root`.
fn tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:05}")), b"x").unwrap();
        }
    }
}

/// Waits until `check` holds for job `id` (panics after `limit`).
fn wait_until(s: &HubSite, id: i64, limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let j = s.job(id);
        if check(&j) {
            return j;
        }
        assert!(
            t0.elapsed() < limit,
            "job {id}: {what} not within {limit:?}: {j}\nhub log:\n{}",
            s.log("hub.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many of job `id`'s tasks are in `states`.
fn tasks_in(s: &HubSite, id: i64, states: &[&str]) -> i64 {
    let q: String = states.iter().map(|st| format!("&state={st}")).collect();
    s.api("GET", &format!("/api/tasks/?job_id={id}{q}"), None, 200)["count"]
        .as_i64()
        .unwrap()
}

fn started_site() -> HubSite {
    let s = HubSite::running(sqlite(), 2, "");
    // Fixed batches of 20: thousands of tasks, so the job is still running
    // when it is paused.
    s.batch_size(20);
    s
}

#[test]
fn a_paused_premigrate_starts_no_task_until_resumed_then_completes_exactly_and_its_failures_resubmit_alone() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = started_site();
    let root = s.data().join("tree");
    tree(&root, 100, 500);
    let bad: Vec<PathBuf> = (0..5).map(|i| root.join(format!("d{:03}/f00007", i * 17))).collect();
    for b in &bad {
        std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let w = s.workflow("dynamo.tasks.migrate", serde_json::json!({"premigrate": true}));
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    wait_until(&s, id, Duration::from_secs(60), "a file processed", |j| {
        j["counts"]["processed"].as_i64().unwrap_or(0) > 0
    });

    let j = s.api("POST", &format!("/api/jobs/{id}/pause/"), None, 201);
    assert_eq!(j["state"], "PAUSING", "{j}");
    // Conflicting requests are 409 with the state, never 500.
    let again = s.api("POST", &format!("/api/jobs/{id}/pause/"), None, 409);
    assert!(
        ["PAUSING", "PAUSED"].contains(&again["state"].as_str().unwrap()),
        "{again}"
    );
    let r = s.api("POST", &format!("/api/jobs/{id}/resubmit/"), None, 409);
    assert!(r["detail"].as_str().unwrap().contains("only a finished job"), "{r}");

    let paused = wait_until(&s, id, Duration::from_secs(60), "PAUSED", |j| j["state"] == "PAUSED");
    assert_eq!(tasks_in(&s, id, &["STARTED"]), 0);
    assert!(
        paused["counts"]["processed"].as_i64().unwrap() < 49_995,
        "the job ran to its end before the pause: {paused}"
    );
    // Held: nothing more runs, and its tasks wait in the parking queue.
    let park = format!("{}.hub.parked.{id}", s.site);
    let t0 = Instant::now();
    while depth(&park) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no task was parked in {park}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    let later = s.job(id);
    assert_eq!(later["state"], "PAUSED", "{later}");
    assert_eq!(later["counts"], paused["counts"], "work was done while paused");
    assert_eq!(tasks_in(&s, id, &["STARTED"]), 0);
    let parked = depth(&park);
    assert!(parked > 0, "nothing parked");

    let j = s.api("POST", &format!("/api/jobs/{id}/resume/"), None, 201);
    assert_eq!(j["state"], "STARTED", "{j}");
    let r = s.api("POST", &format!("/api/jobs/{id}/resume/"), None, 409);
    assert_eq!(r["state"], "STARTED", "{r}");

    let done = s.wait_job(id, Duration::from_secs(300));
    let c = &done["counts"];
    assert_eq!(done["state"], "FAILURE", "{done}");
    assert_eq!(c["files_found"], 50_000, "{done}");
    assert_eq!(c["processed"], 49_995, "{done}");
    assert_eq!(c["failures"], 5, "{done}");
    assert_eq!(c["results_counted"], c["results_expected"], "{done}");
    assert_eq!(depth(&park), 0, "tasks left parked");
    assert_eq!(tasks_in(&s, id, &["PENDING", "STARTED"]), 0);
    let r = s.api("POST", &format!("/api/jobs/{id}/cancel/"), None, 409);
    assert_eq!(r["state"], "FAILURE", "{r}");

    // Fixed, the failed files go again, alone, without discovery.
    for b in &bad {
        std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let again = s.api("POST", &format!("/api/jobs/{id}/resubmit/?failed_only=true"), None, 201);
    let new = again["id"].as_i64().unwrap();
    assert_ne!(new, id);
    assert_eq!(again["discovery"], Value::Null, "{again}");
    let mut inputs: Vec<String> = again["input_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().or(p.as_str()).unwrap().to_string())
        .collect();
    inputs.sort();
    let mut want: Vec<String> = bad.iter().map(|b| b.to_str().unwrap().to_string()).collect();
    want.sort();
    assert_eq!(inputs, want);
    let redone = s.wait_job(new, Duration::from_secs(120));
    assert_eq!(redone["state"], "SUCCESS", "{redone}");
    assert_eq!(redone["counts"]["processed"], 5, "{redone}");
    assert_eq!(redone["counts"]["failures"], 0, "{redone}");
    assert_eq!(redone["resubmitted_from"], id, "{redone}");
    // A whole resubmission of the finished new job: the same five paths.
    let whole = s.api("POST", &format!("/api/jobs/{new}/resubmit/"), None, 201);
    let whole = s.wait_job(whole["id"].as_i64().unwrap(), Duration::from_secs(120));
    assert_eq!(
        whole["counts"]["processed"].as_i64().unwrap() + whole["counts"]["skipped"].as_i64().unwrap(),
        5,
        "{whole}"
    );
    // Nothing failed in it: failed-only has nothing to send.
    let r = s.api(
        "POST",
        &format!("/api/jobs/{new}/resubmit/?failed_only=true"),
        None,
        409,
    );
    assert!(r["detail"].as_str().unwrap().contains("no file of it failed"), "{r}");
}

#[test]
fn a_paused_job_that_is_cancelled_ends_cancelled_with_every_task_terminal() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = started_site();
    let root = s.data().join("tree");
    tree(&root, 40, 500);
    let w = s.workflow("dynamo.tasks.stat_paths", serde_json::json!({}));
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    wait_until(&s, id, Duration::from_secs(60), "a file processed", |j| {
        j["counts"]["processed"].as_i64().unwrap_or(0) > 0
    });
    s.api("POST", &format!("/api/jobs/{id}/pause/"), None, 201);
    wait_until(&s, id, Duration::from_secs(60), "PAUSED", |j| j["state"] == "PAUSED");
    let park = format!("{}.hub.parked.{id}", s.site);
    assert!(depth(&park) > 0, "nothing parked");

    let j = s.api("POST", &format!("/api/jobs/{id}/cancel/"), None, 201);
    assert_eq!(j["state"], "DEQUEUING", "{j}");
    // A cancelling job does not pause.
    let r = s.api("POST", &format!("/api/jobs/{id}/pause/"), None, 409);
    assert!(
        ["DEQUEUING", "CANCELLED"].contains(&r["state"].as_str().unwrap()),
        "{r}"
    );

    let done = s.wait_job(id, Duration::from_secs(120));
    assert_eq!(done["state"], "CANCELLED", "{done}");
    let c = &done["counts"];
    assert_eq!(c["results_counted"], c["results_expected"], "{done}");
    assert!(c["processed"].as_i64().unwrap() < 20_000, "{done}");
    assert_eq!(tasks_in(&s, id, &["PENDING", "STARTED"]), 0);
    let stats = &s.api("GET", &format!("/api/tasks/?job_id={id}"), None, 200)["stats"]["state"];
    assert!(
        stats["CANCELLED"].as_i64().unwrap_or(0) > 0,
        "no task was refused: {stats}"
    );
    assert_eq!(depth(&park), 0, "tasks left parked");
}

#[test]
fn draining_one_of_two_agents_mid_job_moves_every_new_task_to_the_other() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = started_site();
    let root = s.data().join("tree");
    tree(&root, 40, 500);
    let w = s.workflow("dynamo.tasks.migrate", serde_json::json!({"premigrate": true}));
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    wait_until(&s, id, Duration::from_secs(60), "a file processed", |j| {
        j["counts"]["processed"].as_i64().unwrap_or(0) > 0
    });
    let n0 = format!("ferry@{}-n0", s.site);
    let n1 = format!("ferry@{}-n1", s.site);
    let nodes = s.api("GET", "/api/nodes/", None, 200);
    let node = nodes["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == n0.as_str())
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    s.api(
        "PATCH",
        &format!("/api/nodes/{node}/"),
        Some(serde_json::json!({"reason": "x"})),
        400,
    );
    let patched = s.api(
        "PATCH",
        &format!("/api/nodes/{node}/"),
        Some(serde_json::json!({"paused": true, "reason": "disk swap"})),
        200,
    );
    assert_eq!(
        (patched["paused"].as_bool(), patched["pause_reason"].as_str()),
        (Some(true), Some("disk swap"))
    );
    let t0 = Instant::now();
    while !s.log("agent0.log").contains("drained by the hub") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "agent 0 was not drained:\n{}",
            s.log("agent0.log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Tasks already running on n0 may still start their clocks; give them
    // a second, then every start is on n1.
    std::thread::sleep(Duration::from_secs(1));
    let since = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let done = s.wait_job(id, Duration::from_secs(300));
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["counts"]["processed"], 20_000, "{done}");
    // Tasks running on n0 when it was drained finish there and are not run
    // again on n1: a drain must not close the channel their messages are
    // unacknowledged on.
    let mut started = std::collections::HashMap::<String, usize>::new();
    for log in [s.log("agent0.log"), s.log("agent1.log")] {
        for line in log.lines().filter(|l| l.contains("task started id=")) {
            let id = line
                .split("task started id=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            *started.entry(id.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = started.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks started twice: {twice:?}");
    let all = s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=0"), None, 200)["results"]
        .as_array()
        .unwrap()
        .clone();
    let later: Vec<&Value> = all
        .iter()
        .filter(|t| t["started"].as_str().is_some_and(|st| st > since.as_str()))
        .collect();
    assert!(
        later.len() > 10,
        "the job ended before the drain: {} tasks after",
        later.len()
    );
    assert!(
        later.iter().all(|t| t["node"] == n1.as_str()),
        "a task started on the drained node: {:?}",
        later.iter().find(|t| t["node"] != n1.as_str())
    );
    // Resumed, it consumes again.
    s.api(
        "PATCH",
        &format!("/api/nodes/{node}/"),
        Some(serde_json::json!({"paused": false})),
        200,
    );
    let t0 = Instant::now();
    while !s.log("agent0.log").contains("resumed by the hub") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "agent 0 did not resume:\n{}",
            s.log("agent0.log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_discovery_holds_back_its_children_while_their_queue_is_full() {
    if !common::agent::broker_or_skip() {
        return;
    }
    // The hub allows 30 waiting batches; agent 0 walks and runs none.
    let mut s = HubSite::new(sqlite(), 2, "max_queue_depth = 30");
    s.agent_settings_of(0, "worker = false");
    s.start_hub();
    s.start_agent(0);
    s.wait_online(1, Duration::from_secs(20));
    s.batch_size(20);
    let root = s.data().join("tree");
    tree(&root, 20, 500);
    let w = s.workflow("dynamo.tasks.stat_paths", serde_json::json!({}));
    let id = s.submit(&w, &root)["id"].as_i64().unwrap();
    let worker = format!("{}.default#worker", s.site);
    let t0 = Instant::now();
    while depth(&worker) < 30 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no batch was queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Held there: never more than the limit, the walk not done.
    let mut most = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        most = most.max(depth(&worker));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(most <= 30, "{most} batches queued with max_queue_depth 30");
    assert_eq!(s.job(id)["dir_walk_complete"], false, "the walk did not wait");
    assert!(
        s.log("agent0.log").contains("waiting to publish"),
        "{}",
        s.log("agent0.log")
    );
    // A worker drains the queue; the walk goes on, and its progress
    // reports (every 2 s, the first as soon as it moves again) reach the
    // job while it walks; counts are exact.
    s.start_agent(1);
    let progress = format!("/api/jobs/{id}/progress/");
    let mut walking = Vec::new();
    let t0 = Instant::now();
    loop {
        let p = s.api("GET", &progress, None, 200);
        if p["dir_walk_complete"] == true {
            break;
        }
        if p["files_walked"].as_i64() > Some(0) {
            walking.push(p);
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the walk did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen: Vec<i64> = walking.iter().map(|p| p["files_walked"].as_i64().unwrap()).collect();
    eprintln!("files walked, as the job showed them while it walked: {seen:?}");
    assert!(!walking.is_empty(), "no progress report arrived while the walk went on");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    // The walk's last report may arrive just before the task's end marks
    // the walk complete, so it can count all 10,000; the ones before it
    // show the walk part-way.
    assert!(seen.iter().any(|&w| w < 10_000), "{seen:?}");
    for p in &walking {
        let walked = p["files_walked"].as_i64().unwrap();
        assert!(walked <= 10_000, "{p}");
        assert!(p["children_published"].as_i64().unwrap() * 20 <= walked, "{p}");
        assert!(p["children_published"].as_i64() > Some(0), "{p}");
        let percent = p["percent"].as_f64().unwrap();
        let expect = p["files_done"].as_f64().unwrap() / walked as f64 * 100.0;
        assert!(
            (percent - expect.min(99.9)).abs() <= 0.05,
            "percent of the files walked so far: {p}"
        );
        assert!(p["eta_s"].is_null(), "no ETA before the walk is done: {p}");
    }
    let done = s.wait_job(id, Duration::from_secs(120));
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["counts"]["processed"], 10_000, "{done}");
    assert_eq!(done["counts"]["results_counted"], done["counts"]["results_expected"]);
}

/// The hub's move of parked tasks back to their queues, on RabbitMQ: more
/// messages than its window of unconfirmed moves, to two queues; each
/// arrives once with its body and headers but without the return address;
/// a message naming no queue stops the move and stays parked.
#[test]
fn unpark_moves_every_parked_message_back_once_without_its_return_address() {
    use common::agent::{BROKER, Client, rt};
    use lapin::types::{AMQPValue, LongString};
    if !common::agent::broker_or_skip() {
        return;
    }
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let park = format!("u{tag}.hub.parked.1");
    let back = [format!("u{tag}.a"), format!("u{tag}.b")];
    let n = 700;
    let moved = rt().block_on(async {
        let c = Client::connect().await;
        for i in 0..n {
            let to = AMQPValue::LongString(LongString::from(back[i % 2].as_str()));
            let id = AMQPValue::LongString(LongString::from(format!("id{i}").as_str()));
            c.publish_raw(
                &park,
                &[("x-ferry-queue", to), ("id", id)],
                format!("body{i}").as_bytes(),
                false,
            )
            .await;
        }
        let id = AMQPValue::LongString(LongString::from("lost"));
        c.publish_raw(&park, &[("id", id)], b"no way back", false).await;
        let session = ferry::agent::broker::Session::connect(BROKER, "unpark-test")
            .await
            .unwrap();
        ferry::hub::control::unpark(&session, &park).await.unwrap()
    });
    assert_eq!(moved, n as u64);
    assert_eq!(depth(&back[0]), n as u32 / 2);
    assert_eq!(depth(&back[1]), n as u32 / 2);
    assert_eq!(depth(&park), 1, "the message naming no queue was not left parked");
    let got = rt().block_on(async {
        let c = Client::connect().await;
        let mut got = Vec::new();
        for q in &back {
            loop {
                let m =
                    c.ch.basic_get(q.as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
                        .await
                        .unwrap();
                let Some(m) = m else { break };
                let h = m.delivery.properties.headers().clone().unwrap_or_default();
                assert!(!h.inner().contains_key("x-ferry-queue"), "the return address stayed");
                let id = match h.inner().get("id") {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("id header lost: {other:?}"),
                };
                got.push((q.clone(), id, String::from_utf8(m.delivery.data.clone()).unwrap()));
            }
            c.ch.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
        }
        c.ch.queue_delete(park.as_str().into(), Default::default())
            .await
            .unwrap();
        got
    });
    let mut want: Vec<(String, String, String)> = (0..n)
        .map(|i| (back[i % 2].clone(), format!("id{i}"), format!("body{i}")))
        .collect();
    want.sort();
    let mut got = got;
    got.sort();
    assert_eq!(got, want);
}
