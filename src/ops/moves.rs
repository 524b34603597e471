//! `move_paths_on_gpfs` and `one_step_move_paths_on_gpfs`: rename each
//! path object's `source` to its `path`.
//!
//! The two-step move makes swaps and cycles (a→b, b→a; a→b, b→c, c→a) work
//! in one batch: every source is first renamed into a staging directory
//! (deepest source first, so a moved directory's moved-out children go
//! before it), then every staged entry goes to its destination (shallowest
//! destination first, so a moved directory exists before entries move into
//! it). The staging directory, `.ferry-move-<id>` in the deepest directory
//! common to the batch, holds a `plan` file naming each staged entry's
//! source and destination until the batch is done, so an interrupted batch
//! can be finished by hand. A destination that cannot be reached puts the
//! entry back at its source.

use super::OpContext;
use super::dirtimes::DirTimes;
use super::entry::Builder;
use crate::sys::{Base, StatMask, rename, stat_at, unlink_at};
use crate::task::{FileState, Outcome, PathObject, surrogate};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

/// The seed's move arguments.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MoveArgs {
    /// Remove ferry's location and state xattrs from moved files (their
    /// object keys no longer match their paths). Stubs keep theirs: their
    /// data is reachable only through them.
    pub delete_remote_xattrs: bool,
    /// When the destination exists, move only if its ctime (seconds since
    /// the epoch) is at most this; otherwise remove the source.
    pub target_max_age: Option<i64>,
    /// Give every directory whose entries a move changes (the source's,
    /// the destination's, the staging directory's parent) back the times
    /// it had just before: a sync mirroring a move, whose directories'
    /// times travel on their own ([`super::dirtimes`]).
    pub keep_parent_times: bool,
    /// Make a destination's missing parent directories (mode 0755, marked
    /// as made parents, so the directory's own object gives them their
    /// attributes when it arrives): a sync replaying a move into a
    /// directory created in the same change set, whose creation comes
    /// after the moves (`docs/snapdiff.md`). Without it, such a move fails
    /// and the entry stays at its source.
    pub make_parents: bool,
    /// Keep moved files' endpoint locations true to their new paths
    /// ([`super::relocate`]): a whole file forgets a location that names
    /// its old path's key, a stub gets its object copied to its new
    /// path's key. Every file under a moved directory is visited. A sync
    /// sets it on the destination, where a moved stub would otherwise keep
    /// the key of its old path, which the source reuses for what it next
    /// writes there.
    pub relocate: bool,
}

/// Two-step move of `paths` (each with a `source`), one outcome per path.
/// Moves are staged per filesystem (renames never cross one), in the
/// deepest directory common to that filesystem's moves.
pub fn move_paths(ctx: &OpContext, args: &MoveArgs, paths: &[PathObject]) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = paths.iter().map(|_| None).collect();
    let mut groups: BTreeMap<Vec<u8>, Vec<Item<'_>>> = BTreeMap::new();
    let mut by_dev: BTreeMap<u64, Vec<Item<'_>>> = BTreeMap::new();
    for (i, obj) in paths.iter().enumerate() {
        match check_item(obj) {
            Ok((src, dst, dev)) => by_dev.entry(dev).or_default().push((i, src, dst)),
            Err(o) => outcomes[i] = Some(o),
        }
    }
    for (dev, items) in by_dev {
        let common = common_dir(items.iter().flat_map(|(_, s, d)| [*s, *d]));
        if lstat(if common.is_empty() { b"/" } else { &common }).is_ok_and(|st| st.dev == dev) {
            groups.entry(common).or_default().extend(items);
        } else {
            // The common directory is on another filesystem (bind mounts):
            // stage beside each source instead.
            for item in items {
                groups.entry(parent(item.1).to_vec()).or_default().push(item);
            }
        }
    }
    for (dir, items) in groups {
        match Staging::create(&dir, &items, args.keep_parent_times.then(DirTimes::default)) {
            Err(e) => {
                for (i, ..) in &items {
                    outcomes[*i] = Some(Outcome::failed(format!("cannot create a staging directory: {e}")));
                }
            }
            Ok(stage) => stage.run(ctx, args, &items, &mut outcomes),
        }
    }
    let mut outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.expect("every path decided")).collect();
    relocate(ctx, args, paths, &mut outcomes);
    for o in &outcomes {
        ctx.count(o, 0);
    }
    outcomes
}

