//! Namespace changes: removing and renaming entries relative to open
//! directories, so a path component swapped for a symlink mid-operation
//! can never redirect a delete.

use super::{Base, check};
use std::ffi::CStr;
use std::io;

/// Removes `name` in `base`: an empty directory if `dir`, else a
/// non-directory (`unlinkat`). A symlink is removed itself, never followed.
pub fn unlink_at(base: Base<'_>, name: &CStr, dir: bool) -> io::Result<()> {
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is a valid C string; the descriptor is borrowed.
    check(unsafe { libc::unlinkat(base.raw(), name.as_ptr(), flags) }).map(drop)
}

/// Renames `from` to `to` (`renameat2`). With `no_replace`, fails with
/// `EEXIST` instead of replacing an existing `to`.
pub fn rename(from: &CStr, to: &CStr, no_replace: bool) -> io::Result<()> {
    let flags = if no_replace { libc::RENAME_NOREPLACE } else { 0 };
    // SAFETY: both names are valid C strings.
    let ret = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    check(ret).map(drop)
}
