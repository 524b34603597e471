//! Writing discovered entries for shells and scripts: JSON Lines path
//! objects, NUL-separated paths, or JSON arrays of batches.

use crate::batch::{BatchLimits, Batcher};
use crate::entry::{Entry, Fields};
use crate::task::write_entry;
use std::io::{self, Write};

/// How entries are written.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// One path object per line.
    JsonLines(Fields),
    /// Raw path bytes, each followed by NUL (`find -print0`).
    Nul,
    /// One JSON array of path objects per line, one line per batch.
    Batches(Fields, BatchLimits),
}

/// A sink for entries in one [`Format`].
pub struct EntryWriter<W: Write> {
    out: W,
    format: Format,
    line: Vec<u8>,
    batcher: Option<Batcher<Vec<u8>>>,
}

impl<W: Write> EntryWriter<W> {
    /// A writer that formats entries onto `out` (which should be buffered).
    pub fn new(out: W, format: Format) -> Self {
        let batcher = match format {
            Format::Batches(_, limits) => Some(Batcher::new(limits)),
            _ => None,
        };
        EntryWriter {
            out,
            format,
            line: Vec::with_capacity(256),
            batcher,
        }
    }

    /// Sizes batches for at least `total` entries ([`Batcher::expect`]);
    /// nothing for the other formats.
    pub fn expect(&mut self, total: u64) {
        if let Some(b) = &mut self.batcher {
            b.expect(total);
        }
    }

    /// Writes one entry (a batch is written once it is full).
    pub fn write(&mut self, e: &Entry) -> io::Result<()> {
        self.write_with(e, |_| {})
    }

    /// Writes one entry whose path object gets more keys: `extra` appends
    /// them (each starting with a comma) before the closing brace.
    pub fn write_with(&mut self, e: &Entry, extra: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.line.clear();
        let object = |line: &mut Vec<u8>, fields| {
            write_entry(e, fields, line);
            line.pop();
            extra(line);
            line.push(b'}');
        };
        match self.format {
            Format::Nul => {
                self.out.write_all(&e.path)?;
                self.out.write_all(b"\0")
            }
            Format::JsonLines(fields) => {
                object(&mut self.line, fields);
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            }
            Format::Batches(fields, _) => {
                object(&mut self.line, fields);
                let obj = self.line.clone();
                let len = obj.len() + 1;
                let out = &mut self.out;
                let mut result = Ok(());
                let batcher = self.batcher.as_mut().expect("batch format has a batcher");
                batcher.push(obj, e.data_size(), len, |batch| {
                    if result.is_ok() {
                        result = write_batch(out, &batch);
                    }
                });
                result
            }
        }
    }

    /// Writes the batch being filled, if any, so that the next entry starts
    /// a new one (snapdiff keeps each batch to one state).
    pub fn end_batch(&mut self) -> io::Result<()> {
        if let Some(b) = self.batcher.as_mut()
            && let Some(batch) = b.flush()
        {
            write_batch(&mut self.out, &batch)?;
        }
        Ok(())
    }

    /// Writes any partial batch and flushes, keeping the writer usable.
    pub fn flush(&mut self) -> io::Result<()> {
        self.end_batch()?;
        self.out.flush()
    }

    /// Writes any partial batch and flushes; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(batch) = self.batcher.take().and_then(Batcher::finish) {
            write_batch(&mut self.out, &batch)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_batch(out: &mut impl Write, batch: &[Vec<u8>]) -> io::Result<()> {
    out.write_all(b"[")?;
    for (i, obj) in batch.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(obj)?;
    }
    out.write_all(b"]\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::FileType;

    fn entry(p: &[u8]) -> Entry {
        Entry {
            path: p.to_vec(),
            file_type: FileType::Symlink,
            ino: 1,
            meta: None,
            generation: None,
            parent: 0,
        }
    }

    #[test]
    fn formats() {
        let mut w = EntryWriter::new(Vec::new(), Format::Nul);
        w.write(&entry(b"/a\nb")).unwrap();
        assert_eq!(w.finish().unwrap(), b"/a\nb\0");

        let limits = BatchLimits::from_seed(2, 1.0, false);
        let mut w = EntryWriter::new(Vec::new(), Format::Batches(Fields::PATH, limits));
        for p in [&b"/1"[..], b"/2", b"/3"] {
            w.write(&entry(p)).unwrap();
        }
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(text, "[{\"path\":\"/1\"},{\"path\":\"/2\"}]\n[{\"path\":\"/3\"}]\n");
    }
}
