//! Process resource limits.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit and returns the new
/// soft limit (`u64::MAX` when unlimited). A walker keeps one descriptor per
/// directory in progress, so a wide parallel walk wants more than the usual
/// 1024. Reading the limit cannot fail; a refused raise leaves the soft
/// limit as it was.
pub fn raise_nofile_limit() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY: as high as a limit goes.
    let below_hard = match (lim.current, lim.maximum) {
        (Some(cur), Some(max)) => cur < max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    let lim = if below_hard && setrlimit(Resource::Nofile, raised).is_ok() {
        raised
    } else {
        lim
    };
    lim.current.unwrap_or(u64::MAX)
}