/// With `relocate`, relocates what the batch moved into place (not the
/// sources removed because a destination was newer): after every move of
/// the batch, since a chain or swap of moves hands one entry's old key to
/// another ([`super::relocate`]).
fn relocate(ctx: &OpContext, args: &MoveArgs, paths: &[PathObject], outcomes: &mut [Outcome]) {
    if !args.relocate {
        return;
    }
    let moved: Vec<usize> = (0..paths.len())
        .filter(|&i| outcomes[i].state == FileState::Processed && outcomes[i].message.is_none())
        .collect();
    let dsts: Vec<&[u8]> = moved.iter().map(|&i| paths[i].path.as_slice()).collect();
    for (i, r) in moved.into_iter().zip(super::relocate::relocate_moved(ctx, &dsts)) {
        outcomes[i] = match r {
            Ok(r) if r == super::relocate::Relocated::default() => continue,
            Ok(r) => {
                let mut done = Outcome::processed();
                done.message = Some(format!(
                    "moved; {} stub object(s) copied to their new keys, {} stale location(s) forgotten",
                    r.copied, r.forgotten
                ));
                done
            }
            Err(o) => Outcome::failed(format!(
                "moved, but relocating its objects failed: {}",
                o.message.unwrap_or_default()
            )),
        };
    }
}

/// One move: input position, source, destination.
type Item<'a> = (usize, &'a [u8], &'a [u8]);

/// One-step move: each source renamed straight to its destination, in the
/// order given. A swap in one batch loses one of the two files, as the
/// seed warns.
pub fn one_step_move_paths(ctx: &OpContext, args: &MoveArgs, paths: &[PathObject]) -> Vec<Outcome> {
    let keeper = args.keep_parent_times.then(DirTimes::default);
    let mut outcomes: Vec<Outcome> = paths
        .iter()
        .map(|obj| match check_item(obj) {
            Err(o) => o,
            Ok((src, dst, _)) => match target_too_new(args, dst) {
                Some(o) => remove_source(keeper.as_ref(), src, o),
                None => match parents_for(ctx, args, keeper.as_ref(), dst)
                    .and_then(|()| rename_paths(keeper.as_ref(), src, dst))
                {
                    Ok(()) => after_move(ctx, args, dst),
                    Err(e) => Outcome::failed(format!("cannot move: {e}")),
                },
            },
        })
        .collect();
    relocate(ctx, args, paths, &mut outcomes);
    for o in &outcomes {
        ctx.count(o, 0);
    }
    outcomes
}

/// The source and destination of a move, and the source's device.
fn check_item(obj: &PathObject) -> Result<(&[u8], &[u8], u64), Outcome> {
    let src = obj
        .source
        .as_deref()
        .ok_or_else(|| Outcome::failed("path object has no \"source\" to move from"))?;
    if src == obj.path.as_slice() {
        return Err(Outcome::skipped("source and destination are the same"));
    }
    if obj.path.starts_with(src) && obj.path.get(src.len()) == Some(&b'/') {
        return Err(Outcome::failed("cannot move a directory into itself"));
    }
    match lstat(src) {
        Ok(st) => Ok((src, &obj.path, st.dev)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Outcome::failed("source missing")),
        Err(e) => Err(Outcome::failed(format!("source: {e}"))),
    }
}

/// `Some` when `target_max_age` says the existing destination wins.
fn target_too_new(args: &MoveArgs, dst: &[u8]) -> Option<Outcome> {
    let max = args.target_max_age?;
    let st = lstat(dst).ok()?;
    (st.ctime.sec > max).then(|| {
        let mut o = Outcome::processed();
        o.message = Some(format!(
            "destination changed after target_max_age ({} > {max}); kept it and removed the source",
            st.ctime.sec
        ));
        o
    })
}

