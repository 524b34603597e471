//! One file as an operation handles it: opening without following links,
//! the stat facts that prove it did not change, setting its times, and
//! writing data back without filling holes.

use crate::sys::{Base, Timestamp, mkdir_at, open_path_at};
use crate::task::{FileState, Outcome};
use std::borrow::Cow;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, FileTimes, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a path could not be opened as an operation wanted.
pub enum OpenError {
    /// Nothing at the path.
    Missing,
    /// The path is a symbolic link (never followed).
    Symlink,
    /// The path is a directory and the operation needs a file.
    Directory,
    /// Any other error.
    Other(io::Error),
}

impl OpenError {
    /// The usual outcome: missing paths fail (or are aborted when the task
    /// says so), links and directories are skipped with the reason.
    pub fn outcome(self, op: &str, abort_missing: bool) -> Outcome {
        match self {
            OpenError::Missing if abort_missing => Outcome::with(FileState::Aborted, "no such file or directory"),
            OpenError::Missing => Outcome::failed("no such file or directory"),
            OpenError::Symlink => Outcome::skipped(format!("symbolic link: {op} works on regular files only")),
            OpenError::Directory => Outcome::skipped(format!("directory: {op} works on regular files only")),
            OpenError::Other(e) => Outcome::failed(format!("cannot open: {e}")),
        }
    }
}

/// The kernel refuses a path of this many bytes or more (`ENAMETOOLONG`).
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// A path the kernel accepts for a local file: the path itself when it is
/// shorter than PATH_MAX; else its last component under
/// `/proc/self/fd/<n>`, where `n` is a handle of its parent directory
/// opened one component at a time (which has no length limit). A tree
/// walked with `openat` can be deeper than PATH_MAX, and its files must
/// migrate and come back like any other.
pub struct Reachable<'a> {
    /// The parent's handle, kept open while the path is in use.
    _parent: Option<OwnedFd>,
    /// The path itself (no copy on the usual, short path) or its short form.
    path: Cow<'a, Path>,
}

impl<'a> Reachable<'a> {
    /// The reachable form of `path` (absolute); with `create`, missing
    /// parent directories are made on the way (mode 0777 less the umask).
    pub fn new(path: &'a [u8], create: bool) -> io::Result<Reachable<'a>> {
        let (parent, last) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        if path.len() < PATH_MAX {
            if create && !parent.is_empty() {
                std::fs::create_dir_all(OsStr::from_bytes(parent))?;
            }
            return Ok(Reachable {
                _parent: None,
                path: Cow::Borrowed(Path::new(OsStr::from_bytes(path))),
            });
        }
        let c = |name: &[u8]| CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
        let mut dir = open_path_at(Base::Cwd, &c(b"/")?)?;
        for comp in parent.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let name = c(comp)?;
            dir = match open_path_at(Base::Dir(dir.as_fd()), &name) {
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    mkdir_at(Base::Dir(dir.as_fd()), &name, 0o777)?;
                    open_path_at(Base::Dir(dir.as_fd()), &name)?
                }
                other => other?,
            };
        }
        let mut short = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        short.extend_from_slice(last);
        Ok(Reachable {
            _parent: Some(dir),
            path: Cow::Owned(PathBuf::from(OsString::from_vec(short))),
        })
    }

    /// The path to hand to the kernel.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens `path` without following a final symlink, without blocking on
/// FIFOs and without updating its access time where permitted; a path of
/// PATH_MAX bytes or more is reached through its parent ([`Reachable`]).
pub fn open_file(path: &[u8], write: bool) -> Result<File, OpenError> {
    let reachable = Reachable::new(path, false).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => OpenError::Missing,
        _ => OpenError::Other(e),
    })?;
    let path = reachable.path();
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let open = |extra: libc::c_int| {
        File::options()
            .read(true)
            .write(write)
            .custom_flags(flags | extra)
            .open(path)
    };
    let result = match open(libc::O_NOATIME) {
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    };
    result.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => OpenError::Missing,
        Some(libc::ELOOP) => OpenError::Symlink,
        Some(libc::EISDIR) => OpenError::Directory,
        _ => OpenError::Other(e),
    })
}

