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
//! directories are created (mode 0755, marked until their own object
//! applies its metadata).
//!
//! A path whose object records a directory or a symbolic link is built as
//! one ([`super::entry`]): its object is at the path's key (a link) or at
//! the directory key beside it, looked for when the path's key holds
//! nothing. Every change to a directory's entries keeps that directory's
//! times ([`super::dirtimes`]), so a directory whose object arrived before
//! its children ends with its source's times all the same.

use super::dirtimes::DirTimes;
use super::entry::{self, Built};
use super::lock::{LockLevel, Locking};
use super::xattrs::{HsmState, Residency};
use super::{OpContext, OpError, Reachable, Snap, chosen_times, open_file, par_map, set_times, write_sparse};
use crate::endpoint::LinkId;
use crate::endpoint::{Endpoint, EntryKind, KeyError, ObjectMeta, TransferError};
use crate::sys::{Base, create_at, link_at, mkdir_at, open_dir_at, open_file_at, rename_at, unlink_at};
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

/// Creates stubs for `paths` from the objects on `endpoint`, a commit
/// window at a time: the window's new files are written (in parallel),
/// made durable together with one `syncfs` per filesystem, renamed into
/// place, and the renames made durable with one more; files that join a
/// hard-link group are placed and flushed one by one as they are built
/// (the group's lock is held until they are in place).
fn stub_from(
    ctx: &OpContext,
    args: &ReverseStubArgs,
    endpoint: &str,
    paths: &[PathObject],
) -> Result<Vec<Outcome>, OpError> {
    let mut job = Job::new(ctx, args, endpoint, false)?;
    job.defer = true;
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(super::window::window(args.sub_batch)) {
        let built = par_map(chunk.iter().collect(), ctx.threads, |obj: &PathObject| {
            let mut result = job.one(&obj.path);
            let stale = matches!(&result, Err(o) if o.message.as_deref().is_some_and(|m| m.contains("os error 116")));
            if stale && args.retry_stale.is_some() {
                result = job.one(&obj.path);
            }
            result
        });
        let flushed = flush_each_filesystem(built.iter().filter_map(|b| match b {
            Ok(Placed::Pending(p)) => Some(&p.tmp.dir),
            _ => None,
        }))
        .map_err(|e| e.to_string());
        let mut placed = Vec::with_capacity(built.len());
        for (obj, b) in chunk.iter().zip(built) {
            placed.push(match (b, &flushed) {
                (Ok(Placed::Done(bytes)), _) => Ok((bytes, None)),
                // Dropped unrenamed: the temporary file goes.
                (Ok(Placed::Pending(_)), Err(e)) => Err(Outcome::failed(format!("flushing the new files: {e}"))),
                (Ok(Placed::Pending(mut p)), Ok(())) => job.place(&obj.path, &mut p).map(|()| (p.written, Some(p))),
                (Err(o), _) => Err(o),
            });
        }
        let renamed = flush_each_filesystem(placed.iter().filter_map(|p| match p {
            Ok((_, Some(p))) => Some(&p.tmp.dir),
            _ => None,
        }))
        .map_err(|e| e.to_string());
        for p in placed {
            let (outcome, bytes) = match (p, &renamed) {
                (Ok((_, Some(_))), Err(e)) => (Outcome::failed(format!("flushing the directory: {e}")), 0),
                (Ok((bytes, _)), _) => (Outcome::processed(), bytes),
                (Err(o), _) => (o, 0),
            };
            ctx.count(&outcome, bytes);
            out.push(outcome);
        }
    }
    Ok(out)
}

/// Makes everything written to the filesystems of `dirs` durable: one
/// `syncfs` for each filesystem, however many files a window wrote there
/// (a per-file `fsync` of the file and its directory cost most of a
/// sync's time: docs/benchmarks.md, "Site sync").
fn flush_each_filesystem<'f>(dirs: impl Iterator<Item = &'f File>) -> io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for d in dirs {
        if seen.insert(std::os::unix::fs::MetadataExt::dev(&d.metadata()?)) {
            crate::sys::syncfs(d)?;
        }
    }
    Ok(())
}

