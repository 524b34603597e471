//! `remove_from_cloud` (`dynamo.tasks.remove_from_cloud`): delete each
//! path's object from its endpoint, as the seed's "deletes the cloud
//! object" for files deleted or no longer wanted there.
//!
//! The key is the one migrate gives the path. A local file that is a stub
//! of that very object is refused: its data beyond the head exists only
//! there. A local file whose location names the object loses that location
//! (and its state once no location is left) before the object goes, so no
//! file is ever left naming an object that is gone for good.

use super::cloud::{Local, head};
use super::lock::{LockLevel, Locking};
use super::{OpContext, OpError, Step, for_each_window};
use crate::task::{FileState, Outcome, PathObject};
use serde::Deserialize;

/// `remove_from_cloud`'s arguments (the seed gives it none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RemoveFromCloudArgs {
    /// Endpoint holding the objects; when not named, for each path the
    /// endpoint whose root holds it, as migrate chooses it.
    pub endpoint: Option<String>,
}

/// Deletes the objects of `paths`, one outcome per path in order.
pub fn remove_from_cloud(
    ctx: &OpContext,
    args: &RemoveFromCloudArgs,
    paths: &[PathObject],
) -> Result<Vec<Outcome>, OpError> {
    super::route::by_endpoint(ctx, args.endpoint.as_deref(), paths, |name, group| {
        let target = ctx.endpoint(name)?;
        let locking = Locking::new(None, LockLevel::Implicit, false)?;
        Ok(for_each_window(ctx, None, group, |_, obj, _| {
            let outcome = remove_one(ctx, &target, locking, &obj.path).unwrap_or_else(|o| o);
            Step::Done(outcome, 0)
        }))
    })
}

fn remove_one(
    ctx: &OpContext,
    target: &crate::endpoint::Endpoint,
    locking: Locking,
    path: &[u8],
) -> Result<Outcome, Outcome> {
    let name = target.name();
    let (key, _) = target.key(path).map_err(|e| Outcome::failed(e.to_string()))?;
    let local = Local::open(ctx, path, name, "remove_from_cloud")?;
    let mut cleared = false;
    if let Some(l) = &local {
        // Held from the check to the removal: a migrate of the file (which
        // holds it from its upload to its commit) cannot stub it meanwhile.
        locking.at_commit(&l.file).map_err(Outcome::from)?;
        if l.is_stub() && l.points_at(&key) {
            return Err(Outcome::failed(format!(
                "file is a stub whose data exists only in the object at {key} on `{name}`; recall it first"
            )));
        }
        if l.points_at(&key) {
            l.forget(ctx, name)?;
            cleared = true;
        }
    }
    let present = head(target, &key)?.is_some();
    if present {
        target.delete(&key).map_err(|e| Outcome::failed(e.to_string()))?;
    }
    let note = if cleared { "; removed the file's location" } else { "" };
    Ok(if present && cleared {
        Outcome::with(FileState::Processed, format!("deleted {key}{note}"))
    } else if present {
        Outcome::processed()
    } else {
        Outcome::skipped(format!("no object at {key} on `{name}`{note}"))
    })
}
