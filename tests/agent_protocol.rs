//! The agent's protocol contract end to end, on the real broker and a real
//! `ferry agent` process: malformed messages (FAILURE results or the
//! dead-letter queue), expiry, chains, redelivery after a crash, the
//! SIGTERM drain and monitoring events.
//!
//! Every message here is built by hand, the way Python's Celery
//! (`as_task_v2`) sends it, so the tests check the wire format, not the
//! agent's own encoder.

mod common;

use common::agent::*;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// One result message: its `correlation_id` property and its document.
#[derive(Debug, Clone)]
struct Reply {
    correlation_id: Option<String>,
    doc: Value,
}

/// A Celery-like caller: a connection, a channel, and an exclusive reply
/// queue whose messages keep their properties (the fixture's `Client`
/// returns only bodies, and drops replies for other ids).
struct Caller {
    conn: Connection,
    ch: Channel,
    reply_to: String,
    consumer: lapin::Consumer,
    /// Replies read but not asked for yet.
    pending: Vec<Reply>,
}

impl Caller {
    async fn connect() -> Caller {
        let conn = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let (reply_to, consumer) = reply_queue(&ch).await;
        Caller {
            conn,
            ch,
            reply_to,
            consumer,
            pending: Vec::new(),
        }
    }

    /// Publishes `body` with `props` to `queue` on the default exchange
    /// (declaring the queue durable first, as kombu does).
    async fn publish(&self, queue: &str, props: BasicProperties, body: &[u8]) {
        declare_durable(&self.ch, queue).await;
        self.ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The properties Python's `send_task` sets, replying to our queue.
    fn props(&self, id: &str, headers: FieldTable) -> BasicProperties {
        BasicProperties::default()
            .with_correlation_id(id.into())
            .with_reply_to(self.reply_to.as_str().into())
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_priority(0)
            .with_headers(headers)
    }

    /// Sends task `task` with `kwargs` (JSON object text) and `chain`
    /// (JSON text for embed.chain); `extra` headers override the defaults.
    /// Returns the task id.
    async fn send(&self, queue: &str, task: &str, kwargs: &str, chain: &str, extra: &[(&str, AMQPValue)]) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut h = task_headers(task, &id);
        for (k, v) in extra {
            h.insert((*k).into(), v.clone());
        }
        let body =
            format!("[[], {kwargs}, {{\"callbacks\": null, \"errbacks\": null, \"chain\": {chain}, \"chord\": null}}]");
        self.publish(queue, self.props(&id, h), body.as_bytes()).await;
        id
    }

    /// The next reply within `left`, if any.
    async fn next(&mut self, left: Duration) -> Option<Reply> {
        let d = tokio::time::timeout(left, self.consumer.next()).await.ok()??.ok()?;
        let doc: Value = serde_json::from_slice(&d.data)
            .unwrap_or_else(|e| panic!("a result that is not JSON ({e}): {}", String::from_utf8_lossy(&d.data)));
        Some(Reply {
            correlation_id: d.properties.correlation_id().as_ref().map(|s| s.as_str().to_string()),
            doc,
        })
    }

    /// The first reply for task `id`, or a panic showing the agent's log.
    async fn expect_reply(&mut self, id: &str, limit: Duration, agent: &Agent) -> Reply {
        if let Some(i) = self.pending.iter().position(|r| r.doc["task_id"] == id) {
            return self.pending.remove(i);
        }
        let t0 = Instant::now();
        loop {
            let left = limit.saturating_sub(t0.elapsed());
            match self.next(left).await {
                Some(r) if r.doc["task_id"] == id => return r,
                Some(r) => self.pending.push(r),
                None => panic!(
                    "no result for task {id} within {limit:?}; other results seen: {:?}; agent log:\n{}",
                    self.pending.iter().map(|r| &r.doc).collect::<Vec<_>>(),
                    agent.log()
                ),
            }
        }
    }

    /// Every reply that arrives within `dur` for task `id`.
    async fn more_for(&mut self, id: &str, dur: Duration) -> Vec<Reply> {
        let mut out: Vec<Reply> = Vec::new();
        let mut rest = Vec::new();
        for r in self.pending.drain(..) {
            if r.doc["task_id"] == id {
                out.push(r);
            } else {
                rest.push(r);
            }
        }
        self.pending = rest;
        let t0 = Instant::now();
        while let Some(r) = self.next(dur.saturating_sub(t0.elapsed())).await {
            if r.doc["task_id"] == id {
                out.push(r);
            } else {
                self.pending.push(r);
            }
        }
        out
    }
}