/// A file built by [`Job::file`]: in place and durable (`Done`, the bytes
/// written), or written under its temporary name and waiting for its
/// window's flush before [`Job::place`] renames it (`Pending`).
enum Placed<'a> {
    Done(u64),
    Pending(Pending<'a>),
}

/// A new file written under a temporary name, not yet flushed nor renamed.
struct Pending<'a> {
    tmp: Building<'a>,
    /// The local file it replaces and its facts when it was checked.
    existing: Option<(File, Snap)>,
    written: u64,
}

struct Job<'a> {
    ctx: &'a OpContext,
    args: &'a ReverseStubArgs,
    target: Arc<Endpoint>,
    locking: Locking,
    times: DirTimes,
    /// Plain local copies (an import's `copy`): whole, with no location or
    /// state, and no link index.
    plain: bool,
    /// Leave a new file that joins no hard-link group unflushed and
    /// unrenamed ([`Placed::Pending`]) for its window's flush.
    defer: bool,
}

impl<'a> Job<'a> {
    /// A builder from `endpoint` as `args` say; `plain` makes local copies.
    fn new(ctx: &'a OpContext, args: &'a ReverseStubArgs, endpoint: &str, plain: bool) -> Result<Job<'a>, OpError> {
        Ok(Job {
            ctx,
            args,
            target: ctx.endpoint(endpoint)?,
            locking: Locking::new(args.lock_level, LockLevel::Implicit, false)?,
            times: DirTimes,
            plain,
            defer: false,
        })
    }
}

