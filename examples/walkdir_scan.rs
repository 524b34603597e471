//! Baseline for `scripts/bench-walk.sh`: walk a tree with `walkdir` on one
//! thread and print every path NUL-separated on stdout, like
//! `find ROOT -print0`.
//!
//! ```text
//! walkdir_scan [--stat] ROOT
//! ```
//!
//! `--stat` calls `lstat` (`symlink_metadata`) on every entry and prints
//! `SIZE PATH\0` (like `find -printf '%s %p\0'`).

use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use walkdir::WalkDir;

fn main() -> ExitCode {
    let mut stat = false;
    let mut root = None;
    for a in std::env::args_os().skip(1) {
        match a.to_str() {
            Some("--stat") => stat = true,
            _ if root.is_none() => root = Some(a),
            _ => return usage(),
        }
    }
    let Some(root) = root else { return usage() };

    let mut out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut errors = 0u64;
    let mut itoa = itoa::Buffer::new();
    for entry in WalkDir::new(root).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                eprintln!("walkdir_scan: {e}");
                errors += 1;
                continue;
            }
        };
        let written = (|| {
            if stat {
                let size = match std::fs::symlink_metadata(entry.path()) {
                    Ok(m) => itoa.format(m.len()),
                    Err(_) => "?",
                };
                out.write_all(size.as_bytes())?;
                out.write_all(b" ")?;
            }
            out.write_all(entry.path().as_os_str().as_bytes())?;
            out.write_all(b"\0")
        })();
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() || errors > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: walkdir_scan [--stat] ROOT");
    ExitCode::from(2)
}
