//! Snapshot providers: they take and delete a fileset's snapshots and read
//! a snapshot (or, without snapshots, the live tree) into a manifest.
//!
//! - [`btrfs`]: the fileset is a subvolume; snapshots are read-only
//!   subvolume snapshots in `<fileset>/.snapshots/`.
//! - [`gpfs`]: an independent fileset; `mm*` commands make the snapshots
//!   and `mmapplypolicy` lists them, or IBM's incremental inode scan
//!   ([`gpfs_iscan`]) reads what changed since the last one.
//! - [`none`]: no snapshots; the previous run's manifest of the live tree
//!   is the baseline.

pub mod btrfs;
pub mod btrfs_changed;
pub mod btrfs_tree;
pub mod changes;
pub mod gpfs;
pub mod gpfs_iscan;
pub mod kind;
pub mod none;

pub use kind::{Kind, ProviderOptions, UnknownKind, open};

use super::build::{GenerationSource, ManifestBuilder, WalkManifestError};
pub use btrfs_changed::Changed;
pub use changes::{ChangesQuery, ChangesRead, OldRecords};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fileset a provider works on.
#[derive(Clone, Debug)]
pub struct Fileset {
    /// Its name (GPFS fileset name, or the directory's name).
    pub name: String,
    /// Its id (GPFS fileset id, btrfs subvolume id, or root inode).
    pub id: String,
    /// The live path, absolute and canonical (raw bytes).
    pub path: Vec<u8>,
    /// The root of the filesystem it is on, where `.rotate/` lives.
    pub fs_root: PathBuf,
}

/// A snapshot operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SnapshotError {
    /// Worth retrying (busy, quiesce failure) rather than a usage error.
    pub transient: bool,
    /// What happened.
    pub message: String,
}

impl SnapshotError {
    /// An error from a system call: permission and argument errors are
    /// final, the rest are worth retrying.
    pub fn from_io(what: &str, e: io::Error) -> Self {
        let final_errno = matches!(
            e.raw_os_error(),
            Some(libc::EEXIST | libc::ENOENT | libc::EPERM | libc::EACCES | libc::EINVAL | libc::ENOTTY | libc::EROFS)
        );
        SnapshotError {
            transient: !final_errno,
            message: format!("{what}: {e}"),
        }
    }
}

/// What every provider does.
pub trait Provider: Send + Sync {
    /// `btrfs`, `gpfs` or `none`.
    fn kind(&self) -> &'static str;
    /// The fileset.
    fn fileset(&self) -> &Fileset;
    /// Where the generations of its records come from.
    fn generation_source(&self) -> GenerationSource;
    /// Whether runs take snapshots (`none` does not).
    fn has_snapshots(&self) -> bool;
    /// Takes a snapshot called `name`.
    fn create_snapshot(&self, name: &str) -> Result<(), SnapshotError>;
    /// Deletes snapshot `name`.
    fn delete_snapshot(&self, name: &str) -> Result<(), SnapshotError>;
    /// The fileset's snapshots, by name.
    fn snapshots(&self) -> io::Result<Vec<String>>;
    /// Where the fileset's relative paths are found in snapshot `name`
    /// (`None` for a provider without snapshots).
    fn snapshot_root(&self, _name: &str) -> Option<PathBuf> {
        None
    }
    /// Reads snapshot `snapshot` (or the live tree, for `None`) into
    /// `builder`, walking with `threads` threads where it walks.
    fn scan(&self, snapshot: Option<&str>, builder: &mut ManifestBuilder, threads: usize) -> Result<(), ScanError>;
    /// The transaction that created snapshot `name`, where the provider
    /// has such a thing (btrfs `otransid`): recorded in the manifest, so
    /// that a later run can ask what changed since.
    fn snapshot_transid(&self, _name: &str) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// Snapshot `name`'s position in the fileset's event journal, where
    /// the provider keeps one beside its own (btrfs with `ferry journal`
    /// running): recorded in the manifest, so that the next run reads the
    /// journal from there.
    fn snapshot_journal(&self, _name: &str) -> Option<u64> {
        None
    }
    /// The token of the barrier that fixed snapshot `name`'s position in
    /// the event journal (`none`, btrfs with `ferry journal` running):
    /// recorded in the manifest, so that the next run knows that barrier
    /// from another of the same number.
    fn snapshot_barrier(&self, _name: &str) -> Option<String> {
        None
    }
    /// Whether [`Provider::changed`] can read only what changed (btrfs
    /// reading its tree, GPFS's incremental inode scan; not when told to
    /// walk).
    fn reads_changes(&self) -> bool {
        false
    }
    /// What changed since the baseline, read in proportion to the change
    /// (see [`ChangesQuery`]).
    fn changed(&self, _query: ChangesQuery<'_>) -> Result<ChangesRead, ScanError> {
        Ok(ChangesRead::Unable("this provider reads whole snapshots".into()))
    }
}

