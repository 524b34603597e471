//! Listing and reading extended attributes without following symlinks.

use rustix::buffer::spare_capacity;
use rustix::fs::{lgetxattr, lgetxattr_query, llistxattr, llistxattr_query};
use rustix::io::{Errno, retry_on_intr};
use std::ffi::CStr;
use std::io;

/// Returns the names of every extended attribute of `path` that the caller
/// may see, without following a final symlink (`llistxattr`).
pub fn list_xattrs(path: &CStr) -> io::Result<Vec<Vec<u8>>> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let needed = retry_on_intr(|| llistxattr_query(path))?;
        if needed == 0 {
            return Ok(Vec::new());
        }
        // Headroom for attributes added between the two calls.
        buf.clear();
        buf.reserve_exact(needed + 256);
        match retry_on_intr(|| llistxattr(path, spare_capacity(&mut buf))) {
            Ok(_) => break,
            // More were added than the headroom holds: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Returns the value of extended attribute `name` of `path`, `None` when
/// it has none of that name, without following a final symlink
/// (`lgetxattr`).
pub fn get_xattr(path: &CStr, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let needed = match retry_on_intr(|| lgetxattr_query(path, name)) {
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if needed == 0 {
            return Ok(Some(Vec::new()));
        }
        buf.clear();
        buf.reserve_exact(needed + 256);
        match retry_on_intr(|| lgetxattr(path, name, spare_capacity(&mut buf))) {
            Ok(_) => return Ok(Some(buf)),
            Err(Errno::NODATA) => return Ok(None),
            // It grew past the headroom between the two calls: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
