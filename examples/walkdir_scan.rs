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

use std::process::ExitCode;
use walkdir::WalkDir;

mod common;

use common::Records;

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

    let mut records = Records::new("walkdir_scan");
    for entry in WalkDir::new(root).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                records.error(e);
                continue;
            }
        };
        let size = stat.then(|| std::fs::symlink_metadata(entry.path()).ok().map(|m| m.len()));
        if records.write(size, entry.path()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    records.finish()
}

fn usage() -> ExitCode {
    eprintln!("usage: walkdir_scan [--stat] ROOT");
    ExitCode::from(2)
}
