//! Thin, safe wrappers over the Linux system calls ferry needs.
//!
//! The wrappers call `rustix`, whose `linux_raw` backend issues system
//! calls directly (no libc, no `errno` in the walker's hot path), so most of
//! them hold no `unsafe` at all. What rustix does not offer is written by
//! hand here, each `unsafe` block with its SAFETY comment: the btrfs
//! ioctls, `FS_IOC_GETVERSION`, `F_SETLEASE` and `malloc_trim` (nix offers
//! none of these either), and IBM's `libgpfs.so`, loaded with `dlopen` ([`gpfs_lib`]).
//! This module is the only place in the crate with `unsafe` code.
//! Every wrapper takes borrowed file descriptors and C strings, returns
//! `std::io::Result`, and leaves policy (what to retry, what to count as a
//! failure) to its callers.

pub mod btrfs;
mod dir;
pub mod fanotify;
mod file;
mod fsops;
pub mod gpfs_lib;
mod heap;
mod limits;
mod stat;
mod xattr;

pub use dir::{DirReader, RawDirent, open_dir_at, open_file_at, open_nofollow_at, open_path_at};
pub use file::{
    Lease, copy_range, lock_exclusive, next_data, next_hole, punch_hole, set_lease, syncfs, try_lock_exclusive,
};
pub use fsops::{
    chown_at, create_at, link_at, mkdir_at, read_link_at, rename, rename_at, set_times_at, symlink_at, unlink_at,
};
pub use heap::trim_heap;
pub use limits::raise_nofile_limit;
pub use stat::{FileStat, StatMask, Timestamp, inode_generation, stat_at, stat_fd};
pub use xattr::{get_xattr, list_xattrs};

use std::os::fd::BorrowedFd;

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

impl<'a> Base<'a> {
    /// The descriptor to pass to an `*at` call (`AT_FDCWD` for the working
    /// directory).
    fn fd(self) -> BorrowedFd<'a> {
        match self {
            Base::Dir(fd) => fd,
            Base::Cwd => rustix::fs::CWD,
        }
    }
}
