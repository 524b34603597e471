//! The directory store: objects are files under the endpoint's directory
//! (local or NFS), named by their keys, with their metadata in one xattr.
//!
//! Every write is staged and committed by one `rename`, so an object is
//! either absent or complete with its metadata:
//!
//! 1. the data goes to `#staging/<uuid>`, created exclusively and held
//!    under an exclusive `flock` while it is written (a check can tell a
//!    live upload from a dead one's leftovers: the kernel drops the lock
//!    of a process that dies);
//! 2. the metadata document goes on that file as the xattr
//!    `<prefix>object`; when the filesystem refuses it as too big (ext4
//!    keeps all of an inode's xattrs in one block, XFS caps a value at
//!    64 KiB, NFS servers vary) or has no user xattrs, the document goes to
//!    a sidecar `#staging/<uuid>#m`, and the xattr holds a short pointer
//!    with the sidecar's length and hash instead;
//! 3. the sidecar, if any, is renamed to `<key>#m`, then the object to
//!    `<key>`: the object's arrival commits it with its metadata.
//!
//! A crash leaves at most a staging file (no lock held) or a sidecar whose
//! object never arrived; `ferry endpoint check` finds both. Names under
//! `#staging` and sidecar names never collide with keys ([`super::key`]).
//! Durability is [`DirStore::sync`]'s `syncfs`, one call per batch.
//!
//! A copy of an object within the store ([`DirStore::copy`]) is staged and
//! committed the same way, with the object's metadata as stored.
//!
//! Uploads, reads and removals open every path relative to the store's
//! directory descriptor, so the store's own path length never adds to a
//! key's.

use super::key::{self, SIDECAR_SUFFIX};
use super::meta::{MetaDoc, MetaError, ObjectMeta};
use super::throttle::Throttle;
use super::transfer::{EndpointError, PartPool, RemoteObject, TransferError, check_range, hash_beside, read_buffer};
use crate::entry::FileType;
use crate::sys::{
    Base, create_at, lock_exclusive, mkdir_at, open_file_at, open_nofollow_at, rename_at, syncfs, try_lock_exclusive,
    unlink_at,
};
use crate::walk::{SnapshotDirs, Walk, WalkEvent, WalkOptions};
use bytes::Bytes;
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use xattr::FileExt as _;

/// The directory holding uploads in progress, at the store's top. A key
/// component never starts with `#` unless it is a hashed name, which ends
/// in 64 hex digits, so no key can name it.
pub const STAGING: &str = "#staging";

/// The largest sidecar read back (documents are far smaller: the user
/// xattrs a source filesystem allows, base64-encoded).
const SIDECAR_MAX: u64 = 64 << 20;

/// Bytes copied per read and write of an upload.
const CHUNK: u64 = 4 << 20;

/// An open directory store.
pub(super) struct DirStore {
    name: String,
    path: PathBuf,
    dir: File,
    meta_xattr: String,
    /// `#staging` exists (made on the first upload).
    staging: std::sync::OnceLock<()>,
    /// The agent's transfer budget, if `bandwidth` caps it.
    pub(super) throttle: Option<Arc<Throttle>>,
}

/// A write in progress: a file under [`STAGING`] and its staged sidecar,
/// renamed to their key together by [`DirStore::commit`].
struct Staged {
    name: String,
    file: File,
    sidecar: Option<String>,
}

/// One entry a [`DirStore::survey`] found, by its path relative to the
/// store.
#[derive(Debug)]
pub(super) struct Found {
    pub rel: String,
    pub size: u64,
    pub modified: SystemTime,
    pub kind: FoundKind,
}

/// What a surveyed entry is.
#[derive(Debug)]
pub(super) enum FoundKind {
    /// A staging file; `live` while an upload holds its lock.
    Staging { live: bool },
    /// A staging file of the object_store layout ferry used up to 53a13dd
    /// (`<name>#<digits>` beside the object).
    LegacyStaging,
    /// An object, with its metadata as committed (`None`: none at all).
    Object(Option<Result<ObjectMeta, MetaError>>),
    /// A metadata sidecar; `orphan` when no object names it.
    Sidecar { orphan: bool },
}

