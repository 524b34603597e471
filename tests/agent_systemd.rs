//! The systemd side of the agent: the unit file passes
//! `systemd-analyze verify`, and the agent speaks the notify protocol
//! (READY, STATUS, WATCHDOG pings, STOPPING) that `Type=notify` and
//! `WatchdogSec` rely on.

mod common;

use common::agent::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../systemd/ferry-agent.service");

#[test]
fn unit_file_verifies() {
    common::verify_unit(
        "ferry-agent.service",
        UNIT,
        &[
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "LimitNOFILE=",
            "NoNewPrivileges=yes",
        ],
    );
}

#[test]
fn agent_speaks_sd_notify() {
    if !broker_or_skip() {
        return;
    }
    let agent = Agent::new("");
    let sock_path = agent.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["agent", "--config"])
        .arg(agent.dir.path().join("ferry.conf"))
        .env("NOTIFY_SOCKET", &sock_path)
        // A 2 s watchdog: the agent must ping at least every second.
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    let mut stopped_at = None;
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string));
        }
        let pings = seen.iter().filter(|l| *l == "WATCHDOG=1").count();
        if stopped_at.is_none() && pings >= 3 && seen.iter().any(|l| l == "STATUS=connected") {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some() && seen.iter().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(seen.iter().any(|l| l == "READY=1"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("STATUS=connecting to amqp://guest:***@")),
        "{seen:?}"
    );
    assert!(seen.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3, "{seen:?}");
    assert!(seen.iter().any(|l| l == "STOPPING=1"), "{seen:?}");
    assert!(status.success(), "{status:?}");
}

/// Under systemd (`JOURNAL_STREAM` set) log records go to journald's native
/// socket with structured fields. The test plays journald: it binds the
/// socket where no journald runs (as on these machines).
#[test]
fn logs_reach_journald_with_fields() {
    if !broker_or_skip() {
        return;
    }
    let path = std::path::Path::new("/run/systemd/journal/socket");
    let why = format!(
        "a real journald owns {}; this test needs to stand in for it",
        path.display()
    );
    if !common::require(!path.exists(), &why) {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let sock = UnixDatagram::bind(path).unwrap();
    struct Unlink(&'static str);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _unlink = Unlink("/run/systemd/journal/socket");
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let agent = Agent::new("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["agent", "--config"])
        .arg(agent.dir.path().join("ferry.conf"))
        .env("JOURNAL_STREAM", "8:12345")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut records: Vec<Vec<(String, String)>> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    let message = |r: &Vec<(String, String)>| {
        r.iter()
            .find(|(k, _)| k == "MESSAGE")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = sock.recv(&mut buf) {
            records.push(journal_fields(&buf[..n]));
        }
        if records.iter().any(|r| message(r).contains("connected; consuming")) {
            break;
        }
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let starting = records
        .iter()
        .find(|r| message(r).contains("ferry agent starting"))
        .unwrap_or_else(|| panic!("{records:?}"));
    let field = |k: &str| starting.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("SYSLOG_IDENTIFIER"), Some("ferry-agent"), "{starting:?}");
    // tracing-journald maps INFO to 5 (notice) and prefixes event fields with F_.
    assert_eq!(field("PRIORITY"), Some("5"), "{starting:?}");
    assert!(field("F_NODE").is_some_and(|n| n.starts_with("ferry@")), "{starting:?}");
}

/// Parses one journald native-protocol datagram: `KEY=value\n`, or
/// `KEY\n<length, 8 bytes little-endian><value>\n` for any value.
fn journal_fields(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let end = b.iter().position(|&c| c == b'\n' || c == b'=').expect("a key");
        let key = String::from_utf8_lossy(&b[..end]).to_string();
        if b[end] == b'=' {
            let rest = &b[end + 1..];
            let nl = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            out.push((key, String::from_utf8_lossy(&rest[..nl]).to_string()));
            b = &rest[(nl + 1).min(rest.len())..];
        } else {
            let len = u64::from_le_bytes(b[end + 1..end + 9].try_into().unwrap()) as usize;
            let v = &b[end + 9..end + 9 + len];
            out.push((key, String::from_utf8_lossy(v).to_string()));
            b = &b[(end + 10 + len).min(b.len())..];
        }
    }
    out
}
