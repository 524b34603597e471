//! An S3-compatible server on loopback (moto, started by `scripts/s3-server`)
//! shared by every test in the process, and fresh buckets on it. Without
//! python3/pip/moto the test fails under CI (`CI=true`) and is skipped with a
//! loud message elsewhere.
//!
//! moto takes any credentials; requests are path-style over plain HTTP.

#![allow(dead_code)]

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Access key id to sign with (moto accepts any).
pub const ACCESS_KEY: &str = "test";
/// Secret access key to sign with (moto accepts any).
pub const SECRET_KEY: &str = "test";
/// Region to sign for.
pub const REGION: &str = "us-east-1";
/// moto wants `http://host:port/bucket/key`, not `bucket.host`.
pub const VIRTUAL_HOSTED_STYLE: bool = false;
/// The endpoint is plain HTTP.
pub const ALLOW_HTTP: bool = true;

/// The running server.
pub struct S3Server {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub endpoint: String,
}

/// The endpoint, or why the server could not be started; tried once.
fn start() -> &'static Result<String, String> {
    static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-server");
        let out = Command::new(script)
            .arg("start")
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let endpoint = stdout.lines().last().unwrap_or("").trim().to_string();
        if out.status.success() && endpoint.starts_with("http") {
            Ok(endpoint)
        } else {
            Err(format!(
                "{script} start: {}: {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
}

impl S3Server {
    /// The server, started if need be: `None` means skip (not under CI);
    /// under CI it panics.
    pub fn get() -> Option<S3Server> {
        match start() {
            Ok(endpoint) => Some(S3Server {
                endpoint: endpoint.clone(),
            }),
            Err(why) => {
                super::skip_or_fail(&format!("S3 test needs a moto server (scripts/s3-server): {why}"));
                None
            }
        }
    }

    /// Creates bucket `name`, panicking with the server's answer on failure.
    pub fn create_bucket(&self, name: &str) {
        let url = format!("{}/{name}", self.endpoint);
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-X", "PUT", "-w", "\n%{http_code}", &url])
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        let code = text.lines().last().unwrap_or("");
        assert!(
            out.status.success() && code == "200",
            "PUT {url} failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new, empty bucket named after `test`, unique in this process and
    /// across processes: `ferry-PID-N-test` made a valid S3 name.
    pub fn unique_bucket(&self, test: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("ferry-{}-{n}-", std::process::id());
        for c in test.chars() {
            let c = c.to_ascii_lowercase();
            let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            };
            if !(c == '-' && name.ends_with('-')) {
                name.push(c);
            }
        }
        name.truncate(63);
        let name = name.trim_end_matches('-').to_string();
        self.create_bucket(&name);
        name
    }
}
