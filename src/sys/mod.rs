//! Thin, safe wrappers over the Linux system calls ferry needs.
//!
//! This module is the only place in the crate with `unsafe` code or raw
//! syscalls. Every wrapper takes borrowed file descriptors and C strings,
//! returns `std::io::Result`, and leaves policy (what to retry, what to count
//! as a failure) to its callers.

pub mod btrfs;
mod dir;
mod file;
mod fsops;
mod limits;
mod stat;
mod xattr;

pub use dir::{DirEntries, RawDirent, getdents, open_dir_at, open_file_at};
pub use file::{Lease, copy_range, next_data, next_hole, punch_hole, set_lease, syncfs};
pub use fsops::{rename, unlink_at};
pub use limits::raise_nofile_limit;
pub use stat::{FileStat, StatMask, Timestamp, inode_generation, stat_at};
pub use xattr::list_xattrs;

use std::os::fd::{BorrowedFd, RawFd};

/// Where a relative name is resolved from: an open directory, or the
/// process's current working directory (`AT_FDCWD`).
#[derive(Clone, Copy, Debug)]
pub enum Base<'a> {
    /// Resolve relative to this open directory.
    Dir(BorrowedFd<'a>),
    /// Resolve relative to the current working directory; absolute names
    /// ignore the base either way.
    Cwd,
}

impl Base<'_> {
    fn raw(self) -> RawFd {
        match self {
            Base::Dir(fd) => std::os::fd::AsRawFd::as_raw_fd(&fd),
            Base::Cwd => libc::AT_FDCWD,
        }
    }
}

/// Converts a `-1` return from libc into the thread's `errno`.
fn check(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
