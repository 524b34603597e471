//! Criterion benchmark of the diff engine alone (CPU only, one thread):
//! two synthetic manifests of a tree of 100-entry directories, the new one
//! with 1 % created, 1 % updated, 1 % deleted entries and 0.1 % of the
//! directories moved. Reports entries per second of one manifest.
//!
//! `cargo bench --bench diff` uses 1,000,000 entries per manifest;
//! `FERRY_DIFF_ENTRIES=10000000` sets the size (docs/benchmarks.md has the
//! 10 M figures). Under `cargo test` it runs once on 20,000 entries.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::snapdiff::diff::{DiffOptions, Listing, diff};
use ferry::snapdiff::manifest::{Header, Kind, ManifestReader, ManifestWriter, Section};
use ferry::snapdiff::record::Record;
use ferry::sys::Timestamp;
use std::hint::black_box;
use std::time::Duration;

const ROOT: u64 = 256;
const PER_DIR: u64 = 100;

fn entries() -> u64 {
    if let Ok(n) = std::env::var("FERRY_DIFF_ENTRIES") {
        return n.parse().expect("FERRY_DIFF_ENTRIES is a number");
    }
    if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        20_000
    }
}

fn record(ino: u64, parent: u64, dir: bool, t: i64) -> Record {
    Record {
        ino,
        generation: 1,
        parent,
        name: format!("entry-{ino}").into_bytes(),
        mode: if dir {
            libc::S_IFDIR | 0o755
        } else {
            libc::S_IFREG | 0o644
        },
        size: ino * 7 % 100_000,
        mtime: Timestamp { sec: t, nsec: 1 },
        ctime: Timestamp { sec: t, nsec: 1 },
        uid: 1000,
        gid: 1000,
        nlink: 1,
    }
}

/// The records of a tree of `n` entries: directory `d` (inode ROOT+1+d)
/// holds entries; `changed` applies the change mix.
fn manifest(n: u64, changed: bool) -> Vec<u8> {
    let dirs = n / PER_DIR;
    let header = Header {
        root: b"/bench".to_vec(),
        root_ino: ROOT,
        provider: "bench".into(),
        snapshot: None,
        created: String::new(),
        created_unix: 0,
        generation: "inode".into(),
        kind: Kind::Base,
        otransid: None,
        journal: None,
        barrier: None,
        id: String::new(),
    };
    let dir_rec = |d: u64| {
        let ino = ROOT + 1 + d;
        // 0.1 % of directories move under another one.
        let parent = if changed && d % 1000 == 3 {
            ROOT + 1 + (d + 1) % dirs
        } else {
            ROOT
        };
        let mut r = record(ino, parent, true, 10);
        if changed && d.is_multiple_of(10) {
            r.mtime.sec = 20;
            r.ctime.sec = 20;
        }
        r
    };
    let mut w = ManifestWriter::new(Vec::with_capacity((n * 48) as usize), &header).unwrap();
    let root = record(ROOT, 0, true, 10);
    let root = Record {
        name: Vec::new(),
        ..root
    };
    w.push(Section::Dirs, &root).unwrap();
    for d in 0..dirs {
        w.push(Section::Dirs, &dir_rec(d)).unwrap();
    }
    w.push(Section::Entries, &root).unwrap();
    for d in 0..dirs {
        w.push(Section::Entries, &dir_rec(d)).unwrap();
    }
    let first_file = ROOT + 1 + dirs;
    let files = n - dirs;
    for i in 0..files {
        let ino = first_file + i;
        let parent = ROOT + 1 + (i % dirs.max(1));
        let mut r = record(ino, parent, false, 10);
        if changed {
            match i % 100 {
                1 => continue,
                2 => {
                    r.size += 1;
                    r.mtime.sec = 20;
                }
                _ => {}
            }
        }
        w.push(Section::Entries, &r).unwrap();
    }
    if changed {
        for i in 0..files / 100 {
            let ino = first_file + files + i;
            w.push(Section::Entries, &record(ino, ROOT + 1 + (i % dirs.max(1)), false, 20))
                .unwrap();
        }
    }
    w.finish().unwrap().0
}

fn listing(b: &[u8]) -> Listing<'_> {
    Listing::read(ManifestReader::new(std::io::Cursor::new(b)).unwrap()).unwrap()
}

fn bench_diff(c: &mut Criterion) {
    let n = entries();
    let old = manifest(n, false);
    let new = manifest(n, true);
    let spill = tempfile::tempdir().unwrap();
    let opts = DiffOptions::default();
    let run = || {
        let (changes, sum) = diff::<Vec<u8>>(listing(&old), listing(&new), &opts, spill.path(), None, None).unwrap();
        let mut count = 0u64;
        for c in changes {
            black_box(c.unwrap());
            count += 1;
        }
        assert_eq!(count, sum.created + sum.updated + sum.moved + sum.deleted);
        sum
    };
    let sum = run();
    assert!(
        sum.created > 0 && sum.deleted > 0 && sum.updated > 0 && sum.moved > 0,
        "{sum:?}"
    );
    let mut g = c.benchmark_group("diff");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(if n > 2_000_000 { 60 } else { 10 }));
    g.bench_function(format!("{n}-entries-2pct-changed"), |b| b.iter(run));
    g.finish();
}

criterion_group!(benches, bench_diff);
criterion_main!(benches);
