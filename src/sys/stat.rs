//! `statx` with a minimal mask, an `fstatat` fallback, and the inode
//! generation ioctl.

use super::Base;
use rustix::fs::{AtFlags, StatxFlags, makedev, statat, statx};
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Updater, ioctl, opcode};
use std::ffi::{CStr, c_long};
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which `statx` fields a caller needs. Asking for less lets network
/// filesystems answer from cached or partial attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatMask(pub u32);

impl StatMask {
    /// File type only (`STATX_TYPE`): enough to decide whether to descend.
    pub const TYPE: StatMask = StatMask(libc::STATX_TYPE);
    /// Birth time (`STATX_BTIME`), where the filesystem records it.
    pub const BTIME: StatMask = StatMask(libc::STATX_BTIME);
    /// The fields of both masks.
    pub const fn union(self, other: StatMask) -> StatMask {
        StatMask(self.0 | other.0)
    }

    /// Every field an [`crate::entry::Entry`] can carry.
    pub const ALL: StatMask = StatMask(
        libc::STATX_TYPE
            | libc::STATX_MODE
            | libc::STATX_NLINK
            | libc::STATX_UID
            | libc::STATX_GID
            | libc::STATX_ATIME
            | libc::STATX_MTIME
            | libc::STATX_CTIME
            | libc::STATX_INO
            | libc::STATX_SIZE,
    );
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub sec: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Timestamp {
    /// The instant `t`, before 1970 included.
    pub fn of(t: SystemTime) -> Timestamp {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (sec, nsec) = (d.as_secs() as i64, d.subsec_nanos());
                if nsec == 0 {
                    Timestamp { sec: -sec, nsec: 0 }
                } else {
                    Timestamp {
                        sec: -sec - 1,
                        nsec: 1_000_000_000 - nsec,
                    }
                }
            }
        }
    }

    /// The same instant as a `SystemTime`, before 1970 included.
    pub fn system_time(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH + Duration::new(self.sec as u64, self.nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs()) + Duration::from_nanos(u64::from(self.nsec))
        }
    }
}

/// The attributes of one inode, as far as the mask asked for them (fields
/// outside the mask are zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStat {
    /// Device the inode lives on (always filled).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Hard link count.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last data modification.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// Creation (birth) time, when asked for with [`StatMask::BTIME`] and
    /// the filesystem keeps it.
    pub btime: Option<Timestamp>,
}

/// Stats `name` relative to `base`, following a final symlink only when
/// `follow` is set. Uses `statx` with `mask`; on kernels or sandboxes without
/// `statx` it falls back to `fstatat` (which fills every field). rustix
/// remembers that `statx` is missing, so the fallback costs one failed call
/// per process, not one per file.
pub fn stat_at(base: Base<'_>, name: &CStr, follow: bool, mask: StatMask) -> io::Result<FileStat> {
    // A scan must never trigger an automount (fstatat implies this; statx does not).
    let mut flags = AtFlags::NO_AUTOMOUNT;
    if !follow {
        flags |= AtFlags::SYMLINK_NOFOLLOW;
    }
    statx_at(base, name, flags, mask)
}

/// Stats the open file `fd` itself (an `O_PATH` descriptor will do), as
/// [`stat_at`] does a name.
pub fn stat_fd(fd: BorrowedFd<'_>, mask: StatMask) -> io::Result<FileStat> {
    statx_at(
        Base::Dir(fd),
        c"",
        AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
        mask,
    )
}

fn statx_at(base: Base<'_>, name: &CStr, flags: AtFlags, mask: StatMask) -> io::Result<FileStat> {
    match statx(base.fd(), name, flags, StatxFlags::from_bits_retain(mask.0)) {
        Ok(s) => Ok(FileStat {
            dev: makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            mode: u32::from(s.stx_mode),
            nlink: u64::from(s.stx_nlink),
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            atime: ts(s.stx_atime.tv_sec, s.stx_atime.tv_nsec),
            mtime: ts(s.stx_mtime.tv_sec, s.stx_mtime.tv_nsec),
            ctime: ts(s.stx_ctime.tv_sec, s.stx_ctime.tv_nsec),
            btime: (s.stx_mask & StatxFlags::BTIME.bits() != 0).then(|| ts(s.stx_btime.tv_sec, s.stx_btime.tv_nsec)),
        }),
        Err(Errno::NOSYS) => fstatat(base, name, flags),
        Err(e) => Err(e.into()),
    }
}

fn ts(sec: i64, nsec: u32) -> Timestamp {
    Timestamp { sec, nsec }
}

fn fstatat(base: Base<'_>, name: &CStr, flags: AtFlags) -> io::Result<FileStat> {
    let s = statat(base.fd(), name, flags)?;
    Ok(FileStat {
        dev: s.st_dev,
        ino: s.st_ino,
        mode: s.st_mode,
        nlink: s.st_nlink,
        uid: s.st_uid,
        gid: s.st_gid,
        size: s.st_size as u64,
        atime: ts(s.st_atime, s.st_atime_nsec as u32),
        mtime: ts(s.st_mtime, s.st_mtime_nsec as u32),
        ctime: ts(s.st_ctime, s.st_ctime_nsec as u32),
        btime: None,
    })
}

/// `FS_IOC_GETVERSION`, `_IOR('v', 1, long)`, encoded by rustix.
const FS_IOC_GETVERSION: Opcode = opcode::read::<c_long>(b'v', 1);
const _: () = assert!(FS_IOC_GETVERSION as u64 == libc::FS_IOC_GETVERSION);

/// Reads the inode generation number (`FS_IOC_GETVERSION`) of an open file.
/// Together with the inode number it identifies a file across inode reuse.
/// Filesystems without it answer `ENOTTY` or `EOPNOTSUPP`.
///
/// Neither rustix nor nix wraps this ioctl, hence the hand-written call.
pub fn inode_generation(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut generation: c_long = 0;
    // SAFETY: the opcode is FS_IOC_GETVERSION (checked against libc's value
    // above), for which the kernel writes at most one `long` (ext4, btrfs
    // and XFS write an `int`) at the pointer, which is `&mut generation`: a
    // shorter write leaves the rest of the initialised zero.
    unsafe { ioctl(fd, Updater::<FS_IOC_GETVERSION, c_long>::new(&mut generation)) }?;
    // The generation is 32 bits wide; a short write filled the low bytes.
    Ok(generation as u32)
}
