//! Hub benchmarks against a running `ferry hub serve`, for
//! `scripts/bench-hub.sh` (docs/benchmarks.md, "Hub"). Each measuring
//! mode prints one JSON line.
//!
//! ```text
//! hub_bench login    URL USER PASSWORD            # prints a new API key
//! hub_bench site     URL KEY SITE                 # POST /api/sites/
//! hub_bench ingest   URL KEY SITE QUEUE N RATE PID MAXSECS
//! hub_bench complete URL KEY SITE QUEUE JOBS CHILDREN
//! hub_bench held     URL KEY SITE QUEUE N         # N children first, then their parent's result
//! hub_bench submit   URL KEY SITE RATE COUNT
//! hub_bench mkjob    URL KEY SITE                 # prints "JOB ROOT_TASK_ID"
//! hub_bench feed     QUEUE JOB ROOT N             # publishes a job's results, nobody reading
//! hub_bench wait     URL KEY JOB TOTAL PID        # drain of a pre-filled results queue
//! hub_bench broker   QUEUE N                      # the broker alone: publish N, then consume N
//! hub_bench store    DB_URL N                     # Store::ingest in-process, no broker, no HTTP
//! ```
//!
//! The results are the agents' own documents: a discovery result of the
//! job's root task (`celery::result_document`, `children_count` = N, a
//! `run`) and N `dynamo.tasks.migrate` results with ids
//! `ChildId { run, seq }.to_uuid()`, each a seed result object
//! (`TaskResult`) of 40 processed paths, published to the hub's results
//! queue with the agents' properties and publisher confirms (up to 1,024
//! outstanding).
//!
//! `ingest` publishes as fast as it can (RATE 0), never more than
//! [`BACKLOG`] results ahead of what the hub has counted (the broker
//! would otherwise hold gigabytes), or at RATE results/s; it stops
//! publishing after MAXSECS. It polls `/api/jobs/{id}/progress/` (one
//! row) every 10 ms: since the queue is FIFO and read by one consumer,
//! results are counted in the order they were published, so the first
//! poll that sees result `i` counted gives its publish→commit latency
//! (to within the poll interval). It also samples the hub's VmRSS and
//! the CPU time of the hub (per thread), the broker, PostgreSQL, the
//! driver and the whole machine, and reads the hub's `/metrics`
//! histograms before and after.

use ferry::agent::broker::{Session, confirmed, result_properties};
use ferry::agent::celery::{ChildId, ResultHead, TaskState, result_document};
use ferry::task::{Outcome, PathObject, TaskName, TaskResult};
use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Most results published and not yet counted, when publishing as fast
/// as possible (about 0.2 GB of messages).
const BACKLOG: u64 = 20_000;

/// Most publisher confirmations outstanding.
const WINDOW: usize = 1024;

/// Paths per result (the seed's `file_batch_size`).
const PATHS: usize = 40;

// ---------------------------------------------------------------- HTTP

/// A minimal HTTP/1.1 client: one connection per request.
#[derive(Clone)]
struct Http {
    addr: String,
    auth: Option<String>,
}

