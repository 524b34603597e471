//! Writing changes as path objects: the scan's formats plus `state`,
//! `source` for moves, and the seed's `additional_metadata`.

use super::diff::{Change, ChangeState};
use super::run::{ChangeSink, SnapdiffReport};
use crate::entry::{Entry, Fields};
use crate::output::{EntryWriter, Format};
use crate::sys::FileStat;
use crate::task::Status;
use crate::task::surrogate;
use std::io::{self, Write};

/// Fields a snapdiff cannot write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Not one of the seed's `extra_fields`.
    #[error("unknown extra field '{0}' (known: inode, generation, is_metadata_only_update)")]
    UnknownExtra(String),
    /// Manifests do not keep access times.
    #[error("snapdiff cannot report atime (manifests do not record it)")]
    Atime,
}

/// The seed's `extra_fields`, written under `additional_metadata`. A task
/// gives them as a list of names, the command line comma-separated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtraFields {
    /// `inode`.
    pub inode: bool,
    /// `generation`.
    pub generation: bool,
    /// `is_metadata_only_update` (for `updated` entries).
    pub is_metadata_only_update: bool,
}

impl ExtraFields {
    /// Parses a comma-separated list of the seed's names.
    pub fn parse(list: &str) -> Result<ExtraFields, FieldError> {
        ExtraFields::from_names(list.split(','))
    }

    /// Reads the seed's names.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ExtraFields, FieldError> {
        let mut x = ExtraFields::default();
        for name in names.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "inode" => x.inode = true,
                "generation" => x.generation = true,
                "is_metadata_only_update" => x.is_metadata_only_update = true,
                other => return Err(FieldError::UnknownExtra(other.to_string())),
            }
        }
        Ok(x)
    }

    fn any(self) -> bool {
        self.inode || self.generation || self.is_metadata_only_update
    }
}

impl<'de> serde::Deserialize<'de> for ExtraFields {
    /// A list of names (`["inode", "generation"]`), or null for none.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ExtraFields, D::Error> {
        let names: Option<Vec<String>> = serde::Deserialize::deserialize(d)?;
        ExtraFields::from_names(names.iter().flatten().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// The fields a snapdiff path object can carry (a manifest has no atime).
pub const DEFAULT_FIELDS: &str = "path,type,size,mtime,ctime,mode,uid,gid,nlink";

/// Writes changes under the fileset's live path.
pub struct ChangeWriter<W: Write> {
    out: EntryWriter<W>,
    root: Vec<u8>,
    extra: ExtraFields,
    last: Option<ChangeState>,
}

impl<W: Write> ChangeWriter<W> {
    /// A writer of `format` for changes of the fileset at `root`. Fails if
    /// the fields ask for `atime`, which manifests do not record.
    pub fn new(out: W, format: Format, root: &[u8], extra: ExtraFields) -> Result<Self, FieldError> {
        if let Format::JsonLines(f) | Format::Batches(f, _) = format
            && f.contains(Fields::ATIME)
        {
            return Err(FieldError::Atime);
        }
        Ok(ChangeWriter {
            out: EntryWriter::new(out, format),
            root: root.to_vec(),
            extra,
            last: None,
        })
    }

    /// Writes one change; a batch never mixes states.
    pub fn write(&mut self, c: &Change) -> io::Result<()> {
        if self.last.is_some_and(|s| s != c.state) {
            self.out.end_batch()?;
        }
        self.last = Some(c.state);
        let (e, source) = change_entry(&self.root, c);
        let extra = self.extra;
        self.out
            .write_with(&e, |o| write_change_keys(c, source.as_deref(), extra, o))
    }
}

/// `rel` under `root`.
fn absolute(root: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut p = root.to_vec();
    if !rel.is_empty() {
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(rel);
    }
    p
}

/// A change as an entry under the fileset's live path `root`, with its
/// absolute source path for moves.
pub fn change_entry(root: &[u8], c: &Change) -> (Entry, Option<Vec<u8>>) {
    let r = &c.record;
    let e = Entry {
        path: absolute(root, &c.path),
        file_type: r.file_type(),
        ino: r.ino,
        parent: r.parent,
        meta: Some(FileStat {
            dev: 0,
            ino: r.ino,
            mode: r.mode,
            nlink: r.nlink,
            uid: r.uid,
            gid: r.gid,
            size: r.size,
            atime: Default::default(),
            mtime: r.mtime,
            ctime: r.ctime,
            btime: None,
        }),
        generation: u32::try_from(r.generation).ok(),
    };
    (e, c.source.as_ref().map(|s| absolute(root, s)))
}

/// Writes the keys a change adds to its path object: `state`, `source`
/// (absolute) and the seed's `additional_metadata`, each after a comma.
pub fn write_change_keys(c: &Change, source: Option<&[u8]>, extra: ExtraFields, o: &mut Vec<u8>) {
    let r = &c.record;
    o.extend_from_slice(b",\"state\":\"");
    o.extend_from_slice(c.state.as_str().as_bytes());
    o.push(b'"');
    if let Some(s) = source {
        o.extend_from_slice(b",\"source\":");
        surrogate::encode(s, o);
    }
    if extra.any() {
        let mut sep = b'{';
        o.extend_from_slice(b",\"additional_metadata\":");
        let mut num = itoa::Buffer::new();
        if extra.inode {
            o.push(sep);
            sep = b',';
            o.extend_from_slice(b"\"inode\":");
            o.extend_from_slice(num.format(r.ino).as_bytes());
        }
        if extra.generation {
            o.push(sep);
            sep = b',';
            o.extend_from_slice(b"\"generation\":");
            o.extend_from_slice(num.format(r.generation).as_bytes());
        }
        if extra.is_metadata_only_update && c.state == ChangeState::Updated {
            o.push(sep);
            sep = b',';
            o.extend_from_slice(b"\"is_metadata_only_update\":");
            o.extend_from_slice(if c.metadata_only { b"true" } else { b"false" });
        }
        if sep == b'{' {
            o.push(b'{');
        }
        o.push(b'}');
    }
}

impl<W: Write> ChangeSink for ChangeWriter<W> {
    fn expect(&mut self, total: u64) {
        self.out.expect(total);
    }

    fn change(&mut self, c: &Change) -> io::Result<()> {
        self.write(c)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes a run's report as one JSON object in the shape of the seed's task
/// status: `{"task":"snapdiff","input_paths":[...],"summary":{...},...}`.
pub fn write_report(out: &mut impl Write, root: &[u8], report: &SnapdiffReport) -> io::Result<()> {
    let mut status = Status::new("snapdiff");
    status.input_raw_paths(&[root.to_vec()]).fields(report);
    let mut buf = status.finish();
    buf.push(b'\n');
    out.write_all(&buf)?;
    out.flush()
}
