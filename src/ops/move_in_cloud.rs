//! `move_in_cloud` (`dynamo.tasks.move_in_cloud`): after files moved
//! locally, move their objects to match. Each path object carries `source`
//! (the old path) and `path` (the new one), as the move tasks take them;
//! the object at the old path's key goes to the new path's key (keys as
//! migrate gives them).
//!
//! The object is copied with its metadata, the copy made durable and
//! checked (size and hash as the original's metadata records them), the
//! local file's location updated if it named the old key, and only then
//! is the old object deleted. A run stopped anywhere leaves the object at
//! one key or both, never at neither, and running again finishes the move.

use super::cloud::{Local, head, readable};
use super::lock::{LockLevel, Locking};
use super::{OpContext, OpError, Step, for_each_window};
use crate::endpoint::{Endpoint, ObjectMeta};
use crate::task::{FileState, Outcome, PathObject};
use object_store::path::Path as ObjPath;
use serde::Deserialize;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Why a moved directory fails: its files' objects are under its old key
/// as a prefix, and are moved one file at a time.
const DIRECTORY: &str = "a directory: move_in_cloud moves the objects of files; give it the files under the moved \
     directory (snapdiff with condense_moves false lists each)";

/// `move_in_cloud`'s arguments (the seed gives it none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MoveInCloudArgs {
    /// Endpoint holding the objects; when not named, for each path the
    /// endpoint whose root holds its new path, as migrate chooses it.
    pub endpoint: Option<String>,
}

/// Moves the objects of `paths` (each with its `source`), one outcome per
/// path in order.
pub fn move_in_cloud(ctx: &OpContext, args: &MoveInCloudArgs, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    super::route::by_endpoint(ctx, args.endpoint.as_deref(), paths, |name, group| {
        let target = ctx.endpoint(name)?;
        let locking = Locking::new(None, LockLevel::Implicit, false)?;
        Ok(for_each_window(ctx, None, group, |_, obj, _| {
            let outcome = move_one(ctx, &target, locking, obj).unwrap_or_else(|o| o);
            Step::Done(outcome, 0)
        }))
    })
}

fn move_one(ctx: &OpContext, target: &Endpoint, locking: Locking, obj: &PathObject) -> Result<Outcome, Outcome> {
    let name = target.name();
    let source = obj
        .source
        .as_deref()
        .ok_or_else(|| Outcome::failed("path object has no \"source\" to move from"))?;
    let key_err = |what: &str, e: crate::endpoint::KeyError| Outcome::failed(format!("{what}: {e}"));
    let (from, _) = target.key(source).map_err(|e| key_err("source", e))?;
    let (to, _) = target.key(&obj.path).map_err(|e| key_err("path", e))?;
    if from == to {
        return Ok(Outcome::skipped("source and path have the same key"));
    }
    if std::fs::symlink_metadata(OsStr::from_bytes(&obj.path)).is_ok_and(|m| m.is_dir()) {
        return Err(Outcome::failed(DIRECTORY));
    }
    let local = Local::open(ctx, &obj.path, name, "move_in_cloud")?;
    if let Some(l) = &local {
        locking.at_commit(&l.file).map_err(Outcome::from)?;
    }
    let Some(old) = head(target, &from)? else {
        return already_moved(ctx, target, local.as_ref(), &from, &to);
    };
    let Some(meta) = readable(&old).cloned() else {
        return Err(Outcome::failed(format!(
            "object at {from} has no readable ferry metadata; not moved"
        )));
    };
    if !holds(target, &to, &meta)? {
        if let Some(l) = &local
            && l.is_stub()
            && l.points_at(&to)
        {
            return Err(Outcome::failed(format!(
                "the file at path is a stub of the object at {to}; moving {from} there would lose its data"
            )));
        }
        target
            .copy(&from, &to)
            .map_err(|e| Outcome::failed(format!("copying {from} to {to}: {e}")))?;
        target
            .sync()
            .map_err(|e| Outcome::failed(format!("{e}; the copy at {to} is not durable, {from} kept")))?;
        if !holds(target, &to, &meta)? {
            return Err(Outcome::failed(format!(
                "endpoint `{name}` does not hold the copy at {to} as written; {from} kept"
            )));
        }
    }
    if let Some(l) = &local
        && l.points_at(&from)
    {
        ctx.xattrs
            .set_location(&l.file, name, to.as_ref())
            .map_err(|e| super::cloud::failure("writing xattrs", e))?;
    }
    target
        .delete(&from)
        .map_err(|e| Outcome::failed(format!("copied to {to}, but deleting {from} failed: {e}")))?;
    Ok(Outcome::processed())
}

/// Whether the endpoint holds an object at `key` with `meta`'s size and
/// hash.
fn holds(target: &Endpoint, key: &ObjPath, meta: &ObjectMeta) -> Result<bool, Outcome> {
    Ok(head(target, key)?
        .as_ref()
        .and_then(readable)
        .is_some_and(|m| m.size == meta.size && m.hash == meta.hash))
}

/// No object at the old key: `skipped` when the move is already done (the
/// new key holds the content the local file records, or holds, and its
/// location is brought along), else a failure naming the old key.
fn already_moved(
    ctx: &OpContext,
    target: &Endpoint,
    local: Option<&Local>,
    from: &ObjPath,
    to: &ObjPath,
) -> Result<Outcome, Outcome> {
    let missing = || {
        Outcome::failed(format!(
            "source object missing: no object at {from} on `{}`",
            target.name()
        ))
    };
    let there = head(target, to)?;
    let Some(meta) = there.as_ref().and_then(readable) else {
        return Err(missing());
    };
    let Some(l) = local else {
        return Err(missing());
    };
    let same = match &l.state {
        Some(s) => s.size == meta.size && s.hash == meta.hash,
        None => {
            l.snap.size == meta.size
                && crate::endpoint::hash_file(&l.file, l.snap.size).map_err(|e| super::cloud::failure("reading", e))?
                    == meta.hash
        }
    };
    if !same {
        return Err(missing());
    }
    if l.points_at(from) {
        ctx.xattrs
            .set_location(&l.file, target.name(), to.as_ref())
            .map_err(|e| super::cloud::failure("writing xattrs", e))?;
    }
    Ok(Outcome::with(
        FileState::Skipped,
        format!("already moved: {to} holds this file's content"),
    ))
}
