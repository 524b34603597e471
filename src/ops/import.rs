//! `import_files_from_external_target` and `copy_files_from_external_target`:
//! build local files from an endpoint's objects named by key, not by local
//! path (the seed's "remote object paths", `projects/`).
//!
//! Each input is an object key or a key prefix, relative to the endpoint's
//! prefix: a key that holds an object imports it; otherwise (or with a
//! trailing `/`) every object under the prefix is imported, a page of
//! [`crate::endpoint::LIST_PAGE`] keys at a time (never the whole listing
//! in memory), the directory's own object (`<prefix>#d`) last. Each object
//! goes to its path under the endpoint's local root, or with `location`
//! under that directory, keeping its path from the input's last component
//! down (`projects/a/f` from `projects/` with location `/mnt/x` goes to
//! `/mnt/x/projects/a/f`).
//!
//! The building is reverse_stub's ([`super::reverse_stub::Importer`]): an
//! import makes stubs (or premigrated files with `hydrate`) linked to the
//! endpoint; a copy makes plain local files with no location or state, and
//! with `ignore_metadata` owned by `default_uid`/`default_gid`, mode 0644
//! (directories 0755), times now and no xattrs. An object another tool
//! wrote (no ferry metadata) is imported whole, mode 0644, owned by
//! `default_uid`/`default_gid` (else root), with the object's
//! last-modified time, and recorded with the hash of what was read.
//!
//! One outcome per input: processed when every object under it was built
//! or already there, failed (naming the first failures) otherwise.

use super::lock::LockLevel;
use super::reverse_stub::{Importer, ReverseStubArgs};
use super::{OpContext, OpError, chosen_times, par_map};
use crate::endpoint::{Endpoint, EntryKind, ObjectMeta, key};
use crate::sys::Timestamp;
use crate::task::{ArgumentError, FileState, Outcome, PathObject};
use object_store::path::Path as ObjPath;
use serde::Deserialize;

/// The seed's import and copy arguments (one set: a copy ignores
/// `hydrate`, an import `ignore_metadata`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImportArgs {
    /// Endpoint holding the objects (required).
    pub endpoint: Option<String>,
    /// Locking level (default `implicit`): the lock is on a local file
    /// being replaced.
    pub lock_level: Option<LockLevel>,
    /// Absolute local directory to import under, instead of the endpoint's
    /// local root.
    pub location: Option<String>,
    /// Premigrated files instead of stubs (imports).
    pub hydrate: bool,
    /// Arguments for Ngenea's recall command; accepted and unused (ferry
    /// has no such command).
    pub extra_flags: Vec<serde_json::Value>,
    /// Do not check a whole file's hash.
    pub skip_hash: bool,
    /// Owner of objects that record none (and of copies with
    /// `ignore_metadata`): a number, or a string of digits.
    pub default_uid: Option<Id>,
    /// Group, as `default_uid`.
    pub default_gid: Option<Id>,
    /// Set the access time to now.
    pub update_atime: bool,
    /// Set the modification time to now.
    pub update_mtime: bool,
    /// Copies only: take no owner, mode, times or xattrs from the objects.
    pub ignore_metadata: bool,
}

/// A user or group id as a task gives it: a number or a string of digits.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A number.
    Number(u32),
    /// Digits in a string.
    Text(String),
}

impl Id {
    /// The id; `name` is the argument's, for the error.
    pub(crate) fn value(&self, name: &str) -> Result<u32, ArgumentError> {
        match self {
            Id::Number(n) => Ok(*n),
            Id::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| ArgumentError::invalid(name, format!("must be a numeric id, not {t:?}"))),
        }
    }
}

