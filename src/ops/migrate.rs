//! `migrate` and `premigrate` (`dynamo.tasks.migrate`): copy each file's
//! data to an endpoint while hashing it with BLAKE3, make the copies
//! durable, check the endpoint holds them, record the location and state
//! xattrs, and, unless premigrating, punch the data out beyond `stub_size`.
//!
//! A batch goes through in commit windows of at most
//! [`super::COMMIT_WINDOW`] files: copy all (in parallel), one target sync,
//! then commit each. Local data is removed only after the object is durable
//! and verified, under a write lease that proves no other process has the
//! file open, and only if size, mtime and ctime never changed since the
//! file was opened.
//!
//! A directory or a symbolic link is recorded rather than migrated: its
//! metadata goes to a content-less object ([`super::entry`]), made durable
//! with the window's sync, and nothing local changes (a real migrate too
//! leaves it as it is).

use super::lock::{LockLevel, Locking};
use super::xattrs::{HsmState, Residency};
use super::{Inodes, OpContext, OpError, OpenError, Snap, par_map, set_times};
use crate::endpoint::{Endpoint, EntryKind, KeyError, LinkId, ObjectMeta, TransferError};
use crate::sys::{Lease, next_data, punch_hole, set_lease};
use crate::task::{FileState, Outcome, PathObject};
use object_store::path::Path as ObjPath;
use serde::Deserialize;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The seed's migrate arguments, with its defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MigrateArgs {
    /// Endpoint to migrate to; by default, for each path, the endpoint
    /// whose root holds it.
    pub endpoint: Option<String>,
    /// Keep the data on disk (premigrate) instead of stubbing.
    pub premigrate: bool,
    /// Bytes to keep at the start of each stub (rounded up to a block).
    pub stub_size: u64,
    /// Replace an existing object at the file's key instead of writing a
    /// new instance beside it.
    pub overwrite: bool,
    /// Fail a file whose key already holds different content or metadata.
    pub fail_on_mismatch: bool,
    /// Locking level (default `implicit`).
    pub lock_level: Option<LockLevel>,
    /// Missing files are `aborted` rather than failed.
    pub abort_missing: bool,
    /// Re-verify already-migrated files against the endpoint instead of
    /// skipping them unchecked.
    pub migrate_offline_files: bool,
    /// Paths per sequential chunk (at most [`super::COMMIT_WINDOW`]).
    pub sub_batch: Option<usize>,
    /// A file modified during its copy is `skipped` rather than failed.
    pub skip_modified_during_migrate: bool,
}

/// Migrates (or premigrates) `paths`, one outcome per path in order.
/// Errors that concern the whole task (unknown endpoint, conflicting
/// arguments) are returned as `Err`. Without a named endpoint each path
/// goes to the endpoint whose root holds it ([`crate::config::Config::endpoint_for_path`]);
/// a path no root holds fails.
pub fn migrate(ctx: &OpContext, args: &MigrateArgs, paths: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    super::route::by_endpoint(ctx, args.endpoint.as_deref(), paths, |name, group| {
        migrate_to(ctx, args, name, group)
    })
}

