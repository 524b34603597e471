//! `reverse_stub` (`dynamo.tasks.reverse_stub`): create a stub, or with
//! `hydrate` a whole premigrated file, from an object alone, with no local
//! copy needed (the other half of a site-to-site sync).
//!
//! The file is built under a temporary name in its directory: size, the
//! resident head (`stub_size` bytes) or all the data (verified against the
//! object's hash), mode, owner, user xattrs, ferry's location and state,
//! then times; it is flushed and renamed into place. It never replaces a
//! file that appeared meanwhile, and replaces an existing different file
//! only as `overwrite` or `conflict_preference` allow. Missing parent
//! directories are created (mode 0755).

use super::lock::{LockLevel, Locking};
use super::xattrs::{HsmState, Residency};
use super::{
    OpContext, OpError, Reachable, Snap, Step, chosen_times, for_each_window, open_file, set_times, write_sparse,
};
use crate::endpoint::{Endpoint, ObjectMeta, TransferError};
use crate::sys::{Base, create_at, rename_at, unlink_at};
use crate::task::{ArgumentError, Outcome, PathObject};
use object_store::path::Path as ObjPath;
use serde::Deserialize;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, fchown};
use std::path::Path;
use std::sync::Arc;

/// The seed's `reverse_stub` arguments.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReverseStubArgs {
    /// Endpoint holding the objects; when not named, for each path the
    /// endpoint whose root holds it.
    pub endpoint: Option<String>,
    /// Write all the data (a premigrated file) instead of a stub.
    pub hydrate: bool,
    /// Bytes kept at the start of a stub; files no larger are written
    /// whole.
    pub stub_size: u64,
    /// Do not check a hydrated file's hash.
    pub skip_hash: bool,
    /// Replace an existing local file whose content differs.
    pub overwrite: bool,
    /// Retry a file once after a stale file handle (`stub` or `all`).
    pub retry_stale: Option<String>,
    /// Locking level (default `implicit`): the lock is on a local file
    /// being replaced.
    pub lock_level: Option<LockLevel>,
    /// Set the access time to now.
    pub update_atime: bool,
    /// Set the modification time to now.
    pub update_mtime: bool,
    /// When a different local file exists: `newest` (the newer mtime
    /// wins), `local` (keep it) or `ignore` (take the object's).
    pub conflict_preference: Option<String>,
    /// Paths per sequential chunk.
    pub sub_batch: Option<usize>,
}

/// Creates stubs for `paths`, one outcome per path in order. Without a
/// named endpoint each path's object is looked for on the endpoint whose
/// root holds it, as migrate chose it ([`super::route::by_endpoint`]).
pub fn reverse_stub(ctx: &OpContext, args: &ReverseStubArgs, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    if let Some(p) = args.conflict_preference.as_deref()
        && !matches!(p, "newest" | "local" | "ignore")
    {
        let why = format!("must be newest, local or ignore, not {p:?}");
        return Err(ArgumentError::invalid("conflict_preference", why).into());
    }
    if let Some(r) = args.retry_stale.as_deref()
        && !matches!(r, "stub" | "all")
    {
        let why = format!("must be stub or all, not {r:?}");
        return Err(ArgumentError::invalid("retry_stale", why).into());
    }
    super::route::by_endpoint(ctx, args.endpoint.as_deref(), paths, |name, group| {
        stub_from(ctx, args, name, group)
    })
}

/// Creates stubs for `paths` from the objects on `endpoint`.
fn stub_from(
    ctx: &OpContext,
    args: &ReverseStubArgs,
    endpoint: &str,
    paths: &[PathObject],
) -> Result<Vec<Outcome>, OpError> {
    let job = Job {
        ctx,
        args,
        target: ctx.endpoint(endpoint)?,
        locking: Locking::new(args.lock_level, LockLevel::Implicit, false)?,
    };
    Ok(for_each_window(ctx, args.sub_batch, paths, |_, obj, _| {
        let mut result = job.one(&obj.path);
        let stale = matches!(&result, Err(o) if o.message.as_deref().is_some_and(|m| m.contains("os error 116")));
        if stale && args.retry_stale.is_some() {
            result = job.one(&obj.path);
        }
        match result {
            Ok(bytes) => Step::Done(Outcome::processed(), bytes),
            Err(o) => Step::Done(o, 0),
        }
    }))
}

