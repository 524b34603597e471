//! Alerts, configurations and housekeeping on real components: a hub, two
//! agents and RabbitMQ. Agents that stop raise `WorkerHealth`, then
//! `SiteHealth` CRITICAL and `QueueNoConsumer`; a message set aside
//! raises `DeadLetter`; alerts clear when the condition ends, and a muted
//! one leaves the list. `/api/configurations/` is JWT only, checked, and
//! kept across a restart.

mod common;

use common::hub::{HubSite, PASSWORD, USER, both, sqlite};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The alerts listed now, muted ones too with `all`.
fn alerts(s: &HubSite, all: bool) -> Vec<Value> {
    let q = if all { "?suppressed=true" } else { "" };
    s.api("GET", &format!("/api/alerts/{q}"), None, 200)
        .as_array()
        .expect("a bare array")
        .clone()
}

/// Waits until the alerts satisfy `check`; they.
fn wait_alerts(s: &HubSite, what: &str, limit: Duration, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let a = alerts(s, false);
        if check(&a) {
            return a;
        }
        assert!(
            t0.elapsed() < limit,
            "{what} not within {limit:?}: {a:?}\nnodes: {}\nagent1 log:\n{}\nhub log:\n{}",
            s.api("GET", "/api/nodes/", None, 200),
            s.log("agent1.log"),
            s.log("hub.log")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn has(a: &[Value], name: &str, f: impl Fn(&Value) -> bool) -> bool {
    a.iter().any(|x| x["name"] == name && f(x))
}

fn bearer(s: &HubSite) -> String {
    let login = json!({"username": USER, "password": PASSWORD});
    let t = s.call("POST", "/api/auth/token/", Some(&login), None);
    format!("Bearer {}", t.1["access"].as_str().expect("a token"))
}

#[test]
fn stopped_agents_raise_worker_site_and_queue_alerts_that_clear_when_they_return() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::running(sqlite(), 2, "");
    let n0 = format!("ferry@{}-n0", s.site);
    let n1 = format!("ferry@{}-n1", s.site);
    // Two agents online: nothing about this site within an evaluation.
    std::thread::sleep(Duration::from_secs(12));
    let now = alerts(&s, false);
    assert!(!now.iter().any(|a| a["site"] == s.site.as_str()), "{now:?}");

    // One agent stops: its node is offline; the site is not (yet) down and
    // its queues still have a consumer.
    s.stop_agent(0, false);
    let a = wait_alerts(&s, "WorkerHealth for n0", Duration::from_secs(30), |a| {
        has(a, "WorkerHealth", |x| x["node"] == n0.as_str())
    });
    let w = a.iter().find(|x| x["name"] == "WorkerHealth").unwrap();
    assert_eq!(w["severity"], "CRITICAL", "{w}");
    assert_eq!(w["site"], s.site.as_str(), "{w}");
    assert!(w["summary"].as_str().unwrap().contains("is offline"), "{w}");
    assert!(!has(&a, "SiteHealth", |_| true), "{a:?}");
    assert!(!has(&a, "QueueNoConsumer", |_| true), "{a:?}");

    // Both stop: the site is CRITICAL, both nodes are, and the default
    // queue has no consumer, within 30 s.
    let t0 = Instant::now();
    s.stop_agent(1, false);
    let a = wait_alerts(&s, "site down", Duration::from_secs(30), |a| {
        has(a, "SiteHealth", |x| x["severity"] == "CRITICAL")
            && has(a, "WorkerHealth", |x| x["node"] == n1.as_str())
            && has(a, "QueueNoConsumer", |x| x["queue"] == "default")
    });
    eprintln!("site down alerts within {:?}", t0.elapsed());
    let site = a.iter().find(|x| x["name"] == "SiteHealth").unwrap();
    assert_eq!(site["summary"], "All workers are offline", "{site}");
    let q = a.iter().find(|x| x["name"] == "QueueNoConsumer").unwrap();
    assert!(
        q["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("{}.default#worker", s.site)),
        "{q}"
    );
    assert_eq!(a.iter().filter(|x| x["name"] == "WorkerHealth").count(), 2, "{a:?}");

    // Muted: out of the list, still there with suppressed=true, and an
    // alert keeps its id while it holds.
    let id = site["id"].as_i64().unwrap();
    let m = s.api(
        "PATCH",
        &format!("/api/alerts/{id}/"),
        Some(json!({"suppressed": true})),
        200,
    );
    assert_eq!(m["suppressed"], true);
    assert!(!alerts(&s, false).iter().any(|x| x["id"] == id));
    assert!(alerts(&s, true).iter().any(|x| x["id"] == id));
    s.api(
        "PATCH",
        &format!("/api/alerts/{id}/"),
        Some(json!({"suppressed": "yes"})),
        400,
    );
    s.api("GET", "/api/alerts/999999/", None, 404);

    // A message no agent can answer is set aside: DeadLetter.
    common::agent::rt().block_on(async {
        let c = common::agent::Client::connect().await;
        c.publish_raw(&format!("{}.default#worker", s.site), &[], b"not a task", false)
            .await;
    });
    s.start_agent(0);
    let a = wait_alerts(&s, "DeadLetter", Duration::from_secs(30), |a| {
        has(a, "DeadLetter", |x| {
            x["queue"] == format!("{}.dead-letter", s.site).as_str()
        })
    });
    assert!(
        a.iter().find(|x| x["name"] == "DeadLetter").unwrap()["summary"]
            .as_str()
            .unwrap()
            .starts_with("1 messages"),
        "{a:?}"
    );

    // One agent back: its node's alert and the site's clear; the other
    // node's stays.
    let a = wait_alerts(&s, "n0 back", Duration::from_secs(30), |a| {
        !has(a, "WorkerHealth", |x| x["node"] == n0.as_str()) && !has(a, "QueueNoConsumer", |_| true)
    });
    assert!(has(&a, "WorkerHealth", |x| x["node"] == n1.as_str()), "{a:?}");
    let cleared = s.api("GET", &format!("/api/alerts/{id}/"), None, 200);
    assert!(
        cleared["cleared"].is_string(),
        "the site alert did not clear: {cleared}"
    );
}

#[test]
fn configurations_need_a_jwt_are_checked_and_survive_a_restart() {
    for db in both() {
        let engine = db.engine;
        let mut s = HubSite::new(db, 0, "");
        s.start_hub();
        let jwt = bearer(&s);
        let key = format!("Api-Key {}", s.key());
        let (code, v) = s.call("GET", "/api/configurations/", None, Some(&key));
        assert_eq!(code, 403, "{engine}: {v}");
        let (code, c) = s.call("GET", "/api/configurations/", None, Some(&jwt));
        assert_eq!(code, 200, "{engine}: {c}");
        assert_eq!(
            c,
            json!({"jobs_ttl": 90, "task_invalidation_timeout": 360, "snapdiff_stream_timeout": 10,
                   "node_health_last_heartbeat_interval": 120, "schedules_enabled": true, "health_timeout": 1.0,
                   "max_queue_depth": 200000, "stat_timeout": 10}),
            "{engine}"
        );
        for (bad, why) in [
            (json!({"jobs_ttl": 0}), "jobs_ttl: must be at least 1"),
            (json!({"schedules_enabled": "no"}), "a value of the wrong type"),
            (json!({"nope": 1}), "unknown name"),
            (
                json!({"health_timeout": 61}),
                "health_timeout: must be more than 0 and at most 60",
            ),
        ] {
            let (code, v) = s.call("PATCH", "/api/configurations/", Some(&bad), Some(&jwt));
            assert_eq!(code, 400, "{engine}: {bad}: {v}");
            assert!(v["detail"].as_str().unwrap().contains(why), "{engine}: {v}");
        }
        let (code, v) = s.call(
            "PATCH",
            "/api/configurations/",
            Some(&json!({"jobs_ttl": 7, "schedules_enabled": false})),
            Some(&jwt),
        );
        assert_eq!(code, 200, "{engine}: {v}");
        assert_eq!(
            (v["jobs_ttl"].as_i64(), v["schedules_enabled"].as_bool()),
            (Some(7), Some(false))
        );
        assert_eq!(v["task_invalidation_timeout"], 360, "others unchanged");
        s.kill_hub();
        s.start_hub();
        let (_, c) = s.call("GET", "/api/configurations/", None, Some(&bearer(&s)));
        assert_eq!(
            (c["jobs_ttl"].as_i64(), c["schedules_enabled"].as_bool()),
            (Some(7), Some(false)),
            "{engine}: {c}"
        );
    }
}
