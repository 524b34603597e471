//! btrfs: the fileset is a subvolume; each run takes a read-only snapshot
//! of it in `<fileset>/.snapshots/<name>` (where GPFS keeps fileset
//! snapshots too; walks skip `.snapshots`), and reads the snapshot from
//! the btrfs tree, or walks it.
//!
//! What changed since the last run is read in one of two ways:
//!
//! - **The tree search** ([`changed_since`]): the leaves written since
//!   the last snapshot's transaction. Cheap when change is clustered; on
//!   change spread evenly over the tree it reads most leaves.
//! - **Guided by the event journal** ([`changed_among`]), where
//!   `ferry journal` (or the agent) keeps one for the subvolume: only the
//!   inodes the journal's events since the last run name are read from
//!   the new snapshot, one targeted search each.
//!
//! The journal's window runs from a barrier taken just before the last
//! run's snapshot to one taken just after this run's, so the windows of
//! consecutive runs overlap around each snapshot. That is needed: a
//! change whose system call is still returning while the snapshot is
//! taken is in the snapshot, but its event may come after this run's
//! closing barrier. The next run's window holds it, and reads the inode
//! again whatever its transid. Only a read that sees every change can
//! follow a run guided by the journal, so when the journal cannot guide
//! the next run (its writer stopped, its queue overflowed, the run has no
//! position of its own), that run reads the whole snapshot rather than
//! the leaves written since: the tree search would start after the
//! snapshot that holds the late change, and miss it.

use super::btrfs_changed::{changed_among, changed_since};
use super::btrfs_tree::{TreeError, read_tree};
use super::{ChangesQuery, ChangesRead, Fileset, Provider, ScanError, SnapshotError, base_name, mount_point};
use crate::snapdiff::build::{GenerationSource, ManifestBuilder, walk_into};
use crate::snapdiff::journal::changes::Positions;
use crate::snapdiff::journal::{self, JournalFiles};
use crate::sys::btrfs;
use crate::sys::{self, Base};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a read of changes reads the whole snapshot without privilege.
const NO_SEARCH: &str = "the btrfs tree cannot be searched without CAP_SYS_ADMIN";

/// A btrfs subvolume as a fileset.
pub struct Btrfs {
    fileset: Fileset,
    root: PathBuf,
    walk: bool,
    /// The subvolume's id: the tree id its file handles carry.
    subvolume: u64,
    /// The subvolume's event journal, where one was ever written.
    journal: Option<JournalFiles>,
    /// Each snapshot's position in the journal.
    positions: Positions,
}

impl Btrfs {
    /// The subvolume whose root directory is `path`. Snapshots are read
    /// from the btrfs tree (as root), or walked when `walk` is set. Its
    /// event journal, if any, is in `state_dir` (default `<filesystem
    /// root>/.rotate`).
    pub fn open(path: &Path, walk: bool, state_dir: Option<&Path>) -> io::Result<Btrfs> {
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
        let fileset = Fileset {
            name: base_name(&root),
            id: id.to_string(),
            path: root.as_os_str().as_bytes().to_vec(),
            fs_root: mount_point(&root)?,
        };
        // Where `ferry journal` of the subvolume keeps it.
        let files = JournalFiles::of_tree(&fileset.name, fd.as_fd(), &root, &fileset.fs_root, state_dir)?;
        Ok(Btrfs {
            fileset,
            root,
            walk,
            subvolume: id,
            journal: files.exists().then_some(files),
            positions: Positions::default(),
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

    /// With a journal, fixes the snapshot's position in it first: a
    /// barrier before the snapshot, from which the next run reads.
    fn create_snapshot(&self, name: &str) -> Result<(), SnapshotError> {
        if let Some(j) = self.journal.as_ref().filter(|_| !self.walk) {
            self.positions.fix(j, name);
        }
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

    fn snapshot_journal(&self, name: &str) -> Option<u64> {
        self.positions.of(name).ok().map(|p| p.seq)
    }

    fn snapshot_barrier(&self, name: &str) -> Option<String> {
        self.positions.of(name).ok().map(|p| p.token)
    }

    fn reads_changes(&self) -> bool {
        !self.walk
    }

    fn changed(&self, q: ChangesQuery<'_>) -> Result<ChangesRead, ScanError> {
        let open = |s: &str| {
            let p = self.snapshots_dir().join(s);
            open_dir(&p).map_err(|e| ScanError::io(&p, e))
        };
        let new_fd = open(q.new)?;
        if let Some(since) = q.since_journal {
            return self.guided(since, new_fd.as_fd(), q);
        }
        let old_fd = open(q.old)?;
        match changed_since(new_fd.as_fd(), old_fd.as_fd(), q.since, q.old_dirs, q.limit, q.split) {
            Ok(Some(c)) => Ok(ChangesRead::Read(c)),
            Ok(None) => Ok(ChangesRead::TooMany),
            Err(TreeError::Io(e)) if e.raw_os_error() == Some(libc::EPERM) => Ok(ChangesRead::Unable(NO_SEARCH.into())),
            Err(e) => Err(e.into()),
        }
    }

    fn snapshot_root(&self, name: &str) -> Option<PathBuf> {
        Some(self.snapshots_dir().join(name))
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

impl Btrfs {
    /// What changed in snapshot `new` since the last run, read where the
    /// journal's events since `since` (the last run's position) point
    /// (see the module documentation). Any reason the journal cannot
    /// guide this run makes it read the whole snapshot.
    fn guided(&self, since: u64, new: BorrowedFd<'_>, q: ChangesQuery<'_>) -> Result<ChangesRead, ScanError> {
        let unable = |why: &str| {
            Ok(ChangesRead::Unable(format!(
                "{why}; the last run was guided by the event journal, which only a read of every change may follow"
            )))
        };
        let Some(j) = &self.journal else {
            return unable("the event journal is no longer kept");
        };
        if let Err(gap) = self.positions.of(q.new) {
            return unable(&gap.to_string());
        }
        // The window ends after the snapshot.
        let until = match journal::changes::barrier(j) {
            Ok(at) => at,
            Err(gap) => return unable(&gap.to_string()),
        };
        if until.seq.saturating_sub(since) > q.held as u64 {
            return Ok(ChangesRead::TooMany);
        }
        let events = match journal::changes::window(j, since, q.since_barrier, &until, q.threads())? {
            Ok(events) => events,
            Err(gap) => return unable(&gap.to_string()),
        };
        let inos = journal::changes::named_inodes(&events, Some(self.subvolume));
        if inos.len() > q.limit {
            return Ok(ChangesRead::TooMany);
        }
        let mut changed = match changed_among(new, &inos, q.threads()) {
            Ok(c) => c,
            Err(TreeError::Io(e)) if e.raw_os_error() == Some(libc::EPERM) => return unable(NO_SEARCH),
            Err(e) => return Err(e.into()),
        };
        changed.examined += events.len() as u64;
        changed.journal = true;
        Ok(ChangesRead::Read(changed))
    }
}
