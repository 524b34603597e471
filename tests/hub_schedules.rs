//! Schedules on real components: a `ferry hub serve` process on SQLite,
//! agents on RabbitMQ, the wall clock. CRUD in the seed's fields with
//! cron text checked as Celery checks it; a minute schedule that fires
//! exactly once per minute across a hub killed in the 59th second of a
//! minute; a run skipped (and recorded) while the previous run's job is
//! still going; `POST /run/`; `schedules_enabled = false`. The store's
//! run bookkeeping also runs on PostgreSQL.
//!
//! The tests wait for the clock's minutes: the restart test takes about
//! 3 minutes (at most 3.5), the `schedules_enabled` test about 2, the skip
//! test about 1; they run side by side, so the file takes 3 to 3.5.

mod common;

use common::hub::{HubSite, PASSWORD, USER, both, sqlite};
use ferry::hub::store::Store;
use ferry::hub::store::jobs::{Bind, Filter, NewJob, Page, RootTask};
use ferry::hub::store::schedules::{Begun, Firing, Schedule, ScheduleWorkflow, outcome};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Seconds since the epoch, now.
fn epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The start of the minute `t` (seconds since the epoch) is in.
fn minute_of(t: f64) -> i64 {
    (t / 60.0).floor() as i64 * 60
}

/// A time the API wrote, in seconds since the epoch.
fn secs(v: &Value) -> f64 {
    let t: Timestamp = v.as_str().unwrap_or_else(|| panic!("not a time: {v}")).parse().unwrap();
    t.as_microsecond() as f64 / 1e6
}

/// Sleeps until `t` (seconds since the epoch).
fn sleep_until(t: f64) {
    let now = epoch();
    if t > now {
        std::thread::sleep(Duration::from_secs_f64(t - now));
    }
}

/// An access token for the fixtures' user.
fn jwt(s: &HubSite) -> String {
    let login = json!({"username": USER, "password": PASSWORD});
    let (code, t) = s.call("POST", "/api/auth/token/", Some(&login), None);
    assert_eq!(code, 200, "{t}");
    format!("Bearer {}", t["access"].as_str().unwrap())
}

/// Sets the configuration `schedules_enabled` (a JWT is needed).
fn schedules_enabled(s: &HubSite, on: bool) {
    let (code, v) = s.call(
        "PATCH",
        "/api/configurations/",
        Some(&json!({"schedules_enabled": on})),
        Some(&jwt(s)),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["schedules_enabled"], on, "{v}");
}

/// Schedule `id`'s runs, oldest first.
fn runs(s: &HubSite, id: i64) -> Vec<Value> {
    let mut v = s.api("GET", &format!("/api/schedules/{id}/runs/?page_size=0"), None, 200)["results"]
        .as_array()
        .unwrap()
        .clone();
    v.reverse();
    v
}

