//! The unit every discovery stage produces: one filesystem entry with its
//! raw path bytes and as much metadata as the caller asked for.

use crate::sys::{FileStat, StatMask, Timestamp};

/// What kind of inode an entry is, with the names the seed's filter rules use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (not followed, or dangling when following).
    Symlink,
    /// Anything else: FIFO, socket, block or character device.
    Other,
}

impl FileType {
    /// The type from the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> FileType {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileType::File,
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            _ => FileType::Other,
        }
    }

    /// The type from a `getdents` `d_type`, or `None` for `DT_UNKNOWN`.
    pub fn from_dirent(d_type: u8) -> Option<FileType> {
        match d_type {
            libc::DT_REG => Some(FileType::File),
            libc::DT_DIR => Some(FileType::Directory),
            libc::DT_LNK => Some(FileType::Symlink),
            libc::DT_UNKNOWN => None,
            _ => Some(FileType::Other),
        }
    }

    /// The name used in path objects and filter rules.
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            FileType::Other => "other",
        }
    }
}

/// Inode attributes of an entry (present when the walk was asked to stat).
pub type Metadata = FileStat;

/// One discovered filesystem entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The full path as raw bytes: Linux names need not be UTF-8.
    pub path: Vec<u8>,
    /// The entry's type.
    pub file_type: FileType,
    /// Inode number (from the directory entry, or from stat when stat ran).
    pub ino: u64,
    /// Inode number of the directory the entry was found in; `0` for the
    /// paths a walk started from. With `ino`, it places the entry in the
    /// tree without its path (snapshot manifests are keyed this way).
    pub parent: u64,
    /// Attributes from `statx`, when the caller's fields or filters need them.
    pub meta: Option<Metadata>,
    /// Inode generation (`FS_IOC_GETVERSION`), when asked for and supported.
    pub generation: Option<u32>,
}

impl Entry {
    /// Size in bytes of a regular file's data; `0` for other types or when
    /// the entry was not stat'ed.
    pub fn data_size(&self) -> u64 {
        match (&self.meta, self.file_type) {
            (Some(m), FileType::File) => m.size,
            _ => 0,
        }
    }
}

/// Which attributes the output carries. Asking only for `path` and `type`
/// lets the walker skip `stat` entirely on filesystems that fill `d_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields(u16);

impl Fields {
    /// The path (always written).
    pub const PATH: Fields = Fields(1);
    /// `type`: file, directory, symlink or other.
    pub const TYPE: Fields = Fields(1 << 1);
    /// `size` in bytes.
    pub const SIZE: Fields = Fields(1 << 2);
    /// `mtime`, seconds since the epoch with nanoseconds.
    pub const MTIME: Fields = Fields(1 << 3);
    /// `ctime`.
    pub const CTIME: Fields = Fields(1 << 4);
    /// `atime`.
    pub const ATIME: Fields = Fields(1 << 5);
    /// `inode` number.
    pub const INODE: Fields = Fields(1 << 6);
    /// `generation`: costs an open and an ioctl per file.
    pub const GENERATION: Fields = Fields(1 << 7);
    /// `mode`: type and permission bits.
    pub const MODE: Fields = Fields(1 << 8);
    /// `uid`.
    pub const UID: Fields = Fields(1 << 9);
    /// `gid`.
    pub const GID: Fields = Fields(1 << 10);
    /// `nlink`.
    pub const NLINK: Fields = Fields(1 << 11);

