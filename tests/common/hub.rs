//! Fixtures for hub tests: a fresh database on each engine (an SQLite
//! file, a new PostgreSQL database on the machine's server), so every
//! store test runs on both.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// The machine's PostgreSQL (trust auth); `scripts/test` starts it.
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// A database for one test; a PostgreSQL one is dropped afterwards.
pub struct TestDb {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// Its URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .output();
        }
    }
}

/// An empty SQLite database.
pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    TestDb {
        engine: "sqlite",
        url: format!("sqlite://{}/hub.db", dir.path().display()),
        _dir: Some(dir),
        pg_name: None,
    }
}

/// An empty PostgreSQL database, or a failure under CI (a loud skip
/// elsewhere) when the server does not answer.
pub fn postgres() -> Option<TestDb> {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(2)).is_ok();
    if !super::require(
        up,
        "hub store tests need PostgreSQL on 127.0.0.1:5432 (scripts/test starts it)",
    ) {
        return None;
    }
    let name = format!("hub_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(TestDb {
        engine: "postgres",
        url: format!("{POSTGRES}/{name}"),
        _dir: None,
        pg_name: Some(name),
    })
}

/// One fresh database per engine.
pub fn both() -> Vec<TestDb> {
    let mut v = vec![sqlite()];
    v.extend(postgres());
    v
}
