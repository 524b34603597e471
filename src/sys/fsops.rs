//! Namespace changes: removing and renaming entries relative to open
//! directories, so a path component swapped for a symlink mid-operation
//! can never redirect a delete.

use super::Base;
use rustix::fs::{AtFlags, CWD, RenameFlags, renameat_with, unlinkat};
use std::ffi::CStr;
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
    let flags = if no_replace {
        RenameFlags::NOREPLACE
    } else {
        RenameFlags::empty()
    };
    Ok(renameat_with(CWD, from, CWD, to, flags)?)
}
