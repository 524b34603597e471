//! `recall` (`dynamo.tasks.recall`): bring a stub's data back from its
//! endpoint, in place (same inode, so hard links and open handles stay
//! valid).
//!
//! The object is downloaded and hashed before anything touches the stub:
//! into memory when small, into an unnamed temporary file in the stub's
//! directory when large. Only verified data is ever written into the stub.
//! Ranges the stub still holds (the resident head, or data an interrupted
//! recall already wrote) are compared, never overwritten: a difference
//! means someone wrote into the stub, and the file fails instead of losing
//! that change. After the data is durable the file becomes premigrated.

use super::lock::{LockLevel, Locking};
use super::xattrs::{HsmState, Residency};
use super::{Inodes, OpContext, OpError, Snap, Step, chosen_times, for_each_window, set_times, write_sparse};
use crate::endpoint::{Endpoint, SMALL_OBJECT, TransferError};
use crate::sys::{copy_range, next_data, next_hole};
use crate::task::{Outcome, PathObject};
use object_store::path::Path as ObjPath;
use serde::Deserialize;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The seed's recall arguments, with its defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RecallArgs {
    /// Endpoint to recall from; the file's only (or first configured)
    /// location when absent.
    pub endpoint: Option<String>,
    /// Do not check the downloaded data's BLAKE3 hash.
    pub skip_hash: bool,
    /// Locking level (default `partial`).
    pub lock_level: Option<LockLevel>,
    /// Set the access time to now instead of keeping it.
    pub update_atime: bool,
    /// Set the modification time to now instead of restoring it.
    pub update_mtime: bool,
    /// Delete the object after the data is back and durable.
    pub delete_remote: bool,
    /// Paths per sequential chunk.
    pub sub_batch: Option<usize>,
}

/// Recalls `paths`, one outcome per path in order.
pub fn recall(ctx: &OpContext, args: &RecallArgs, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    let locking = Locking::new(args.lock_level, LockLevel::Partial, false)?;
    if let Some(e) = &args.endpoint {
        ctx.endpoint(e)?;
    }
    let job = Job { ctx, args, locking };
    Ok(for_each_window(
        ctx,
        args.sub_batch,
        paths,
        |i, obj, inodes| match job.recall_one(i, &obj.path, inodes) {
            Ok(Recalled::Bytes(bytes)) => Step::Done(Outcome::processed(), bytes),
            Ok(Recalled::Link(first)) => Step::Link(first),
            Err(o) => Step::Done(o, 0),
        },
    ))
}

/// What became of a file that did not fail.
enum Recalled {
    /// Its data is back: this many bytes.
    Bytes(u64),
    /// Another name (hard link) of the file at this input index.
    Link(usize),
}

struct Job<'a> {
    ctx: &'a OpContext,
    args: &'a RecallArgs,
    locking: Locking,
}