impl Job<'_> {
    /// The builder of directories, links and missing parents.
    fn builder(&self) -> entry::Builder<'_> {
        entry::Builder {
            xattrs: &self.ctx.xattrs,
            times: &self.times,
            overwrite: self.args.overwrite,
            update_atime: self.args.update_atime,
            update_mtime: self.args.update_mtime,
        }
    }

    /// Builds one file, directory or link.
    fn one(&self, path: &[u8]) -> Result<Placed<'_>, Outcome> {
        let (key, meta) = self.object(path)?;
        self.entry(path, &key, &meta, true)
    }

    /// Builds at `path` what the object at `key` with `meta` records;
    /// `verified` when `meta` is ferry's (with the content's hash), not one
    /// made up for an object another tool wrote.
    fn entry(&self, path: &[u8], key: &ObjPath, meta: &ObjectMeta, verified: bool) -> Result<Placed<'_>, Outcome> {
        let built = match &meta.kind {
            EntryKind::File => return self.file(path, key, meta, verified),
            EntryKind::HardLink(data_key) => return self.hard_link(path, key, data_key, meta),
            EntryKind::Directory => self.builder().directory(path, meta),
            EntryKind::Symlink(target) => self.builder().symlink(path, target, meta),
        };
        match built {
            Ok(Built::Done) => Ok(Placed::Done(0)),
            Ok(Built::Kept(why)) => Err(Outcome::skipped(why)),
            Err(e) => Err(failure("building", e)),
        }
    }

    /// The object for `path` and its metadata: at the path's key (a file
    /// or a link), at the key ferry up to 53a13dd gave it, or at the
    /// directory key beside it.
    fn object(&self, path: &[u8]) -> Result<(ObjPath, ObjectMeta), Outcome> {
        let (dir_key, _) = self.target.dir_key(path).map_err(|e| Outcome::failed(e.to_string()))?;
        let mut candidates = Vec::with_capacity(3);
        let named = match self.target.key(path) {
            Ok((file_key, _)) => Some(file_key),
            // The endpoint's root is a directory: only its own object.
            Err(KeyError::IsRoot) => None,
            Err(e) => return Err(Outcome::failed(e.to_string())),
        };
        candidates.extend(named.clone());
        // A store written by ferry up to 53a13dd keeps long names whole.
        candidates.extend(self.target.legacy_key(path));
        candidates.push(dir_key.clone());
        for key in candidates {
            let head = self.target.head(&key).map_err(|e| Outcome::failed(e.to_string()))?;
            let Some(o) = head else { continue };
            let meta = match o.meta {
                Some(Ok(m)) if m.size == o.size => m,
                Some(Ok(_)) => return Err(Outcome::failed(format!("object at {key} does not match its metadata"))),
                Some(Err(e)) => return Err(Outcome::failed(format!("object at {key}: {e}"))),
                None => {
                    return Err(Outcome::failed(format!(
                        "object at {key} has no ferry metadata, so no verifiable stub can be made"
                    )));
                }
            };
            if (key == dir_key) != (meta.kind == EntryKind::Directory) {
                return Err(Outcome::failed(format!(
                    "object at {key} records another kind of entry than its key holds"
                )));
            }
            return Ok((key, meta));
        }
        Err(Outcome::failed(format!(
            "endpoint `{}` has no object at {}",
            self.target.name(),
            named.as_ref().unwrap_or(&dir_key)
        )))
    }

    /// Builds a name recorded as another name of a file with several
    /// names: from the object holding the data, which must still be that
    /// file (the same link identity).
    fn hard_link(
        &self,
        path: &[u8],
        record_key: &ObjPath,
        data_key: &str,
        record: &ObjectMeta,
    ) -> Result<Placed<'_>, Outcome> {
        let key = ObjPath::parse(data_key)
            .map_err(|e| Outcome::failed(format!("hard-link record at {record_key} names a bad key: {e}")))?;
        let data = match self.target.head(&key) {
            Ok(Some(o)) => match o.meta {
                Some(Ok(m)) if m.size == o.size && m.kind == EntryKind::File => m,
                Some(Err(e)) => return Err(Outcome::failed(format!("object at {key}: {e}"))),
                _ => return Err(Outcome::failed(format!("object at {key} is not a file's data"))),
            },
            Ok(None) => {
                return Err(Outcome::failed(format!(
                    "the object {key} that this hard link's record names is missing"
                )));
            }
            Err(e) => return Err(Outcome::failed(e.to_string())),
        };
        let id = |m: &ObjectMeta| m.link.as_ref().map(|l| l.id.clone());
        if data.link.is_none() || id(&data) != id(record) {
            return Err(Outcome::failed(format!(
                "the object at {key} is no longer this hard link's file (another link identity); migrate its names again"
            )));
        }
        // The record is the newer word on how many names the file has (a
        // link made since the data was sent).
        let data = ObjectMeta {
            link: record.link.clone(),
            ..data
        };
        self.file(path, &key, &data, true)
    }

    /// Builds one regular file: placed, or pending for its window's flush
    /// when the job defers. A file
    /// with a link identity becomes another name of the file already built
    /// for it with this content, at the data object's own path or in the
    /// index ([`LINK_INDEX`]); with `overwrite`, a separate copy of that
    /// content at `path` is replaced by such a name.
    fn file(&self, path: &[u8], key: &ObjPath, meta: &ObjectMeta, verified: bool) -> Result<Placed<'_>, Outcome> {
        // A plain copy is linked to nothing.
        let link = meta.link.as_ref().filter(|_| !self.plain);
        // Held until the file is in place: one linked file at a time.
        let index = link.and_then(|l| LinkIndex::open(&self.target, l, &self.times));
        let existing = match open_file(path, false) {
            Ok(f) => Some(f),
            Err(super::OpenError::Missing) => None,
            Err(super::OpenError::Symlink) => return Err(Outcome::failed("a symbolic link is in the way")),
            Err(super::OpenError::Directory) => return Err(Outcome::failed("a directory is in the way")),
            Err(super::OpenError::Other(e)) => return Err(Outcome::failed(format!("cannot open: {e}"))),
        };
        let source = match &index {
            Some(ix) => self.link_source(key, meta, ix)?,
            None => None,
        };
        let before = match (&existing, &source) {
            // Another copy of the group's content where the group's file
            // is here (a name built apart by a failure or a race, or sent
            // before the source linked it): with overwrite it becomes a
            // name of that file, so the group heals.
            (Some(f), Some(src)) if self.args.overwrite && self.separate_copy(f, src, meta)? => {
                self.locking.at_open(f).map_err(Outcome::from)?;
                Some(Snap::of(f).map_err(|e| failure("stat", e))?)
            }
            (Some(f), _) => Some(self.conflict(f, key, meta, verified)?),
            (None, _) => None,
        };
        let linked = match &source {
            Some(src) => Some(self.link_to(path, src)?),
            None => None,
        };
        // A file joining a group is placed now, under the group's lock;
        // it is flushed before the index can name it.
        let now = !self.defer || index.is_some();
        let (tmp, written) = match linked {
            Some(tmp) => (tmp, 0),
            None => {
                let (tmp, written) = self.build(path, key, meta, verified)?;
                if now {
                    tmp.file.sync_all().map_err(|e| failure("flushing", e))?;
                }
                if let Some(ix) = &index {
                    // Best effort: without the entry, later names are built
                    // as copies (never lost, never wrongly linked).
                    let _ = ix.add(&tmp);
                }
                (tmp, written)
            }
        };
        let mut pending = Pending {
            tmp,
            existing: existing.zip(before),
            written,
        };
        if !now {
            return Ok(Placed::Pending(pending));
        }
        self.place(path, &mut pending)?;
        let tmp = &pending.tmp;
        tmp.dir.sync_all().map_err(|e| failure("flushing the directory", e))?;
        if let (Some(ix), Some(link)) = (&index, link) {
            // Best effort: an entry left behind only keeps an inode alive.
            let _ = ix.retire_if_complete(&tmp.file, link.nlink);
        }
        Ok(Placed::Done(written))
    }

    /// Renames a built file into place at `path`: over the local file it
    /// replaces if that has not changed since it was checked, else only
    /// where nothing is. Its data must be durable already.
    fn place(&self, path: &[u8], p: &mut Pending<'_>) -> Result<(), Outcome> {
        if let Some((f, before)) = &p.existing {
            self.locking.at_commit(f).map_err(Outcome::from)?;
            let now = Snap::of(f).map_err(|e| failure("stat", e))?;
            if !before.unchanged(&now) {
                return Err(Outcome::failed("local file changed meanwhile; left as it was"));
            }
            p.tmp
                .persist(path, false)
                .map_err(|e| failure("renaming into place", e))
        } else {
            p.tmp.persist(path, true).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Outcome::failed("a file appeared at the path meanwhile; left as it was")
                } else {
                    failure("renaming into place", e)
                }
            })
        }
    }

    /// The file already built here for `meta`'s link identity, if it
    /// holds this object's content: the one at the data object's own path,
    /// the group's usual name here (also when the group was complete and
    /// its entry retired before the source gave it another name), else the
    /// index's entry. `None` when the name must be built.
    fn link_source(&self, key: &ObjPath, meta: &ObjectMeta, ix: &LinkIndex) -> Result<Option<LinkSource>, Outcome> {
        let x = &self.ctx.xattrs;
        // Holds the object's content by its recorded hash, and the record
        // is current (size and mtime). Its location may name an older key:
        // a move here keeps it.
        let holds_object = |f: &File| -> Result<Option<(u64, u64)>, Outcome> {
            let st = Snap::of(f).map_err(|e| failure("stat", e))?;
            let holds = st.is_file()
                && st.size == meta.size
                && matches!(x.state(f), Ok(Some(Ok(s)))
                    if s.hash == meta.hash && s.size == st.size && s.mtime == st.mtime);
            Ok(holds.then_some(st.id))
        };
        if let Some((dir, name)) = self.data_name(key, meta)
            && let Ok(f) = open_file_at(Base::Dir(dir.as_fd()), &name).map(File::from)
            && let Some(id) = holds_object(&f)?
        {
            return Ok(Some(LinkSource { dir, name, id }));
        }
        if let Some(entry) = ix.entry()
            && let Some(id) = holds_object(&entry)?
        {
            let dir = ix.dir.try_clone().map_err(|e| failure("opening the link index", e))?;
            return Ok(Some(LinkSource {
                dir,
                name: ix.name.clone(),
                id,
            }));
        }
        Ok(None)
    }

    /// A new name beside `path` for the file at `source`.
    fn link_to(&self, path: &[u8], source: &LinkSource) -> Result<Building<'_>, Outcome> {
        self.builder()
            .make_parents(path)
            .map_err(|e| failure("creating parent directories", e))?;
        let reachable = Reachable::new(path, false).map_err(|e| failure("reaching the parent directory", e))?;
        let parent = reachable.path().parent().unwrap_or(Path::new("/"));
        Building::link(parent, &self.times, &source.dir, &source.name)
            .map_err(|e| failure("linking to the file's other name", e))
    }

    /// Whether `f` is another inode than `source`'s that holds the same
    /// content (by its recorded hash, or by reading it).
    fn separate_copy(&self, f: &File, source: &LinkSource, meta: &ObjectMeta) -> Result<bool, Outcome> {
        let st = Snap::of(f).map_err(|e| failure("stat", e))?;
        if st.id == source.id || !st.is_file() || st.size != meta.size {
            return Ok(false);
        }
        if let Ok(Some(Ok(s))) = self.ctx.xattrs.state(f)
            && s.size == st.size
            && s.mtime == st.mtime
            && s.residency == Residency::Premigrated
        {
            return Ok(s.hash == meta.hash);
        }
        Ok(matches!(self.ctx.xattrs.state(f), Ok(None))
            && crate::endpoint::hash_file(f, st.size).map_err(|e| failure("reading", e))? == meta.hash)
    }

    /// The directory and name of the local file at the data object
    /// `key`'s path, when it can be reached.
    fn data_name(&self, key: &ObjPath, meta: &ObjectMeta) -> Option<(File, CString)> {
        let full = self.target.local_path(key, meta.path.as_deref(), false)?;
        let cut = full.iter().rposition(|&b| b == b'/')?;
        let dir = File::from(open_dir_at(Base::Cwd, &CString::new(&full[..cut.max(1)]).ok()?, false).ok()?);
        Some((dir, CString::new(&full[cut + 1..]).ok()?))
    }

    /// Decides about an existing local file: `Ok` with its facts when it
    /// is to be replaced, else the outcome that keeps it.
    fn conflict(&self, f: &File, key: &ObjPath, meta: &ObjectMeta, verified: bool) -> Result<Snap, Outcome> {
        self.locking.at_open(f).map_err(Outcome::from)?;
        let st = Snap::of(f).map_err(|e| failure("stat", e))?;
        if !st.is_file() {
            return Err(Outcome::failed("something other than a regular file is in the way"));
        }
        let x = &self.ctx.xattrs;
        if let Ok(Some(Ok(s))) = x.state(f)
            && s.size == st.size
            && s.mtime == st.mtime
        {
            let here = x.location(f, self.target.name()).ok().flatten().as_deref() == Some(key.as_ref().as_bytes());
            if here && (s.hash == meta.hash || !verified) {
                let why = format!("already a {} copy of this object", s.residency.as_str());
                return Err(self.same_content(f, &st, meta, Some(s), why));
            }
            // The same content recorded under another key (a stub moved on
            // a sync's destination, a name of a hard-link group whose
            // object went to another name's key): this object serves it
            // as well, so it is recorded, and nothing is rebuilt. Not for
            // a file with fewer names than its group: it is rebuilt, which
            // links it into the group.
            let grouped = meta.link.as_ref().is_none_or(|l| st.nlink >= l.nlink);
            if !here && grouped && verified && (s.hash, s.size) == (meta.hash, meta.size) {
                x.set_location(f, self.target.name(), key.as_ref())
                    .map_err(|e| failure("recording the location", e))?;
                let why = format!(
                    "already a {} copy of this object's content; recorded its key",
                    s.residency.as_str()
                );
                return Err(self.same_content(f, &st, meta, Some(s), why));
            }
        }
        let same_content = verified
            && st.size == meta.size
            && !matches!(x.state(f), Ok(Some(Ok(s))) if s.residency == Residency::Migrated)
            && crate::endpoint::hash_file(f, st.size).map_err(|e| failure("reading", e))? == meta.hash;
        if same_content {
            return Err(self.same_content(
                f,
                &st,
                meta,
                None,
                "local file has the same content (only metadata may differ)".into(),
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

    /// The outcome for a local file that already holds the object's
    /// content: `skipped` for `why`, unless `overwrite` is set and its
    /// metadata differs from the object's (a chmod, chown, xattr change or
    /// touch on the source, which a sync must carry): then the object's
    /// owner, mode, xattrs and modification time are applied in place
    /// (`state`, the file's recorded state, following the new time), and
    /// the file is `processed`.
    fn same_content(&self, f: &File, st: &Snap, meta: &ObjectMeta, state: Option<HsmState>, why: String) -> Outcome {
        if !self.args.overwrite {
            return Outcome::skipped(why);
        }
        match self.apply_metadata(f, st, meta, state) {
            Ok(false) => Outcome::skipped(why),
            Ok(true) => {
                let mut o = Outcome::processed();
                o.message = Some("same content; applied the object's metadata".into());
                o
            }
            Err(e) => failure("applying the object's metadata", e),
        }
    }

    /// Makes `f`'s owner, mode, xattrs and modification time the ones
    /// `meta` records; whether anything changed.
    fn apply_metadata(&self, f: &File, st: &Snap, meta: &ObjectMeta, state: Option<HsmState>) -> io::Result<bool> {
        let x = &self.ctx.xattrs;
        let mut changed = false;
        if (st.uid, st.gid) != (meta.uid, meta.gid) {
            fchown(f, Some(meta.uid), Some(meta.gid))?;
            changed = true;
        }
        // chown clears set-id bits, so the mode goes after it.
        if changed || st.mode & 0o7777 != meta.mode & 0o7777 {
            f.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))?;
            changed |= st.mode & 0o7777 != meta.mode & 0o7777;
        }
        let ours = x.copied_xattrs(f)?;
        if ours != meta.xattrs {
            for (name, _) in ours.iter().filter(|(n, _)| !meta.xattrs.iter().any(|(m, _)| m == n)) {
                xattr::FileExt::remove_xattr(f, OsStr::from_bytes(name))?;
            }
            for (name, value) in &meta.xattrs {
                super::xattrs::set_explained(f, OsStr::from_bytes(name), value)?;
            }
            changed = true;
        }
        if !self.args.update_mtime && st.mtime != meta.mtime {
            if let Some(mut s) = state {
                s.mtime = meta.mtime;
                x.set_state(f, &s)?;
            }
            set_times(f, st.atime, meta.mtime)?;
            changed = true;
        }
        Ok(changed)
    }

    /// Builds the file under a temporary name beside `path`.
    fn build(
        &self,
        path: &[u8],
        key: &ObjPath,
        meta: &ObjectMeta,
        verified: bool,
    ) -> Result<(Building<'_>, u64), Outcome> {
        self.builder()
            .make_parents(path)
            .map_err(|e| failure("creating parent directories", e))?;
        let reachable = Reachable::new(path, false).map_err(|e| failure("reaching the parent directory", e))?;
        let dir = reachable.path().parent().unwrap_or(Path::new("/"));
        let tmp = Building::create(dir, &self.times).map_err(|e| failure("creating the file", e))?;
        let f = &tmp.file;
        // Without ferry's hash no stub can be verified later: whole, and
        // recorded with the hash of what was read.
        let whole = self.plain || !verified || self.args.hydrate || meta.size <= self.args.stub_size;
        let mut hash = meta.hash;
        let remote = |e: TransferError| Outcome::failed(format!("download from `{}` failed: {e}", self.target.name()));
        let written = if whole {
            let mut offset = 0u64;
            let read = self
                .target
                .download(key, meta.size, &mut |chunk| {
                    write_sparse(f, offset, chunk)?;
                    offset += chunk.len() as u64;
                    Ok(())
                })
                .map_err(remote)?;
            if verified && !self.args.skip_hash && read != meta.hash {
                return Err(Outcome::failed(format!(
                    "hash mismatch: object at {key} is corrupt (blake3 {}, expected {})",
                    read.to_hex(),
                    meta.hash.to_hex()
                )));
            }
            if !verified {
                hash = read;
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
        // A whole file's writes usually end at its size already; a
        // truncate to the same size still costs a filesystem transaction
        // (btrfs: 4.5 % of a 2,000-file `ferry reverse-stub`'s CPU), so it
        // is made only for a stub or a file that ends in a hole.
        let size = f.metadata().map_err(|e| failure("stat", e))?.len();
        if size != meta.size {
            f.set_len(meta.size).map_err(|e| failure("setting the size", e))?;
        }
        let x = &self.ctx.xattrs;
        let io = |e| failure("setting metadata", e);
        fchown(f, Some(meta.uid), Some(meta.gid)).map_err(io)?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))
            .map_err(io)?;
        for (name, value) in &meta.xattrs {
            super::xattrs::set_explained(f, OsStr::from_bytes(name), value).map_err(io)?;
        }
        let (atime, mtime) = chosen_times(self.args.update_atime, self.args.update_mtime, meta.atime, meta.mtime);
        if !self.plain {
            x.set_location(f, self.target.name(), key.as_ref()).map_err(io)?;
            let state = HsmState {
                residency: if whole {
                    Residency::Premigrated
                } else {
                    Residency::Migrated
                },
                size: meta.size,
                mtime,
                stub_size: self.args.stub_size,
                hash,
            };
            x.set_state(f, &state).map_err(io)?;
        }
        set_times(f, atime, mtime).map_err(io)?;
        Ok((tmp, written))
    }
}

/// Builds entries from objects named by key rather than by local path:
/// the imports ([`super::import`]) share reverse_stub's building.
pub(crate) struct Importer<'a>(Job<'a>);

