//! `recall_bytes` (`dynamo.tasks.recall_bytes`): bring back bytes
//! `remote_offset_start..remote_offset_end` of stubs' objects.
//!
//! With `location` (a directory, made if missing with `default_mode_dir`),
//! each file's range is written to a new file `<location>/<file name>`,
//! holding just those bytes, with the object's mode and owner; the stub is
//! left as it is. The new file is built under a temporary name and renamed
//! into place, so it appears whole or not at all; a different file already
//! there is never replaced.
//!
//! Without `location` the range would have to be filled into the stub in
//! place, and ferry refuses that: a stub's state records one resident head
//! (`stub=N`) and treats everything beyond it as punched, so a stub holding
//! data past its head reads as one whose stubbing was interrupted, and a
//! later migrate would hash its partly filled content, find it differs
//! from the object and upload it as new content, holes as zeros. Partial
//! residency cannot be recorded honestly, so only the whole range
//! (`remote_offset_start` 0 and no end) runs in place, as a full recall.
//!
//! The object is checked to be the one the stub records (size and hash in
//! its metadata), but the bytes of a range cannot be checked against a hash
//! of the whole object: they are as the store sent them.
//!
//! The seed marks the task "incompatible with recursive discovery": its
//! input is a list of stubs, each a whole range request, and the task
//! cannot tell how its paths were found, so that is the workflow's
//! business.

use super::cloud::{head, parse_key, readable};
use super::dirtimes::DirTimes;
use super::lock::{LockLevel, Locking};
use super::recall::RecallArgs;
use super::reverse_stub::Building;
use super::{OpContext, OpError, Snap, Step, for_each_window, write_sparse};
use crate::endpoint::Endpoint;
use crate::task::{ArgumentError, Outcome, PathObject, surrogate};
use serde::Deserialize;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, fchown};
use std::path::Path;
use std::sync::Arc;

/// Mode of the directories `recall_bytes` makes when the task gives none.
pub const DIR_MODE: u32 = 0o755;

/// The seed's `recall_bytes` arguments.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RecallBytesArgs {
    /// Endpoint to read from; the file's only (or first configured)
    /// location when absent.
    pub endpoint: Option<String>,
    /// Locking level (default `implicit`): the lock is on the stub.
    pub lock_level: Option<LockLevel>,
    /// Directory to write each range to, as a file of the stub's name.
    pub location: Option<LocalPath>,
    /// First byte of the range.
    pub remote_offset_start: u64,
    /// End of the range (exclusive); the object's size when absent.
    pub remote_offset_end: Option<u64>,
    /// Mode of directories made for `location` (default [`DIR_MODE`]).
    pub default_mode_dir: Option<Mode>,
    /// Paths per sequential chunk.
    pub sub_batch: Option<usize>,
}

/// A local path given as a JSON string, bytes that are not UTF-8 in
/// Python's surrogateescape form (as path objects carry them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPath(pub Vec<u8>);

impl<'de> Deserialize<'de> for LocalPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LocalPath, D::Error> {
        let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
        let bytes = surrogate::decode(raw.get()).map_err(serde::de::Error::custom)?;
        if bytes.first() != Some(&b'/') || bytes.contains(&0) {
            return Err(serde::de::Error::custom("must be an absolute path"));
        }
        Ok(LocalPath(bytes))
    }
}

/// Permission bits given as a number, or as a string of octal digits
/// (`"0755"`, `"755"`): the seed's "int (octal)".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(u32),
            Octal(String),
        }
        let bits = match Given::deserialize(d)? {
            Given::Number(n) => n,
            Given::Octal(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an octal mode")))?,
        };
        if bits > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "{bits:o} is not a mode (at most 7777 octal)"
            )));
        }
        Ok(Mode(bits))
    }
}

/// Recalls the range of each of `paths`, one outcome per path in order.
pub fn recall_bytes(ctx: &OpContext, args: &RecallBytesArgs, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    let locking = Locking::new(args.lock_level, LockLevel::Implicit, false)?;
    if let Some(e) = &args.endpoint {
        ctx.endpoint(e)?;
    }
    let Some(location) = &args.location else {
        if args.remote_offset_start == 0 && args.remote_offset_end.is_none() {
            let whole = RecallArgs {
                endpoint: args.endpoint.clone(),
                lock_level: Some(locking.level()),
                sub_batch: args.sub_batch,
                ..RecallArgs::default()
            };
            return super::recall::recall(ctx, &whole, paths);
        }
        return Ok(paths
            .iter()
            .map(|_| {
                let o = Outcome::failed(IN_PLACE);
                ctx.count(&o, 0);
                o
            })
            .collect());
    };
    if let Some(end) = args.remote_offset_end
        && end < args.remote_offset_start
    {
        let why = format!("{end} is before remote_offset_start {}", args.remote_offset_start);
        return Err(ArgumentError::invalid("remote_offset_end", why).into());
    }
    let dir = OsStr::from_bytes(&location.0);
    let mode = args.default_mode_dir.map_or(DIR_MODE, |m| m.0);
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(mode).create(dir) {
        let why = format!("cannot make {}: {e}", Path::new(dir).display());
        return Err(ArgumentError::invalid("location", why).into());
    }
    let job = Job {
        ctx,
        args,
        locking,
        dir: Path::new(dir),
    };
    Ok(for_each_window(ctx, args.sub_batch, paths, |_, obj, _| {
        match job.one(&obj.path) {
            Ok((outcome, bytes)) => Step::Done(outcome, bytes),
            Err(o) => Step::Done(o, 0),
        }
    }))
}