/// Imports (or, with `copy`, copies) the objects each input names.
pub fn import(ctx: &OpContext, args: &ImportArgs, copy: bool, inputs: &[PathObject]) -> Result<Vec<Outcome>, OpError> {
    let endpoint = args
        .endpoint
        .as_deref()
        .ok_or_else(|| ArgumentError::invalid("endpoint", "required: the endpoint to import from"))?;
    let location = location_arg(&args.location)?;
    let uid = args.default_uid.as_ref().map(|i| i.value("default_uid")).transpose()?;
    let gid = args.default_gid.as_ref().map(|i| i.value("default_gid")).transpose()?;
    let rs = ReverseStubArgs {
        endpoint: Some(endpoint.to_string()),
        hydrate: args.hydrate || copy,
        skip_hash: args.skip_hash,
        lock_level: args.lock_level,
        update_atime: args.update_atime,
        update_mtime: args.update_mtime,
        ..ReverseStubArgs::default()
    };
    let importer = Importer::new(ctx, &rs, endpoint, copy)?;
    let job = Job {
        importer,
        location,
        owner: (uid.unwrap_or(0), gid.unwrap_or(0)),
        ignore_metadata: copy && args.ignore_metadata,
    };
    Ok(inputs
        .iter()
        .map(|input| {
            let outcome = job.input(ctx, &input.path);
            ctx.count(&outcome, 0);
            outcome
        })
        .collect())
}

struct Job<'a> {
    importer: Importer<'a>,
    location: Option<Vec<u8>>,
    owner: (u32, u32),
    ignore_metadata: bool,
}

/// How the objects under one input went.
#[derive(Default)]
struct Tally {
    done: u64,
    skipped: u64,
    failed: Vec<String>,
    failures: u64,
}

impl Tally {
    fn add(&mut self, key: &ObjPath, o: Outcome) {
        match o.state {
            FileState::Processed => self.done += 1,
            FileState::Skipped => self.skipped += 1,
            _ => {
                self.failures += 1;
                if self.failed.len() < 3 {
                    self.failed.push(format!("{key}: {}", o.message.unwrap_or_default()));
                }
            }
        }
    }
}

