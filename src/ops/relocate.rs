//! Keeping moved files' endpoint locations true to their new paths (the
//! move tasks' `relocate`).
//!
//! An object's key is its file's path (as migrate gives it), so after a
//! local move a file's location names the key of its old path. The source
//! of a sync reuses that key for whatever is next written at the old path,
//! and a stub that still names it would then recall someone else's bytes
//! (its hash check refuses them: safe, but its data is out of reach). So
//! after a batch of moves every regular file at or under a new path is
//! visited:
//! - a whole file forgets a location that no longer names it, as
//!   `remove_location_xattrs_for_moved` does (it needs no object);
//! - a stub, whose data is only at its endpoints, gets its object copied
//!   to its new path's key (checked against the hash the stub records,
//!   made durable) and its location moved there. The old object stays:
//!   another site's copy of the file may still name it, and the next
//!   write at the old path replaces it anyway.
//!
//! The copies of one batch are ordered like a parallel assignment: a
//! swap or a chain of moves (a→b, b→c) makes one stub's new key another
//! stub's old key, so a copy waits until every stub reading its target
//! key has been relocated, and a cycle parks one object under a temporary
//! key first. A stub that cannot be relocated pins its key: no copy
//! overwrites it.

use super::OpContext;
use super::cloud::{head, parse_key, readable};
use super::xattrs::{HsmState, Residency};
use super::{OpenError, open_file};
use crate::endpoint::Endpoint;
use crate::task::Outcome;
use object_store::path::Path as ObjPath;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

/// What relocating one moved entry (and everything under it) did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Relocated {
    /// Stubs whose objects were copied to their new keys.
    pub copied: usize,
    /// Stale locations whole files forgot.
    pub forgotten: usize,
}

/// Relocates every regular file at or under each of `moved` (the new
/// paths of one batch's moves), one result per entry: its counts, or the
/// first failure met under it (what was done before it stays done).
pub(super) fn relocate_moved(ctx: &OpContext, moved: &[&[u8]]) -> Vec<Result<Relocated, Outcome>> {
    let mut copies = Vec::new();
    let mut results: Vec<Result<Relocated, Outcome>> = moved
        .iter()
        .enumerate()
        .map(|(owner, path)| visit(ctx, owner, path, &mut copies).map(|forgotten| Relocated { copied: 0, forgotten }))
        .collect();
    Copies::new(ctx, copies).run(&mut results);
    results
}

/// One stub's object to copy from its old key to its new one.
struct Copy {
    /// The moved entry it is at or under.
    owner: usize,
    path: Vec<u8>,
    endpoint: Arc<Endpoint>,
    /// The key to copy from: its recorded location, or the temporary key
    /// it was parked under.
    from: ObjPath,
    /// Whether `from` is a temporary key (deleted once copied from).
    parked: bool,
    to: ObjPath,
    /// The state it records: the object copied must be this one.
    state: HsmState,
}

/// Walks `path` (a moved entry): whole files forget their stale
/// locations at once (how many is returned), stubs' copies are queued in
/// `copies`.
fn visit(ctx: &OpContext, owner: usize, path: &[u8], copies: &mut Vec<Copy>) -> Result<usize, Outcome> {
    let mut forgotten = 0;
    let mut pending = vec![path.to_vec()];
    while let Some(p) = pending.pop() {
        let at = std::path::Path::new(OsStr::from_bytes(&p));
        let meta = match fs::symlink_metadata(at) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Outcome::failed(format!("{}: {e}", at.display()))),
        };
        if meta.is_dir() {
            let entries = fs::read_dir(at).map_err(|e| Outcome::failed(format!("{}: {e}", at.display())))?;
            for e in entries {
                let e = e.map_err(|e| Outcome::failed(format!("{}: {e}", at.display())))?;
                pending.push(e.path().into_os_string().into_vec());
            }
        } else if meta.is_file() {
            forgotten += visit_file(ctx, owner, &p, copies)?;
        }
    }
    Ok(forgotten)
}

/// One regular file: a whole file forgets its stale locations (how many
/// is returned); a stub's stale locations become copies.
fn visit_file(ctx: &OpContext, owner: usize, path: &[u8], copies: &mut Vec<Copy>) -> Result<usize, Outcome> {
    let file = match open_file(path, false) {
        Ok(f) => f,
        Err(OpenError::Missing | OpenError::Symlink | OpenError::Directory) => return Ok(0),
        Err(e) => return Err(e.outcome("relocating", false)),
    };
    let x = &ctx.xattrs;
    let io = |what: &str, e: std::io::Error| Outcome::failed(format!("{what}: {e}"));
    let stub = match x.state(&file).map_err(|e| io("reading xattrs", e))? {
        Some(Ok(s)) => (s.residency == Residency::Migrated).then_some(s),
        Some(Err(e)) => {
            return Err(Outcome::failed(format!(
                "damaged {} xattr ({e}); not relocated, in case the file is a stub",
                x.state_name()
            )));
        }
        None => None,
    };
    let stale = |endpoint: &str, key: &[u8]| !super::unmanage::names_file(ctx, path, &file, endpoint, key);
    let Some(state) = stub else {
        return super::unmanage::forget(ctx, &file, &stale);
    };
    for (name, key) in x.locations(&file).map_err(|e| io("reading xattrs", e))? {
        if !stale(&name, &key) {
            continue;
        }
        let endpoint = ctx.endpoint(&name).map_err(|e| Outcome::failed(e.to_string()))?;
        let from = parse_key(&name, &key)?;
        let (to, _) = endpoint
            .key(path)
            .map_err(|e| Outcome::failed(format!("no key for the new path on `{name}`: {e}")))?;
        copies.push(Copy {
            owner,
            path: path.to_vec(),
            endpoint,
            from,
            parked: false,
            to,
            state: state.clone(),
        });
    }
    Ok(0)
}

