//! btrfs: the fileset is a subvolume; each run takes a read-only snapshot
//! of it in `<fileset>/.snapshots/<name>` (where GPFS keeps fileset
//! snapshots too; walks skip `.snapshots`), and walks the snapshot.

use super::btrfs_changed::changed_since;
use super::btrfs_tree::{TreeError, read_tree};
use super::{ChangesQuery, ChangesRead, Fileset, Provider, ScanError, SnapshotError, base_name, mount_point};
use crate::snapdiff::build::{GenerationSource, ManifestBuilder, walk_into};
use crate::sys::btrfs;
use crate::sys::{self, Base};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A btrfs subvolume as a fileset.
pub struct Btrfs {
    fileset: Fileset,
    root: PathBuf,
    walk: bool,
}

impl Btrfs {
    /// The subvolume whose root directory is `path`. Snapshots are read
    /// from the btrfs tree (as root), or walked when `walk` is set.
    pub fn open(path: &Path, walk: bool) -> io::Result<Btrfs> {
        let root = std::fs::canonicalize(path)?;
        let fd = open_dir(&root)?;
        if !btrfs::is_btrfs(fd.as_fd())? {
            return Err(io::Error::other(format!("{} is not on btrfs", root.display())));
        }
        let st = sys::stat_at(Base::Dir(fd.as_fd()), c".", false, sys::StatMask::ALL)?;
        if st.ino != btrfs::SUBVOL_ROOT_INO {
            return Err(io::Error::other(format!(
                "{} is not the root of a btrfs subvolume (make it one with `btrfs subvolume create`)",
                root.display()
            )));
        }
        let id = btrfs::subvolume_id(fd.as_fd())?;
        Ok(Btrfs {
            fileset: Fileset {
                name: base_name(&root),
                id: id.to_string(),
                path: root.as_os_str().as_bytes().to_vec(),
                fs_root: mount_point(&root)?,
            },
            root,
            walk,
        })
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join(".snapshots")
    }
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    sys::open_dir_at(Base::Cwd, &c, true)
}

fn c_name(name: &str) -> Result<CString, SnapshotError> {
    CString::new(name).map_err(|e| SnapshotError {
        transient: false,
        message: format!("bad snapshot name: {e}"),
    })
}

impl Provider for Btrfs {
    fn kind(&self) -> &'static str {
        "btrfs"
    }

    fn fileset(&self) -> &Fileset {
        &self.fileset
    }

    fn generation_source(&self) -> GenerationSource {
        GenerationSource::Btime
    }

    fn has_snapshots(&self) -> bool {
        true
    }

    fn create_snapshot(&self, name: &str) -> Result<(), SnapshotError> {
        let dir = self.snapshots_dir();
        let what = format!("cannot snapshot {} as {name}", self.root.display());
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(SnapshotError::from_io(&what, e)),
            _ => {}
        }
        let src = open_dir(&self.root).map_err(|e| SnapshotError::from_io(&what, e))?;
        let dest = open_dir(&dir).map_err(|e| SnapshotError::from_io(&what, e))?;
        btrfs::create_snapshot(src.as_fd(), dest.as_fd(), &c_name(name)?).map_err(|e| SnapshotError::from_io(&what, e))
    }

    fn delete_snapshot(&self, name: &str) -> Result<(), SnapshotError> {
        let what = format!("cannot delete snapshot {name} of {}", self.root.display());
        let dir = open_dir(&self.snapshots_dir()).map_err(|e| SnapshotError::from_io(&what, e))?;
        btrfs::delete_snapshot(dir.as_fd(), &c_name(name)?).map_err(|e| SnapshotError::from_io(&what, e))
    }

    fn snapshots(&self) -> io::Result<Vec<String>> {
        match std::fs::read_dir(self.snapshots_dir()) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn snapshot_transid(&self, name: &str) -> io::Result<Option<u64>> {
        let fd = open_dir(&self.snapshots_dir().join(name))?;
        Ok(Some(btrfs::subvolume_info(fd.as_fd())?.otransid))
    }

    fn reads_changes(&self) -> bool {
        !self.walk
    }

    fn changed(&self, q: ChangesQuery<'_>) -> Result<ChangesRead, ScanError> {
        let open = |s: &str| {
            let p = self.snapshots_dir().join(s);
            open_dir(&p).map_err(|e| ScanError::io(&p, e))
        };
        let (old_fd, new_fd) = (open(q.old)?, open(q.new)?);
        match changed_since(new_fd.as_fd(), old_fd.as_fd(), q.since, q.old_dirs, q.limit, q.split) {
            Ok(Some(c)) => Ok(ChangesRead::Read(c)),
            Ok(None) => Ok(ChangesRead::TooMany),
            Err(TreeError::Io(e)) if e.raw_os_error() == Some(libc::EPERM) => Ok(ChangesRead::Unable(
                "the btrfs tree cannot be searched without CAP_SYS_ADMIN".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn scan(&self, snapshot: Option<&str>, builder: &mut ManifestBuilder, threads: usize) -> Result<(), ScanError> {
        let dir = match snapshot {
            Some(s) => self.snapshots_dir().join(s),
            None => self.root.clone(),
        };
        if !self.walk {
            let fd = open_dir(&dir).map_err(|e| ScanError::io(&dir, e))?;
            match read_tree(fd.as_fd(), builder) {
                Ok(_) => return Ok(()),
                // Without CAP_SYS_ADMIN the tree cannot be searched: walk,
                // unless the search already added records.
                Err(TreeError::Io(e)) if e.raw_os_error() == Some(libc::EPERM) && builder.is_empty() => {}
                Err(e) => return Err(e.into()),
            }
        }
        walk_into(dir.as_os_str().as_bytes(), threads, GenerationSource::Btime, builder)?;
        Ok(())
    }
}
