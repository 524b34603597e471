//! The manifest set: which files make up a snapshot's manifest. A run that
//! has a baseline writes only a delta; the set file names the base and
//! every delta since, and is committed with the last-snap file, so a
//! rolled-back run just leaves its delta behind for the next rotation to
//! remove. Compaction merges a long chain into a new base.
//!
//! ```text
//! <prefix>.manifest.<key>.<snap>      a base (a first run's, a rebuilt or a compacted one)
//! <prefix>.delta.<key>.<snap>         the delta of the run that took <snap>
//! <prefix>.manifest-set.<key>.<snap>  JSON: base and deltas of <snap>'s manifest
//! ```
//!
//! A snapshot without a set file has a base of its own (the only layout of
//! earlier versions, which therefore still load).

use super::manifest::{Header, Kind, ManifestError, ManifestReader, ManifestWriter};
use super::parallel::each_on_a_thread;
use super::provider::OldRecords;
use super::record::Record;
use super::state::{StateDir, write_atomic};
use super::view::{Entries, OnlyInodes, View};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Compact when the deltas hold more records and tombstones than this
/// share of the base's records (the study's ~25 %: a compaction every few
/// runs, each O(n) once).
pub const COMPACT_RATIO: f64 = 0.25;
/// Compact when a set has more deltas than this (each is merged on read).
pub const MAX_DELTAS: usize = 16;

/// One file of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its name in the state directory.
    pub file: String,
    /// The id in its header.
    pub id: String,
    /// Its size: a file replaced under the same name is noticed.
    pub bytes: u64,
    /// Entry records and tombstones in it: the work it adds to every read
    /// of the set.
    #[serde(default)]
    pub records: u64,
}

/// The set file: a snapshot's manifest as a base and deltas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSet {
    /// Always `ferry-manifest-set`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// The snapshot the set describes.
    pub snapshot: String,
    /// The base.
    pub base: Member,
    /// The deltas after it, oldest first.
    pub deltas: Vec<Member>,
    /// Entry records of the merged view.
    pub entries: u64,
    /// The snapshot's transaction (btrfs `otransid`), which the newest
    /// file may not carry (a run that found nothing adds no delta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otransid: Option<u64>,
    /// The snapshot's position in the event journal, where one was kept
    /// (see [`super::manifest::Header::journal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<u64>,
    /// The token of the barrier at that position (see
    /// [`super::manifest::Header::barrier`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barrier: Option<String>,
    /// When the snapshot was taken (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The same in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_unix: Option<i64>,
}

impl ManifestSet {
    /// Reads the set file at `path`; `None` when the file is not a set file
    /// at all (a manifest starts with its magic bytes, a set with `{`).
    /// Only the first byte is read of a file that is not a set.
    pub fn read(path: &Path) -> Result<Option<ManifestSet>, ManifestError> {
        let mut f = File::open(path)?;
        let mut first = [0u8; 1];
        if f.read(&mut first)? == 0 || first[0] != b'{' {
            return Ok(None);
        }
        f.rewind()?;
        let bad = |why: String| ManifestError::Header(format!("{}: {why}", path.display()));
        let set: ManifestSet = serde_json::from_reader(BufReader::new(f)).map_err(|e| bad(e.to_string()))?;
        if set.format != "ferry-manifest-set" || set.version != 1 {
            return Err(bad("not a version 1 manifest set".into()));
        }
        Ok(Some(set))
    }

    /// Gives `view` (whose header is the newest file's) this set's
    /// snapshot facts (a provider without snapshots names none) and its
    /// entry count.
    fn stamp(&self, view: &mut View) {
        let header = &mut view.header;
        if header.snapshot.is_some() {
            header.snapshot = Some(self.snapshot.clone());
        }
        if self.otransid.is_some() {
            header.otransid = self.otransid;
        }
        // The newest file may be an older run's, whose position this
        // snapshot's (or its lack of one) replaces.
        header.journal = self.journal;
        header.barrier = self.barrier.clone();
        if let (Some(c), Some(u)) = (&self.created, self.created_unix) {
            header.created = c.clone();
            header.created_unix = u;
        }
        view.entries = self.entries;
    }