impl Job<'_> {
    fn input(&self, ctx: &OpContext, input: &[u8]) -> Outcome {
        let (rel, parent) = match input_key(input) {
            Ok(k) => k,
            Err(o) => return o,
        };
        let target = self.importer.target();
        let full = |k: &str| target.store_key(k);
        let trimmed = rel.trim_end_matches('/');
        if !rel.ends_with('/') && !rel.is_empty() {
            let key = match full(rel) {
                Ok(k) => k,
                Err(e) => return Outcome::failed(e.to_string()),
            };
            match target.head(&key) {
                Ok(Some(_)) => return self.object(&key, parent),
                Ok(None) => {}
                Err(e) => return Outcome::failed(e.to_string()),
            }
        }
        let mut tally = Tally::default();
        let mut token: Option<String> = None;
        loop {
            let page = match target.list(trimmed, token.as_deref()) {
                Ok(p) => p,
                Err(e) => return Outcome::failed(format!("listing {trimmed}/: {e}")),
            };
            let outcomes = par_map(page.keys.iter().collect(), ctx.threads, |k: &ObjPath| {
                self.object(k, parent)
            });
            for (k, o) in page.keys.iter().zip(outcomes) {
                tally.add(k, o);
            }
            match page.next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        // The directory's own object, after its contents.
        if !trimmed.is_empty()
            && let Ok(dir) = full(&key::dir_key(trimmed))
            && matches!(target.head(&dir), Ok(Some(_)))
        {
            let o = self.object(&dir, parent);
            tally.add(&dir, o);
        }
        let total = tally.done + tally.skipped + tally.failures;
        if total == 0 {
            return Outcome::failed(format!("endpoint `{}` has no object at or under {rel}", target.name()));
        }
        let summary = format!(
            "{} object(s): {} imported, {} already there, {} failed",
            total, tally.done, tally.skipped, tally.failures
        );
        let mut o = if tally.failures == 0 {
            Outcome::processed()
        } else {
            Outcome::failed(format!("{summary}; first: {}", tally.failed.join("; ")))
        };
        if tally.failures == 0 {
            o.message = Some(summary);
        }
        o
    }

    /// Imports the object at `key` (a full store key) from an input whose
    /// parent is `parent`.
    fn object(&self, key: &ObjPath, parent: &str) -> Outcome {
        let target = self.importer.target();
        let obj = match target.head(key) {
            Ok(Some(o)) => o,
            Ok(None) => return Outcome::failed(format!("object {key} is gone")),
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let (mut meta, verified) = match obj.meta {
            Some(Ok(m)) if m.size == obj.size => (m, true),
            Some(Ok(_)) => return Outcome::failed(format!("object at {key} does not match its metadata")),
            Some(Err(e)) => return Outcome::failed(format!("object at {key}: {e}")),
            None => {
                let t = Timestamp::of(obj.modified);
                let meta = ObjectMeta {
                    size: obj.size,
                    hash: blake3::Hash::from_bytes([0; 32]),
                    mode: libc::S_IFREG | 0o644,
                    uid: self.owner.0,
                    gid: self.owner.1,
                    mtime: t,
                    atime: t,
                    xattrs: Vec::new(),
                    path: None,
                    kind: EntryKind::File,
                    link: None,
                };
                (meta, false)
            }
        };
        if self.ignore_metadata {
            let now = chosen_times(true, true, meta.atime, meta.mtime);
            let perm = if meta.kind == EntryKind::Directory {
                0o755
            } else {
                0o644
            };
            meta.mode = (meta.mode & libc::S_IFMT) | perm;
            (meta.uid, meta.gid) = self.owner;
            (meta.atime, meta.mtime) = now;
            meta.xattrs.clear();
        }
        let directory = meta.kind == EntryKind::Directory;
        let path = match destination(
            target,
            self.location.as_deref(),
            key,
            meta.path.as_deref(),
            directory,
            parent,
        ) {
            Ok(p) => p,
            Err(o) => return o,
        };
        match self.importer.build(&path, key, &meta, verified) {
            Ok(_) => Outcome::processed(),
            Err(o) => o,
        }
    }
}

/// Where the object at `key` goes: its path under the endpoint's root, or
/// under `location` from the input's last component down (`parent` is the
/// input's parent key). `recorded` is the path the object's metadata
/// records, if any; `directory` for a directory's own object.
pub(crate) fn destination(
    target: &Endpoint,
    location: Option<&[u8]>,
    key: &ObjPath,
    recorded: Option<&[u8]>,
    directory: bool,
    parent: &str,
) -> Result<Vec<u8>, Outcome> {
    let outside = || Outcome::failed(format!("object {key} is not under the endpoint's prefix"));
    Ok(match location {
        None => target.local_path(key, recorded, directory).ok_or_else(outside)?,
        Some(loc) => {
            let rel = target.relative(key, recorded, directory).ok_or_else(outside)?;
            let parent = key::decode(parent);
            let below = rel
                .strip_prefix(parent.as_slice())
                .map(|r| r.strip_prefix(b"/").unwrap_or(r))
                .unwrap_or(&rel);
            [loc, b"/", below].concat()
        }
    })
}

/// The absolute `location` argument, without a trailing slash.
pub(crate) fn location_arg(location: &Option<String>) -> Result<Option<Vec<u8>>, ArgumentError> {
    match location {
        // A workflow's field left empty: not given.
        Some(l) if l.is_empty() => Ok(None),
        Some(l) if !l.starts_with('/') => Err(ArgumentError::invalid(
            "location",
            format!("must be an absolute path, not {l:?}"),
        )),
        Some(l) => Ok(Some(l.trim_end_matches('/').as_bytes().to_vec())),
        None => Ok(None),
    }
}

/// The key an input names (leading `/` dropped) and its parent key.
pub(crate) fn input_key(input: &[u8]) -> Result<(&str, &str), Outcome> {
    let text = std::str::from_utf8(input).map_err(|_| Outcome::failed("an object key is UTF-8; this input is not"))?;
    let rel = text.trim_start_matches('/');
    let parent = rel.trim_end_matches('/').rsplit_once('/').map_or("", |(p, _)| p);
    Ok((rel, parent))
}
