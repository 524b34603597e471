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
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Compares an inode's xattrs in two snapshots of one fileset, leaving out
/// those under ferry's prefix.
#[derive(Clone, Debug)]
pub struct OwnXattrs {
    prefix: Vec<u8>,
    old: PathBuf,
    new: PathBuf,
}

impl OwnXattrs {
    /// Compares paths under `old` and `new` (the two snapshots' roots:
    /// where the fileset's relative paths are found), ignoring xattrs whose
    /// names start with `prefix`.
    pub fn new(prefix: &str, old: &Path, new: &Path) -> OwnXattrs {
        OwnXattrs {
            prefix: prefix.as_bytes().to_vec(),
            old: old.to_path_buf(),
            new: new.to_path_buf(),
        }
    }

    /// The xattrs of `rel` under `root` outside the prefix, sorted by name;
    /// `None` if they cannot be read.
    fn read(&self, root: &Path, rel: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
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
}

impl OwnChanges for OwnXattrs {
    fn only_own(&self, old: &[u8], new: &[u8]) -> bool {
        match (self.read(&self.old, old), self.read(&self.new, new)) {
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
        assert!(own.only_own(b"d/f", b"d/f"), "identical");
        set(&new.join("d/f"), "user.ferry.loc.e", b"key");
        set(&new.join("d/f"), "user.ferry.state", b"m");
        assert!(own.only_own(b"d/f", b"d/f"), "ferry's own xattrs added");
        set(&new.join("d/f"), "user.keep", b"2");
        assert!(!own.only_own(b"d/f", b"d/f"), "a user's value changed");
        set(&new.join("d/f"), "user.keep", b"1");
        set(&new.join("d/f"), "user.more", b"");
        assert!(!own.only_own(b"d/f", b"d/f"), "a user's xattr added");
        assert!(!own.only_own(b"d/f", b"d/gone"), "unreadable counts as a change");
        assert!(own.only_own(b"", b""), "the root");
    }
}