/// Why a range is not recalled in place.
const IN_PLACE: &str = "byte-range recall in place is refused: a stub records no partial residency, so a partly filled \
     stub would later pass for different content; give `location` for the range, or recall the whole file";

struct Job<'a> {
    ctx: &'a OpContext,
    args: &'a RecallBytesArgs,
    locking: Locking,
    dir: &'a Path,
}

impl Job<'_> {
    /// Writes one file's range; `Ok` carries the bytes written.
    fn one(&self, path: &[u8]) -> Result<(Outcome, u64), Outcome> {
        let file = super::open_file(path, false).map_err(|e| e.outcome("recall_bytes", false))?;
        let before = Snap::of(&file).map_err(|e| failure("stat", e))?;
        if !before.is_file() {
            return Err(Outcome::skipped(
                "not a regular file: recall_bytes works on regular files only",
            ));
        }
        self.locking.at_open(&file).map_err(Outcome::from)?;
        let x = &self.ctx.xattrs;
        let state = match x.state(&file).map_err(|e| failure("reading xattrs", e))? {
            None => return Err(Outcome::failed("not managed by ferry: no object to recall bytes from")),
            Some(Err(e)) => return Err(Outcome::failed(format!("damaged {} xattr: {e}", x.state_name()))),
            Some(Ok(s)) => s,
        };
        if before.size != state.size || before.mtime != state.mtime {
            return Err(Outcome::failed(
                "file changed since it was migrated (size or mtime differs from its state); its object is not its content",
            ));
        }
        let (target, key) = self.source(&file)?;
        let meta = match head(&target, &key)?.as_ref().and_then(readable) {
            Some(m) if m.size == state.size && m.hash == state.hash => m.clone(),
            _ => {
                return Err(Outcome::failed(format!(
                    "endpoint `{}` does not hold the object recorded for this file at {key}",
                    target.name()
                )));
            }
        };
        let start = self.args.remote_offset_start;
        let end = self.args.remote_offset_end.unwrap_or(state.size);
        if end > state.size || start > end {
            return Err(Outcome::failed(format!(
                "range {start}..{end} goes past the object's end ({} bytes)",
                state.size
            )));
        }
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        let dest = [self.dir.as_os_str().as_bytes(), b"/", name].concat();
        let times = DirTimes;
        let mut tmp = Building::create(self.dir, &times).map_err(|e| failure("creating the file", e))?;
        let f = &tmp.file;
        let mut offset = 0u64;
        target
            .download_range(&key, start, end, &mut |chunk| {
                write_sparse(f, offset, chunk)?;
                offset += chunk.len() as u64;
                Ok(())
            })
            .map_err(|e| Outcome::failed(format!("download from `{}` failed: {e}", target.name())))?;
        f.set_len(end - start).map_err(|e| failure("setting the size", e))?;
        let io = |e| failure("setting metadata", e);
        fchown(f, Some(meta.uid), Some(meta.gid)).map_err(io)?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))
            .map_err(io)?;
        f.sync_all().map_err(|e| failure("flushing", e))?;
        self.locking.at_commit(&file).map_err(Outcome::from)?;
        match tmp.persist(&dest, true) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return if same_content(&tmp.file, &dest).map_err(|e| failure("comparing", e))? {
                    Ok((Outcome::skipped("the range is already at the location"), 0))
                } else {
                    Err(Outcome::failed(format!(
                        "a different file exists at {}; left as it was",
                        String::from_utf8_lossy(&dest)
                    )))
                };
            }
            Err(e) => return Err(failure("renaming into place", e)),
        }
        tmp.dir.sync_all().map_err(|e| failure("flushing the directory", e))?;
        Ok((Outcome::processed(), end - start))
    }

    /// The endpoint and key to read from: the named endpoint's location,
    /// else the first of the file's locations that is configured.
    fn source(&self, file: &File) -> Result<(Arc<Endpoint>, object_store::path::Path), Outcome> {
        let x = &self.ctx.xattrs;
        let all = x.locations(file).map_err(|e| failure("reading xattrs", e))?;
        let found = match &self.args.endpoint {
            Some(e) => all.into_iter().find(|(name, _)| name == e),
            None => all
                .into_iter()
                .find(|(name, _)| self.ctx.config.endpoints.contains_key(name)),
        };
        let (endpoint, key) = found.ok_or_else(|| Outcome::failed("file has no location on a configured endpoint"))?;
        let target = self
            .ctx
            .endpoint(&endpoint)
            .map_err(|e| Outcome::failed(e.to_string()))?;
        let key = parse_key(&endpoint, &key)?;
        Ok((target, key))
    }
}

/// Whether the file at `path` holds exactly what `ours` holds.
fn same_content(ours: &File, path: &[u8]) -> io::Result<bool> {
    let theirs = match super::open_file(path, false) {
        Ok(f) => f,
        Err(_) => return Ok(false),
    };
    if theirs.metadata()?.len() != ours.metadata()?.len() || !theirs.metadata()?.is_file() {
        return Ok(false);
    }
    let (mut a, mut b) = (ours, &theirs);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    std::io::Seek::rewind(&mut a)?;
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

fn failure(what: &str, e: io::Error) -> Outcome {
    Outcome::failed(format!("{what}: {e}"))
}
