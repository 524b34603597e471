//! `ngenea_sync_metadata` (`dynamo.tasks.ngenea_sync_metadata`): bring
//! ferry's record of each local file (its location on the endpoint and its
//! state) in line with what the endpoint holds.
//!
//! The object looked at is the one the file's location names, else the one
//! at the key migrate gives the path. Then:
//!
//! - **a resident file** (no state, or premigrated) whose content matches
//!   the object (size, and BLAKE3 unless `skip_hash`) is recorded as
//!   premigrated with that object; one that does not match loses its
//!   location there (it fails when it had none: nothing to record);
//! - **a stub** whose object is its content (the size and hash its state
//!   records) takes the object's metadata where it differs: mode, owner,
//!   user xattrs, and times (the object's atime and mtime, with the state's
//!   mtime moved along so the stub still reads as unchanged);
//! - **no object**: the file's location there is removed, and its state
//!   once no other location is left; a stub keeps its state (so nothing
//!   takes its holes for data) and fails, its data being lost, unless
//!   another endpoint still holds it.

use super::cloud::{Local, failure, head, parse_key, readable};
use super::lock::{LockLevel, Locking};
use super::xattrs::{HsmState, Residency};
use super::{OpContext, OpError, Snap, Step, for_each_window, set_times};
use crate::endpoint::{Endpoint, ObjectMeta};
use crate::task::{FileState, Outcome, PathObject};
use object_store::path::Path as ObjPath;
use serde::Deserialize;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, fchown};
use xattr::FileExt;

/// The seed's `ngenea_sync_metadata` arguments.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SyncMetadataArgs {
    /// Compare a resident file with its object by size only, not by hash.
    pub skip_hash: bool,
    /// Endpoint to compare with; when not named, for each path the endpoint
    /// whose root holds it, as migrate chooses it.
    pub endpoint: Option<String>,
}

/// Syncs the metadata of `paths`, one outcome per path in order.
pub fn sync_metadata(ctx: &OpContext, args: &SyncMetadataArgs, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    super::route::by_endpoint(ctx, args.endpoint.as_deref(), paths, |name, group| {
        let job = Job {
            ctx,
            args,
            target: ctx.endpoint(name)?,
            locking: Locking::new(None, LockLevel::Implicit, false)?,
        };
        Ok(for_each_window(ctx, None, group, |_, obj, _| {
            Step::Done(job.one(&obj.path).unwrap_or_else(|o| o), 0)
        }))
    })
}

struct Job<'a> {
    ctx: &'a OpContext,
    args: &'a SyncMetadataArgs,
    target: std::sync::Arc<Endpoint>,
    locking: Locking,
}

