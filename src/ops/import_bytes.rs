//! `import_bytes` (`dynamo.tasks.import_bytes`): write a byte range of an
//! endpoint's object, named by key, to a new local file.
//!
//! Each input is one object's key (relative to the endpoint's prefix; the
//! task is "incompatible with recursive discovery", so never a prefix).
//! Bytes `remote_offset_start..remote_offset_end` (default: the whole
//! object) go to a new file at the key's path under the endpoint's root,
//! or under `location` as for an import ([`super::import`]). The file is
//! written under a temporary name, gets the object's owner and mode (or
//! `default_uid`/`default_gid` and `default_mode_file` for an object with
//! no ferry metadata), is flushed and renamed into place; it never replaces
//! a file at the path. It is a plain file: a range is not the object, so
//! no location or state is recorded. Missing parents are made with
//! `default_mode_dir`.

use super::import::{Id, destination, input_key, location_arg};
use super::lock::LockLevel;
use super::recall_bytes::Mode;
use super::{OpContext, OpError, par_map};
use crate::endpoint::{Endpoint, EntryKind};
use crate::sys::{Base, create_at, mkdir_at, rename_at, unlink_at};
use crate::task::{ArgumentError, Outcome, PathObject};
use serde::Deserialize;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt, fchown};

/// The mode of a file made from an object with no ferry metadata.
const DEFAULT_MODE_FILE: u32 = 0o644;
/// The mode of a missing parent directory.
const DEFAULT_MODE_DIR: u32 = 0o755;

/// The seed's `import_bytes` arguments.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImportBytesArgs {
    /// Endpoint holding the objects (required).
    pub endpoint: Option<String>,
    /// Locking level; accepted for the seed's contract (the file is new,
    /// so nothing is locked).
    pub lock_level: Option<LockLevel>,
    /// Absolute local directory to write under, instead of the endpoint's
    /// local root.
    pub location: Option<String>,
    /// First byte of the range.
    pub remote_offset_start: u64,
    /// End of the range (exclusive); the object's size when not given.
    pub remote_offset_end: Option<u64>,
    /// Owner when the object records none.
    pub default_uid: Option<Id>,
    /// Group when the object records none.
    pub default_gid: Option<Id>,
    /// Mode of the file when the object records none (octal digits in a
    /// string, or a number).
    pub default_mode_file: Option<Mode>,
    /// Mode of missing parent directories.
    pub default_mode_dir: Option<Mode>,
}

/// Writes the asked range of each input's object to a new local file.
pub fn import_bytes(ctx: &OpContext, args: &ImportBytesArgs, inputs: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    let endpoint = args
        .endpoint
        .as_deref()
        .ok_or_else(|| ArgumentError::invalid("endpoint", "required: the endpoint to read from"))?;
    let id = |i: &Option<Id>, name| i.as_ref().map(|i| i.value(name)).transpose();
    let mode = |m: &Option<Mode>, default| m.map_or(default, |m| m.0);
    let job = Job {
        target: ctx.endpoint(endpoint)?,
        location: location_arg(&args.location)?,
        start: args.remote_offset_start,
        end: args.remote_offset_end,
        owner: (
            id(&args.default_uid, "default_uid")?.unwrap_or(0),
            id(&args.default_gid, "default_gid")?.unwrap_or(0),
        ),
        mode_file: mode(&args.default_mode_file, DEFAULT_MODE_FILE),
        mode_dir: mode(&args.default_mode_dir, DEFAULT_MODE_DIR),
    };
    Ok(par_map(inputs.iter().collect(), ctx.threads, |input: &PathObject| {
        let (outcome, bytes) = match job.one(&input.path) {
            Ok(n) => (Outcome::processed(), n),
            Err(o) => (o, 0),
        };
        ctx.count(&outcome, bytes);
        outcome
    }))
}

struct Job {
    target: std::sync::Arc<Endpoint>,
    location: Option<Vec<u8>>,
    start: u64,
    end: Option<u64>,
    owner: (u32, u32),
    mode_file: u32,
    mode_dir: u32,
}

