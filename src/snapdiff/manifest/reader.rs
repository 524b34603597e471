//! Reading a manifest: the header, the trailer and the index on open,
//! then each section as a stream, or a jump to the block holding an inode.

use super::{
    BLOCK_HEAD, BlockRef, Counts, END_LEN, HASH_LEN, Header, HeaderJson, Kind, MAGIC, MAX_BLOCK, MAX_HEADER, MAX_INDEX,
    ManifestError, OLDEST, Section, VERSION, block_hash,
};
use crate::snapdiff::codec;
use crate::snapdiff::record::{Record, RecordError};
use crate::task::surrogate;
use std::io::{self, Read, Seek, SeekFrom};

/// Reading position in one section.
#[derive(Default)]
struct SectionCursor {
    /// Index (into the reader's block list) of the next block to load.
    next: usize,
    /// The loaded block's payload.
    block: Vec<u8>,
    pos: usize,
    left: u32,
    prev_ino: u64,
    /// The last record read (for the order check).
    last: Record,
    has_last: bool,
    last_tombstone: Option<(u64, u64)>,
    /// Records read, and whether every block was read in turn (only then
    /// do the trailer's counts apply).
    read: u64,
    skipped: bool,
    /// The loaded block's number, for messages.
    number: u64,
}

/// Reads a manifest: streams each section, checking every block's hash,
/// the order of records and the trailer's counts, and can jump to an inode
/// through the index.
pub struct ManifestReader<R: Read + Seek> {
    input: R,
    header: Header,
    version: u32,
    /// Where the reader's file position is (to avoid needless seeks).
    at: u64,
    /// Every data block of the file, in file order.
    blocks: Vec<BlockRef>,
    /// The data blocks of each section, in key order (indices into `blocks`).
    pub(super) order: [Vec<usize>; 3],
    cursors: [SectionCursor; 3],
    expected: Counts,
}

impl<R: Read + Seek> ManifestReader<R> {
    /// Reads the header, the trailer and the index of a manifest.
    pub fn new(mut input: R) -> Result<Self, ManifestError> {
        let mut magic = [0u8; 8];
        read_exact_or(&mut input, &mut magic, ManifestError::BadMagic)?;
        if &magic != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let mut word = [0u8; 4];
        read_exact_or(&mut input, &mut word, ManifestError::Truncated)?;
        let version = u32::from_le_bytes(word);
        if !(OLDEST..=VERSION).contains(&version) {
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
            kind: h.kind,
            otransid: h.otransid,
            journal: h.journal,
            barrier: h.barrier,
            id: h.id,
        };
        let start = (8 + 4 + 4 + len + HASH_LEN) as u64;
        let mut rd = ManifestReader {
            input,
            header,
            version,
            at: start,
            blocks: Vec::new(),
            order: Default::default(),
            cursors: Default::default(),
            expected: Counts::default(),
        };
        if version == 1 {
            if rd.header.kind != Kind::Base {
                return Err(ManifestError::Header("a version 1 manifest is always a base".into()));
            }
            rd.index_v1()?;
        } else {
            rd.index_v2(start)?;
        }
        for (i, b) in rd.blocks.iter().enumerate() {
            rd.order[b.section.slot()].push(i);
        }
        Ok(rd)
    }

    /// Reads a block header at `offset`: (tag, payload length, count).
    fn block_head(&mut self, offset: u64, number: u64) -> Result<(Section, usize, u32), ManifestError> {
        self.seek(offset)?;
        let mut head = [0u8; BLOCK_HEAD];
        read_exact_or(&mut self.input, &mut head, ManifestError::Truncated)?;
        self.at += BLOCK_HEAD as u64;
        let tag = head[0];
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        let count = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes"));
        let section =
            Section::from_tag(tag).ok_or_else(|| ManifestError::corrupt(number, format!("unknown block tag {tag}")))?;
        let limit = if section == Section::Index {
            MAX_INDEX
        } else {
            MAX_BLOCK
        };
        let data = matches!(section, Section::Dirs | Section::Entries | Section::Tombstones);
        if len > limit || (data && ((count as usize) > len || count == 0)) {
            return Err(ManifestError::corrupt(
                number,
                format!("implausible block: {len} bytes, {count} records"),
            ));
        }
        Ok((section, len, count))
    }