    /// The merged view of this set, whose files are in `dir`.
    pub fn view(&self, dir: &Path) -> Result<View, ManifestError> {
        let base = open_member(dir, &self.base)?;
        let deltas = self
            .deltas
            .iter()
            .map(|m| open_member(dir, m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut v = View::new(base, deltas)?;
        self.stamp(&mut v);
        Ok(v)
    }
}

impl ManifestSet {
    /// Records and tombstones in the deltas against records in the base:
    /// the compaction test.
    pub fn needs_compaction(&self) -> bool {
        let deltas: u64 = self.deltas.iter().map(|d| d.records).sum();
        self.deltas.len() > MAX_DELTAS || deltas as f64 > self.base.records as f64 * COMPACT_RATIO
    }
}

/// What is on disk for a snapshot's manifest.
pub enum Stored {
    /// A set file (boxed: it is most of the enum's size, and rare beside a
    /// path).
    Set(Box<ManifestSet>),
    /// A base of its own.
    Base(PathBuf),
}

impl StateDir {
    /// `<prefix>.delta.<key>.<snap>`: the delta of the run that took `snap`.
    pub fn delta_path(&self, snap: &str) -> PathBuf {
        self.dir.join(format!("{}.delta.{}.{snap}", self.prefix, self.key()))
    }

    /// `<prefix>.manifest-set.<key>.<snap>`: the files of `snap`'s manifest.
    pub fn set_path(&self, snap: &str) -> PathBuf {
        self.dir
            .join(format!("{}.manifest-set.{}.{snap}", self.prefix, self.key()))
    }

    /// What makes up `snap`'s manifest; an `Io` error of kind `NotFound`
    /// when nothing does.
    pub fn stored(&self, snap: &str) -> Result<Stored, ManifestError> {
        let path = self.set_path(snap);
        match ManifestSet::read(&path) {
            Ok(Some(set)) => Ok(Stored::Set(Box::new(set))),
            Ok(None) => Err(ManifestError::Header(format!("{}: not a manifest set", path.display()))),
            Err(ManifestError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                let base = self.manifest_path(snap);
                fs::metadata(&base)?;
                Ok(Stored::Base(base))
            }
            Err(e) => Err(e),
        }
    }

    /// The merged view of what `stored` names.
    pub fn view_of(&self, stored: &Stored) -> Result<View, ManifestError> {
        match stored {
            Stored::Base(p) => View::new(open_reader(p)?, Vec::new()),
            Stored::Set(set) => set.view(&self.dir),
        }
    }

    /// Opens `snap`'s manifest as one merged view. A missing file is an
    /// `Io` error of kind `NotFound` (the manifest is lost).
    pub fn open_view(&self, snap: &str) -> Result<View, ManifestError> {
        self.view_of(&self.stored(snap)?)
    }

    /// The set of `snap` once the delta at `delta` (written for `snap`) is
    /// added to `prev`'s manifest, with
    /// `entries` records in all. A delta with nothing in it is not added:
    /// the set names the same files as `prev`'s, and carries the new
    /// snapshot's facts (name, transaction, time) itself.
    pub fn set_with_delta(
        &self,
        prev: &str,
        snap: &str,
        delta: &Path,
        entries: u64,
    ) -> Result<ManifestSet, ManifestError> {
        let (base, mut deltas) = match self.stored(prev)? {
            Stored::Set(s) => (s.base, s.deltas),
            Stored::Base(p) => (describe(&p)?.0, Vec::new()),
        };
        let (mut d, h) = describe(delta)?;
        if d.records > 0 {
            d.file = file_name(&self.delta_path(snap));
            deltas.push(d);
        }
        Ok(ManifestSet {
            format: "ferry-manifest-set".into(),
            version: 1,
            snapshot: snap.into(),
            base,
            deltas,
            entries,
            otransid: h.otransid,
            journal: h.journal,
            barrier: h.barrier,
            created: Some(h.created),
            created_unix: Some(h.created_unix),
        })
    }

    /// Writes `set` as its snapshot's set file (atomic, durable).
    pub fn write_set(&self, set: &ManifestSet) -> io::Result<()> {
        write_atomic(
            &self.set_path(&set.snapshot),
            &serde_json::to_vec_pretty(set).map_err(io::Error::other)?,
        )
    }

    /// Every file of this fileset's manifests (bases, deltas, sets, and
    /// ones being written) except those `keep`'s manifest is made of, and
    /// temporary files of state writes a killed process left.
    pub fn stale_manifests(&self, keep: &str) -> io::Result<Vec<PathBuf>> {
        let mut kept = vec![file_name(&self.set_path(keep)), file_name(&self.manifest_path(keep))];
        if let Ok(Stored::Set(s)) = self.stored(keep) {
            kept.push(s.base.file);
            kept.extend(s.deltas.into_iter().map(|d| d.file));
        }
        let key = self.key();
        let mut starts = ["manifest", "delta", "manifest-set"]
            .map(|k| format!("{}.{k}.{key}.", self.prefix))
            .to_vec();
        // Left by a killed process's atomic write.
        starts.extend([self.lastsnap_path(), self.pending_path()].map(|p| format!("{}.tmp-", file_name(&p))));
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if starts.iter().any(|s| name.starts_with(s)) && !kept.iter().any(|k| k == name) {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// Removes what a run for `snap` wrote (its base, delta and set), when
    /// the run is rolled back.
    pub fn remove_run(&self, snap: &str) -> io::Result<()> {
        for p in [self.set_path(snap), self.delta_path(snap), self.manifest_path(snap)] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Opens the file of set member `m` in `dir`, checking that it is the
/// file the set names.
pub fn open_member(dir: &Path, m: &Member) -> Result<ManifestReader<BufReader<File>>, ManifestError> {
    let path = dir.join(&m.file);
    let f = File::open(&path)?;
    let len = f.metadata()?.len();
    let rd = ManifestReader::new(BufReader::with_capacity(64 << 10, f))?;
    if len != m.bytes || rd.header().id != m.id {
        return Err(ManifestError::Header(format!(
            "{} is not the file its manifest set names (id {}, {} bytes)",
            path.display(),
            m.id,
            m.bytes
        )));
    }
    Ok(rd)
}

/// The set member for a manifest file (its name, header id, size and
/// record count), and its header.
fn describe(path: &Path) -> Result<(Member, Header), ManifestError> {
    let f = File::open(path)?;
    let bytes = f.metadata()?.len();
    let rd = ManifestReader::new(BufReader::new(f))?;
    let c = rd.counts();
    let member = Member {
        file: file_name(path),
        id: rd.header().id.clone(),
        bytes,
        records: c.entries + c.tombstones,
    };
    Ok((member, rd.header().clone()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn open_reader(p: &Path) -> Result<ManifestReader<BufReader<File>>, ManifestError> {
    ManifestReader::new(BufReader::with_capacity(1 << 20, File::open(p)?))
}

/// A fresh id for a manifest's header.
pub fn new_id() -> String {
    format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_nanosecond())
}

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Compaction {
    /// Files merged (the base and its deltas).
    pub files: usize,
    /// Records in the new base.
    pub entries: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// Merges `snap`'s manifest into a new base of its own, if it is a chain
/// that [`ManifestSet::needs_compaction`] (or `force`), or a base of an
/// older format. The new base is written under a temporary name and
/// renamed into place; removing the set file is the commit point, so a
/// compaction killed at any moment leaves the old chain whole. Files no
/// longer used are removed afterwards (failures there are returned as
/// warnings).
pub fn compact(state: &StateDir, snap: &str, force: bool) -> Result<Option<(Compaction, Vec<String>)>, ManifestError> {
    let t = Instant::now();
    let stored = state.stored(snap)?;
    let mut view = state.view_of(&stored)?;
    let due = match &stored {
        Stored::Set(s) => force || s.needs_compaction(),
        Stored::Base(_) => view.base_version() < super::manifest::VERSION,
    };
    if !due {
        return Ok(None);
    }
    let header = Header {
        kind: Kind::Base,
        id: new_id(),
        ..view.header().clone()
    };
    let tmp = tempfile::Builder::new()
        .prefix(&state.manifest_temp_prefix())
        .tempfile_in(&state.dir)?;
    let mut w = ManifestWriter::new(BufWriter::with_capacity(1 << 20, tmp), &header)?;
    let mut r = super::record::Record::default();
    while view.read_entry(&mut r)? {
        w.push_entry(&r)?;
    }
    let (out, counts) = w.finish()?;
    let tmp = out.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all()?;
    tmp.persist(state.manifest_path(snap)).map_err(|e| e.error)?;
    match fs::remove_file(state.set_path(snap)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    File::open(&state.dir)?.sync_all()?;
    let mut warnings = Vec::new();
    for stale in state.stale_manifests(snap)? {
        if let Err(e) = fs::remove_file(&stale) {
            warnings.push(format!("{}: {e}", stale.display()));
        }
    }
    Ok(Some((
        Compaction {
            files: view.files(),
            entries: counts.entries,
            seconds: t.elapsed().as_secs_f64(),
        },
        warnings,
    )))
}

/// Why `ferry manifest --compact` could not compact.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The file is not a manifest of a state directory.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// A run of the fileset holds its lock.
    #[error("{0}")]
    Lock(#[from] super::state::AcquireError),
}

/// The state directory and snapshot that the manifest file or set file at
/// `path` belongs to, from its name (`<prefix>.manifest[-set].name.<fileset>.id.<id>.<snapshot>`)
/// and the snapshot it records.
pub fn locate(path: &Path) -> Result<(StateDir, String), ManifestError> {
    let bad = |why: &str| ManifestError::Header(format!("{}: {why}", path.display()));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad("no file name"))?;
    let snapshot = match ManifestSet::read(path)? {
        Some(set) => set.snapshot,
        None => open_reader(path)?
            .header()
            .snapshot
            .clone()
            .ok_or_else(|| bad("the manifest names no snapshot"))?,
    };
    let (prefix, rest) = [".manifest-set.name.", ".manifest.name."]
        .iter()
        .find_map(|k| name.split_once(k))
        .ok_or_else(|| bad("not named like a manifest of a state directory"))?;
    let key = rest
        .strip_suffix(&snapshot)
        .and_then(|k| k.strip_suffix('.'))
        .ok_or_else(|| bad("the name does not end with its snapshot"))?;
    let (fileset, id) = key
        .rsplit_once(".id.")
        .ok_or_else(|| bad("no fileset id in the name"))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let state = StateDir::new(dir, prefix, fileset, id)?;
    Ok((state, snapshot))
}

/// `ferry manifest --compact FILE`: compacts the manifest FILE belongs to
/// into a new base, under the fileset's lock.
pub fn compact_file(path: &Path, lock_threshold: std::time::Duration) -> Result<Option<Compaction>, CompactError> {
    let (state, snap) = locate(path)?;
    let lock = super::state::Lock::acquire(
        &state.lock_path(),
        super::state::LockInfo {
            pid: std::process::id(),
            host: super::state::hostname(),
            run: format!("compact-{}", new_id()),
            started: crate::task::status::now_iso8601(),
        },
        lock_threshold,
    )?;
    let done = compact(&state, &snap, true)?;
    lock.release().map_err(ManifestError::from)?;
    Ok(done.map(|(c, _)| c))
}

/// A baseline manifest as [`OldRecords`]: each lookup opens the view afresh
/// and jumps through its block index to the inodes asked for, one thread
/// (and view) per share of the inode space the run's cut points give
/// (scattered inodes touch every block, so a lookup is CPU work in
/// proportion to the manifest). What it found is kept, so that the run's
/// diff need not decode it again.
pub struct BaselineRecords<'a> {
    state: &'a StateDir,
    snap: &'a str,
    split: &'a [u64],
    asked: FxHashSet<u64>,
    found: Vec<Record>,
}

/// Fewer inodes than this per range are looked up on one thread.
const LOOKUPS_PER_THREAD: usize = 1024;

impl<'a> BaselineRecords<'a> {
    /// The manifest of `snap` in `state`, read on one thread per range of
    /// inode numbers that the ascending cut points `split` bound (the
    /// run's, as [`super::provider::ChangesQuery::split`]).
    pub fn new(state: &'a StateDir, snap: &'a str, split: &'a [u64]) -> Self {
        BaselineRecords {
            state,
            snap,
            split,
            asked: FxHashSet::default(),
            found: Vec::new(),
        }
    }

    /// The records of `inos` (ascending), in manifest order, if every one
    /// of them was looked up already.
    pub fn cached(&mut self, inos: &[u64]) -> Option<Vec<Record>> {
        if self.asked.is_empty() || !inos.iter().all(|i| self.asked.contains(i)) {
            return None;
        }
        let mut out: Vec<Record> = std::mem::take(&mut self.found)
            .into_iter()
            .filter(|r| inos.binary_search(&r.ino).is_ok())
            .collect();
        out.sort();
        Some(out)
    }

    /// The records of `inos` (ascending) in `view`.
    fn look_up(view: View, inos: &[u64]) -> Result<Vec<Record>, ManifestError> {
        let mut only = OnlyInodes::new(view, inos.to_vec());
        let mut out = Vec::new();
        let mut r = Record::default();
        while only.read_entry(&mut r)? {
            out.push(r.clone());
        }
        Ok(out)
    }
}

impl BaselineRecords<'_> {
    /// The records of `inos` (ascending), in manifest order, looked up
    /// without keeping them (what the run's diff reads itself).
    pub fn look_up_all(&self, inos: &[u64]) -> Result<Vec<Record>, ManifestError> {
        let view = self.state.open_view(self.snap)?;
        let out = if inos.len() < LOOKUPS_PER_THREAD * (self.split.len() + 1) {
            Self::look_up(view, inos)?
        } else {
            // The inodes asked for in each range; new inodes above the
            // manifest's range cost nothing to look up.
            let mut parts = Vec::with_capacity(self.split.len() + 1);
            let mut rest = inos;
            for &cut in self.split {
                let (part, after) = rest.split_at(rest.partition_point(|&x| x < cut));
                parts.push(part);
                rest = after;
            }
            parts.push(rest);
            let mut views = vec![view];
            for _ in 1..parts.len() {
                views.push(self.state.open_view(self.snap)?);
            }
            let found = each_on_a_thread(views.into_iter().zip(parts), |(v, part)| Self::look_up(v, part));
            let mut out = Vec::new();
            for f in found {
                out.extend(f?);
            }
            out
        };
        Ok(out)
    }
}

impl OldRecords for BaselineRecords<'_> {
    fn records_of(&mut self, inos: &[u64]) -> Result<Vec<Record>, ManifestError> {
        let out = self.look_up_all(inos)?;
        self.asked.extend(inos.iter().copied());
        self.found.extend(out.iter().cloned());
        Ok(out)
    }
}
