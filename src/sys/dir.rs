//! Opening directories relative to a parent and reading them with a large
//! `getdents64` buffer.

use super::Base;
use rustix::fs::{FileType, Mode, OFlags, RawDir};
use rustix::io::{Errno, retry_on_intr};
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Opens a directory for reading, relative to `base`.
///
/// With `follow == false` a symlink in the last component fails with
/// `ELOOP`/`ENOTDIR` instead of being followed, so a racing rename cannot
/// redirect a walk outside the tree.
pub fn open_dir_at(base: Base<'_>, name: &CStr, follow: bool) -> io::Result<OwnedFd> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    Ok(openat(base, name, flags)?)
}

/// Opens a regular file or directory read-only without following a final
/// symlink and, when the caller owns the file (or is root), without updating
/// its access time.
pub fn open_file_at(base: Base<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    match openat(base, name, flags | OFlags::NOATIME) {
        // O_NOATIME is refused on files the caller does not own.
        Err(Errno::PERM) => Ok(openat(base, name, flags)?),
        other => Ok(other?),
    }
}

/// Opens a directory as a path handle (`O_PATH`), following symlinks as
/// path resolution does: a handle to resolve names under, needing only
/// search permission on the way, never read permission on the directory.
pub fn open_path_at(base: Base<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(openat(base, name, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)?)
}

/// Opens `name` in `base` as a path handle (`O_PATH`) without following a
/// final symlink: a handle on a symbolic link itself (to `fstat` it and
/// read its target with an empty name), or on any other entry.
pub fn open_nofollow_at(base: Base<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(openat(base, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC)?)
}

fn openat(base: Base<'_>, name: &CStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    retry_on_intr(|| rustix::fs::openat(base.fd(), name, flags, Mode::empty()))
}

/// One directory entry as `getdents64` returns it. The name borrows the
/// reader's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawDirent<'a> {
    /// The inode number as the directory reports it.
    pub ino: u64,
    /// `DT_*` type, `DT_UNKNOWN` when the filesystem does not say.
    pub d_type: u8,
    /// The entry's name, without any directory part.
    pub name: &'a CStr,
}

/// Reads the entries of an open directory, one `getdents64` call (one
/// buffer full) at a time, through rustix's [`RawDir`].
///
/// Batches are what callers need: a walker hands out a huge directory's
/// entries a buffer at a time and checks for cancellation between system
/// calls. A larger buffer means fewer round trips on huge directories (one
/// call returns as many entries as fit).
pub struct DirReader<'a> {
    raw: RawDir<'a, BorrowedFd<'a>>,
}

impl<'a> DirReader<'a> {
    /// Reads `dir` from its current position, with `buf` as the
    /// `getdents64` buffer (its first bytes are skipped if it is not
    /// aligned for `linux_dirent64`).
    pub fn new(dir: BorrowedFd<'a>, buf: &'a mut [MaybeUninit<u8>]) -> Self {
        DirReader {
            raw: RawDir::new(dir, buf),
        }
    }

    /// Reads the next buffer full of entries (one `getdents64` call,
    /// retried on `EINTR`) and calls `f` for each of them except `.` and
    /// `..`. Returns `Ok(false)`, without calling `f`, at the end of the
    /// directory. A buffer too small for the next entry fails with
    /// `EINVAL`.
    pub fn read_batch(&mut self, mut f: impl FnMut(RawDirent<'_>)) -> io::Result<bool> {
        loop {
            // `next` makes the system call when the buffer is used up, which
            // it is on entry: the previous call returned right after the
            // last entry of its buffer.
            match self.raw.next() {
                None => return Ok(false),
                Some(Err(Errno::INTR)) => continue,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(d)) => {
                    let name = d.file_name();
                    if name != c"." && name != c".." {
                        f(RawDirent {
                            ino: d.ino(),
                            d_type: d_type(d.file_type()),
                            name,
                        });
                    }
                }
            }
            if self.raw.is_buffer_empty() {
                return Ok(true);
            }
        }
    }
}

/// The `DT_*` value rustix decoded into a [`FileType`].
fn d_type(t: FileType) -> u8 {
    match t {
        FileType::RegularFile => libc::DT_REG,
        FileType::Directory => libc::DT_DIR,
        FileType::Symlink => libc::DT_LNK,
        FileType::Fifo => libc::DT_FIFO,
        FileType::Socket => libc::DT_SOCK,
        FileType::CharacterDevice => libc::DT_CHR,
        FileType::BlockDevice => libc::DT_BLK,
        FileType::Unknown => libc::DT_UNKNOWN,
    }
}
