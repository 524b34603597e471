//! The agent's scheduled endpoint upkeep: every `endpoint_check_interval`
//! it checks each configured endpoint and removes what interrupted writes
//! left there ([`crate::ops::check`], the same as `ferry endpoint check
//! --repair`), and logs what it found and did.

use crate::ops::OpContext;
use crate::ops::check::{Action, CheckOptions, check};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Runs `job` on a blocking thread every `interval` (the first time one
/// interval after start) until `shutdown` turns true.
pub(super) async fn every<F>(interval: Duration, mut shutdown: watch::Receiver<bool>, job: F)
where
    F: Fn() + Clone + Send + 'static,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // A failed or panicking run is logged by the job or here; the
        // schedule goes on.
        if let Err(e) = tokio::task::spawn_blocking(job.clone()).await {
            warn!(error = %e, "endpoint upkeep stopped abnormally");
        }
    }
}

/// Checks and repairs every endpoint of `ops`' configuration, logging one
/// line per endpoint and one per leftover removed or failing.
pub(super) fn check_endpoints(ops: &OpContext, grace: Duration) {
    let opts = CheckOptions { repair: true, grace };
    for name in ops.config.endpoints.keys() {
        match check(ops, name, opts) {
            Ok(r) => {
                for l in &r.leftovers {
                    match l.action {
                        Action::Removed => {
                            info!(endpoint = %name, kind = ?l.leftover.kind, name = %l.leftover.name, size = l.leftover.size, "endpoint upkeep removed a leftover");
                        }
                        Action::Failed => {
                            warn!(endpoint = %name, kind = ?l.leftover.kind, name = %l.leftover.name, error = l.error.as_deref().unwrap_or(""), "endpoint upkeep could not remove a leftover");
                        }
                        _ => {}
                    }
                }
                for e in &r.errors {
                    warn!(endpoint = %name, error = %e, "endpoint upkeep could not read part of the store");
                }
                info!(
                    endpoint = %name,
                    objects = r.objects,
                    in_progress = r.in_progress,
                    leftovers = r.leftovers.len(),
                    removed = r.count(Action::Removed),
                    "endpoint upkeep done"
                );
            }
            Err(e) => warn!(endpoint = %name, error = %e, "endpoint upkeep could not check the endpoint"),
        }
    }
}