    /// Field names as accepted by [`Fields::parse`], in output order.
    pub const NAMES: [(&'static str, Fields); 12] = [
        ("path", Fields::PATH),
        ("type", Fields::TYPE),
        ("size", Fields::SIZE),
        ("mtime", Fields::MTIME),
        ("ctime", Fields::CTIME),
        ("atime", Fields::ATIME),
        ("inode", Fields::INODE),
        ("generation", Fields::GENERATION),
        ("mode", Fields::MODE),
        ("uid", Fields::UID),
        ("gid", Fields::GID),
        ("nlink", Fields::NLINK),
    ];

    /// The default selection: everything one `statx` call gives (all but
    /// `generation`, which costs an open and an ioctl per file).
    pub const DEFAULT_LIST: &'static str = "path,type,size,mtime,ctime,atime,inode,mode,uid,gid,nlink";

    /// Whether every field in `other` is selected.
    pub fn contains(self, other: Fields) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two selections.
    pub const fn with(self, other: Fields) -> Fields {
        Fields(self.0 | other.0)
    }

    /// Whether any selected field needs `stat` (beyond path, type and inode,
    /// which `getdents` gives).
    pub fn needs_stat(self) -> bool {
        self.0 & !(Fields::PATH.0 | Fields::TYPE.0 | Fields::INODE.0 | Fields::GENERATION.0) != 0
    }

    /// The `statx` fields these output fields need: the type and inode
    /// always, plus one attribute per selected field. Asking for no more
    /// than is printed spares a parallel filesystem work it would otherwise
    /// do to make, say, sizes or times exact.
    pub fn stat_mask(self) -> StatMask {
        let mut mask = libc::STATX_TYPE | libc::STATX_INO;
        for (field, bit) in [
            (Fields::SIZE, libc::STATX_SIZE),
            (Fields::MTIME, libc::STATX_MTIME),
            (Fields::CTIME, libc::STATX_CTIME),
            (Fields::ATIME, libc::STATX_ATIME),
            (Fields::MODE, libc::STATX_MODE),
            (Fields::UID, libc::STATX_UID),
            (Fields::GID, libc::STATX_GID),
            (Fields::NLINK, libc::STATX_NLINK),
        ] {
            if self.contains(field) {
                mask |= bit;
            }
        }
        StatMask(mask)
    }

    /// Parses a comma-separated list such as `path,size,mtime`; `path` is
    /// always included. `all` selects every field, generation included.
    pub fn parse(list: &str) -> Result<Fields, UnknownField> {
        let mut f = Fields::PATH;
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                f = Fields(0x0fff);
                continue;
            }
            match Fields::NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, bit)) => f = f.with(*bit),
                None => return Err(UnknownField(name.to_string())),
            }
        }
        Ok(f)
    }
}

/// A field name [`Fields::parse`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field '{0}' (known: {known}, all)", known = Fields::NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
pub struct UnknownField(pub String);

/// Formats a timestamp as a JSON number of seconds with nine decimals,
/// e.g. `1700000000.123456789`, so no precision is lost in the text.
pub fn write_timestamp(out: &mut Vec<u8>, t: Timestamp) {
    let mut b = itoa::Buffer::new();
    if t.sec < 0 && t.nsec > 0 {
        // -0.5 s is stored as sec = -1, nsec = 500_000_000.
        let total = (t.sec as i128) * 1_000_000_000 + t.nsec as i128;
        let neg = -total;
        out.push(b'-');
        out.extend_from_slice(b.format((neg / 1_000_000_000) as u64).as_bytes());
        push_nanos(out, (neg % 1_000_000_000) as u32);
    } else {
        out.extend_from_slice(b.format(t.sec).as_bytes());
        push_nanos(out, t.nsec);
    }
}

fn push_nanos(out: &mut Vec<u8>, nsec: u32) {
    out.push(b'.');
    let mut b = itoa::Buffer::new();
    let digits = b.format(nsec);
    out.extend(std::iter::repeat_n(b'0', 9 - digits.len()));
    out.extend_from_slice(digits.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_stat_need() {
        let f = Fields::parse("type").unwrap();
        assert_eq!(f, Fields::PATH.with(Fields::TYPE));
        assert!(!f.needs_stat());
        assert!(Fields::parse("path,size").unwrap().needs_stat());
        assert!(!Fields::parse("inode").unwrap().needs_stat());
        assert!(Fields::parse("all").unwrap().contains(Fields::GENERATION));
        let default = Fields::parse(Fields::DEFAULT_LIST).unwrap();
        assert!(!default.contains(Fields::GENERATION));
        assert!(default.with(Fields::GENERATION) == Fields::parse("all").unwrap());
        assert!(Fields::parse("bogus").unwrap_err().to_string().contains("bogus"));
        let m = Fields::parse("size").unwrap().stat_mask();
        assert_eq!(m.0, libc::STATX_TYPE | libc::STATX_INO | libc::STATX_SIZE);
        assert_eq!(
            Fields::parse("all").unwrap().stat_mask().0 & StatMask::ALL.0,
            StatMask::ALL.0
        );
    }

    #[test]
    fn timestamps_keep_nanoseconds() {
        let mut out = Vec::new();
        write_timestamp(
            &mut out,
            Timestamp {
                sec: 1_700_000_000,
                nsec: 5,
            },
        );
        assert_eq!(out, b"1700000000.000000005");
        out.clear();
        write_timestamp(
            &mut out,
            Timestamp {
                sec: -1,
                nsec: 500_000_000,
            },
        );
        assert_eq!(out, b"-0.500000000");
    }
}