/// Migrates `paths` to `endpoint`.
fn migrate_to(
    ctx: &OpContext,
    args: &MigrateArgs,
    endpoint: &str,
    paths: &[PathObject],
) -> Result<Vec<Outcome>, OpError> {
    let job = Job {
        ctx,
        args,
        target: ctx.endpoint(endpoint)?,
        locking: Locking::new(args.lock_level, LockLevel::Implicit, false)?,
    };
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(super::window::window(args.sub_batch)) {
        let inodes = Inodes::default();
        let steps = par_map(
            chunk.iter().enumerate().collect(),
            ctx.threads,
            |(i, obj): (usize, &PathObject)| job.copy(i, &obj.path, &inodes),
        );
        let synced = if steps.iter().any(|s| matches!(s, Step::Commit(_) | Step::Recorded(_))) {
            job.target.sync()
        } else {
            Ok(())
        };
        let outcomes = par_map(steps, ctx.threads, |step| {
            let (outcome, bytes) = match step {
                Step::Done(o) => (Some(o), 0),
                Step::Link(first) => return Err(first),
                Step::Recorded(o) => match &synced {
                    Ok(()) => (Some(o), 0),
                    Err(e) => (Some(Outcome::failed(format!("{e}; record not durable"))), 0),
                },
                Step::Commit(p) => {
                    let size = p.meta.size;
                    match &synced {
                        Ok(()) => (Some(job.commit(*p)), size),
                        Err(e) => (
                            Some(Outcome::failed(format!("{e}; copy not durable, file left as it was"))),
                            0,
                        ),
                    }
                }
            };
            let outcome = outcome.expect("decided");
            ctx.count(&outcome, bytes);
            Ok(outcome)
        });
        let linked: Vec<(usize, usize)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().err().map(|&first| (i, first)))
            .collect();
        let mut outcomes = super::window::resolve_links(ctx, chunk, outcomes);
        job.link_names(chunk, &linked, &mut outcomes);
        out.extend(outcomes);
    }
    Ok(out)
}

struct Job<'a> {
    ctx: &'a OpContext,
    args: &'a MigrateArgs,
    target: Arc<Endpoint>,
    locking: Locking,
}

enum Step {
    Done(Outcome),
    Commit(Box<Pending>),
    /// Another name (hard link) of the file at this input index.
    Link(usize),
    /// A directory or link recorded at the endpoint, done once the
    /// window's sync makes the record durable.
    Recorded(Outcome),
}

/// A file whose data is at the endpoint, waiting for the sync and commit.
struct Pending {
    file: File,
    key: ObjPath,
    meta: ObjectMeta,
    before: Snap,
    /// The object was written by this run (not one found at the endpoint),
    /// so a commit that fails takes it back rather than leave an object no
    /// file points at.
    fresh: bool,
}

