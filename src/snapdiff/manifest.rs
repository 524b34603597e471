//! The manifest file: every link of a fileset at one point in time, sorted
//! by inode, in checksummed blocks that are written and read as streams.
//!
//! ```text
//! "FERRYMAN" | version u32 LE | header length u32 LE | header (JSON) | BLAKE3(0, length, version, header)[..16]
//! block*     : tag u8 | payload length u32 LE | records u32 LE | payload | BLAKE3(tag..payload)[..16]
//! tags       : 1 = directories section, 2 = entries section, 3 = end (payload: dirs u64 LE, entries u64 LE)
//! ```
//!
//! The directories section (the directory records only) comes first, so a
//! reader can build the path table before it streams the entries. Records
//! in each section are strictly increasing (see [`Record`]'s order); within
//! a block each inode is stored as the difference from the previous one.
//! `docs/snapdiff.md` describes the format for other readers.

use super::record::{Record, RecordError};
use crate::task::surrogate;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// First bytes of every manifest.
pub const MAGIC: &[u8; 8] = b"FERRYMAN";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Payload size at which a block is closed.
const BLOCK_TARGET: usize = 64 * 1024;
/// Largest block payload a reader accepts.
const MAX_BLOCK: usize = 16 << 20;
/// Largest header a reader accepts.
const MAX_HEADER: usize = 1 << 20;
const HASH_LEN: usize = 16;

/// The sections of a manifest, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// Directory records only (for path reconstruction).
    Dirs = 1,
    /// Every record.
    Entries = 2,
    /// The trailer with the record counts.
    End = 3,
}

/// What a manifest describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The fileset's live path (raw bytes), which output paths start with.
    pub root: Vec<u8>,
    /// Inode of the fileset's root directory.
    pub root_ino: u64,
    /// The provider that made it (`btrfs`, `gpfs`, `none`).
    pub provider: String,
    /// The snapshot it was read from, if any.
    pub snapshot: Option<String>,
    /// When the snapshot (or the walk) was taken, ISO 8601 UTC.
    pub created: String,
    /// The same instant in seconds since the epoch (for `skip_old_ctimes`).
    pub created_unix: i64,
    /// Where record generations come from (`inode`: the inode generation
    /// number; `btime`: the birth time, packed). Generations of manifests
    /// from different sources are not compared.
    pub generation: String,
}

#[derive(Serialize, Deserialize)]
struct HeaderJson<'a> {
    format: String,
    version: u32,
    #[serde(borrow)]
    root: &'a serde_json::value::RawValue,
    root_ino: u64,
    provider: String,
    snapshot: Option<String>,
    created: String,
    created_unix: i64,
    generation: String,
}

/// Why a manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a manifest at all.
    #[error("not a ferry manifest (bad magic bytes)")]
    BadMagic,
    /// Written by a newer ferry.
    #[error("manifest format version {0} is not supported (this ferry reads version {VERSION})")]
    Version(u32),
    /// The header is not valid.
    #[error("bad manifest header: {0}")]
    Header(String),
    /// A block is damaged.
    #[error("manifest block {block} is corrupt: {why}")]
    Corrupt {
        /// Index of the block, from 0.
        block: u64,
        /// What is wrong.
        why: String,
    },
    /// The file ends before its trailer.
    #[error("manifest is truncated (no end block)")]
    Truncated,
    /// Records out of order, which would make a diff wrong.
    #[error("manifest records out of order at inode {0}")]
    Unsorted(u64),
}

impl ManifestError {
    fn corrupt(block: u64, why: impl ToString) -> Self {
        ManifestError::Corrupt {
            block,
            why: why.to_string(),
        }
    }
}

fn block_hash(tag: u8, count: u32, payload: &[u8]) -> [u8; HASH_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(&[tag]);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(&count.to_le_bytes());
    h.update(payload);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..HASH_LEN]);
    out
}

/// Writes a manifest: directory records first, then every record, each
/// section in strictly increasing order.
pub struct ManifestWriter<W: Write> {
    out: W,
    section: Section,
    payload: Vec<u8>,
    count: u32,
    prev_ino: u64,
    last: Option<Record>,
    totals: [u64; 2],
}

