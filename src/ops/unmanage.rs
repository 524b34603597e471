//! `unmanage` and `remove_location_xattrs_for_moved`: forget the link
//! between files and their endpoints by removing ferry's location xattrs,
//! and the state xattr once no location is left.
//!
//! A stub's data exists only at its endpoints, so ferry refuses to remove
//! a stub's last location: recall it first. Objects are never deleted here.

use super::lock::{LockLevel, Locking};
use super::xattrs::Residency;
use super::{OpContext, OpError, OpenError, Step, for_each_window, open_file, par_map};
use crate::task::{ArgumentError, Outcome, PathObject};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The seed's `unmanage` arguments.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct UnmanageArgs {
    /// Locking level (default `implicit`).
    pub lock_level: Option<LockLevel>,
    /// Take no per-file lock (conflicts with `partial`).
    pub no_flock: bool,
    /// Only endpoints whose name matches one of these globs, separated by
    /// `|`; every endpoint when absent.
    pub storage_key: Option<String>,
    /// Paths per sequential chunk.
    pub sub_batch: Option<usize>,
}

/// Unmanages `paths`, one outcome per path in order.
pub fn unmanage(ctx: &OpContext, args: &UnmanageArgs, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    let locking = Locking::new(args.lock_level, LockLevel::Implicit, args.no_flock)?;
    let pattern = args.storage_key.as_deref().map(storage_key_globs).transpose()?;
    Ok(for_each_window(ctx, args.sub_batch, paths, |_, obj, _| {
        let outcome = match open_file(&obj.path, false) {
            Err(e) => e.outcome("unmanage", false),
            Ok(file) => locking
                .at_open(&file)
                .and_then(|()| locking.at_commit(&file))
                .map_err(Outcome::from)
                .and_then(|()| forget(ctx, &file, &|e, _| pattern.as_ref().is_none_or(|p| p.is_match(e))))
                .map_or_else(|o| o, |n| removed(n, "not managed by any matching endpoint")),
        };
        Step::Done(outcome, 0)
    }))
}

/// `remove_location_xattrs_for_moved`: removes from each path the
/// locations whose key no longer names the file (and the state with the
/// last), so a file moved or copied with its xattrs is sent afresh under
/// its own key. A location that still names it, at its own key or at
/// another of its names (a new hard link of a file already sent), stays:
/// the seed removes every location, which re-sends unchanged data and
/// sends a new link as a copy, splitting its group at the destination
/// (docs/decisions.md). Directories and links carry none and are skipped.
pub fn remove_location_xattrs(ctx: &OpContext, paths: &[PathObject]) -> Vec<Outcome> {
    par_map(paths.iter().collect(), ctx.threads, |obj: &PathObject| {
        let outcome = match open_file(&obj.path, false) {
            Ok(file) => forget(ctx, &file, &|endpoint, key| {
                !names_file(ctx, &obj.path, &file, endpoint, key)
            }),
            Err(OpenError::Symlink | OpenError::Directory) => Ok(0),
            Err(e) => Err(e.outcome("removing location xattrs", false)),
        }
        .map_or_else(|o| o, |n| removed(n, "no location xattrs of moved files"));
        ctx.count(&outcome, 0);
        outcome
    })
}

/// Whether `key` on `endpoint` still names `file` at `path`: it is the
/// path's own key, or the local path the key stands for is another name
/// of the same inode. An endpoint that cannot be opened says no.
pub(super) fn names_file(ctx: &OpContext, path: &[u8], file: &File, endpoint: &str, key: &[u8]) -> bool {
    let Ok(ep) = ctx.endpoint(endpoint) else {
        return false;
    };
    if ep.key(path).is_ok_and(|(own, _)| own.as_ref().as_bytes() == key) {
        return true;
    }
    let Some(other) = super::cloud::parse_key(endpoint, key)
        .ok()
        .and_then(|k| ep.local_path(&k, None, false))
    else {
        return false;
    };
    match (
        std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(&other)),
        file.metadata(),
    ) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn removed(n: usize, none: &str) -> Outcome {
    if n == 0 {
        Outcome::skipped(none)
    } else {
        Outcome::processed()
    }
}

/// Splits a `storage_key` value into globs.
fn storage_key_globs(s: &str) -> Result<GlobSet, ArgumentError> {
    let mut b = GlobSetBuilder::new();
    for part in s.split('|').map(str::trim).filter(|p| !p.is_empty()) {
        b.add(Glob::new(part).map_err(|e| ArgumentError::invalid("storage_key", format!("{part:?}: {e}")))?);
    }
    b.build()
        .map_err(|e| ArgumentError::invalid("storage_key", e.to_string()))
}

/// Removes the locations of the file at `path` whose endpoint matches
/// `pattern` (all when `None`); returns how many went. A path that is not
/// a regular file has none.
pub(super) fn forget_locations(ctx: &OpContext, path: &[u8], pattern: Option<&GlobSet>) -> Result<usize, Outcome> {
    match open_file(path, false) {
        Ok(file) => forget(ctx, &file, &|e, _| pattern.is_none_or(|p| p.is_match(e))),
        Err(OpenError::Symlink | OpenError::Directory) => Ok(0),
        Err(e) => Err(e.outcome("removing location xattrs", false)),
    }
}

/// Removes the locations `which` selects (by endpoint and key); how many
/// went (at least one when the state went alone).
pub(super) fn forget(ctx: &OpContext, file: &File, which: &dyn Fn(&str, &[u8]) -> bool) -> Result<usize, Outcome> {
    let x = &ctx.xattrs;
    let io = |e: std::io::Error| Outcome::failed(format!("xattrs: {e}"));
    let locations = x.locations(file).map_err(io)?;
    let (matching, kept): (Vec<_>, Vec<_>) = locations.iter().partition(|(endpoint, key)| which(endpoint, key));
    let state = x.state(file).map_err(io)?;
    if matching.is_empty() && (state.is_none() || !kept.is_empty()) {
        return Ok(0);
    }
    let stub = match &state {
        Some(Ok(s)) => s.residency == Residency::Migrated,
        Some(Err(e)) => {
            return Err(Outcome::failed(format!(
                "damaged {} xattr ({e}); not changed, in case the file is a stub",
                x.state_name()
            )));
        }
        None => false,
    };
    if stub && kept.is_empty() {
        return Err(Outcome::failed(
            "file is a stub whose data exists only at its endpoint(s); recall it before removing its locations",
        ));
    }
    for (endpoint, _) in &matching {
        x.remove_location(file, endpoint).map_err(io)?;
    }
    if kept.is_empty() {
        x.clear_state(file).map_err(io)?;
    }
    Ok(matching.len().max(1))
}
