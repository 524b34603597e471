//! The agent's control channel end to end, on the real broker and a real
//! `ferry agent` process: a hub's `cancel` and `snapshot` messages on the
//! fanout exchange `ferry.control` revoke the tasks of a cancelled job
//! before they run, and stop a running discovery from publishing more.
//!
//! The exchange is shared by every agent on the broker, so each test
//! cancels only fresh random root ids and looks for them in its own
//! agent's log.

mod common;

use common::agent::*;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// Unix seconds from now.
fn unix_in(secs: i64) -> i64 {
    jiff::Timestamp::now().as_second() + secs
}

/// Publishes `body` to the control exchange (declared as hubs declare it:
/// fanout, durable).
async fn control(ch: &Channel, body: &[u8]) {
    ch.exchange_declare(
        "ferry.control".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let props = BasicProperties::default().with_content_type("application/json".into());
    ch.basic_publish(
        "ferry.control".into(),
        "".into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Sends task `task` with `kwargs` as a task of the job whose root task is
/// `root` (the `root_id` header), replying to the client's queue; returns
/// its id.
async fn send_in_job(c: &Client, queue: &str, task: &str, kwargs: &Value, root: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let body = format!("[[], {kwargs}, {{\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}}]");
    c.publish_raw(
        queue,
        &[
            ("task", s(task)),
            ("id", s(&id)),
            ("root_id", s(root)),
            ("parent_id", s(root)),
            ("retries", AMQPValue::LongInt(0)),
        ],
        body.as_bytes(),
        true,
    )
    .await;
    id
}

/// Checks that `r` is the REVOKED answer to task `id` of a cancelled job.
fn assert_revoked(r: &Value, id: &str) {
    assert_eq!(r["status"], "REVOKED", "{r}");
    assert_eq!(r["task_id"], id, "{r}");
    assert_eq!(
        r["result"],
        json!({"exc_type": "TaskRevokedError", "exc_message": ["job cancelled"], "exc_module": "celery.exceptions"}),
        "{r}"
    );
    assert_eq!(r["children_count"], 0, "{r}");
    assert_eq!(r["children"], json!([]), "{r}");
}

/// The lines of the agent's log that mention `needle`.
fn lines_with(agent: &Agent, needle: &str) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A consumer of every task and worker event on `celeryev`.
async fn events(ch: &Channel) -> lapin::Consumer {
    ch.exchange_declare(
        "celeryev".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = temp_queue(ch).await;
    ch.queue_bind(
        q.as_str().into(),
        "celeryev".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        q.as_str().into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// The first event of `kind` from process `pid` that `pick` takes, with
/// its routing key (other agents share the exchange).
async fn event(events: &mut lapin::Consumer, kind: &str, pid: u32, pick: impl Fn(&Value) -> bool) -> (String, Value) {
    let t0 = Instant::now();
    loop {
        let left = LONG.saturating_sub(t0.elapsed());
        let d = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event from pid {pid}"))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&d.data).unwrap();
        if v["type"] == kind && v["pid"] == pid && pick(&v) {
            return (d.routing_key.as_str().to_string(), v);
        }
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn tasks_of_a_cancelled_job_are_revoked_and_other_jobs_run() {
    if !broker_or_skip() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut agent = Agent::new(&format!("metrics_listen = {addr}"));
    let a = agent.data().join("a");
    std::fs::write(&a, b"abc").unwrap();
    agent.start();
    let pid = agent.child.as_ref().unwrap().id();
    let q = agent.queue("worker");
    let (cancelled, other) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let (revoked, runs) = rt().block_on(async {
        let mut c = Client::connect().await;
        let ech = c.conn.create_channel().await.unwrap();
        let mut events = events(&ech).await;
        // Malformed control messages are logged once each and ignored.
        let marker = uuid::Uuid::new_v4().simple().to_string();
        control(&c.ch, format!("not json {marker}").as_bytes()).await;
        control(
            &c.ch,
            format!("{{\"op\": \"pause-{marker}\", \"jobs\": [7]}}").as_bytes(),
        )
        .await;
        let body = json!({"op": "cancel", "roots": [cancelled], "until": unix_in(600)});
        control(&c.ch, body.to_string().as_bytes()).await;
        agent.wait_log(&cancelled, LONG);
        let ignored = lines_with(&agent, &marker);
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert!(
            ignored[0].contains("WARN")
                && ignored[0].contains("ignoring a control message")
                && ignored[0].contains("the body is not JSON"),
            "{ignored:?}"
        );
        assert!(ignored[1].contains("unknown op"), "{ignored:?}");

        let kwargs = json!({"paths": [a.display().to_string()], "jobid": 7});
        let revoked = send_in_job(&c, &q, "dynamo.tasks.stat_paths", &kwargs, &cancelled).await;
        let r = c.reply_for(&revoked, LONG).await;
        assert_revoked(&r, &revoked);
        let runs = send_in_job(&c, &q, "dynamo.tasks.stat_paths", &kwargs, &other).await;
        let r = c.reply_for(&runs, LONG).await;
        assert_eq!(r["status"], "SUCCESS", "{r}");
        assert_eq!(r["result"]["status"]["summary"]["processed"], 1, "{r}");

        // Celery's task-revoked event, placed in its job.
        let (key, e) = event(&mut events, "task-revoked", pid, |e| e["uuid"] == revoked.as_str()).await;
        assert_eq!(key, "task.revoked");
        for (k, want) in [
            ("terminated", json!(false)),
            ("signum", json!(null)),
            ("expired", json!(false)),
            ("root_id", json!(cancelled)),
            ("parent_id", json!(cancelled)),
            ("jobid", json!(7)),
        ] {
            assert_eq!(e[k], want, "{k} in {e}");
        }
        // Heartbeats tell a hub that this agent obeys cancels.
        let (_, hb) = event(&mut events, "worker-heartbeat", pid, |_| true).await;
        assert_eq!(
            hb["capabilities"]["control"],
            json!(["cancel-v1", "pause-v1", "tasktype-pause-v1"]),
            "{hb}"
        );
        (revoked, runs)
    });
    // It never started; the other task did.
    let started = |id: &str| {
        lines_with(&agent, id)
            .iter()
            .filter(|l| l.contains("task started"))
            .count()
    };
    assert_eq!(started(&revoked), 0, "{}", agent.log());
    assert_eq!(started(&runs), 1, "{}", agent.log());
    let m = http_get(&addr, "/metrics");
    for line in [
        "ferry_agent_tasks_total{outcome=\"revoked\"} 1",
        "ferry_agent_tasks_total{outcome=\"succeeded\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    assert!(agent.stop().success(), "{}", agent.log());
}

#[test]
fn an_agent_started_after_a_cancel_learns_it_from_a_snapshot() {
    // It sends snapshots, which an agent waiting for its own must not take.
    let _shared = common::agent::control_shared();
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let a = agent.data().join("a");
    std::fs::write(&a, b"abc").unwrap();
    let q = agent.queue("worker");
    let missed = uuid::Uuid::new_v4().to_string();
    let heard = uuid::Uuid::new_v4().to_string();
    let expired = uuid::Uuid::new_v4().to_string();
    let kwargs = json!({"paths": [a.display().to_string()]});
    rt().block_on(async {
        let mut c = Client::connect().await;
        // Cancelled while the agent is not running: it cannot hear it.
        let body = json!({"op": "cancel", "roots": [missed], "until": unix_in(600)});
        control(&c.ch, body.to_string().as_bytes()).await;
        agent.start();
        let id = send_in_job(&c, &q, "dynamo.tasks.stat_paths", &kwargs, &missed).await;
        let r = c.reply_for(&id, LONG).await;
        assert_eq!(r["status"], "SUCCESS", "the agent cannot know of the cancel yet: {r}");

        // A cancel it hears, then a snapshot that does not list it: a
        // snapshot adds, it does not replace. An entry past its `until` is
        // not taken.
        let body = json!({"op": "cancel", "roots": [heard], "until": unix_in(600)});
        control(&c.ch, body.to_string().as_bytes()).await;
        agent.wait_log(&heard, LONG);
        let body = json!({"op": "snapshot", "cancel": [
            {"root": missed, "until": unix_in(600)},
            {"root": expired, "until": unix_in(-10)},
        ], "pause": []});
        control(&c.ch, body.to_string().as_bytes()).await;
        agent.wait_log(&missed, LONG);
        let learned = lines_with(&agent, &missed);
        assert!(
            learned.len() == 1 && learned[0].contains("control snapshot added roots") && learned[0].contains("added=1"),
            "{learned:?}"
        );

        for root in [&missed, &heard] {
            let id = send_in_job(&c, &q, "dynamo.tasks.stat_paths", &kwargs, root).await;
            let r = c.reply_for(&id, LONG).await;
            assert_revoked(&r, &id);
        }
        let id = send_in_job(&c, &q, "dynamo.tasks.stat_paths", &kwargs, &expired).await;
        let r = c.reply_for(&id, LONG).await;
        assert_eq!(r["status"], "SUCCESS", "an expired entry cancels nothing: {r}");
    });
    assert!(agent.stop().success(), "{}", agent.log());
}

#[test]
fn an_agent_waits_for_a_snapshot_before_it_takes_tasks_queued_while_it_was_away() {
    let _alone = common::agent::control_alone();
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("control_wait = 30");
    let a = agent.data().join("a");
    std::fs::write(&a, b"abc").unwrap();
    let q = agent.queue("worker");
    let (missed, other) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let kwargs = json!({"paths": [a.display().to_string()]});
    rt().block_on(async {
        let mut c = Client::connect().await;
        let ech = c.conn.create_channel().await.unwrap();
        let mut events = events(&ech).await;
        // Queued while no agent runs: a task of a job cancelled meanwhile,
        // and one of a job that is not.
        declare_durable(&c.ch, &q).await;
        let refused = send_in_job(&c, &q, "dynamo.tasks.stat_paths", &kwargs, &missed).await;
        let runs = send_in_job(&c, &q, "dynamo.tasks.stat_paths", &kwargs, &other).await;
        agent.spawn();
        let pid = agent.child.as_ref().unwrap().id();
        // The agent says it is online and takes nothing until a snapshot
        // comes (as a hub answers worker-online).
        event(&mut events, "worker-online", pid, |_| true).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!agent.log().contains("connected; consuming"), "{}", agent.log());
        let body = json!({"op": "snapshot", "cancel": [{"root": missed, "until": unix_in(600)}]});
        control(&c.ch, body.to_string().as_bytes()).await;
        let r = c.reply_for(&refused, LONG).await;
        assert_revoked(&r, &refused);
        let r = c.reply_for(&runs, LONG).await;
        assert_eq!(r["status"], "SUCCESS", "{r}");
    });
    assert!(
        !agent.log().contains("no cancel snapshot within control_wait"),
        "{}",
        agent.log()
    );
    assert!(agent.stop().success(), "{}", agent.log());
}

/// Every reply on a reply queue, kept in arrival order.
struct Replies {
    consumer: lapin::Consumer,
    seen: Vec<Value>,
}

impl Replies {
    /// Reads replies until `done` holds for those seen, or `limit` passes;
    /// whether `done` held.
    async fn until(&mut self, limit: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let t0 = Instant::now();
        while !done(&self.seen) {
            let Some(left) = limit.checked_sub(t0.elapsed()) else {
                return false;
            };
            match tokio::time::timeout(left, self.consumer.next()).await {
                Ok(Some(Ok(d))) => self.seen.push(serde_json::from_slice(&d.data).unwrap()),
                _ => return false,
            }
        }
        true
    }
}

/// The place of a child among its siblings: the low 62 bits of its
/// version 8 id (`agent::celery::ChildId`).
fn child_seq(id: &str) -> u64 {
    let u = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(u.get_version_num(), 8, "{id}");
    u64::from_be_bytes(u.as_bytes()[8..].try_into().unwrap()) & (u64::MAX >> 2)
}

#[test]
fn a_running_discovery_stops_publishing_when_its_job_is_cancelled() {
    if !broker_or_skip() {
        return;
    }
    // Every child waits for the broker's confirmation of the one before,
    // and one worker thread runs them: the walk publishes for a while, and
    // children queue up behind the running one.
    let mut agent = Agent::new("confirm_window = 1\nworker = {\"threads\": 1}");
    const FILES: usize = 20_000;
    const BATCH: usize = 10;
    for d in 0..20 {
        let dir = agent.data().join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..FILES / 20 {
            std::fs::write(dir.join(format!("f{f:04}")), b"").unwrap();
        }
    }
    agent.start();
    let q = agent.queue("discovery");
    rt().block_on(async {
        let c = Client::connect().await;
        let rch = c.conn.create_channel().await.unwrap();
        let (reply_to, consumer) = reply_queue(&rch).await;
        let mut replies = Replies {
            consumer,
            seen: Vec::new(),
        };
        let root = uuid::Uuid::new_v4().to_string();
        let kwargs = json!({
            "paths": [agent.data().display().to_string()],
            "jobid": 11,
            "file_batch_size": BATCH,
            "enable_auto_file_batch_sizing": false,
            "file_batch_gb": 0,
            "children_in_result": false,
            "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
        });
        let body =
            format!("[[], {kwargs}, {{\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}}]");
        declare_durable(&c.ch, &q).await;
        let mut h = FieldTable::default();
        for (k, v) in [
            ("task", s("dynamo.tasks.recursive_navigate")),
            ("id", s(&root)),
            ("root_id", s(&root)),
            ("retries", AMQPValue::LongInt(0)),
        ] {
            h.insert(k.into(), v);
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(root.as_str().into())
            .with_reply_to(reply_to.as_str().into())
            .with_headers(h);
        c.ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();

        // Cancel once the first child has answered: the walk is under way.
        let first = replies.until(LONG, |seen| !seen.is_empty()).await;
        assert!(first, "no child result in time:\n{}", agent.log());
        assert_ne!(
            replies.seen[0]["task_id"],
            root.as_str(),
            "the discovery ended before any child: {}",
            replies.seen[0]
        );
        let body = json!({"op": "cancel", "roots": [root], "until": unix_in(600)});
        control(&c.ch, body.to_string().as_bytes()).await;

        let is_root = |r: &Value| r["task_id"] == root.as_str();
        let ended = replies.until(LONG, |seen| seen.iter().any(is_root)).await;
        assert!(ended, "no result of the discovery:\n{}", agent.log());
        let d = replies.seen.iter().find(|r| is_root(r)).unwrap().clone();
        assert_eq!(d["status"], "SUCCESS", "{d}");
        assert_eq!(d["result"]["status"]["cancelled"], true, "{d}");
        let count = d["children_count"].as_u64().unwrap();
        assert!(
            count >= 1 && count < (FILES / BATCH) as u64,
            "children_count {count} of {}: {d}",
            FILES / BATCH
        );
        assert_eq!(d["result"]["status"]["summary"]["children"], count, "{d}");
        assert_eq!(d["children"], json!([]), "children_in_result is false: {d}");

        // Every child that went out answers once, SUCCESS or REVOKED, and
        // no other does.
        let children = |seen: &[Value]| seen.iter().filter(|r| !is_root(r)).count() as u64;
        let all = replies
            .until(Duration::from_secs(45), |seen| children(seen) >= count)
            .await;
        assert!(
            all,
            "{} child results of {count}:\n{}",
            children(&replies.seen),
            agent.log()
        );
        let extra = replies
            .until(Duration::from_secs(2), |seen| children(seen) > count)
            .await;
        assert!(!extra, "more child results than children_count {count}");
        let mut seqs = BTreeSet::new();
        let (mut succeeded, mut revoked) = (0, 0);
        for r in replies.seen.iter().filter(|r| !is_root(r)) {
            assert_eq!(r["parent_id"], root.as_str(), "{r}");
            assert!(seqs.insert(child_seq(r["task_id"].as_str().unwrap())), "twice: {r}");
            match r["status"].as_str() {
                Some("SUCCESS") => succeeded += 1,
                Some("REVOKED") => {
                    assert_revoked(r, r["task_id"].as_str().unwrap());
                    revoked += 1;
                }
                _ => panic!("a child neither ran nor was revoked: {r}"),
            }
        }
        assert_eq!(
            seqs,
            (0..count).collect::<BTreeSet<_>>(),
            "the children are those counted"
        );
        eprintln!("children {count}: {succeeded} succeeded, {revoked} revoked");
    });
    assert!(agent.stop().success(), "{}", agent.log());
}