impl Job {
    fn one(&self, input: &[u8]) -> Result<u64, Outcome> {
        let (rel, parent) = input_key(input)?;
        let key = self.target.store_key(rel).map_err(|e| Outcome::failed(e.to_string()))?;
        let obj = self
            .target
            .head(&key)
            .map_err(|e| Outcome::failed(e.to_string()))?
            .ok_or_else(|| Outcome::failed(format!("endpoint `{}` has no object at {key}", self.target.name())))?;
        let (mode, uid, gid, recorded) = match obj.meta {
            Some(Ok(m)) if m.kind == EntryKind::File => (m.mode & 0o7777, m.uid, m.gid, m.path),
            Some(Ok(_)) => return Err(Outcome::failed(format!("object at {key} holds no file's data"))),
            Some(Err(e)) => return Err(Outcome::failed(format!("object at {key}: {e}"))),
            None => (self.mode_file, self.owner.0, self.owner.1, None),
        };
        let end = self.end.unwrap_or(obj.size);
        if self.start > end || end > obj.size {
            return Err(Outcome::failed(format!(
                "bytes {}..{end} are not within the object's {} bytes",
                self.start, obj.size
            )));
        }
        let path = destination(
            &self.target,
            self.location.as_deref(),
            &key,
            recorded.as_deref(),
            false,
            parent,
        )?;
        let (dir_path, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i.max(1)], &path[i + 1..]),
            None => return Err(Outcome::failed("no absolute destination")),
        };
        self.make_dirs(dir_path)
            .map_err(|e| failure("creating parent directories", e))?;
        let dir = File::open(OsStr::from_bytes(dir_path)).map_err(|e| failure("opening the directory", e))?;
        let at = Base::Dir(dir.as_fd());
        let tmp = CString::new(super::entry::temp_name()).expect("no NUL");
        let name = CString::new(name).map_err(|_| Outcome::failed("the path holds a NUL byte"))?;
        let f = create_at(at, &tmp, 0o600).map_err(|e| failure("creating the file", e))?;
        let written = (|| {
            let mut offset = 0u64;
            self.target
                .download_range(&key, self.start, end, &mut |chunk| {
                    f.write_all_at(chunk, offset)?;
                    offset += chunk.len() as u64;
                    Ok(())
                })
                .map_err(|e| Outcome::failed(format!("reading from `{}` failed: {e}", self.target.name())))?;
            let n = offset;
            fchown(&f, Some(uid), Some(gid)).map_err(|e| failure("setting the owner", e))?;
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| failure("setting the mode", e))?;
            f.sync_all().map_err(|e| failure("flushing", e))?;
            rename_at(at, &tmp, at, &name, true).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Outcome::failed("a file exists at the path; left as it was")
                } else {
                    failure("renaming into place", e)
                }
            })?;
            dir.sync_all().map_err(|e| failure("flushing the directory", e))?;
            Ok(n)
        })();
        if written.is_err() {
            // Best effort: a leftover temporary file holds only a copy.
            let _ = unlink_at(at, &tmp, false);
        }
        written
    }

    /// Makes the missing directories of `dir` with the default mode.
    fn make_dirs(&self, dir: &[u8]) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = dir;
        while fs::symlink_metadata(OsStr::from_bytes(at)).is_err() {
            missing.push(at);
            match at.iter().rposition(|&b| b == b'/') {
                Some(i) if i > 0 => at = &at[..i],
                _ => break,
            }
        }
        for d in missing.into_iter().rev() {
            let c = CString::new(d).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            if mkdir_at(Base::Cwd, &c, 0o700)? {
                fs::set_permissions(OsStr::from_bytes(d), fs::Permissions::from_mode(self.mode_dir))?;
            }
        }
        Ok(())
    }
}

fn failure(what: &str, e: io::Error) -> Outcome {
    Outcome::failed(format!("{what}: {e}"))
}
