//! `ferry manifest`: a manifest's header and counts, its records as JSON
//! lines with rebuilt paths, or just a check of the whole file.

use super::manifest::{ManifestError, ManifestReader};
use super::paths::{DirTable, Namespace, Resolver};
use crate::entry::write_timestamp;
use crate::task::surrogate;
use std::io::{self, BufReader, Read, Write};

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

/// Reads the whole manifest (checking every block) and prints per `mode`.
pub fn dump(input: impl Read, mut out: impl Write, mode: DumpMode) -> Result<(), ManifestError> {
    let mut rd = ManifestReader::new(BufReader::with_capacity(1 << 20, input))?;
    let h = rd.header().clone();
    let mut res = if mode == DumpMode::Records {
        let dirs = DirTable::load(&mut rd)?;
        Some(Resolver::new(dirs, DirTable::default()))
    } else {
        None
    };
    let (mut files, mut dirs, mut bytes) = (0u64, 0u64, 0u64);
    let mut line = Vec::with_capacity(256);
    let mut num = itoa::Buffer::new();
    let mut r = super::record::Record::default();
    while rd.read_entry(&mut r)? {
        if r.is_dir() {
            dirs += 1;
        } else {
            files += 1;
            bytes = bytes.saturating_add(r.size);
        }
        let r = &r;
        let Some(res) = res.as_mut() else { continue };
        line.clear();
        let mut path = h.root.clone();
        let mut rel = Vec::new();
        res.link_path(Namespace::Old, r.parent, &r.name, &mut rel)
            .map_err(|e| ManifestError::Header(e.to_string()))?;
        if !rel.is_empty() {
            path.push(b'/');
            path.extend_from_slice(&rel);
        }
        line.extend_from_slice(b"{\"path\":");
        surrogate::encode(&path, &mut line);
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
            line.extend_from_slice(format!(",\"{k}\":").as_bytes());
            line.extend_from_slice(num.format(v).as_bytes());
        }
        line.extend_from_slice(b",\"mtime\":");
        write_timestamp(&mut line, r.mtime);
        line.extend_from_slice(b",\"ctime\":");
        write_timestamp(&mut line, r.ctime);
        line.extend_from_slice(b"}\n");
        out.write_all(&line)?;
    }
    if mode == DumpMode::Summary {
        let mut root = Vec::new();
        surrogate::encode(&h.root, &mut root);
        let text = format!(
            "{{\"format\":\"ferry-manifest\",\"root\":{},\"root_ino\":{},\"provider\":{},\"snapshot\":{},\"created\":{},\"entries\":{},\"directories\":{dirs},\"non_directories\":{files},\"bytes\":{bytes}}}\n",
            String::from_utf8_lossy(&root),
            h.root_ino,
            serde_json::to_string(&h.provider).map_err(io::Error::other)?,
            serde_json::to_string(&h.snapshot).map_err(io::Error::other)?,
            serde_json::to_string(&h.created).map_err(io::Error::other)?,
            rd.totals()[1],
        );
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
