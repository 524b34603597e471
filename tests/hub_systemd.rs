//! The systemd side of the hub: its unit passes `systemd-analyze verify`,
//! and `ferry hub serve` speaks the notify protocol (READY, STATUS,
//! WATCHDOG pings, STOPPING) that `Type=notify` and `WatchdogSec` need.

mod common;

use common::hub::{HubSite, sqlite};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../systemd/ferry-hub.service");

#[test]
fn hub_unit_file_verifies() {
    common::verify_unit(
        "ferry-hub.service",
        UNIT,
        &[
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "StateDirectory=ferry",
            "ProtectSystem=strict",
        ],
    );
}

#[test]
fn hub_speaks_sd_notify() {
    if !common::agent::broker_or_skip() {
        return;
    }
    let s = HubSite::new(sqlite(), 0, "");
    let sock_path = s.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["hub", "serve", "--config"])
        .arg(s.dir.path().join("hub.conf"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    let mut stopped = false;
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string));
        }
        if !stopped && seen.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3 {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            stopped = true;
        }
        if stopped && seen.iter().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(seen.iter().any(|l| l == "READY=1"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("STATUS=serving on 127.0.0.1:") && l.ends_with("(http)")),
        "{seen:?}"
    );
    assert!(seen.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3, "{seen:?}");
    assert!(seen.iter().any(|l| l == "STOPPING=1"), "{seen:?}");
    assert!(status.success(), "{status:?}");
}
