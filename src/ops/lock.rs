//! Per-file locking: the seed's `lock_level` (`none`, `implicit`,
//! `partial`) and `no_flock`, defined for ferry in `docs/operations.md`.
//!
//! The lock is an exclusive `flock(2)` on the descriptor ferry opened the
//! file with (no separate lock file, so no extra metadata operation). It is
//! advisory: it keeps ferry operations (other threads, other agents, other
//! nodes where the filesystem shares `flock` across the cluster) off a file
//! that one is working on, and never blocks: a file locked elsewhere fails
//! at once with a reason, to be retried later.
//!
//! - `none`: no lock.
//! - `implicit`: the lock is held while ferry changes the file (its data,
//!   stub or ferry xattrs) or the object its xattrs will name: for migrate
//!   from the upload to the file's key on, for recall and reverse stub only
//!   the commit step (their downloads run unlocked, and the commit re-checks
//!   that nothing changed meanwhile). Two migrations of one file can then
//!   never overwrite each other's object.
//! - `partial`: the lock is held for the whole operation on the file, from
//!   opening it to the end, data transfer included.
//!
//! `no_flock` turns the lock off whatever the level; combined with
//! `partial` it is an error, as in the seed.

use crate::task::{ArgumentError, Outcome};
use serde::Deserialize;
use std::fmt;
use std::fs::{File, TryLockError};
use std::io;

/// The seed's `lock_level` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockLevel {
    /// No per-file lock.
    None,
    /// Lock while committing changes.
    Implicit,
    /// Lock for the whole operation.
    Partial,
}

impl LockLevel {
    /// Parses `none`, `implicit` or `partial`.
    pub fn parse(s: &str) -> Result<LockLevel, ArgumentError> {
        match s {
            "none" => Ok(LockLevel::None),
            "implicit" => Ok(LockLevel::Implicit),
            "partial" => Ok(LockLevel::Partial),
            _ => Err(ArgumentError::invalid(
                "lock_level",
                format!("must be none, implicit or partial, not {s:?}"),
            )),
        }
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockLevel::None => "none",
            LockLevel::Implicit => "implicit",
            LockLevel::Partial => "partial",
        })
    }
}

/// When an operation takes its per-file lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locking {
    level: LockLevel,
}

impl Locking {
    /// Resolves `lock_level` (the task's default when absent) and
    /// `no_flock`.
    pub fn new(level: Option<LockLevel>, default: LockLevel, no_flock: bool) -> Result<Locking, ArgumentError> {
        let level = match (level, no_flock) {
            (Some(LockLevel::Partial), true) => {
                return Err(ArgumentError::invalid(
                    "no_flock",
                    "conflicts with lock_level partial, which holds a flock",
                ));
            }
            (_, true) => LockLevel::None,
            (Some(l), false) => l,
            (None, false) => default,
        };
        Ok(Locking { level })
    }

    /// The effective level.
    pub fn level(self) -> LockLevel {
        self.level
    }

    /// Takes the lock right after opening, if the level says so.
    pub fn at_open(self, file: &File) -> Result<(), LockError> {
        if self.level == LockLevel::Partial {
            lock(file)
        } else {
            Ok(())
        }
    }

    /// Takes the lock before writing the object a file's xattrs will name
    /// (migrate's upload): under both `implicit` and `partial`.
    pub fn before_upload(self, file: &File) -> Result<(), LockError> {
        if self.level == LockLevel::None {
            Ok(())
        } else {
            lock(file)
        }
    }

    /// Takes the lock before committing, if the level says so (under
    /// `partial` it is already held; taking it again on the same
    /// descriptor is a no-op).
    pub fn at_commit(self, file: &File) -> Result<(), LockError> {
        if self.level == LockLevel::Implicit {
            lock(file)
        } else {
            Ok(())
        }
    }
}

/// Why a file's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another operation holds it.
    #[error("locked by another operation (flock held elsewhere); try again later")]
    Held,
    /// `flock` failed.
    #[error("cannot lock: {0}")]
    Io(io::Error),
}

impl From<LockError> for Outcome {
    /// A file that cannot be locked fails, with the reason.
    fn from(e: LockError) -> Outcome {
        Outcome::failed(e.to_string())
    }
}

fn lock(file: &File) -> Result<(), LockError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(LockError::Held),
        Err(TryLockError::Error(e)) => Err(LockError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_no_flock() {
        let l = |level, no_flock| Locking::new(level, LockLevel::Implicit, no_flock).map(Locking::level);
        assert_eq!(l(None, false), Ok(LockLevel::Implicit));
        assert_eq!(l(Some(LockLevel::Partial), false), Ok(LockLevel::Partial));
        assert_eq!(l(None, true), Ok(LockLevel::None));
        assert_eq!(l(Some(LockLevel::Implicit), true), Ok(LockLevel::None));
        assert!(l(Some(LockLevel::Partial), true).is_err());
        assert!(LockLevel::parse("explicit").is_err());
    }

    #[test]
    fn a_second_descriptor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let (a, b) = (File::open(&p).unwrap(), File::open(&p).unwrap());
        let partial = Locking::new(Some(LockLevel::Partial), LockLevel::Implicit, false).unwrap();
        partial.at_open(&a).unwrap();
        assert!(
            partial
                .at_open(&b)
                .unwrap_err()
                .to_string()
                .contains("locked by another operation")
        );
        drop(a);
        partial.at_open(&b).unwrap();
    }
}
