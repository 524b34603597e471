//! Directories and symbolic links as objects: what `migrate` records of
//! them and how `reverse_stub` builds them, so a synced tree arrives with
//! its directories' mode, owner, times and xattrs (ACLs included) and its
//! links.
//!
//! Their objects hold no content, only an [`ObjectMeta`] whose
//! [`EntryKind`] says what it is (a link's target is in the metadata, as
//! raw bytes). A directory's object is at its own key
//! ([`crate::endpoint::Endpoint::dir_key`]), a link's at its path's key.
//!
//! On the destination, a missing parent directory is made (mode 0755) and
//! marked as such ([`Xattrs::mark_made_parent`]); a directory's object
//! applies its metadata to a directory that did not exist, to one ferry
//! made as a missing parent, or, with `overwrite`, to any existing one. A
//! link is made under a temporary name and renamed into place; an existing
//! link to another target is replaced only with `overwrite`, and nothing
//! else in the way is ever replaced. Every namespace change keeps the
//! times of the directory it changes ([`DirTimes`]).

use super::dirtimes::DirTimes;
use super::xattrs::Xattrs;
use super::{Reachable, Snap, chosen_times, set_times};
use crate::endpoint::{EntryKind, ObjectMeta};
use crate::sys::{
    Base, Timestamp, chown_at, mkdir_at, open_dir_at, open_nofollow_at, read_link_at, rename_at, set_times_at,
    symlink_at, unlink_at,
};
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, fchown};
use std::path::Path;

/// A directory or link read for its object.
pub struct Recorded {
    /// Its metadata (size 0; the hash is the upload's to fill in).
    pub meta: ObjectMeta,
    /// A handle on it, for the upload's source argument (nothing is read
    /// from it: the object has no content).
    pub handle: File,
}

/// Reads the directory or symbolic link at `path` for its object;
/// `Ok(None)` when it is neither (a device, FIFO or socket, which travel
/// as nothing).
pub fn read(xattrs: &Xattrs, path: &[u8]) -> io::Result<Option<Recorded>> {
    let reach = Reachable::new(path, false)?;
    let name = c_path(reach.path())?;
    let handle = File::from(open_nofollow_at(Base::Cwd, &name)?);
    let st = Snap::of(&handle)?;
    let (kind, copied) = match st.mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let dir = File::from(open_dir_at(Base::Cwd, &name, false)?);
            if Snap::of(&dir)?.id != st.id {
                return Err(io::Error::other("directory replaced while it was read"));
            }
            (EntryKind::Directory, xattrs.copied_xattrs(&dir)?)
        }
        // The handle is the link itself: its target is read through it,
        // so a link swapped meanwhile cannot give another's target.
        libc::S_IFLNK => (
            EntryKind::Symlink(read_link_at(Base::Dir(handle.as_fd()), c"")?),
            Vec::new(),
        ),
        _ => return Ok(None),
    };
    let meta = ObjectMeta {
        size: 0,
        hash: blake3::hash(b""),
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtime: st.mtime,
        atime: st.atime,
        xattrs: copied,
        path: None,
        kind,
        link: None,
    };
    Ok(Some(Recorded { meta, handle }))
}

/// How building an entry ended when it did not fail.
pub enum Built {
    /// Made, or its metadata applied.
    Done,
    /// Left as it was, for this reason (a skip).
    Kept(&'static str),
}

/// Builds directories and links on the destination, and makes the missing
/// parents of anything built there.
pub struct Builder<'a> {
    /// ferry's xattr names.
    pub xattrs: &'a Xattrs,
    /// Keeps directory times across namespace changes.
    pub times: &'a DirTimes,
    /// Apply to an existing directory, replace a link to another target.
    pub overwrite: bool,
    /// Set the access time to now.
    pub update_atime: bool,
    /// Set the modification time to now.
    pub update_mtime: bool,
}