impl<W: Write> ManifestWriter<W> {
    /// Starts a manifest on `out` (which should be buffered).
    pub fn new(mut out: W, header: &Header) -> Result<Self, ManifestError> {
        let mut root = Vec::new();
        surrogate::encode(&header.root, &mut root);
        let root = std::str::from_utf8(&root).expect("surrogate encoding is UTF-8");
        let json = serde_json::to_vec(&HeaderJson {
            format: "ferry-manifest".into(),
            version: VERSION,
            root: serde_json::from_str(root).map_err(|e| ManifestError::Header(e.to_string()))?,
            root_ino: header.root_ino,
            provider: header.provider.clone(),
            snapshot: header.snapshot.clone(),
            created: header.created.clone(),
            created_unix: header.created_unix,
            generation: header.generation.clone(),
        })
        .map_err(|e| ManifestError::Header(e.to_string()))?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.write_all(&block_hash(0, VERSION, &json))?;
        Ok(ManifestWriter {
            out,
            section: Section::Dirs,
            payload: Vec::with_capacity(BLOCK_TARGET + 4096),
            count: 0,
            prev_ino: 0,
            last: None,
            totals: [0; 2],
        })
    }

    /// Adds a record to `section`. Sections must come in order and records
    /// in strictly increasing order within a section.
    pub fn push(&mut self, section: Section, r: &Record) -> Result<(), ManifestError> {
        if section < self.section || section == Section::End {
            return Err(ManifestError::Header("sections written out of order".into()));
        }
        if section > self.section {
            self.flush_block()?;
            self.section = section;
            self.last = None;
        }
        if section == Section::Dirs && !r.is_dir() {
            return Err(ManifestError::Header("non-directory in the directories section".into()));
        }
        if let Some(last) = &self.last
            && last >= r
        {
            return Err(ManifestError::Unsorted(r.ino));
        }
        r.validate()
            .map_err(|e| ManifestError::corrupt(0, format!("inode {}: {e}", r.ino)))?;
        r.encode(self.prev_ino, &mut self.payload);
        self.prev_ino = r.ino;
        self.count += 1;
        self.totals[section as usize - 1] += 1;
        match &mut self.last {
            Some(last) => last.clone_from(r),
            None => self.last = Some(r.clone()),
        }
        if self.payload.len() >= BLOCK_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self, tag: u8, count: u32) -> io::Result<()> {
        self.out.write_all(&[tag])?;
        self.out.write_all(&(self.payload.len() as u32).to_le_bytes())?;
        self.out.write_all(&count.to_le_bytes())?;
        self.out.write_all(&self.payload)?;
        self.out.write_all(&block_hash(tag, count, &self.payload))
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.count > 0 {
            self.write_block(self.section as u8, self.count)?;
        }
        self.payload.clear();
        self.count = 0;
        self.prev_ino = 0;
        Ok(())
    }

    /// Writes the trailer and returns the output and the counts
    /// (directories, entries).
    pub fn finish(mut self) -> Result<(W, [u64; 2]), ManifestError> {
        self.flush_block()?;
        self.payload.extend_from_slice(&self.totals[0].to_le_bytes());
        self.payload.extend_from_slice(&self.totals[1].to_le_bytes());
        self.write_block(Section::End as u8, 0)?;
        self.out.flush()?;
        Ok((self.out, self.totals))
    }
}

/// Reads a manifest as a stream, checking every block's hash, the order of
/// records and the trailer's counts.
pub struct ManifestReader<R: Read> {
    input: R,
    header: Header,
    section: Section,
    block: Vec<u8>,
    pos: usize,
    left: u32,
    blocks: u64,
    prev_ino: u64,
    /// The record last read (for the order check and `next_*`).
    cur: Record,
    /// Whether `cur` holds a record of the current section.
    has_prev: bool,
    totals: [u64; 2],
    /// The trailer's counts, once the end block was read.
    expected: Option<[u64; 2]>,
}

impl<R: Read> ManifestReader<R> {
    /// Reads the header of a manifest.
    pub fn new(mut input: R) -> Result<Self, ManifestError> {
        let mut magic = [0u8; 8];
        read_exact_or(&mut input, &mut magic, ManifestError::BadMagic)?;
        if &magic != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let mut word = [0u8; 4];
        read_exact_or(&mut input, &mut word, ManifestError::Truncated)?;
        let version = u32::from_le_bytes(word);
        if version != VERSION {
            return Err(ManifestError::Version(version));
        }
        read_exact_or(&mut input, &mut word, ManifestError::Truncated)?;
        let len = u32::from_le_bytes(word) as usize;
        if len > MAX_HEADER {
            return Err(ManifestError::Header(format!("{len} bytes is too long")));
        }
        let mut json = vec![0u8; len];
        read_exact_or(&mut input, &mut json, ManifestError::Truncated)?;
        let mut hash = [0u8; HASH_LEN];
        read_exact_or(&mut input, &mut hash, ManifestError::Truncated)?;
        if block_hash(0, version, &json) != hash {
            return Err(ManifestError::Header("checksum mismatch".into()));
        }
        let h: HeaderJson = serde_json::from_slice(&json).map_err(|e| ManifestError::Header(e.to_string()))?;
        if h.format != "ferry-manifest" {
            return Err(ManifestError::Header(format!("format is {:?}", h.format)));
        }
        let root = surrogate::decode(h.root.get()).map_err(|e| ManifestError::Header(format!("root: {e}")))?;
        let header = Header {
            root,
            root_ino: h.root_ino,
            provider: h.provider,
            snapshot: h.snapshot,
            created: h.created,
            created_unix: h.created_unix,
            generation: h.generation,
        };
        Ok(ManifestReader {
            input,
            header,
            section: Section::Dirs,
            block: Vec::new(),
            pos: 0,
            left: 0,
            blocks: 0,
            prev_ino: 0,
            cur: Record::default(),
            has_prev: false,
            totals: [0; 2],
            expected: None,
        })
    }

