//! Fixtures shared by integration tests: what a test needs (root, a
//! service) and what happens without it, and running a process within a
//! deadline. The submodules hold the fixtures of one kind of test.
//!
//! Each integration test compiles this module on its own and uses a part of
//! it, so dead code is allowed here and in every submodule.

#![allow(dead_code)]

pub mod agent;
pub mod btrfs;
pub mod hub;
pub mod latencyfs;
pub mod loopfs;
pub mod ops;
pub mod proxy;
pub mod s3;

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// What a test needs

/// Whether the tests run under CI (`CI=true`; `scripts/test` sets it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The test cannot run, because of `why`. Under CI that is a failure (this
/// panics); elsewhere the test is skipped with a loud message and the
/// caller returns.
pub fn skip_or_fail(why: &str) {
    if under_ci() {
        panic!("{why} (CI=true: a test that cannot run fails)");
    }
    eprintln!("\n*** SKIPPED: {why} (under CI=true, as scripts/test sets, this fails) ***\n");
}

/// `have`, or else [`skip_or_fail`] with `why` and `false`.
pub fn require(have: bool, why: &str) -> bool {
    if !have {
        skip_or_fail(why);
    }
    have
}

/// Whether the test runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the test runs as root; if not, "`what` needs root" is a skip or,
/// under CI, a failure.
pub fn require_root(what: &str) -> bool {
    require(is_root(), &format!("{what} needs root"))
}

// ---------------------------------------------------------------------------
// Processes within a deadline (a hung command must fail the test, not hang
// the suite)

/// Waits for `child`; after `limit` it is killed and the test fails.
/// `what` names it in the message.
pub fn wait_with_deadline(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let end = Instant::now() + limit;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end within `limit` (see [`wait_with_deadline`]),
/// feeding it `stdin` (or nothing: stdin is /dev/null) and capturing its
/// stdout and stderr. `what` names it in messages (default: the command).
pub fn run_within(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration, what: Option<&str>) -> Output {
    let what = what.map_or_else(|| format!("{cmd:?}"), str::to_string);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    // Fed and drained by threads, so that no pipe fills while we wait.
    let feeder = stdin.map(|data| {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            // The command may exit without reading it all.
            let _ = w.write_all(&data);
        })
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = wait_with_deadline(&mut child, limit, &what);
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    Output {
        status,
        stdout: out.join().unwrap().expect("reading stdout"),
        stderr: err.join().unwrap().expect("reading stderr"),
    }
}

/// Checks a systemd unit shipped in `systemd/`: it holds every one of
/// `keys`, and `systemd-analyze verify` passes it without a word once its
/// `/usr/local/bin/ferry` points at the built binary (units named only for
/// ordering need not exist). Fails under CI without systemd-analyze.
pub fn verify_unit(name: &str, text: &str, keys: &[&str]) {
    for key in keys {
        assert!(text.contains(key), "{name} lacks {key}");
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join(name);
    std::fs::write(&unit, text.replace("/usr/local/bin/ferry", env!("CARGO_BIN_EXE_ferry"))).unwrap();
    let out = match Command::new("systemd-analyze").arg("verify").arg(&unit).output() {
        Ok(o) => o,
        Err(e) => {
            skip_or_fail(&format!("verifying {name} needs systemd-analyze: {e}"));
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify {name}:\n{stderr}"
    );
}

/// A small deterministic random source (xorshift64*), so a failing round
/// can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of `from`, if any.
    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> Option<&'a T> {
        (!from.is_empty()).then(|| &from[self.below(from.len())])
    }
}
