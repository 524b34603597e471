//! `ensure_cloud_file_exists` (`dynamo.tasks.ensure_cloud_file_exists`):
//! check that each path's object is at its endpoint, and, when the local
//! file records a state, that the object has the size and hash it records.
//! As the seed says, a check that fails is retried two more times before
//! the path fails: [`CHECKS`] checks in all, [`RETRY_PAUSE`] apart, for an
//! endpoint that shows a new object a little late (eventual consistency,
//! a replica catching up).

use super::cloud::{Local, head, parse_key, readable};
use super::{OpContext, OpError, par_map};
use crate::endpoint::Endpoint;
use crate::task::{Outcome, PathObject};
use object_store::path::Path as ObjPath;
use serde::Deserialize;
use std::time::Duration;

/// Checks of one path before it fails: the first and the seed's two
/// retries.
pub const CHECKS: u32 = 3;

/// The pause before each retry.
pub const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// `ensure_cloud_file_exists`' arguments (the seed gives it none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EnsureArgs {
    /// Endpoint holding the objects; when not named, for each path the
    /// endpoint whose root holds it, as migrate chooses it.
    pub endpoint: Option<String>,
    /// Seconds between checks (default [`RETRY_PAUSE`]).
    pub retry_pause: Option<f64>,
}

/// Checks the objects of `paths`, one outcome per path in order.
pub fn ensure_cloud_file_exists(
    ctx: &OpContext,
    args: &EnsureArgs,
    paths: &[PathObject],
) -> Result<Vec<Outcome>, OpError> {
    let pause = match args.retry_pause {
        None => RETRY_PAUSE,
        Some(s) => Duration::try_from_secs_f64(s).map_err(|_| {
            crate::task::ArgumentError::invalid("retry_pause", format!("must be a number of seconds, not {s}"))
        })?,
    };
    super::route::by_endpoint(ctx, args.endpoint.as_deref(), paths, |name, group| {
        let target = ctx.endpoint(name)?;
        Ok(check_all(ctx, &target, group, pause))
    })
}

/// What one check of a path found.
enum Check {
    /// Done: present as recorded, or skipped, or failed for a reason a
    /// retry cannot change.
    Final(Outcome),
    /// Not (yet) as it should be: worth another look.
    Retry(String),
}

/// Checks every path, then again after a pause those that may yet pass.
fn check_all(ctx: &OpContext, target: &Endpoint, paths: &[PathObject], pause: Duration) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = paths.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..paths.len()).collect();
    for round in 1..=CHECKS {
        if round > 1 {
            std::thread::sleep(pause);
        }
        let checks = par_map(pending.clone(), ctx.threads, |i| {
            (i, check(ctx, target, &paths[i].path))
        });
        pending.clear();
        for (i, c) in checks {
            match c {
                Check::Final(o) => out[i] = Some(o),
                Check::Retry(why) if round == CHECKS => {
                    out[i] = Some(Outcome::failed(format!("{why} (after {CHECKS} checks)")));
                }
                Check::Retry(_) => pending.push(i),
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    out.into_iter()
        .map(|o| {
            let o = o.expect("every path decided");
            ctx.count(&o, 0);
            o
        })
        .collect()
}

fn check(ctx: &OpContext, target: &Endpoint, path: &[u8]) -> Check {
    match try_check(ctx, target, path) {
        Ok(c) => c,
        Err(o) => Check::Final(o),
    }
}

fn try_check(ctx: &OpContext, target: &Endpoint, path: &[u8]) -> Result<Check, Outcome> {
    let name = target.name();
    let local = Local::open(ctx, path, name, "ensure_cloud_file_exists")?;
    // The object the file records, else the one migrate would write.
    let key: ObjPath = match local.as_ref().and_then(|l| l.location.as_deref()) {
        Some(loc) => parse_key(name, loc)?,
        None => target.key(path).map_err(|e| Outcome::failed(e.to_string()))?.0,
    };
    let Some(obj) = head(target, &key)? else {
        return Ok(Check::Retry(format!("no object at {key} on `{name}`")));
    };
    let Some(state) = local.as_ref().and_then(|l| l.state.as_ref()) else {
        return Ok(Check::Final(Outcome::processed()));
    };
    match readable(&obj) {
        Some(m) if m.size == state.size && m.hash == state.hash => Ok(Check::Final(Outcome::processed())),
        Some(m) => Ok(Check::Retry(format!(
            "object at {key} holds other content than the file records ({} bytes, blake3 {}; recorded {} bytes, blake3 {})",
            m.size,
            m.hash.to_hex(),
            state.size,
            state.hash.to_hex()
        ))),
        None => Ok(Check::Retry(format!(
            "object at {key} has no readable ferry metadata to check against the file's state"
        ))),
    }
}
