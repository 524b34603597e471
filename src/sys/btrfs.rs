//! The btrfs ioctls a snapshot provider needs: is this a subvolume, its
//! id, and read-only snapshot creation and deletion.
//!
//! Neither rustix nor nix wraps the btrfs ioctls, so they are written by
//! hand here against the kernel's `btrfs.h` structures.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BTRFS_SUPER_MAGIC: rustix::fs::FsWord = 0x9123_683e;
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
const IOC_GET_SUBVOL_INFO: u64 = ior(60, std::mem::size_of::<SubvolInfoArgs>());

const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IoctlTimespec {
    sec: u64,
    nsec: u32,
}

/// `struct btrfs_ioctl_get_subvol_info_args` (504 bytes).
#[repr(C)]
struct SubvolInfoArgs {
    treeid: u64,
    name: [u8; 256],
    parent_id: u64,
    dirid: u64,
    generation: u64,
    flags: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    received_uuid: [u8; 16],
    ctransid: u64,
    otransid: u64,
    stransid: u64,
    rtransid: u64,
    times: [IoctlTimespec; 4],
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<SubvolInfoArgs>() == 504);

/// What `BTRFS_IOC_GET_SUBVOL_INFO` tells about a subvolume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubvolInfo {
    /// The subvolume's id.
    pub id: u64,
    /// The transaction that created it (for a snapshot: the one whose
    /// commit took it). Everything changed in it afterwards carries a
    /// newer transid.
    pub otransid: u64,
    /// The transaction of its last change.
    pub ctransid: u64,
}

/// The id and transaction ids of the subvolume holding the open directory
/// (no privilege needed; Linux 4.18 and later).
pub fn subvolume_info(dir: BorrowedFd<'_>) -> io::Result<SubvolInfo> {
    // SAFETY: all-zero is a valid value of this plain-data struct.
    let mut args: SubvolInfoArgs = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes exactly this struct.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_GET_SUBVOL_INFO as _, &mut args) })?;
    Ok(SubvolInfo {
        id: args.treeid,
        otransid: args.otransid,
        ctransid: args.ctransid,
    })
}

/// Whether the open directory is on btrfs.
pub fn is_btrfs(dir: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rustix::fs::fstatfs(dir)?.f_type == BTRFS_SUPER_MAGIC)
}

/// Converts a `-1` return from libc into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
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

/// The key range and limits of a tree search (`struct
/// btrfs_ioctl_search_key`). Keys compare as (objectid, type, offset).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SearchKey {
    /// The tree to search; 0 for the subvolume the descriptor is in.
    pub tree_id: u64,
    /// Smallest key's objectid.
    pub min_objectid: u64,
    /// Largest key's objectid.
    pub max_objectid: u64,
    /// Smallest key's offset.
    pub min_offset: u64,
    /// Largest key's offset.
    pub max_offset: u64,
    /// Only items in tree blocks written in this transaction or later.
    pub min_transid: u64,
    /// Only items in tree blocks written up to this transaction.
    pub max_transid: u64,
    /// Smallest key's type.
    pub min_type: u32,
    /// Largest key's type.
    pub max_type: u32,
    /// In: most items to return; out: items returned.
    pub nr_items: u32,
    pub(crate) unused: u32,
    pub(crate) unused1: u64,
    pub(crate) unused2: u64,
    pub(crate) unused3: u64,
    pub(crate) unused4: u64,
}

const _: () = assert!(std::mem::size_of::<SearchKey>() == 104);

const SEARCH_ARGS_V2: usize = std::mem::size_of::<SearchKey>() + 8;
const IOC_TREE_SEARCH_V2: u64 = iowr(17, SEARCH_ARGS_V2);

/// Bytes of one result header (`struct btrfs_ioctl_search_header`):
/// transid, objectid, offset (u64 each), type, item length (u32 each).
pub const SEARCH_HEADER: usize = 32;

/// Runs one `BTRFS_IOC_TREE_SEARCH_V2` on the subvolume holding `dir`:
/// returns how many items came back and the bytes holding them, result
/// headers and item bytes (native endian headers, little-endian items).
/// `key` is updated by the kernel (`nr_items`). Needs `CAP_SYS_ADMIN`.
pub fn tree_search<'a>(
    dir: BorrowedFd<'_>,
    key: &mut SearchKey,
    buf: &'a mut SearchBuf,
) -> io::Result<(u32, &'a [u8])> {
    let args = &mut buf.words;
    // SAFETY: the block is at least SEARCH_ARGS_V2 bytes and 8-aligned;
    // SearchKey is repr(C) plain data, written at its start.
    unsafe {
        std::ptr::write(args.as_mut_ptr().cast::<SearchKey>(), *key);
        std::ptr::write(
            args.as_mut_ptr()
                .cast::<u8>()
                .add(std::mem::size_of::<SearchKey>())
                .cast::<u64>(),
            buf.size as u64,
        );
    }
    // SAFETY: the kernel reads the key and buffer size and writes at most
    // buf.size bytes after them, all inside `args`.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_TREE_SEARCH_V2 as _, args.as_mut_ptr()) })?;
    // SAFETY: the key is plain data at the start of the block.
    *key = unsafe { std::ptr::read(args.as_ptr().cast::<SearchKey>()) };
    // SAFETY: `args` holds words * 8 initialised bytes (zeroed once, then
    // written by the kernel).
    let bytes = unsafe { std::slice::from_raw_parts(args.as_ptr().cast::<u8>(), args.len() * 8) };
    Ok((key.nr_items, &bytes[SEARCH_ARGS_V2..SEARCH_ARGS_V2 + buf.size]))
}

/// The argument block of [`tree_search`], allocated once and reused: a
/// search costs its ioctl, not an allocation and a copy of the buffer.
pub struct SearchBuf {
    words: Vec<u64>,
    size: usize,
}

impl SearchBuf {
    /// Room for `size` bytes of results (1 MiB for whole-tree reads; a
    /// few KiB for one inode's or one directory's items).
    pub fn new(size: usize) -> SearchBuf {
        // u64 words keep the argument block aligned for the kernel's struct.
        SearchBuf {
            words: vec![0u64; (SEARCH_ARGS_V2 + size).div_ceil(8)],
            size,
        }
    }
}