impl Job<'_> {
    fn one(&self, path: &[u8]) -> Result<Outcome, Outcome> {
        let name = self.target.name();
        let l = Local::open(self.ctx, path, name, "ngenea_sync_metadata")?
            .ok_or_else(|| Outcome::failed("no such file or directory"))?;
        self.locking.at_commit(&l.file).map_err(Outcome::from)?;
        let key = match &l.location {
            Some(loc) => parse_key(name, loc)?,
            None => self.target.key(path).map_err(|e| Outcome::failed(e.to_string()))?.0,
        };
        let Some(obj) = head(&self.target, &key)? else {
            return self.gone(&l, &key);
        };
        let meta =
            readable(&obj).ok_or_else(|| Outcome::failed(format!("object at {key} has no readable ferry metadata")))?;
        match &l.state {
            Some(s) if s.residency == Residency::Migrated => self.stub(&l, s, &key, meta),
            _ => self.resident(&l, &key, meta),
        }
    }

    /// No object where the file's record points (or would).
    fn gone(&self, l: &Local, key: &ObjPath) -> Result<Outcome, Outcome> {
        let name = self.target.name();
        if l.location.is_none() {
            return Ok(Outcome::skipped(format!(
                "no object at {key} on `{name}`, and the file records no location there"
            )));
        }
        let state_went = l.forget(self.ctx, name)?;
        let others = self
            .ctx
            .xattrs
            .locations(&l.file)
            .map_err(|e| failure("reading xattrs", e))?;
        if l.is_stub() && others.is_empty() {
            return Err(Outcome::failed(format!(
                "object at {key} on `{name}` is gone: this stub's data beyond its head is lost; its location was \
                 removed and its state kept, so that nothing takes its holes for data"
            )));
        }
        let what = if state_went { "location and state" } else { "location" };
        Ok(Outcome::with(
            FileState::Processed,
            format!("object at {key} on `{name}` is gone; removed the file's {what}"),
        ))
    }

    /// A resident file: recorded as premigrated when its content is the
    /// object's.
    fn resident(&self, l: &Local, key: &ObjPath, meta: &ObjectMeta) -> Result<Outcome, Outcome> {
        let name = self.target.name();
        let x = &self.ctx.xattrs;
        let same = l.snap.size == meta.size
            && (self.args.skip_hash
                || crate::endpoint::hash_file(&l.file, l.snap.size).map_err(|e| failure("reading", e))? == meta.hash);
        if !same {
            if l.points_at(key) {
                let state_went = l.forget(self.ctx, name)?;
                let what = if state_went { "location and state" } else { "location" };
                return Ok(Outcome::with(
                    FileState::Processed,
                    format!("local content differs from the object at {key}: removed the file's {what} there"),
                ));
            }
            return Err(Outcome::failed(format!(
                "local content differs from the object at {key} on `{name}`; nothing recorded"
            )));
        }
        let state = HsmState {
            residency: Residency::Premigrated,
            size: l.snap.size,
            mtime: l.snap.mtime,
            stub_size: l.state.as_ref().map_or(0, |s| s.stub_size),
            hash: meta.hash,
        };
        if l.points_at(key) && l.state.as_ref() == Some(&state) {
            return Ok(Outcome::skipped("already recorded as premigrated with this object"));
        }
        let now = Snap::of(&l.file).map_err(|e| failure("stat", e))?;
        if !l.snap.unchanged(&now) {
            return Err(Outcome::failed("file changed while it was compared; nothing recorded"));
        }
        let io = |e| failure("writing xattrs", e);
        if l.state.as_ref().is_none_or(|s| s.hash != meta.hash) {
            // Other endpoints' locations name other content (or none known).
            for (endpoint, _) in x.locations(&l.file).map_err(io)? {
                if endpoint != name {
                    x.remove_location(&l.file, &endpoint).map_err(io)?;
                }
            }
        }
        x.set_location(&l.file, name, key.as_ref()).map_err(io)?;
        x.set_state(&l.file, &state).map_err(io)?;
        Ok(Outcome::with(
            FileState::Processed,
            format!("recorded as premigrated with the object at {key}"),
        ))
    }

    /// A stub: takes the object's metadata where it differs.
    fn stub(&self, l: &Local, s: &HsmState, key: &ObjPath, meta: &ObjectMeta) -> Result<Outcome, Outcome> {
        let name = self.target.name();
        if s.size != meta.size || s.hash != meta.hash {
            return Err(Outcome::failed(format!(
                "the object at {key} is not this stub's content (it holds {} bytes, blake3 {}; the stub records {} \
                 bytes, blake3 {}); left as it was",
                meta.size,
                meta.hash.to_hex(),
                s.size,
                s.hash.to_hex()
            )));
        }
        if l.snap.size != s.size {
            return Err(Outcome::failed(
                "stub changed since it was migrated (size differs); left as it was",
            ));
        }
        let x = &self.ctx.xattrs;
        let io = |what: &'static str| move |e| failure(what, e);
        let mut changed = Vec::new();
        if !l.points_at(key) {
            x.set_location(&l.file, name, key.as_ref())
                .map_err(io("writing xattrs"))?;
            changed.push("location");
        }
        if (l.snap.uid, l.snap.gid) != (meta.uid, meta.gid) {
            fchown(&l.file, Some(meta.uid), Some(meta.gid)).map_err(io("changing the owner"))?;
            changed.push("owner");
        }
        if l.snap.mode & 0o7777 != meta.mode & 0o7777 {
            l.file
                .set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))
                .map_err(io("changing the mode"))?;
            changed.push("mode");
        }
        let ours = x.user_xattrs(&l.file).map_err(io("reading xattrs"))?;
        if ours != meta.xattrs {
            for (n, _) in ours.iter().filter(|(n, _)| !meta.xattrs.iter().any(|(m, _)| m == n)) {
                l.file
                    .remove_xattr(OsStr::from_bytes(n))
                    .map_err(io("removing xattrs"))?;
            }
            for (n, v) in meta.xattrs.iter().filter(|kv| !ours.contains(kv)) {
                super::xattrs::set_explained(&l.file, OsStr::from_bytes(n), v).map_err(io("writing xattrs"))?;
            }
            changed.push("xattrs");
        }
        // Times last (the changes above move only the ctime), the state's
        // mtime first: a stop in between leaves a stub whose mtime differs
        // from its state, which the next run puts right.
        if l.snap.mtime != meta.mtime {
            let moved = HsmState {
                mtime: meta.mtime,
                ..s.clone()
            };
            x.set_state(&l.file, &moved).map_err(io("writing xattrs"))?;
            set_times(&l.file, meta.atime, meta.mtime).map_err(io("setting times"))?;
            changed.push("times");
        }
        Ok(if changed.is_empty() {
            Outcome::skipped("already in line with the object")
        } else {
            Outcome::with(
                FileState::Processed,
                format!("took the object's {}", changed.join(", ")),
            )
        })
    }
}
