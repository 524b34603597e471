//! Output shared by the baseline walkers: `find -print0`-style records on
//! a buffered stdout, and the exit status.

use std::fmt::Display;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

/// Writes `PATH\0` records, or `SIZE PATH\0` when walking with stat.
pub struct Records {
    out: BufWriter<StdoutLock<'static>>,
    itoa: itoa::Buffer,
    errors: u64,
    tool: &'static str,
}

impl Records {
    /// Records for the baseline named `tool` (used in error messages).
    pub fn new(tool: &'static str) -> Self {
        Records {
            out: BufWriter::with_capacity(256 * 1024, io::stdout().lock()),
            itoa: itoa::Buffer::new(),
            errors: 0,
            tool,
        }
    }

    /// Writes one record: `size` is `None` without stat, `Some(None)` when
    /// the size could not be read (written as `?`).
    pub fn write(&mut self, size: Option<Option<u64>>, path: &Path) -> io::Result<()> {
        if let Some(size) = size {
            let text = size.map_or("?", |s| self.itoa.format(s));
            self.out.write_all(text.as_bytes())?;
            self.out.write_all(b" ")?;
        }
        self.out.write_all(path.as_os_str().as_bytes())?;
        self.out.write_all(b"\0")
    }

    /// Reports a path the walker could not read.
    pub fn error(&mut self, e: impl Display) {
        eprintln!("{}: {e}", self.tool);
        self.errors += 1;
    }

    /// Flushes and returns failure if anything could not be read or written.
    pub fn finish(mut self) -> ExitCode {
        if self.out.flush().is_err() || self.errors > 0 {
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    }
}
