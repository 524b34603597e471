//! `ferry endpoint check`: what interrupted writes left in an endpoint's
//! store, and, with `repair`, their removal.
//!
//! The store is surveyed ([`Endpoint::survey`]); a leftover may go when it
//! has stood untouched for the grace period (a write that old is not under
//! way). An uncommitted object goes only if no local file points at it:
//! ferry records a file's location only after its object's metadata
//! verified, so none should, but an object whose metadata was lost later
//! may hold the only copy of a stub's data. So before removing any object
//! the local root of every endpoint configured on the same store is walked
//! and each file's location xattrs for those endpoints read (two endpoints
//! may share a store under different prefixes, or none); if a walk is
//! incomplete, no object is removed. Snapshot directories are walked too:
//! a stub in a snapshot still points at its object.
//! Objects that carry no ferry metadata in S3 are someone else's and are
//! only reported.

use super::{OpContext, OpError, Reachable};
use crate::endpoint::Leftover;
use crate::entry::FileType;
use crate::walk::{SnapshotDirs, Walk, WalkEvent, WalkOptions};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// What a check does.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Remove what may go, not only report it.
    pub repair: bool,
    /// How long a leftover must have stood before it may go.
    pub grace: Duration,
}

/// What became of one leftover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Reported only (no repair asked for).
    Reported,
    /// Removed.
    Removed,
    /// Kept: written within the grace period, maybe still under way.
    KeptRecent,
    /// Kept: a local file's location xattr points at it.
    KeptReferenced,
    /// Kept: the walk of the local root was incomplete, so it could not be
    /// proved that no file points at it.
    KeptUnverified,
    /// Kept: not ferry's.
    KeptForeign,
    /// Removing it failed (see `error`).
    Failed,
}

/// One leftover and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    /// The leftover.
    #[serde(flatten)]
    pub leftover: Leftover,
    /// What the check did.
    pub action: Action,
    /// Why removing it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of a check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The endpoint's name.
    pub endpoint: String,
    /// Whether leftovers were removed.
    pub repair: bool,
    /// Committed objects.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Writes under way (locked staging files).
    pub in_progress: u64,
    /// Leftovers found.
    pub leftovers: Vec<Checked>,
    /// Local files read for location xattrs (when an object was to go).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_scanned: Option<u64>,
    /// Parts of the store or the local root that could not be read.
    pub errors: Vec<String>,
}

impl CheckReport {
    /// Leftovers that ended with `action`.
    pub fn count(&self, action: Action) -> usize {
        self.leftovers.iter().filter(|c| c.action == action).count()
    }
}

/// Checks the endpoint `name` and, with `opts.repair`, removes what may go.
pub fn check(ctx: &OpContext, name: &str, opts: CheckOptions) -> Result<CheckReport, OpError> {
    let endpoint = ctx.endpoint(name)?;
    let survey = endpoint.survey();
    let mut errors: Vec<String> = survey.errors.iter().map(ToString::to_string).collect();
    let may_go = |l: &Leftover| opts.repair && l.kind.removable() && l.age >= opts.grace;
    let objects_to_go = survey.leftovers.iter().any(|l| l.kind.is_object() && may_go(l));
    let (referenced, files_scanned) = if objects_to_go {
        let scan = referenced_keys(ctx, name);
        errors.extend(scan.errors);
        (scan.complete.then_some(scan.keys), Some(scan.files))
    } else {
        (None, None)
    };
    let leftovers = survey
        .leftovers
        .into_iter()
        .map(|l| {
            let action = if !l.kind.removable() {
                Action::KeptForeign
            } else if !opts.repair {
                Action::Reported
            } else if !may_go(&l) {
                Action::KeptRecent
            } else if l.kind.is_object() {
                match &referenced {
                    None => Action::KeptUnverified,
                    Some(keys) if keys.contains(l.name.as_bytes()) => Action::KeptReferenced,
                    Some(_) => Action::Removed,
                }
            } else {
                Action::Removed
            };
            let (action, error) = match action {
                Action::Removed => match endpoint.remove_leftover(&l) {
                    Ok(()) => (Action::Removed, None),
                    Err(e) => (Action::Failed, Some(e.to_string())),
                },
                kept => (kept, None),
            };
            Checked {
                leftover: l,
                action,
                error,
            }
        })
        .collect();
    Ok(CheckReport {
        endpoint: name.to_string(),
        repair: opts.repair,
        objects: survey.objects,
        bytes: survey.bytes,
        in_progress: survey.in_progress,
        leftovers,
        files_scanned,
        errors,
    })
}

/// The keys local files' location xattrs name on one endpoint.
struct References {
    keys: HashSet<Vec<u8>>,
    files: u64,
    /// No directory or file went unread.
    complete: bool,
    errors: Vec<String>,
}

fn referenced_keys(ctx: &OpContext, name: &str) -> References {
    let mut refs = References {
        keys: HashSet::new(),
        files: 0,
        complete: true,
        errors: Vec::new(),
    };
    let Ok(this) = ctx.config.endpoint(name) else {
        refs.complete = false;
        return refs;
    };
    // Each local root with the location xattrs to read under it.
    let mut roots: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    for cfg in ctx
        .config
        .endpoints
        .values()
        .filter(|c| c.store.same_place(&this.store))
    {
        roots
            .entry(cfg.root.clone())
            .or_default()
            .push(ctx.xattrs.location_name(&cfg.name));
    }
    for (root, names) in roots {
        walk_root(&root, &names, &mut refs);
    }
    refs
}

/// Reads the location xattrs `names` of every regular file under `root`.
fn walk_root(root: &[u8], names: &[String], refs: &mut References) {
    let opts = WalkOptions {
        stat: false,
        skip_snapshots: SnapshotDirs::Never,
        ..WalkOptions::default()
    };
    let walk = match Walk::start(vec![root.to_vec()], opts) {
        Ok(w) => w,
        Err(e) => {
            refs.complete = false;
            refs.errors
                .push(format!("walking {}: {e}", String::from_utf8_lossy(root)));
            return;
        }
    };
    for event in walk {
        match event {
            WalkEvent::Entries(entries) => {
                for e in entries.iter().filter(|e| e.file_type == FileType::File) {
                    refs.files += 1;
                    // Paths deeper than PATH_MAX are read through their parent.
                    let reachable = match Reachable::new(&e.path, false) {
                        Ok(r) => r,
                        Err(err) => {
                            refs.complete = false;
                            refs.errors.push(format!("{}: {err}", String::from_utf8_lossy(&e.path)));
                            continue;
                        }
                    };
                    for name in names {
                        match xattr::get(reachable.path(), name) {
                            Ok(Some(key)) => {
                                refs.keys.insert(key);
                            }
                            Ok(None) => {}
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                            Err(err) => {
                                refs.complete = false;
                                refs.errors.push(format!("{}: {err}", String::from_utf8_lossy(&e.path)));
                                break;
                            }
                        }
                    }
                }
            }
            WalkEvent::Error(e) => {
                refs.complete = false;
                refs.errors.push(e.to_string());
            }
        }
    }
}
