//! fanotify (fanotify(7)): a filesystem-wide stream of change events that
//! names each changed directory entry by its directory's file handle and
//! its name, and the object itself by its own handle.
//!
//! Only what the event journal needs: a notification group that reports
//! `FAN_REPORT_DFID_NAME_TARGET` (directory handle + name, and the child's
//! handle for create, delete and move events; Linux 5.17), a
//! `FAN_MARK_FILESYSTEM` mark, a parser of the event buffer, and
//! `name_to_handle_at`/`open_by_handle_at`/`fstatfs` to match and open
//! what the events name. Permission and access events are never asked for:
//! a walk of the tree would flood the queue with them (the loop seen in
//! microsoft/tgrep #151 and nrwl/nx #37136).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Event bits (`include/uapi/linux/fanotify.h`).
pub mod mask {
    /// A file was modified (written).
    pub const MODIFY: u64 = 0x0000_0002;
    /// A file opened for writing was closed.
    pub const CLOSE_WRITE: u64 = 0x0000_0008;
    /// Metadata changed (mode, owner, times, xattrs, link count).
    pub const ATTRIB: u64 = 0x0000_0004;
    /// An entry was moved out of a directory.
    pub const MOVED_FROM: u64 = 0x0000_0040;
    /// An entry was moved into a directory.
    pub const MOVED_TO: u64 = 0x0000_0080;
    /// An entry was created.
    pub const CREATE: u64 = 0x0000_0100;
    /// An entry was deleted.
    pub const DELETE: u64 = 0x0000_0200;
    /// Events were lost: the queue overflowed.
    pub const Q_OVERFLOW: u64 = 0x0000_4000;
    /// The event is about a directory.
    pub const ONDIR: u64 = 0x4000_0000;
    /// The events that change a directory's entries (and so its own
    /// size and times).
    pub const ENTRIES: u64 = MOVED_FROM | MOVED_TO | CREATE | DELETE;
    /// Every event the journal asks for: changes of entries, data and
    /// metadata, on files and directories; never open or access.
    pub const JOURNAL: u64 = MODIFY | CLOSE_WRITE | ATTRIB | ENTRIES | ONDIR;
}

const FAN_EVENT_INFO_TYPE_FID: u8 = 1;
const FAN_EVENT_INFO_TYPE_DFID_NAME: u8 = 2;
const FAN_EVENT_INFO_TYPE_DFID: u8 = 3;
/// `sizeof(struct fanotify_event_metadata)`.
const METADATA_LEN: usize = 24;
const FANOTIFY_METADATA_VERSION: u8 = 3;

/// A file handle as fanotify and `name_to_handle_at` give it: the
/// filesystem's id (`statfs` `f_fsid`), the handle's type and its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fid {
    /// `f_fsid` of the filesystem (on btrfs, of the subvolume).
    pub fsid: [u32; 2],
    /// The handle type (`include/linux/exportfs.h` `FILEID_*`).
    pub handle_type: i32,
    /// The handle's bytes.
    pub handle: Vec<u8>,
}

impl Fid {
    /// The inode number the handle encodes, for the handle types whose
    /// layout `include/linux/exportfs.h` documents: btrfs
    /// (`FILEID_BTRFS_*`: objectid u64 first), ext2/3/4 and others
    /// (`FILEID_INO32_GEN`: ino u32, generation u32) and xfs with 64-bit
    /// inodes (`FILEID_INO32_GEN | 0x80`: ino u64, generation u32).
    /// Other types give `None`: open the handle instead.
    pub fn ino(&self) -> Option<u64> {
        let h = &self.handle;
        match self.handle_type {
            0x4d..=0x4f | 0x81 if h.len() >= 8 => Some(u64::from_ne_bytes(h[..8].try_into().ok()?)),
            1 if h.len() >= 8 => Some(u32::from_ne_bytes(h[..4].try_into().ok()?) as u64),
            _ => None,
        }
    }
}

impl Fid {
    /// The btrfs subvolume (tree) the handle is in, for btrfs handles
    /// (`FILEID_BTRFS_*`: root objectid u64 after the objectid): inode
    /// numbers repeat across subvolumes of one filesystem.
    pub fn btrfs_root(&self) -> Option<u64> {
        match self.handle_type {
            0x4d..=0x4f if self.handle.len() >= 16 => Some(u64::from_ne_bytes(self.handle[8..16].try_into().ok()?)),
            _ => None,
        }
    }

    /// Whether `self` and `other` name the same object of one
    /// filesystem (the fsid a subvolume reports may differ from the one an
    /// event carries, so it is not compared).
    pub fn same_object(&self, other: &Fid) -> bool {
        self.handle_type == other.handle_type && self.handle == other.handle
    }
}

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its event bits ([`mask`]).
    pub mask: u64,
    /// The directory the entry is in and the entry's name (`.` for an
    /// event on a directory itself).
    pub dir: Option<(Fid, Vec<u8>)>,
    /// The object itself (the child, for entry events).
    pub target: Option<Fid>,
}

