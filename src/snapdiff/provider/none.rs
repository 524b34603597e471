//! No snapshots: each run walks the live tree, and the previous run's
//! manifest is the baseline; or, where an event journal is kept for the
//! fileset (`ferry journal`, [`crate::snapdiff::journal`]), a run looks
//! only where the journal's events since the last run point, and walks
//! the whole tree after any gap in it.
//!
//! The live tree changes while it is walked, so a file renamed during the
//! walk can be seen twice or not at all, and a change made during the walk
//! may be reported in this run or the next. Nothing is lost over two runs
//! of a quiet tree, but only a snapshot gives one consistent point in time.

use super::{ChangesQuery, ChangesRead, Fileset, Provider, ScanError, SnapshotError, base_name, mount_point};
use crate::snapdiff::build::{GenerationSource, ManifestBuilder, walk_into};
use crate::snapdiff::journal::changes::Positions;
use crate::snapdiff::journal::{self, JournalFiles};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A directory tree without snapshots.
pub struct NoSnapshots {
    fileset: Fileset,
    /// Where its event journal is (or would be) kept.
    files: JournalFiles,
    /// Whether an event journal was ever written there.
    journaled: bool,
    /// Each run's position in the journal (its "snapshot").
    positions: Positions,
}

impl NoSnapshots {
    /// The tree at `path` (a directory); its event journal, if any, is in
    /// `state_dir` (default `<filesystem root>/.rotate`).
    pub fn open(path: &Path, state_dir: Option<&Path>) -> io::Result<NoSnapshots> {
        let root = std::fs::canonicalize(path)?;
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", root.display())));
        }
        let dir = std::fs::File::open(&root)?;
        // The journal's id: run state and journal share one key.
        let fileset = Fileset {
            name: base_name(&root),
            id: journal::tree_id(dir.as_fd(), &root, state_dir)?,
            path: root.as_os_str().as_bytes().to_vec(),
            fs_root: mount_point(&root)?,
        };
        let files = JournalFiles::of(&fileset.name, &fileset.id, &fileset.fs_root, state_dir);
        Ok(NoSnapshots {
            journaled: files.exists(),
            files,
            fileset,
            positions: Positions::default(),
        })
    }

    /// Where the tree's event journal is kept, or would be: what `ferry
    /// journal` writes and the runs read.
    pub fn journal_files(&self) -> &JournalFiles {
        &self.files
    }

    /// The event journal, where one was ever written.
    fn journal(&self) -> Option<&JournalFiles> {
        self.journaled.then_some(&self.files)
    }
}

impl Provider for NoSnapshots {
    fn kind(&self) -> &'static str {
        "none"
    }

    fn fileset(&self) -> &Fileset {
        &self.fileset
    }

    fn generation_source(&self) -> GenerationSource {
        GenerationSource::Btime
    }

    fn has_snapshots(&self) -> bool {
        false
    }

    /// With a journal, fixes the run's position in it (a barrier).
    fn create_snapshot(&self, name: &str) -> Result<(), SnapshotError> {
        if let Some(j) = self.journal() {
            self.positions.fix(j, name);
        }
        Ok(())
    }

    fn snapshot_transid(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.positions.of(name).ok().map(|p| p.seq))
    }

    fn snapshot_barrier(&self, name: &str) -> Option<String> {
        self.positions.of(name).ok().map(|p| p.token)
    }

    fn reads_changes(&self) -> bool {
        self.journaled
    }

    fn changed(&self, q: ChangesQuery<'_>) -> Result<ChangesRead, ScanError> {
        let Some(j) = self.journal() else {
            return Ok(ChangesRead::Unable("no event journal is kept for this fileset".into()));
        };
        let until = match self.positions.of(q.new) {
            Ok(at) => at,
            Err(gap) => return Ok(ChangesRead::Unable(gap.to_string())),
        };
        // The window's sequence numbers bound its events, which the read
        // holds in memory before it knows how many inodes they touch.
        if until.seq.saturating_sub(q.since) > q.held as u64 {
            return Ok(ChangesRead::TooMany);
        }
        match journal::changes::window(j, q.since, q.since_barrier, &until, q.threads())? {
            Err(gap) => Ok(ChangesRead::Unable(gap.to_string())),
            Ok(events) => Ok(journal::changes::changed(
                Path::new(OsStr::from_bytes(&self.fileset.path)),
                events,
                q,
            )?),
        }
    }

    fn delete_snapshot(&self, _: &str) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn snapshots(&self) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn scan(&self, _: Option<&str>, builder: &mut ManifestBuilder, threads: usize) -> Result<(), ScanError> {
        walk_into(&self.fileset.path, threads, GenerationSource::Btime, builder)?;
        Ok(())
    }
}
