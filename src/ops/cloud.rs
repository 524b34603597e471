//! What the cloud-side tasks (`remove_from_cloud`, `move_in_cloud`,
//! `ensure_cloud_file_exists`, `ngenea_sync_metadata`) share: a local
//! file's ferry facts as they read them, and whether an object is the one
//! those facts record.

use super::xattrs::{HsmState, Residency};
use super::{OpContext, OpenError, Snap, open_file};
use crate::endpoint::{Endpoint, ObjectMeta, RemoteObject};
use crate::task::Outcome;
use object_store::path::Path as ObjPath;
use std::fs::File;

/// A local regular file with ferry's xattrs for one endpoint.
pub(super) struct Local {
    /// The file, opened read-only (xattrs, owner, mode and times are set through it).
    pub file: File,
    /// Its facts when read.
    pub snap: Snap,
    /// Its state, `None` when it has none.
    pub state: Option<HsmState>,
    /// Its location on the endpoint, as recorded.
    pub location: Option<Vec<u8>>,
}

impl Local {
    /// Opens the file at `path` and reads its state and its location on
    /// `endpoint`: `Ok(None)` when nothing is at the path; directories and
    /// symlinks are `skipped` for `op`; a damaged state fails (the file
    /// might be a stub: nothing is guessed).
    pub fn open(ctx: &OpContext, path: &[u8], endpoint: &str, op: &str) -> Result<Option<Local>, Outcome> {
        let file = match open_file(path, false) {
            Ok(f) => f,
            Err(OpenError::Missing) => return Ok(None),
            Err(e) => return Err(e.outcome(op, false)),
        };
        let snap = Snap::of(&file).map_err(|e| failure("stat", e))?;
        if !snap.is_file() {
            return Err(Outcome::skipped(format!(
                "not a regular file: {op} works on regular files only"
            )));
        }
        let x = &ctx.xattrs;
        let state = match x.state(&file).map_err(|e| failure("reading xattrs", e))? {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                return Err(Outcome::failed(format!(
                    "damaged {} xattr ({e}); left alone in case the file is a stub",
                    x.state_name()
                )));
            }
        };
        let location = x.location(&file, endpoint).map_err(|e| failure("reading xattrs", e))?;
        Ok(Some(Local {
            file,
            snap,
            state,
            location,
        }))
    }

    /// Whether the file is a stub: data beyond its head only in an object.
    pub fn is_stub(&self) -> bool {
        matches!(&self.state, Some(s) if s.residency == Residency::Migrated)
    }

    /// Whether its location on the endpoint names `key`.
    pub fn points_at(&self, key: &ObjPath) -> bool {
        self.location.as_deref() == Some(key.as_ref().as_bytes())
    }

    /// Removes its location on `endpoint`, and its state once no location
    /// is left, unless it is a stub (whose state keeps anything from taking
    /// its holes for data). Returns whether the state went too.
    pub fn forget(&self, ctx: &OpContext, endpoint: &str) -> Result<bool, Outcome> {
        let x = &ctx.xattrs;
        let io = |e| failure("removing xattrs", e);
        x.remove_location(&self.file, endpoint).map_err(io)?;
        if self.is_stub() || !x.locations(&self.file).map_err(io)?.is_empty() {
            return Ok(false);
        }
        x.clear_state(&self.file).map_err(io)?;
        Ok(true)
    }
}

/// A location xattr's value as a key.
pub(super) fn parse_key(endpoint: &str, bytes: &[u8]) -> Result<ObjPath, Outcome> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|k| ObjPath::parse(k).ok())
        .ok_or_else(|| Outcome::failed(format!("location xattr for `{endpoint}` is not a valid key")))
}

/// The object's metadata when it is readable and agrees with its size.
pub(super) fn readable(obj: &RemoteObject) -> Option<&ObjectMeta> {
    match &obj.meta {
        Some(Ok(m)) if m.size == obj.size => Some(m),
        _ => None,
    }
}

/// What the endpoint holds at `key`, or a failure saying why it cannot
/// tell.
pub(super) fn head(target: &Endpoint, key: &ObjPath) -> Result<Option<RemoteObject>, Outcome> {
    target.head(key).map_err(|e| Outcome::failed(e.to_string()))
}

/// An I/O failure of a local step.
pub(super) fn failure(what: &str, e: std::io::Error) -> Outcome {
    Outcome::failed(format!("{what}: {e}"))
}