fn remove_source(keeper: Option<&DirTimes>, src: &[u8], done: Outcome) -> Outcome {
    let st = match lstat(src) {
        Ok(st) => st,
        Err(e) => return Outcome::failed(format!("source: {e}")),
    };
    let path = std::path::Path::new(OsStr::from_bytes(src));
    let remove = || {
        if st.mode & libc::S_IFMT == libc::S_IFDIR {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        }
    };
    let r = match keeper {
        Some(k) => k.keeping_parents(&[src], remove),
        None => remove(),
    };
    match r {
        Ok(()) => done,
        Err(e) => Outcome::failed(format!("destination kept, but removing the source failed: {e}")),
    }
}

/// Makes `dst`'s missing parents when `make_parents` asks for it.
fn parents_for(ctx: &OpContext, args: &MoveArgs, keeper: Option<&DirTimes>, dst: &[u8]) -> io::Result<()> {
    if !args.make_parents {
        return Ok(());
    }
    let own = DirTimes;
    Builder {
        xattrs: &ctx.xattrs,
        times: keeper.unwrap_or(&own),
        overwrite: false,
        update_atime: false,
        update_mtime: false,
    }
    .make_parents(dst)
}

/// Post-move xattr clean-up for `delete_remote_xattrs` (`relocate` is
/// done for the whole batch once every entry is in place).
fn after_move(ctx: &OpContext, args: &MoveArgs, dst: &[u8]) -> Outcome {
    if !args.delete_remote_xattrs {
        return Outcome::processed();
    }
    match super::unmanage::forget_locations(ctx, dst, None) {
        Ok(_) => Outcome::processed(),
        Err(o) => {
            let mut done = Outcome::processed();
            done.message = Some(format!(
                "moved; location xattrs kept: {}",
                o.message.unwrap_or_default()
            ));
            done
        }
    }
}

/// The staging directory of one two-step batch.
struct Staging {
    dir: Vec<u8>,
    /// Keeps directory times (`keep_parent_times`).
    keeper: Option<DirTimes>,
}