impl Http {
    fn new(url: &str, key: Option<&str>) -> Http {
        Http {
            addr: url.trim_start_matches("http://").trim_end_matches('/').to_string(),
            auth: key.map(|k| format!("Api-Key {k}")),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = tokio::net::TcpStream::connect(&self.addr).await?;
        s.set_nodelay(true)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(a) = &self.auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        let body = body.map(Value::to_string);
        if let Some(b) = &body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = &body {
            req.push_str(b);
        }
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut body = buf[end + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Ok((code, body))
    }

    async fn json(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let (code, b) = self.call(method, path, body).await.expect("the hub answers");
        assert_eq!(code, want, "{method} {path}: {}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).unwrap_or(Value::Null)
    }

    async fn text(&self, path: &str) -> String {
        let (_, b) = self.call("GET", path, None).await.expect("the hub answers");
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < nl + 2 + n {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[(nl + 4 + n).min(b.len())..];
    }
    out
}

// ---------------------------------------------------------- documents

/// The synthetic results of one job.
struct Gen {
    jobid: Box<RawValue>,
    root: String,
    run: u64,
    site: String,
    /// Result objects of 40 paths, used in turn (the hub reads their
    /// summaries, not their paths).
    values: Vec<Vec<u8>>,
}

impl Gen {
    fn new(job: i64, root: &str, site: &str) -> Gen {
        let jobid = RawValue::from_string(job.to_string()).expect("an integer");
        let queue = format!("{site}.default#worker");
        let values = (0..64)
            .map(|v| {
                let mut r = TaskResult::new(TaskName::Migrate, Some(jobid.clone()));
                r.set_queue(&queue);
                for i in 0..PATHS {
                    let p = format!(
                        r#"{{"path":"/bench/job{job}/d{v:04}/file{i:06}.dat","type":"file","size":{}}}"#,
                        1_048_576 + i
                    );
                    r.add(
                        &PathObject::parse(p.as_bytes()).expect("a path object"),
                        &Outcome::processed(),
                    );
                }
                r.to_json()
            })
            .collect();
        Gen {
            jobid,
            root: root.to_string(),
            run: ChildId::new_run(),
            site: site.to_string(),
            values,
        }
    }

    /// The root discovery's result, announcing `n` children of `run`.
    fn root_doc(&self, n: u64) -> Vec<u8> {
        let queue = format!("{}.default#discovery", self.site);
        let value = json!({
            "jobid": self.jobid,
            "queue": queue,
            "paths": [],
            "status": {
                "task": "dynamo.tasks.recursive_navigate",
                "input_paths": ["/bench"],
                "input_total": 1,
                "summary": {"files": n * PATHS as u64, "dirs": n / 100 + 1, "symlinks": 0, "other": 0,
                            "failures": 0, "children": n},
                "details": {"failures": []},
            },
        })
        .to_string();
        let head = ResultHead {
            task_id: &self.root,
            name: "dynamo.tasks.recursive_navigate",
            parent_id: None,
            jobid: Some(&self.jobid),
            worker: "ferry@bench-n1",
            queue: &queue,
        };
        result_document(&head, TaskState::Success, value.as_bytes(), None, &[], n, self.run)
    }

    /// Child `seq`'s result: its id and document.
    fn child(&self, seq: u64) -> (String, Vec<u8>) {
        let id = ChildId { run: self.run, seq }.to_uuid();
        let queue = format!("{}.default#worker", self.site);
        let head = ResultHead {
            task_id: &id,
            name: "dynamo.tasks.migrate",
            parent_id: Some(&self.root),
            jobid: Some(&self.jobid),
            worker: "ferry@bench-n1",
            queue: &queue,
        };
        let value = &self.values[seq as usize % self.values.len()];
        let doc = result_document(&head, TaskState::Success, value, None, &[], 0, self.run);
        (id, doc)
    }
}

/// Publishes with up to [`WINDOW`] confirmations outstanding.
struct Publisher {
    session: Session,
    queue: String,
    pending: VecDeque<lapin::PublisherConfirm>,
}

impl Publisher {
    async fn new(queue: &str) -> Publisher {
        let session = Session::connect(BROKER, "ferry-hub-bench").await.expect("the broker");
        session.declare_queue(queue).await.expect("declare");
        Publisher {
            session,
            queue: queue.to_string(),
            pending: VecDeque::new(),
        }
    }

    async fn send(&mut self, id: &str, doc: &[u8]) {
        if self.pending.len() >= WINDOW {
            confirmed(self.pending.pop_front().expect("one").await).expect("confirmed");
        }
        let c = self
            .session
            .publish("", &self.queue, doc, result_properties(id))
            .await
            .expect("publish");
        self.pending.push_back(c);
    }

    async fn flush(&mut self) {
        while let Some(c) = self.pending.pop_front() {
            confirmed(c.await).expect("confirmed");
        }
    }
}

// ------------------------------------------------------------ sampling

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a /proc stat file, seconds.
fn stat_cpu(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks())
}

fn comm(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

/// CPU seconds so far: the hub by thread name, the broker, PostgreSQL,
/// this driver, and the machine's busy time.
fn cpu_snapshot(hub: u32) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    if hub != 0
        && let Ok(rd) = std::fs::read_dir(format!("/proc/{hub}/task"))
    {
        for t in rd.flatten() {
            let p = t.path();
            let name = comm(&format!("{}/comm", p.display()));
            let group = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_');
            if let Some(c) = stat_cpu(&format!("{}/stat", p.display())) {
                *m.entry(format!("hub: {group}")).or_insert(0.0) += c;
            }
        }
    }
    let me = std::process::id();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let key = match comm(&format!("/proc/{pid}/comm")).as_str() {
                _ if pid == me => "driver (hub_bench)",
                "beam.smp" | "erl_child_setup" | "epmd" => "broker (RabbitMQ)",
                "postgres" => "PostgreSQL",
                "python3" => "python3",
                _ => continue,
            };
            if let Some(c) = stat_cpu(&format!("/proc/{pid}/stat")) {
                *m.entry(key.to_string()).or_insert(0.0) += c;
            }
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/stat")
        && let Some(line) = s.lines().next()
    {
        let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        let busy: f64 = v
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, x)| x)
            .sum();
        m.insert("machine busy".into(), busy / ticks());
    }
    m
}

fn cpu_delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, wall: f64) -> Value {
    let mut out = serde_json::Map::new();
    let (mut known, mut busy, mut hub) = (0.0, 0.0, 0.0);
    for (k, v) in b {
        let d = v - a.get(k).copied().unwrap_or(0.0);
        match k.as_str() {
            "machine busy" => busy = d,
            _ => known += d,
        }
        if k.starts_with("hub: ") {
            hub += d;
        }
        if d > 0.005 {
            out.insert(k.clone(), json!({"cpu_s": r3(d), "cores": r3(d / wall)}));
        }
    }
    out.insert("hub total".into(), json!({"cpu_s": r3(hub), "cores": r3(hub / wall)}));
    // What else ran meanwhile (other builds on a shared machine).
    let other = (busy - known).max(0.0);
    out.insert(
        "other processes".into(),
        json!({"cpu_s": r3(other), "cores": r3(other / wall)}),
    );
    Value::Object(out)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A histogram of `/metrics`: cumulative (le, count), sum, count; lines
/// whose labels contain `filter`.
fn histogram(text: &str, name: &str, filter: &str) -> (Vec<(f64, f64)>, f64, f64) {
    let (mut buckets, mut sum, mut count) = (Vec::new(), 0.0, 0.0);
    let bucket = format!("{name}_bucket{{");
    for line in text.lines() {
        let value = || {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if line.starts_with(&bucket) && line.contains(filter) {
            let le = line
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(|v| {
                    if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse().unwrap_or(0.0)
                    }
                })
                .unwrap_or(0.0);
            buckets.push((le, value()));
        } else if line.starts_with(&format!("{name}_sum")) && line.contains(filter) {
            sum = value();
        } else if line.starts_with(&format!("{name}_count")) && line.contains(filter) {
            count = value();
        }
    }
    (buckets, sum, count)
}

/// What a histogram gained between two `/metrics` texts: count, mean,
/// and the bucket bounds holding p50 and p99.
fn histogram_delta(before: &str, after: &str, name: &str, filter: &str) -> Value {
    let (b0, s0, c0) = histogram(before, name, filter);
    let (b1, s1, c1) = histogram(after, name, filter);
    let n = c1 - c0;
    if n <= 0.0 {
        return Value::Null;
    }
    let cum: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, c)| (*le, c - b0.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1)))
        .collect();
    let q = |q: f64| {
        let mut lower = 0.0;
        for (le, c) in &cum {
            if *c >= q * n {
                return json!(format!("{lower}..{le}"));
            }
            lower = *le;
        }
        Value::Null
    };
    json!({"count": n, "mean": ((s1 - s0) / n * 1e6).round() / 1e6, "p50_bucket": q(0.5), "p99_bucket": q(0.99)})
}

