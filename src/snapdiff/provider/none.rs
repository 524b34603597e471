//! No snapshots: each run walks the live tree, and the previous run's
//! manifest is the baseline.
//!
//! The live tree changes while it is walked, so a file renamed during the
//! walk can be seen twice or not at all, and a change made during the walk
//! may be reported in this run or the next. Nothing is lost over two runs
//! of a quiet tree, but only a snapshot gives one consistent point in time.

use super::{Fileset, Provider, ScanError, SnapshotError, base_name, mount_point};
use crate::snapdiff::build::{GenerationSource, ManifestBuilder, walk_into};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A directory tree without snapshots.
pub struct NoSnapshots {
    fileset: Fileset,
}

impl NoSnapshots {
    /// The tree at `path` (a directory).
    pub fn open(path: &Path) -> io::Result<NoSnapshots> {
        let root = std::fs::canonicalize(path)?;
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", root.display())));
        }
        Ok(NoSnapshots {
            fileset: Fileset {
                name: base_name(&root),
                id: meta.ino().to_string(),
                path: root.as_os_str().as_bytes().to_vec(),
                fs_root: mount_point(&root)?,
            },
        })
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

    fn create_snapshot(&self, _: &str) -> Result<(), SnapshotError> {
        Ok(())
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