impl Builder<'_> {
    /// Makes the missing directories above `path` (mode 0755, marked as
    /// missing parents), keeping the times of the deepest one that
    /// existed. A path of PATH_MAX bytes or more has its parents made one
    /// component at a time ([`Reachable`]), unmarked.
    pub fn make_parents(&self, path: &[u8]) -> io::Result<()> {
        let Some(parent) = parent_of(path) else {
            return Ok(());
        };
        if path.len() >= libc::PATH_MAX as usize {
            return Reachable::new(path, true).map(drop);
        }
        let mut missing = Vec::new();
        let mut existing = parent;
        loop {
            match fs::symlink_metadata(OsStr::from_bytes(existing)) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.push(existing);
                    match parent_of(existing) {
                        Some(p) => existing = p,
                        None => break,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let top = File::from(open_dir_at(Base::Cwd, &c_bytes(existing)?, true)?);
        self.times.keeping(&top, || {
            for dir in missing.iter().rev() {
                let name = c_bytes(dir)?;
                // Another thread may make it meanwhile: then it is theirs
                // to mark.
                if mkdir_at(Base::Cwd, &name, 0o755)? {
                    let made = File::from(open_dir_at(Base::Cwd, &name, false)?);
                    self.xattrs.mark_made_parent(&made)?;
                }
            }
            Ok(())
        })
    }

    /// Builds the directory at `path` from its object's metadata.
    pub fn directory(&self, path: &[u8], meta: &ObjectMeta) -> Result<Built, io::Error> {
        self.make_parents(path)?;
        let reach = Reachable::new(path, false)?;
        let name = c_path(reach.path())?;
        let made = match parent_dir(reach.path())? {
            Some(parent) => self.times.keeping(&parent, || mkdir_at(Base::Cwd, &name, 0o700))?,
            None => mkdir_at(Base::Cwd, &name, 0o700)?,
        };
        let dir = match open_dir_at(Base::Cwd, &name, false) {
            Ok(fd) => File::from(fd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                return Err(io::Error::other("something other than a directory is in the way"));
            }
            Err(e) => return Err(e),
        };
        if !made && !self.overwrite && !self.xattrs.is_made_parent(&dir)? {
            return Ok(Built::Kept(if self.same_directory(&dir, meta)? {
                "already a directory with this metadata"
            } else {
                "a directory exists; set overwrite to apply the object's metadata to it"
            }));
        }
        fchown(&dir, Some(meta.uid), Some(meta.gid))?;
        // What the object does not record goes (the mark among them), then
        // what it does is set; the mode comes after the ACLs (it sets their
        // mask) and the owner (which may clear set-id bits).
        for (name, _) in self.xattrs.copied_xattrs(&dir)? {
            if !meta.xattrs.iter().any(|(n, _)| *n == name) {
                remove_xattr(&dir, &name)?;
            }
        }
        self.xattrs.clear_made_parent(&dir)?;
        for (name, value) in &meta.xattrs {
            super::xattrs::set_explained(&dir, OsStr::from_bytes(name), value)?;
        }
        dir.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))?;
        let (atime, mtime) = self.chosen(meta);
        self.times.exclusive(|| set_times(&dir, atime, mtime))?;
        Ok(Built::Done)
    }

    /// Whether an existing directory already has the object's metadata.
    fn same_directory(&self, dir: &File, meta: &ObjectMeta) -> io::Result<bool> {
        let st = Snap::of(dir)?;
        Ok(st.mode & 0o7777 == meta.mode & 0o7777
            && st.uid == meta.uid
            && st.gid == meta.gid
            && st.mtime == meta.mtime
            && self.xattrs.copied_xattrs(dir)? == meta.xattrs)
    }

    /// Builds the symbolic link at `path` to `target`, with the object's
    /// owner and times.
    pub fn symlink(&self, path: &[u8], target: &[u8], meta: &ObjectMeta) -> Result<Built, io::Error> {
        self.make_parents(path)?;
        let reach = Reachable::new(path, false)?;
        let parent = parent_dir(reach.path())?.ok_or_else(|| io::Error::other("a link cannot be the root"))?;
        let last = c_bytes(last_of(reach.path().as_os_str().as_bytes()))?;
        let at = Base::Dir(parent.as_fd());
        let replace = match open_nofollow_at(at, &last) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
            Err(e) => return Err(e),
            Ok(fd) => {
                let existing = File::from(fd);
                let st = Snap::of(&existing)?;
                if st.mode & libc::S_IFMT != libc::S_IFLNK {
                    return Err(io::Error::other("something other than a symbolic link is in the way"));
                }
                let same = read_link_at(Base::Dir(existing.as_fd()), c"")? == target;
                if same && st.uid == meta.uid && st.gid == meta.gid && st.mtime == meta.mtime {
                    return Ok(Built::Kept("already this link"));
                }
                if !self.overwrite {
                    return Err(io::Error::other(if same {
                        "a link to the same target with another owner or times exists; set overwrite to replace it"
                    } else {
                        "a link to another target exists; set overwrite to replace it"
                    }));
                }
                true
            }
        };
        let target = CString::new(target).map_err(|_| io::Error::other("link target holds a NUL byte"))?;
        let tmp = c_bytes(temp_name().as_bytes())?;
        self.times.keeping(&parent, || symlink_at(&target, at, &tmp))?;
        let (atime, mtime) = self.chosen(meta);
        let placed = (|| {
            chown_at(at, &tmp, meta.uid, meta.gid)?;
            set_times_at(at, &tmp, atime, mtime)?;
            self.times.keeping(&parent, || rename_at(at, &tmp, at, &last, !replace))
        })();
        if let Err(e) = placed {
            // Best effort: a leftover temporary link holds no data.
            let _ = self.times.keeping(&parent, || unlink_at(at, &tmp, false));
            return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::other("something appeared at the path meanwhile; left as it was")
            } else {
                e
            });
        }
        Ok(Built::Done)
    }

    fn chosen(&self, meta: &ObjectMeta) -> (Timestamp, Timestamp) {
        chosen_times(self.update_atime, self.update_mtime, meta.atime, meta.mtime)
    }
}

/// A temporary name for an entry being built in its directory.
pub fn temp_name() -> String {
    format!(
        ".ferry-reverse-stub.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The open parent directory of `path` (as given to the kernel); `None`
/// for `/`.
pub fn parent_dir(path: &Path) -> io::Result<Option<File>> {
    match parent_of(path.as_os_str().as_bytes()) {
        Some(p) => Ok(Some(File::from(open_dir_at(Base::Cwd, &c_bytes(p)?, true)?))),
        None => Ok(None),
    }
}

/// The directory part of an absolute path: `/a/b` gives `/a`, `/a` gives
/// `/`, and `/` none.
fn parent_of(path: &[u8]) -> Option<&[u8]> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) if trimmed.len() > 1 => Some(b"/"),
        Some(0) | None => None,
        Some(i) => Some(&trimmed[..i]),
    }
}

/// The last component of a path.
fn last_of(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

fn c_path(path: &Path) -> io::Result<CString> {
    c_bytes(path.as_os_str().as_bytes())
}

fn c_bytes(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn remove_xattr(f: &File, name: &[u8]) -> io::Result<()> {
    use xattr::FileExt;
    match f.remove_xattr(OsStr::from_bytes(name)) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_absolute_paths() {
        assert_eq!(parent_of(b"/a/b"), Some(&b"/a"[..]));
        assert_eq!(parent_of(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent_of(b"/a/b/"), Some(&b"/a"[..]));
        assert_eq!(parent_of(b"/"), None);
        assert_eq!(last_of(b"/a/b\xff"), b"b\xff");
    }
}