impl Staging {
    fn create(parent: &[u8], items: &[Item<'_>], keeper: Option<DirTimes>) -> io::Result<Staging> {
        let dir = [
            parent,
            format!("/.ferry-move-{}", uuid::Uuid::new_v4().simple()).as_bytes(),
        ]
        .concat();
        let p = std::path::Path::new(OsStr::from_bytes(&dir));
        match &keeper {
            Some(k) => k.keeping_parents(&[&dir], || fs::create_dir(p))?,
            None => fs::create_dir(p)?,
        }
        let mut plan = Vec::new();
        for (n, (_, src, dst)) in items.iter().enumerate() {
            plan.extend_from_slice(format!("{{\"staged\":\"{n}\",\"source\":").as_bytes());
            surrogate::encode(src, &mut plan);
            plan.extend_from_slice(b",\"path\":");
            surrogate::encode(dst, &mut plan);
            plan.extend_from_slice(b"}\n");
        }
        let mut f = fs::File::create(p.join("plan"))?;
        f.write_all(&plan)?;
        f.sync_all()?;
        Ok(Staging { dir, keeper })
    }

    fn staged(&self, n: usize) -> Vec<u8> {
        [self.dir.as_slice(), format!("/{n}").as_bytes()].concat()
    }

    fn run(self, ctx: &OpContext, args: &MoveArgs, items: &[Item<'_>], outcomes: &mut [Option<Outcome>]) {
        // Step 1: deepest source first.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&n| std::cmp::Reverse(depth(items[n].1)));
        let mut staged = vec![false; items.len()];
        for &n in &order {
            let (i, src, _) = items[n];
            match rename_paths(self.keeper.as_ref(), src, &self.staged(n)) {
                Ok(()) => staged[n] = true,
                Err(e) => outcomes[i] = Some(Outcome::failed(format!("cannot move the source aside: {e}"))),
            }
        }
        // Step 2: shallowest destination first.
        order.sort_by_key(|&n| depth(items[n].2));
        let mut stuck = false;
        for &n in order.iter().filter(|&&n| staged[n]) {
            let (i, src, dst) = items[n];
            let tmp = self.staged(n);
            let outcome = if let Some(done) = target_too_new(args, dst) {
                remove_source(self.keeper.as_ref(), &tmp, done)
            } else {
                match parents_for(ctx, args, self.keeper.as_ref(), dst)
                    .and_then(|()| rename_paths(self.keeper.as_ref(), &tmp, dst))
                {
                    Ok(()) => after_move(ctx, args, dst),
                    Err(e) => match rename_paths(self.keeper.as_ref(), &tmp, src) {
                        Ok(()) => {
                            Outcome::failed(format!("cannot move to the destination ({e}); source left in place"))
                        }
                        Err(back) => {
                            stuck = true;
                            Outcome::failed(format!(
                                "cannot move to the destination ({e}) nor back ({back}); it is at {}",
                                String::from_utf8_lossy(&tmp)
                            ))
                        }
                    },
                }
            };
            outcomes[i] = Some(outcome);
        }
        // An entry that could go neither forward nor back keeps the staging
        // directory and its plan.
        if !stuck {
            let p = std::path::Path::new(OsStr::from_bytes(&self.dir));
            let _ = fs::remove_file(p.join("plan")).and_then(|()| match &self.keeper {
                Some(k) => k.keeping_parents(&[&self.dir], || fs::remove_dir(p)),
                None => fs::remove_dir(p),
            });
        }
    }
}

/// How deep an absolute path is (its number of `/`): what the two-step
/// move and a batch of deletes order by.
pub(super) fn depth(p: &[u8]) -> usize {
    p.iter().filter(|&&b| b == b'/').count()
}

/// The deepest directory containing every path's parent, without a
/// trailing slash (empty for `/`).
fn common_dir<'a>(paths: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut common: Option<Vec<&[u8]>> = None;
    for p in paths {
        let parts: Vec<&[u8]> = p.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        let parent = &parts[..parts.len().saturating_sub(1)];
        common = Some(match common {
            None => parent.to_vec(),
            Some(c) => c
                .iter()
                .zip(parent)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    common
        .unwrap_or_default()
        .iter()
        .flat_map(|c| [b"/".as_slice(), c])
        .flatten()
        .copied()
        .collect()
}

/// Renames `from` to `to`. When both already name one inode (hard links),
/// `rename(2)` does nothing, so the source name is removed to finish the
/// move.
/// With `keeper`, the two directories keep their times.
fn rename_paths(keeper: Option<&DirTimes>, from: &[u8], to: &[u8]) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    let change = || {
        rename(&f, &t, false)?;
        if let (Ok(a), Ok(b)) = (lstat(from), lstat(to))
            && (a.dev, a.ino) == (b.dev, b.ino)
        {
            unlink_at(Base::Cwd, &f, false)?;
        }
        Ok(())
    };
    match keeper {
        Some(k) => k.keeping_parents(&[from, to], change),
        None => change(),
    }
}

/// The directory part of `p` (empty for a path directly under `/`).
fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => b"",
    }
}

fn lstat(p: &[u8]) -> io::Result<crate::sys::FileStat> {
    stat_at(Base::Cwd, &cstr(p)?, false, StatMask::ALL)
}

fn cstr(p: &[u8]) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::common_dir;

    #[test]
    fn common_directory() {
        let c = |v: &[&[u8]]| common_dir(v.iter().copied());
        assert_eq!(c(&[b"/a/b/x", b"/a/b/y"]), b"/a/b");
        assert_eq!(c(&[b"/a/b/x", b"/a/bc/y"]), b"/a");
        assert_eq!(c(&[b"/a/b/x", b"/a/b/c/y"]), b"/a/b");
        assert_eq!(c(&[b"/a/x", b"/b/y"]), b"");
        assert_eq!(c(&[b"/x"]), b"");
    }
}
