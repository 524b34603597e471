//! The manifest file: every link of a fileset at one point in time (a
//! *base*), or what changed since the previous point (a *delta*), sorted by
//! inode, in small checksummed blocks with an index so that a reader can
//! both stream a section and jump to one inode.
//!
//! ```text
//! "FERRYMAN" | version u32 LE | header length u32 LE | header (JSON) | BLAKE3(0, length, version, header)[..16]
//! block*     : tag u8 | payload length u32 LE | records u32 LE | payload | BLAKE3(tag..payload)[..16]
//! tags       : 1 = directory records, 2 = entry records, 4 = tombstones,
//!              5 = index, 3 = end (last, fixed size)
//! end (v2)   : payload = dirs u64 | entries u64 | tombstones u64 | index offset u64 (LE)
//! index      : per data block: tag u8 | offset | records | first inode | first generation (LEB128)
//! ```
//!
//! Version 2 blocks of different sections may interleave (a writer keeps
//! one open block per section, so a delta is written in one pass as the
//! diff finds it); the index says where each section's blocks are, in key
//! order, and each block's first key, so a point lookup decodes one block of
//! ~8 KiB instead of the file (`../shared/reference/snapdiff-change-proportional.md`
//! §1.8). Version 1 files (sections in file order, 64 KiB blocks, no index,
//! no tombstones) still load: their blocks are indexed on open by reading
//! block headers only. Records in each section are strictly increasing (see
//! [`Record`]'s order); within a block each inode is stored as the
//! difference from the previous one. `docs/snapdiff.md` describes the format
//! for other readers.

mod reader;

pub use reader::ManifestReader;

use super::codec;
use super::record::Record;
use crate::task::surrogate;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// First bytes of every manifest.
pub const MAGIC: &[u8; 8] = b"FERRYMAN";
/// The format version this code writes.
pub const VERSION: u32 = 2;
/// The oldest version this code reads.
const OLDEST: u32 = 1;
/// Payload size at which a block is closed: ~150-250 records, so a point
/// lookup decodes and hashes little (the study's 64-256 records per block).
const BLOCK_TARGET: usize = 8 * 1024;
/// Largest block payload a reader accepts.
const MAX_BLOCK: usize = 16 << 20;
/// Largest header a reader accepts.
const MAX_HEADER: usize = 1 << 20;
/// Largest index a reader accepts (about 60 M blocks' worth).
const MAX_INDEX: usize = 1 << 30;
const HASH_LEN: usize = 16;
/// Block header: tag, payload length, record count.
const BLOCK_HEAD: usize = 9;
/// The version 2 end block, whole.
const END_LEN: usize = BLOCK_HEAD + 32 + HASH_LEN;

/// The sections of a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// Directory records only (for path reconstruction).
    Dirs = 1,
    /// Every record.
    Entries = 2,
    /// The trailer with the record counts.
    End = 3,
    /// Keys (inode, generation) a delta removes.
    Tombstones = 4,
    /// Where every block is.
    Index = 5,
}

impl Section {
    fn from_tag(tag: u8) -> Option<Section> {
        Some(match tag {
            1 => Section::Dirs,
            2 => Section::Entries,
            3 => Section::End,
            4 => Section::Tombstones,
            5 => Section::Index,
            _ => return None,
        })
    }

    /// Position in the per-section tables (data sections only).
    fn slot(self) -> usize {
        match self {
            Section::Dirs => 0,
            Section::Entries => 1,
            Section::Tombstones => 2,
            Section::End | Section::Index => unreachable!("not a data section"),
        }
    }
}

/// Whether a manifest lists a whole fileset or the changes to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every link of the fileset.
    #[default]
    Base,
    /// The complete new link set of every inode that changed, and a
    /// tombstone for every (inode, generation) that is gone; read on top of
    /// a base and the deltas before it.
    Delta,
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
    /// Base or delta.
    pub kind: Kind,
    /// The btrfs transaction that created the snapshot (its `otransid`):
    /// everything changed after it has a newer transid.
    pub otransid: Option<u64>,
    /// The position in the fileset's event journal just before the
    /// snapshot was taken (btrfs with `ferry journal` running): the next
    /// run reads the journal from here. (Without snapshots, `none` keeps
    /// its position in `otransid`, as it has no transactions.)
    pub journal: Option<u64>,
    /// The token of the barrier at that position (in `journal`, or for
    /// `none` in `otransid`), which tells it from another barrier of the
    /// same number in a journal that started over.
    pub barrier: Option<String>,
    /// A unique id, by which a manifest set names this file.
    pub id: String,
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
    #[serde(default)]
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    otransid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    barrier: Option<String>,
    #[serde(default)]
    id: String,
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
    #[error("manifest format version {0} is not supported (this ferry reads versions {OLDEST} to {VERSION})")]
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

