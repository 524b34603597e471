//! Namespace changes: creating, removing and renaming entries relative to
//! open directories, so a path component swapped for a symlink mid-operation
//! can never redirect a delete.

use super::{Base, Timestamp};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, renameat_with, unlinkat};
use rustix::io::{Errno, retry_on_intr};
use std::ffi::CStr;
use std::fs::File;
use std::io;

/// Removes `name` in `base`: an empty directory if `dir`, else a
/// non-directory (`unlinkat`). A symlink is removed itself, never followed.
pub fn unlink_at(base: Base<'_>, name: &CStr, dir: bool) -> io::Result<()> {
    let flags = if dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
    Ok(unlinkat(base.fd(), name, flags)?)
}

/// Renames `from` to `to` (`renameat2`). With `no_replace`, fails with
/// `EEXIST` instead of replacing an existing `to`.
pub fn rename(from: &CStr, to: &CStr, no_replace: bool) -> io::Result<()> {
    rename_at(Base::Cwd, from, Base::Cwd, to, no_replace)
}

/// Renames `from` (relative to `from_base`) to `to` (relative to
/// `to_base`), atomically replacing `to` unless `no_replace`.
pub fn rename_at(from_base: Base<'_>, from: &CStr, to_base: Base<'_>, to: &CStr, no_replace: bool) -> io::Result<()> {
    let flags = if no_replace {
        RenameFlags::NOREPLACE
    } else {
        RenameFlags::empty()
    };
    Ok(renameat_with(from_base.fd(), from, to_base.fd(), to, flags)?)
}

/// Makes the directory `name` in `base` with `mode` (before the umask);
/// `Ok(false)` when something already has that name.
pub fn mkdir_at(base: Base<'_>, name: &CStr, mode: u32) -> io::Result<bool> {
    match rustix::fs::mkdirat(base.fd(), name, Mode::from_raw_mode(mode)) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates the new regular file `name` in `base` for reading and writing
/// (`O_CREAT | O_EXCL`, so an existing name or a symlink fails with
/// `EEXIST`).
pub fn create_at(base: Base<'_>, name: &CStr, mode: u32) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = retry_on_intr(|| rustix::fs::openat(base.fd(), name, flags, Mode::from_raw_mode(mode)))?;
    Ok(File::from(fd))
}

/// Makes the symbolic link `name` in `base` pointing at `target` (any
/// bytes but NUL); an existing `name` fails with `EEXIST`.
pub fn symlink_at(target: &CStr, base: Base<'_>, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, base.fd(), name)?)
}

/// The target of the symbolic link `name` in `base`, as raw bytes.
pub fn read_link_at(base: Base<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(base.fd(), name, Vec::new())?.into_bytes())
}

/// Sets the owner of `name` in `base` without following a final symlink
/// (a link's own owner, `lchown`).
pub fn chown_at(base: Base<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // -1 means "leave as it is" to the kernel, never an id to set.
    let uid = (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw(uid));
    let gid = (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw(gid));
    Ok(rustix::fs::chownat(
        base.fd(),
        name,
        uid,
        gid,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Sets the access and modification times of `name` in `base` without
/// following a final symlink (a link's own times).
pub fn set_times_at(base: Base<'_>, name: &CStr, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let ts = |t: Timestamp| rustix::fs::Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec),
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    };
    Ok(rustix::fs::utimensat(
        base.fd(),
        name,
        &times,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Makes `to` (in `to_base`) another name of `from` (in `from_base`),
/// without following a symlink at `from` (`linkat`); an existing `to`
/// fails with `EEXIST`.
pub fn link_at(from_base: Base<'_>, from: &CStr, to_base: Base<'_>, to: &CStr) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        from_base.fd(),
        from,
        to_base.fd(),
        to,
        AtFlags::empty(),
    )?)
}
