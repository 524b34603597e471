//! Run state on disk, as the seed lays it out under `<fs root>/.rotate/`:
//! the last-snap file (the last snapshot synced successfully), the manifest
//! of that snapshot, and the per-fileset lock file with its expiry.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where one fileset's run state lives and what its files are called.
#[derive(Clone, Debug)]
pub struct StateDir {
    /// The directory (`<fs root>/.rotate` by default).
    pub dir: PathBuf,
    /// Prefix of snapshot and state file names (`ferry`; the seed's
    /// `ngenea-worker` reads the same layout).
    pub prefix: String,
    /// The fileset's name.
    pub fileset: String,
    /// The fileset's id.
    pub id: String,
}

/// The part of state file names that says whose they are:
/// `name.<fileset>.id.<id>`.
pub fn state_key(fileset: &str, id: &str) -> String {
    format!("name.{fileset}.id.{id}")
}

impl StateDir {
    /// State for fileset `fileset` (id `id`) in `dir`. Names must not
    /// contain `/` or NUL, which could not be part of a file name.
    pub fn new(dir: PathBuf, prefix: &str, fileset: &str, id: &str) -> io::Result<StateDir> {
        for (what, v) in [("prefix", prefix), ("fileset name", fileset), ("fileset id", id)] {
            if v.is_empty() || v.contains(['/', '\0']) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} {v:?} cannot be part of a file name"),
                ));
            }
        }
        Ok(StateDir {
            dir,
            prefix: prefix.into(),
            fileset: fileset.into(),
            id: id.into(),
        })
    }

    pub(super) fn key(&self) -> String {
        state_key(&self.fileset, &self.id)
    }

    /// `<prefix>.lastsnap.name.<fileset>.id.<id>`: the last snapshot synced.
    pub fn lastsnap_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lastsnap.{}", self.prefix, self.key()))
    }

    /// `snapdiff.name.<fileset>.id.<id>.lock`, the seed's lock file name.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("snapdiff.{}.lock", self.key()))
    }

    /// The manifest of snapshot `snap`.
    pub fn manifest_path(&self, snap: &str) -> PathBuf {
        self.dir.join(format!("{}.manifest.{}.{snap}", self.prefix, self.key()))
    }

    /// Prefix of a manifest being written. It sorts with this fileset's
    /// manifests, so one left by a killed run is removed as stale by the
    /// next rotation.
    pub fn manifest_temp_prefix(&self) -> String {
        format!("{}.manifest.{}.tmp-", self.prefix, self.key())
    }

    /// A run held open by `ferry snapdiff --hold`, waiting for `ferry rotate`.
    pub fn pending_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pending.{}", self.prefix, self.key()))
    }

    /// Prefix of this fileset's snapshot names; a name is this plus a
    /// UTC timestamp.
    pub fn snapshot_prefix(&self) -> String {
        format!("{}.snapdiff.", self.prefix)
    }

    /// Creates the state directory if needed.
    pub fn create(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)
    }

    /// The last snapshot synced, if any.
    pub fn last_snapshot(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(self.lastsnap_path()) {
            Ok(s) => {
                let name = s.trim().to_string();
                if name.is_empty() || name.contains(['/', '\0']) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} holds no valid snapshot name", self.lastsnap_path().display()),
                    ));
                }
                Ok(Some(name))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records `snap` as the last snapshot synced: the commit point of a
    /// rotation, atomic and durable.
    pub fn set_last_snapshot(&self, snap: &str) -> io::Result<()> {
        write_atomic(&self.lastsnap_path(), format!("{snap}\n").as_bytes())
    }
}

/// Writes a file through a temporary name, fsyncs it, renames it into place
/// and fsyncs the directory.
/// The temporary file is named after the target (`<name>.tmp-…`), so that
/// one left by a killed process is recognised as stale.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{name}.tmp-"))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// What the lock file says about its holder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    /// Process id (0 when the run is held open across processes).
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Unique id of the run.
    pub run: String,
    /// When the run started, ISO 8601.
    pub started: String,
}

