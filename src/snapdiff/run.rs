//! One snapdiff run, end to end: lock the fileset, take a snapshot, read it
//! into a manifest, diff it against the last synced one, hand every change
//! to the caller, then rotate (the new snapshot becomes the last synced one
//! and older ones are deleted) or roll back.

use super::build::ManifestBuilder;
use super::diff::{Change, DeltaWriter, DiffOptions, DiffSummary, Listing, OwnChanges, diff};
use super::manifest::{Header, Kind, ManifestError, ManifestReader, ManifestWriter};
use super::memory::{BudgetError, CHANGE_MEMORY, Memory};
use super::own_xattrs::OwnXattrs;
use super::provider::{ChangesQuery, ChangesRead, Provider, ScanError, SnapshotError, with_retries};
pub use super::report::{ReadMethod, RunEnd, SnapdiffReport};
use super::set::{self, BaselineRecords, Compaction, new_id};
use super::state::{AcquireError, Lock, LockInfo, StateDir, hostname, synced, write_atomic, written};
use super::view::{Entries, InMemory, View};
use crate::config::defaults;
use crate::task::status::now_iso8601;
use serde::{Deserialize, Serialize};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::NamedTempFile;

/// Where a run's changes go. `finish` must make them durable (or
/// delivered): the run rotates only after it succeeds.
pub trait ChangeSink {
    /// Told once, before the first change, how many changes the run hands
    /// over (at most: changes of the run's own state files are left out),
    /// for sinks that size batches by the total.
    fn expect(&mut self, _total: u64) {}
    /// Takes one change, in apply order.
    fn change(&mut self, c: &Change) -> io::Result<()>;
    /// Called once after the last change, before the run rotates.
    fn finish(&mut self) -> io::Result<()>;
}

/// Writing nothing (a summary-only run) is a sink too.
impl<S: ChangeSink> ChangeSink for Option<S> {
    fn expect(&mut self, total: u64) {
        if let Some(s) = self {
            s.expect(total);
        }
    }

    fn change(&mut self, c: &Change) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.change(c))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.finish())
    }
}

