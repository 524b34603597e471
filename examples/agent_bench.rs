//! Agent benchmarks against a running `ferry agent`, for
//! `scripts/bench-agent.sh`. Each mode prints one JSON line.
//!
//! ```text
//! agent_bench publish    SITE TREE RUNS   # discovery of TREE publishing batches
//! agent_bench first-child SITE TREE RUNS  # send → first child on its queue
//! agent_bench roundtrip  SITE FILE RUNS   # stat_paths of one file, send → result
//! agent_bench pipeline   SITE BATCH PATHS # publishing alone, no walk
//! ```
//!
//! `pipeline` measures the publishing side without a walk: PATHS path
//! objects, cut into batches of BATCH, each built into a child task message
//! with ferry's codec and published through ferry's broker session with up
//! to 1,024 confirmations outstanding, all confirmed at the end.
//!
//! `publish` sends `dynamo.tasks.recursive_navigate` with one `all` rule
//! whose action goes to `SITE.sink#worker`, a queue nobody consumes, so the
//! children only cost their publishing; it reports paths published per
//! second from the discovery's own `started` to its `date_done`.

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use std::time::{Duration, Instant};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.as_bytes()))
}

async fn declare(ch: &Channel, q: &str) {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(q.into(), opts, FieldTable::default()).await.unwrap();
}

async fn consume(ch: &Channel, q: &str) -> Consumer {
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    ch.basic_consume(q.into(), "".into(), opts, FieldTable::default())
        .await
        .unwrap()
}

async fn send(ch: &Channel, queue: &str, task: &str, kwargs: &str, reply_to: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let mut h = FieldTable::default();
    for (k, v) in [("task", s(task)), ("id", s(&id)), ("root_id", s(&id))] {
        h.insert(k.into(), v);
    }
    let body = format!("[[], {kwargs}, null]");
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id(id.as_str().into())
        .with_reply_to(reply_to.into())
        .with_headers(h);
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    id
}

async fn reply(c: &mut Consumer, id: &str) -> serde_json::Value {
    loop {
        let d = c.next().await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        if v["task_id"] == id {
            return v;
        }
    }
}