/// Where one data block is and the first key in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockRef {
    section: Section,
    offset: u64,
    count: u32,
    /// First (inode, generation); unknown (0, 0) in version 1 files.
    first: (u64, u64),
}

/// Record counts of a manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Directory records.
    pub dirs: u64,
    /// Entry records.
    pub entries: u64,
    /// Tombstones.
    pub tombstones: u64,
}

/// One section's block being filled.
#[derive(Default)]
struct OpenBlock {
    payload: Vec<u8>,
    count: u32,
    prev_ino: u64,
    first: (u64, u64),
}

/// Writes a manifest in one pass: records of each section in strictly
/// increasing order, sections interleaved as they come.
pub struct ManifestWriter<W: Write> {
    out: W,
    pos: u64,
    open: [OpenBlock; 3],
    index: Vec<BlockRef>,
    last: [Option<Record>; 2],
    last_tombstone: Option<(u64, u64)>,
    totals: [u64; 3],
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
            kind: header.kind,
            otransid: header.otransid,
            journal: header.journal,
            barrier: header.barrier.clone(),
            id: header.id.clone(),
        })
        .map_err(|e| ManifestError::Header(e.to_string()))?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.write_all(&block_hash(0, VERSION, &json))?;
        Ok(ManifestWriter {
            out,
            pos: (8 + 4 + 4 + json.len() + HASH_LEN) as u64,
            open: Default::default(),
            index: Vec::new(),
            last: [None, None],
            last_tombstone: None,
            totals: [0; 3],
        })
    }

    /// Adds a record to `section` (directories or entries), in strictly
    /// increasing order within the section.
    pub fn push(&mut self, section: Section, r: &Record) -> Result<(), ManifestError> {
        let slot = match section {
            Section::Dirs | Section::Entries => section.slot(),
            _ => return Err(ManifestError::Header(format!("{section:?} does not hold records"))),
        };
        if section == Section::Dirs && !r.is_dir() {
            return Err(ManifestError::Header("non-directory in the directories section".into()));
        }
        if let Some(last) = &self.last[slot]
            && last >= r
        {
            return Err(ManifestError::Unsorted(r.ino));
        }
        r.validate()
            .map_err(|e| ManifestError::corrupt(0, format!("inode {}: {e}", r.ino)))?;
        let b = &mut self.open[slot];
        if b.count == 0 {
            b.first = r.key();
        }
        r.encode(b.prev_ino, &mut b.payload);
        b.prev_ino = r.ino;
        b.count += 1;
        self.totals[slot] += 1;
        match &mut self.last[slot] {
            Some(last) => last.clone_from(r),
            None => self.last[slot] = Some(r.clone()),
        }
        if self.open[slot].payload.len() >= BLOCK_TARGET {
            self.flush(section)?;
        }
        Ok(())
    }

    /// Adds an entry record, and a directory's to the directories section
    /// too (records in increasing order).
    pub fn push_entry(&mut self, r: &Record) -> Result<(), ManifestError> {
        if r.is_dir() {
            self.push(Section::Dirs, r)?;
        }
        self.push(Section::Entries, r)
    }

    /// Adds a tombstone: (inode, generation) is gone. Keys must be
    /// strictly increasing.
    pub fn tombstone(&mut self, key: (u64, u64)) -> Result<(), ManifestError> {
        if self.last_tombstone.is_some_and(|l| l >= key) {
            return Err(ManifestError::Unsorted(key.0));
        }
        if key.0 == 0 {
            return Err(ManifestError::Header("tombstone of inode 0".into()));
        }
        self.last_tombstone = Some(key);
        let slot = Section::Tombstones.slot();
        let b = &mut self.open[slot];
        if b.count == 0 {
            b.first = key;
        }
        codec::put_u64(&mut b.payload, key.0.wrapping_sub(b.prev_ino));
        codec::put_u64(&mut b.payload, key.1);
        b.prev_ino = key.0;
        b.count += 1;
        self.totals[slot] += 1;
        if b.payload.len() >= BLOCK_TARGET {
            self.flush(Section::Tombstones)?;
        }
        Ok(())
    }

    fn write_block(&mut self, tag: u8, count: u32, payload: &[u8]) -> io::Result<()> {
        self.out.write_all(&[tag])?;
        self.out.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.out.write_all(&count.to_le_bytes())?;
        self.out.write_all(payload)?;
        self.out.write_all(&block_hash(tag, count, payload))?;
        self.pos += (BLOCK_HEAD + payload.len() + HASH_LEN) as u64;
        Ok(())
    }

    fn flush(&mut self, section: Section) -> io::Result<()> {
        let mut b = std::mem::take(&mut self.open[section.slot()]);
        if b.count > 0 {
            self.index.push(BlockRef {
                section,
                offset: self.pos,
                count: b.count,
                first: b.first,
            });
            self.write_block(section as u8, b.count, &b.payload)?;
        }
        b.payload.clear();
        // Keep the allocation for the next block.
        self.open[section.slot()] = OpenBlock {
            payload: b.payload,
            ..OpenBlock::default()
        };
        Ok(())
    }

    /// Writes the index and the trailer; returns the output and the counts.
    pub fn finish(mut self) -> Result<(W, Counts), ManifestError> {
        for s in [Section::Dirs, Section::Entries, Section::Tombstones] {
            self.flush(s)?;
        }
        let mut index = Vec::with_capacity(self.index.len() * 12);
        let mut prev = 0u64;
        for b in &self.index {
            index.push(b.section as u8);
            codec::put_u64(&mut index, b.offset - prev);
            codec::put_u64(&mut index, u64::from(b.count));
            codec::put_u64(&mut index, b.first.0);
            codec::put_u64(&mut index, b.first.1);
            prev = b.offset;
        }
        let index_at = self.pos;
        let n = u32::try_from(self.index.len()).map_err(|_| ManifestError::Header("too many blocks".into()))?;
        self.write_block(Section::Index as u8, n, &index)?;
        let mut end = Vec::with_capacity(32);
        for v in [self.totals[0], self.totals[1], self.totals[2], index_at] {
            end.extend_from_slice(&v.to_le_bytes());
        }
        self.write_block(Section::End as u8, 0, &end)?;
        self.out.flush()?;
        let [dirs, entries, tombstones] = self.totals;
        Ok((
            self.out,
            Counts {
                dirs,
                entries,
                tombstones,
            },
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapdiff::record::tests::file;
    use std::io::Cursor;

    pub(crate) fn dir(ino: u64, parent: u64, name: &[u8]) -> Record {
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
            kind: Kind::Base,
            otransid: Some(77),
            journal: None,
            barrier: None,
            id: "t1".into(),
        }
    }

    fn sample(n: u64) -> Vec<u8> {
        let mut w = ManifestWriter::new(Vec::new(), &header()).unwrap();
        w.push(Section::Dirs, &dir(256, 0, b"")).unwrap();
        w.push(Section::Entries, &dir(256, 0, b"")).unwrap();
        w.push(Section::Dirs, &dir(300, 256, b"d")).unwrap();
        w.push(Section::Entries, &dir(300, 256, b"d")).unwrap();
        for i in 0..n {
            w.push(Section::Entries, &file(1000 + i, 300, format!("f{i}").as_bytes()))
                .unwrap();
        }
        w.finish().unwrap().0
    }

    fn reader(b: &[u8]) -> Result<ManifestReader<Cursor<&[u8]>>, ManifestError> {
        ManifestReader::new(Cursor::new(b))
    }

    #[test]
    fn round_trips_many_blocks() {
        let bytes = sample(20_000);
        let mut r = reader(&bytes).unwrap();
        assert_eq!(r.header(), &header());
        assert!(r.order[1].len() > 20, "small blocks: {}", r.order[1].len());
        // Entries can be read before the directories.
        assert_eq!(r.next_entry().unwrap().unwrap().ino, 256);
        let mut dirs = 0;
        while r.next_dir().unwrap().is_some() {
            dirs += 1;
        }
        let mut n = 1;
        while let Some(rec) = r.next_entry().unwrap() {
            if n >= 2 {
                assert_eq!(rec, file(1000 + n - 2, 300, format!("f{}", n - 2).as_bytes()));
            }
            n += 1;
        }
        assert_eq!((dirs, n), (2, 20_002));
    }

    #[test]
    fn skip_to_reads_only_the_block_holding_the_key() {
        let bytes = sample(20_000);
        let mut r = reader(&bytes).unwrap();
        r.skip_to((15_000, 0)).unwrap();
        let mut rec = Record::default();
        let mut skipped = 0;
        while r.read_entry(&mut rec).unwrap() && rec.ino < 15_000 {
            skipped += 1;
        }
        assert_eq!(rec.ino, 15_000);
        // The records before the key in its block were passed over unread.
        assert_eq!(skipped, 0, "decoded {skipped} records before the key");
        // Backwards does nothing.
        r.skip_to((14_000, 0)).unwrap();
        assert!(r.read_entry(&mut rec).unwrap());
        assert_eq!(rec.ino, 15_001);
        // Further forward, then to the end.
        r.skip_to((20_500, 0)).unwrap();
        while r.read_entry(&mut rec).unwrap() && rec.ino < 20_500 {}
        assert_eq!(rec.ino, 20_500);
        let mut rest = 1;
        while r.read_entry(&mut rec).unwrap() {
            rest += 1;
        }
        assert_eq!(rest, 20_999 - 20_500 + 1);
    }

    #[test]
    fn tombstones_round_trip_beside_records() {
        let h = Header {
            kind: Kind::Delta,
            ..header()
        };
        let mut w = ManifestWriter::new(Vec::new(), &h).unwrap();
        for i in 0..3000u64 {
            w.push(Section::Entries, &file(2 * i + 1000, 256, b"x")).unwrap();
            w.tombstone((2 * i + 1001, 7)).unwrap();
        }
        assert!(matches!(w.tombstone((5, 1)), Err(ManifestError::Unsorted(5))));
        let (bytes, counts) = w.finish().unwrap();
        assert_eq!((counts.entries, counts.tombstones), (3000, 3000));
        let mut r = reader(&bytes).unwrap();
        assert_eq!(r.header().kind, Kind::Delta);
        let mut n = 0;
        while let Some(k) = r.next_tombstone().unwrap() {
            assert_eq!(k, (2 * n + 1001, 7));
            n += 1;
        }
        assert_eq!(n, 3000);
        assert_eq!(r.verify().unwrap(), counts);
    }

    #[test]
    fn every_damage_is_an_error() {
        let bytes = sample(50);
        let read_all = |b: &[u8]| -> Result<Counts, ManifestError> { reader(b)?.verify() };
        assert_eq!(read_all(&bytes).unwrap().entries, 52);
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
        assert!(read_all(&b).is_err());
    }

    /// A version 1 file, as the previous ferry wrote it (sections in
    /// order, no index).
    fn v1(records: &[Record]) -> Vec<u8> {
        let mut json = br#"{"format":"ferry-manifest","version":1,"root":"/r","root_ino":256,"provider":"none","snapshot":null,"created":"x","created_unix":5,"generation":"inode"}"#.to_vec();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.append(&mut json.clone());
        out.extend_from_slice(&block_hash(0, 1, &json));
        json.clear();
        let block = |tag: u8, count: u32, payload: &[u8], out: &mut Vec<u8>| {
            out.push(tag);
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(payload);
            out.extend_from_slice(&block_hash(tag, count, payload));
        };
        let dirs: Vec<&Record> = records.iter().filter(|r| r.is_dir()).collect();
        for (tag, rs) in [(1u8, dirs), (2u8, records.iter().collect())] {
            let mut p = Vec::new();
            let mut prev = 0;
            for r in &rs {
                r.encode(prev, &mut p);
                prev = r.ino;
            }
            block(tag, rs.len() as u32, &p, &mut out);
        }
        let mut end = Vec::new();
        end.extend_from_slice(&(records.iter().filter(|r| r.is_dir()).count() as u64).to_le_bytes());
        end.extend_from_slice(&(records.len() as u64).to_le_bytes());
        block(3, 0, &end, &mut out);
        out
    }

    #[test]
    fn version_1_files_still_load() {
        let records = vec![dir(256, 0, b""), dir(300, 256, b"d"), file(400, 300, b"f")];
        let bytes = v1(&records);
        let mut r = reader(&bytes).unwrap();
        assert_eq!(
            (r.version(), r.header().kind, r.header().otransid),
            (1, Kind::Base, None)
        );
        r.skip_to((400, 0)).unwrap();
        let mut all = Vec::new();
        while let Some(x) = r.next_entry().unwrap() {
            all.push(x);
        }
        assert_eq!(all, records);
        assert_eq!(r.next_dir().unwrap().unwrap().ino, 256);
        assert_eq!(reader(&bytes).unwrap().verify().unwrap().entries, 3);
        let mut b = bytes.clone();
        b.push(1);
        assert!(reader(&b).is_err());
        assert!(reader(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn writer_refuses_disorder() {
        let mut w = ManifestWriter::new(Vec::new(), &header()).unwrap();
        w.push(Section::Entries, &file(5, 256, b"a")).unwrap();
        assert!(matches!(
            w.push(Section::Entries, &file(4, 256, b"a")),
            Err(ManifestError::Unsorted(4))
        ));
        assert!(w.push(Section::Dirs, &file(1, 256, b"x")).is_err());
        assert!(w.push(Section::End, &file(9, 256, b"x")).is_err());
    }
}
