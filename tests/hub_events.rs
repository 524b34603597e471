//! The event feed and the roll-ups on real components.
//!
//! A job run through a hub and an agent leaves exactly PENDING → STARTED
//! → FAILURE in the feed; a stopped agent's node goes OFFLINE and comes
//! back ONLINE; the alerts it raises are RAISED then CLEARED; the feed
//! read in pages of three equals the feed read at once. The stuck-work
//! roll-up shows the job's root waiting while no agent runs; the failure
//! roll-up groups three unreadable files into one EACCES group. On the
//! store, writers committing side by side on PostgreSQL never make a
//! poller miss or repeat an event.

mod common;

use common::hub::{HubSite, both};
use ferry::hub::store::Store;
use ferry::hub::store::events::EventFilter;
use ferry::hub::store::holds::Hold;
use ferry::hub::store::jobs::{NewJob, Owner, RootTask};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Every event after `after` matching `query` (`&kind=job`...), read in
/// pages of `page`; asserts ids only grow.
fn feed(s: &HubSite, after: i64, query: &str, page: usize) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut last = after;
    loop {
        let p = s.api(
            "GET",
            &format!("/api/events/?after={last}&limit={page}{query}"),
            None,
            200,
        );
        let got = p["results"].as_array().unwrap().clone();
        for e in &got {
            let id = e["id"].as_i64().unwrap();
            assert!(id > last, "id {id} after {last}: {p}");
            last = id;
        }
        assert_eq!(p["last"], last, "{p}");
        let n = got.len();
        out.extend(got);
        if n < page {
            return out;
        }
    }
}