impl DirStore {
    /// Opens the store at `path`; `meta_xattr` names the metadata xattr.
    pub fn open(name: &str, path: &Path, meta_xattr: String) -> Result<DirStore, EndpointError> {
        let err = |m: String| EndpointError::new(name, m);
        let dir = File::open(path).map_err(|e| err(format!("directory {}: {e}", path.display())))?;
        if !dir.metadata().map_err(|e| err(e.to_string()))?.is_dir() {
            return Err(err(format!("{} is not a directory", path.display())));
        }
        Ok(DirStore {
            name: name.to_string(),
            path: path.to_path_buf(),
            dir,
            meta_xattr,
            staging: std::sync::OnceLock::new(),
            throttle: None,
        })
    }

    fn base(&self) -> Base<'_> {
        Base::Dir(self.dir.as_fd())
    }

    fn err(&self, message: impl std::fmt::Display) -> EndpointError {
        EndpointError::new(&self.name, message.to_string())
    }

    /// An error about `rel` in the store, with its full path.
    fn io_err(&self, what: &str, rel: &str, e: io::Error) -> EndpointError {
        self.err(format!("{what} {}/{rel}: {e}", self.path.display()))
    }

    /// Opens the object at `key`, with what `fstat` said of it: `None` if
    /// there is no regular file there.
    fn open_object(&self, key: &str) -> Result<Option<(File, fs::Metadata)>, EndpointError> {
        match open_file_at(self.base(), &c_name(key)) {
            Ok(fd) => {
                let f = File::from(fd);
                let md = f.metadata().map_err(|e| self.io_err("stat", key, e))?;
                Ok(md.is_file().then_some((f, md)))
            }
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(self.io_err("opening", key, e)),
        }
    }

    /// The bytes of the sidecar of `key`, if there is one.
    fn read_sidecar(&self, key: &str) -> Result<Option<Vec<u8>>, EndpointError> {
        let name = format!("{key}{SIDECAR_SUFFIX}");
        let Some((f, _)) = self.open_object(&name)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        f.take(SIDECAR_MAX)
            .read_to_end(&mut buf)
            .map_err(|e| self.io_err("reading", &name, e))?;
        Ok(Some(buf))
    }

    /// The metadata document (or pointer) on an object, as stored.
    fn read_doc(&self, f: &File, key: &str) -> Result<Option<Result<MetaDoc, MetaError>>, EndpointError> {
        match f.get_xattr(&self.meta_xattr) {
            Ok(v) => Ok(v.map(|v| MetaDoc::from_json(&v))),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
            Err(e) => Err(self.io_err("reading the metadata of", key, e)),
        }
    }

    /// The metadata an object commits: its document, the sidecar its
    /// pointer names, or (on a filesystem without user xattrs) a sidecar
    /// alone.
    fn metadata(&self, f: &File, key: &str) -> Result<Option<Result<ObjectMeta, MetaError>>, EndpointError> {
        Ok(match self.read_doc(f, key)? {
            Some(Ok(MetaDoc::Inline(m))) => Some(Ok(m)),
            Some(Ok(ptr)) => Some(match self.read_sidecar(key)? {
                Some(bytes) => ptr.resolve(&bytes),
                None => Err(MetaError::missing_sidecar()),
            }),
            Some(Err(e)) => Some(Err(e)),
            None => self.read_sidecar(key)?.map(|b| ObjectMeta::from_json(&b)),
        })
    }

    /// What the store holds at `key`.
    pub fn head(&self, key: &str) -> Result<Option<RemoteObject>, EndpointError> {
        let Some((f, md)) = self.open_object(key)? else {
            return Ok(None);
        };
        let meta = self.metadata(&f, key)?;
        Ok(Some(RemoteObject {
            size: md.len(),
            meta,
            modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }))
    }

    /// Copies the first `meta.size` bytes of `file` to `key` with their
    /// hash in `meta`, committing data and metadata in one rename.
    pub fn upload(&self, key: &str, file: &File, mut meta: ObjectMeta) -> Result<ObjectMeta, TransferError> {
        let mut staged = self.stage()?;
        let result = (|| {
            meta.hash = copy_hashed(
                file,
                &staged.file,
                meta.size,
                &PartPool::throttled(self.throttle.clone()),
            )
            .map_err(|e| match e {
                Copy::Read(e) => TransferError::Local(e),
                Copy::Write(e) => TransferError::Remote(self.io_err("writing", &staged.name, e)),
            })?;
            let doc = meta.to_json();
            match staged.file.set_xattr(&self.meta_xattr, doc.as_bytes()) {
                Ok(()) => {}
                Err(e) if too_big_for_xattrs(&e) => {
                    self.stage_sidecar(&mut staged, doc.as_bytes())?;
                    let ptr = MetaDoc::pointer_to(doc.as_bytes()).to_json();
                    match staged.file.set_xattr(&self.meta_xattr, ptr.as_bytes()) {
                        Ok(()) => {}
                        // No user xattrs here at all: the sidecar alone is the
                        // metadata.
                        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                        Err(e) => {
                            return Err(self
                                .io_err(
                                    &format!("recording a {}-byte metadata pointer on", ptr.len()),
                                    &staged.name,
                                    e,
                                )
                                .into());
                        }
                    }
                }
                Err(e) => {
                    return Err(self
                        .io_err(
                            &format!("recording {} bytes of metadata on", doc.len()),
                            &staged.name,
                            e,
                        )
                        .into());
                }
            }
            self.commit(&mut staged, key)?;
            Ok(meta)
        })();
        if result.is_err() {
            self.discard(&staged);
        }
        result
    }

    /// Copies the object at `from` to `to` with its metadata as stored
    /// (the document, or the pointer and its sidecar), through a staging
    /// file committed by one rename like an upload. The bytes are hashed
    /// on the way and, when the metadata is readable, checked against it:
    /// a copy of an object that does not match its metadata fails and
    /// leaves nothing at `to`. Durable after [`DirStore::sync`].
    pub fn copy(&self, from: &str, to: &str) -> Result<(), TransferError> {
        let (src, md) = self
            .open_object(from)?
            .ok_or_else(|| self.err(format!("no object at {from}")))?;
        let size = md.len();
        let doc = match src.get_xattr(&self.meta_xattr) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => None,
            Err(e) => return Err(self.io_err("reading the metadata of", from, e).into()),
        };
        let sidecar = self.read_sidecar(from)?;
        let expected = self.metadata(&src, from)?.and_then(Result::ok).map(|m| m.hash);
        let mut staged = self.stage()?;
        let result = (|| {
            let hash = copy_hashed(&src, &staged.file, size, &PartPool::default()).map_err(|e| match e {
                Copy::Read(e) => TransferError::Remote(self.io_err("reading", from, e)),
                Copy::Write(e) => TransferError::Remote(self.io_err("writing", &staged.name, e)),
            })?;
            if let Some(want) = expected
                && want != hash
            {
                return Err(TransferError::Mismatch(format!(
                    "object at {from} does not match its metadata (blake3 {}, recorded {})",
                    hash.to_hex(),
                    want.to_hex()
                )));
            }
            if let Some(doc) = &doc {
                staged
                    .file
                    .set_xattr(&self.meta_xattr, doc)
                    .map_err(|e| self.io_err("recording the metadata of", &staged.name, e))?;
            }
            if let Some(bytes) = &sidecar {
                self.stage_sidecar(&mut staged, bytes)?;
            }
            Ok(self.commit(&mut staged, to)?)
        })();
        if result.is_err() {
            self.discard(&staged);
        }
        result
    }

    /// A new staging file under [`STAGING`], locked while it is written.
    fn stage(&self) -> Result<Staged, EndpointError> {
        if self.staging.get().is_none() {
            mkdir_at(self.base(), &c_name(STAGING), 0o700).map_err(|e| self.io_err("creating", STAGING, e))?;
            let _ = self.staging.set(());
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{STAGING}/{id}");
        let file = create_at(self.base(), &c_name(&name), 0o600).map_err(|e| self.io_err("creating", &name, e))?;
        let staged = Staged {
            name,
            file,
            sidecar: None,
        };
        // Only a check's probe can hold the lock of a fresh file, and
        // only for a moment: wait for it. (A check with no grace period
        // can still take a file in the instant between its creation and
        // this lock; the write then fails, and nothing is lost.)
        if let Err(e) = lock_exclusive(&staged.file) {
            self.discard(&staged);
            return Err(self.io_err("locking", &staged.name, e));
        }
        Ok(staged)
    }

    /// Writes `doc` to the sidecar of the staged object.
    fn stage_sidecar(&self, staged: &mut Staged, doc: &[u8]) -> Result<(), EndpointError> {
        let side = format!("{}{SIDECAR_SUFFIX}", staged.name);
        let mut f = create_at(self.base(), &c_name(&side), 0o600)
            .map_err(|e| self.io_err("creating the metadata sidecar", &side, e))?;
        staged.sidecar = Some(side.clone());
        f.write_all(doc)
            .map_err(|e| self.io_err("writing the metadata sidecar", &side, e))
    }

    /// Renames the staged sidecar, if any, to `<key>#m`, then the staged
    /// object to `key`: the object's arrival commits it with its metadata.
    /// An object replaced in place loses a sidecar it no longer names.
    ///
    /// The object being replaced is held open across the renames. Its
    /// blocks are freed when its last reference goes, and without this
    /// handle that is inside `rename`, under the two directories' locks
    /// and the filesystem-wide lock of a rename across directories (every
    /// staged object comes from `#staging/`): freeing a large object, or a
    /// filesystem mounted with `discard` (which trims each freed extent
    /// synchronously), then stalls every other commit on the endpoint.
    /// With it the freeing is this call's `close`, outside any lock. On a
    /// 2-core VM's ext4 with `discard`, 2,000 objects replaced by 10
    /// threads: 31 % of the threads' waits were those trims, and most of
    /// the rest waited on the locks they held (perf `sched_switch`).
    fn commit(&self, staged: &mut Staged, key: &str) -> Result<(), EndpointError> {
        let key_c = c_name(key);
        let side_c = c_name(&format!("{key}{SIDECAR_SUFFIX}"));
        let replaced = open_nofollow_at(self.base(), &key_c).ok();
        if let Some(side) = &staged.sidecar {
            self.rename_into(&c_name(side), &side_c, key)
                .map_err(|e| self.io_err("committing the metadata sidecar of", key, e))?;
            staged.sidecar = Some(format!("{key}{SIDECAR_SUFFIX}"));
        }
        self.rename_into(&c_name(&staged.name), &key_c, key)
            .map_err(|e| self.io_err("committing", key, e))?;
        // Looked up first: an unlink takes the directory's lock even to
        // find nothing, and a sidecar is rare.
        if staged.sidecar.is_none() && open_nofollow_at(self.base(), &side_c).is_ok() {
            let _ = unlink_at(self.base(), &side_c, false);
        }
        drop(replaced);
        Ok(())
    }

    /// Renames `from` to `to` (the object or sidecar of `key`), making the
    /// directories above `key` only when the rename finds one missing: a
    /// `mkdir` of a directory that exists still takes its parent's lock.
    fn rename_into(&self, from: &CStr, to: &CStr, key: &str) -> io::Result<()> {
        match rename_at(self.base(), from, self.base(), to, false) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && key.contains('/') => {
                self.make_parents(key)?;
                rename_at(self.base(), from, self.base(), to, false)
            }
            other => other,
        }
    }

    /// Best effort after a failed write: what is left is staging debris a
    /// check removes.
    fn discard(&self, staged: &Staged) {
        let _ = unlink_at(self.base(), &c_name(&staged.name), false);
        if let Some(side) = &staged.sidecar {
            let _ = unlink_at(self.base(), &c_name(side), false);
        }
    }

    /// Makes the directories above `key`.
    fn make_parents(&self, key: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = key[end..].find('/') {
            end += i;
            mkdir_at(self.base(), &c_name(&key[..end]), 0o755)?;
            end += 1;
        }
        Ok(())
    }

    /// Streams the object at `key` to `deliver` in order.
    pub fn download(
        &self,
        key: &str,
        deliver: &mut dyn FnMut(&[u8]) -> Result<(), TransferError>,
    ) -> Result<(), TransferError> {
        let (mut f, md) = self
            .open_object(key)?
            .ok_or_else(|| self.err(format!("no object at {key}")))?;
        let mut buf = read_buffer(md.len());
        loop {
            let n = f.read(&mut buf).map_err(|e| self.io_err("reading", key, e))?;
            if n == 0 {
                return Ok(());
            }
            deliver(&buf[..n])?;
        }
    }

    /// The first `len` bytes of the object at `key`.
    pub fn read_head(&self, key: &str, len: u64) -> Result<Bytes, EndpointError> {
        let (f, _) = self
            .open_object(key)?
            .ok_or_else(|| self.err(format!("no object at {key}")))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, 0)
            .map_err(|e| self.io_err(&format!("reading {len} bytes of"), key, e))?;
        Ok(Bytes::from(buf))
    }

    /// Streams bytes `start..end` of the object at `key` to `deliver` in
    /// order; a range past the object's end is refused before anything is
    /// read.
    pub fn download_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        deliver: &mut dyn FnMut(&[u8]) -> Result<(), TransferError>,
    ) -> Result<(), TransferError> {
        let (f, md) = self
            .open_object(key)?
            .ok_or_else(|| self.err(format!("no object at {key}")))?;
        check_range(start, end, md.len()).map_err(|m| self.err(format!("{key}: {m}")))?;
        let mut buf = vec![0u8; CHUNK.min(end - start) as usize];
        let mut off = start;
        while off < end {
            let n = CHUNK.min(end - off) as usize;
            f.read_exact_at(&mut buf[..n], off)
                .map_err(|e| self.io_err(&format!("reading {n} bytes at offset {off} of"), key, e))?;
            deliver(&buf[..n])?;
            off += n as u64;
        }
        Ok(())
    }

    /// Removes the object at `key`, then its sidecar; absent is not an
    /// error.
    pub fn delete(&self, key: &str) -> Result<(), EndpointError> {
        self.remove(key)?;
        self.remove(&format!("{key}{SIDECAR_SUFFIX}"))
    }

    /// Removes one file by its path relative to the store (an object, a
    /// sidecar, a surveyed leftover); absent is not an error.
    pub fn remove(&self, rel: &str) -> Result<(), EndpointError> {
        match unlink_at(self.base(), &c_name(rel), false) {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(self.io_err("removing", rel, e)),
        }
    }

    /// Makes everything written so far durable (`syncfs`).
    pub fn sync(&self) -> Result<(), EndpointError> {
        syncfs(&self.dir).map_err(|e| self.err(format!("syncfs: {e}")))
    }

    /// Up to `limit` object keys under `prefix` (a key prefix ending in
    /// `/`, or empty for the whole store) after `after`, in key order by
    /// component (a directory's entries sorted, depth first): ferry's own
    /// names (`#staging`, sidecars, staging files of the old layout) and
    /// names that are not UTF-8 are not keys. Only one directory's names
    /// are held at a time.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, EndpointError> {
        let mut out = Vec::new();
        let top = prefix.trim_end_matches('/');
        self.list_dir(top, after, limit, &mut out)?;
        Ok(out)
    }

    fn list_dir(
        &self,
        rel: &str,
        after: Option<&str>,
        limit: usize,
        out: &mut Vec<String>,
    ) -> Result<(), EndpointError> {
        let dir = if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(self.io_err("listing", rel, e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|e| self.io_err("listing", rel, e))?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let is_dir = e.file_type().map_err(|e| self.io_err("listing", rel, e))?.is_dir();
            names.push((name, is_dir));
        }
        names.sort();
        for (name, is_dir) in names {
            if out.len() >= limit {
                return Ok(());
            }
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if is_dir {
                if key == STAGING {
                    continue;
                }
                // A directory wholly before `after` holds nothing to list.
                let before = after.is_some_and(|a| {
                    key_order(&key, a) == std::cmp::Ordering::Less && !a.starts_with(&format!("{key}/"))
                });
                if !before {
                    self.list_dir(&key, after, limit, out)?;
                }
            } else if !key::is_sidecar(&name)
                && !is_legacy_staging(&name)
                && after.is_none_or(|a| key_order(&key, a) == std::cmp::Ordering::Greater)
            {
                out.push(key);
            }
        }
        Ok(())
    }

    /// Every file under `prefix` (the whole store when it is empty) and in
    /// `#staging`, classified; unreadable directories and files are reported
    /// through `errors` and the survey goes on. Other endpoints may keep
    /// their objects in the same directory under other prefixes. The store
    /// is listed by the crate's parallel walker, every directory (a key may
    /// be `.snapshots`) and by path: keys are at most 989 bytes.
    pub fn survey(&self, prefix: &str, found: &mut Vec<Found>, errors: &mut Vec<EndpointError>) {
        let store = self.path.as_os_str().as_bytes();
        // `path = /srv/store/` names the same store.
        let store = store.strip_suffix(b"/").filter(|s| !s.is_empty()).unwrap_or(store);
        let under = |rel: &str| [store, b"/", rel.as_bytes()].concat();
        let roots = if prefix.is_empty() {
            vec![store.to_vec()]
        } else {
            vec![under(STAGING), under(prefix)]
        };
        let opts = WalkOptions {
            skip_snapshots: SnapshotDirs::Never,
            ..WalkOptions::default()
        };
        let walk = match Walk::start(roots, opts) {
            Ok(w) => w,
            Err(e) => return errors.push(self.err(format!("listing {}: {e}", self.path.display()))),
        };
        for event in walk {
            let entries = match event {
                WalkEvent::Entries(entries) => entries,
                // A file gone meanwhile, or a prefix or `#staging` not made
                // yet, holds nothing to survey.
                WalkEvent::Error(e) if e.errno() == Some(libc::ENOENT) => continue,
                WalkEvent::Error(e) => {
                    errors.push(self.err(e));
                    continue;
                }
            };
            for e in entries.iter().filter(|e| e.file_type == FileType::File) {
                // Keys are UTF-8: any other name is not ferry's.
                let Some(rel) = e.path.get(store.len() + 1..).and_then(|r| std::str::from_utf8(r).ok()) else {
                    continue;
                };
                let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
                let meta = e.meta.unwrap_or_default();
                match self.classify(dir, name, rel) {
                    Ok(Some(kind)) => found.push(Found {
                        rel: rel.to_string(),
                        size: meta.size,
                        modified: meta.mtime.system_time(),
                        kind,
                    }),
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
    }

    fn classify(&self, dir: &str, name: &str, rel: &str) -> Result<Option<FoundKind>, EndpointError> {
        if dir == STAGING {
            // A staged sidecar lives as long as its object's upload does.
            let upload = rel.strip_suffix(SIDECAR_SUFFIX).unwrap_or(rel);
            let Some((f, _)) = self.open_object(upload)? else {
                return Ok(Some(FoundKind::Staging { live: false }));
            };
            let free = try_lock_exclusive(&f).map_err(|e| self.io_err("locking", upload, e))?;
            return Ok(Some(FoundKind::Staging { live: !free }));
        }
        if is_legacy_staging(name) {
            return Ok(Some(FoundKind::LegacyStaging));
        }
        if let Some(object) = rel.strip_suffix(SIDECAR_SUFFIX)
            && key::is_sidecar(name)
        {
            let orphan = match self.open_object(object)? {
                None => true,
                Some((f, _)) => match self.read_doc(&f, object)? {
                    // A pointer names its sidecar by hash; the sidecar of a
                    // filesystem without xattrs is named by its place.
                    Some(Ok(ptr @ MetaDoc::Sidecar { .. })) => match self.read_sidecar(object)? {
                        Some(bytes) => ptr.resolve(&bytes).is_err(),
                        None => true,
                    },
                    Some(Ok(MetaDoc::Inline(_))) => true,
                    Some(Err(_)) => false,
                    None => false,
                },
            };
            return Ok(Some(FoundKind::Sidecar { orphan }));
        }
        let Some((f, _)) = self.open_object(rel)? else {
            return Ok(None);
        };
        Ok(Some(FoundKind::Object(self.metadata(&f, rel)?)))
    }
}

/// The order a directory store lists keys in: component by component.
pub(super) fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Whether `name` is a staging file object_store's local store left
/// beside an object: `<name>#<digits>`, with no other `#` (ferry's own
/// names with `#` start with it).
fn is_legacy_staging(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((stem, n)) => {
            !stem.is_empty() && !stem.contains('#') && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Whether an xattr write failed because the filesystem cannot hold that
/// much (ext4: `ENOSPC` when the inode's one block is full; XFS and
/// others: `E2BIG` or `ERANGE` past a per-value limit) or holds no user
/// xattrs (`EOPNOTSUPP`). A full disk also says `ENOSPC`: the sidecar
/// write that follows then fails and says so.
fn too_big_for_xattrs(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::E2BIG | libc::ERANGE | libc::EOPNOTSUPP)
    )
}

fn is_absent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP))
}

