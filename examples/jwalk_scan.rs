//! Baseline for `scripts/bench-walk.sh`: walk a tree with `jwalk` and print
//! every path NUL-separated on stdout, like `find ROOT -print0`.
//!
//! ```text
//! jwalk_scan [--threads N] [--stat] ROOT
//! ```
//!
//! `--threads N` runs the walk on a new rayon pool of N threads (default:
//! the number of CPUs). `--stat` calls `lstat` on every entry and prints
//! `SIZE PATH\0` (like `find -printf '%s %p\0'`); the `lstat` runs in
//! jwalk's parallel `process_read_dir` callback, so it is spread over the
//! pool exactly like the directory reads, which makes a fair baseline.

mod common;

use common::Records;
use jwalk::{Parallelism, WalkDirGeneric};
use std::process::ExitCode;

/// Per-entry state: the size from `lstat`, when `--stat` asked for it.
type State = ((), Option<u64>);

fn main() -> ExitCode {
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut stat = false;
    let mut root = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--stat") => stat = true,
            Some("--threads" | "-j") => match args.next().and_then(|n| n.to_str()?.parse().ok()) {
                Some(n) if n > 0 => threads = n,
                _ => return usage(),
            },
            _ if root.is_none() => root = Some(a),
            _ => return usage(),
        }
    }
    let Some(root) = root else { return usage() };

    let mut walk = WalkDirGeneric::<State>::new(root)
        .skip_hidden(false)
        .follow_links(false)
        .parallelism(Parallelism::RayonNewPool(threads));
    if stat {
        walk = walk.process_read_dir(|_, _, _, children| {
            for entry in children.iter_mut().flatten() {
                // DirEntry::metadata is lstat when links are not followed.
                entry.client_state = entry.metadata().ok().map(|m| m.len());
            }
        });
    }

    let mut records = Records::new("jwalk_scan");
    for entry in walk {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                records.error(e);
                continue;
            }
        };
        let size = stat.then(|| match entry.client_state {
            Some(s) => Some(s),
            // The root is not a child of any read_dir: stat it here.
            None if entry.depth == 0 => entry.metadata().ok().map(|m| m.len()),
            None => None,
        });
        if records.write(size, &entry.path()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    records.finish()
}

fn usage() -> ExitCode {
    eprintln!("usage: jwalk_scan [--threads N] [--stat] ROOT");
    ExitCode::from(2)
}