    /// The manifest's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next block; `false` at the end block.
    fn next_block(&mut self) -> Result<bool, ManifestError> {
        if self.expected.is_some() {
            return Ok(false);
        }
        let mut head = [0u8; 9];
        read_exact_or(&mut self.input, &mut head, ManifestError::Truncated)?;
        let tag = head[0];
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        let count = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes"));
        let n = self.blocks;
        let section = match tag {
            1 => Section::Dirs,
            2 => Section::Entries,
            3 => Section::End,
            t => return Err(ManifestError::corrupt(n, format!("unknown block tag {t}"))),
        };
        if section < self.section {
            return Err(ManifestError::corrupt(n, "sections out of order"));
        }
        if len > MAX_BLOCK || (count as usize) > len || (section != Section::End && count == 0) {
            return Err(ManifestError::corrupt(
                n,
                format!("implausible block: {len} bytes, {count} records"),
            ));
        }
        self.block.resize(len + HASH_LEN, 0);
        read_exact_or(&mut self.input, &mut self.block, ManifestError::Truncated)?;
        let (payload, hash) = self.block.split_at(len);
        if block_hash(tag, count, payload) != hash {
            return Err(ManifestError::corrupt(n, "checksum mismatch"));
        }
        self.block.truncate(len);
        self.blocks += 1;
        if section != self.section {
            self.has_prev = false;
        }
        self.section = section;
        self.pos = 0;
        self.left = count;
        self.prev_ino = 0;
        if section == Section::End {
            if len != 16 || count != 0 {
                return Err(ManifestError::corrupt(n, "bad end block"));
            }
            let dirs = u64::from_le_bytes(self.block[..8].try_into().expect("8 bytes"));
            let entries = u64::from_le_bytes(self.block[8..].try_into().expect("8 bytes"));
            if [dirs, entries] != self.totals {
                return Err(ManifestError::corrupt(
                    n,
                    format!(
                        "trailer counts {dirs}/{entries} records, read {}/{}",
                        self.totals[0], self.totals[1]
                    ),
                ));
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(ManifestError::corrupt(n, "data after the end block"));
            }
            self.expected = Some([dirs, entries]);
            return Ok(false);
        }
        Ok(true)
    }

    /// Reads the next record of section `want` into `out`; `false` after
    /// the section's last one. Records of an earlier section are checked
    /// and skipped.
    fn read_in(&mut self, want: Section, out: &mut Record) -> Result<bool, ManifestError> {
        loop {
            if self.left > 0 {
                if self.section > want {
                    return Ok(false);
                }
                self.decode_next(out)?;
                if self.section == want {
                    return Ok(true);
                }
                continue;
            }
            if self.section > want || !self.next_block()? {
                return Ok(false);
            }
        }
    }

    fn decode_next(&mut self, out: &mut Record) -> Result<(), ManifestError> {
        let n = self.blocks - 1;
        let mut buf = &self.block[self.pos..];
        let before = buf.len();
        out.decode_into(self.prev_ino, &mut buf)
            .map_err(|e: RecordError| ManifestError::corrupt(n, e))?;
        self.pos += before - buf.len();
        self.left -= 1;
        if self.left == 0 && self.pos != self.block.len() {
            return Err(ManifestError::corrupt(n, "bytes after the last record"));
        }
        if self.left > 0 && self.pos == self.block.len() {
            return Err(ManifestError::corrupt(n, "fewer records than the block says"));
        }
        if self.section == Section::Dirs && !out.is_dir() {
            return Err(ManifestError::corrupt(n, "non-directory in the directories section"));
        }
        if self.has_prev && self.cur >= *out {
            return Err(ManifestError::Unsorted(out.ino));
        }
        // Keep what the order check needs of this record.
        self.cur.ino = out.ino;
        self.cur.generation = out.generation;
        self.cur.parent = out.parent;
        self.cur.name.clear();
        self.cur.name.extend_from_slice(&out.name);
        self.has_prev = true;
        self.totals[self.section as usize - 1] += 1;
        self.prev_ino = out.ino;
        Ok(())
    }