/// Another run holds the fileset's lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "SnapdiffLockError: Could not perform snapdiff as one is currently running for provided fileset \
     (lock {path} held by {holder}, {age}s old; it expires after lock_threshold={threshold}s)"
)]
pub struct LockError {
    /// The lock file.
    pub path: String,
    /// Who holds it.
    pub holder: String,
    /// Its age in seconds.
    pub age: u64,
    /// The expiry in seconds.
    pub threshold: u64,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Held by another run.
    #[error("{0}")]
    Held(#[from] LockError),
    /// The lock file could not be read or written.
    #[error("lock file: {0}")]
    Io(#[from] io::Error),
}

/// A held fileset lock. Dropping it removes the lock file, unless the file
/// was taken over by another run meanwhile.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    info: LockInfo,
    released: bool,
}

impl Lock {
    /// Takes the lock at `path`. An existing lock older than `threshold`
    /// (by its modification time), or one whose process is gone from this
    /// host, is stale and taken over; any other is a [`LockError`].
    pub fn acquire(path: &Path, info: LockInfo, threshold: Duration) -> Result<Lock, AcquireError> {
        let mut pending_guard: Option<File> = None;
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).mode(0o644).open(path) {
                Ok(mut f) => {
                    f.write_all(&serde_json::to_vec(&info).map_err(io::Error::other)?)?;
                    f.write_all(b"\n")?;
                    f.sync_all()?;
                    drop(pending_guard);
                    return Ok(Lock {
                        path: path.to_path_buf(),
                        info,
                        released: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let old = match File::open(path) {
                        Ok(f) => f,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let (holder, age) = describe(path)?;
                    let stale = age > threshold || holder.as_ref().is_some_and(|h| dead_here(h, &info.host));
                    let held = || -> AcquireError {
                        LockError {
                            path: path.display().to_string(),
                            holder: holder.as_ref().map_or_else(
                                || "an unknown run".to_string(),
                                |h| format!("run {} (pid {} on {}, started {})", h.run, h.pid, h.host, h.started),
                            ),
                            age: age.as_secs(),
                            threshold: threshold.as_secs(),
                        }
                        .into()
                    };
                    if !stale {
                        return Err(held());
                    }
                    // Take over under an exclusive flock of the stale file:
                    // of several runs that judged it stale, one gets the
                    // flock; it checks that the path still names that very
                    // file before removing it, so a fresh lock made by
                    // another run meanwhile is never removed.
                    if old.try_lock().is_err() {
                        return Err(held());
                    }
                    let same = match (fs::metadata(path), old.metadata()) {
                        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                        _ => false,
                    };
                    if same {
                        match fs::remove_file(path) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                            _ => {}
                        }
                    }
                    // `old` (and its flock) is held until the next attempt
                    // has created the new lock or failed.
                    pending_guard = Some(old);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (holder, age) = describe(path)?;
        Err(LockError {
            path: path.display().to_string(),
            holder: holder.map_or_else(|| "an unknown run".into(), |h| format!("run {}", h.run)),
            age: age.as_secs(),
            threshold: threshold.as_secs(),
        }
        .into())
    }

    /// Re-opens a lock held open across processes (`--hold`): it must still
    /// name run `run`.
    pub fn resume(path: &Path, run: &str) -> io::Result<Lock> {
        let (holder, _) = describe(path)?;
        match holder {
            Some(info) if info.run == run => Ok(Lock {
                path: path.to_path_buf(),
                info,
                released: false,
            }),
            _ => Err(io::Error::other(format!(
                "lock {} no longer belongs to run {run} (expired and taken over?)",
                path.display()
            ))),
        }
    }

    /// Leaves the lock file in place when this process exits (the run goes
    /// on in a later `ferry rotate`).
    pub fn keep(mut self) {
        self.released = true;
    }

    /// The holder's details.
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Removes the lock file if it is still this run's.
    pub fn release(mut self) -> io::Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> io::Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        match describe(&self.path) {
            Ok((Some(h), _)) if h.run == self.info.run => fs::remove_file(&self.path),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// The lock's holder (if the file parses) and its age.
fn describe(path: &Path) -> io::Result<(Option<LockInfo>, Duration)> {
    let meta = fs::metadata(path)?;
    let age = SystemTime::now()
        .duration_since(meta.modified()?)
        .unwrap_or(Duration::ZERO);
    let holder = fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    Ok((holder, age))
}

/// Whether the holder ran on this host in a process that no longer exists.
fn dead_here(holder: &LockInfo, host: &str) -> bool {
    holder.pid != 0 && holder.host == host && !Path::new(&format!("/proc/{}", holder.pid)).exists()
}

/// This machine's host name.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "localhost".into(), |s| s.trim().to_string())
}

/// Flushes a manifest written to a temporary file and syncs it.
pub(super) fn synced(w: std::io::BufWriter<tempfile::NamedTempFile>) -> io::Result<tempfile::NamedTempFile> {
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.as_file().sync_all()?;
    Ok(file)
}

/// A run's manifest file written out: synced when it is `durable`, or, in
/// a dry run that only measures it and removes it, not (on btrfs the sync
/// was a tenth of a dry run that read the event journal).
pub(super) fn written(
    w: std::io::BufWriter<tempfile::NamedTempFile>,
    durable: bool,
) -> io::Result<tempfile::NamedTempFile> {
    if durable {
        synced(w)
    } else {
        w.into_inner().map_err(|e| e.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(run: &str, pid: u32) -> LockInfo {
        LockInfo {
            pid,
            host: hostname(),
            run: run.into(),
            started: "now".into(),
        }
    }

    #[test]
    fn one_holder_at_a_time_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapdiff.name.fs1.id.1.lock");
        let day = Duration::from_secs(86400);
        let a = Lock::acquire(&path, info("a", std::process::id()), day).unwrap();
        let err = Lock::acquire(&path, info("b", std::process::id()), day).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SnapdiffLockError: Could not perform snapdiff"),
            "{err}"
        );
        assert!(err.to_string().contains("run a"), "{err}");
        a.release().unwrap();
        assert!(!path.exists());

        // Older than the threshold: taken over, and the old holder's release
        // leaves the new lock alone.
        let old = Lock::acquire(&path, info("old", std::process::id()), day).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let new = Lock::acquire(&path, info("new", std::process::id()), Duration::from_secs(1)).unwrap();
        drop(old);
        assert!(path.exists());
        assert_eq!(Lock::resume(&path, "new").unwrap().info().run, "new");
        drop(new);

        // A holder process that is gone from this host: stale at once.
        fs::write(&path, serde_json::to_vec(&info("dead", u32::MAX - 1)).unwrap()).unwrap();
        Lock::acquire(&path, info("c", std::process::id()), day).unwrap();
    }

    #[test]
    fn names_follow_the_seed() {
        let s = StateDir::new("/mmfs1/.rotate".into(), "ngenea-worker", "fs1", "7").unwrap();
        assert_eq!(
            s.lastsnap_path(),
            Path::new("/mmfs1/.rotate/ngenea-worker.lastsnap.name.fs1.id.7")
        );
        assert_eq!(s.lock_path(), Path::new("/mmfs1/.rotate/snapdiff.name.fs1.id.7.lock"));
        assert!(StateDir::new("/x".into(), "ferry", "a/b", "1").is_err());
    }
}