struct Job<'a> {
    ctx: &'a OpContext,
    args: &'a ReverseStubArgs,
    target: Arc<Endpoint>,
    locking: Locking,
}

impl Job<'_> {
    /// Builds one file; `Ok` carries the bytes written.
    fn one(&self, path: &[u8]) -> Result<u64, Outcome> {
        let (mut key, _) = self.target.key(path).map_err(|e| Outcome::failed(e.to_string()))?;
        let mut head = self.target.head(&key);
        if let (Ok(None), Some(old)) = (&head, self.target.legacy_key(path)) {
            // A store written by ferry up to 53a13dd keeps long names whole.
            head = self.target.head(&old);
            key = old;
        }
        let meta = match head {
            Ok(Some(o)) => match o.meta {
                Some(Ok(m)) if m.size == o.size => m,
                Some(Ok(_)) => return Err(Outcome::failed(format!("object at {key} does not match its metadata"))),
                Some(Err(e)) => return Err(Outcome::failed(format!("object at {key}: {e}"))),
                None => {
                    return Err(Outcome::failed(format!(
                        "object at {key} has no ferry metadata, so no verifiable stub can be made"
                    )));
                }
            },
            Ok(None) => {
                return Err(Outcome::failed(format!(
                    "endpoint `{}` has no object at {key}",
                    self.target.name()
                )));
            }
            Err(e) => return Err(Outcome::failed(e.to_string())),
        };
        let existing = match open_file(path, false) {
            Ok(f) => Some(f),
            Err(super::OpenError::Missing) => None,
            Err(super::OpenError::Symlink) => return Err(Outcome::failed("a symbolic link is in the way")),
            Err(super::OpenError::Directory) => return Err(Outcome::failed("a directory is in the way")),
            Err(super::OpenError::Other(e)) => return Err(Outcome::failed(format!("cannot open: {e}"))),
        };
        let before = match &existing {
            Some(f) => Some(self.conflict(f, &key, &meta)?),
            None => None,
        };
        let (mut tmp, written) = self.build(path, &key, &meta)?;
        if let (Some(f), Some(before)) = (&existing, before) {
            self.locking.at_commit(f).map_err(Outcome::from)?;
            let now = Snap::of(f).map_err(|e| failure("stat", e))?;
            if !before.unchanged(&now) {
                return Err(Outcome::failed("local file changed meanwhile; left as it was"));
            }
            tmp.persist(path, false)
                .map_err(|e| failure("renaming into place", e))?;
        } else {
            tmp.persist(path, true).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Outcome::failed("a file appeared at the path meanwhile; left as it was")
                } else {
                    failure("renaming into place", e)
                }
            })?;
        }
        tmp.dir.sync_all().map_err(|e| failure("flushing the directory", e))?;
        Ok(written)
    }

    /// Decides about an existing local file: `Ok` with its facts when it
    /// is to be replaced, else the outcome that keeps it.
    fn conflict(&self, f: &File, key: &ObjPath, meta: &ObjectMeta) -> Result<Snap, Outcome> {
        self.locking.at_open(f).map_err(Outcome::from)?;
        let st = Snap::of(f).map_err(|e| failure("stat", e))?;
        if !st.is_file() {
            return Err(Outcome::failed("something other than a regular file is in the way"));
        }
        let x = &self.ctx.xattrs;
        if let Ok(Some(Ok(s))) = x.state(f)
            && s.hash == meta.hash
            && s.size == st.size
            && s.mtime == st.mtime
            && x.location(f, self.target.name()).ok().flatten().as_deref() == Some(key.as_ref().as_bytes())
        {
            return Err(Outcome::skipped(format!(
                "already a {} copy of this object",
                s.residency.as_str()
            )));
        }
        let same_content = st.size == meta.size
            && !matches!(x.state(f), Ok(Some(Ok(s))) if s.residency == Residency::Migrated)
            && crate::endpoint::hash_file(f, st.size).map_err(|e| failure("reading", e))? == meta.hash;
        if same_content {
            return Err(Outcome::skipped(
                "local file has the same content (only metadata may differ)",
            ));
        }
        let replace = match self.args.conflict_preference.as_deref() {
            Some("local") => false,
            Some("newest") => meta.mtime > st.mtime,
            Some(_) => true,
            None if self.args.overwrite => true,
            None => {
                return Err(Outcome::failed(
                    "a different local file exists; set overwrite or conflict_preference to replace it",
                ));
            }
        };
        if replace {
            Ok(st)
        } else {
            Err(Outcome::skipped("kept the local file (conflict_preference)"))
        }
    }

    /// Builds the file under a temporary name beside `path`.
    fn build(&self, path: &[u8], key: &ObjPath, meta: &ObjectMeta) -> Result<(Building, u64), Outcome> {
        let reachable = Reachable::new(path, true).map_err(|e| failure("creating parent directories", e))?;
        let dir = reachable.path().parent().unwrap_or(Path::new("/"));
        let tmp = Building::create(dir).map_err(|e| failure("creating the file", e))?;
        let f = &tmp.file;
        let whole = self.args.hydrate || meta.size <= self.args.stub_size;
        let remote = |e: TransferError| Outcome::failed(format!("download from `{}` failed: {e}", self.target.name()));
        let written = if whole {
            let mut offset = 0u64;
            let hash = self
                .target
                .download(key, meta.size, &mut |chunk| {
                    write_sparse(f, offset, chunk)?;
                    offset += chunk.len() as u64;
                    Ok(())
                })
                .map_err(remote)?;
            if !self.args.skip_hash && hash != meta.hash {
                return Err(Outcome::failed(format!(
                    "hash mismatch: object at {key} is corrupt (blake3 {}, expected {})",
                    hash.to_hex(),
                    meta.hash.to_hex()
                )));
            }
            meta.size
        } else {
            let head = self
                .target
                .download_head(key, self.args.stub_size.min(meta.size))
                .map_err(|e| Outcome::failed(e.to_string()))?;
            write_sparse(f, 0, &head).map_err(|e| failure("writing", e))?;
            head.len() as u64
        };
        f.set_len(meta.size).map_err(|e| failure("setting the size", e))?;
        let x = &self.ctx.xattrs;
        let io = |e| failure("setting metadata", e);
        fchown(f, Some(meta.uid), Some(meta.gid)).map_err(io)?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))
            .map_err(io)?;
        for (name, value) in &meta.xattrs {
            super::xattrs::set_explained(f, OsStr::from_bytes(name), value).map_err(io)?;
        }
        x.set_location(f, self.target.name(), key.as_ref()).map_err(io)?;
        let (atime, mtime) = chosen_times(self.args.update_atime, self.args.update_mtime, meta.atime, meta.mtime);
        let state = HsmState {
            residency: if whole {
                Residency::Premigrated
            } else {
                Residency::Migrated
            },
            size: meta.size,
            mtime,
            stub_size: self.args.stub_size,
            hash: meta.hash,
        };
        x.set_state(f, &state).map_err(io)?;
        set_times(f, atime, mtime).map_err(io)?;
        f.sync_all().map_err(|e| failure("flushing", e))?;
        Ok((tmp, written))
    }
}

