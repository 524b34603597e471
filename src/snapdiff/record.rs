//! One manifest record: a directory entry of a fileset at one point in time,
//! keyed by inode so that two points in time can be merge-joined.

use super::codec::{self, CodecError};
use crate::entry::FileType;
use crate::sys::Timestamp;
use std::cmp::Ordering;

/// One link to an inode: its identity, where it sits (parent directory
/// inode and name) and the attributes a diff compares. A file with several
/// hard links has one record per link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Inode number.
    pub ino: u64,
    /// Inode generation: tells a reused inode number from the old inode.
    pub generation: u64,
    /// Inode of the directory holding this link; `0` for the fileset root.
    pub parent: u64,
    /// The link's name in `parent` (raw bytes; empty for the root).
    pub name: Vec<u8>,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last data modification.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of hard links.
    pub nlink: u64,
}

impl Record {
    /// The inode's type, from its mode.
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// The merge-join key: the inode and its generation.
    pub fn key(&self) -> (u64, u64) {
        (self.ino, self.generation)
    }

    /// Same place in the tree (parent and name).
    pub fn same_link(&self, other: &Record) -> bool {
        self.parent == other.parent && self.name == other.name
    }

    /// Same data as far as a sync can tell: size and modification time.
    pub fn same_data(&self, other: &Record) -> bool {
        self.size == other.size && self.mtime == other.mtime
    }

    /// Same owner, group and permission bits.
    pub fn same_ownership(&self, other: &Record) -> bool {
        self.mode == other.mode && self.uid == other.uid && self.gid == other.gid
    }

    /// Appends the record; the inode is written as the difference from
    /// `prev_ino` (records in a block are sorted, so the delta is small).
    pub fn encode(&self, prev_ino: u64, out: &mut Vec<u8>) {
        codec::put_u64(out, self.ino.wrapping_sub(prev_ino));
        codec::put_u64(out, self.generation);
        codec::put_u64(out, self.parent);
        codec::put_u64(out, self.name.len() as u64);
        out.extend_from_slice(&self.name);
        codec::put_u64(out, u64::from(self.mode));
        codec::put_u64(out, self.size);
        put_time(out, self.mtime);
        put_time(out, self.ctime);
        codec::put_u64(out, u64::from(self.uid));
        codec::put_u64(out, u64::from(self.gid));
        codec::put_u64(out, self.nlink);
    }

    /// Reads a record written by [`Record::encode`] into `self`, reusing the
    /// name's allocation.
    pub fn decode_into(&mut self, prev_ino: u64, buf: &mut &[u8]) -> Result<(), RecordError> {
        self.ino = prev_ino.wrapping_add(codec::get_u64(buf)?);
        self.generation = codec::get_u64(buf)?;
        self.parent = codec::get_u64(buf)?;
        let n = codec::get_u64(buf)?;
        let n = usize::try_from(n).map_err(|_| CodecError::Overflow)?;
        self.name.clear();
        self.name.extend_from_slice(codec::get_bytes(buf, n)?);
        self.mode = codec::get_u32(buf)?;
        self.size = codec::get_u64(buf)?;
        self.mtime = get_time(buf)?;
        self.ctime = get_time(buf)?;
        self.uid = codec::get_u32(buf)?;
        self.gid = codec::get_u32(buf)?;
        self.nlink = codec::get_u64(buf)?;
        self.validate()
    }

    /// Passes over a record written by [`Record::encode`] if its key,
    /// (inode, generation), is below `key`: returns its inode and advances
    /// `buf` past the whole record, reading no more of it than that takes;
    /// `None` (and `buf` somewhere inside the record) if it is not below.
    /// A point lookup in a block passes over every record before the one it
    /// wants; decoding them whole (varints assembled, names copied) was
    /// most of a lookup's time.
    pub fn skip_below(prev_ino: u64, buf: &mut &[u8], key: (u64, u64)) -> Result<Option<u64>, RecordError> {
        let ino = prev_ino.wrapping_add(codec::get_u64(buf)?);
        if ino > key.0 {
            return Ok(None);
        }
        if ino == key.0 {
            if codec::get_u64(buf)? >= key.1 {
                return Ok(None);
            }
        } else {
            codec::skip_n(buf, 1)?;
        }
        // The parent, then the name.
        codec::skip_n(buf, 1)?;
        let n = usize::try_from(codec::get_u64(buf)?).map_err(|_| CodecError::Overflow)?;
        codec::get_bytes(buf, n)?;
        // mode, size, mtime (2), ctime (2), uid, gid, nlink.
        codec::skip_n(buf, 9)?;
        Ok(Some(ino))
    }

