//! The hub's API and scale benchmarks, for `scripts/bench-hub-api.sh`
//! (docs/benchmarks.md, "Hub API at scale"). Each measuring mode prints
//! one JSON line.
//!
//! ```text
//! hub_api_bench token URL USER PASSWORD     # prints the web page's session cookies
//! hub_api_bench get   URL AUTH N PATH...    # N sequential GETs of each PATH
//! hub_api_bench beats SITE AGENTS SECS PID  # AGENTS agents' heartbeats for SECS; the hub's CPU
//! ```
//!
//! `get` sends `Authorization: AUTH`, or the cookie `AUTH` when it starts
//! with `cookie:`, one connection per request on loopback, and reports
//! the time from connecting to the last byte of the answer (which is the
//! server's time plus a loopback round trip): p50, p99 and max per path,
//! after one unmeasured request per path (warming the page cache). Any
//! status but 200 fails the run.
//!
//! `beats` runs the agent's own heartbeat loop
//! ([`ferry::agent::events::heartbeats`], every 2 s, the agent's
//! `worker-heartbeat` document with its queues, site and capabilities)
//! once per simulated node `benchnode-N`, all on one broker connection,
//! their starts spread over the first interval. After a 10 s warm-up it
//! reads the CPU time (utime + stime in /proc/PID/stat) of the hub, and
//! of PostgreSQL's and RabbitMQ's processes, over SECS, and reports them
//! as a share of one core; it first measures the same over 10 s with no
//! agent (the idle hub).

use ferry::agent::broker::Session;
use ferry::agent::events::{Events, NodeFacts, heartbeats};
use ferry::agent::metrics::Metrics;
use ferry::task::TaskName;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The agents' heartbeat interval (`heartbeat_interval`'s default).
const INTERVAL: Duration = Duration::from_secs(2);

/// Seconds of heartbeats before the CPU is measured.
const WARMUP: u64 = 10;

/// One GET on a new connection: status, body length, seconds to the
/// last byte.
async fn get(addr: &str, auth: &str, path: &str) -> std::io::Result<(u16, usize, f64)> {
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let header = match auth.strip_prefix("cookie:") {
        Some(c) => format!("Cookie: {c}"),
        None => format!("Authorization: {auth}"),
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{header}\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let secs = t.elapsed().as_secs_f64();
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, buf.len(), secs))
}

fn ms(x: f64) -> f64 {
    (x * 1e6).round() / 1e3
}

fn pct(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

async fn gets(url: &str, auth: &str, n: usize, paths: &[String]) -> Value {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut out = Vec::new();
    for path in paths {
        let (code, bytes, _) = get(addr, auth, path).await.expect("the hub answers");
        assert_eq!(code, 200, "GET {path}");
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let (code, _, secs) = get(addr, auth, path).await.expect("the hub answers");
            assert_eq!(code, 200, "GET {path}");
            times.push(secs);
        }
        times.sort_by(f64::total_cmp);
        out.push(json!({
            "path": path,
            "n": n,
            "bytes": bytes,
            "p50_ms": ms(pct(&times, 0.5)),
            "p99_ms": ms(pct(&times, 0.99)),
            "max_ms": ms(times[n - 1]),
        }));
    }
    json!({"mode": "get", "results": out})
}

/// CPU seconds (utime + stime) of process `pid`.
fn cpu_of(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64;
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
}

/// CPU seconds so far of the hub, and of every process named like
/// PostgreSQL's and RabbitMQ's (their server processes).
fn cpu_now(hub: u32) -> [f64; 3] {
    let mut pg = 0.0;
    let mut mq = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let c = cpu_of(&pid).unwrap_or(0.0);
        match comm.trim() {
            "postgres" | "postmaster" => pg += c,
            "beam.smp" | "epmd" | "erl_child_setup" => mq += c,
            _ => {}
        }
    }
    [cpu_of(&hub.to_string()).unwrap_or(0.0), pg, mq]
}

/// Shares of one core (percent) over `secs`, from two [`cpu_now`]s.
fn shares(a: [f64; 3], b: [f64; 3], secs: f64) -> Value {
    let p = |i: usize| ((b[i] - a[i]) / secs * 1000.0).round() / 10.0;
    json!({"hub_pct_of_core": p(0), "postgres_pct_of_core": p(1), "rabbitmq_pct_of_core": p(2), "seconds": secs})
}

async fn window(hub: u32, secs: u64) -> Value {
    let (a, t) = (cpu_now(hub), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shares(a, cpu_now(hub), t.elapsed().as_secs_f64())
}

async fn beats(site: &str, agents: usize, secs: u64, hub: u32) -> Value {
    let idle = window(hub, 10).await;
    let session = Arc::new(Session::connect(BROKER, "hub-api-bench").await.expect("broker"));
    let (_keep, sessions) = tokio::sync::watch::channel(Some(session));
    let node = NodeFacts {
        queues: vec![format!("{site}.default#worker"), format!("{site}.default#discovery")],
        site: site.to_string(),
        capabilities: json!({
            "tasks": TaskName::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "functions": ["discovery", "worker"],
            "endpoints": [],
            "control": ["cancel-v1", "pause-v1"],
        }),
    };
    let metrics = Arc::new(Metrics::default());
    let mut loops = Vec::with_capacity(agents);
    for i in 0..agents {
        let events = Arc::new(Events::new(&format!("benchnode-{i:04}"), false));
        loops.push(tokio::spawn(heartbeats(
            events,
            INTERVAL,
            node.clone(),
            metrics.clone(),
            sessions.clone(),
        )));
        tokio::time::sleep(INTERVAL / agents as u32).await;
    }
    tokio::time::sleep(Duration::from_secs(WARMUP)).await;
    let busy = window(hub, secs).await;
    for l in loops {
        l.abort();
    }
    json!({"mode": "beats", "agents": agents, "interval_s": INTERVAL.as_secs_f64(),
           "beats_per_s": agents as f64 / INTERVAL.as_secs_f64(), "idle": idle, "beating": busy})
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let arg = |i: usize| {
        a.get(i)
            .unwrap_or_else(|| panic!("argument {i} missing; see the doc comment"))
    };
    let out = match a.get(1).map(String::as_str) {
        Some("token") => {
            let body = json!({"username": arg(3), "password": arg(4)}).to_string();
            let t = rt.block_on(token(arg(2), &body));
            println!("{t}");
            return;
        }
        Some("get") => rt.block_on(gets(arg(2), arg(3), arg(4).parse().expect("N"), &a[5..])),
        Some("beats") => rt.block_on(beats(
            arg(2),
            arg(3).parse().expect("AGENTS"),
            arg(4).parse().expect("SECS"),
            arg(5).parse().expect("PID"),
        )),
        _ => {
            eprintln!("usage: see the doc comment of examples/hub_api_bench.rs");
            std::process::exit(2);
        }
    };
    println!("{out}");
}

/// `POST /api/auth/token/` with `body`: its tokens as the web page's
/// session cookies (`ferry_access=...; ferry_refresh=...`).
async fn token(url: &str, body: &str) -> String {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("the hub answers");
    let req = format!(
        "POST /api/auth/token/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    let json = &text[text.find("\r\n\r\n").expect("a header end") + 4..];
    let v: Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("no token: {text}"));
    let t = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("no token: {text}")).to_string();
    format!("ferry_access={}; ferry_refresh={}", t("access"), t("refresh"))
}