/// Collecting changes in memory (tests, small filesets).
impl ChangeSink for Vec<Change> {
    fn change(&mut self, c: &Change) -> io::Result<()> {
        self.push(c.clone());
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct SnapdiffOptions {
    /// Where the last-snap, manifest and lock files live (default
    /// `<fs root>/.rotate`).
    pub state_dir: Option<PathBuf>,
    /// Prefix of snapshot and state file names.
    pub prefix: String,
    /// Age after which a lock is stale (seed `lock_threshold`, 86400 s).
    pub lock_threshold: Duration,
    /// How long to retry snapshot creation and deletion (seed
    /// `snapshot_create_delete_retry_timeout`, 1000 s).
    pub retry_timeout: Duration,
    /// Diff settings.
    pub diff: DiffOptions,
    /// The run's memory budget in bytes (`--mem-limit`): the whole
    /// process's peak resident set stays within it (see [`Memory`]).
    pub memory: usize,
    /// Walker threads.
    pub threads: usize,
    /// Diff, but leave no trace: the new snapshot is deleted and the state
    /// is not rotated.
    pub dry_run: bool,
    /// Keep the lock and the new snapshot after the diff, for a later
    /// `rotate` to commit or roll back.
    pub hold: bool,
    /// Roll back a run still held from before, then run: for callers whose
    /// held runs belong to jobs that may have ended without their rotate
    /// (a cancelled bidirectional sync), so that one never blocks the next.
    pub supersede: bool,
    /// Who a held run is for (a job): a superseding run held for the same
    /// owner is the same run asked again (its task redelivered), and hands
    /// the held diff over again instead of taking a new snapshot.
    pub owner: Option<String>,
    /// Read the whole snapshot even where the provider could read only
    /// what changed.
    pub full: bool,
    /// Share of the fileset's entries past which a read of changes gives
    /// up for a full read ([`CHANGES_LIMIT`]; 1 never gives up).
    pub changes_limit: f64,
    /// The prefix of ferry's own xattrs (the configuration's
    /// `xattr_prefix`): an inode whose ctime alone changed, and whose other
    /// xattrs are the same in both snapshots, is unchanged
    /// ([`super::own_xattrs`]). `None` reports every ctime change.
    pub own_xattrs: Option<String>,
}

impl Default for SnapdiffOptions {
    fn default() -> Self {
        SnapdiffOptions {
            state_dir: None,
            prefix: defaults::STATE_PREFIX.into(),
            lock_threshold: defaults::LOCK_THRESHOLD,
            retry_timeout: defaults::SNAPSHOT_RETRY_TIMEOUT,
            diff: DiffOptions::default(),
            memory: defaults::SNAPDIFF_MEMORY,
            threads: defaults::walk_threads(),
            dry_run: false,
            hold: false,
            supersede: false,
            owner: None,
            full: false,
            changes_limit: CHANGES_LIMIT,
            own_xattrs: Some(defaults::XATTR_PREFIX.into()),
        }
    }
}

/// A read of changes gives up past this share of the fileset's entries
/// changed: a full read is cheaper then (the study's ~40 %).
pub const CHANGES_LIMIT: f64 = 0.4;

/// Why a run failed. Every failure rolls back: the new snapshot is
/// deleted and the last-snap file is untouched.
#[derive(Debug, thiserror::Error)]
pub enum SnapdiffError {
    /// The fileset could not be opened with the requested provider.
    #[error("{}: {source}", path.display())]
    Open {
        /// The fileset's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another run holds the lock.
    #[error("{0}")]
    Lock(#[from] AcquireError),
    /// A snapshot could not be taken.
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// The snapshot could not be read completely.
    #[error("{0}")]
    Scan(#[from] ScanError),
    /// No baseline where one should be.
    #[error(
        "the last synced snapshot {0} has neither a manifest nor a snapshot any more; \
         remove {1} to sync everything again"
    )]
    NoBaseline(String, String),
    /// Diffing failed.
    #[error("{0}")]
    Diff(#[from] super::diff::DiffError),
    /// The manifest could not be written.
    #[error("{0}")]
    Manifest(#[from] super::manifest::ManifestError),
    /// The consumer of the changes failed (nothing is rotated).
    #[error("writing changes failed: {0}")]
    Output(io::Error),
    /// State files could not be read or written.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// `--mem-limit` cannot hold the run.
    #[error("{0}")]
    Memory(#[from] BudgetError),
    /// `rotate` found no held run.
    #[error("no held run for this fileset ({0} does not exist)")]
    NotHeld(String),
}

/// A run held open by `--hold`.
#[derive(Serialize, Deserialize)]
struct Pending {
    run: String,
    snapshot: String,
    old_snapshot: Option<String>,
    started: String,
    /// [`SnapdiffOptions::owner`] of the run.
    #[serde(default)]
    owner: Option<String>,
}

struct Ctx<'a> {
    provider: &'a dyn Provider,
    opts: &'a SnapdiffOptions,
    memory: Memory,
    state: StateDir,
    log: &'a mut dyn FnMut(&str),
}

impl Ctx<'_> {
    fn retry<T>(&mut self, op: impl FnMut() -> Result<T, SnapshotError>) -> Result<T, SnapshotError> {
        let log = &mut self.log;
        with_retries(self.opts.retry_timeout, op, |e, wait| {
            log(&format!("{e}; retrying in {:.1}s", wait.as_secs_f64()))
        })
    }

    fn delete_snapshot(&mut self, name: &str) -> Result<(), SnapshotError> {
        let p = self.provider;
        self.retry(|| p.delete_snapshot(name))
    }

    /// Reads `snapshot` (or the live tree) into a sorted builder, with the
    /// header of the manifest it makes.
    fn scan(&mut self, snapshot: Option<&str>) -> Result<(ManifestBuilder, Header), SnapdiffError> {
        let mut b = ManifestBuilder::new(self.memory.work, &self.state.dir);
        self.provider.scan(snapshot, &mut b, self.opts.threads)?;
        let header = Header {
            root: self.provider.fileset().path.clone(),
            root_ino: b.root_ino().unwrap_or(0),
            provider: self.provider.kind().into(),
            snapshot: snapshot.map(str::to_string),
            created: now_iso8601(),
            created_unix: jiff::Timestamp::now().as_second(),
            generation: self.provider.generation_source().as_str().into(),
            kind: Kind::Base,
            otransid: match snapshot {
                Some(s) => self.provider.snapshot_transid(s)?,
                None => None,
            },
            journal: snapshot.and_then(|s| self.provider.snapshot_journal(s)),
            barrier: snapshot.and_then(|s| self.provider.snapshot_barrier(s)),
            id: new_id(),
        };
        Ok((b, header))
    }

    /// A file for a manifest being written, under a temporary name in the
    /// state directory (so that committing it is a rename).
    fn temp(&self) -> io::Result<BufWriter<NamedTempFile>> {
        let file = tempfile::Builder::new()
            .prefix(&self.state.manifest_temp_prefix())
            .tempfile_in(&self.state.dir)?;
        Ok(BufWriter::with_capacity(256 << 10, file))
    }

    /// Reads `snapshot` into a base manifest file; returns it, synced.
    fn build(&mut self, snapshot: Option<&str>) -> Result<NamedTempFile, SnapdiffError> {
        let (b, header) = self.scan(snapshot)?;
        let (w, _) = b.write(self.temp()?, &header)?;
        Ok(synced(w)?)
    }

    /// Renames what a run wrote into place as the manifest of `snap`: a
    /// base, or a delta and the set file naming it after `prev`'s files.
    fn install(&self, snap: &str, prev: Option<&str>, built: Built) -> Result<(), SnapdiffError> {
        match built {
            Built::Base(f) => {
                f.persist(self.state.manifest_path(snap)).map_err(|e| e.error)?;
            }
            Built::Delta { file, entries, records } => {
                let prev = prev.expect("a delta has a baseline");
                let set = self.state.set_with_delta(prev, snap, file.path(), entries)?;
                if records > 0 {
                    file.persist(self.state.delta_path(snap)).map_err(|e| e.error)?;
                }
                self.state.write_set(&set)?;
            }
        }
        Ok(())
    }

    /// Makes `snap` the last synced snapshot, then deletes older snapshots
    /// and manifest files; failures to delete are warnings.
    fn commit(&mut self, snap: &str, warnings: &mut Vec<String>) -> Result<(), SnapdiffError> {
        self.state.set_last_snapshot(snap)?;
        let prefix = self.state.snapshot_prefix();
        for old in self.provider.snapshots()? {
            if old.starts_with(&prefix)
                && old != snap
                && let Err(e) = self.delete_snapshot(&old)
            {
                warnings.push(format!("old snapshot {old} was not deleted: {e}"));
            }
        }
        for stale in self.state.stale_manifests(snap)? {
            if let Err(e) = std::fs::remove_file(&stale) {
                warnings.push(format!("{}: {e}", stale.display()));
            }
        }
        Ok(())
    }

    /// Compacts `snap`'s manifest if its deltas have grown (after a
    /// commit: a failure costs nothing but a warning).
    fn compact(&mut self, snap: &str, warnings: &mut Vec<String>) -> Option<Compaction> {
        match set::compact(&self.state, snap, false) {
            Ok(Some((c, w))) => {
                warnings.extend(w);
                Some(c)
            }
            Ok(None) => None,
            Err(e) => {
                warnings.push(format!("the manifest of {snap} was not compacted: {e}"));
                None
            }
        }
    }

    fn rollback(&mut self, snap: &str) -> Result<(), SnapdiffError> {
        if self.provider.has_snapshots() {
            self.delete_snapshot(snap)?;
        }
        self.state.remove_run(snap)?;
        Ok(())
    }

    /// The baseline: the last synced snapshot's manifest (`opened`, as
    /// opening it went), rebuilt from the snapshot itself if it is lost.
    fn baseline(&mut self, last: &str, opened: Result<View, ManifestError>) -> Result<View, SnapdiffError> {
        match opened {
            Ok(v) => return Ok(v),
            Err(ManifestError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if !self.provider.has_snapshots() || !self.provider.snapshots()?.iter().any(|s| s == last) {
            return Err(SnapdiffError::NoBaseline(
                last.to_string(),
                self.state.lastsnap_path().display().to_string(),
            ));
        }
        (self.log)(&format!("rebuilding the manifest of snapshot {last}"));
        let f = self.build(Some(last))?;
        self.state.remove_run(last)?;
        f.persist(self.state.manifest_path(last)).map_err(|e| e.error)?;
        Ok(self.state.open_view(last)?)
    }
}

impl Ctx<'_> {
    /// What a full read reads: the snapshot, or the live tree.
    fn whole(&self) -> &'static str {
        if self.provider.has_snapshots() {
            "snapshot"
        } else {
            "tree"
        }
    }

    /// Reads only what changed in snapshot `snap` since `last`, diffs it
    /// against the baseline `old` and hands the changes to `sink`, where
    /// the provider can (btrfs with the baseline's `otransid` recorded) and
    /// less than [`SnapdiffOptions::changes_limit`] of the fileset changed. Otherwise hands
    /// the baseline back for a full read. `seconds` gets the time spent
    /// finding the changes.
    fn read_changes(
        &mut self,
        old: Option<View>,
        last: Option<&str>,
        snap: &str,
        sink: &mut dyn ChangeSink,
        seconds: &mut f64,
    ) -> Result<ChangesDiff, SnapdiffError> {
        let (Some(mut old), Some(last)) = (old, last) else {
            return Ok(ChangesDiff::ReadAll(None));
        };
        let since = old.header().otransid;
        let same_source = old.header().generation == self.provider.generation_source().as_str();
        let can = same_source && !self.opts.full && self.opts.diff.condense_moves && self.provider.reads_changes();
        let Some(since) = since.filter(|_| can) else {
            if can {
                let msg = format!(
                    "the last run ({last}) has no position to read changes from: reading the whole {}",
                    self.whole()
                );
                (self.log)(&msg);
            }
            return Ok(ChangesDiff::ReadAll(Some(old)));
        };
        let t = Instant::now();
        let prev_entries = old.entries();
        // The changed inodes are held in memory: past what the budget
        // holds, a full read (which spills) is the way.
        let by_share = if self.opts.changes_limit >= 1.0 {
            usize::MAX
        } else {
            (prev_entries as f64 * self.opts.changes_limit) as usize
        };
        let held = self.memory.work / CHANGE_MEMORY;
        let limit = by_share.min(held);
        let old_dirs = old.dir_table()?;
        // Ranges of about equal numbers of inodes, one per thread (inode
        // numbers are handed out in increasing order, so an even cut of
        // the old manifest's range is near enough).
        let threads = self.opts.threads.max(1) as u64;
        let split: Vec<u64> = old
            .max_ino()
            .map(|top| {
                (1..threads)
                    .map(|i| 256 + (top.saturating_sub(256)) * i / threads)
                    .collect()
            })
            .unwrap_or_default();
        let mut old_records = BaselineRecords::new(&self.state, last, &split);
        let query = ChangesQuery {
            old: last,
            new: snap,
            since,
            since_journal: old.header().journal,
            since_barrier: old.header().barrier.as_deref(),
            old_dirs: &old_dirs,
            limit,
            held,
            split: &split,
            old_records: &mut old_records,
        };
        let read = match self.provider.changed(query)? {
            ChangesRead::Read(c) => Ok(c),
            ChangesRead::TooMany => Err(format!(
                "more than {limit} inodes changed ({:.0} % of the fileset, or what --mem-limit holds), \
                 or more than {held} events journaled (what --mem-limit holds)",
                self.opts.changes_limit * 100.0
            )),
            ChangesRead::Unable(why) => Err(why),
        };
        let changed = match read {
            Ok(c) => c,
            Err(why) => {
                // What the read held is free again, but resident unless
                // handed back: the full read must not hold both.
                crate::sys::trim_heap();
                let msg = format!("{why}: reading the whole {}", self.whole());
                (self.log)(&msg);
                return Ok(ChangesDiff::ReadAll(Some(old)));
            }
        };
        *seconds = t.elapsed().as_secs_f64();
        let examined = changed.examined;
        let method = if changed.journal {
            ReadMethod::Journal
        } else {
            ReadMethod::Changes
        };
        let mut inos: Vec<u64> = changed
            .records
            .iter()
            .map(|r| r.ino)
            .chain(changed.gone.iter().copied())
            .collect();
        inos.sort_unstable();
        inos.dedup();
        let mut new_dirs = old_dirs.clone();
        for &ino in &inos {
            new_dirs.remove_ino(ino);
        }
        for r in changed.records.iter().filter(|r| r.is_dir()) {
            new_dirs.insert(r)?;
        }
        let old_header = old.header().clone();
        let header = Header {
            provider: self.provider.kind().into(),
            snapshot: Some(snap.to_string()),
            created: now_iso8601(),
            created_unix: jiff::Timestamp::now().as_second(),
            kind: Kind::Delta,
            otransid: self.provider.snapshot_transid(snap)?,
            journal: self.provider.snapshot_journal(snap),
            barrier: self.provider.snapshot_barrier(snap),
            id: new_id(),
            ..old_header.clone()
        };
        // The provider may have looked these up already (the journal
        // does): then they are not decoded again. Otherwise they are
        // looked up now, each of the run's threads taking a range of the
        // inodes (a third of a read guided by the journal went to
        // decoding them on one thread).
        let records = match old_records.cached(&inos) {
            Some(records) => records,
            None => old_records.look_up_all(&inos)?,
        };
        let entries: Box<dyn Entries> = Box::new(InMemory(records.into_iter()));
        let old = Listing {
            header: old_header,
            dirs: old_dirs,
            entries,
        };
        let new = Listing {
            header: Header {
                kind: Kind::Base,
                ..header.clone()
            },
            dirs: new_dirs,
            entries: Box::new(InMemory(changed.records.into_iter())),
        };
        let (summary, built) = self.diff_to_delta(old, new, &header, sink, |s| {
            prev_entries - s.old_records + s.new_records
        })?;
        Ok(ChangesDiff::Done(summary, built, (method, examined)))
    }

    /// Diffs `old` against `new`, handing the changes to `sink` and writing
    /// the delta (with `header`); `entries` gives the new manifest's entry
    /// count from the diff's counts.
    fn diff_to_delta(
        &mut self,
        old: Listing<'_>,
        new: Listing<'_>,
        header: &Header,
        sink: &mut dyn ChangeSink,
        entries: impl FnOnce(&DiffSummary) -> u64,
    ) -> Result<(DiffSummary, Built), SnapdiffError> {
        let mut w = ManifestWriter::new(self.temp()?, header)?;
        let summary = run_diff(self, old, new, Some(&mut w), sink)?;
        let (out, counts) = w.finish()?;
        let built = Built::Delta {
            file: written(out, !self.opts.dry_run)?,
            entries: entries(&summary),
            records: counts.entries + counts.tombstones,
        };
        Ok((summary, built))
    }
}

/// How [`Ctx::read_changes`] ended.
enum ChangesDiff {
    /// It read the changes and diffed them: the counts, the delta, and
    /// how it read them, with the inode items it examined.
    Done(DiffSummary, Built, (ReadMethod, u64)),
    /// Read the whole snapshot instead; the baseline is handed back.
    ReadAll(Option<View>),
}

/// What a run wrote for its snapshot, not yet in place.
enum Built {
    /// A whole manifest (a first run, or generations of another source).
    Base(NamedTempFile),
    /// The changes since the baseline, with the merged view's record count.
    Delta {
        /// The delta file.
        file: NamedTempFile,
        /// Entries of the new manifest.
        entries: u64,
        /// Records and tombstones in the delta (none: it is not kept).
        records: u64,
    },
}

impl Built {
    /// Bytes of manifest the run adds to the state directory.
    fn bytes(&self) -> u64 {
        let f = match self {
            Built::Delta { records: 0, .. } => return 0,
            Built::Base(f) | Built::Delta { file: f, .. } => f,
        };
        f.as_file().metadata().map_or(0, |m| m.len())
    }
}

fn state_dir(provider: &dyn Provider, opts: &SnapdiffOptions) -> io::Result<StateDir> {
    let fs = provider.fileset();
    let dir = opts.state_dir.clone().unwrap_or_else(|| fs.fs_root.join(".rotate"));
    let state = StateDir::new(dir, &opts.prefix, &fs.name, &fs.id)?;
    state.create()?;
    Ok(state)
}

/// The old side of a first run: nothing, so everything is `created`.
fn empty_listing(like: &Header) -> Listing<'static> {
    Listing::empty(Header {
        provider: "empty".into(),
        snapshot: None,
        created: String::new(),
        created_unix: i64::MIN,
        ..like.clone()
    })
}

/// A view as a diff's side.
fn listing(mut v: View) -> Result<Listing<'static>, ManifestError> {
    Ok(Listing {
        header: v.header().clone(),
        dirs: v.dir_table()?,
        entries: Box::new(v),
    })
}

/// Runs a snapdiff on `provider`'s fileset. Every change is passed to
/// `sink` in apply order (paths relative to the fileset root); `log` gets
/// progress messages (retries, rebuilt manifests).
pub fn snapdiff(
    provider: &dyn Provider,
    opts: &SnapdiffOptions,
    sink: &mut dyn ChangeSink,
    log: &mut dyn FnMut(&str),
) -> Result<SnapdiffReport, SnapdiffError> {
    let started = now_iso8601();
    let state = state_dir(provider, opts)?;
    if opts.supersede && state.pending_path().exists() {
        let pending = read_pending(&state)?;
        if pending.owner.is_some() && pending.owner == opts.owner {
            return replay(provider, opts, state, pending, sink, log);
        }
        log("rolling back a held run whose sync never ended");
        rotate(provider, opts, false, false, log)?;
    }
    let run = format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_nanosecond());
    let lock = Lock::acquire(
        &state.lock_path(),
        LockInfo {
            pid: if opts.hold { 0 } else { std::process::id() },
            host: hostname(),
            run: run.clone(),
            started: started.clone(),
        },
        opts.lock_threshold,
    )?;
    let last = state.last_snapshot()?;
    // The budget holds the baseline's directory tables: it is checked
    // against them before anything is rebuilt or snapshotted.
    let opened = last.as_deref().map(|s| state.open_view(s));
    let dirs = match &opened {
        Some(Ok(v)) => v.dir_records(),
        _ => 0,
    };
    let mut ctx = Ctx {
        provider,
        opts,
        memory: Memory::fit(opts.memory, opts.threads, dirs)?,
        state,
        log,
    };
    let old = match (&last, opened) {
        (Some(s), Some(opened)) => Some(ctx.baseline(s, opened)?),
        _ => None,
    };

    let mut name = format!(
        "{}{}",
        ctx.state.snapshot_prefix(),
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.6fZ")
    );
    if last.as_deref() == Some(name.as_str()) {
        name.push_str(".1");
    }
    ctx.retry(|| provider.create_snapshot(&name))?;

    let t0 = Instant::now();
    let mut manifest_seconds = 0.0;
    let mut read = (ReadMethod::Full, 0);
    let result = ctx
        .read_changes(old, last.as_deref(), &name, sink, &mut manifest_seconds)
        .and_then(|done| match done {
            ChangesDiff::Done(summary, built, how) => {
                read = how;
                Ok((summary, built))
            }
            ChangesDiff::ReadAll(old) => {
                let t = Instant::now();
                let (builder, mut header) = ctx.scan(provider.has_snapshots().then_some(name.as_str()))?;
                // Without snapshots, the run's position (in the event
                // journal) is the live tree's.
                if header.otransid.is_none() {
                    header.otransid = provider.snapshot_transid(&name)?;
                    header.barrier = provider.snapshot_barrier(&name);
                }
                read.1 = builder.len();
                manifest_seconds += t.elapsed().as_secs_f64();
                diff_into(&mut ctx, old, builder, header, sink)
            }
        });
    let diff_seconds = t0.elapsed().as_secs_f64() - manifest_seconds;
    let (summary, built) = match result {
        Ok(v) => v,
        Err(e) => {
            ctx.rollback(&name)?;
            return Err(e);
        }
    };
    let manifest_bytes = built.bytes();
    let entries = match &built {
        Built::Delta { entries, .. } => *entries,
        Built::Base(_) => summary.new_records,
    };

    let mut warnings = Vec::new();
    let mut compaction = None;
    let outcome = if opts.dry_run {
        drop(built);
        ctx.rollback(&name)?;
        lock.release()?;
        RunEnd::DryRun
    } else if opts.hold {
        ctx.install(&name, last.as_deref(), built)?;
        ctx.hold(&name, &run, &last, &started)?;
        lock.keep();
        RunEnd::Held
    } else {
        ctx.install(&name, last.as_deref(), built)?;
        ctx.commit(&name, &mut warnings)?;
        compaction = ctx.compact(&name, &mut warnings);
        lock.release()?;
        RunEnd::Rotated
    };
    Ok(SnapdiffReport {
        summary,
        warnings,
        manifest_seconds,
        diff_seconds,
        entries,
        manifest_bytes,
        compaction,
        read: read.0,
        examined: read.1,
        ..SnapdiffReport::new(provider, last, name, outcome, started)
    })
}

/// Diffs the baseline `old` (none on a first run) against the scanned
/// `builder` and hands every change to `sink`. With a baseline of the same
/// generation source only a delta is written; otherwise a whole base.
fn diff_into(
    ctx: &mut Ctx<'_>,
    old: Option<View>,
    builder: ManifestBuilder,
    header: Header,
    sink: &mut dyn ChangeSink,
) -> Result<(DiffSummary, Built), SnapdiffError> {
    match old {
        Some(old) if old.header().generation == header.generation => {
            let delta_header = Header {
                kind: Kind::Delta,
                ..header.clone()
            };
            let (old, new) = (listing(old)?, builder.into_listing(header)?);
            ctx.diff_to_delta(old, new, &delta_header, sink, |s| s.new_records)
        }
        old => {
            let (w, _) = builder.write(ctx.temp()?, &header)?;
            let file = written(w, !ctx.opts.dry_run)?;
            let new = Listing::read(ManifestReader::new(BufReader::with_capacity(1 << 20, file.reopen()?))?)?;
            let old = match old {
                Some(v) => listing(v)?,
                None => empty_listing(&header),
            };
            let summary = run_diff(ctx, old, new, None, sink)?;
            Ok((summary, Built::Base(file)))
        }
    }
}

/// The state directory's path relative to the fileset, when it lies in
/// it (a fileset that is its filesystem's root keeps `.rotate/` inside):
/// the run's own lock and state files are not changes of the fileset.
fn own_state(fileset: &[u8], state: &Path) -> Option<Vec<u8>> {
    let rest = state.as_os_str().as_bytes().strip_prefix(fileset)?;
    let rest = rest.strip_prefix(b"/")?;
    (!rest.is_empty()).then(|| rest.to_vec())
}

/// The check of ctime-only changes against both snapshots, when the run
/// has both (a provider with snapshots, a baseline of the same provider
/// that names its snapshot) and ferry's prefix is known.
fn own_xattrs(ctx: &Ctx<'_>, old: &Header, new: &Header) -> Option<OwnXattrs> {
    let prefix = ctx.opts.own_xattrs.as_deref()?;
    if old.provider != new.provider {
        return None;
    }
    let old = ctx.provider.snapshot_root(old.snapshot.as_deref()?)?;
    let new = ctx.provider.snapshot_root(new.snapshot.as_deref()?)?;
    Some(OwnXattrs::new(prefix, &old, &new))
}

fn run_diff(
    ctx: &mut Ctx<'_>,
    old: Listing<'_>,
    new: Listing<'_>,
    delta: Option<&mut DeltaWriter<BufWriter<NamedTempFile>>>,
    sink: &mut dyn ChangeSink,
) -> Result<DiffSummary, SnapdiffError> {
    let opts = DiffOptions {
        mem_limit: ctx.memory.work,
        ..ctx.opts.diff.clone()
    };
    let own = own_xattrs(ctx, &old.header, &new.header);
    let own = own.as_ref().map(|o| o as &dyn OwnChanges);
    let (changes, summary) = diff(old, new, &opts, &ctx.state.dir, delta, own)?;
    sink.expect(summary.created + summary.updated + summary.moved + summary.deleted);
    let own = own_state(&ctx.provider.fileset().path, &ctx.state.dir);
    let ours = |p: &[u8]| {
        own.as_deref()
            .is_some_and(|s| p == s || p.strip_prefix(s).is_some_and(|r| r[0] == b'/'))
    };
    for c in changes {
        let c = c?;
        if ours(&c.path) || c.source.as_deref().is_some_and(ours) {
            continue;
        }
        sink.change(&c).map_err(SnapdiffError::Output)?;
    }
    sink.finish().map_err(SnapdiffError::Output)?;
    Ok(summary)
}

impl Ctx<'_> {
    /// Records a held run (its manifest already installed) for `rotate`.
    fn hold(&mut self, snap: &str, run: &str, last: &Option<String>, started: &str) -> Result<(), SnapdiffError> {
        let pending = Pending {
            run: run.into(),
            snapshot: snap.into(),
            old_snapshot: last.clone(),
            started: started.into(),
            owner: self.opts.owner.clone(),
        };
        write_atomic(
            &self.state.pending_path(),
            &serde_json::to_vec(&pending).map_err(io::Error::other)?,
        )?;
        Ok(())
    }
}