/// A key or relative name as a C string; keys hold no NUL (they are
/// valid object paths, which exclude control characters).
fn c_name(rel: &str) -> CString {
    CString::new(OsStr::new(rel).as_bytes()).expect("keys hold no NUL")
}

/// Which side of a copy failed.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Copies the first `size` bytes of `src` to `dst` and returns their
/// BLAKE3 hash. Files of more than one chunk are hashed on a second
/// thread, beside the reads and writes.
fn copy_hashed(src: &File, dst: &File, size: u64, pool: &PartPool) -> Result<blake3::Hash, Copy> {
    let read = |off: u64| pool.read_at(src, off, CHUNK.min(size - off)).map_err(Copy::Read);
    let mut dst = dst;
    if size <= CHUNK {
        let chunk = read(0)?;
        dst.write_all(&chunk).map_err(Copy::Write)?;
        return Ok(blake3::hash(&chunk));
    }
    let (result, hash) = hash_beside(2, |to_hasher| {
        let mut off = 0;
        while off < size {
            let chunk = read(off)?;
            off += chunk.len() as u64;
            // The hasher only stops early if it panicked.
            let _ = to_hasher.send(chunk.clone());
            dst.write_all(&chunk).map_err(Copy::Write)?;
        }
        Ok(())
    });
    result.map(|()| hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_staging_names_are_told_from_keys() {
        assert!(is_legacy_staging("file.txt#1"));
        assert!(is_legacy_staging("a b#42"));
        assert!(!is_legacy_staging("file.txt"));
        assert!(!is_legacy_staging("#1"));
        assert!(!is_legacy_staging("#LLL#0123456789"));
        assert!(!is_legacy_staging("x#m"));
        assert!(!is_legacy_staging("x#"));
    }

    fn meta(xattr_bytes: usize) -> ObjectMeta {
        ObjectMeta {
            size: 5,
            hash: blake3::hash(b"hello"),
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime: crate::sys::Timestamp { sec: 1, nsec: 0 },
            atime: crate::sys::Timestamp { sec: 1, nsec: 0 },
            xattrs: vec![(b"user.big".to_vec(), vec![b'x'; xattr_bytes])],
            path: None,
            kind: Default::default(),
            link: None,
        }
    }

    /// A commit renames first and makes the key's directories only when
    /// that fails; an object replaced by one whose metadata fits its
    /// xattrs loses the sidecar the old one had, and one replaced by an
    /// object with a sidecar gets the new sidecar.
    #[test]
    fn commits_make_missing_directories_and_replace_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open("t", dir.path(), "user.ferry.object".into()).unwrap();
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(b"hello").unwrap();
        let side = dir.path().join("a/b/c#m");
        // Metadata past any filesystem's xattr room goes to a sidecar.
        store.upload("a/b/c", &src, meta(70_000)).unwrap();
        assert!(side.exists(), "a sidecar for 70 kB of metadata");
        let big = store.head("a/b/c").unwrap().unwrap().meta.unwrap().unwrap();
        assert_eq!(big.xattrs[0].1.len(), 70_000);
        store.upload("a/b/c", &src, meta(10)).unwrap();
        assert!(!side.exists(), "the replaced object's sidecar is gone");
        let small = store.head("a/b/c").unwrap().unwrap().meta.unwrap().unwrap();
        assert_eq!(small.xattrs[0].1.len(), 10);
        store.upload("a/b/c", &src, meta(70_000)).unwrap();
        assert!(side.exists());
        let again = store.head("a/b/c").unwrap().unwrap().meta.unwrap().unwrap();
        assert_eq!(again.xattrs[0].1.len(), 70_000);
        // A key at the top needs no directory; one deeper gets them all.
        store.upload("top", &src, meta(10)).unwrap();
        store.upload("x/y/z/w", &src, meta(10)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x/y/z/w")).unwrap(), b"hello");
        assert_eq!(std::fs::read(dir.path().join("top")).unwrap(), b"hello");
        // Nothing left staged.
        assert_eq!(std::fs::read_dir(dir.path().join(STAGING)).unwrap().count(), 0);
    }
}