// --------------------------------------------------------------- jobs

async fn submit_job(http: &Http, site: &str, path: &str) -> (i64, String) {
    let j = http
        .json(
            "POST",
            "/api/file/workflow/",
            Some(&json!({"workflow": "migrate", "site": site, "paths": [path]})),
            201,
        )
        .await;
    let id = j["id"].as_i64().expect("a job id");
    let t = http.json("GET", &format!("/api/tasks/?job_id={id}"), None, 200).await;
    let root = t["results"][0]["task_id"].as_str().expect("a root task").to_string();
    (id, root)
}

/// (done, total) of a job: results counted and expected.
async fn progress(http: &Http, job: i64) -> Option<(u64, u64)> {
    let (code, b) = http
        .call("GET", &format!("/api/jobs/{job}/progress/"), None)
        .await
        .ok()?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&b).ok()?;
    Some((v["tasks_done"].as_u64()?, v["tasks_total"].as_u64()?))
}

/// Polls a job every `every` until `stop`; (seconds since `t0`, counted).
async fn poll(
    http: Http,
    job: i64,
    t0: Instant,
    every: Duration,
    counted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    hub: u32,
) -> (Vec<(f64, u64)>, Vec<(f64, u64, u64)>) {
    let mut series = Vec::new();
    let mut rss = Vec::new();
    let mut last_rss = Instant::now() - Duration::from_secs(10);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if let Some((done, _)) = progress(&http, job).await {
            let t = t0.elapsed().as_secs_f64();
            counted.store(done, Ordering::Relaxed);
            series.push((t, done));
            if hub != 0 && last_rss.elapsed() >= Duration::from_millis(500) {
                last_rss = Instant::now();
                rss.push((t, done, rss_kib(hub)));
            }
        }
    }
    (series, rss)
}