    /// Checks what every record must satisfy: a name without `/` or NUL
    /// (empty only for the root, whose parent is 0), a known type, and
    /// nanoseconds below one second.
    pub fn validate(&self) -> Result<(), RecordError> {
        let root = self.parent == 0;
        if root != self.name.is_empty() {
            return Err(RecordError::Invalid(
                "only the root record has an empty name and no parent",
            ));
        }
        if self.name.iter().any(|&b| b == b'/' || b == 0) {
            return Err(RecordError::Invalid("name contains '/' or NUL"));
        }
        if self.name == b"." || self.name == b".." {
            return Err(RecordError::Invalid("name is '.' or '..'"));
        }
        if self.mode & libc::S_IFMT == 0 {
            return Err(RecordError::Invalid("mode has no file type"));
        }
        if root && !self.is_dir() {
            return Err(RecordError::Invalid("the root record is not a directory"));
        }
        if self.mtime.nsec >= 1_000_000_000 || self.ctime.nsec >= 1_000_000_000 {
            return Err(RecordError::Invalid("nanoseconds out of range"));
        }
        if self.ino == 0 {
            return Err(RecordError::Invalid("inode number 0"));
        }
        Ok(())
    }
}

/// Records sort by inode, generation, parent and name: the order of a
/// manifest, in which every link of one inode is adjacent.
impl Ord for Record {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ino, self.generation, self.parent, &self.name).cmp(&(
            other.ino,
            other.generation,
            other.parent,
            &other.name,
        ))
    }
}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes do not decode.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The record decodes but breaks a rule.
    #[error("{0}")]
    Invalid(&'static str),
}

fn put_time(out: &mut Vec<u8>, t: Timestamp) {
    codec::put_i64(out, t.sec);
    codec::put_u64(out, u64::from(t.nsec));
}

fn get_time(buf: &mut &[u8]) -> Result<Timestamp, CodecError> {
    Ok(Timestamp {
        sec: codec::get_i64(buf)?,
        nsec: codec::get_u32(buf)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid file record for tests.
    pub(crate) fn file(ino: u64, parent: u64, name: &[u8]) -> Record {
        Record {
            ino,
            generation: 1,
            parent,
            name: name.to_vec(),
            mode: libc::S_IFREG | 0o644,
            size: 10,
            mtime: Timestamp { sec: 100, nsec: 5 },
            ctime: Timestamp { sec: 100, nsec: 5 },
            uid: 1,
            gid: 2,
            nlink: 1,
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let mut r = file(1000, 256, b"a\nb\xff");
        r.mtime.sec = -5;
        let mut buf = Vec::new();
        r.encode(900, &mut buf);
        let mut back = Record::default();
        back.decode_into(900, &mut &buf[..]).unwrap();
        assert_eq!(back, r);
        // A record below the key is passed over exactly; one at or above
        // it is not.
        let mut two = buf.clone();
        two.push(0x7f);
        for (key, below) in [
            ((1001, 0), true),
            ((1000, 2), true),
            ((1000, 1), false),
            ((999, 9), false),
        ] {
            let mut rest = &two[..];
            let got = Record::skip_below(900, &mut rest, key).unwrap();
            assert_eq!(got, below.then_some(1000), "{key:?}");
            if below {
                assert_eq!(rest, &[0x7f]);
            }
        }

        for (bad, why) in [
            (file(1, 256, b"a/b"), "'/'"),
            (file(1, 256, b""), "empty"),
            (file(1, 0, b"x"), "empty"),
            (file(1, 256, b".."), "'..'"),
            (file(0, 256, b"x"), "inode number 0"),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{err} lacks {why}");
        }
        let mut buf = Vec::new();
        r.encode(0, &mut buf);
        for cut in 0..buf.len() {
            assert!(back.decode_into(0, &mut &buf[..cut]).is_err());
            assert!(Record::skip_below(0, &mut &buf[..cut], (u64::MAX, 0)).is_err());
        }
    }
}
