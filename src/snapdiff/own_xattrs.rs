//! Telling the changes ferry made from the ones a user made.
//!
//! A migrate records the object's location and the file's state in xattrs
//! under ferry's prefix (`user.ferry.` by default). That moves the file's
//! ctime, after the snapshot the sending run was taken from, so the next
//! diff would report every file the last run sent as a metadata-only
//! update, and a site sync would check each of them with the other site
//! again. Measured on a 200,000-file fileset with 1 % rewritten per run:
//! each run re-checked the previous run's 2,000 files, and the
//! incremental sync was 1.29 times rsync (`docs/benchmarks.md`).
//!
//! The manifest keeps no xattrs (reading them for every inode would cost a
//! `listxattr` per file on every full read), but both snapshots are still
//! there while the diff runs. So an inode whose only change is its ctime
//! (same size, mtime, mode, owner, links) is looked at in both: when its
//! xattrs outside ferry's prefix, ACLs and security labels included, are
//! the same, the change was ferry's own and the inode is unchanged. Any
//! error reading them counts as a change, as it did before this check.
//!
//! A change this cannot see: data rewritten with its size and mtime put
//! back (`touch -d`), which moves the ctime alone. rsync's default check
//! (size and mtime) does not see it either.

use super::diff::OwnChanges;
use super::provider::btrfs_tree::{self, Xattrs};
use crate::sys::btrfs::{SUBVOL_ROOT_INO, SearchBuf, is_btrfs};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Compares an inode's xattrs in two snapshots of one fileset, leaving out
/// those under ferry's prefix.
pub struct OwnXattrs {
    prefix: Vec<u8>,
    read: Read,
}

/// Where the xattrs are read from.
enum Read {
    /// By path under each snapshot's root: any filesystem.
    Paths { old: PathBuf, new: PathBuf },
    /// By inode number from each snapshot's btrfs tree, when both roots
    /// are btrfs subvolumes and the tree can be searched (`CAP_SYS_ADMIN`):
    /// no path lookups, so no dentries under the old snapshot for its
    /// deletion to prune. After a first sync had stamped 200,000 files, the
    /// next run's path reads (a lookup per component, then `listxattr` and
    /// a `getxattr` per name) left that many dentries behind.
    Trees {
        old: OwnedFd,
        new: OwnedFd,
        buf: Mutex<SearchBuf>,
    },
}

/// Bytes of a tree search's results: more than the largest item (one
/// btrfs leaf), so one inode's xattrs come in one or a few calls.
const TREE_BUFFER: usize = 128 << 10;

impl OwnXattrs {
    /// Compares the entries under `old` and `new` (the two snapshots'
    /// roots: where the fileset's relative paths are found), ignoring
    /// xattrs whose names start with `prefix`: from the btrfs trees where
    /// it can ([`Read::Trees`]), else by path.
    pub fn new(prefix: &str, old: &Path, new: &Path) -> OwnXattrs {
        match trees(old, new) {
            Some(read) => OwnXattrs {
                prefix: prefix.as_bytes().to_vec(),
                read,
            },
            None => OwnXattrs::by_paths(prefix, old, new),
        }
    }

    /// [`OwnXattrs::new`] reading by path on any filesystem.
    pub fn by_paths(prefix: &str, old: &Path, new: &Path) -> OwnXattrs {
        OwnXattrs {
            prefix: prefix.as_bytes().to_vec(),
            read: Read::Paths {
                old: old.to_path_buf(),
                new: new.to_path_buf(),
            },
        }
    }

    /// Whether the xattrs are read from btrfs trees rather than by path.
    pub fn reads_trees(&self) -> bool {
        matches!(self.read, Read::Trees { .. })
    }