impl Job<'_> {
    fn op(&self) -> &'static str {
        if self.args.premigrate { "premigrate" } else { "migrate" }
    }

    /// Opens, checks and copies one file (input `index` of its window).
    fn copy(&self, index: usize, path: &[u8], inodes: &Inodes) -> Step {
        match self.try_copy(index, path, inodes) {
            Ok(step) => step,
            Err(outcome) => Step::Done(outcome),
        }
    }

    fn try_copy(&self, index: usize, path: &[u8], inodes: &Inodes) -> Result<Step, Outcome> {
        let xattrs = &self.ctx.xattrs;
        let file = match super::open_file(path, !self.args.premigrate) {
            Err(OpenError::Directory | OpenError::Symlink) => return self.record_entry(path),
            other => other.map_err(|e| e.outcome(self.op(), self.args.abort_missing))?,
        };
        let before = Snap::of(&file).map_err(|e| io_failure("stat", e))?;
        if before.mode & libc::S_IFMT == libc::S_IFDIR {
            return self.record_entry(path);
        }
        if !before.is_file() {
            return Err(Outcome::skipped(format!(
                "not a regular file, directory or symbolic link: {} does not record it",
                self.op()
            )));
        }
        if let Some(first) = inodes.first_name(before.id, index) {
            return Ok(Step::Link(first));
        }
        self.locking.before_upload(&file).map_err(Outcome::from)?;
        let state = match xattrs.state(&file).map_err(|e| io_failure("reading xattrs", e))? {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                return Err(Outcome::failed(format!(
                    "damaged {} xattr ({e}); inspect it, or remove it with `ferry unmanage`",
                    xattrs.state_name()
                )));
            }
        };
        let location = xattrs
            .location(&file, self.target.name())
            .map_err(|e| io_failure("reading xattrs", e))?;
        if let Some(s) = &state {
            let current = s.size == before.size && s.mtime == before.mtime;
            match (s.residency, current, &location) {
                (Residency::Migrated, true, Some(key)) => {
                    // Recorded as migrated but still holding data beyond the
                    // stub's head: ferry was stopped between recording the
                    // state and punching. Finish the stub when the file holds
                    // the recorded content and the object verifies; content
                    // that differs is migrated afresh below.
                    let head = before.stub_offset(s.stub_size).min(before.size);
                    if !matches!(next_data(&file, head), Ok(Some(_))) {
                        return match self.already_migrated(key, s) {
                            Err(done) if done.state == FileState::Skipped => self.link_name(path, &file, &before, done),
                            other => other,
                        };
                    }
                    let content =
                        crate::endpoint::hash_file(&file, before.size).map_err(|e| io_failure("reading", e))?;
                    if content == s.hash
                        && let Some(key) = self.verified_object(key, s)
                    {
                        let meta = ObjectMeta {
                            hash: s.hash,
                            ..self.file_meta(&file, &before)?
                        };
                        return Ok(Step::Commit(Box::new(Pending {
                            file,
                            key,
                            meta,
                            before,
                            fresh: false,
                        })));
                    }
                }
                (Residency::Migrated, false, Some(key)) if self.interrupted_stub(&file, &before, s, key) => {
                    return set_times(&file, before.atime, s.mtime)
                        .map(|()| {
                            Step::Done(Outcome::skipped(
                                "already migrated; restored the mtime an interrupted stub left",
                            ))
                        })
                        .map_err(|e| io_failure("restoring times", e));
                }
                (Residency::Migrated, _, _) => {
                    return Err(Outcome::failed(if current {
                        "file is a stub migrated to another endpoint; recall it before migrating it elsewhere".into()
                    } else {
                        format!(
                            "stub changed since it was migrated (size or mtime differs from {}); recall it first",
                            xattrs.state_name()
                        )
                    }));
                }
                // With `overwrite`, the object at the file's own key must
                // also carry the file's metadata as it is now: a chmod,
                // chown or xattr change since (a sync's metadata-only
                // update) writes it again. A name whose data object is at
                // another of its names is only recorded as that name's
                // link: the metadata goes with the data's own name.
                (Residency::Premigrated, true, Some(key))
                    if self.args.premigrate
                        && (!self.args.overwrite
                            || !self
                                .target
                                .key(path)
                                .is_ok_and(|(own, _)| own.as_ref().as_bytes() == key.as_slice())
                            || self.object_is_current(&file, &before, key, s)?) =>
                {
                    return self.link_name(path, &file, &before, Outcome::skipped("already premigrated"));
                }
                (Residency::Premigrated, true, Some(key)) if !self.args.premigrate => {
                    // Data already at the endpoint: stub it if the object
                    // is still there and the file still holds that content
                    // (size and mtime alone do not prove it: `cp -p` or
                    // `touch -r` restore an mtime), else copy again.
                    let content =
                        crate::endpoint::hash_file(&file, before.size).map_err(|e| io_failure("reading", e))?;
                    if content == s.hash
                        && let Some(key) = self.verified_object(key, s)
                    {
                        let meta = self.file_meta(&file, &before)?;
                        let meta = ObjectMeta { hash: s.hash, ..meta };
                        return Ok(Step::Commit(Box::new(Pending {
                            file,
                            key,
                            meta,
                            before,
                            fresh: false,
                        })));
                    }
                }
                _ => {}
            }
        }
        let (key, source) = self.target.key(path).map_err(|e| Outcome::failed(e.to_string()))?;
        let meta = ObjectMeta {
            path: source,
            ..self.file_meta(&file, &before)?
        };
        let key = match self.choose_key(&file, key, &meta)? {
            KeyChoice::Reuse(key, meta) => {
                return Ok(Step::Commit(Box::new(Pending {
                    file,
                    key,
                    meta,
                    before,
                    fresh: false,
                })));
            }
            KeyChoice::Write(key) => key,
        };
        let meta = self.target.upload(&key, &file, meta).map_err(|e| match e {
            TransferError::Local(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.modified(),
            TransferError::Mismatch(_) => self.modified(),
            e => Outcome::failed(format!("copy to endpoint `{}` failed: {e}", self.target.name())),
        })?;
        let after = Snap::of(&file).map_err(|e| io_failure("stat", e))?;
        if !before.unchanged(&after) {
            // Best effort: the object holds a torn copy nobody refers to.
            let _ = self.target.delete(&key);
            return Err(self.modified());
        }
        Ok(Step::Commit(Box::new(Pending {
            file,
            key,
            meta,
            before,
            fresh: true,
        })))
    }

    /// Records the directory or symbolic link at `path`: its metadata goes
    /// to a content-less object (a directory's at its own key), replacing
    /// an earlier record; a file's object at a link's key is replaced only
    /// with `overwrite` (a stub elsewhere may still need it).
    fn record_entry(&self, path: &[u8]) -> Result<Step, Outcome> {
        let entry = super::entry::read(&self.ctx.xattrs, path)
            .map_err(|e| io_failure("reading the entry", e))?
            .ok_or_else(|| {
                Outcome::skipped(format!(
                    "not a regular file, directory or symbolic link: {} does not record it",
                    self.op()
                ))
            })?;
        let keyed = match entry.meta.kind {
            EntryKind::Directory => self.target.dir_key(path),
            _ => self.target.key(path),
        };
        let (key, source) = keyed.map_err(|e| match e {
            // A listing of the whole tree names its root too: nothing to record.
            KeyError::IsRoot => Outcome::skipped(e.to_string()),
            e => Outcome::failed(e.to_string()),
        })?;
        if entry.meta.kind != EntryKind::Directory {
            self.may_record_at(&key)?;
        }
        let meta = ObjectMeta {
            path: source,
            ..entry.meta
        };
        self.target
            .upload(&key, &entry.handle, meta)
            .map_err(|e| Outcome::failed(format!("recording at endpoint `{}` failed: {e}", self.target.name())))?;
        Ok(Step::Recorded(Outcome::processed()))
    }

    /// Whether a record with no data may go to `key`: a file's object
    /// there is replaced only with `overwrite` (a stub elsewhere may still
    /// need it).
    fn may_record_at(&self, key: &ObjPath) -> Result<(), Outcome> {
        if self.args.overwrite {
            return Ok(());
        }
        match self.target.head(key) {
            Ok(None) => Ok(()),
            Ok(Some(o)) if matches!(&o.meta, Some(Ok(m)) if m.kind != EntryKind::File) => Ok(()),
            Ok(Some(_)) => Err(Outcome::failed(format!(
                "endpoint `{}` holds a file's object at {key}; set overwrite to replace it with this link's record",
                self.target.name()
            ))),
            Err(e) => Err(Outcome::failed(e.to_string())),
        }
    }

    /// A file already (pre)migrated to this endpoint, reached by `path`:
    /// when `path` is another name of a file with several names than the
    /// one its object is at, a hard-link record goes to `path`'s key (the
    /// data's key, the link identity and the file's metadata), so the
    /// destination can make this name a link of the same inode; otherwise
    /// the file ends as `done`.
    fn link_name(&self, path: &[u8], file: &File, st: &Snap, done: Outcome) -> Result<Step, Outcome> {
        let Some(link) = link_id(file, st) else {
            return Err(done);
        };
        let data_key = self
            .ctx
            .xattrs
            .location(file, self.target.name())
            .map_err(|e| io_failure("reading xattrs", e))?
            .and_then(|k| String::from_utf8(k).ok());
        let Some(data_key) = data_key else {
            return Err(done);
        };
        let (key, source) = self.target.key(path).map_err(|e| Outcome::failed(e.to_string()))?;
        if key.as_ref() == data_key {
            return Err(done);
        }
        self.may_record_at(&key)?;
        self.identify_data(file, st, &data_key, &link)?;
        let meta = ObjectMeta {
            size: 0,
            path: source,
            kind: EntryKind::HardLink(data_key.clone()),
            link: Some(link),
            ..self.file_meta(file, st)?
        };
        self.target
            .upload(&key, file, meta)
            .map_err(|e| Outcome::failed(format!("recording at endpoint `{}` failed: {e}", self.target.name())))?;
        let mut recorded = done;
        recorded.message = Some(format!(
            "{}; recorded as another name of the file whose object is {data_key}",
            recorded.message.as_deref().unwrap_or("done")
        ));
        Ok(Step::Recorded(recorded))
    }

    /// Makes the data object at `data_key` carry `link`, the identity the
    /// record about to name it gives, so the destination can tell the
    /// record's file is the data's: a premigrated file sent when it had
    /// one name (no identity) is sent again at that key first; with
    /// `overwrite`, so is one whose metadata changed since (whichever name
    /// a batch reaches first, the data's metadata is the group's). A
    /// stub's object stays as it is (its data is not here to send), and
    /// the destination builds such a name as a copy.
    fn identify_data(&self, file: &File, st: &Snap, data_key: &str, link: &LinkId) -> Result<(), Outcome> {
        let Ok(key) = ObjPath::parse(data_key) else {
            return Ok(());
        };
        let state = self
            .ctx
            .xattrs
            .state(file)
            .map_err(|e| io_failure("reading xattrs", e))?;
        let Some(Ok(state)) = state.filter(|s| matches!(s, Ok(s) if s.residency == Residency::Premigrated)) else {
            return Ok(());
        };
        let ours = ObjectMeta {
            hash: state.hash,
            link: Some(link.clone()),
            ..self.file_meta(file, st)?
        };
        let existing = self.target.head(&key).map_err(|e| Outcome::failed(e.to_string()))?;
        let recorded = match existing.as_ref().and_then(|o| o.meta.as_ref()) {
            Some(Ok(m))
                if m.link.as_ref().is_some_and(|l| l.id == link.id)
                    && (!self.args.overwrite || same_file(m, &ours)) =>
            {
                return Ok(());
            }
            Some(Ok(m)) => m.path.clone(),
            _ => None,
        };
        let meta = ObjectMeta { path: recorded, ..ours };
        let sent = self
            .target
            .upload(&key, file, meta)
            .map_err(|e| Outcome::failed(format!("copy to endpoint `{}` failed: {e}", self.target.name())))?;
        if sent.hash != state.hash {
            return Err(Outcome::failed(format!(
                "the file's content changed since it was sent to {data_key}; migrate its names again"
            )));
        }
        Ok(())
    }

    /// Records the hard-link names of a window (input index, index of the
    /// name handled for their file): each gets its record once that name's
    /// object is committed; a name that needs none keeps the link outcome.
    fn link_names(&self, chunk: &[PathObject], linked: &[(usize, usize)], outcomes: &mut [Outcome]) {
        let mut recorded = Vec::new();
        for &(i, first) in linked {
            if !matches!(outcomes[first].state, FileState::Processed | FileState::Skipped) {
                continue;
            }
            let path = &chunk[i].path;
            let step = super::open_file(path, false)
                .map_err(|e| e.outcome(self.op(), self.args.abort_missing))
                .and_then(|f| {
                    let st = Snap::of(&f).map_err(|e| io_failure("stat", e))?;
                    let done = Outcome::skipped("another name of a file migrated in this batch");
                    self.link_name(path, &f, &st, done)
                });
            match step {
                Ok(Step::Recorded(_)) => recorded.push(i),
                Err(o) if o.state == FileState::Failures => outcomes[i] = o,
                // Nothing to record: the name keeps its link outcome.
                _ => {}
            }
        }
        if recorded.is_empty() {
            return;
        }
        // A recorded name keeps its link outcome (skipped: its file was
        // handled through the other name), unless the record is not durable.
        if let Err(e) = self.target.sync() {
            for i in recorded {
                outcomes[i] = Outcome::failed(format!("{e}; hard-link record not durable"));
            }
        }
    }

    fn modified(&self) -> Outcome {
        let msg = "modified during migrate (size, mtime or ctime changed); not stubbed, migrate it again later";
        if self.args.skip_modified_during_migrate {
            Outcome::skipped(msg)
        } else {
            Outcome::failed(msg)
        }
    }

    /// Whether a migrated file whose mtime differs from its state is a stub
    /// that ferry was stopped in the middle of making: same size, and no
    /// data beyond the stub's head (the punch happened, the mtime was not
    /// yet restored), and a head that still equals the object's. A stub
    /// written into after migration differs in one or the other.
    fn interrupted_stub(&self, file: &File, now: &Snap, s: &HsmState, key: &[u8]) -> bool {
        let head = now.stub_offset(s.stub_size).min(now.size);
        if now.size != s.size || !matches!(next_data(file, head), Ok(None)) {
            return false;
        }
        let Some(key) = self.verified_object(key, s) else {
            return false;
        };
        let mut local = vec![0u8; head as usize];
        matches!(self.target.download_head(&key, head), Ok(theirs) if file.read_exact_at(&mut local, 0).is_ok() && theirs == local)
    }

    /// An already-migrated file: skipped, after checking its object when
    /// `migrate_offline_files` asks for it.
    fn already_migrated(&self, key: &[u8], s: &HsmState) -> Result<Step, Outcome> {
        if !self.args.migrate_offline_files {
            return Err(Outcome::skipped("already migrated"));
        }
        match self.verified_object(key, s) {
            Some(_) => Err(Outcome::skipped("already migrated; object verified")),
            None => Err(Outcome::failed(format!(
                "file is a stub but endpoint `{}` does not hold its object as recorded",
                self.target.name()
            ))),
        }
    }

    /// The object at `key` if the endpoint holds it with the size and hash
    /// the state records.
    fn verified_object(&self, key: &[u8], s: &HsmState) -> Option<ObjPath> {
        let key = super::cloud::parse_key(self.target.name(), key).ok()?;
        match self.target.head(&key) {
            Ok(Some(obj)) if obj.size == s.size && matches!(&obj.meta, Some(Ok(m)) if m.hash == s.hash) => Some(key),
            _ => None,
        }
    }

    /// The object metadata of `file`, without its hash yet.
    fn file_meta(&self, file: &File, st: &Snap) -> Result<ObjectMeta, Outcome> {
        Ok(ObjectMeta {
            size: st.size,
            hash: blake3::Hash::from_bytes([0; 32]),
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            mtime: st.mtime,
            atime: st.atime,
            xattrs: self
                .ctx
                .xattrs
                .copied_xattrs(file)
                .map_err(|e| io_failure("reading xattrs", e))?,
            path: None,
            kind: EntryKind::File,
            link: link_id(file, st),
        })
    }

    /// Whether the object at `key` holds the content `s` records and the
    /// metadata the file has now. An object that cannot be read is not.
    fn object_is_current(&self, file: &File, before: &Snap, key: &[u8], s: &HsmState) -> Result<bool, Outcome> {
        let Ok(key) = super::cloud::parse_key(self.target.name(), key) else {
            return Ok(false);
        };
        let ours = ObjectMeta {
            hash: s.hash,
            ..self.file_meta(file, before)?
        };
        Ok(matches!(self.target.head(&key), Ok(Some(obj)) if obj.size == ours.size
            && matches!(&obj.meta, Some(Ok(theirs)) if same_file(theirs, &ours))))
    }

    /// Decides where the copy goes when the key may already hold an object.
    fn choose_key(&self, file: &File, key: ObjPath, meta: &ObjectMeta) -> Result<KeyChoice, Outcome> {
        let remote_failure = |e| Outcome::failed(format!("{e}"));
        let Some(existing) = self.target.head(&key).map_err(remote_failure)? else {
            return Ok(KeyChoice::Write(key));
        };
        if self.args.overwrite || matches!(&existing.meta, Some(Ok(m)) if m.kind != EntryKind::File) {
            // A directory's or link's record holds no data: a file that
            // took the link's place replaces it.
            return Ok(KeyChoice::Write(key));
        }
        if existing.meta.is_none() && existing.size == meta.size {
            // An object without ferry's metadata is, most likely, this very
            // file's upload cut off between its data and its metadata (a
            // crash); no file records it, since locations are recorded only
            // after the metadata is verified. If it holds the file's content
            // it is written again in place, with its metadata; anything else
            // is left alone and a new instance goes beside it.
            let ours = crate::endpoint::hash_file(file, meta.size).map_err(|e| io_failure("reading", e))?;
            if self
                .target
                .download(&key, existing.size, &mut |_| Ok(()))
                .is_ok_and(|theirs| theirs == ours)
            {
                return Ok(KeyChoice::Write(key));
            }
        }
        if let Some(Ok(theirs)) = &existing.meta {
            let mut ours = meta.clone();
            ours.hash = crate::endpoint::hash_file(file, meta.size).map_err(|e| io_failure("reading", e))?;
            if theirs.size == ours.size && same_file(theirs, &ours) {
                return Ok(KeyChoice::Reuse(key, ours));
            }
        }
        if self.args.fail_on_mismatch {
            return Err(Outcome::failed(format!(
                "endpoint `{}` already holds a different object at {key} (fail_on_mismatch)",
                self.target.name()
            )));
        }
        Ok(KeyChoice::Write(self.target.instance_key(&key)))
    }

    /// Verifies the object and records the file as premigrated or stubbed.
    fn commit(&self, p: Pending) -> Outcome {
        let outcome = self.try_commit(&p);
        if p.fresh && outcome.state != FileState::Processed {
            let ours = self.ctx.xattrs.location(&p.file, self.target.name());
            if !matches!(ours, Ok(Some(k)) if k == p.key.as_ref().as_bytes()) {
                // Best effort: what stays is a committed object no file
                // names, which a later migrate of the file reuses.
                let _ = self.target.delete(&p.key);
            }
        }
        outcome
    }

    fn try_commit(&self, p: &Pending) -> Outcome {
        if let Err(e) = self.locking.at_commit(&p.file) {
            return e.into();
        }
        match self.target.head(&p.key) {
            Ok(Some(obj)) if obj.size == p.meta.size && matches!(&obj.meta, Some(Ok(m)) if m.hash == p.meta.hash) => {}
            Ok(_) => {
                return Outcome::failed(format!(
                    "endpoint `{}` does not hold the object as written at {}; file left as it was",
                    self.target.name(),
                    p.key
                ));
            }
            Err(e) => return Outcome::failed(format!("{e}; file left as it was")),
        }
        if self.args.premigrate {
            return match self.check_and_record(p, Residency::Premigrated) {
                Ok(_) => Outcome::processed(),
                Err(o) => o,
            };
        }
        // The lease comes before the last check: once it is held no other
        // process can open the file, so nothing can change it between the
        // check and the punch.
        let leased = match set_lease(&p.file, Lease::Write) {
            Ok(()) => true,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {
                return match self.check_and_record(p, Residency::Premigrated) {
                    Ok(_) => Outcome::failed(
                        "file is open in another process; premigrated but not stubbed (its data is safe at the endpoint)",
                    ),
                    Err(o) => o,
                };
            }
            // No lease support here (NFS, some FUSE filesystems): rely on
            // the stat checks alone.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) => false,
            Err(e) => return io_failure("taking a lease", e),
        };
        let result = self
            .check_and_record(p, Residency::Migrated)
            .and_then(|state| self.stub(p, &state));
        if leased {
            let _ = set_lease(&p.file, Lease::None);
        }
        result.unwrap_or_else(|o| o)
    }

    /// Checks that the file did not change since it was opened (size,
    /// mtime and ctime), then records its location and its state. Other
    /// endpoints' locations stay only if they hold this same content.
    fn check_and_record(&self, p: &Pending, residency: Residency) -> Result<HsmState, Outcome> {
        let xattrs = &self.ctx.xattrs;
        let now = Snap::of(&p.file).map_err(|e| io_failure("stat", e))?;
        let current = xattrs.state(&p.file).map_err(|e| io_failure("reading xattrs", e))?;
        if !p.before.unchanged(&now) {
            let done_elsewhere = matches!(&current, Some(Ok(s))
                if s.residency == residency && s.hash == p.meta.hash && s.size == now.size && s.mtime == now.mtime);
            return Err(if done_elsewhere {
                Outcome::skipped("migrated meanwhile by another operation")
            } else {
                self.modified()
            });
        }
        let same_content = matches!(&current, Some(Ok(s)) if s.hash == p.meta.hash);
        if !same_content {
            let io = |e| io_failure("removing stale location xattrs", e);
            for (endpoint, _) in xattrs.locations(&p.file).map_err(io)? {
                if endpoint != self.target.name() {
                    xattrs.remove_location(&p.file, &endpoint).map_err(io)?;
                }
            }
        }
        xattrs
            .set_location(&p.file, self.target.name(), p.key.as_ref())
            .map_err(|e| io_failure("writing xattrs", e))?;
        let state = HsmState {
            residency,
            size: p.before.size,
            mtime: p.before.mtime,
            stub_size: self.args.stub_size,
            hash: p.meta.hash,
        };
        if let Err(e) = xattrs.set_state(&p.file, &state) {
            // A location without a state would name an object no stub
            // needs; take it back so the file is as it was.
            let _ = xattrs.remove_location(&p.file, self.target.name());
            return Err(io_failure("writing xattrs", e));
        }
        Ok(state)
    }

    /// Punches a file already recorded as migrated and restores its times.
    /// A punch that fails leaves the state migrated: part of the range may
    /// be gone already, and recall compares what the file still holds
    /// before it fills the rest.
    fn stub(&self, p: &Pending, state: &HsmState) -> Result<Outcome, Outcome> {
        // The punch runs to the end of the last block, so a partial final
        // block is freed too.
        let offset = p.before.stub_offset(state.stub_size);
        let end = p.before.stub_offset(p.before.size);
        if offset < p.before.size {
            punch_hole(&p.file, offset, end - offset)
                .map_err(|e| io_failure("punching the data out (recorded as migrated; recall restores it)", e))?;
        }
        set_times(&p.file, p.before.atime, p.before.mtime).map_err(|e| io_failure("restoring times", e))?;
        Ok(Outcome::processed())
    }
}

enum KeyChoice {
    /// The key already holds this exact content and metadata.
    Reuse(ObjPath, ObjectMeta),
    /// Write the copy here.
    Write(ObjPath),
}

/// The link identity of a file with several names: its device, inode
/// and inode generation, so a number reused by a later file never matches.
/// `None` for a file with one name, or where the filesystem gives no
/// generation (its names then travel as separate files: no identity, no
/// link, never a wrong one).
fn link_id(file: &File, st: &Snap) -> Option<LinkId> {
    if st.nlink < 2 {
        return None;
    }
    let generation = crate::sys::inode_generation(file.as_fd()).ok()?;
    Some(LinkId {
        id: format!("{:x}:{:x}:{generation:x}", st.id.0, st.id.1),
        nlink: st.nlink,
    })
}

/// Same content and the metadata a restore would apply (atime aside).
fn same_file(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.hash == b.hash
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
}

fn io_failure(what: &str, e: io::Error) -> Outcome {
    Outcome::with(FileState::Failures, format!("{what}: {e}"))
}
