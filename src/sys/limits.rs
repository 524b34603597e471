//! Process resource limits.

use super::check;
use std::io;

/// Raises the soft limit on open files to the hard limit and returns the new
/// soft limit. A walker keeps one descriptor per directory in progress, so a
/// wide parallel walk wants more than the usual 1024.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that does not exceed the hard limit.
        if check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }).is_ok() {
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}
