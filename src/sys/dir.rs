//! Opening directories relative to a parent and reading them with a large
//! `getdents64` buffer.

use super::Base;
use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, retry_on_intr};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

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

fn openat(base: Base<'_>, name: &CStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    retry_on_intr(|| rustix::fs::openat(base.fd(), name, flags, Mode::empty()))
}

/// Reads the next batch of directory entries into `buf` and returns the
/// number of bytes filled; `0` means the end of the directory.
///
/// A larger buffer means fewer round trips on huge directories (one call
/// returns as many entries as fit).
pub fn getdents(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let ret = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(ret as usize);
    }
}

/// One record from a `getdents64` buffer. The name borrows the buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawDirent<'a> {
    /// The inode number as the directory reports it.
    pub ino: u64,
    /// `DT_*` type, `DT_UNKNOWN` when the filesystem does not say.
    pub d_type: u8,
    /// The entry's name, without any directory part.
    pub name: &'a CStr,
}

/// Iterates over the `linux_dirent64` records in a filled buffer.
///
/// Parsing is done with safe slice reads, so a short or corrupt buffer ends
/// the iteration instead of reading out of bounds.
pub struct DirEntries<'a> {
    buf: &'a [u8],
}

impl<'a> DirEntries<'a> {
    /// Wraps the first `len` bytes that `getdents` filled.
    pub fn new(buf: &'a [u8]) -> Self {
        DirEntries { buf }
    }
}

impl<'a> Iterator for DirEntries<'a> {
    type Item = RawDirent<'a>;

    fn next(&mut self) -> Option<RawDirent<'a>> {
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        const NAME_OFFSET: usize = 19;
        let buf = self.buf;
        if buf.len() < NAME_OFFSET {
            return None;
        }
        let ino = u64::from_ne_bytes(buf[0..8].try_into().ok()?);
        let reclen = u16::from_ne_bytes(buf[16..18].try_into().ok()?) as usize;
        if reclen < NAME_OFFSET || reclen > buf.len() {
            return None;
        }
        let d_type = buf[18];
        let name = CStr::from_bytes_until_nul(&buf[NAME_OFFSET..reclen]).ok()?;
        self.buf = &buf[reclen..];
        Some(RawDirent { ino, d_type, name })
    }
}
