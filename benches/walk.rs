//! Criterion benchmarks of the library walker on a small generated tree
//! (`Shape::Wide`, 20,000 files in 10,000 directories), names only and
//! with `stat`, on 2 threads. The tree is small so that `cargo test
//! --all-targets`, which runs each benchmark once, stays fast; the
//! whole-process comparison with other tools on million-entry trees is
//! `scripts/bench-walk.sh` (results in `docs/benchmarks.md`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::testtree::{Shape, generate};
use ferry::walk::{Walk, WalkEvent, WalkOptions};
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

const FILES: usize = 20_000;
const THREADS: usize = 2;

/// Walks `root` to the end and returns how many entries it yielded.
fn walk(root: &Path, stat: bool) -> u64 {
    let opts = WalkOptions {
        threads: THREADS,
        stat,
        ..WalkOptions::default()
    };
    let mut walk = Walk::start(vec![root.as_os_str().as_bytes().to_vec()], opts).expect("walk starts");
    let mut entries = 0u64;
    for ev in walk.by_ref() {
        match ev {
            WalkEvent::Entries(chunk) => {
                entries += chunk.len() as u64;
                black_box(chunk);
            }
            WalkEvent::Error(e) => panic!("walk error: {e}"),
        }
    }
    walk.finish().expect("walker threads end cleanly");
    entries
}

fn bench_walk(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("wide");
    generate(&root, Shape::Wide, FILES).expect("generate tree");
    // Write the new metadata back now rather than during the measurements.
    let _ = std::process::Command::new("sync").status();
    // One walk to warm the cache and count what every walk must find.
    let entries = walk(&root, false);
    assert_eq!(entries, walk(&root, true));

    let mut g = c.benchmark_group("walk_wide_20k");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(entries));
    g.bench_function("names_only_2_threads", |b| {
        b.iter(|| assert_eq!(walk(&root, false), entries))
    });
    g.bench_function("stat_2_threads", |b| b.iter(|| assert_eq!(walk(&root, true), entries)));
    g.finish();
}

criterion_group!(benches, bench_walk);
criterion_main!(benches);