/// The headers Python's `as_task_v2` sends for a first-time task.
fn task_headers(task: &str, id: &str) -> FieldTable {
    let mut h = FieldTable::default();
    let mut tl = FieldArray::default();
    tl.push(AMQPValue::Void);
    tl.push(AMQPValue::Void);
    let entries = [
        ("lang", s("py")),
        ("task", s(task)),
        ("id", s(id)),
        ("shadow", AMQPValue::Void),
        ("eta", AMQPValue::Void),
        ("expires", AMQPValue::Void),
        ("group", AMQPValue::Void),
        ("group_index", AMQPValue::Void),
        ("retries", AMQPValue::LongInt(0)),
        ("timelimit", AMQPValue::FieldArray(tl)),
        ("root_id", s(id)),
        ("parent_id", AMQPValue::Void),
        ("argsrepr", s("()")),
        ("kwargsrepr", s("{}")),
        ("origin", s("gen1@test")),
        ("ignore_result", AMQPValue::Boolean(false)),
        ("stamps", AMQPValue::FieldTable(FieldTable::default())),
    ];
    for (k, v) in entries {
        h.insert(k.into(), v);
    }
    h
}

/// Python's `datetime.isoformat()` of now + `secs` (UTC, with offset).
fn iso_in(secs: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap();
    t.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Waits (without blocking the runtime) until the agent's log holds
/// `needle` at least `times` times.
async fn log_has(agent: &Agent, needle: &str, times: usize, limit: Duration) {
    let t0 = Instant::now();
    while agent.log().matches(needle).count() < times {
        assert!(
            t0.elapsed() < limit,
            "no {needle:?} x{times} in the agent's log within {limit:?}:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The log lines that mention `needle`.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// Whether the agent process is still running.
fn running(agent: &mut Agent) -> bool {
    agent.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
}

/// Sends `sig` to the agent process.
fn signal(agent: &Agent, sig: libc::c_int) {
    let pid = agent.child.as_ref().expect("running").id();
    // SAFETY: kill(2) on a child process we started and have not reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// Waits up to `limit` for the agent process to exit; its status, or None
/// (the process is then killed so the test never hangs).
async fn exit_within(agent: &mut Agent, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        let c = agent.child.as_mut().expect("started");
        if let Some(st) = c.try_wait().unwrap() {
            agent.child = None;
            return Some(st);
        }
        if t0.elapsed() > limit {
            agent.kill();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets `threads = n` in the agent's `[settings]` (replacing the fixture's
/// line; a second `threads` line would be a configuration error).
fn set_threads(agent: &Agent, n: usize) {
    let path = agent.dir.path().join("ferry.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        if !done && line.trim_start().starts_with("threads") && line.contains('=') {
            out.push_str(&format!("threads = {n}\n"));
            done = true;
        } else {
            out.push_str(line);
            out.push('\n');
            if !done && line.trim() == "[settings]" && !text.contains("\nthreads") {
                out.push_str(&format!("threads = {n}\n"));
                done = true;
            }
        }
    }
    assert!(done, "cannot set threads in {text}");
    std::fs::write(path, out).unwrap();
}

/// Writes a file of `mib` MiB of non-repeating, non-zero data.
fn big_file(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut buf: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    for i in 0..mib {
        buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&buf).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
}

/// ferry's state xattr of `path`, as text.
fn hsm_state(path: &Path) -> Option<String> {
    xattr::get(path, "user.ferry.state")
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// The number of ready messages in `queue` (passive declare on a fresh
/// channel: a missing queue would close it).
async fn ready_count(conn_ch: &Channel, queue: &str) -> u32 {
    conn_ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"))
        .message_count()
}

/// The text of an exception document's message.
fn exc_message(doc: &Value) -> String {
    match &doc["result"]["exc_message"] {
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(" "),
        v => v.to_string(),
    }
}

/// Checks a FAILURE result for task `id` whose reason mentions `why`.
fn assert_failure(case: &str, r: &Reply, id: &str, exc_type: &str, why: &[&str]) {
    let d = &r.doc;
    assert_eq!(d["status"], "FAILURE", "{case}: {d}");
    assert_eq!(d["task_id"], id, "{case}: {d}");
    assert_eq!(r.correlation_id.as_deref(), Some(id), "{case}: correlation_id of {d}");
    assert_eq!(d["result"]["exc_type"], exc_type, "{case}: {d}");
    assert!(d["result"]["exc_module"].is_string(), "{case}: {d}");
    let msg = exc_message(d);
    let tb = d["traceback"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no traceback string in {d}"));
    for w in why {
        assert!(msg.contains(w), "{case}: exc_message {msg:?} does not mention {w:?}");
        assert!(tb.contains(w), "{case}: traceback {tb:?} does not mention {w:?}");
    }
    assert!(d["date_done"].is_string(), "{case}: {d}");
    assert_eq!(d["children"], json!([]), "{case}: {d}");
}

/// A message taken from `<site>.dead-letter`.
struct DeadLetter {
    props: BasicProperties,
    body: Vec<u8>,
}

impl DeadLetter {
    fn header(&self, k: &str) -> Option<String> {
        match self.props.headers().as_ref()?.inner().get(k)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            v => Some(format!("{v:?}")),
        }
    }

    fn message_id(&self) -> Option<String> {
        self.props.message_id().as_ref().map(|m| m.as_str().to_string())
    }
}

/// Declares `<site>.dead-letter` as the agent does (durable, no
/// arguments), so it can be read before the agent first uses it.
async fn declare_dead_letter(ch: &Channel, site: &str) -> String {
    let q = format!("{site}.dead-letter");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    q
}

/// Takes messages from the dead-letter queue until `n` arrived (or `limit`).
async fn dead_letters(ch: &Channel, queue: &str, n: usize, limit: Duration) -> Vec<DeadLetter> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && t0.elapsed() < limit {
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => out.push(DeadLetter {
                props: m.delivery.properties.clone(),
                body: m.delivery.data.clone(),
            }),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    out
}

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// 1. Malformed messages
// ---------------------------------------------------------------------------

#[test]
fn malformed_messages_fail_or_dead_letter_and_the_agent_keeps_serving() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("max_message_bytes = 100000");
    let file = agent.data().join("f");
    std::fs::write(&file, b"some data").unwrap();
    agent.start();
    let q = agent.queue("worker");
    let f = file.display().to_string();
    rt().block_on(async {
        let mut c = Caller::connect().await;
        let dlq = declare_dead_letter(&c.ch, &agent.site).await;

        // (case, id, expected exc_type, words the reason must hold)
        let mut expect: Vec<(&str, String, &str, Vec<&str>)> = Vec::new();
        let env = r#"{"callbacks": null, "errbacks": null, "chain": null, "chord": null}"#;

        // Bodies that are not [args, kwargs, embed].
        let bodies: [(&str, String, &[&str]); 4] = [
            ("body not JSON", "this is {not json".into(), &["not a JSON array"]),
            ("body [[], []]", "[[], []]".into(), &["array of 2"]),
            ("body {}", "{}".into(), &["not a JSON array"]),
            ("body [{}, {}, null]", "[{}, {}, null]".into(), &["args must be a list"]),
        ];
        for (case, body, why) in bodies {
            let id = uuid::Uuid::new_v4().to_string();
            c.publish(
                &q,
                c.props(&id, task_headers("dynamo.tasks.stat_paths", &id)),
                body.as_bytes(),
            )
            .await;
            expect.push((case, id, "InvalidTaskError", why.to_vec()));
        }

        // Well-formed messages whose keyword arguments have the wrong types.
        let kw: [(&str, &str, String, &[&str]); 4] = [
            (
                "stub_size \"abc\"",
                "dynamo.tasks.migrate",
                format!(r#"{{"paths": [{{"path": "{f}"}}], "endpoint": "archive", "stub_size": "abc", "jobid": 1}}"#),
                &["invalid argument `stub_size`", "abc"],
            ),
            (
                "paths 5",
                "dynamo.tasks.stat_paths",
                r#"{"paths": 5}"#.into(),
                &["`paths` must be a list"],
            ),
            (
                "path object without path",
                "dynamo.tasks.stat_paths",
                r#"{"paths": [{"size": 3}]}"#.into(),
                &["paths[0]", "no \"path\" key"],
            ),
            (
                "path with NUL",
                "dynamo.tasks.stat_paths",
                format!(r#"{{"paths": ["{f}\u0000x"]}}"#),
                &["paths[0]", "NUL"],
            ),
        ];
        for (case, task, kwargs, why) in kw {
            let body = format!("[[], {kwargs}, {env}]");
            let id = uuid::Uuid::new_v4().to_string();
            c.publish(&q, c.props(&id, task_headers(task, &id)), body.as_bytes())
                .await;
            expect.push((case, id, "InvalidArguments", why.to_vec()));
        }

        // An unknown task.
        let id = c
            .send(&q, "dynamo.tasks.no_such_task", r#"{"paths": []}"#, "null", &[])
            .await;
        expect.push(("unknown task", id, "NotRegistered", vec!["dynamo.tasks.no_such_task"]));

        // A body over max_message_bytes (100 000): ~1 MB of valid JSON.
        let pad = "x".repeat(1_000_000);
        let id = c
            .send(
                &q,
                "dynamo.tasks.stat_paths",
                &format!(r#"{{"paths": [], "pad": "{pad}"}}"#),
                "null",
                &[],
            )
            .await;
        expect.push(("huge body", id, "InvalidTaskError", vec!["max_message_bytes"]));

        // A content type other than JSON (pickle).
        let id = uuid::Uuid::new_v4().to_string();
        let props = c
            .props(&id, task_headers("dynamo.tasks.stat_paths", &id))
            .with_content_type("application/x-python-serialize".into())
            .with_content_encoding("binary".into());
        c.publish(&q, props, b"\x80\x04\x95\x10\x00\x00\x00").await;
        expect.push((
            "pickle content type",
            id,
            "InvalidTaskError",
            vec!["application/x-python-serialize", "not accepted"],
        ));

        // zlib compression header, garbage body.
        let id = uuid::Uuid::new_v4().to_string();
        let mut h = task_headers("dynamo.tasks.stat_paths", &id);
        h.insert("compression".into(), s("application/x-gzip"));
        c.publish(&q, c.props(&id, h), b"definitely not a zlib stream").await;
        expect.push(("zlib garbage", id, "InvalidTaskError", vec!["decompress"]));

        // Messages nobody can be told about: to the dead-letter queue.
        // No headers at all (a reply_to does not help: there is no id).
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(c.reply_to.as_str().into())
            .with_message_id("no-headers".into());
        c.publish(&q, props, br#"[[], {"paths": []}, null]"#).await;
        // A `task` header but no `id`.
        let mut h = FieldTable::default();
        h.insert("task".into(), s("dynamo.tasks.stat_paths"));
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(c.reply_to.as_str().into())
            .with_message_id("no-id".into())
            .with_headers(h);
        c.publish(&q, props, br#"[[], {"paths": []}, null]"#).await;
        // An id, but no reply_to, and a body that is not JSON.
        let lost_id = uuid::Uuid::new_v4().to_string();
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(lost_id.as_str().into())
            .with_message_id("no-reply-to".into())
            .with_headers(task_headers("dynamo.tasks.stat_paths", &lost_id));
        c.publish(&q, props, b"not json either").await;

        // Every attributable message gets its FAILURE result.
        for (case, id, exc_type, why) in &expect {
            let r = c.expect_reply(id, LONG, &agent).await;
            assert_failure(case, &r, id, exc_type, why);
        }

        // The others are dead-lettered with their reason.
        let dead = dead_letters(&c.ch, &dlq, 3, LONG).await;
        let by_id: HashMap<String, &DeadLetter> =
            dead.iter().map(|d| (d.message_id().unwrap_or_default(), d)).collect();
        let want = [
            ("no-headers", "no `task` header"),
            ("no-id", "no `id` header"),
            ("no-reply-to", "not a JSON array"),
        ];
        for (mid, why) in want {
            let d = by_id.get(mid).unwrap_or_else(|| {
                panic!(
                    "message {mid:?} not in {dlq}; found {:?}; log:\n{}",
                    dead.iter()
                        .map(|d| (d.message_id(), d.header("x-ferry-reason")))
                        .collect::<Vec<_>>(),
                    agent.log()
                )
            });
            let reason = d
                .header("x-ferry-reason")
                .unwrap_or_else(|| panic!("{mid}: no x-ferry-reason"));
            assert!(
                reason.contains(why),
                "{mid}: x-ferry-reason {reason:?} should mention {why:?}"
            );
            assert_eq!(d.header("x-ferry-queue").as_deref(), Some(q.as_str()), "{mid}");
            assert!(!d.body.is_empty(), "{mid}: the original body is kept");
        }
        assert_eq!(
            by_id["no-reply-to"].header("id").as_deref(),
            Some(lost_id.as_str()),
            "the original headers are kept"
        );
        // Nothing else went there, and nothing more came back.
        assert!(
            dead_letters(&c.ch, &dlq, 1, Duration::from_millis(300))
                .await
                .is_empty(),
            "an unexpected extra message in {dlq}"
        );

        // The bad migrate did not touch its file.
        assert_eq!(hsm_state(&file), None, "a task with invalid arguments touched its file");

        // The agent keeps serving.
        let id = c
            .send(
                &q,
                "dynamo.tasks.stat_paths",
                &format!(r#"{{"paths": ["{f}"], "jobid": 9}}"#),
                "null",
                &[],
            )
            .await;
        let r = c.expect_reply(&id, LONG, &agent).await;
        assert_eq!(r.doc["status"], "SUCCESS", "{}", r.doc);
        assert_eq!(r.doc["result"]["status"]["summary"]["processed"], 1, "{}", r.doc);
        assert_eq!(r.correlation_id.as_deref(), Some(id.as_str()));

        // Every message was acknowledged: none left in the queue.
        let ch = c.conn.create_channel().await.unwrap();
        assert_eq!(ready_count(&ch, &q).await, 0, "messages left in {q}");
        // No result for anything else arrived.
        let stray: Vec<_> = c
            .pending
            .iter()
            .filter(|r| !expect.iter().any(|(_, id, _, _)| r.doc["task_id"] == id.as_str()))
            .map(|r| r.doc.clone())
            .collect();
        assert!(stray.is_empty(), "unexpected results: {stray:?}");
    });
    assert!(running(&mut agent), "the agent died:\n{}", agent.log());
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
    assert!(agent.stop().success(), "{}", agent.log());
}

/// An unknown task that names no reply_to cannot be answered: like any
/// other unattributable message it must land in the dead-letter queue
/// rather than vanish.
#[test]
fn unknown_task_without_reply_to_is_dead_lettered() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    agent.start();
    let q = agent.queue("worker");
    rt().block_on(async {
        let c = Caller::connect().await;
        let dlq = declare_dead_letter(&c.ch, &agent.site).await;
        let id = uuid::Uuid::new_v4().to_string();
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(id.as_str().into())
            .with_headers(task_headers("dynamo.tasks.no_such_task", &id));
        c.publish(&q, props, br#"[[], {"paths": []}, null]"#).await;
        let dead = dead_letters(&c.ch, &dlq, 1, Duration::from_secs(5)).await;
        assert_eq!(
            dead.len(),
            1,
            "an unknown task without reply_to was dropped instead of dead-lettered; log:\n{}",
            agent.log()
        );
        let reason = dead[0].header("x-ferry-reason").unwrap_or_default();
        assert!(reason.contains("dynamo.tasks.no_such_task"), "{reason:?}");
        assert_eq!(dead[0].header("id").as_deref(), Some(id.as_str()));
    });
    assert!(agent.stop().success(), "{}", agent.log());
}

// ---------------------------------------------------------------------------
// 2. Expiry
// ---------------------------------------------------------------------------

#[test]
fn expired_task_is_revoked_and_not_run() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let a = agent.data().join("a");
    let b = agent.data().join("b");
    std::fs::write(&a, b"abc").unwrap();
    std::fs::write(&b, b"def").unwrap();
    agent.start();
    let q = agent.queue("worker");
    rt().block_on(async {
        let mut c = Caller::connect().await;
        let kwargs = |p: &Path| {
            format!(
                r#"{{"paths": ["{}"], "endpoint": "archive", "premigrate": true, "jobid": 5}}"#,
                p.display()
            )
        };
        // Expired a minute ago (aware), and long ago (naive: UTC by protocol v2).
        let past = c
            .send(
                &q,
                "dynamo.tasks.migrate",
                &kwargs(&a),
                "null",
                &[("expires", s(&iso_in(-60)))],
            )
            .await;
        let naive = c
            .send(
                &q,
                "dynamo.tasks.migrate",
                &kwargs(&a),
                "null",
                &[("expires", s("2001-02-03T04:05:06.123456"))],
            )
            .await;
        // Expires in an hour: runs.
        let future = c
            .send(
                &q,
                "dynamo.tasks.migrate",
                &kwargs(&b),
                "null",
                &[("expires", s(&iso_in(3600)))],
            )
            .await;
        for id in [&past, &naive] {
            let r = c.expect_reply(id, LONG, &agent).await;
            let d = &r.doc;
            assert_eq!(d["status"], "REVOKED", "{d}");
            assert_eq!(r.correlation_id.as_deref(), Some(id.as_str()));
            assert_eq!(d["result"]["exc_type"], "TaskRevokedError", "{d}");
            assert!(d["date_done"].is_string(), "{d}");
        }
        let r = c.expect_reply(&future, LONG, &agent).await;
        assert_eq!(r.doc["status"], "SUCCESS", "{}", r.doc);
        assert_eq!(r.doc["result"]["status"]["summary"]["processed"], 1, "{}", r.doc);
        let log = agent.log();
        for id in [&past, &naive] {
            let started = lines_with(&log, id)
                .into_iter()
                .filter(|l| l.contains("task started"))
                .count();
            assert_eq!(started, 0, "expired task {id} was started:\n{log}");
        }
    });
    assert_eq!(hsm_state(&a), None, "an expired migrate touched its file");
    assert!(hsm_state(&b).is_some_and(|s| s.starts_with("premigrated ")));
    assert!(agent.stop().success(), "{}", agent.log());
}

// ---------------------------------------------------------------------------
// 3. Chains
// ---------------------------------------------------------------------------

#[test]
fn chain_link_is_published_with_the_continuing_paths() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let a = agent.data().join("a");
    let b = agent.data().join("b");
    let missing = agent.data().join("missing");
    std::fs::write(&a, b"abc").unwrap();
    std::fs::write(&b, b"defg").unwrap();
    agent.start();
    let q = agent.queue("worker");
    rt().block_on(async {
        let mut c = Caller::connect().await;
        let chain = json!([{"task": "dynamo.tasks.stat_paths", "args": [], "kwargs": {},
            "options": {"queue": q}, "subtask_type": null, "immutable": false}])
        .to_string();
        let kwargs = json!({"paths": [a.display().to_string(), {"path": b.display().to_string(), "size": 4},
            missing.display().to_string()], "jobid": 42})
        .to_string();
        let first = c.send(&q, "dynamo.tasks.stat_paths", &kwargs, &chain, &[]).await;
        let r1 = c.expect_reply(&first, LONG, &agent).await;
        let d1 = &r1.doc;
        assert_eq!(d1["status"], "SUCCESS", "{d1}");
        let summary = &d1["result"]["status"]["summary"];
        assert_eq!(summary["processed"], 2, "{d1}");
        assert_eq!(summary["failures"], 1, "{d1}");
        let children = d1["children"].as_array().unwrap_or_else(|| panic!("no children: {d1}"));
        assert_eq!(children.len(), 1, "{d1}");
        let child = children[0][0][0]
            .as_str()
            .unwrap_or_else(|| panic!("bad children: {d1}"))
            .to_string();
        assert_eq!(d1["children"], json!([[[child, null], null]]), "{d1}");
        assert_ne!(child, first);

        // The child's result comes to the same reply_to.
        let r2 = c.expect_reply(&child, LONG, &agent).await;
        let d2 = &r2.doc;
        assert_eq!(d2["status"], "SUCCESS", "{d2}");
        assert_eq!(r2.correlation_id.as_deref(), Some(child.as_str()), "{d2}");
        assert_eq!(d2["parent_id"], first.as_str(), "{d2}");
        assert_eq!(d2["children"], json!([]), "{d2}");
        assert_eq!(d2["result"]["jobid"], 42, "{d2}");
        // Its input is exactly what the first task passed on.
        let passed = &d1["result"]["paths"];
        assert_eq!(
            &d2["result"]["status"]["input_paths"], passed,
            "child {d2}\nparent {d1}"
        );
        let mut names: Vec<String> = passed
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [a.display().to_string(), b.display().to_string()]);
        assert_eq!(d2["result"]["status"]["input_total"], 2, "{d2}");
        assert_eq!(d2["result"]["status"]["summary"]["processed"], 2, "{d2}");
        // No more results (the chain ends there).
        let extra = c.more_for(&first, Duration::from_millis(500)).await;
        assert!(extra.is_empty(), "{extra:?}");
    });
    let log = agent.log();
    assert!(agent.stop().success(), "{log}");
}

// ---------------------------------------------------------------------------
// Tasks already waiting when the agent starts (what a restart, a redelivery
// or a reconnect always meets)
// ---------------------------------------------------------------------------

#[test]
fn tasks_queued_before_the_agent_starts_are_run() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let a = agent.data().join("a");
    std::fs::write(&a, b"abc").unwrap();
    let q = agent.queue("worker");
    let rt = rt();
    let mut c = rt.block_on(Caller::connect());
    let kwargs = json!({"paths": [a.display().to_string()]}).to_string();
    let ids: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..2 {
            ids.push(c.send(&q, "dynamo.tasks.stat_paths", &kwargs, "null", &[]).await);
        }
        ids
    });
    agent.start();
    rt.block_on(async {
        for id in &ids {
            let r = c.expect_reply(id, Duration::from_secs(15), &agent).await;
            assert_eq!(r.doc["status"], "SUCCESS", "{}", r.doc);
        }
    });
    assert!(agent.stop().success(), "{}", agent.log());
}

// ---------------------------------------------------------------------------
// 4. Redelivery after a crash
// ---------------------------------------------------------------------------

const BIG_MIB: usize = 512;

#[test]
fn task_interrupted_by_sigkill_runs_again_on_restart() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let big = agent.data().join("big");
    big_file(&big, BIG_MIB);
    agent.start();
    let q = agent.queue("worker");
    let rt = rt();
    let mut c = rt.block_on(Caller::connect());
    let kwargs = json!({"paths": [{"path": big.display().to_string(), "size": BIG_MIB << 20}],
        "endpoint": "archive", "premigrate": true, "jobid": 11})
    .to_string();
    let id = rt.block_on(async {
        let id = c.send(&q, "dynamo.tasks.migrate", &kwargs, "null", &[]).await;
        log_has(&agent, &format!("task started id={id}"), 1, LONG).await;
        id
    });
    agent.kill();
    let first_log = agent.log();
    assert!(
        !lines_with(&first_log, &id).iter().any(|l| l.contains("task succeeded")),
        "precondition: the task finished before the kill (make the file bigger):\n{first_log}"
    );
    let after_kill = hsm_state(&big);
    assert!(
        after_kill.as_deref().is_none_or(|s| s.starts_with("premigrated ")),
        "after the kill: {after_kill:?}"
    );
    rt.block_on(async {
        // No result was sent by the killed agent.
        let early = c.more_for(&id, Duration::from_millis(300)).await;
        assert!(early.is_empty(), "a result before the restart: {early:?}");
    });

    agent.start();
    rt.block_on(async {
        log_has(&agent, "connected; consuming", 2, LONG).await;
        let r = c.expect_reply(&id, LONG, &agent).await;
        let d = &r.doc;
        assert_eq!(d["status"], "SUCCESS", "{d}\n{}", agent.log());
        assert_eq!(r.correlation_id.as_deref(), Some(id.as_str()));
        let sum = &d["result"]["status"]["summary"];
        assert_eq!(
            sum["processed"].as_u64().unwrap() + sum["skipped"].as_u64().unwrap(),
            1,
            "{d}"
        );
        assert_eq!(sum["failures"], 0, "{d}");
        // At least once: any further result says the same.
        for extra in c.more_for(&id, Duration::from_secs(1)).await {
            assert_eq!(extra.doc["status"], "SUCCESS", "{}", extra.doc);
        }
    });
    let log = agent.log();
    let second = &log[first_log.len()..];
    assert!(
        lines_with(second, &id)
            .iter()
            .any(|l| l.contains("task started") && l.contains("redelivered=true")),
        "the new agent did not run the redelivered task:\n{second}"
    );
    let state = hsm_state(&big).expect("a state xattr after the rerun");
    assert!(
        state.starts_with(&format!("premigrated size={} ", BIG_MIB << 20)),
        "{state}"
    );
    assert!(agent.stop().success(), "{}", agent.log());
}

// ---------------------------------------------------------------------------
// 5. SIGTERM drain
// ---------------------------------------------------------------------------

#[test]
fn sigterm_drains_the_running_task_and_leaves_waiting_ones_queued() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    set_threads(&agent, 1);
    let big = agent.data().join("big");
    let small = agent.data().join("small");
    big_file(&big, BIG_MIB);
    std::fs::write(&small, b"x").unwrap();
    agent.start();
    let q = agent.queue("worker");
    let rt = rt();
    let mut c = rt.block_on(Caller::connect());
    let slow_kwargs =
        json!({"paths": [big.display().to_string()], "endpoint": "archive", "premigrate": true}).to_string();
    let quick_kwargs = json!({"paths": [small.display().to_string()]}).to_string();
    let (slow, quick) = rt.block_on(async {
        let slow = c.send(&q, "dynamo.tasks.migrate", &slow_kwargs, "null", &[]).await;
        let q1 = c.send(&q, "dynamo.tasks.stat_paths", &quick_kwargs, "null", &[]).await;
        let q2 = c.send(&q, "dynamo.tasks.stat_paths", &quick_kwargs, "null", &[]).await;
        log_has(&agent, &format!("task started id={slow}"), 1, LONG).await;
        (slow, [q1, q2])
    });
    signal(&agent, libc::SIGTERM);
    let status = rt.block_on(async {
        let r = c.expect_reply(&slow, LONG, &agent).await;
        assert_eq!(r.doc["status"], "SUCCESS", "{}\n{}", r.doc, agent.log());
        assert_eq!(r.doc["result"]["status"]["summary"]["processed"], 1, "{}", r.doc);
        exit_within(&mut agent, Duration::from_secs(20)).await
    });
    let log = agent.log();
    let status = status.unwrap_or_else(|| panic!("the agent did not exit after SIGTERM:\n{log}"));
    assert_eq!(status.code(), Some(0), "{log}");
    // The slow task was still running when the drain began.
    let stopping = log
        .find("stopping")
        .unwrap_or_else(|| panic!("no drain in the log:\n{log}"));
    let succeeded = log
        .lines()
        .find(|l| l.contains("task succeeded") && l.contains(&slow))
        .and_then(|l| log.find(l))
        .unwrap_or_else(|| panic!("no success line for {slow}:\n{log}"));
    assert!(
        stopping < succeeded,
        "precondition: the slow task ended before SIGTERM:\n{log}"
    );
    for id in &quick {
        assert!(
            !log.contains(id.as_str()),
            "waiting task {id} was touched during the drain:\n{log}"
        );
    }
    assert!(hsm_state(&big).is_some_and(|s| s.starts_with("premigrated ")));

    rt.block_on(async {
        let ch = c.conn.create_channel().await.unwrap();
        assert_eq!(ready_count(&ch, &q).await, 2, "the waiting tasks should be back in {q}");
        for id in &quick {
            assert!(c.more_for(id, Duration::from_millis(100)).await.is_empty(), "{id} ran");
        }
    });
    // (That a new agent then runs them is what
    // `tasks_queued_before_the_agent_starts_are_run` checks.)
}

/// SIGTERM while a task waits for its ETA: the drain must not wait for the
/// ETA; the message goes back to the queue unacknowledged.
#[test]
fn sigterm_does_not_wait_for_eta_tasks() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let small = agent.data().join("small");
    std::fs::write(&small, b"x").unwrap();
    agent.start();
    let q = agent.queue("worker");
    let rt = rt();
    let c = rt.block_on(Caller::connect());
    let kwargs = json!({"paths": [small.display().to_string()]}).to_string();
    let status = rt.block_on(async {
        let ch = c.conn.create_channel().await.unwrap();
        let _id = c
            .send(
                &q,
                "dynamo.tasks.stat_paths",
                &kwargs,
                "null",
                &[("eta", s(&iso_in(40)))],
            )
            .await;
        // Wait until the agent holds it.
        let t0 = Instant::now();
        while ready_count(&ch, &q).await != 0 {
            assert!(t0.elapsed() < LONG, "the agent never took the ETA task");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        signal(&agent, libc::SIGTERM);
        let st = exit_within(&mut agent, Duration::from_secs(10)).await;
        (st, ready_count(&ch, &q).await)
    });
    let log = agent.log();
    let (st, ready) = status;
    let st =
        st.unwrap_or_else(|| panic!("the agent did not exit within 10 s of SIGTERM while holding an ETA task:\n{log}"));
    assert_eq!(st.code(), Some(0), "{log}");
    assert_eq!(ready, 1, "the ETA task should be back in its queue:\n{log}");
}

// ---------------------------------------------------------------------------
// 6. Events
// ---------------------------------------------------------------------------

#[test]
fn heartbeats_and_task_events_reach_celeryev() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let a = agent.data().join("a");
    std::fs::write(&a, b"abc").unwrap();
    agent.start();
    let pid = agent.child.as_ref().unwrap().id();
    let q = agent.queue("worker");
    rt().block_on(async {
        let mut c = Caller::connect().await;
        let ech = c.conn.create_channel().await.unwrap();
        ech.exchange_declare(
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
        let evq = temp_queue(&ech).await;
        ech.queue_bind(
            evq.as_str().into(),
            "celeryev".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut events = ech
            .basic_consume(
                evq.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        // Events from this agent (others share the exchange), as
        // (routing key, body, hostname header).
        let mut seen: Vec<(String, Value, Option<String>)> = Vec::new();
        let mut next_until = async |seen: &mut Vec<(String, Value, Option<String>)>,
                                    pred: &dyn Fn(&str, &Value) -> bool,
                                    limit: Duration|
               -> Option<Value> {
            if let Some((_, v, _)) = seen.iter().find(|(k, v, _)| pred(k, v)) {
                return Some(v.clone());
            }
            let t0 = Instant::now();
            loop {
                let left = limit.checked_sub(t0.elapsed())?;
                let d = tokio::time::timeout(left, events.next()).await.ok()??.ok()?;
                let v: Value = serde_json::from_slice(&d.data).unwrap();
                let list = match v {
                    Value::Array(a) => a,
                    v => vec![v],
                };
                let host = d
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| match h.inner().get("hostname") {
                        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                        _ => None,
                    });
                let mut hit = None;
                for v in list {
                    if v["pid"] != pid {
                        continue;
                    }
                    let key = d.routing_key.as_str().to_string();
                    if hit.is_none() && pred(&key, &v) {
                        hit = Some(v.clone());
                    }
                    seen.push((key, v, host.clone()));
                }
                if hit.is_some() {
                    return hit;
                }
            }
        };

        let hb = next_until(
            &mut seen,
            &|k, v| v["type"] == "worker-heartbeat" && k == "worker.heartbeat",
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|| panic!("no worker-heartbeat from pid {pid} within 5 s"));
        for k in [
            "hostname",
            "timestamp",
            "clock",
            "utcoffset",
            "pid",
            "sw_ident",
            "sw_ver",
            "sw_sys",
        ] {
            assert!(!hb[k].is_null(), "heartbeat without {k}: {hb}");
        }
        assert!(hb["hostname"].as_str().is_some_and(|h| !h.is_empty()), "{hb}");
        assert!(
            hb["freq"].as_f64().is_some_and(|f| (f - 2.0).abs() < 1e-9),
            "freq: {hb}"
        );
        assert_eq!(hb["active"], 0, "{hb}");
        assert_eq!(hb["processed"], 0, "{hb}");
        // The node's site and capabilities, for a hub that learns its nodes
        // from heartbeats.
        assert_eq!(hb["site"], agent.site.as_str(), "{hb}");
        let caps = &hb["capabilities"];
        assert_eq!(
            caps["tasks"].as_array().map(Vec::len),
            Some(ferry::task::TaskName::ALL.len()),
            "{hb}"
        );
        assert!(
            caps["tasks"]
                .as_array()
                .unwrap()
                .contains(&json!("dynamo.tasks.migrate")),
            "{hb}"
        );
        assert!(caps["functions"].as_array().unwrap().contains(&json!("worker")), "{hb}");
        assert_eq!(caps["endpoints"], json!(["archive"]), "{hb}");
        let hostname = hb["hostname"].as_str().unwrap().to_string();

        let id = c
            .send(
                &q,
                "dynamo.tasks.stat_paths",
                &json!({"paths": [a.display().to_string()], "jobid": 42}).to_string(),
                "null",
                &[],
            )
            .await;
        let r = c.expect_reply(&id, LONG, &agent).await;
        assert_eq!(r.doc["status"], "SUCCESS", "{}", r.doc);
        for (kind, key) in [
            ("task-received", "task.received"),
            ("task-started", "task.started"),
            ("task-succeeded", "task.succeeded"),
        ] {
            let e = next_until(
                &mut seen,
                &|k, v| v["type"] == kind && v["uuid"] == id.as_str() && k == key,
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|| panic!("no {kind} event for {id}; seen: {seen:?}"));
            assert_eq!(e["hostname"], hostname.as_str(), "{e}");
            assert!(e["timestamp"].is_number() && e["clock"].is_u64(), "{e}");
            // Every task event places the task in its job.
            assert_eq!(
                (&e["root_id"], &e["parent_id"], &e["jobid"]),
                (&json!(id), &json!(null), &json!(42)),
                "{e}"
            );
        }
        let received = seen
            .iter()
            .find(|(_, v, _)| v["type"] == "task-received")
            .unwrap()
            .1
            .clone();
        assert_eq!(received["name"], "dynamo.tasks.stat_paths", "{received}");
        assert_eq!(received["root_id"], id.as_str(), "{received}");
        // Event order follows the task's life.
        let pos = |kind: &str| {
            seen.iter()
                .position(|(_, v, _)| v["type"] == kind && v["uuid"] == id.as_str())
        };
        assert!(pos("task-received") < pos("task-started") && pos("task-started") < pos("task-succeeded"));
        // The hostname header is set on events.
        assert!(
            seen.iter().all(|(_, _, h)| h.as_deref() == Some(hostname.as_str())),
            "{seen:?}"
        );
        // A later heartbeat counts the task.
        next_until(
            &mut seen,
            &|_, v| v["type"] == "worker-heartbeat" && v["processed"].as_u64().is_some_and(|n| n >= 1),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|| panic!("no heartbeat with processed >= 1"));
    });
    assert!(agent.stop().success(), "{}", agent.log());
}
