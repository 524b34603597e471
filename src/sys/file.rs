//! Data-safety syscalls on open files: punching holes, leases, `flock`,
//! filesystem sync, finding data extents and in-kernel range copies.

use rustix::fs::{FallocateFlags, FlockOperation, SeekFrom};
use rustix::io::Errno;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Once;

/// Deallocates `len` bytes at `offset` while keeping the file's size
/// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): reads of the range return zeros.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    Ok(rustix::fs::fallocate(file, mode, to_off(offset)?, to_off(len)?)?)
}

/// Flushes every dirty page and inode of the filesystem that `file` lives
/// on (`syncfs`): one call makes a whole batch of written objects durable.
pub fn syncfs(file: &File) -> io::Result<()> {
    Ok(rustix::fs::syncfs(file)?)
}

/// The kind of lease to hold on a file (`fcntl(F_SETLEASE)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// No lease (releases one held).
    None,
    /// A write lease: granted only while no other process has the file
    /// open; any later open by another process waits until it is released.
    Write,
}

/// Takes or releases a lease on `file`. A write lease needs a descriptor
/// opened for writing and fails with `EAGAIN`/`EBUSY` while another
/// process has the file open. Lease-break signals (`SIGIO`) are ignored
/// process-wide, so a break never kills the process; callers release the
/// lease promptly instead.
///
/// Neither rustix nor nix has `F_SETLEASE`, and setting a signal's
/// disposition is `unsafe` in nix as in libc, hence the hand-written calls.
pub fn set_lease(file: &File, lease: Lease) -> io::Result<()> {
    static IGNORE_SIGIO: Once = Once::new();
    IGNORE_SIGIO.call_once(|| {
        // SAFETY: installs the SIG_IGN disposition; no handler code runs.
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    });
    let arg = match lease {
        Lease::None => libc::F_UNLCK,
        Lease::Write => libc::F_WRLCK,
    };
    // SAFETY: F_SETLEASE takes an integer argument and no memory; the
    // descriptor is borrowed from `file` for the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where the next data at or after `offset` begins (`SEEK_DATA`), or `None`
/// when only a hole remains up to the end of the file.
pub fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    seek(file, SeekFrom::Data(to_off(offset)?))
}

/// Where the next hole at or after `offset` begins (`SEEK_HOLE`); the end of
/// the file counts as a hole.
pub fn next_hole(file: &File, offset: u64) -> io::Result<u64> {
    Ok(seek(file, SeekFrom::Hole(to_off(offset)?))?.unwrap_or(offset))
}

/// Moves the file position (callers use positioned I/O only, so it does not
/// matter where it is left); `ENXIO` (no data or hole at or after the
/// offset) is `None`.
fn seek(file: &File, pos: SeekFrom) -> io::Result<Option<u64>> {
    match rustix::fs::seek(file, pos) {
        Ok(p) => Ok(Some(p)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off` inside
/// the kernel (`copy_file_range`), sharing extents where the filesystem can
/// (btrfs, XFS). Returns how many bytes were copied; short copies happen.
pub fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<u64> {
    let mut src_off = to_off(src_off)?;
    let mut dst_off = to_off(dst_off)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let copied = rustix::fs::copy_file_range(src, Some(&mut src_off), dst, Some(&mut dst_off), len)?;
    Ok(copied as u64)
}

/// Checks that a file offset or length fits the kernel's signed `off_t`
/// (rustix passes a `u64` on as it is, where a larger value would turn
/// negative): `EFBIG` otherwise.
fn to_off(v: u64) -> io::Result<u64> {
    if i64::try_from(v).is_ok() {
        Ok(v)
    } else {
        Err(io::Error::from_raw_os_error(libc::EFBIG))
    }
}

/// Takes an exclusive `flock` on `file`, waiting for another holder to let
/// go. The lock lasts until every descriptor of this open file is closed.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    Ok(rustix::io::retry_on_intr(|| {
        rustix::fs::flock(file.as_fd(), FlockOperation::LockExclusive)
    })?)
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when
/// another open file description holds a lock on it. The lock lasts until
/// every descriptor of this open file is closed, so a process that dies
/// drops it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// A new empty file, open for reading and writing, in a directory that
    /// lives as long as the returned guard.
    fn scratch() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        (dir, path, f)
    }

    #[test]
    fn punch_keeps_size_and_zeroes_the_range() {
        let (_dir, _path, mut f) = scratch();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        punch_hole(&f, 4096, (1 << 20) - 4096).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        let mut buf = [1u8; 16];
        f.read_exact_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [0; 16]);
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [7; 16]);
        assert_eq!(next_data(&f, 4096).unwrap(), None);
        assert_eq!(next_hole(&f, 0).unwrap(), 4096);
    }

    #[test]
    fn write_lease_refused_while_another_open_exists() {
        let (_dir, path, f) = scratch();
        set_lease(&f, Lease::Write).unwrap();
        set_lease(&f, Lease::None).unwrap();
        let other = File::open(&path).unwrap();
        assert!(set_lease(&f, Lease::Write).is_err());
        drop(other);
        set_lease(&f, Lease::Write).unwrap();
        set_lease(&f, Lease::None).unwrap();
    }
}
