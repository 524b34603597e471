//! `ferry manifest`: a manifest's header and counts, its records as JSON
//! lines with rebuilt paths, or just a check of the whole thing. The file
//! may be one manifest (a base or a delta) or a manifest set, which is read
//! as the merged view of its base and deltas.

use super::manifest::{Header, Kind, ManifestError, ManifestReader};
use super::paths::{DirTable, Namespace, Resolver};
use super::record::Record;
use super::set::{ManifestSet, open_member};
use super::view::{Entries, View};
use crate::entry::write_timestamp;
use crate::task::surrogate;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;

/// What to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpMode {
    /// The header and the counts, as one JSON object.
    Summary,
    /// One JSON object per record.
    Records,
    /// Nothing; only check.
    Verify,
}

/// Prints (or checks) the manifest at `path`: a set file is read as its
/// merged view, after every file of it has been checked whole.
pub fn dump_path(path: &Path, out: impl Write, mode: DumpMode) -> Result<(), ManifestError> {
    let Some(set) = ManifestSet::read(path)? else {
        return dump(File::open(path)?, out, mode);
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    for m in std::iter::once(&set.base).chain(&set.deltas) {
        open_member(dir, m)?.verify()?;
    }
    let view = set.view(dir)?;
    if mode == DumpMode::Verify {
        return Ok(());
    }
    let files = view.files();
    print(view, Some(files), 0, out, mode)
}

/// Prints (or checks) one manifest file. A delta is printed as it is: its
/// records (with paths where its own directories name them) and its
/// tombstone count.
pub fn dump(input: impl Read + Seek, out: impl Write, mode: DumpMode) -> Result<(), ManifestError> {
    let rd = ManifestReader::new(BufReader::with_capacity(1 << 20, input))?;
    if mode == DumpMode::Verify {
        rd.verify()?;
        return Ok(());
    }
    let tombstones = rd.counts().tombstones;
    if rd.header().kind == Kind::Base {
        return print(View::new(rd, Vec::new())?, None, 0, out, mode);
    }
    print(rd, None, tombstones, out, mode)
}

/// Something to print: a header, a directory table and entries.
trait Source: Entries {
    fn head(&self) -> &Header;
    fn dirs(&mut self) -> Result<DirTable, ManifestError>;
}

impl<R: Read + Seek> Source for View<R> {
    fn head(&self) -> &Header {
        self.header()
    }
    fn dirs(&mut self) -> Result<DirTable, ManifestError> {
        self.dir_table()
    }
}

impl<R: Read + Seek> Source for ManifestReader<R> {
    fn head(&self) -> &Header {
        self.header()
    }
    fn dirs(&mut self) -> Result<DirTable, ManifestError> {
        DirTable::load(self)
    }
}

fn print(
    mut src: impl Source,
    files: Option<usize>,
    tombstones: u64,
    mut out: impl Write,
    mode: DumpMode,
) -> Result<(), ManifestError> {
    let h = src.head().clone();
    let mut res = if mode == DumpMode::Records {
        Some(Resolver::new(src.dirs()?, DirTable::default()))
    } else {
        None
    };
    let (mut files_n, mut dirs, mut bytes, mut entries) = (0u64, 0u64, 0u64, 0u64);
    let mut line = Vec::with_capacity(256);
    let mut r = Record::default();
    while src.read_entry(&mut r)? {
        entries += 1;
        if r.is_dir() {
            dirs += 1;
        } else {
            files_n += 1;
            bytes = bytes.saturating_add(r.size);
        }
        let Some(res) = res.as_mut() else { continue };
        line.clear();
        let mut rel = Vec::new();
        let path = match res.link_path(Namespace::Old, r.parent, &r.name, &mut rel) {
            Ok(()) => {
                let mut path = h.root.clone();
                if !rel.is_empty() {
                    path.push(b'/');
                    path.extend_from_slice(&rel);
                }
                Some(path)
            }
            // A delta's record under a directory that did not change.
            Err(_) if h.kind == Kind::Delta => None,
            Err(e) => return Err(ManifestError::Header(e.to_string())),
        };
        record_line(&r, path.as_deref(), &mut line);
        out.write_all(&line)?;
    }
    if mode == DumpMode::Summary {
        let mut root = Vec::new();
        surrogate::encode(&h.root, &mut root);
        let kind = match h.kind {
            Kind::Base => "base",
            Kind::Delta => "delta",
        };
        let text = format!(
            "{{\"format\":\"ferry-manifest\",\"kind\":\"{kind}\",\"files\":{},\"root\":{},\"root_ino\":{},\"provider\":{},\"snapshot\":{},\"created\":{},\"otransid\":{},\"journal\":{},\"barrier\":{},\"entries\":{entries},\"directories\":{dirs},\"non_directories\":{files_n},\"bytes\":{bytes},\"tombstones\":{tombstones}}}\n",
            files.unwrap_or(1),
            String::from_utf8_lossy(&root),
            h.root_ino,
            serde_json::to_string(&h.provider).map_err(io::Error::other)?,
            serde_json::to_string(&h.snapshot).map_err(io::Error::other)?,
            serde_json::to_string(&h.created).map_err(io::Error::other)?,
            serde_json::to_string(&h.otransid).map_err(io::Error::other)?,
            serde_json::to_string(&h.journal).map_err(io::Error::other)?,
            serde_json::to_string(&h.barrier).map_err(io::Error::other)?,
        );
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// One record as a JSON line; `path` is left out when it cannot be named.
fn record_line(r: &Record, path: Option<&[u8]>, line: &mut Vec<u8>) {
    let mut num = itoa::Buffer::new();
    line.push(b'{');
    if let Some(path) = path {
        line.extend_from_slice(b"\"path\":");
        surrogate::encode(path, line);
        line.push(b',');
    }
    line.extend_from_slice(b"\"name\":");
    surrogate::encode(&r.name, line);
    line.extend_from_slice(b",\"type\":\"");
    line.extend_from_slice(r.file_type().as_str().as_bytes());
    line.push(b'"');
    for (k, v) in [
        ("inode", r.ino),
        ("generation", r.generation),
        ("parent", r.parent),
        ("size", r.size),
        ("mode", u64::from(r.mode)),
        ("uid", u64::from(r.uid)),
        ("gid", u64::from(r.gid)),
        ("nlink", r.nlink),
    ] {
        line.extend_from_slice(b",\"");
        line.extend_from_slice(k.as_bytes());
        line.extend_from_slice(b"\":");
        line.extend_from_slice(num.format(v).as_bytes());
    }
    line.extend_from_slice(b",\"mtime\":");
    write_timestamp(line, r.mtime);
    line.extend_from_slice(b",\"ctime\":");
    write_timestamp(line, r.ctime);
    line.extend_from_slice(b"}\n");
}
