//! The btrfs ioctls a snapshot provider needs: is this a subvolume, its
//! id, and read-only snapshot creation and deletion.

use super::check;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

const BTRFS_SUPER_MAGIC: libc::__fsword_t = 0x9123_683e;
/// Inode number of every subvolume's root directory.
pub const SUBVOL_ROOT_INO: u64 = 256;
const SUBVOL_RDONLY: u64 = 1 << 1;
const PATH_NAME_MAX: usize = 4087;
const SUBVOL_NAME_MAX: usize = 4039;
const INO_LOOKUP_PATH_MAX: usize = 4080;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}
const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}

const IOC_SNAP_DESTROY: u64 = iow(15, std::mem::size_of::<VolArgs>());
const IOC_INO_LOOKUP: u64 = iowr(18, std::mem::size_of::<InoLookupArgs>());
const IOC_SNAP_CREATE_V2: u64 = iow(23, std::mem::size_of::<VolArgsV2>());

/// Whether the open directory is on btrfs.
pub fn is_btrfs(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct on success; the fd is valid for the call.
    check(unsafe { libc::fstatfs(dir.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    Ok(st.f_type == BTRFS_SUPER_MAGIC)
}

/// The id of the subvolume holding the open directory.
pub fn subvolume_id(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: SUBVOL_ROOT_INO,
        name: [0; INO_LOOKUP_PATH_MAX],
    };
    // SAFETY: the ioctl reads and writes exactly this struct.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_INO_LOOKUP as _, &mut args) })?;
    Ok(args.treeid)
}

fn copy_name(dst: &mut [u8], name: &CStr) -> io::Result<()> {
    let b = name.to_bytes();
    if b.len() >= dst.len() || b.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad snapshot name length"));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

/// Creates a read-only snapshot of subvolume `source` named `name` in the
/// directory `dest`.
pub fn create_snapshot(source: BorrowedFd<'_>, dest: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: SUBVOL_RDONLY,
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    copy_name(&mut args.name, name)?;
    // SAFETY: the ioctl reads exactly this struct; both fds are valid.
    check(unsafe { libc::ioctl(dest.as_raw_fd(), IOC_SNAP_CREATE_V2 as _, &args) })?;
    Ok(())
}

/// Deletes the subvolume (snapshot) `name` in directory `dir`.
pub fn delete_snapshot(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    copy_name(&mut args.name, name)?;
    // SAFETY: the ioctl reads exactly this struct.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_SNAP_DESTROY as _, &args) })?;
    Ok(())
}