/// Waits until the feed after `after` has an event satisfying `want`; it.
fn wait_event(s: &HubSite, after: i64, what: &str, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        if let Some(e) = feed(s, after, "", 100).into_iter().find(|e| want(e)) {
            return e;
        }
        assert!(
            t0.elapsed() < limit,
            "no {what} within {limit:?}: {:?}\nhub log:\n{}",
            feed(s, after, "", 100),
            s.log("hub.log")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_job_its_node_and_its_alerts_leave_their_events_in_order_and_the_rollups_count_exactly() {
    if !common::agent::broker_or_skip() {
        return;
    }
    for db in both() {
        let engine = db.engine;
        let mut s = HubSite::running(db, 1, "");
        let node = format!("ferry@{}-n0", s.site);
        let online = wait_event(&s, 0, "ONLINE", Duration::from_secs(10), |e| {
            e["kind"] == "node" && e["node"] == node.as_str() && e["state"] == "ONLINE"
        });
        assert_eq!(online["detail"]["site"], s.site.as_str(), "{engine}: {online}");

        // The agent stops: its node goes OFFLINE once, and the site's
        // alerts are raised.
        s.stop_agent(0, false);
        let offline = wait_event(&s, 0, "OFFLINE", Duration::from_secs(10), |e| {
            e["kind"] == "node" && e["node"] == node.as_str() && e["state"] == "OFFLINE"
        });
        let raised = wait_event(&s, 0, "an alert RAISED", Duration::from_secs(30), |e| {
            e["kind"] == "alert" && e["state"] == "RAISED" && e["detail"]["site"] == s.site.as_str()
        });
        assert!(raised["id"].as_i64() > offline["id"].as_i64(), "{engine}");

        // A job submitted while no agent runs: its root waits, and the
        // work roll-up shows it.
        let root = s.data().join("tree");
        std::fs::create_dir_all(&root).unwrap();
        for i in 0..5 {
            std::fs::write(root.join(format!("f{i}")), format!("{i}\n")).unwrap();
        }
        let bad: Vec<String> = (0..3)
            .map(|i| root.join(format!("f{i}")).display().to_string())
            .collect();
        for b in &bad {
            std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        let w = s.workflow("dynamo.tasks.migrate", serde_json::json!({"premigrate": true}));
        let job = s.submit(&w, &root);
        let id = job["id"].as_i64().unwrap();
        let work = s.api("GET", "/api/rollups/work/", None, 200);
        let mine: Vec<&Value> = work["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["site"] == s.site.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{engine}: {work}");
        let g = mine[0];
        assert_eq!(
            (
                g["queue"].as_str(),
                g["tasktype"].as_str(),
                g["pending"].as_i64(),
                g["started"].as_i64()
            ),
            (
                Some("default"),
                Some("dynamo.tasks.recursive_navigate"),
                Some(1),
                Some(0)
            ),
            "{engine}: {g}"
        );
        assert_eq!(g["longest_pending"]["job"], id, "{engine}: {g}");
        assert_eq!(g["longest_pending"]["node"], Value::Null, "{engine}: {g}");
        assert_eq!(g["longest_running"], Value::Null, "{engine}: {g}");
        let tasks = s.api("GET", &format!("/api/tasks/?job_id={id}"), None, 200);
        assert_eq!(
            g["longest_pending"]["task_id"], tasks["results"][0]["task_id"],
            "{engine}: {tasks}"
        );

        // The agent comes back and runs the job.
        s.start_agent(0);
        let done = s.wait_job(id, Duration::from_secs(60));
        assert_eq!(done["state"], "FAILURE", "{engine}: {done}");
        let states: Vec<Value> = feed(&s, 0, &format!("&kind=job&job={id}"), 2)
            .iter()
            .map(|e| e["state"].clone())
            .collect();
        assert_eq!(states, ["PENDING", "STARTED", "FAILURE"], "{engine}");
        let back = wait_event(
            &s,
            offline["id"].as_i64().unwrap(),
            "ONLINE again",
            Duration::from_secs(10),
            |e| e["kind"] == "node" && e["node"] == node.as_str() && e["state"] == "ONLINE",
        );
        // One OFFLINE between the two ONLINEs, no more.
        let of_node: Vec<Value> = feed(&s, 0, &format!("&kind=node&node={node}"), 1)
            .iter()
            .map(|e| e["state"].clone())
            .collect();
        assert_eq!(of_node, ["ONLINE", "OFFLINE", "ONLINE"], "{engine}");
        assert!(back["id"].as_i64() > offline["id"].as_i64());
        // The batches of results counted the job's tasks: every task once.
        let finished: i64 = feed(&s, 0, &format!("&kind=tasks&job={id}"), 100)
            .iter()
            .map(|e| {
                e["detail"]["counts"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_i64().unwrap())
                    .sum::<i64>()
            })
            .sum();
        let all_tasks = s.api("GET", &format!("/api/tasks/?job_id={id}&page_size=0"), None, 200);
        assert_eq!(finished, all_tasks["count"].as_i64().unwrap(), "{engine}: {all_tasks}");
        // The task that failed files (ERROR) has its own event.
        let errors = feed(&s, 0, &format!("&kind=task&job={id}"), 100);
        assert!(
            !errors.is_empty() && errors.iter().all(|e| e["state"] == "ERROR"),
            "{engine}: {errors:?}"
        );

        // The failure roll-up: three unreadable files, one group.
        let f = s.api("GET", &format!("/api/rollups/failures/?job={id}"), None, 200);
        let groups = f["results"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "{engine}: {f}");
        let g = &groups[0];
        assert_eq!(g["code"], "EACCES", "{engine}: {g}");
        assert_eq!(g["count"], 3, "{engine}: {g}");
        assert_eq!(g["category"], "permanent", "{engine}: {g}");
        assert_eq!(g["jobs"], serde_json::json!([id]), "{engine}: {g}");
        assert!(
            bad.contains(&g["sample_path"].as_str().unwrap().to_string()),
            "{engine}: {g}"
        );
        assert!(
            !g["reason"].as_str().unwrap().contains(&s.site),
            "{engine}: paths out: {g}"
        );
        let (first, last) = (g["first"].as_str().unwrap(), g["last"].as_str().unwrap());
        assert!(first <= last, "{engine}: {g}");
        let later = s.api("GET", "/api/rollups/failures/?since=2999-01-01T00:00:00Z", None, 200);
        assert_eq!(later["results"], serde_json::json!([]), "{engine}: {later}");

        // The alerts clear with the agent back.
        wait_event(
            &s,
            raised["id"].as_i64().unwrap(),
            "the alert CLEARED",
            Duration::from_secs(30),
            |e| e["kind"] == "alert" && e["state"] == "CLEARED" && e["detail"]["alert"] == raised["detail"]["alert"],
        );
        // The whole feed in pages of three is the feed read at once.
        let small = feed(&s, 0, "", 3);
        let whole = s.api("GET", "/api/events/?limit=1000", None, 200);
        assert_eq!(&small, whole["results"].as_array().unwrap(), "{engine}");
        assert_eq!(
            s.call(
                "GET",
                "/api/events/?kind=nope",
                None,
                Some(&format!("Api-Key {}", s.key()))
            )
            .0,
            400
        );
    }
}

fn new_job(i: usize) -> NewJob {
    NewJob {
        workflow: "premigrate".into(),
        fields: serde_json::json!({}),
        discovery: Some("recursive".into()),
        site: "s1".into(),
        queue: "default".into(),
        friendly_name: format!("job {i}"),
        owner: Owner {
            kind: "user".into(),
            id: 1,
            name: "admin".into(),
        },
        clientkey_id: None,
        input_paths: serde_json::json!(["/data"]),
        request: None,
        resubmitted_from: None,
        record_files: Default::default(),
        dry_run: false,
        sync: None,
    }
}

#[test]
fn writers_committing_side_by_side_never_make_a_poller_miss_or_repeat_an_event() {
    const WRITERS: usize = 8;
    const CHANGES: usize = 60;
    for db in both() {
        let engine = db.engine;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let mut jobs = Vec::new();
            for i in 0..WRITERS {
                let root = uuid::Uuid::new_v4().to_string();
                let id = store
                    .create_job(&new_job(i), move |_| {
                        vec![RootTask {
                            task_id: root,
                            tasktype: "dynamo.tasks.recursive_navigate".into(),
                            site: "s1".into(),
                            queue: "s1.default#discovery".into(),
                            headers: "[]".into(),
                            body: "{}".into(),
                        }]
                    })
                    .await
                    .unwrap();
                jobs.push(id);
            }
            let start = store
                .events(&EventFilter {
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .last()
                .unwrap()
                .id;
            // Each writer pauses and resumes its own job: one event per
            // transaction, transactions side by side.
            let writers: Vec<_> = jobs
                .iter()
                .map(|&id| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for k in 0..CHANGES {
                            let r = if k % 2 == 0 {
                                store.pause_job(id).await
                            } else {
                                store.resume_job(id).await
                            };
                            assert!(matches!(r.unwrap(), Hold::Done(_)));
                        }
                    })
                })
                .collect();
            // A poller reading small pages all the while, and until a page
            // comes back short after the writers are done.
            let done = Arc::new(AtomicBool::new(false));
            let poller = {
                let store = store.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut last = start;
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        let page = store
                            .events(&EventFilter {
                                after: last,
                                limit: 5,
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        let short = page.len() < 5;
                        for e in page {
                            last = e.id;
                            seen.push(e.id);
                        }
                        if finished && short {
                            return seen;
                        }
                    }
                })
            };
            for w in writers {
                w.await.unwrap();
            }
            done.store(true, Ordering::SeqCst);
            let seen = poller.await.unwrap();
            let all: Vec<i64> = store
                .events(&EventFilter {
                    after: start,
                    limit: 100_000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            assert_eq!(all.len(), WRITERS * CHANGES, "{engine}");
            let missed: Vec<&i64> = all.iter().filter(|i| !seen.contains(i)).collect();
            assert!(
                missed.is_empty(),
                "{engine}: the poller missed {} events: {missed:?}",
                missed.len()
            );
            assert_eq!(seen, all, "{engine}: repeated or out of order");
        });
    }
}
