//! What a walk yields: chunks of entries, and the paths it could not
//! examine, each with the call that failed and its errno.

use crate::entry::Entry;
use std::io;

/// The call that failed for a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `statx`/`fstatat` of an entry.
    Stat,
    /// Opening a directory.
    OpenDir,
    /// Reading a directory (`getdents64`).
    ReadDir,
    /// A symlink that leads back to one of its own ancestors.
    Loop,
    /// A root path that cannot be passed to the kernel (contains NUL).
    InvalidPath,
}

impl Op {
    fn describe(self) -> &'static str {
        match self {
            Op::Stat => "cannot stat",
            Op::OpenDir => "cannot open directory",
            Op::ReadDir => "cannot read directory",
            Op::Loop => "filesystem loop detected at",
            Op::InvalidPath => "invalid path",
        }
    }
}

/// One path that could not be examined.
#[derive(Debug, thiserror::Error)]
#[error("{} '{}': {error}", op.describe(), String::from_utf8_lossy(path))]
pub struct WalkError {
    /// The path, as raw bytes.
    pub path: Vec<u8>,
    /// What was being done.
    pub op: Op,
    /// The error, carrying the errno.
    pub error: io::Error,
}

impl WalkError {
    /// The errno, if the error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        self.error.raw_os_error()
    }
}

/// What a walk yields, in no particular order across directories.
#[derive(Debug)]
pub enum WalkEvent {
    /// A chunk of entries.
    Entries(Vec<Entry>),
    /// A path that could not be examined.
    Error(WalkError),
}
