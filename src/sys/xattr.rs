//! Listing extended attribute names without following symlinks.

use std::ffi::CStr;
use std::io;

/// Returns the names of every extended attribute of `path` that the caller
/// may see, without following a final symlink (`llistxattr`).
pub fn list_xattrs(path: &CStr) -> io::Result<Vec<Vec<u8>>> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // SAFETY: a null buffer with size 0 asks for the needed size; otherwise
        // the kernel writes at most `buf.len()` bytes.
        let ret = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => {
                    buf.clear();
                    continue;
                }
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        let len = ret as usize;
        if buf.is_empty() && len > 0 {
            // Size probe: allocate with headroom for attributes added meanwhile.
            buf.resize(len + 256, 0);
            continue;
        }
        buf.truncate(len);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}
