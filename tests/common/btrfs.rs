//! A btrfs filesystem on a loop-mounted image, made for one test and torn
//! down after it. Needs root and mkfs.btrfs: without them the test fails
//! under CI (`CI=true`) and is skipped with a loud message elsewhere.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted btrfs image.
pub struct LoopBtrfs {
    dir: tempfile::TempDir,
    mount: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl LoopBtrfs {
    /// Makes and mounts a `size_mb` MiB btrfs image, or explains why not:
    /// `None` means skip (not under CI); under CI it panics.
    pub fn new(size_mb: u64) -> Option<LoopBtrfs> {
        match Self::try_new(size_mb) {
            Ok(b) => Some(b),
            Err(why) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("btrfs test needs root and btrfs-progs: {why}");
                }
                eprintln!("\n*** SKIPPED: btrfs test needs root and btrfs-progs: {why} ***\n");
                None
            }
        }
    }

    fn try_new(size_mb: u64) -> Result<LoopBtrfs, String> {
        // SAFETY-free check of privileges: mounting needs root.
        if !std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("btrfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        run(Command::new("truncate")
            .arg("-s")
            .arg(format!("{size_mb}M"))
            .arg(&image))?;
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image))?;
        run(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(&mount))?;
        Ok(LoopBtrfs { dir, mount })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Creates subvolume `name` at the top of the filesystem.
    pub fn subvolume(&self, name: &str) -> PathBuf {
        let p = self.mount.join(name);
        run(Command::new("btrfs").args(["subvolume", "create"]).arg(&p)).expect("btrfs subvolume create");
        p
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = self.dir.path();
    }
}