/// A file being built under a temporary name in its directory. It is made
/// and renamed relative to the directory's descriptor, so the temporary
/// name never lengthens the path: a file whose path is just under PATH_MAX
/// can be rebuilt too. Dropped unrenamed, it is removed. `recall_bytes`
/// builds its range files the same way.
pub(super) struct Building {
    pub(super) dir: File,
    name: CString,
    pub(super) file: File,
    renamed: bool,
}

impl Building {
    pub(super) fn create(dir: &Path) -> io::Result<Building> {
        let dir = File::open(dir)?;
        loop {
            let name = format!(
                ".ferry-reverse-stub.{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let name = CString::new(name).expect("no NUL");
            match create_at(Base::Dir(dir.as_fd()), &name, 0o600) {
                Ok(file) => {
                    return Ok(Building {
                        dir,
                        name,
                        file,
                        renamed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Renames the file to the last component of `path` (in the same
    /// directory), replacing what is there unless `no_replace`.
    pub(super) fn persist(&mut self, path: &[u8], no_replace: bool) -> io::Result<()> {
        let last = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        let last = CString::new(last).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let dir = Base::Dir(self.dir.as_fd());
        rename_at(dir, &self.name, dir, &last, no_replace)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = unlink_at(Base::Dir(self.dir.as_fd()), &self.name, false);
        }
    }
}

fn failure(what: &str, e: io::Error) -> Outcome {
    Outcome::failed(format!("{what}: {e}"))
}
