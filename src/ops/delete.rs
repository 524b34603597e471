//! `delete_paths_from_gpfs`: remove files, empty directories, or (with
//! `recursive`) whole trees.
//!
//! Some entries are never removed: snapshot directories (`.snapshots`),
//! mount points, btrfs subvolume roots and GPFS fileset junctions (asked of
//! `mmlsfileset` when the path is on GPFS or a GPFS device is configured). The seed passes over them silently; ferry
//! removes everything else, keeps them and the directories above them, and
//! says what it left and why in the file's message. A missing path is
//! `skipped` (already in the desired state). Removal works relative to open
//! directories, so a symlink swapped in mid-way is removed, not followed.

use super::dirtimes::DirTimes;
use super::moves::depth;
use super::{OpContext, par_map};
use crate::gpfs::linked_junctions;
use crate::sys::btrfs::{SUBVOL_ROOT_INO, is_btrfs};
use crate::sys::{Base, DirReader, FileStat, StatMask, open_dir_at, stat_at, unlink_at};
use crate::task::{Outcome, PathObject};
use serde::Deserialize;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The seed's `delete_paths_from_gpfs` arguments.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteArgs {
    /// Remove directories with everything in them; otherwise only empty
    /// directories are removed.
    pub recursive: bool,
    /// Give the directory holding each removed path back the times it had
    /// just before (a sync mirroring a removal, whose directory's times
    /// travel on their own; [`super::dirtimes`]).
    pub keep_parent_times: bool,
}

/// Deletes `paths`, one outcome per path in order.
///
/// Paths go deepest first, one depth at a time (each depth on up to
/// `threads` threads): a batch that holds a directory and what is in it
/// (a deleted tree, as a snapshot diff reports it) empties the directory
/// before removing it, where a free-for-all would find it not empty.
/// Entries of one depth cannot hold one another.
pub fn delete(ctx: &OpContext, args: &DeleteArgs, paths: &[PathObject]) -> Vec<Outcome> {
    let keeper = args.keep_parent_times.then(DirTimes::default);
    let mut outcomes: Vec<Option<Outcome>> = paths.iter().map(|_| None).collect();
    let mut by_depth: Vec<(usize, usize)> = paths.iter().enumerate().map(|(i, o)| (depth(&o.path), i)).collect();
    by_depth.sort_by_key(|&(d, i)| (std::cmp::Reverse(d), i));
    for level in by_depth.chunk_by(|a, b| a.0 == b.0) {
        let done = par_map(level.iter().map(|&(_, i)| i).collect(), ctx.threads, |i: usize| {
            let outcome = delete_one(ctx, &paths[i].path, args.recursive, keeper.as_ref());
            ctx.count(&outcome, 0);
            (i, outcome)
        });
        for (i, o) in done {
            outcomes[i] = Some(o);
        }
    }
    outcomes.into_iter().map(|o| o.expect("every path decided")).collect()
}

/// Removes `name` (in the working directory's terms), keeping its parent's
/// times when `keeper` says so.
fn remove(keeper: Option<&DirTimes>, path: &[u8], name: &CStr, dir: bool) -> io::Result<()> {
    match keeper {
        Some(k) => k.keeping_parents(&[path], || unlink_at(Base::Cwd, name, dir)),
        None => unlink_at(Base::Cwd, name, dir),
    }
}