impl<'a> Importer<'a> {
    /// An importer from `endpoint` building as `args` say; `plain` makes
    /// local copies with no link to the endpoint.
    pub fn new(ctx: &'a OpContext, args: &'a ReverseStubArgs, endpoint: &str, plain: bool) -> Result<Self, OpError> {
        Ok(Importer(Job::new(ctx, args, endpoint, plain)?))
    }

    /// The endpoint.
    pub fn target(&self) -> &Endpoint {
        &self.0.target
    }

    /// Builds at `path` what the object at `key` records; `verified` when
    /// `meta` is ferry's own. `Ok` carries the bytes written.
    pub fn build(&self, path: &[u8], key: &ObjPath, meta: &ObjectMeta, verified: bool) -> Result<u64, Outcome> {
        match self.0.entry(path, key, meta, verified)? {
            Placed::Done(bytes) => Ok(bytes),
            Placed::Pending(_) => unreachable!("an importer's job places each file as it builds it"),
        }
    }
}

/// A file being built under a temporary name in its directory. It is made
/// and renamed relative to the directory's descriptor, so the temporary
/// name never lengthens the path: a file whose path is just under PATH_MAX
/// can be rebuilt too. Dropped unrenamed, it is removed. Its creation,
/// rename and removal keep the directory's times ([`DirTimes`]).
/// `recall_bytes` builds its range files the same way.
pub(super) struct Building<'a> {
    pub(super) dir: File,
    name: CString,
    pub(super) file: File,
    renamed: bool,
    times: &'a DirTimes,
}