/// The attributes of an open file that prove whether it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snap {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The filesystem's preferred I/O block size (hole-punch granularity).
    pub blksize: u64,
    /// Device and inode: which file this is, whatever its name.
    pub id: (u64, u64),
    /// How many names (hard links) the file has.
    pub nlink: u64,
}

impl Snap {
    /// Reads the facts of `file`.
    pub fn of(file: &File) -> io::Result<Snap> {
        Ok(Snap::from_metadata(&file.metadata()?))
    }

    fn from_metadata(m: &Metadata) -> Snap {
        let ts = |sec: i64, nsec: i64| Timestamp { sec, nsec: nsec as u32 };
        Snap {
            size: m.size(),
            mtime: ts(m.mtime(), m.mtime_nsec()),
            ctime: ts(m.ctime(), m.ctime_nsec()),
            atime: ts(m.atime(), m.atime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            blksize: m.blksize().max(512),
            id: (m.dev(), m.ino()),
            nlink: m.nlink(),
        }
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Same size, mtime and ctime: nothing wrote to the file in between.
    pub fn unchanged(&self, later: &Snap) -> bool {
        self.size == later.size && self.mtime == later.mtime && self.ctime == later.ctime
    }

    /// Where a stub's punched range starts: `stub_size` rounded up to a
    /// whole block, so a partial block is never zeroed.
    pub fn stub_offset(&self, stub_size: u64) -> u64 {
        stub_size.div_ceil(self.blksize).saturating_mul(self.blksize)
    }
}

/// The access and modification times to set: now where the task asks to
/// update them, else the given ones.
pub fn chosen_times(
    update_atime: bool,
    update_mtime: bool,
    atime: Timestamp,
    mtime: Timestamp,
) -> (Timestamp, Timestamp) {
    (
        if update_atime { now() } else { atime },
        if update_mtime { now() } else { mtime },
    )
}

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

/// Sets a file's access and modification times.
pub fn set_times(file: &File, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    file.set_times(
        FileTimes::new()
            .set_accessed(atime.system_time())
            .set_modified(mtime.system_time()),
    )
}

/// The block size of sparse writes: whole zero blocks are left as holes.
pub const BLOCK: usize = 4096;

/// Writes `data` at `offset`, skipping whole zero blocks so holes stay.
pub(crate) fn write_sparse(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    // Blocks are aligned to the file, not to `data`: a chunk that starts
    // mid-block (downloads arrive in any sizes) must not turn a zero block
    // into written data.
    let head = (BLOCK - (offset % BLOCK as u64) as usize) % BLOCK;
    let (first, rest) = data.split_at(head.min(data.len()));
    let blocks = std::iter::once(first)
        .filter(|b| !b.is_empty())
        .chain(rest.chunks(BLOCK));
    let mut start = None;
    let mut pos = 0;
    for block in blocks {
        let zero = block.iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(pos),
            (true, Some(s)) => {
                file.write_all_at(&data[s..pos], offset + s as u64)?;
                start = None;
            }
            _ => {}
        }
        pos += block.len();
    }
    if let Some(s) = start {
        file.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_writes_align_blocks_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.set_len(64 * 1024).unwrap();
        // Data only in the block at 8192, delivered in chunks that start
        // mid-block: the zero blocks around it must stay holes.
        let mut content = vec![0u8; 64 * 1024];
        content[9000] = 1;
        for (i, chunk) in content.chunks(1000).enumerate() {
            write_sparse(&f, (i * 1000) as u64, chunk).unwrap();
        }
        assert_eq!(crate::sys::next_data(&f, 0).unwrap(), Some(8192));
        assert_eq!(crate::sys::next_hole(&f, 8192).unwrap(), 12288);
        let mut back = vec![0u8; content.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, content);
    }

    #[test]
    fn times_before_1970() {
        let t = Timestamp {
            sec: -2,
            nsec: 250_000_000,
        };
        assert_eq!(
            UNIX_EPOCH.duration_since(t.system_time()).unwrap(),
            std::time::Duration::from_millis(1750)
        );
    }
}