/// A parent task for child messages (only its ids are used).
fn parent_message() -> ferry::agent::celery::TaskMessage {
    use ferry::agent::celery::{HeaderValue, Incoming, decode};
    let headers = vec![
        (
            "task".to_string(),
            HeaderValue::Str("dynamo.tasks.recursive_navigate".into()),
        ),
        ("id".to_string(), HeaderValue::Str("bench-parent".into())),
    ];
    decode(
        &Incoming {
            headers: &headers,
            body: b"[[], {}, null]",
            ..Default::default()
        },
        usize::MAX,
    )
    .unwrap()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (p(0.5), v[0], p(0.99))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, site, target, runs] = &args[..] else {
        eprintln!("usage: agent_bench publish|first-child|roundtrip SITE PATH RUNS | pipeline SITE BATCH PATHS");
        std::process::exit(2);
    };
    let runs: usize = runs.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::connect(BROKER, ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let reply_q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let reply_to = reply_q.name().as_str().to_string();
        let mut replies = consume(&ch, &reply_to).await;
        let sink = format!("{site}.sink#worker");
        declare(&ch, &sink).await;
        let rules = serde_json::json!([{"state": "all", "type": "all",
            "action": [{"name": "dynamo.tasks.stat_paths", "queue": "sink"}]}]);
        match mode.as_str() {
            "publish" => {
                let kwargs = serde_json::json!({"paths": [target], "filter_rules": rules}).to_string();
                let mut rates = Vec::new();
                for _ in 0..runs {
                    ch.queue_purge(sink.as_str().into(), QueuePurgeOptions::default()).await.unwrap();
                    let t0 = Instant::now();
                    let id = send(&ch, &format!("{site}.default#discovery"), "dynamo.tasks.recursive_navigate", &kwargs, &reply_to).await;
                    let r = reply(&mut replies, &id).await;
                    let wall = t0.elapsed().as_secs_f64();
                    let st = &r["result"]["status"];
                    let paths = st["summary"]["files"].as_u64().unwrap() + st["summary"]["dirs"].as_u64().unwrap()
                        + st["summary"]["symlinks"].as_u64().unwrap() + st["summary"]["other"].as_u64().unwrap();
                    let children = st["summary"]["children"].as_u64().unwrap();
                    rates.push(paths as f64 / wall);
                    eprintln!("paths={paths} children={children} wall={wall:.3}s rate={:.0}/s", paths as f64 / wall);
                }
                let (med, min, max) = median(rates);
                println!("{}", serde_json::json!({"mode": "publish", "median_paths_per_s": med.round(), "min": min.round(), "max": max.round(), "runs": runs}));
            }
            "first-child" => {
                let kwargs = serde_json::json!({"paths": [target], "filter_rules": rules}).to_string();
                let mut sink_c = consume(&ch, &sink).await;
                let mut ms = Vec::new();
                for _ in 0..runs {
                    ch.queue_purge(sink.as_str().into(), QueuePurgeOptions::default()).await.unwrap();
                    let t0 = Instant::now();
                    let id = send(&ch, &format!("{site}.default#discovery"), "dynamo.tasks.recursive_navigate", &kwargs, &reply_to).await;
                    sink_c.next().await.unwrap().unwrap();
                    ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    reply(&mut replies, &id).await;
                    // Drain what the rest of the walk published.
                    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sink_c.next()).await {}
                }
                let (med, min, p99) = median(ms);
                println!("{}", serde_json::json!({"mode": "first-child", "median_ms": med, "min_ms": min, "p99_ms": p99, "runs": runs}));
            }
            "pipeline" => {
                let batch: usize = target.parse().unwrap();
                let sess = ferry::agent::broker::Session::connect(BROKER, "bench").await.unwrap();
                let parent = parent_message();
                let mut rates = Vec::new();
                for _ in 0..3 {
                    ch.queue_purge(sink.as_str().into(), QueuePurgeOptions::default()).await.unwrap();
                    let t0 = Instant::now();
                    let mut pending = std::collections::VecDeque::new();
                    let mut obj = Vec::new();
                    let mut n = 0;
                    while n < runs {
                        let mut paths = Vec::with_capacity(batch * 64);
                        for i in n..(n + batch).min(runs) {
                            if i > n {
                                paths.push(b',');
                            }
                            obj.clear();
                            let p = format!("/work/bench-agent/tree/d{:05}/file{:07}", i / 1000, i);
                            ferry::task::PathObject::new(p.into_bytes()).write_json(&mut obj);
                            paths.extend_from_slice(&obj);
                        }
                        n = (n + batch).min(runs);
                        let kwargs = ferry::task::args::kwargs_with("\"endpoint\":\"archive\"", None, Some(&paths));
                        let out = ferry::agent::celery::child_task(uuid::Uuid::new_v4().to_string(), ferry::task::TaskName::Migrate.as_str(), &kwargs, &parent, &[], "bench@h");
                        let props = ferry::agent::broker::task_properties(&out.id, Some(&reply_to), &out.headers);
                        pending.push_back(sess.publish("", &sink, &out.body, props).await.unwrap());
                        if pending.len() > 1024 {
                            ferry::agent::broker::confirmed(pending.pop_front().unwrap().await).unwrap();
                        }
                    }
                    for c in pending {
                        ferry::agent::broker::confirmed(c.await).unwrap();
                    }
                    let rate = runs as f64 / t0.elapsed().as_secs_f64();
                    eprintln!("batch={batch} paths={runs} rate={rate:.0}/s");
                    rates.push(rate);
                }
                let (med, min, max) = median(rates);
                println!("{}", serde_json::json!({"mode": "pipeline", "batch": batch, "median_paths_per_s": med.round(), "min": min.round(), "max": max.round()}));
            }
            "roundtrip" => {
                let kwargs = serde_json::json!({"paths": [target]}).to_string();
                let mut ms = Vec::new();
                for _ in 0..runs {
                    let t0 = Instant::now();
                    let id = send(&ch, &format!("{site}.default#worker"), "dynamo.tasks.stat_paths", &kwargs, &reply_to).await;
                    let r = reply(&mut replies, &id).await;
                    assert_eq!(r["status"], "SUCCESS");
                    ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                let (med, min, p99) = median(ms);
                println!("{}", serde_json::json!({"mode": "roundtrip", "median_ms": med, "min_ms": min, "p99_ms": p99, "runs": runs}));
            }
            _ => {
                eprintln!("unknown mode {mode}");
                std::process::exit(2);
            }
        }
        ch.queue_delete(sink.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    });
}
