//! Directory times after contents: a destination-side writer that adds,
//! renames or removes an entry keeps the directory's access and
//! modification times as they were just before.
//!
//! A synced directory's own object may arrive before or after its
//! children (other batches, other tasks). Its times are set when its
//! object is applied; each later change to its entries would then bump
//! its mtime. Restoring the times each change found, the end state is the
//! source's whichever order the directory and its children arrive in (and
//! a directory whose object has not arrived yet keeps whatever it had).
//!
//! The read, the change and the restore run under one lock per process,
//! so two threads or two tasks that change the same directory, or one that
//! applies the directory's own times meanwhile, never restore a stale
//! pair (a sync's created and updated batches run at once in one agent: a
//! per-job lock let a child's creation put back the times its directory's
//! own update had just set). Only the namespace change itself is held (a
//! `mkdir`, a `rename`, a file's creation), never a download. Writers in
//! other processes are not serialized with these.
//!
//! `reverse_stub` always keeps them; the move and delete tasks do with
//! `keep_parent_times` (a sync's workflow sets it; standalone they behave
//! as they always did).

use super::set_times;
use crate::sys::Timestamp;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// Serializes the directory-time-keeping changes of this process.
static LOCK: Mutex<()> = Mutex::new(());

/// Keeps directory times across the changes a writer makes (see the
/// module's documentation); every one in a process shares one lock.
#[derive(Debug, Default)]
pub struct DirTimes;

impl DirTimes {
    /// Runs `change`, which adds, renames or removes entries of the open
    /// directory `dir`, and then gives `dir` back the access and
    /// modification times it had just before. A failed `change` is
    /// reported as it is (the times are restored all the same); a failed
    /// restore after a successful change is reported as that.
    pub fn keeping<T>(&self, dir: &File, change: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.keeping_each(&[dir], change)
    }

    /// [`DirTimes::keeping`] for a change to the entries of several
    /// directories (a rename from one into another).
    pub fn keeping_each<T>(&self, dirs: &[&File], change: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let found = dirs.iter().map(|d| times(d)).collect::<io::Result<Vec<_>>>()?;
        let result = change();
        let mut restored = Ok(());
        // In reverse, so a directory given twice ends with what it had first.
        for (dir, (atime, mtime)) in dirs.iter().zip(found).rev() {
            restored = restored.and(set_times(dir, atime, mtime));
        }
        let value = result?;
        restored?;
        Ok(value)
    }

    /// [`DirTimes::keeping`] for a change to the entries of the
    /// directories holding `paths` (absolute), opened here.
    pub fn keeping_parents<T>(&self, paths: &[&[u8]], change: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let dirs = paths
            .iter()
            .map(|p| {
                let parent = match p.iter().rposition(|&b| b == b'/') {
                    Some(0) => &b"/"[..],
                    Some(i) => &p[..i],
                    None => &b"."[..],
                };
                File::open(OsStr::from_bytes(parent))
            })
            .collect::<io::Result<Vec<File>>>()?;
        self.keeping_each(&dirs.iter().collect::<Vec<_>>(), change)
    }

    /// Runs `apply` (which sets a directory's own times) under the same
    /// lock, so no concurrent change restores times read before it.
    pub fn exclusive<T>(&self, apply: impl FnOnce() -> T) -> T {
        let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        apply()
    }
}

/// The access and modification times of an open file or directory.
pub fn times(f: &File) -> io::Result<(Timestamp, Timestamp)> {
    let m = f.metadata()?;
    let ts = |sec: i64, nsec: i64| Timestamp { sec, nsec: nsec as u32 };
    Ok((ts(m.atime(), m.atime_nsec()), ts(m.mtime(), m.mtime_nsec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_keeps_the_directory_times_it_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = File::open(tmp.path()).unwrap();
        let old = Timestamp {
            sec: 1_500_000_000,
            nsec: 123_456_789,
        };
        set_times(&dir, old, old).unwrap();
        let keeper = DirTimes;
        keeper
            .keeping(&dir, || std::fs::write(tmp.path().join("new"), b"x"))
            .unwrap();
        assert!(tmp.path().join("new").exists());
        assert_eq!(times(&dir).unwrap(), (old, old));
        // A change that fails after touching the directory restores them
        // too, and says why it failed.
        let err = keeper
            .keeping(&dir, || -> io::Result<()> {
                std::fs::write(tmp.path().join("other"), b"x")?;
                Err(io::Error::from_raw_os_error(libc::EIO))
            })
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(times(&dir).unwrap(), (old, old));
    }
}