    /// Reads a whole block at `offset` into `buf` and checks its hash.
    fn read_block(&mut self, offset: u64, number: u64, buf: &mut Vec<u8>) -> Result<(Section, u32), ManifestError> {
        let (section, len, count) = self.block_head(offset, number)?;
        buf.resize(len + HASH_LEN, 0);
        read_exact_or(&mut self.input, buf, ManifestError::Truncated)?;
        self.at += (len + HASH_LEN) as u64;
        let (payload, hash) = buf.split_at(len);
        if block_hash(section as u8, count, payload) != hash {
            return Err(ManifestError::corrupt(number, "checksum mismatch"));
        }
        buf.truncate(len);
        Ok((section, count))
    }

    fn seek(&mut self, offset: u64) -> io::Result<()> {
        if offset != self.at {
            self.input.seek(SeekFrom::Start(offset))?;
            self.at = offset;
        }
        Ok(())
    }

    /// Version 1: sections in file order and no index; find every block
    /// by its header, then the trailer.
    fn index_v1(&mut self) -> Result<(), ManifestError> {
        let mut offset = self.at;
        let mut last = Section::Dirs;
        loop {
            let n = self.blocks.len() as u64;
            let (section, len, count) = match self.block_head(offset, n) {
                Err(ManifestError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ManifestError::Truncated);
                }
                other => other?,
            };
            if !matches!(section, Section::Dirs | Section::Entries | Section::End) || section < last {
                return Err(ManifestError::corrupt(n, "sections out of order"));
            }
            last = section;
            if section == Section::End {
                let mut buf = Vec::new();
                self.read_block(offset, n, &mut buf)?;
                if buf.len() != 16 || count != 0 {
                    return Err(ManifestError::corrupt(n, "bad end block"));
                }
                self.expected = Counts {
                    dirs: le64(&buf, 0),
                    entries: le64(&buf, 8),
                    tombstones: 0,
                };
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra)? != 0 {
                    return Err(ManifestError::corrupt(n, "data after the end block"));
                }
                self.at += 1;
                return Ok(());
            }
            self.blocks.push(BlockRef {
                section,
                offset,
                count,
                first: (0, 0),
            });
            offset += (BLOCK_HEAD + len + HASH_LEN) as u64;
        }
    }

    /// Version 2: the trailer at the end names the index.
    fn index_v2(&mut self, start: u64) -> Result<(), ManifestError> {
        let size = self.input.seek(SeekFrom::End(0))?;
        self.at = size;
        let end_at = size
            .checked_sub(END_LEN as u64)
            .filter(|&e| e >= start)
            .ok_or(ManifestError::Truncated)?;
        let mut buf = Vec::new();
        let (section, count) = self.read_block(end_at, u64::MAX, &mut buf).map_err(|e| match e {
            ManifestError::Corrupt { .. } => ManifestError::Truncated,
            e => e,
        })?;
        if section != Section::End || count != 0 || buf.len() != 32 {
            return Err(ManifestError::Truncated);
        }
        self.expected = Counts {
            dirs: le64(&buf, 0),
            entries: le64(&buf, 8),
            tombstones: le64(&buf, 16),
        };
        let index_at = le64(&buf, 24);
        if index_at < start || index_at >= end_at {
            return Err(ManifestError::corrupt(u64::MAX, "index offset out of range"));
        }
        let (section, n) = self.read_block(index_at, u64::MAX, &mut buf)?;
        if section != Section::Index {
            return Err(ManifestError::corrupt(
                u64::MAX,
                "the trailer does not point at the index",
            ));
        }
        let bad = |why: &str| ManifestError::corrupt(u64::MAX, format!("index: {why}"));
        let mut p = &buf[..];
        let mut offset = 0u64;
        let mut sums = [0u64; 3];
        for i in 0..n {
            let tag = *codec::get_bytes(&mut p, 1)
                .map_err(|_| bad("truncated"))?
                .first()
                .expect("1 byte");
            let section = Section::from_tag(tag)
                .filter(|s| matches!(s, Section::Dirs | Section::Entries | Section::Tombstones))
                .ok_or_else(|| bad("bad tag"))?;
            let step = codec::get_u64(&mut p).map_err(|_| bad("truncated"))?;
            if i > 0 && step == 0 {
                return Err(bad("blocks overlap"));
            }
            offset = offset.checked_add(step).ok_or_else(|| bad("offset overflow"))?;
            let count = codec::get_u32(&mut p).map_err(|_| bad("truncated"))?;
            let first = (
                codec::get_u64(&mut p).map_err(|_| bad("truncated"))?,
                codec::get_u64(&mut p).map_err(|_| bad("truncated"))?,
            );
            if offset < start || offset >= index_at || count == 0 {
                return Err(bad("block out of range"));
            }
            sums[section.slot()] += u64::from(count);
            self.blocks.push(BlockRef {
                section,
                offset,
                count,
                first,
            });
        }
        if !p.is_empty() {
            return Err(bad("bytes after the last block"));
        }
        let e = self.expected;
        if sums != [e.dirs, e.entries, e.tombstones] {
            return Err(bad("block counts disagree with the trailer"));
        }
        Ok(())
    }

    /// The manifest's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The format version of the file.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The first inode of the last block of entries, by the index: about
    /// the highest inode in the file (`None` in a version 1 file).
    pub fn last_block_ino(&self) -> Option<u64> {
        let &i = self.order[Section::Entries.slot()].last()?;
        let first = self.blocks[i].first;
        (first != (0, 0)).then_some(first.0)
    }

    /// The counts the trailer gives.
    pub fn counts(&self) -> Counts {
        self.expected
    }

    /// Loads the next block of `section`; `false` after its last one, once
    /// the trailer's count has been checked.
    fn load_next(&mut self, section: Section) -> Result<bool, ManifestError> {
        let slot = section.slot();
        let Some(&i) = self.order[slot].get(self.cursors[slot].next) else {
            let c = &self.cursors[slot];
            let want = [self.expected.dirs, self.expected.entries, self.expected.tombstones][slot];
            if !c.skipped && c.read != want {
                return Err(ManifestError::corrupt(
                    c.number,
                    format!("the trailer counts {want} records of {section:?}, read {}", c.read),
                ));
            }
            return Ok(false);
        };
        let b = self.blocks[i];
        let mut buf = std::mem::take(&mut self.cursors[slot].block);
        let got = self.read_block(b.offset, i as u64, &mut buf);
        let c = &mut self.cursors[slot];
        c.block = buf;
        let (tag, count) = got?;
        if tag != section || count != b.count {
            return Err(ManifestError::corrupt(i as u64, "block disagrees with the index"));
        }
        c.next += 1;
        c.pos = 0;
        c.left = count;
        c.prev_ino = 0;
        c.number = i as u64;
        Ok(true)
    }

    /// Decodes the next item of `section` with `decode` (given the
    /// previous inode of the block, the block's number and the bytes
    /// left), loading blocks as needed; returns it with its block's number
    /// and whether it is the block's first, or `None` after the section's
    /// last item.
    fn next_in<T>(
        &mut self,
        section: Section,
        decode: impl FnOnce(u64, u64, &mut &[u8]) -> Result<T, ManifestError>,
    ) -> Result<Option<(T, u64, bool)>, ManifestError> {
        let slot = section.slot();
        while self.cursors[slot].left == 0 {
            if !self.load_next(section)? {
                return Ok(None);
            }
        }
        let c = &mut self.cursors[slot];
        let first_in_block = c.pos == 0;
        let mut buf = &c.block[c.pos..];
        let before = buf.len();
        let item = decode(c.prev_ino, c.number, &mut buf)?;
        c.pos += before - buf.len();
        c.left -= 1;
        check_block_end(c)?;
        Ok(Some((item, c.number, first_in_block)))
    }

    /// Reads the next record of `section` (directories or entries) into
    /// `out`; `false` after the section's last one.
    fn read_in(&mut self, section: Section, out: &mut Record) -> Result<bool, ManifestError> {
        let decoded = self.next_in(section, |prev, n, buf| {
            out.decode_into(prev, buf)
                .map_err(|e: RecordError| ManifestError::corrupt(n, e))
        })?;
        let Some(((), n, first_in_block)) = decoded else {
            return Ok(false);
        };
        let c = &mut self.cursors[section.slot()];
        if section == Section::Dirs && !out.is_dir() {
            return Err(ManifestError::corrupt(n, "non-directory in the directories section"));
        }
        if c.has_last && c.last >= *out {
            return Err(ManifestError::Unsorted(out.ino));
        }
        if first_in_block && self.version > 1 && self.blocks[n as usize].first != out.key() {
            return Err(ManifestError::corrupt(n, "first record disagrees with the index"));
        }
        // Keep what the order check needs of this record.
        c.last.ino = out.ino;
        c.last.generation = out.generation;
        c.last.parent = out.parent;
        c.last.name.clear();
        c.last.name.extend_from_slice(&out.name);
        c.has_last = true;
        c.read += 1;
        c.prev_ino = out.ino;
        Ok(true)
    }

    /// Reads the next directory record into `out`; `false` after the last.
    pub fn read_dir(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        self.read_in(Section::Dirs, out)
    }

    /// Reads the next entry record into `out`; `false` after the last one.
    pub fn read_entry(&mut self, out: &mut Record) -> Result<bool, ManifestError> {
        self.read_in(Section::Entries, out)
    }

    /// The next tombstone, or `None` after the last one.
    pub fn next_tombstone(&mut self) -> Result<Option<(u64, u64)>, ManifestError> {
        let decoded = self.next_in(Section::Tombstones, |prev, n, buf| {
            let ino = prev.wrapping_add(codec::get_u64(buf).map_err(|e| ManifestError::corrupt(n, e))?);
            let generation = codec::get_u64(buf).map_err(|e| ManifestError::corrupt(n, e))?;
            Ok((ino, generation))
        })?;
        let Some((key, n, first_in_block)) = decoded else {
            return Ok(None);
        };
        let ino = key.0;
        let c = &mut self.cursors[Section::Tombstones.slot()];
        if ino == 0 || c.last_tombstone.is_some_and(|l| l >= key) {
            return Err(ManifestError::Unsorted(ino));
        }
        if first_in_block && self.blocks[n as usize].first != key {
            return Err(ManifestError::corrupt(n, "first tombstone disagrees with the index"));
        }
        c.last_tombstone = Some(key);
        c.read += 1;
        c.prev_ino = ino;
        Ok(Some(key))
    }

    /// Starts a data section over from its first record (a delta's
    /// tombstones are read once for the directory table, once for the
    /// merge).
    pub fn rewind(&mut self, section: Section) {
        if matches!(section, Section::Dirs | Section::Entries | Section::Tombstones) {
            self.cursors[section.slot()] = SectionCursor::default();
        }
    }

    /// Moves the entries cursor forward so that the next record read is the
    /// first whose key is at least `key`: blocks that end before `key` (by
    /// the index) are not read, and the records before it in its block are
    /// passed over reading only their keys ([`Record::skip_below`]). Never moves
    /// backwards; in a version 1 file (no first keys) it does nothing.
    pub fn skip_to(&mut self, key: (u64, u64)) -> Result<(), ManifestError> {
        if self.version == 1 {
            return Ok(());
        }
        let slot = Section::Entries.slot();
        let order = &self.order[slot];
        let c = &mut self.cursors[slot];
        // `j`: the first unread block that starts after `key`; the one
        // before it is the last that can hold `key`.
        let mut j = c.next;
        while j < order.len() {
            let first = self.blocks[order[j]].first;
            if first == (0, 0) || first > key {
                break;
            }
            j += 1;
        }
        if j > c.next && (j - 1 > c.next || c.left > 0) {
            c.next = j - 1;
            c.left = 0;
            c.skipped = true;
        }
        if self.cursors[slot].left == 0 && !self.load_next(Section::Entries)? {
            return Ok(());
        }
        let c = &mut self.cursors[slot];
        while c.left > 0 {
            let mut buf = &c.block[c.pos..];
            let before = buf.len();
            let below =
                Record::skip_below(c.prev_ino, &mut buf, key).map_err(|e| ManifestError::corrupt(c.number, e))?;
            let Some(ino) = below else { break };
            c.pos += before - buf.len();
            c.left -= 1;
            c.prev_ino = ino;
            c.skipped = true;
            check_block_end(c)?;
        }
        Ok(())
    }

    /// The next directory record, or `None` after the last one.
    pub fn next_dir(&mut self) -> Result<Option<Record>, ManifestError> {
        let mut r = Record::default();
        Ok(self.read_dir(&mut r)?.then_some(r))
    }

    /// The next entry record, or `None` after the last one.
    pub fn next_entry(&mut self) -> Result<Option<Record>, ManifestError> {
        let mut r = Record::default();
        Ok(self.read_entry(&mut r)?.then_some(r))
    }

    /// Entry records read so far.
    pub fn entries_read(&self) -> u64 {
        self.cursors[Section::Entries.slot()].read
    }

    /// Reads every section to its end (checking every block, the order
    /// and the counts); returns the counts.
    pub fn verify(mut self) -> Result<Counts, ManifestError> {
        let mut r = Record::default();
        while self.read_dir(&mut r)? {}
        while self.read_entry(&mut r)? {}
        while self.next_tombstone()?.is_some() {}
        Ok(self.expected)
    }
}

/// After a record: a block must end exactly with its last record.
fn check_block_end(c: &SectionCursor) -> Result<(), ManifestError> {
    if c.left == 0 && c.pos != c.block.len() {
        return Err(ManifestError::corrupt(c.number, "bytes after the last record"));
    }
    if c.left > 0 && c.pos == c.block.len() {
        return Err(ManifestError::corrupt(c.number, "fewer records than the block says"));
    }
    Ok(())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], eof: ManifestError) -> Result<(), ManifestError> {
    match r.read_exact(buf) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(eof),
        other => Ok(other?),
    }
}
