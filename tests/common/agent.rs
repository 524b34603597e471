//! Fixtures for agent tests: a `ferry agent` process on its own site (so
//! tests never share queues), a raw AMQP client for sending hand-made
//! messages and reading replies, and the Python Celery client.
//!
//! The tests need RabbitMQ on 127.0.0.1:5672 (guest/guest); `scripts/test`
//! starts it. Without it a test fails under CI (`CI=true`) and is skipped
//! loudly elsewhere.
#![allow(dead_code)]

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker every agent test uses.
pub const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Whether the broker answers; when it does not, a failure under CI, else
/// a loud skip (and false).
pub fn broker_or_skip() -> bool {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(2)).is_ok();
    super::require(
        up,
        "agent tests need RabbitMQ on 127.0.0.1:5672 (scripts/test starts it)",
    )
}

/// A running `ferry agent` on a fresh site, with its files.
pub struct Agent {
    /// The site name (unique per agent): queues are `<site>.default#...`.
    pub site: String,
    /// Scratch directory: `ferry.conf`, `agent.log`, `data/`, `archive/`.
    pub dir: tempfile::TempDir,
    /// The process, while running.
    pub child: Option<Child>,
    /// Extra configuration lines for `[settings]`.
    pub settings: String,
}

impl Agent {
    /// A new site with `data/` and `archive/` directories and a directory
    /// endpoint `archive` rooted at `data/`; not started yet.
    pub fn new(settings: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::create_dir(dir.path().join("archive")).unwrap();
        let site = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let agent = Agent {
            site,
            dir,
            child: None,
            settings: settings.to_string(),
        };
        agent.write_config();
        agent
    }

    fn write_config(&self) {
        let d = self.dir.path();
        // No hub answers these agents' worker-online: do not wait for its
        // cancel snapshot unless the test asks to.
        let wait = if self.settings.contains("control_wait") {
            ""
        } else {
            "control_wait = 0\n"
        };
        let conf = format!(
            "[settings]\nsite = {}\nbroker_url = {BROKER}\nthreads = 4\n{wait}{}\n\n[Endpoint archive]\ntype = directory\npath = {}\nroot = {}\n",
            self.site,
            self.settings,
            d.join("archive").display(),
            d.join("data").display()
        );
        std::fs::write(d.join("ferry.conf"), conf).unwrap();
    }

    /// The data directory (the endpoint's root).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The queue `<site>.default#<function>`.
    pub fn queue(&self, function: &str) -> String {
        format!("{}.default#{function}", self.site)
    }

