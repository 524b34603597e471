//! A filesystem of a known type on a loop-mounted image, made for one test
//! and unmounted after it, for tests whose claims depend on the filesystem
//! (and so must not depend on where TMPDIR happens to be). Needs root and
//! the type's mkfs: without them the test fails under CI (`CI=true`) and is
//! skipped with a loud message elsewhere.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted image.
pub struct LoopFs {
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

impl LoopFs {
    /// Makes a `size_mb` MiB image with `mkfs` (the command and its
    /// options; the image's path is added last) and mounts it, or says
    /// why not: `None` means skip (not under CI); under CI it panics.
    pub fn new(mkfs: &[&str], size_mb: u64) -> Option<LoopFs> {
        match Self::try_new(mkfs, size_mb) {
            Ok(fs) => Some(fs),
            Err(why) => {
                super::skip_or_fail(&format!("this test needs root and {}: {why}", mkfs[0]));
                None
            }
        }
    }

    /// An ext4 filesystem.
    pub fn ext4(size_mb: u64) -> Option<LoopFs> {
        Self::new(&["mkfs.ext4", "-q", "-F"], size_mb)
    }

    fn try_new(mkfs: &[&str], size_mb: u64) -> Result<LoopFs, String> {
        if !super::is_root() {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        run(Command::new("truncate")
            .arg("-s")
            .arg(format!("{size_mb}M"))
            .arg(&image))?;
        run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image))?;
        run(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(&mount))?;
        Ok(LoopFs { dir, mount })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Unmounts the image and mounts it again, so that the filesystem
    /// forgets what it kept in memory (btrfs: which inode numbers it
    /// handed out). Nothing may hold a file on it open.
    pub fn remount(&self) {
        let image = self.dir.path().join("fs.img");
        run(Command::new("umount").arg(&self.mount)).unwrap();
        run(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(&self.mount)).unwrap();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}