/// Why a snapshot could not be read into a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The walk failed or was incomplete.
    #[error("{0}")]
    Walk(#[from] WalkManifestError),
    /// The btrfs tree search failed.
    #[error("{0}")]
    Tree(#[from] btrfs_tree::TreeError),
    /// The GPFS policy scan failed.
    #[error("{0}")]
    Gpfs(#[from] crate::gpfs::GpfsError),
    /// The event journal could not be read.
    #[error("{0}")]
    Journal(#[from] crate::snapdiff::journal::JournalError),
    /// The changes the journal points at could not be read.
    #[error("{0}")]
    JournalChanges(#[from] crate::snapdiff::journal::changes::ChangesError),
    /// The GPFS incremental inode scan failed.
    #[error("{0}")]
    Iscan(#[from] gpfs_iscan::IscanError),
    /// A record could not be added to the manifest.
    #[error("{0}")]
    Manifest(#[from] crate::snapdiff::manifest::ManifestError),
    /// A file or directory the scan needs could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line of the policy list that does not parse.
    #[error("{} line {line}: {problem}", path.display())]
    List {
        /// The list file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// A policy list record whose parent directory is not in the list.
    #[error("policy list: no directory record for the parent of {}", String::from_utf8_lossy(.0))]
    Orphan(Vec<u8>),
}

impl ScanError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: io::Error) -> ScanError {
        ScanError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs `op` until it succeeds, fails for good, or `timeout` has passed
/// (seed `snapshot_create_delete_retry_timeout`; 0 means one attempt).
/// Waits grow from a tenth of the timeout (at most 5 s) to at most 300 s.
pub fn with_retries<T>(
    timeout: Duration,
    mut op: impl FnMut() -> Result<T, SnapshotError>,
    mut on_retry: impl FnMut(&SnapshotError, Duration),
) -> Result<T, SnapshotError> {
    let start = Instant::now();
    let mut wait = (timeout / 10)
        .min(Duration::from_secs(5))
        .max(Duration::from_millis(10));
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.transient && start.elapsed() + wait <= timeout => {
                on_retry(&e, wait);
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(300));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The mount point of the filesystem holding `path` (which must be
/// absolute and canonical), from `/proc/self/mountinfo`.
pub fn mount_point(path: &Path) -> io::Result<PathBuf> {
    let info = std::fs::read("/proc/self/mountinfo")?;
    let mut best: Option<PathBuf> = None;
    for line in info.split(|&b| b == b'\n') {
        let Some(field) = line.split(|&b| b == b' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(field)));
        if path.starts_with(&mp) && best.as_ref().is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len()) {
            best = Some(mp);
        }
    }
    best.ok_or_else(|| io::Error::other(format!("no mount point found for {}", path.display())))
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len() + 1
            && s.len() >= i + 4
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The last component of a path, as the fileset's name.
pub fn base_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "root".into(), |n| n.to_string_lossy().replace(['/', '\0'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_transient_errors_within_the_timeout() {
        let mut calls = 0;
        let r = with_retries(
            Duration::from_millis(500),
            || {
                calls += 1;
                if calls < 3 {
                    Err(SnapshotError {
                        transient: true,
                        message: "busy".into(),
                    })
                } else {
                    Ok(calls)
                }
            },
            |_, _| {},
        );
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: Result<(), _> = with_retries(
            Duration::from_secs(100),
            || {
                calls += 1;
                Err(SnapshotError {
                    transient: false,
                    message: "exists".into(),
                })
            },
            |_, _| {},
        );
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let r: Result<(), _> = with_retries(
            Duration::ZERO,
            || {
                Err(SnapshotError {
                    transient: true,
                    message: "x".into(),
                })
            },
            |_, _| {},
        );
        assert!(r.is_err());
    }

    #[test]
    fn mount_points() {
        assert_eq!(mount_point(Path::new("/proc/self")).unwrap(), Path::new("/proc"));
        assert_eq!(unescape_octal(br"/a\040b\134"), b"/a b\\");
    }
}