impl<'a> Building<'a> {
    pub(super) fn create(dir: &Path, times: &'a DirTimes) -> io::Result<Building<'a>> {
        let dir = File::open(dir)?;
        loop {
            let name = CString::new(entry::temp_name()).expect("no NUL");
            match times.keeping(&dir, || create_at(Base::Dir(dir.as_fd()), &name, 0o600)) {
                Ok(file) => {
                    return Ok(Building {
                        dir,
                        name,
                        file,
                        renamed: false,
                        times,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A new name in `dir` for the file at `from` in `from_dir` (the link
    /// index's entry, or another name of the file).
    fn link(dir: &Path, times: &'a DirTimes, from_dir: &File, from: &std::ffi::CStr) -> io::Result<Building<'a>> {
        let dir = File::open(dir)?;
        loop {
            let name = CString::new(entry::temp_name()).expect("no NUL");
            let at = Base::Dir(dir.as_fd());
            match times.keeping(&dir, || link_at(Base::Dir(from_dir.as_fd()), from, at, &name)) {
                Ok(()) => {
                    let file = match open_file_at(at, &name) {
                        Ok(fd) => File::from(fd),
                        Err(e) => {
                            let _ = times.keeping(&dir, || unlink_at(at, &name, false));
                            return Err(e);
                        }
                    };
                    return Ok(Building {
                        file,
                        dir,
                        name,
                        renamed: false,
                        times,
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
        self.times
            .keeping(&self.dir, || rename_at(dir, &self.name, dir, &last, no_replace))?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = self
                .times
                .keeping(&self.dir, || unlink_at(Base::Dir(self.dir.as_fd()), &self.name, false));
        }
    }
}

fn failure(what: &str, e: io::Error) -> Outcome {
    Outcome::failed(format!("{what}: {e}"))
}

/// The directory under the endpoint's local root where the destination
/// keeps one extra name of each file with several names whose names have
/// not all arrived, named by the BLAKE3 hash of its link identity: a later
/// name becomes a link of that file instead of a copy, whichever task or
/// batch it arrives in. The entry goes once the file has as many names as
/// it had on the source, and the index with its last entry. A name on
/// another filesystem than the root (no link can cross) is built as a copy.
pub const LINK_INDEX: &str = ".ferry-links";

/// A file to give another name: its directory, name and identity.
struct LinkSource {
    dir: File,
    name: CString,
    id: (u64, u64),
}

/// The link index entry of one link identity, open while a file with a
/// link identity is looked up, built and put in place. Its holder has an
/// exclusive `flock` on the endpoint's root, so across the tasks and
/// processes of a node (and of a cluster whose filesystem's flock is
/// cluster-wide, as GPFS's is) one linked file is built at a time and two
/// names of one file arriving in two tasks never make two copies. The
/// index directory goes when it is left empty ([`Drop`]), whatever the
/// build came to, so a tree whose groups are complete carries no trace
/// of it.
struct LinkIndex<'a> {
    dir: File,
    name: CString,
    /// The endpoint's root, which holds the index and the lock: its times
    /// are kept when the index comes and goes (they travel like any
    /// directory's).
    root: File,
    times: &'a DirTimes,
}

impl Drop for LinkIndex<'_> {
    fn drop(&mut self) {
        let index = CString::new(LINK_INDEX).expect("no NUL");
        // Not empty (another group's entry): it stays.
        let _ = self
            .times
            .keeping(&self.root, || unlink_at(Base::Dir(self.root.as_fd()), &index, true));
    }
}

impl<'a> LinkIndex<'a> {
    /// The index for `link` under `target`'s root, made if missing, once
    /// the root's lock is held; `None` when it cannot be (the file is then
    /// built as a copy).
    fn open(target: &Endpoint, link: &LinkId, times: &'a DirTimes) -> Option<LinkIndex<'a>> {
        let root = File::from(open_dir_at(Base::Cwd, &CString::new(target.root()).ok()?, false).ok()?);
        crate::sys::lock_exclusive(&root).ok()?;
        let name = CString::new(LINK_INDEX).expect("no NUL");
        times
            .keeping(&root, || mkdir_at(Base::Dir(root.as_fd()), &name, 0o700))
            .ok()?;
        let dir = File::from(open_dir_at(Base::Dir(root.as_fd()), &name, false).ok()?);
        let name = CString::new(blake3::hash(link.id.as_bytes()).to_hex().as_str()).expect("hex");
        Some(LinkIndex { dir, name, root, times })
    }

    /// The file the entry names, if there is one.
    fn entry(&self) -> Option<File> {
        open_file_at(Base::Dir(self.dir.as_fd()), &self.name)
            .ok()
            .map(File::from)
    }

    /// Makes the entry name the file being built (replacing an entry with
    /// other content: the newer content is the one later names get).
    fn add(&self, b: &Building<'_>) -> io::Result<()> {
        let tmp = CString::new(entry::temp_name()).expect("no NUL");
        let at = Base::Dir(self.dir.as_fd());
        link_at(Base::Dir(b.dir.as_fd()), &b.name, at, &tmp)?;
        rename_at(at, &tmp, at, &self.name, false).inspect_err(|_| {
            let _ = unlink_at(at, &tmp, false);
        })
    }

    /// Removes the entry once `file` has all the names it had on the
    /// source besides the entry's (the entry names `file` or, after a
    /// split, an older copy).
    fn retire_if_complete(&self, file: &File, source_names: u64) -> io::Result<()> {
        let st = Snap::of(file)?;
        match self.entry() {
            // Complete without the entry's own name: the entry goes, also
            // one naming an older copy (a group split by a failure), which
            // would otherwise stay for good.
            Some(entry) if st.nlink - u64::from(Snap::of(&entry)?.id == st.id) >= source_names => {
                unlink_at(Base::Dir(self.dir.as_fd()), &self.name, false)
            }
            _ => Ok(()),
        }
    }
}
