//! GPFS (IBM Storage Scale): an independent fileset; snapshots by
//! `mmcrsnapshot`/`mmdelsnapshot`, listed by `mmlssnapshot`, the fileset
//! found by `mmlsfileset`. (Being written.)

use super::{Fileset, Provider, ScanError, SnapshotError};
use crate::snapdiff::build::ManifestBuilder;
use std::io;
use std::path::{Path, PathBuf};

/// Where the `mm*` commands are and which device and fileset to use.
#[derive(Clone, Debug, Default)]
pub struct GpfsOptions {
    /// Directory of the `mm*` commands (default `/usr/lpp/mmfs/bin`).
    pub bin_dir: Option<PathBuf>,
    /// The filesystem device, e.g. `gpfs0`.
    pub device: Option<String>,
}

/// A GPFS independent fileset.
pub struct Gpfs {
    fileset: Fileset,
}

impl Gpfs {
    /// The independent fileset linked at `path`.
    pub fn open(_path: &Path, _opts: &GpfsOptions) -> io::Result<Gpfs> {
        Err(io::Error::other("the gpfs provider is not available yet"))
    }
}

impl Provider for Gpfs {
    fn kind(&self) -> &'static str {
        "gpfs"
    }
    fn fileset(&self) -> &Fileset {
        &self.fileset
    }
    fn has_snapshots(&self) -> bool {
        true
    }
    fn create_snapshot(&self, _: &str) -> Result<(), SnapshotError> {
        unreachable!()
    }
    fn delete_snapshot(&self, _: &str) -> Result<(), SnapshotError> {
        unreachable!()
    }
    fn snapshots(&self) -> io::Result<Vec<String>> {
        unreachable!()
    }
    fn scan(&self, _: Option<&str>, _: &mut ManifestBuilder, _: usize) -> Result<(), ScanError> {
        unreachable!()
    }
}
