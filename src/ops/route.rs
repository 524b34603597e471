//! Which endpoint each path of a batch goes to when its task names none:
//! the endpoint whose `root` holds the path, the deepest such root
//! ([`crate::config::Config::endpoint_for_path`]). Migrate and
//! `reverse_stub` share it, so a path is keyed on one endpoint whichever
//! side of a site-to-site send looks for it (the seed's `send` names no
//! endpoint for either step).

use super::{OpContext, OpError};
use crate::task::{Outcome, PathObject};
use std::collections::BTreeMap;

/// Why a path went to no endpoint.
pub const NO_ROOT: &str = "no endpoint's root holds this path: name an endpoint, or give one a root above it";

/// Runs `run(endpoint, paths)` over `paths`: all on `named` when given,
/// else grouped by the endpoint whose root holds each path (a path no
/// root holds fails, and is counted). One outcome per path, in order.
/// Errors of the whole task (an endpoint that cannot be opened) are
/// returned as they come.
pub fn by_endpoint(
    ctx: &OpContext,
    named: Option<&str>,
    paths: &[PathObject],
    mut run: impl FnMut(&str, &[PathObject]) -> Result<Vec<Outcome>, OpError>,
) -> Result<Vec<Outcome>, OpError> {
    if let Some(endpoint) = named {
        return run(endpoint, paths);
    }
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut out: Vec<Option<Outcome>> = paths.iter().map(|_| None).collect();
    for (i, p) in paths.iter().enumerate() {
        match ctx.config.endpoint_for_path(&p.path) {
            Some(e) => groups.entry(e.name.as_str()).or_default().push(i),
            None => {
                let o = Outcome::failed(NO_ROOT);
                ctx.count(&o, 0);
                out[i] = Some(o);
            }
        }
    }
    // One endpoint for the whole batch (the usual case): no copies.
    if groups.len() == 1 && out.iter().all(Option::is_none) {
        let (name, _) = groups.pop_first().expect("one group");
        return run(name, paths);
    }
    for (name, indices) in groups {
        let group: Vec<PathObject> = indices.iter().map(|&i| paths[i].clone()).collect();
        for (i, o) in indices.into_iter().zip(run(name, &group)?) {
            out[i] = Some(o);
        }
    }
    Ok(out.into_iter().map(|o| o.expect("every path decided")).collect())
}
