//! The agent end to end on the real broker, with hand-made messages.

mod common;

use common::agent::*;
use std::time::Duration;

/// A started agent with `settings`, a file `a` in its data directory, and
/// its worker queue.
fn started_with_a_file(settings: &str) -> (Agent, std::path::PathBuf, String) {
    let mut agent = Agent::new(settings);
    let a = agent.data().join("a");
    std::fs::write(&a, b"abc").unwrap();
    agent.start();
    let queue = agent.queue("worker");
    (agent, a, queue)
}

#[test]
fn stat_task_round_trip_and_clean_stop() {
    if !broker_or_skip() {
        return;
    }
    let (mut agent, a, queue) = started_with_a_file("");
    rt().block_on(async {
        let mut c = Client::connect().await;
        let kwargs = format!("{{\"paths\": [\"{}\"], \"jobid\": 3}}", a.display());
        let id = c.send_task(&queue, "dynamo.tasks.stat_paths", &kwargs).await;
        let r = c.reply_for(&id, Duration::from_secs(30)).await;
        assert_eq!(r["status"], "SUCCESS", "{r}");
        assert_eq!(r["result"]["jobid"], 3);
        assert_eq!(r["result"]["status"]["summary"]["processed"], 1, "{r}");
    });
    assert!(agent.stop().success(), "{}", agent.log());
    assert!(agent.log().contains("stopped"));
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_and_health_endpoints() {
    if !broker_or_skip() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // Kept alive for the scrapes below (dropping it stops the agent).
    let (_agent, a, queue) = started_with_a_file(&format!("metrics_listen = {addr}"));
    rt().block_on(async {
        let mut c = Client::connect().await;
        let kwargs = format!("{{\"paths\": [\"{}\"]}}", a.display());
        let id = c.send_task(&queue, "dynamo.tasks.stat_paths", &kwargs).await;
        let r = c.reply_for(&id, Duration::from_secs(30)).await;
        assert_eq!(r["status"], "SUCCESS", "{r}");
        let id = c.send_task(&queue, "dynamo.tasks.no_such_task", "{}").await;
        let r = c.reply_for(&id, Duration::from_secs(30)).await;
        assert_eq!(r["status"], "FAILURE", "{r}");
    });
    // Queue depths are polled once the consumers are up, then every 10 s.
    let gauge = format!("ferry_agent_queue_messages{{queue=\"{queue}\"}} 0");
    let t0 = std::time::Instant::now();
    let mut m = http_get(&addr, "/metrics");
    while !m.contains(&gauge) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        m = http_get(&addr, "/metrics");
    }
    for line in [
        "ferry_agent_tasks_total{outcome=\"succeeded\"} 1",
        "ferry_agent_tasks_total{outcome=\"rejected\"} 1",
        "ferry_agent_paths_total 1",
        "ferry_agent_active_tasks 0",
        "ferry_agent_queue_wait_seconds_count 1",
        &gauge,
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    let h = http_get(&addr, "/health");
    assert!(h.contains("\"connected\":true"), "{h}");
    assert!(h.contains("\"processed\":2"), "{h}");
}