/// Waits until schedule `id` has `n` runs or more, none of them still
/// `pending` (panics after `limit`).
fn wait_runs(s: &HubSite, id: i64, n: usize, limit: Duration) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let r = runs(s, id);
        // A run is recorded `pending` and becomes `started` (or `failed`)
        // once its job is written, a moment later: wait for that too.
        if r.len() >= n && r.iter().all(|x| x["outcome"] != "pending") {
            return r;
        }
        assert!(
            t0.elapsed() < limit,
            "schedule {id}: {} runs after {limit:?}, not {n}: {r:?}\nhub log:\n{}",
            r.len(),
            s.log("hub.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A schedule of `paths` on this site, every minute; its id.
fn minute_schedule(s: &HubSite, paths: &[&str], enabled: bool) -> i64 {
    let x = s.api(
        "POST",
        "/api/schedules/",
        Some(
            json!({"name": "every minute", "site": s.site, "managed_paths": paths, "minute": "*", "enabled": enabled}),
        ),
        201,
    );
    x["id"].as_i64().unwrap()
}

fn subscribe(s: &HubSite, id: i64, workflow: &str) {
    s.api(
        "POST",
        &format!("/api/schedules/{id}/workflows/"),
        Some(json!({"workflow": workflow})),
        201,
    );
}

/// The body of the first message in `queue` (taken off it), waiting up to
/// 30 s for the hub to publish it.
fn discovery_message(queue: &str) -> String {
    common::agent::rt().block_on(async {
        let t0 = Instant::now();
        loop {
            // A fresh channel each time: asking for a queue not declared
            // yet closes the channel.
            let c = common::agent::Client::connect().await;
            let got =
                c.ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true })
                    .await
                    .ok()
                    .flatten();
            if let Some(m) = got {
                return String::from_utf8_lossy(&m.delivery.data).into_owned();
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "nothing published to {queue}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn schedules_round_trip_in_the_seeds_fields_and_bad_cron_text_is_a_400_naming_the_field() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    s.create_site(&s.site);
    let site_id = s.site_id();

    let x = s.api(
        "POST",
        "/api/schedules/",
        Some(
            json!({"name": "nightly", "site": s.site, "managed_paths": ["/mmfs1/data"],
                    "minute": "0", "hour": "3", "day_of_week": "mon-fri"}),
        ),
        201,
    );
    let id = x["id"].as_i64().unwrap();
    let want: BTreeSet<String> = [
        "id",
        "url",
        "name",
        "site",
        "space",
        "enabled",
        "discovery",
        "discovery_options",
        "managed_paths",
        "minute",
        "hour",
        "day_of_week",
        "day_of_month",
        "month_of_year",
        "last_run_at",
        "next_run_at",
        "runs",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    assert_eq!(keys(&x), want, "{x}");
    assert_eq!(x["url"], format!("{}/api/schedules/{id}/", s.url));
    assert_eq!(x["runs"], format!("{}/api/schedules/{id}/runs/", s.url));
    assert_eq!(x["site"], s.site.as_str());
    assert_eq!(x["space"], Value::Null);
    assert_eq!(x["enabled"], true);
    assert_eq!(x["discovery"], Value::Null);
    assert_eq!(x["discovery_options"], json!({}));
    assert_eq!(x["managed_paths"], json!(["/mmfs1/data"]));
    assert_eq!(
        (
            &x["minute"],
            &x["hour"],
            &x["day_of_week"],
            &x["day_of_month"],
            &x["month_of_year"]
        ),
        (&json!("0"), &json!("3"), &json!("mon-fri"), &json!("*"), &json!("*"))
    );
    assert_eq!(x["last_run_at"], Value::Null);
    // The site has no time zone: UTC, 03:00 on a weekday.
    let next: Timestamp = x["next_run_at"].as_str().unwrap().parse().unwrap();
    let utc = jiff::tz::TimeZone::UTC.to_datetime(next);
    assert_eq!((utc.hour(), utc.minute(), utc.second()), (3, 0, 0), "{x}");
    assert!(!matches!(
        utc.weekday(),
        jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
    ));
    // In the site's time zone once it has one: 03:00 in Kolkata (UTC+5:30,
    // no DST) is 21:30 UTC the day before.
    s.api(
        "PATCH",
        &format!("/api/sites/{site_id}/"),
        Some(json!({"timezone": "Asia/Kolkata"})),
        200,
    );
    let x = s.api("GET", &format!("/api/schedules/{id}/"), None, 200);
    assert!(x["next_run_at"].as_str().unwrap().ends_with("T21:30:00.000000Z"), "{x}");

    // The list, with the site filter.
    let all = s.api("GET", "/api/schedules/", None, 200);
    assert_eq!(all["count"], 1, "{all}");
    assert_eq!(all["results"][0], x);
    let mine = s.api("GET", &format!("/api/schedules/?site_id={site_id}"), None, 200);
    assert_eq!(mine["count"], 1, "{mine}");
    let none = s.api("GET", "/api/schedules/?site_id=999999", None, 200);
    assert_eq!(none["count"], 0, "{none}");

    // Bad cron text: 400 naming the field and what Celery finds wrong;
    // nothing changes.
    for (field, text, says) in [
        ("hour", "25", "25"),
        ("minute", "*/0", "*/0"),
        ("day_of_week", "mon-frx", "frx"),
        ("day_of_week", "7", "7"),
        ("month_of_year", "13", "13"),
    ] {
        let (code, v) = s.call(
            "PATCH",
            &format!("/api/schedules/{id}/"),
            Some(&json!({field: text})),
            Some(&format!("Api-Key {}", s.key())),
        );
        assert_eq!(code, 400, "{field}={text}: {v}");
        let d = v["detail"].as_str().unwrap();
        assert!(
            d.starts_with(&format!("{field}: ")) && d.contains(says),
            "{field}={text}: {d}"
        );
    }
    let v = s.api(
        "POST",
        "/api/schedules/",
        Some(json!({"name": "feb30", "site": s.site, "managed_paths": ["/a"], "day_of_month": "30", "month_of_year": "2"})),
        400,
    );
    assert!(v["detail"].as_str().unwrap().starts_with("day_of_month: "), "{v}");
    assert_eq!(s.api("GET", &format!("/api/schedules/{id}/"), None, 200), x);
    // Other refusals name their field.
    for (body, says) in [
        (
            json!({"name": "n", "site": s.site}),
            "managed_paths: This field is required.",
        ),
        (
            json!({"site": s.site, "managed_paths": ["/a"]}),
            "name: This field is required.",
        ),
        (
            json!({"name": "n", "site": s.site, "managed_paths": ["/a", "rel"]}),
            "managed_paths[1]: must be an absolute path",
        ),
        (
            json!({"name": "n", "site": "nowhere", "managed_paths": ["/a"]}),
            "site: no site called",
        ),
        (
            json!({"name": "n", "site": s.site, "managed_paths": ["/a"], "discovery": "flat"}),
            "discovery: ",
        ),
        (
            json!({"name": "n", "site": s.site, "managed_paths": ["/a"], "colour": 1}),
            "colour",
        ),
    ] {
        let v = s.api("POST", "/api/schedules/", Some(body.clone()), 400);
        assert!(v["detail"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert_eq!(s.api("GET", "/api/schedules/", None, 200)["count"], 1);
    // The seed's object form of managed_paths: its keys are the paths.
    let o = s.api(
        "POST",
        "/api/schedules/",
        Some(json!({"name": "obj", "site": s.site, "managed_paths": {"/b": {}, "/a": {}}, "enabled": false})),
        201,
    );
    assert_eq!(o["managed_paths"], json!(["/a", "/b"]), "{o}");
    assert_eq!(o["next_run_at"], Value::Null, "disabled: {o}");
    s.api("DELETE", &format!("/api/schedules/{}/", o["id"]), None, 204);

    // PATCH.
    let p = s.api(
        "PATCH",
        &format!("/api/schedules/{id}/"),
        Some(json!({"name": "nightly2", "space": "mmfs1", "discovery": "recursive",
                    "discovery_options": {"skip_missing": true}, "managed_paths": ["/mmfs1/data", "/mmfs1/more"]})),
        200,
    );
    assert_eq!(p["name"], "nightly2");
    assert_eq!(p["space"], "mmfs1");
    assert_eq!(p["discovery"], "recursive");
    assert_eq!(p["discovery_options"], json!({"skip_missing": true}));
    assert_eq!(p["managed_paths"], json!(["/mmfs1/data", "/mmfs1/more"]));

    // Subscribed workflows.
    let base = format!("/api/schedules/{id}/workflows/");
    let v = s.api("POST", &base, Some(json!({"workflow": "nope"})), 400);
    assert!(v["detail"].as_str().unwrap().starts_with("workflow: "), "{v}");
    let v = s.api(
        "POST",
        &base,
        Some(json!({"workflow": "premigrate", "fields": {"lock_level": "bogus"}})),
        400,
    );
    assert!(v["detail"].as_str().unwrap().contains("lock_level"), "{v}");
    let v = s.api(
        "POST",
        &base,
        Some(json!({"workflow": "premigrate", "queue": "nope"})),
        400,
    );
    assert!(v["detail"].as_str().unwrap().starts_with("queue: "), "{v}");
    let w = s.api("POST", &base, Some(json!({"workflow": "premigrate"})), 201);
    let wid = w["id"].as_i64().unwrap();
    let want: BTreeSet<String> = ["id", "url", "workflow", "site", "queue", "fields"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys(&w), want, "{w}");
    assert_eq!(w["url"], format!("{}{base}{wid}/", s.url));
    assert_eq!(
        (&w["workflow"], &w["site"], &w["queue"], &w["fields"]),
        (&json!("premigrate"), &json!(s.site), &json!("default"), &json!({}))
    );
    let l = s.api("GET", &base, None, 200);
    assert_eq!((l["count"].as_i64(), &l["results"][0]), (Some(1), &w), "{l}");
    assert_eq!(s.api("GET", &format!("{base}{wid}/"), None, 200), w);
    let w2 = s.api(
        "PATCH",
        &format!("{base}{wid}/"),
        Some(json!({"fields": {"lock_level": "partial"}})),
        200,
    );
    assert_eq!(w2["fields"], json!({"lock_level": "partial"}));

    // No runs yet; 404s.
    let r = s.api("GET", &format!("/api/schedules/{id}/runs/"), None, 200);
    assert_eq!(r["count"], 0, "{r}");
    for (method, path) in [
        ("GET", "/api/schedules/999999/".to_string()),
        ("GET", "/api/schedules/abc/".to_string()),
        ("PATCH", "/api/schedules/999999/".to_string()),
        ("DELETE", "/api/schedules/999999/".to_string()),
        ("GET", "/api/schedules/999999/runs/".to_string()),
        ("POST", "/api/schedules/999999/run/".to_string()),
        ("GET", "/api/schedules/999999/workflows/".to_string()),
        ("GET", format!("{base}999999/")),
        ("DELETE", format!("{base}999999/")),
        ("GET", format!("/api/schedules/{id}/workflows/x/")),
    ] {
        let body = (method == "PATCH").then(|| json!({}));
        s.api(method, &path, body, 404);
    }

    // A run now of a schedule without workflows is recorded as failed.
    s.api("DELETE", &format!("{base}{wid}/"), None, 204);
    let v = s.api("POST", &format!("/api/schedules/{id}/run/"), None, 400);
    assert!(
        v["detail"].as_str().unwrap().contains("no workflow is subscribed"),
        "{v}"
    );
    let r = runs(&s, id);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (&r[0]["outcome"], &r[0]["manual"], &r[0]["job"]),
        (&json!("failed"), &json!(true), &Value::Null)
    );

    s.api("DELETE", &format!("/api/schedules/{id}/"), None, 204);
    s.api("GET", &format!("/api/schedules/{id}/"), None, 404);
    s.api("GET", &format!("/api/schedules/{id}/runs/"), None, 404);
    assert!(!s.log("hub.log").contains("panicked"));
}

/// About 3 minutes (at most 3.5): the first run (up to a minute away),
/// then two more minutes, the hub killed in the 59th second of each of
/// the first two.
#[test]
fn a_minute_schedule_fires_once_per_minute_across_hubs_killed_in_the_59th_second() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::running(sqlite(), 1, "");
    let tree = s.data().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..3 {
        std::fs::write(tree.join(format!("f{i}")), b"x").unwrap();
    }
    let w = s.workflow("dynamo.tasks.stat_paths", json!({}));
    let id = minute_schedule(&s, &[tree.to_str().unwrap()], true);
    subscribe(&s, id, &w);

    let first = wait_runs(&s, id, 1, Duration::from_secs(75));
    let m = secs(&first[0]["due_at"]);
    assert_eq!(m, m.floor(), "a due time is a whole minute: {first:?}");
    assert_eq!(m as i64 % 60, 0, "{first:?}");
    // Kill the hub in the 59th second of the first run's minute and start
    // it again at once: it answers within that second, and must not run
    // the minute it already ran. Kill it in the 59th second of the next
    // minute and start it again once the minute has turned: it must run
    // the minute it was down into, once.
    let mut killed = Vec::new();
    for (k, restart_after) in [(0.0, None), (60.0, Some(61.5))] {
        sleep_until(m + k + 59.0);
        let at = epoch();
        assert!(
            at - m - k >= 59.0 && at - m - k < 59.9,
            "the test machine is too slow to kill in the 59th second ({:.3} s into the minute)",
            at - m - k
        );
        s.kill_hub();
        if let Some(t) = restart_after {
            sleep_until(m + k + t);
        }
        s.start_hub();
        eprintln!(
            "hub killed at :{:.3}, answering again {:.3} s later",
            at - m - k,
            epoch() - at
        );
        killed.push(at);
    }
    sleep_until(m + 120.0 + 10.0);
    let all = runs(&s, id);
    let dues: Vec<i64> = all.iter().map(|r| secs(&r["due_at"]) as i64).collect();
    let want: Vec<i64> = (0..3).map(|k| m as i64 + 60 * k).collect();
    assert_eq!(
        dues,
        want,
        "due minutes not consecutive, doubled or missing: {all:#?}\nhub log:\n{}",
        s.log("hub.log")
    );
    // Each minute ran by the hub alive then: the one the second restart
    // was down into by the restarted hub.
    assert!(
        secs(&all[1]["at"]) >= killed[0] && secs(&all[1]["at"]) < killed[1],
        "{:?}",
        all[1]
    );
    assert!(secs(&all[2]["at"]) >= m + 121.5, "{:?}", all[2]);
    let mut jobs = BTreeSet::new();
    for r in &all {
        assert_eq!(r["outcome"], "started", "{r}");
        assert_eq!(r["manual"], false, "{r}");
        assert_eq!(r["missed"], 0, "{r}");
        assert!(jobs.insert(r["job"].as_i64().unwrap()), "a job of two runs: {all:?}");
    }
    // Exactly one job per run, each finished.
    let listed = s.api("GET", &format!("/api/jobs/?schedule_ids={id}&page_size=0"), None, 200);
    let listed: BTreeSet<i64> = listed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, jobs, "the schedule's jobs are its runs' jobs");
    for j in &jobs {
        let done = s.wait_job(*j, Duration::from_secs(60));
        assert_eq!(done["state"], "SUCCESS", "{done}");
        assert_eq!(done["owner"], json!({"type": "system", "id": -2, "name": "system"}));
    }
}

/// About a minute: a run now, then the next due minute.
#[test]
fn a_run_due_while_the_previous_runs_job_still_goes_is_skipped_and_the_skip_is_recorded() {
    if !common::agent::broker_or_skip() {
        return;
    }
    // No agent: the job of a run waits in its queue and never finishes.
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    s.create_site(&s.site);
    let w = s.workflow("dynamo.tasks.stat_paths", json!({}));
    let id = minute_schedule(&s, &["/mmfs1/data"], false);
    subscribe(&s, id, &w);
    s.api(
        "PATCH",
        &format!("/api/schedules/{id}/"),
        Some(json!({"discovery_options": {"skip_missing": true}})),
        200,
    );

    // Run now: works on a disabled schedule; 201 with the job.
    let r = s.api("POST", &format!("/api/schedules/{id}/run/"), None, 201);
    assert_eq!(r["id"], id, "{r}");
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{r}");
    let job = jobs[0]["id"].as_i64().unwrap();
    assert_eq!(jobs[0]["workflow"], w.as_str());
    assert_eq!(jobs[0]["input_paths"], json!([{"path": "/mmfs1/data"}]), "{r}");
    assert_eq!(r["run"][0]["outcome"], "started", "{r}");
    assert_eq!(r["run"][0]["job"], job, "{r}");
    assert_eq!(r["run"][0]["manual"], true, "{r}");
    // Its discovery carries the schedule's paths and discovery options.
    let body = discovery_message(&format!("{}.default#discovery", s.site));
    assert!(
        body.contains(r#""skip_missing":true"#) && body.contains(r#""paths":["/mmfs1/data"]"#),
        "{body}"
    );
    // Again while it goes: 409 with the job's state.
    let again = s.api("POST", &format!("/api/schedules/{id}/run/"), None, 409);
    assert_eq!(again["state"], "PENDING", "{again}");
    assert!(
        again["detail"].as_str().unwrap().contains(&format!("job {job}")),
        "{again}"
    );

    // Enabled, it is due at the next minute, and skipped.
    s.api(
        "PATCH",
        &format!("/api/schedules/{id}/"),
        Some(json!({"enabled": true})),
        200,
    );
    let all = wait_runs(&s, id, 2, Duration::from_secs(75));
    let skip = &all[1];
    assert_eq!(skip["outcome"], "skipped", "{all:?}");
    assert_eq!(skip["manual"], false, "{skip}");
    assert_eq!(skip["job"], Value::Null, "{skip}");
    let why = skip["detail"].as_str().unwrap();
    assert!(
        why.contains(&format!("job {job} is still PENDING")),
        "the skip does not say why: {why}"
    );
    // No second job; the due time is dealt with all the same.
    let listed = s.api("GET", &format!("/api/jobs/?schedule_ids={id}"), None, 200);
    assert_eq!(listed["count"], 1, "{listed}");
    let x = s.api("GET", &format!("/api/schedules/{id}/"), None, 200);
    assert_eq!(x["last_run_at"], skip["due_at"], "{x}");
    assert!(s.log("hub.log").contains("a schedule's run was skipped"));
}

/// About 2 minutes: a minute passed over, then a minute run.
#[test]
fn schedules_enabled_false_stops_every_schedule_firing_until_set_again() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    s.create_site(&s.site);
    schedules_enabled(&s, false);
    let w = s.workflow("dynamo.tasks.stat_paths", json!({}));
    let id = minute_schedule(&s, &["/mmfs1/data"], true);
    subscribe(&s, id, &w);
    let x = s.api("GET", &format!("/api/schedules/{id}/"), None, 200);
    assert_eq!(x["next_run_at"], Value::Null, "{x}");

    // A due minute passes: not run, not recorded, passed over.
    let passed = minute_of(epoch()) as f64 + 60.0;
    sleep_until(passed + 8.0);
    assert_eq!(runs(&s, id), Vec::<Value>::new(), "fired with schedules_enabled false");
    let x = s.api("GET", &format!("/api/schedules/{id}/"), None, 200);
    assert_eq!(secs(&x["last_run_at"]), passed, "{x}");

    // Set again: the next minute runs, and the passed one is not caught up.
    schedules_enabled(&s, true);
    let x = s.api("GET", &format!("/api/schedules/{id}/"), None, 200);
    assert_eq!(secs(&x["next_run_at"]), passed + 60.0, "{x}");
    let all = wait_runs(&s, id, 1, Duration::from_secs(75));
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(secs(&all[0]["due_at"]), passed + 60.0, "{all:?}");
    assert_eq!((&all[0]["outcome"], &all[0]["missed"]), (&json!("started"), &json!(0)));
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn new_job(site: &str) -> NewJob {
    NewJob {
        workflow: "premigrate".into(),
        fields: json!({}),
        discovery: Some("recursive".into()),
        site: site.into(),
        queue: "default".into(),
        friendly_name: "Pre-Stage of '/data' on 's1'".into(),
        owner: ferry::hub::submit::system(),
        clientkey_id: None,
        input_paths: json!(["/data"]),
        request: None,
        resubmitted_from: None,
        record_files: Default::default(),
        dry_run: false,
        sync: None,
    }
}

fn roots(_: i64) -> Vec<RootTask> {
    vec![RootTask {
        task_id: uuid::Uuid::new_v4().to_string(),
        tasktype: "dynamo.tasks.recursive_navigate".into(),
        site: "s1".into(),
        queue: "s1.default#discovery".into(),
        headers: "[]".into(),
        body: "{}".into(),
    }]
}

/// A new schedule of site `s1` on `/data` at `minute` past `hour`.
fn schedule(name: &str, minute: &str, hour: &str) -> Schedule {
    Schedule {
        id: 0,
        name: name.into(),
        site: "s1".into(),
        space: None,
        enabled: true,
        discovery: None,
        discovery_options: json!({}),
        managed_paths: json!(["/data"]),
        minute: minute.into(),
        hour: hour.into(),
        day_of_week: "*".into(),
        day_of_month: "*".into(),
        month_of_year: "*".into(),
        last_run_at: None,
        created: 0,
        timezone: None,
    }
}

#[test]
fn the_store_records_a_run_and_writes_its_job_once_on_both_engines() {
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let e = db.engine;
            let sched = schedule("n", "*", "*");
            let id = store.create_schedule(&sched).await.unwrap();
            let sub = ScheduleWorkflow {
                id: 0,
                schedule_id: id,
                workflow: "premigrate".into(),
                site: "s1".into(),
                queue: "default".into(),
                fields: json!({}),
            };
            let sid = store.create_schedule_workflow(&sub).await.unwrap();
            let firing = |after: Option<Option<i64>>, due: i64| Firing {
                schedule_id: id,
                after,
                due_at: due,
                at: due + 5,
                missed: 0,
                note: String::new(),
            };
            // A due run: last_run_at moves, one pending row per workflow.
            let Begun::Recorded(rows) = store.begin_run(&firing(Some(None), 60_000_000)).await.unwrap() else {
                panic!("{e}: not recorded")
            };
            assert_eq!(rows.len(), 1, "{e}");
            assert_eq!(rows[0].outcome, outcome::PENDING, "{e}");
            assert_eq!(rows[0].schedule_workflow_id, Some(sid), "{e}");
            let s = store.schedule(id).await.unwrap().unwrap();
            assert_eq!(s.last_run_at, Some(60_000_000), "{e}");
            // The same due time again, from the old last_run_at: nothing.
            assert_eq!(
                store.begin_run(&firing(Some(None), 60_000_000)).await.unwrap(),
                Begun::Moved,
                "{e}"
            );
            // Its job, once, however often (and however concurrently) tried.
            let run = rows[0].id;
            let new = new_job("s1");
            let (a, b) = tokio::join!(
                store.start_run_job(run, id, &new, roots),
                store.start_run_job(run, id, &new, roots)
            );
            let made: Vec<i64> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
            assert_eq!(made.len(), 1, "{e}: {made:?}");
            assert_eq!(store.start_run_job(run, id, &new, roots).await.unwrap(), None, "{e}");
            assert!(!store.fail_run(run, "late").await.unwrap(), "{e}");
            let r = store.schedule_run(run).await.unwrap().unwrap();
            assert_eq!((r.outcome.as_str(), r.job_id), (outcome::STARTED, Some(made[0])), "{e}");
            let mut f = Filter::default();
            f.any_of("schedule_id", vec![Bind::Int(id)]);
            let (n, jobs) = store.jobs(&f, Page { offset: 0, limit: None }).await.unwrap();
            assert_eq!((n, jobs[0].id), (1, made[0]), "{e}");
            // Its job is PENDING: the next due run is skipped and recorded;
            // a run by hand is refused and not recorded.
            let Begun::Skipped(skip, st) = store
                .begin_run(&firing(Some(Some(60_000_000)), 120_000_000))
                .await
                .unwrap()
            else {
                panic!("{e}: not skipped")
            };
            assert_eq!(st, "PENDING", "{e}");
            assert!(
                skip.detail.contains(&format!("job {} is still PENDING", made[0])),
                "{e}: {skip:?}"
            );
            let Begun::Skipped(by_hand, _) = store.begin_run(&firing(None, 130_000_000)).await.unwrap() else {
                panic!("{e}: a run by hand went ahead")
            };
            assert_eq!(by_hand.id, 0, "{e}");
            let (count, listed) = store.schedule_runs(id, Page { offset: 0, limit: None }).await.unwrap();
            assert_eq!(count, 2, "{e}");
            assert_eq!(listed[0].outcome, outcome::SKIPPED, "{e}: newest first");
            assert_eq!(
                store.schedule(id).await.unwrap().unwrap().last_run_at,
                Some(120_000_000),
                "{e}"
            );
            // A pending row whose job could not be submitted fails with why.
            sqlx::query("UPDATE jobs SET state = 'SUCCESS'")
                .execute(&store.pool)
                .await
                .unwrap();
            let Begun::Recorded(rows) = store
                .begin_run(&firing(Some(Some(120_000_000)), 180_000_000))
                .await
                .unwrap()
            else {
                panic!("{e}: not recorded")
            };
            assert_eq!(store.pending_runs(i64::MAX).await.unwrap().len(), 1, "{e}");
            assert!(store.fail_run(rows[0].id, "workflow: gone").await.unwrap(), "{e}");
            assert!(store.pending_runs(i64::MAX).await.unwrap().is_empty(), "{e}");
            assert_eq!(
                store.schedule_run(rows[0].id).await.unwrap().unwrap().outcome,
                outcome::FAILED,
                "{e}"
            );
            // A changed crontab restarts the count; the scheduler's
            // last_run_at is otherwise never written back.
            let mut s = store.schedule(id).await.unwrap().unwrap();
            s.last_run_at = Some(1);
            store.update_schedule(&s, None).await.unwrap();
            assert_eq!(
                store.schedule(id).await.unwrap().unwrap().last_run_at,
                Some(180_000_000),
                "{e}"
            );
            store.update_schedule(&s, Some(190_000_000)).await.unwrap();
            assert_eq!(
                store.schedule(id).await.unwrap().unwrap().last_run_at,
                Some(190_000_000),
                "{e}"
            );
            assert!(
                store.pass_over(id, Some(190_000_000), 240_000_000).await.unwrap(),
                "{e}"
            );
            assert!(
                !store.pass_over(id, Some(190_000_000), 300_000_000).await.unwrap(),
                "{e}"
            );
            // Pruning keeps nothing older; deleting cascades.
            assert_eq!(store.prune_runs(175_000_000).await.unwrap(), 2, "{e}");
            assert!(store.delete_schedule(id).await.unwrap(), "{e}");
            assert!(store.schedule_workflows(id).await.unwrap().is_empty(), "{e}");
            assert_eq!(
                store
                    .schedule_runs(id, Page { offset: 0, limit: None })
                    .await
                    .unwrap()
                    .0,
                0,
                "{e}"
            );
        });
    }
}

#[test]
fn the_schedule_editor_saves_a_schedule_and_its_subscriptions_together_or_not_at_all_on_both_engines() {
    for db in both() {
        rt().block_on(async {
            let store = Store::open(&db.url).await.unwrap();
            let e = db.engine;
            let mut sched = schedule("edited", "0", "2");
            let sub = |workflow: &str, id: i64| ScheduleWorkflow {
                id,
                schedule_id: 0,
                workflow: workflow.into(),
                site: "s1".into(),
                queue: "default".into(),
                fields: json!({}),
            };
            // New: the schedule and both subscriptions.
            let id = store
                .save_schedule(&sched, None, &[sub("premigrate", 0), sub("migrate", 0)])
                .await
                .unwrap()
                .unwrap();
            let had = store.schedule_workflows(id).await.unwrap();
            assert_eq!(
                had.iter()
                    .map(|w| (w.workflow.as_str(), w.schedule_id))
                    .collect::<Vec<_>>(),
                [("premigrate", id), ("migrate", id)],
                "{e}"
            );
            // Changed: one kept and changed, one left out (deleted), one new.
            sched.id = id;
            sched.hour = "3".into();
            let mut kept = had[0].clone();
            kept.queue = "bulk".into();
            store
                .save_schedule(&sched, Some(7), &[kept.clone(), sub("recall", 0)])
                .await
                .unwrap()
                .unwrap();
            let now = store.schedule_workflows(id).await.unwrap();
            assert_eq!(now.len(), 2, "{e}: {now:?}");
            assert_eq!(now[0], kept, "{e}: kept by id, changed");
            assert_eq!(now[1].workflow, "recall", "{e}");
            assert!(now.iter().all(|w| w.workflow != "migrate"), "{e}: left out, deleted");
            let s = store.schedule(id).await.unwrap().unwrap();
            assert_eq!((s.hour.as_str(), s.last_run_at), ("3", Some(7)), "{e}");
            // A subscription of another schedule: nothing is written, not
            // even the schedule's own fields.
            let fresh = Schedule { id: 0, ..sched.clone() };
            let other = store
                .save_schedule(&fresh, None, &[sub("migrate", 0)])
                .await
                .unwrap()
                .unwrap();
            let foreign = store.schedule_workflows(other).await.unwrap().remove(0);
            sched.hour = "4".into();
            assert_eq!(
                store
                    .save_schedule(&sched, None, &[kept.clone(), foreign])
                    .await
                    .unwrap(),
                None,
                "{e}"
            );
            assert_eq!(store.schedule(id).await.unwrap().unwrap().hour, "3", "{e}: rolled back");
            assert_eq!(store.schedule_workflows(id).await.unwrap(), now, "{e}: rolled back");
            // A schedule that is gone.
            assert!(store.delete_schedule(id).await.unwrap());
            assert_eq!(store.save_schedule(&sched, None, &[]).await.unwrap(), None, "{e}");
        });
    }
}

/// A `bidirectional_snapdiff` schedule takes one workflow, and only
/// `bidirectional_sync` towards another site; that workflow runs only
/// from such a schedule (never submitted, never on another discovery);
/// and a schedule's discovery never changes to or from it (003:L10817-
/// 10835, L11595-11597).
#[test]
fn a_bidirectional_schedule_takes_one_bidirectional_sync_to_another_site_and_keeps_its_discovery() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let mut s = HubSite::new(sqlite(), 0, "");
    s.start_hub();
    s.create_site(&s.site);
    let other = format!("{}-2", s.site);
    s.create_site(&other);
    let x = s.api(
        "POST",
        "/api/schedules/",
        Some(
            json!({"name": "both", "site": s.site, "managed_paths": ["/mmfs1/set"], "minute": "0",
                    "discovery": "bidirectional_snapdiff"}),
        ),
        201,
    );
    let id = x["id"].as_i64().unwrap();
    let sub = |body: Value, want: u16| s.api("POST", &format!("/api/schedules/{id}/workflows/"), Some(body), want);
    let refused = [
        (
            json!({"workflow": "site_sync", "fields": {"destination": other}}),
            "runs only the bidirectional_sync workflow",
        ),
        (json!({"workflow": "bidirectional_sync"}), "destinationsite"),
        (
            json!({"workflow": "bidirectional_sync", "fields": {"destinationsite": s.site}}),
            "must be another site",
        ),
    ];
    for (body, why) in refused {
        let v = sub(body.clone(), 400);
        assert!(v["detail"].as_str().unwrap().contains(why), "{body}: {v}");
    }
    sub(
        json!({"workflow": "bidirectional_sync", "fields": {"destinationsite": other}}),
        201,
    );
    let v = sub(
        json!({"workflow": "bidirectional_sync", "fields": {"destinationsite": other}}),
        400,
    );
    assert!(v["detail"].as_str().unwrap().contains("takes one workflow"), "{v}");
    // The discovery stays.
    for d in [json!("snapdiff"), json!(null)] {
        let v = s.api(
            "PATCH",
            &format!("/api/schedules/{id}/"),
            Some(json!({"discovery": d})),
            400,
        );
        assert!(v["detail"].as_str().unwrap().contains("cannot change"), "{v}");
    }
    // Nor does another schedule become one.
    let y = s.api(
        "POST",
        "/api/schedules/",
        Some(
            json!({"name": "one way", "site": s.site, "managed_paths": ["/mmfs1/other"], "minute": "0",
                    "discovery": "snapdiff"}),
        ),
        201,
    );
    let v = s.api(
        "PATCH",
        &format!("/api/schedules/{}/", y["id"]),
        Some(json!({"discovery": "bidirectional_snapdiff"})),
        400,
    );
    assert!(v["detail"].as_str().unwrap().contains("cannot change"), "{v}");
    // Not submitted by hand, nor on another discovery from a schedule.
    let v = s.api(
        "POST",
        "/api/file/workflow/",
        Some(
            json!({"workflow": "bidirectional_sync", "site": s.site, "paths": ["/mmfs1/set"],
                    "fields": {"destinationsite": other}}),
        ),
        400,
    );
    assert!(v["detail"].as_str().unwrap().contains("only from a schedule"), "{v}");
    let v = s.api(
        "POST",
        &format!("/api/schedules/{}/workflows/", y["id"]),
        Some(json!({"workflow": "bidirectional_sync", "fields": {"destinationsite": other}})),
        400,
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("runs only with the bidirectional_snapdiff"),
        "{v}"
    );
}