/// Client-side publish→commit latencies (ms): result `i` is committed at
/// the first poll that counts more than `i` results.
fn latencies(published: &[f64], series: &[(f64, u64)]) -> Vec<f64> {
    let mut out = Vec::with_capacity(published.len());
    let mut k = 0;
    for (i, p) in published.iter().enumerate() {
        while k < series.len() && series[k].1 <= i as u64 {
            k += 1;
        }
        if k == series.len() {
            break;
        }
        out.push((series[k].0 - p) * 1000.0);
    }
    out
}

/// Commit rate over the part of `series` between fractions `a` and `b`
/// of `total`.
fn slope(series: &[(f64, u64)], total: u64, a: f64, b: f64) -> f64 {
    let lo = series.iter().find(|x| x.1 as f64 >= a * total as f64);
    let hi = series.iter().find(|x| x.1 as f64 >= b * total as f64);
    match (lo, hi) {
        (Some(l), Some(h)) if h.0 > l.0 => (h.1 - l.1) as f64 / (h.0 - l.0),
        _ => f64::NAN,
    }
}

// --------------------------------------------------------------- modes

#[allow(clippy::too_many_arguments)]
async fn ingest(http: Http, site: &str, queue: &str, n: u64, rate: f64, hub: u32, max_secs: f64) -> Value {
    let (job, root) = submit_job(&http, site, &format!("/bench/ingest-{}", uuid::Uuid::new_v4().simple())).await;
    let g = Gen::new(job, &root, site);
    let mut publisher = Publisher::new(queue).await;
    let metrics0 = http.text("/metrics").await;
    let cpu0 = cpu_snapshot(hub);
    let rss0 = rss_kib(hub);
    let counted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let poller = tokio::spawn(poll(
        http.clone(),
        job,
        t0,
        Duration::from_millis(10),
        counted.clone(),
        stop.clone(),
        hub,
    ));
    let mut published = Vec::with_capacity(n as usize + 1);
    published.push(t0.elapsed().as_secs_f64());
    publisher.send(&root, &g.root_doc(n)).await;
    let mut sent = 0u64;
    while sent < n {
        if t0.elapsed().as_secs_f64() > max_secs {
            break;
        }
        if rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(sent as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        } else {
            while sent + 1 > counted.load(Ordering::Relaxed) + BACKLOG {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let (id, doc) = g.child(sent);
        published.push(t0.elapsed().as_secs_f64());
        publisher.send(&id, &doc).await;
        sent += 1;
    }
    publisher.flush().await;
    let t_published = t0.elapsed().as_secs_f64();
    let total = sent + 1;
    let limit = Instant::now() + Duration::from_secs(300);
    while counted.load(Ordering::Relaxed) < total && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (series, rss) = poller.await.expect("poller");
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_snapshot(hub);
    let metrics1 = http.text("/metrics").await;
    let t_done = series.iter().find(|x| x.1 >= total).map_or(f64::NAN, |x| x.0);
    // The job's page counts the job's tasks (COUNT(*)): time it once.
    let tj = Instant::now();
    let j = http.json("GET", &format!("/api/jobs/{job}/"), None, 200).await;
    let job_page_ms = tj.elapsed().as_secs_f64() * 1000.0;
    let mut lat = latencies(&published, &series);
    // Rates over 10-second windows.
    let mut windows = Vec::new();
    let mut w0 = 0usize;
    for (k, x) in series.iter().enumerate() {
        if x.0 - series[w0].0 >= 10.0 {
            windows.push((x.1 - series[w0].1) as f64 / (x.0 - series[w0].0));
            w0 = k;
        }
    }
    let mut ws = windows.clone();
    if let Ok(path) = std::env::var("HUB_BENCH_SERIES") {
        let mut text = String::from("seconds\tcounted\trss_kib\n");
        for (t, c, r) in &rss {
            text.push_str(&format!("{t:.2}\t{c}\t{r}\n"));
        }
        std::fs::write(path, text).expect("write the series");
    }
    // RSS at checkpoints of the counted results.
    let mut at = serde_json::Map::new();
    for mark in [
        10_000u64, 100_000, 250_000, 500_000, 1_000_000, 1_500_000, 2_000_000, 2_500_000,
    ] {
        if let Some(x) = rss.iter().find(|x| x.1 >= mark) {
            at.insert(mark.to_string(), json!(r3(x.2 as f64 / 1024.0)));
        }
    }
    let after_100k: Vec<u64> = rss.iter().filter(|x| x.1 >= 100_000).map(|x| x.2).collect();
    let flat = match (after_100k.first(), after_100k.iter().max()) {
        (Some(a), Some(m)) => json!(r3(*m as f64 / *a as f64)),
        _ => Value::Null,
    };
    json!({
        "mode": "ingest",
        "job": job,
        "state": j["state"],
        "results": total,
        "target_rate": rate,
        "paths_per_result": PATHS,
        "result_bytes": g.child(0).1.len(),
        "publish_s": r3(t_published),
        "all_counted_s": r3(t_done),
        "rate_overall": (total as f64 / t_done).round(),
        "rate_10_90": slope(&series, total, 0.1, 0.9).round(),
        "rate_10s_windows": {"min": pct(&mut ws, 0.0).round(), "median": pct(&mut ws, 0.5).round(), "max": pct(&mut ws, 1.0).round(), "n": windows.len()},
        "latency_ms_client": {"p50": pct(&mut lat, 0.5).round(), "p99": pct(&mut lat, 0.99).round(), "max": pct(&mut lat, 1.0).round(), "n": lat.len()},
        "hub_lag_s": histogram_delta(&metrics0, &metrics1, "ferry_hub_ingest_lag_seconds", ""),
        "hub_commit_s": histogram_delta(&metrics0, &metrics1, "ferry_hub_db_commit_seconds", ""),
        "hub_batch_size": histogram_delta(&metrics0, &metrics1, "ferry_hub_ingest_batch_size", ""),
        "cpu": cpu_delta(&cpu0, &cpu1, wall),
        "wall_s": r3(wall),
        "rss_mib": {"start": r3(rss0 as f64 / 1024.0), "at_counted": at, "max": r3(rss.iter().map(|x| x.2).max().unwrap_or(0) as f64 / 1024.0), "max_over_at_100k": flat},
        "job_page_ms": r3(job_page_ms),
        "polls": series.len(),
    })
}

async fn complete(http: Http, site: &str, queue: &str, jobs: usize, children: u64) -> Value {
    let mut publisher = Publisher::new(queue).await;
    let mut alone = Vec::new();
    let mut burst = Vec::new();
    for k in 0..2 * jobs {
        let (job, root) = submit_job(&http, site, &format!("/bench/complete-{k}")).await;
        let g = Gen::new(job, &root, site);
        publisher.send(&root, &g.root_doc(children)).await;
        let last_alone = k % 2 == 0;
        let upto = if last_alone { children - 1 } else { children };
        for s in 0..upto {
            let (id, doc) = g.child(s);
            publisher.send(&id, &doc).await;
        }
        let mut t = Instant::now();
        publisher.flush().await;
        if last_alone {
            // All but the last counted, the hub idle: then the last.
            loop {
                if let Some((done, _)) = progress(&http, job).await
                    && done >= children
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (id, doc) = g.child(children - 1);
            t = Instant::now();
            publisher.send(&id, &doc).await;
            publisher.flush().await;
        }
        loop {
            if let Some((done, total)) = progress(&http, job).await
                && done >= total
                && total == children + 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let j = http.json("GET", &format!("/api/jobs/{job}/"), None, 200).await;
        assert!(
            ["SUCCESS", "FAILURE"].contains(&j["state"].as_str().unwrap_or("")),
            "job {job}: {j}"
        );
        if last_alone { &mut alone } else { &mut burst }.push(ms);
    }
    let st = |v: &mut Vec<f64>| json!({"p50": r3(pct(v, 0.5)), "p99": r3(pct(v, 0.99)), "max": r3(pct(v, 1.0)), "n": v.len()});
    json!({
        "mode": "complete",
        "children": children,
        "last_result_alone_ms": st(&mut alone),
        "whole_job_burst_last_publish_to_final_ms": st(&mut burst),
    })
}

/// Results filed so far (`ferry_hub_results_total`, all states).
async fn filed(http: &Http) -> f64 {
    http.text("/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with("ferry_hub_results_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A discovery's result that comes after its children's, as it does
/// when children finish during the walk: N children published first
/// (held: stored, not counted), then, once all are filed, the root's
/// result, which releases them. Measures root published → job final.
async fn held(http: Http, site: &str, queue: &str, n: u64) -> Value {
    let (job, root) = submit_job(&http, site, &format!("/bench/held-{}", uuid::Uuid::new_v4().simple())).await;
    let g = Gen::new(job, &root, site);
    let mut publisher = Publisher::new(queue).await;
    let before = filed(&http).await;
    let t0 = Instant::now();
    for s in 0..n {
        let (id, doc) = g.child(s);
        publisher.send(&id, &doc).await;
    }
    publisher.flush().await;
    while filed(&http).await < before + n as f64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let children_s = t0.elapsed().as_secs_f64();
    let metrics0 = http.text("/metrics").await;
    let t = Instant::now();
    publisher.send(&root, &g.root_doc(n)).await;
    publisher.flush().await;
    loop {
        if let Some((done, total)) = progress(&http, job).await
            && done >= total
            && total == n + 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let metrics1 = http.text("/metrics").await;
    json!({
        "mode": "held",
        "children": n,
        "children_filed_held_s": r3(children_s),
        "children_rate": (n as f64 / children_s).round(),
        "root_published_to_final_ms": r3(ms),
        "hub_commit_s": histogram_delta(&metrics0, &metrics1, "ferry_hub_db_commit_seconds", ""),
    })
}

async fn submit(http: Http, site: &str, rate: f64, count: usize) -> Value {
    let metrics0 = http.text("/metrics").await;
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let http = http.clone();
        let body = json!({"workflow": "migrate", "site": site, "paths": [format!("/bench/submit/{i}")]});
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http.call("POST", "/api/file/workflow/", Some(&body)).await;
            (t.elapsed().as_secs_f64() * 1000.0, matches!(r, Ok((201, _))))
        }));
    }
    let mut ms = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (m, ok) = t.await.expect("request");
        ms.push(m);
        errors += usize::from(!ok);
    }
    let wall = t0.elapsed().as_secs_f64();
    let metrics1 = http.text("/metrics").await;
    json!({
        "mode": "submit",
        "rate": rate,
        "count": count,
        "achieved_rate": (count as f64 / wall).round(),
        "errors": errors,
        "latency_ms": {"p50": r3(pct(&mut ms, 0.5)), "p99": r3(pct(&mut ms, 0.99)), "max": r3(pct(&mut ms, 1.0))},
        "hub_http_s": histogram_delta(&metrics0, &metrics1, "ferry_hub_http_request_seconds", "route=\"/api/file/workflow/\""),
    })
}

async fn feed(queue: &str, job: i64, root: &str, n: u64) -> Value {
    let g = Gen::new(job, root, "bench");
    let mut p = Publisher::new(queue).await;
    let t0 = Instant::now();
    p.send(root, &g.root_doc(n)).await;
    for s in 0..n {
        let (id, doc) = g.child(s);
        p.send(&id, &doc).await;
    }
    p.flush().await;
    let s = t0.elapsed().as_secs_f64();
    json!({"mode": "feed", "queue": queue, "messages": n + 1, "publish_s": r3(s), "publish_rate": ((n + 1) as f64 / s).round(), "bytes": g.child(0).1.len()})
}

async fn wait(http: Http, job: i64, total: u64, hub: u32) -> Value {
    let t0 = Instant::now();
    let cpu0 = cpu_snapshot(hub);
    let mut series: Vec<(f64, u64)> = Vec::new();
    loop {
        if let Some((done, _)) = progress(&http, job).await {
            series.push((t0.elapsed().as_secs_f64(), done));
            if done >= total {
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(1800), "job {job} not done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_snapshot(hub);
    let first = series.iter().find(|x| x.1 > 0).copied().unwrap_or((0.0, 0));
    let last = *series.last().expect("a poll");
    json!({
        "mode": "drain",
        "results": total,
        "rate": ((last.1 - first.1) as f64 / (last.0 - first.0)).round(),
        "first_count_s": r3(first.0),
        "drain_s": r3(last.0 - first.0),
        "cpu": cpu_delta(&cpu0, &cpu1, wall),
    })
}

/// The broker's own ceiling for these messages: publish N (confirmed,
/// persistent) to a queue nobody reads, then consume them all with the
/// hub's prefetch and one multiple-ack per 1,000.
async fn broker(queue: &str, n: u64) -> Value {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
    let f = feed(queue, 1, "00000000-0000-4000-8000-000000000000", n - 1).await;
    let conn = lapin::Connection::connect(BROKER, lapin::ConnectionProperties::default())
        .await
        .expect("the broker");
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(2000, BasicQosOptions::default()).await.expect("qos");
    let mut c = ch
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume");
    let t0 = Instant::now();
    let mut got = 0;
    let mut bytes = 0usize;
    while got < n {
        let d = c.next().await.expect("a delivery").expect("a delivery");
        got += 1;
        bytes += d.data.len();
        // The hub parses every result: so does this, to the same depth.
        let _ = ferry::hub::ingest::parse(&d.data);
        if got % 1000 == 0 || got == n {
            d.acker.ack(BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
    let s = t0.elapsed().as_secs_f64();
    let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    json!({"mode": "broker", "publish": f, "consume_and_parse_rate": (n as f64 / s).round(), "consume_s": r3(s), "mb": bytes / 1_000_000})
}

/// The store alone: `parse` and `Store::ingest` of the same documents in
/// batches of 1,000, in this process (no broker, no HTTP).
async fn store(url: &str, n: u64) -> Value {
    use ferry::hub::store::Store;
    use ferry::hub::store::jobs::{NewJob, Owner, RootTask};
    let store = Store::open(url).await.expect("open the store");
    let root = uuid::Uuid::new_v4().to_string();
    let r2 = root.clone();
    let new = NewJob {
        workflow: "migrate".into(),
        fields: json!({}),
        discovery: Some("recursive".into()),
        site: "bench".into(),
        queue: "default".into(),
        friendly_name: "bench".into(),
        owner: Owner {
            kind: "user".into(),
            id: 1,
            name: "bench".into(),
        },
        clientkey_id: None,
        input_paths: json!(["/bench"]),
        request: None,
        resubmitted_from: None,
        record_files: Default::default(),
        dry_run: false,
        sync: None,
    };
    let job = store
        .create_job(&new, move |_| {
            vec![RootTask {
                task_id: r2,
                tasktype: "dynamo.tasks.recursive_navigate".into(),
                site: "bench".into(),
                queue: "bench.default#discovery".into(),
                headers: "[]".into(),
                body: "[]".into(),
            }]
        })
        .await
        .expect("a job");
    let g = Gen::new(job, &root, "bench");
    let mut docs = vec![g.root_doc(n)];
    docs.extend((0..n).map(|s| g.child(s).1));
    let t = Instant::now();
    let parsed: Vec<_> = docs
        .iter()
        .map(|d| ferry::hub::ingest::parse(d).expect("a result").expect("final"))
        .collect();
    let parse_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut per_batch = Vec::new();
    let mut counted = 0;
    for b in parsed.chunks(1000) {
        let tb = Instant::now();
        counted += store.ingest(b).await.expect("ingest").counted;
        per_batch.push(tb.elapsed().as_secs_f64() * 1000.0);
    }
    let ingest_s = t.elapsed().as_secs_f64();
    assert_eq!(counted, n + 1);
    json!({
        "mode": "store",
        "engine": format!("{:?}", store.engine),
        "results": n + 1,
        "parse_us_per_result": r3(parse_s / (n + 1) as f64 * 1e6),
        "parse_rate": ((n + 1) as f64 / parse_s).round(),
        "ingest_rate": ((n + 1) as f64 / ingest_s).round(),
        "ingest_us_per_result": r3(ingest_s / (n + 1) as f64 * 1e6),
        "batch_ms": {"p50": r3(pct(&mut per_batch, 0.5)), "p99": r3(pct(&mut per_batch, 0.99)), "max": r3(pct(&mut per_batch, 1.0))},
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: see the top of examples/hub_bench.rs");
            std::process::exit(2)
        })
    };
    let num = |i: usize| -> f64 { a(i).parse().expect("a number") };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        match a(0) {
            "login" => {
                let http = Http::new(a(1), None);
                let t = http
                    .json(
                        "POST",
                        "/api/auth/token/",
                        Some(&json!({"username": a(2), "password": a(3)})),
                        200,
                    )
                    .await;
                let mut http = http;
                http.auth = Some(format!("Bearer {}", t["access"].as_str().expect("a token")));
                let k = http
                    .json(
                        "POST",
                        "/api/auth/clientkeys/",
                        Some(&json!({"name": "hub-bench"})),
                        201,
                    )
                    .await;
                Value::String(k["api_key"].as_str().expect("a key").to_string())
            }
            "site" => {
                let http = Http::new(a(1), Some(a(2)));
                http.json(
                    "POST",
                    "/api/sites/",
                    Some(&json!({"name": a(3), "shortcode": "hb"})),
                    201,
                )
                .await["id"]
                    .clone()
            }
            "mkjob" => {
                let (job, root) = submit_job(&Http::new(a(1), Some(a(2))), a(3), "/bench/drain").await;
                Value::String(format!("{job} {root}"))
            }
            "ingest" => {
                ingest(
                    Http::new(a(1), Some(a(2))),
                    a(3),
                    a(4),
                    num(5) as u64,
                    num(6),
                    num(7) as u32,
                    num(8),
                )
                .await
            }
            "complete" => complete(Http::new(a(1), Some(a(2))), a(3), a(4), num(5) as usize, num(6) as u64).await,
            "held" => held(Http::new(a(1), Some(a(2))), a(3), a(4), num(5) as u64).await,
            "submit" => submit(Http::new(a(1), Some(a(2))), a(3), num(4), num(5) as usize).await,
            "feed" => feed(a(1), num(2) as i64, a(3), num(4) as u64).await,
            "wait" => wait(Http::new(a(1), Some(a(2))), num(3) as i64, num(4) as u64, num(5) as u32).await,
            "broker" => broker(a(1), num(2) as u64).await,
            "store" => store(a(1), num(2) as u64).await,
            m => {
                eprintln!("unknown mode {m}");
                std::process::exit(2)
            }
        }
    });
    match out {
        Value::String(s) => println!("{s}"),
        v => println!("{v}"),
    }
}