    /// The xattrs of `rel` under `root` outside the prefix, sorted by name;
    /// `None` if they cannot be read.
    fn by_path(&self, root: &Path, rel: &[u8]) -> Option<Xattrs> {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(rel))
        };
        let path = CString::new(path.into_os_string().into_encoded_bytes()).ok()?;
        let mut out = Vec::new();
        for name in crate::sys::list_xattrs(&path).ok()? {
            if name.starts_with(&self.prefix) {
                continue;
            }
            let c = CString::new(name.clone()).ok()?;
            // Removed between the two calls: a change.
            let value = crate::sys::get_xattr(&path, &c).ok()??;
            out.push((name, value));
        }
        out.sort();
        Some(out)
    }

    /// The xattrs of inode `ino` in the tree holding `root` outside the
    /// prefix, sorted by name; `None` if they cannot be read.
    fn by_inode(&self, root: &OwnedFd, ino: u64, buf: &mut SearchBuf) -> Option<Xattrs> {
        let mut out = btrfs_tree::xattrs(root.as_fd(), ino, buf).ok()??;
        out.retain(|(name, _)| !name.starts_with(&self.prefix));
        out.sort();
        Some(out)
    }
}

/// The tree reader for two snapshot roots, when both are btrfs subvolume
/// roots whose trees this process may search.
fn trees(old: &Path, new: &Path) -> Option<Read> {
    let open = |p: &Path| -> Option<OwnedFd> {
        let f = std::fs::File::open(p).ok()?;
        let root =
            is_btrfs(f.as_fd()).ok()? && std::os::unix::fs::MetadataExt::ino(&f.metadata().ok()?) == SUBVOL_ROOT_INO;
        root.then(|| f.into())
    };
    let (old, new) = (open(old)?, open(new)?);
    let mut buf = SearchBuf::new(TREE_BUFFER);
    // Without CAP_SYS_ADMIN the search fails (EPERM): by path, then.
    btrfs_tree::xattrs(old.as_fd(), SUBVOL_ROOT_INO, &mut buf).ok()??;
    Some(Read::Trees {
        old,
        new,
        buf: Mutex::new(buf),
    })
}

impl OwnChanges for OwnXattrs {
    fn only_own(&self, ino: u64, old: &[u8], new: &[u8]) -> bool {
        let (a, b) = match &self.read {
            Read::Paths { old: o, new: n } => (self.by_path(o, old), self.by_path(n, new)),
            Read::Trees { old: o, new: n, buf } => {
                let mut buf = buf.lock().expect("search buffer");
                (self.by_inode(o, ino, &mut buf), self.by_inode(n, ino, &mut buf))
            }
        };
        match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &Path, name: &str, value: &[u8]) {
        let f = std::fs::File::open(path).unwrap();
        rustix::fs::fsetxattr(&f, name, value, rustix::fs::XattrFlags::empty()).unwrap();
    }

    #[test]
    fn only_xattrs_under_the_prefix_may_differ() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        for root in [&old, &new] {
            std::fs::create_dir_all(root.join("d")).unwrap();
            std::fs::write(root.join("d/f"), b"x").unwrap();
            set(&root.join("d/f"), "user.keep", b"1");
        }
        let own = OwnXattrs::new("user.ferry.", &old, &new);
        assert!(!own.reads_trees(), "a temporary directory is not a btrfs subvolume");
        assert!(own.only_own(0, b"d/f", b"d/f"), "identical");
        set(&new.join("d/f"), "user.ferry.loc.e", b"key");
        set(&new.join("d/f"), "user.ferry.state", b"m");
        assert!(own.only_own(0, b"d/f", b"d/f"), "ferry's own xattrs added");
        set(&new.join("d/f"), "user.keep", b"2");
        assert!(!own.only_own(0, b"d/f", b"d/f"), "a user's value changed");
        set(&new.join("d/f"), "user.keep", b"1");
        set(&new.join("d/f"), "user.more", b"");
        assert!(!own.only_own(0, b"d/f", b"d/f"), "a user's xattr added");
        assert!(!own.only_own(0, b"d/f", b"d/gone"), "unreadable counts as a change");
        assert!(own.only_own(0, b"", b""), "the root");
    }
}