impl Job<'_> {
    /// Recalls one file (input `index` of its window).
    fn recall_one(&self, index: usize, path: &[u8], inodes: &Inodes) -> Result<Recalled, Outcome> {
        let xattrs = &self.ctx.xattrs;
        let file = super::open_file(path, true).map_err(|e| e.outcome("recall", false))?;
        let before = Snap::of(&file).map_err(|e| failure("stat", e))?;
        if !before.is_file() {
            return Err(Outcome::skipped(
                "not a regular file: recall works on regular files only",
            ));
        }
        if let Some(first) = inodes.first_name(before.id, index) {
            return Ok(Recalled::Link(first));
        }
        self.locking.at_open(&file).map_err(Outcome::from)?;
        let state = match xattrs.state(&file).map_err(|e| failure("reading xattrs", e))? {
            None => return Err(Outcome::skipped("not migrated: nothing to recall")),
            Some(Err(e)) => {
                return Err(Outcome::failed(format!("damaged {} xattr: {e}", xattrs.state_name())));
            }
            Some(Ok(s)) => s,
        };
        let (target, key) = self.location(&file)?;
        if state.residency == Residency::Premigrated {
            if !self.args.delete_remote {
                return Err(Outcome::skipped("data is resident (premigrated)"));
            }
            self.locking.at_commit(&file).map_err(Outcome::from)?;
            self.drop_remote(&file, &target, &key)?;
            return Ok(Recalled::Bytes(0));
        }
        if before.size != state.size {
            return Err(Outcome::failed(format!(
                "stub is {} bytes but was {} when migrated; refusing to recall over it",
                before.size, state.size
            )));
        }
        match target.head(&key) {
            Ok(Some(o)) if o.size == state.size && matches!(&o.meta, Some(Ok(m)) if m.hash == state.hash) => {}
            Ok(_) => {
                return Err(Outcome::failed(format!(
                    "endpoint `{}` does not hold the object recorded for this stub at {key}",
                    target.name()
                )));
            }
            Err(e) => return Err(Outcome::failed(e.to_string())),
        }
        let staged = self.stage(path, &target, &key, &state)?;
        self.locking.at_commit(&file).map_err(Outcome::from)?;
        let now = Snap::of(&file).map_err(|e| failure("stat", e))?;
        if !before.unchanged(&now) {
            return Err(Outcome::failed("stub changed during recall; left as it was"));
        }
        install(&file, &staged, state.size)?;
        file.sync_data().map_err(|e| failure("flushing recalled data", e))?;
        let (atime, mtime) = chosen_times(
            self.args.update_atime,
            self.args.update_mtime,
            before.atime,
            state.mtime,
        );
        // Times before the state: a recall stopped in between leaves the
        // file migrated, and the next recall finishes it (times included).
        set_times(&file, atime, mtime).map_err(|e| failure("restoring times", e))?;
        if self.args.delete_remote {
            self.drop_remote(&file, &target, &key)?;
        } else {
            let premigrated = HsmState {
                residency: Residency::Premigrated,
                mtime,
                ..state.clone()
            };
            xattrs
                .set_state(&file, &premigrated)
                .map_err(|e| failure("writing xattrs", e))?;
        }
        Ok(Recalled::Bytes(state.size))
    }

    /// The endpoint and key to recall from.
    fn location(&self, file: &File) -> Result<(Arc<Endpoint>, ObjPath), Outcome> {
        let xattrs = &self.ctx.xattrs;
        let (endpoint, key) = match &self.args.endpoint {
            Some(e) => {
                let key = xattrs.location(file, e).map_err(|e| failure("reading xattrs", e))?;
                let key = key.ok_or_else(|| Outcome::failed(format!("file has no location on endpoint `{e}`")))?;
                (e.clone(), key)
            }
            None => {
                let all = xattrs.locations(file).map_err(|e| failure("reading xattrs", e))?;
                let known = all.iter().find(|(e, _)| self.ctx.config.endpoints.contains_key(e));
                match known {
                    Some(found) => found.clone(),
                    None if all.is_empty() => return Err(Outcome::failed("file records no location")),
                    None => {
                        let names: Vec<&str> = all.iter().map(|(e, _)| e.as_str()).collect();
                        return Err(Outcome::failed(format!(
                            "none of the file's endpoints ({}) is configured",
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        let target = self
            .ctx
            .endpoint(&endpoint)
            .map_err(|e| Outcome::failed(e.to_string()))?;
        let key = super::cloud::parse_key(&endpoint, &key)?;
        Ok((target, key))
    }

    /// Downloads and verifies the object, into memory or a temporary file
    /// beside the stub.
    fn stage(&self, path: &[u8], target: &Endpoint, key: &ObjPath, state: &HsmState) -> Result<Staged, Outcome> {
        let remote = |e: TransferError| match e {
            TransferError::Local(e) => failure("staging recalled data", e),
            e => Outcome::failed(format!("download from endpoint `{}` failed: {e}", target.name())),
        };
        let (staged, hash) = if state.size <= SMALL_OBJECT {
            let mut buf = Vec::with_capacity(state.size as usize);
            let hash = target
                .download(key, state.size, &mut |chunk| {
                    buf.extend_from_slice(chunk);
                    Ok(())
                })
                .map_err(remote)?;
            (Staged::Memory(buf), hash)
        } else {
            let reachable = super::Reachable::new(path, false).map_err(|e| failure("reaching the directory", e))?;
            let dir = reachable.path().parent().unwrap_or(std::path::Path::new("/"));
            let tmp = tempfile::tempfile_in(dir).map_err(|e| failure("creating a staging file", e))?;
            let mut offset = 0u64;
            let hash = target
                .download(key, state.size, &mut |chunk| {
                    write_sparse(&tmp, offset, chunk)?;
                    offset += chunk.len() as u64;
                    Ok(())
                })
                .map_err(remote)?;
            tmp.set_len(state.size)
                .map_err(|e| failure("staging recalled data", e))?;
            (Staged::File(tmp), hash)
        };
        if !self.args.skip_hash && hash != state.hash {
            return Err(Outcome::failed(format!(
                "hash mismatch: object at {key} on endpoint `{}` is corrupt (blake3 {}, expected {}); stub left as it was",
                target.name(),
                hash.to_hex(),
                state.hash.to_hex()
            )));
        }
        Ok(staged)
    }

    /// Forgets the file's location and state, then deletes the object.
    fn drop_remote(&self, file: &File, target: &Endpoint, key: &ObjPath) -> Result<(), Outcome> {
        let xattrs = &self.ctx.xattrs;
        xattrs
            .remove_location(file, target.name())
            .and_then(|()| xattrs.clear_state(file))
            .map_err(|e| failure("removing xattrs", e))?;
        target
            .delete(key)
            .map_err(|e| Outcome::failed(format!("data recalled, but deleting the object failed: {e}")))
    }
}

/// Recalled data waiting to be written into the stub.
enum Staged {
    Memory(Vec<u8>),
    File(File),
}

impl Staged {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Staged::Memory(v) => {
                let start = offset as usize;
                buf.copy_from_slice(&v[start..start + buf.len()]);
                Ok(())
            }
            Staged::File(f) => f.read_exact_at(buf, offset),
        }
    }
}

/// Writes the verified content into the stub. Ranges that hold data are
/// compared first, all of them, before anything is written: a difference
/// (someone wrote into the stub) fails the file with the stub untouched.
/// Then the holes are filled, all-zero blocks staying holes.
fn install(file: &File, staged: &Staged, size: u64) -> Result<(), Outcome> {
    let ranges = data_ranges(file, size);
    for &(from, to) in &ranges {
        transfer(staged, file, from, to, Mode::Compare)?;
    }
    let mut offset = 0;
    for &(from, to) in ranges.iter().chain([(size, size)].iter()) {
        if from > offset {
            transfer(staged, file, offset, from, Mode::Fill)?;
        }
        if to > from {
            transfer(staged, file, from, to, Mode::Patch)?;
        }
        offset = to;
    }
    Ok(())
}

/// The ranges of `file` below `size` that hold data. Without SEEK_DATA
/// support everything counts as data, and the comparison then treats
/// zeroed blocks as holes.
fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < size {
        let data = next_data(file, offset)
            .unwrap_or(Some(offset))
            .unwrap_or(size)
            .min(size);
        if data >= size {
            break;
        }
        let hole = next_hole(file, data).unwrap_or(size).clamp(data + 1, size);
        ranges.push((data, hole));
        offset = hole;
    }
    ranges
}

/// What [`transfer`] does with a range.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Check the file against the staged data: equal or zero blocks pass,
    /// anything else fails the file.
    Compare,
    /// Write the staged data into a hole, keeping zero blocks as holes.
    Fill,
    /// Write the staged data into the file's zero blocks only (a range
    /// that holds data, already compared).
    Patch,
}

fn transfer(staged: &Staged, file: &File, from: u64, to: u64, mode: Mode) -> Result<(), Outcome> {
    const CHUNK: usize = 1 << 20;
    const BLOCK: usize = super::file::BLOCK;
    let io_err = |e| failure("writing recalled data", e);
    if let (Mode::Fill, Staged::File(tmp)) = (mode, staged) {
        // The staging file was written sparse, so its data extents are
        // exactly the non-zero blocks: copy them in the kernel.
        return copy_extents(tmp, file, from, to).map_err(io_err);
    }
    // No bigger than the range: a buffer is zeroed when it is made.
    let chunk = CHUNK.min(to.saturating_sub(from) as usize);
    let mut want = vec![0u8; chunk];
    let mut have = vec![0u8; if mode == Mode::Fill { 0 } else { chunk }];
    let mut off = from;
    while off < to {
        let n = CHUNK.min((to - off) as usize);
        staged.read_at(&mut want[..n], off).map_err(io_err)?;
        if mode == Mode::Fill {
            write_sparse(file, off, &want[..n]).map_err(io_err)?;
            off += n as u64;
            continue;
        }
        file.read_exact_at(&mut have[..n], off).map_err(io_err)?;
        for (i, (w, h)) in want[..n].chunks(BLOCK).zip(have[..n].chunks(BLOCK)).enumerate() {
            if w == h {
                continue;
            }
            let at = off + (i * BLOCK) as u64;
            if h.iter().any(|&b| b != 0) {
                return Err(Outcome::failed(format!(
                    "stub holds data at offset {at} that differs from its object (written after migration?); refusing to overwrite it"
                )));
            }
            if mode == Mode::Patch {
                write_sparse(file, at, w).map_err(io_err)?;
            }
        }
        off += n as u64;
    }
    Ok(())
}

/// Copies the data extents of `src` within `from..to` to the same offsets
/// of `dst` (`copy_file_range`: no copy through user space, shared extents
/// where the filesystem can), leaving holes as holes.
fn copy_extents(src: &File, dst: &File, from: u64, to: u64) -> io::Result<()> {
    let mut off = from;
    while off < to {
        let Some(data) = next_data(src, off)?.filter(|&d| d < to) else {
            return Ok(());
        };
        let end = next_hole(src, data)?.min(to);
        let mut at = data;
        while at < end {
            match copy_range(src, at, dst, at, end - at)? {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "staging file ended early")),
                n => at += n,
            }
        }
        off = end;
    }
    Ok(())
}

fn failure(what: &str, e: io::Error) -> Outcome {
    Outcome::failed(format!("{what}: {e}"))
}