fn delete_one(ctx: &OpContext, path: &[u8], recursive: bool, keeper: Option<&DirTimes>) -> Outcome {
    let Ok(cpath) = CString::new(path) else {
        return Outcome::failed("path contains a NUL byte");
    };
    let st = match stat_at(Base::Cwd, &cpath, false, StatMask::TYPE.union(StatMask::ALL)) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Outcome::skipped("not found"),
        Err(e) => return Outcome::failed(format!("stat: {e}")),
    };
    if !is_dir(&st) {
        return match remove(keeper, path, &cpath, false) {
            Ok(()) => Outcome::processed(),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Outcome::skipped("not found"),
            Err(e) => Outcome::failed(format!("cannot remove: {e}")),
        };
    }
    if let Some(why) = protected_name(path) {
        return Outcome::skipped(format!("not deleted: {why}"));
    }
    let junctions = match linked_junctions(&ctx.config.gpfs, Path::new(OsStr::from_bytes(path))) {
        Ok(j) => j.unwrap_or_default(),
        Err(e) => {
            return Outcome::failed(format!(
                "cannot list GPFS fileset junctions, so nothing was deleted: {e}"
            ));
        }
    };
    if junctions.iter().any(|j| j.as_slice() == path) {
        return Outcome::skipped("not deleted: fileset junction");
    }
    if !recursive {
        return match remove(keeper, path, &cpath, true) {
            Ok(()) => Outcome::processed(),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                Outcome::skipped("directory not empty; not deleted (recursive is not set)")
            }
            Err(e) => Outcome::failed(format!("cannot remove directory: {e}")),
        };
    }
    let dir = match open_dir_at(Base::Cwd, &cpath, false) {
        Ok(d) => d,
        Err(e) => return Outcome::failed(format!("cannot open directory: {e}")),
    };
    let mut left = Vec::new();
    let mut t = Tree {
        junctions: &junctions,
        dev: st.dev,
        btrfs: is_btrfs(dir.as_fd()).unwrap_or(false),
        left: &mut left,
    };
    match t.empty(&dir, path) {
        Ok(true) => {}
        Ok(false) => {
            let list: Vec<String> = left
                .iter()
                .map(|(p, why)| format!("{} ({why})", String::from_utf8_lossy(p)))
                .collect();
            let mut o = Outcome::processed();
            o.message = Some(format!("removed all but: {}", list.join(", ")));
            return o;
        }
        Err(e) => return Outcome::failed(format!("{e}")),
    }
    drop(dir);
    match remove(keeper, path, &cpath, true) {
        Ok(()) => Outcome::processed(),
        Err(e) => Outcome::failed(format!("cannot remove directory: {e}")),
    }
}

fn is_dir(st: &FileStat) -> bool {
    st.mode & libc::S_IFMT == libc::S_IFDIR
}

/// Why a directory must stay whatever it holds, judged by its name.
fn protected_name(path: &[u8]) -> Option<&'static str> {
    let name = path.rsplit(|&b| b == b'/').find(|p| !p.is_empty()).unwrap_or(b"/");
    (name == b".snapshots").then_some("snapshot directory")
}

/// A recursive removal below one directory.
struct Tree<'a> {
    junctions: &'a [Vec<u8>],
    dev: u64,
    btrfs: bool,
    left: &'a mut Vec<(Vec<u8>, &'static str)>,
}

impl Tree<'_> {
    /// Removes everything inside `dir` (at `path`) that may be removed;
    /// `Ok(true)` when it is now empty.
    fn empty(&mut self, dir: &OwnedFd, path: &[u8]) -> io::Result<bool> {
        let names = read_names(dir).map_err(|e| annotate(path, e))?;
        let mut all_gone = true;
        for name in names {
            let child_path = [path, b"/", name.as_bytes()].concat();
            let st = match stat_at(Base::Dir(dir.as_fd()), &name, false, StatMask::ALL) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(annotate(&child_path, e)),
            };
            if !is_dir(&st) {
                match unlink_at(Base::Dir(dir.as_fd()), &name, false) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(annotate(&child_path, e)),
                }
                continue;
            }
            // A btrfs subvolume has a device number of its own, so it is
            // told apart from a mount point first.
            let why = protected_name(&child_path).or(if self.junctions.contains(&child_path) {
                Some("fileset junction")
            } else if self.btrfs && st.ino == SUBVOL_ROOT_INO {
                Some("subvolume root")
            } else if st.dev != self.dev {
                Some("mount point")
            } else {
                None
            });
            if let Some(why) = why {
                self.left.push((child_path, why));
                all_gone = false;
                continue;
            }
            let child = open_dir_at(Base::Dir(dir.as_fd()), &name, false).map_err(|e| annotate(&child_path, e))?;
            if self.empty(&child, &child_path)? {
                drop(child);
                unlink_at(Base::Dir(dir.as_fd()), &name, true).map_err(|e| annotate(&child_path, e))?;
            } else {
                all_gone = false;
            }
        }
        Ok(all_gone)
    }
}

/// Every name in `dir` but `.` and `..`, read before anything is removed.
fn read_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut buf = vec![MaybeUninit::uninit(); 64 * 1024];
    let mut reader = DirReader::new(dir.as_fd(), &mut buf);
    let mut names = Vec::new();
    while reader.read_batch(|d| names.push(d.name.to_owned()))? {}
    Ok(names)
}

fn annotate(path: &[u8], e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", String::from_utf8_lossy(path)))
}