/// The held run's record.
fn read_pending(state: &StateDir) -> Result<Pending, SnapdiffError> {
    let path = state.pending_path();
    match std::fs::read(&path) {
        Ok(b) => Ok(serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SnapdiffError::NotHeld(path.display().to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Hands the changes of held run `pending` to `sink` again (the old
/// snapshot's manifest against the held one's), leaving it held.
fn replay(
    provider: &dyn Provider,
    opts: &SnapdiffOptions,
    state: StateDir,
    pending: Pending,
    sink: &mut dyn ChangeSink,
    log: &mut dyn FnMut(&str),
) -> Result<SnapdiffReport, SnapdiffError> {
    log(&format!("the held run of snapshot {} again", pending.snapshot));
    let new = state.open_view(&pending.snapshot)?;
    let new_header = new.header().clone();
    let old = match &pending.old_snapshot {
        Some(s) => listing(state.open_view(s)?)?,
        None => empty_listing(&new_header),
    };
    let mut ctx = Ctx {
        provider,
        opts,
        memory: Memory::fit(opts.memory, opts.threads, new.dir_records())?,
        state,
        log,
    };
    let t = Instant::now();
    let summary = run_diff(&mut ctx, old, listing(new)?, None, sink)?;
    Ok(SnapdiffReport {
        summary,
        diff_seconds: t.elapsed().as_secs_f64(),
        entries: summary.new_records,
        ..SnapdiffReport::new(
            provider,
            pending.old_snapshot,
            pending.snapshot,
            RunEnd::Held,
            pending.started,
        )
    })
}

/// Ends a run held by `--hold`: rotates if the sync `succeeded` or
/// `rotate_on_error` is set (the seed's default), otherwise rolls back so
/// that the next run diffs from the old snapshot again.
pub fn rotate(
    provider: &dyn Provider,
    opts: &SnapdiffOptions,
    succeeded: bool,
    rotate_on_error: bool,
    log: &mut dyn FnMut(&str),
) -> Result<SnapdiffReport, SnapdiffError> {
    let state = state_dir(provider, opts)?;
    let pending_path = state.pending_path();
    let pending = read_pending(&state)?;
    let lock = Lock::resume(&state.lock_path(), &pending.run)?;
    let mut ctx = Ctx {
        provider,
        opts,
        // Rotating sorts nothing (compaction merges with fixed buffers):
        // no budget to check, so a held run can always be finished.
        memory: Memory { work: 0 },
        state,
        log,
    };
    let mut warnings = Vec::new();
    let mut compaction = None;
    let outcome = if succeeded || rotate_on_error {
        ctx.commit(&pending.snapshot, &mut warnings)?;
        compaction = ctx.compact(&pending.snapshot, &mut warnings);
        RunEnd::Rotated
    } else {
        ctx.rollback(&pending.snapshot)?;
        RunEnd::RolledBack
    };
    std::fs::remove_file(&pending_path)?;
    lock.release()?;
    Ok(SnapdiffReport {
        warnings,
        compaction,
        ..SnapdiffReport::new(
            provider,
            pending.old_snapshot,
            pending.snapshot,
            outcome,
            pending.started,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_directory_inside_the_fileset_is_found() {
        assert_eq!(own_state(b"/fs", Path::new("/fs/.rotate")).unwrap(), b".rotate");
        assert_eq!(own_state(b"/fs", Path::new("/fsx/.rotate")), None);
        assert_eq!(own_state(b"/fs/set", Path::new("/fs/.rotate")), None);
    }
}
