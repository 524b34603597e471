//! The metadata-latency filesystem (`tests/latencyfs/`) mounted for a test:
//! a directory seen through a FUSE passthrough that makes each metadata
//! request a round trip of a set latency, as on GPFS, Lustre or NFS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The latencyfs binary, built (release) on first use by this test process.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/latencyfs");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo)
                .args(["build", "--release", "--quiet", "--locked", "--manifest-path"])
                .arg(dir.join("Cargo.toml"))
                // The test's own target directory is locked by cargo test.
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("run cargo to build latencyfs");
            assert!(st.success(), "building tests/latencyfs failed");
            dir.join("target/release/latencyfs")
        })
        .clone()
}

/// Whether FUSE can be mounted here (`/dev/fuse` and root); if not, a skip
/// or, under CI, a failure.
pub fn available() -> bool {
    super::require_root("mounting latencyfs")
        && super::require(Path::new("/dev/fuse").exists(), "latencyfs needs /dev/fuse")
}

/// A latencyfs mount; unmounted when dropped.
pub struct Mount {
    pub path: PathBuf,
    stats: PathBuf,
    child: Option<Child>,
}

/// The counts latencyfs prints when it is unmounted.
#[derive(Debug)]
pub struct Stats(pub serde_json::Value);

impl Stats {
    /// The count of requests of `kind` (`lookup`, `readdir`, …).
    pub fn count(&self, kind: &str) -> u64 {
        self.0[kind]
            .as_u64()
            .unwrap_or_else(|| panic!("no {kind} in {:?}", self.0))
    }
}

impl Mount {
    /// Mounts `source` on `mountpoint` (created if missing) with `args`
    /// (e.g. `["--latency", "2"]`).
    pub fn new(source: &Path, mountpoint: &Path, args: &[&str]) -> Mount {
        std::fs::create_dir_all(mountpoint).unwrap();
        let stats = mountpoint.with_extension("stats.json");
        let mut child = Command::new(binary())
            .args(args)
            .arg("--stats")
            .arg(&stats)
            .arg(source)
            .arg(mountpoint)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start latencyfs");
        // Read on a thread, so that a latencyfs that never mounts fails the
        // test within a deadline instead of hanging it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            panic!("latencyfs did not mount on {}", mountpoint.display());
        }
        Mount {
            path: mountpoint.to_path_buf(),
            stats,
            child: Some(child),
        }
    }

    /// Unmounts and returns the counts of requests served.
    pub fn finish(mut self) -> Stats {
        self.unmount();
        let text = std::fs::read_to_string(&self.stats).expect("latencyfs wrote no stats");
        Stats(serde_json::from_str(&text).unwrap())
    }

    fn unmount(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("latencyfs did not exit after its unmount");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        } else {
            self.unmount();
        }
    }
}
