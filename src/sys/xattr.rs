//! Listing extended attribute names without following symlinks.

use rustix::buffer::spare_capacity;
use rustix::fs::{llistxattr, llistxattr_query};
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