    /// Starts the agent and waits until its consumers are up.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_log("connected; consuming", Duration::from_secs(30));
    }

    /// Starts the agent without waiting for it, its stdout and stderr
    /// appended to `agent.log`: a file, as under a service manager, with
    /// neither `NO_COLOR` nor `JOURNAL_STREAM`, so the log shows the text
    /// the agent itself chooses for a stderr that is not a terminal.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["agent", "--config"])
            .arg(self.dir.path().join("ferry.conf"))
            .env("RUST_LOG", "info,lapin=warn")
            .env_remove("NO_COLOR")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits until the log has `needle` `times` times (panics after `limit`).
    pub fn wait_log_n(&self, needle: &str, times: usize, limit: Duration) {
        let t0 = Instant::now();
        while self.log().matches(needle).count() < times {
            assert!(
                t0.elapsed() < limit,
                "no {needle:?} x{times} in the agent's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log has `needle` (panics after `limit`).
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        self.wait_log_n(needle, 1, limit)
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        c.wait().unwrap()
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        // Remove this site's queues from the broker.
        let site = self.site.clone();
        let _ = rt().block_on(async move {
            let conn = Connection::connect(BROKER, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            for f in ["worker", "discovery", "custom", "interactive", "settings"] {
                let _ = ch
                    .queue_delete(format!("{site}.default#{f}").into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = ch
                .queue_delete(format!("{site}.dead-letter").into(), QueueDeleteOptions::default())
                .await;
            conn.close(200, "bye".into()).await
        });
    }
}

/// Messages waiting in `queue` (a passive declare; 0 when it does not
/// exist).
pub fn depth(queue: &str) -> u32 {
    rt().block_on(async {
        let c = Client::connect().await;
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        c.ch.queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
            .await
            .map_or(0, |q| q.message_count())
    })
}

/// A current-thread runtime for test clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A raw AMQP client with its own exclusive reply queue.
pub struct Client {
    /// The connection.
    pub conn: Connection,
    /// A channel for publishing and consuming.
    pub ch: Channel,
    /// The reply queue's name (use as `reply_to`).
    pub reply_to: String,
    consumer: lapin::Consumer,
    /// Replies read while waiting for another task's.
    pending: Vec<serde_json::Value>,
}

impl Client {
    /// Connects and declares an exclusive reply queue.
    pub async fn connect() -> Client {
        let conn = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let (reply_to, consumer) = reply_queue(&ch).await;
        Client {
            conn,
            ch,
            reply_to,
            consumer,
            pending: Vec::new(),
        }
    }

    /// Publishes raw bytes to `queue` (declared durable first) with
    /// `headers` (string values) and `reply_to` when given.
    pub async fn publish_raw(&self, queue: &str, headers: &[(&str, AMQPValue)], body: &[u8], reply: bool) {
        declare_durable(&self.ch, queue).await;
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert((*k).into(), v.clone());
        }
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(t);
        if reply {
            props = props.with_reply_to(self.reply_to.as_str().into());
        }
        self.ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Sends a protocol v2 task with keyword arguments `kwargs` (JSON
    /// object text); returns its id.
    pub async fn send_task(&self, queue: &str, task: &str, kwargs: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let body =
            format!("[[], {kwargs}, {{\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}}]");
        self.publish_raw(
            queue,
            &[
                ("task", s(task)),
                ("id", s(&id)),
                ("root_id", s(&id)),
                ("retries", AMQPValue::LongInt(0)),
            ],
            body.as_bytes(),
            true,
        )
        .await;
        id
    }

    /// The next reply (a result document) within `limit`.
    pub async fn reply(&mut self, limit: Duration) -> serde_json::Value {
        let d = tokio::time::timeout(limit, self.consumer.next())
            .await
            .expect("a reply in time")
            .expect("consumer open")
            .expect("delivery");
        serde_json::from_slice(&d.data).unwrap()
    }

    /// The reply for `id`; replies for other tasks read meanwhile are kept
    /// for later calls (children may report before their parent).
    pub async fn reply_for(&mut self, id: &str, limit: Duration) -> serde_json::Value {
        if let Some(i) = self.pending.iter().position(|r| r["task_id"] == id) {
            return self.pending.remove(i);
        }
        let t0 = Instant::now();
        loop {
            let left = limit.saturating_sub(t0.elapsed());
            let r = self.reply(left).await;
            if r["task_id"] == id {
                return r;
            }
            self.pending.push(r);
        }
    }
}

/// Declares a task queue as kombu does (durable, no arguments).
pub async fn declare_durable(ch: &Channel, queue: &str) {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .unwrap();
}

/// Declares an exclusive, auto-deleted queue with a broker-chosen name.
pub async fn temp_queue(ch: &Channel) -> String {
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = ch.queue_declare("".into(), opts, FieldTable::default()).await.unwrap();
    q.name().as_str().to_string()
}

/// Declares an exclusive reply queue on `ch` and consumes it without
/// acknowledgements, as a Celery client's result queue; returns its name.
pub async fn reply_queue(ch: &Channel) -> (String, lapin::Consumer) {
    let name = temp_queue(ch).await;
    let consumer = ch
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (name, consumer)
}

/// A long-string header value.
pub fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.as_bytes()))
}

/// Runs a Python script with Celery installed (`pip install celery` on
/// first use); returns its stdout, panicking with its stderr on failure.
pub fn python(script: &Path, args: &[&str]) -> String {
    let has = Command::new("python3")
        .args(["-c", "import celery"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "celery"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot install celery with pip");
    }
    let out = Command::new("python3").arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The broker's control exchange is a fanout to every agent on it, and
/// every hub answers any node's worker-online with its snapshot: the
/// snapshot one test sends, or its hub's answer, reaches the agents of
/// every other test running beside it. A test about what a node's first
/// snapshot does holds this alone ([`control_alone`]); a test that runs a
/// hub or sends snapshots shares it ([`control_shared`]). Seen without
/// it: an agent waiting for its hub's snapshot started taking tasks on a
/// neighbour's, and ran a task of a job cancelled while it was away.
static CONTROL: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Holds [`CONTROL`] alone for the guard's life.
pub fn control_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    CONTROL.write().unwrap_or_else(|e| e.into_inner())
}

/// Shares [`CONTROL`] for the guard's life.
pub fn control_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CONTROL.read().unwrap_or_else(|e| e.into_inner())
}