/// A notification group.
pub struct Fanotify {
    fd: OwnedFd,
}

impl Fanotify {
    /// A notification-only group that reports directory handles with
    /// names and target handles (`FAN_REPORT_DFID_NAME_TARGET`). Needs
    /// `CAP_SYS_ADMIN` and Linux 5.17.
    pub fn new() -> io::Result<Fanotify> {
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME_TARGET;
        // SAFETY: plain system call with integer arguments.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fanotify_init returned a new descriptor we now own.
        Ok(Fanotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Marks the whole filesystem holding `path` for `events`.
    pub fn mark_filesystem(&self, path: &CStr, events: u64) -> io::Result<()> {
        // SAFETY: `path` is a valid C string; the other arguments are integers.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                events,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for events and reads what is queued into
    /// `buf` (0 when none came). `buf` should hold at least 64 KiB.
    pub fn read(&self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }
}

/// Why an event buffer did not parse.
#[derive(Debug, thiserror::Error)]
#[error("fanotify event at byte {at}: {problem}")]
pub struct ParseError {
    /// Offset of the event in the buffer.
    pub at: usize,
    /// What is wrong.
    pub problem: &'static str,
}

/// Parses the events in `buf` (what [`Fanotify::read`] filled). Events of
/// this group never carry a file descriptor: one that does is an error.
pub fn parse_events(buf: &[u8]) -> Result<Vec<Event>, ParseError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let err = |problem| ParseError { at, problem };
        let rest = &buf[at..];
        if rest.len() < METADATA_LEN {
            return Err(err("shorter than its metadata"));
        }
        let event_len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        let vers = rest[4];
        let metadata_len = u16::from_ne_bytes(rest[6..8].try_into().unwrap()) as usize;
        let mask = u64::from_ne_bytes(rest[8..16].try_into().unwrap());
        let fd = i32::from_ne_bytes(rest[16..20].try_into().unwrap());
        if vers != FANOTIFY_METADATA_VERSION {
            return Err(err("unknown metadata version"));
        }
        if event_len < METADATA_LEN || event_len > rest.len() || metadata_len < METADATA_LEN || metadata_len > event_len
        {
            return Err(err("length out of bounds"));
        }
        // A group that reports file handles gets no descriptors
        // (`FAN_NOFD`); one in the buffer is not ours to close.
        if fd >= 0 {
            return Err(err("event carries a file descriptor"));
        }
        let mut ev = Event {
            mask,
            dir: None,
            target: None,
        };
        let mut info = &rest[metadata_len..event_len];
        while !info.is_empty() {
            if info.len() < 4 {
                return Err(err("truncated information record"));
            }
            let kind = info[0];
            let len = u16::from_ne_bytes(info[2..4].try_into().unwrap()) as usize;
            if len < 4 || len > info.len() {
                return Err(err("information record length out of bounds"));
            }
            let rec = &info[4..len];
            match kind {
                FAN_EVENT_INFO_TYPE_FID | FAN_EVENT_INFO_TYPE_DFID | FAN_EVENT_INFO_TYPE_DFID_NAME => {
                    // fsid (2 x 32 bits), then struct file_handle
                    // { u32 handle_bytes; i32 handle_type; bytes }.
                    if rec.len() < 16 {
                        return Err(err("file handle record too short"));
                    }
                    let fsid = [
                        u32::from_ne_bytes(rec[0..4].try_into().unwrap()),
                        u32::from_ne_bytes(rec[4..8].try_into().unwrap()),
                    ];
                    let bytes = u32::from_ne_bytes(rec[8..12].try_into().unwrap()) as usize;
                    let handle_type = i32::from_ne_bytes(rec[12..16].try_into().unwrap());
                    let Some(handle) = rec.get(16..16 + bytes) else {
                        return Err(err("file handle longer than its record"));
                    };
                    let fid = Fid {
                        fsid,
                        handle_type,
                        handle: handle.to_vec(),
                    };
                    if kind == FAN_EVENT_INFO_TYPE_FID {
                        ev.target = Some(fid);
                    } else {
                        let tail = &rec[16 + bytes..];
                        let name = match kind {
                            FAN_EVENT_INFO_TYPE_DFID_NAME => {
                                let end = tail.iter().position(|&b| b == 0).ok_or(err("name without its NUL"))?;
                                tail[..end].to_vec()
                            }
                            _ => b".".to_vec(),
                        };
                        ev.dir = Some((fid, name));
                    }
                }
                // Records this group does not ask for (pidfd, error,
                // rename's old/new names) are skipped.
                _ => {}
            }
            info = &info[len..];
        }
        out.push(ev);
        at += event_len;
    }
    Ok(out)
}

/// The file handle of the open object `dir` (`name_to_handle_at` with
/// `AT_EMPTY_PATH`), with its filesystem's `f_fsid`: what fanotify
/// events carry for it.
pub fn handle_of(dir: BorrowedFd<'_>) -> io::Result<Fid> {
    let mut buf = vec![0u8; 8 + 128];
    buf[0..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` starts with a struct file_handle whose handle_bytes
    // (128) says how much room follows; the name is an empty C string with
    // AT_EMPTY_PATH, so the handle is of `dir` itself.
    let r = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
    let handle_type = i32::from_ne_bytes(buf[4..8].try_into().unwrap());
    Ok(Fid {
        fsid: fsid(dir)?,
        handle_type,
        handle: buf[8..8 + bytes.min(128)].to_vec(),
    })
}

/// `f_fsid` of the filesystem holding `fd` (`fstatfs`): what fanotify
/// reports as an event's fsid.
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<[u32; 2]> {
    // SAFETY: statfs is plain data; fstatfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsid_t is two 32-bit integers.
    let raw: [u32; 2] = unsafe { std::mem::transmute(st.f_fsid) };
    Ok(raw)
}

/// Opens the object `fid` names on the filesystem holding `mount`
/// (`open_by_handle_at`, `CAP_DAC_READ_SEARCH`). `ESTALE` means the
/// object is gone.
pub fn open_by_handle(mount: BorrowedFd<'_>, fid: &Fid, flags: i32) -> io::Result<OwnedFd> {
    let mut buf = Vec::with_capacity(8 + fid.handle.len());
    buf.extend_from_slice(&(fid.handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&fid.handle_type.to_ne_bytes());
    buf.extend_from_slice(&fid.handle);
    // SAFETY: `buf` is a struct file_handle with handle_bytes bytes after
    // its header.
    let fd = unsafe { libc::open_by_handle_at(mount.as_raw_fd(), buf.as_mut_ptr().cast(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u64, infos: &[(u8, &[u8])]) -> Vec<u8> {
        let mut info = Vec::new();
        for (kind, body) in infos {
            info.push(*kind);
            info.push(0);
            info.extend_from_slice(&((4 + body.len()) as u16).to_ne_bytes());
            info.extend_from_slice(body);
        }
        let mut e = Vec::new();
        e.extend_from_slice(&((METADATA_LEN + info.len()) as u32).to_ne_bytes());
        e.push(FANOTIFY_METADATA_VERSION);
        e.push(0);
        e.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        e.extend_from_slice(&mask.to_ne_bytes());
        e.extend_from_slice(&(-1i32).to_ne_bytes());
        e.extend_from_slice(&7i32.to_ne_bytes());
        e.extend_from_slice(&info);
        e
    }

    fn fid_body(ty: i32, handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&2u32.to_ne_bytes());
        b.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(handle);
        if let Some(n) = name {
            b.extend_from_slice(n);
            b.push(0);
        }
        b
    }

    #[test]
    fn parses_directory_name_and_target_records() {
        let mut h = 300u64.to_ne_bytes().to_vec();
        h.extend_from_slice(&[0; 12]);
        let dir = fid_body(0x4d, &h, Some(b"a\nb\xff"));
        let mut t = 301u64.to_ne_bytes().to_vec();
        t.extend_from_slice(&[0; 12]);
        let target = fid_body(0x4d, &t, None);
        let mut buf = event(mask::CREATE, &[(2, &dir), (1, &target)]);
        buf.extend(event(mask::Q_OVERFLOW, &[]));
        let evs = parse_events(&buf).unwrap();
        assert_eq!(evs.len(), 2);
        let (d, name) = evs[0].dir.as_ref().unwrap();
        assert_eq!(
            (d.fsid, d.ino(), name.as_slice()),
            ([1, 2], Some(300), &b"a\nb\xff"[..])
        );
        assert_eq!(evs[0].target.as_ref().unwrap().ino(), Some(301));
        assert_eq!(evs[1].mask, mask::Q_OVERFLOW);
        assert!(evs[1].dir.is_none());
        let ext4 = Fid {
            fsid: [0, 0],
            handle_type: 1,
            handle: [12u32.to_ne_bytes(), 5u32.to_ne_bytes()].concat(),
        };
        assert_eq!(ext4.ino(), Some(12));
    }

    #[test]
    fn rejects_truncated_and_oversized_records() {
        let buf = event(mask::CREATE, &[(2, &[0u8; 8])]);
        assert!(parse_events(&buf).is_err());
        let mut buf = event(mask::CREATE, &[]);
        buf.truncate(20);
        assert!(parse_events(&buf).is_err());
        let mut buf = event(mask::CREATE, &[(1, &fid_body(1, &[0; 8], None))]);
        buf[METADATA_LEN + 2] = 200;
        assert!(parse_events(&buf).is_err());
    }
}