/// A key on one endpoint.
type At = (String, String);

fn at(endpoint: &Endpoint, key: &ObjPath) -> At {
    (endpoint.name().to_string(), key.as_ref().to_string())
}

/// The queued copies of one batch and what orders them.
struct Copies<'a> {
    ctx: &'a OpContext,
    todo: Vec<Option<Copy>>,
    /// How many queued copies still read each key.
    readers: HashMap<At, usize>,
    /// Keys no copy may overwrite: a stub failed to move off them.
    pinned: HashSet<At>,
}

impl<'a> Copies<'a> {
    fn new(ctx: &'a OpContext, copies: Vec<Copy>) -> Copies<'a> {
        let mut readers = HashMap::new();
        for c in &copies {
            *readers.entry(at(&c.endpoint, &c.from)).or_insert(0) += 1;
        }
        Copies {
            ctx,
            todo: copies.into_iter().map(Some).collect(),
            readers,
            pinned: HashSet::new(),
        }
    }

    /// Runs every copy whose target no other queued copy still reads,
    /// until none is left; a cycle parks one object first.
    fn run(mut self, results: &mut [Result<Relocated, Outcome>]) {
        loop {
            let mut progressed = false;
            let mut left = false;
            for slot in 0..self.todo.len() {
                let Some(c) = &self.todo[slot] else { continue };
                let target = at(&c.endpoint, &c.to);
                if self.pinned.contains(&target) {
                    let c = self.todo[slot].take().expect("queued");
                    self.fail(
                        &c,
                        results,
                        Outcome::failed(format!(
                            "{} holds the object of a stub that could not be relocated; not overwritten",
                            c.to
                        )),
                    );
                    progressed = true;
                } else if self.readers.get(&target).copied().unwrap_or(0) == 0 {
                    let c = self.todo[slot].take().expect("queued");
                    match self.copy(&c) {
                        Ok(()) => {
                            self.done_reading(&c);
                            if let Ok(d) = &mut results[c.owner] {
                                d.copied += 1;
                            }
                        }
                        Err(o) => self.fail(&c, results, o),
                    }
                    progressed = true;
                } else {
                    left = true;
                }
            }
            if !left {
                return;
            }
            if !progressed {
                self.park(results);
            }
        }
    }

    /// Breaks a cycle: the first queued copy's object goes to a temporary
    /// key, so its old key is free to be overwritten.
    fn park(&mut self, results: &mut [Result<Relocated, Outcome>]) {
        let slot = self.todo.iter().position(Option::is_some).expect("a queued copy");
        let mut c = self.todo[slot].take().expect("queued");
        let tmp = ObjPath::from(format!("{}.ferry-relocating-{}", c.to, uuid::Uuid::new_v4().simple()));
        match copy_checked(&c.endpoint, &c.from, &tmp, &c.state) {
            Ok(()) => {
                self.done_reading(&c);
                c.from = tmp;
                c.parked = true;
                self.todo[slot] = Some(c);
            }
            Err(o) => self.fail(&c, results, o),
        }
    }

    /// Copies one stub's object to its new key and records the key there.
    fn copy(&self, c: &Copy) -> Result<(), Outcome> {
        let file = open_file(&c.path, false).map_err(|e| e.outcome("relocating", false))?;
        copy_checked(&c.endpoint, &c.from, &c.to, &c.state)?;
        self.ctx
            .xattrs
            .set_location(&file, c.endpoint.name(), c.to.as_ref())
            .map_err(|e| Outcome::failed(format!("writing xattrs: {e}")))?;
        if c.parked {
            // Best effort: a leftover temporary object holds only a copy.
            let _ = c.endpoint.delete(&c.from);
        }
        Ok(())
    }

    fn done_reading(&mut self, c: &Copy) {
        if !c.parked
            && let Some(n) = self.readers.get_mut(&at(&c.endpoint, &c.from))
        {
            *n -= 1;
        }
    }

    /// Records a failed copy: its stub keeps naming `from`, which no copy
    /// may overwrite from now on.
    fn fail(&mut self, c: &Copy, results: &mut [Result<Relocated, Outcome>], why: Outcome) {
        self.pinned.insert(at(&c.endpoint, &c.from));
        if results[c.owner].is_ok() {
            results[c.owner] = Err(why);
        }
    }
}

/// Copies the object at `from` to `to` on `endpoint` unless `to` already
/// holds it, makes it durable and checks it. The object at `from` must be
/// the one `state` records: a stub cut off its data is not passed on as if
/// it were whole.
fn copy_checked(endpoint: &Endpoint, from: &ObjPath, to: &ObjPath, state: &HsmState) -> Result<(), Outcome> {
    let name = endpoint.name();
    let holds = |key: &ObjPath| -> Result<bool, Outcome> {
        Ok(head(endpoint, key)?
            .as_ref()
            .and_then(readable)
            .is_some_and(|m| (m.size, m.hash) == (state.size, state.hash)))
    };
    if holds(to)? {
        return Ok(());
    }
    if !holds(from)? {
        return Err(Outcome::failed(format!(
            "the object at {from} on `{name}` is missing or not the one this stub records; its location is kept"
        )));
    }
    endpoint
        .copy(from, to)
        .map_err(|e| Outcome::failed(format!("copying {from} to {to}: {e}")))?;
    endpoint
        .sync()
        .map_err(|e| Outcome::failed(format!("{e}; the copy at {to} is not durable, location kept")))?;
    if !holds(to)? {
        return Err(Outcome::failed(format!(
            "endpoint `{name}` does not hold the copy at {to} as written; location kept"
        )));
    }
    Ok(())
}