    /// Reads the next directory record into `out`; `false` after the last.
    pub fn read_dir(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        self.read_in(Section::Dirs, out)
    }

    /// Reads the next record of the entries section into `out` (skipping
    /// directory records not read yet); `false` after the last one, once
    /// the trailer has been checked.
    pub fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        self.read_in(Section::Entries, out)
    }

    /// The next directory record, or `None` after the last one.
    pub fn next_dir(&mut self) -> Result<Option<Record>, ManifestError> {
        let mut r = Record::default();
        Ok(self.read_dir(&mut r)?.then_some(r))
    }

    /// The next record of the entries section (skipping any directory
    /// records not read yet), or `None` after the last one, once the
    /// trailer has been checked.
    pub fn next_entry(&mut self) -> Result<Option<Record>, ManifestError> {
        let mut r = Record::default();
        Ok(self.read_entry(&mut r)?.then_some(r))
    }

    /// Record counts read so far (directories, entries).
    pub fn totals(&self) -> [u64; 2] {
        self.totals
    }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], eof: ManifestError) -> Result<(), ManifestError> {
    match r.read_exact(buf) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(eof),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapdiff::record::tests::file;

    fn dir(ino: u64, parent: u64, name: &[u8]) -> Record {
        Record {
            mode: libc::S_IFDIR | 0o755,
            ..file(ino, parent, name)
        }
    }

    pub(crate) fn header() -> Header {
        Header {
            root: b"/fs/\xffset".to_vec(),
            root_ino: 256,
            provider: "none".into(),
            snapshot: None,
            created: "2026-11-24T00:00:00+00:00".into(),
            created_unix: 1_795_000_000,
            generation: "inode".into(),
        }
    }

    fn sample(n: u64) -> Vec<u8> {
        let mut w = ManifestWriter::new(Vec::new(), &header()).unwrap();
        w.push(Section::Dirs, &dir(256, 0, b"")).unwrap();
        w.push(Section::Dirs, &dir(300, 256, b"d")).unwrap();
        w.push(Section::Entries, &dir(256, 0, b"")).unwrap();
        w.push(Section::Entries, &dir(300, 256, b"d")).unwrap();
        for i in 0..n {
            w.push(Section::Entries, &file(1000 + i, 300, format!("f{i}").as_bytes()))
                .unwrap();
        }
        w.finish().unwrap().0
    }

    #[test]
    fn round_trips_many_blocks() {
        let bytes = sample(20_000);
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header(), &header());
        let mut dirs = 0;
        while r.next_dir().unwrap().is_some() {
            dirs += 1;
        }
        let mut n = 0;
        while let Some(rec) = r.next_entry().unwrap() {
            if n >= 2 {
                assert_eq!(rec, file(1000 + n - 2, 300, format!("f{}", n - 2).as_bytes()));
            }
            n += 1;
        }
        assert_eq!((dirs, n), (2, 20_002));
        // Entries can be read without reading the directories first.
        let mut r = ManifestReader::new(&bytes[..]).unwrap();
        assert_eq!(r.next_entry().unwrap().unwrap().ino, 256);
    }

    #[test]
    fn every_damage_is_an_error() {
        let bytes = sample(50);
        let read_all = |b: &[u8]| -> Result<u64, ManifestError> {
            let mut r = ManifestReader::new(b)?;
            let mut n = 0;
            while r.next_entry()?.is_some() {
                n += 1;
            }
            Ok(n)
        };
        assert_eq!(read_all(&bytes).unwrap(), 52);
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "truncated at {cut} read fine");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(read_all(&b).is_err(), "flipped byte {i} read fine");
        }
        let mut b = bytes.clone();
        b.push(0);
        assert!(read_all(&b).unwrap_err().to_string().contains("after the end"));
    }

    #[test]
    fn writer_refuses_disorder() {
        let mut w = ManifestWriter::new(Vec::new(), &header()).unwrap();
        w.push(Section::Entries, &file(5, 256, b"a")).unwrap();
        assert!(matches!(
            w.push(Section::Entries, &file(4, 256, b"a")),
            Err(ManifestError::Unsorted(4))
        ));
        assert!(w.push(Section::Dirs, &dir(1, 0, b"")).is_err());
    }
}
