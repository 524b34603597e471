//! What BLAKE3 hashing adds to migrating a large file (goal: at most 10 %
//! wall time). Two copies of one file to a directory endpoint on the same
//! filesystem, in the same run:
//!
//! - `ferry_upload`: `Endpoint::upload`, the migrate copy path (staged
//!   write with hashing on a second thread, metadata xattr, rename);
//! - `no_hash`: the same chunked reads and writes into a new file, with
//!   the same chunk size and reused buffers, without hashing.
//!
//! `cargo bench --bench copy` copies a 1 GiB file (`FERRY_COPY_MIB` sets the
//! size) from the page cache, under `target/bench-copy/` (`FERRY_COPY_DIR`
//! sets another place, such as a tmpfs for the CPU ceiling). Under `cargo test`
//! it runs once on 16 MiB.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::endpoint::{Endpoint, EndpointConfig, ObjectMeta, PartPool, StoreConfig};
use ferry::sys::Timestamp;
use object_store::path::Path as ObjPath;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The directory store's copy chunk.
const CHUNK: u64 = 4 << 20;

fn size() -> u64 {
    let mib: u64 = match std::env::var("FERRY_COPY_MIB") {
        Ok(v) => v.parse().expect("FERRY_COPY_MIB is a number"),
        Err(_) if std::env::args().any(|a| a == "--bench") => 1024,
        Err(_) => 16,
    };
    mib << 20
}

fn setup(size: u64) -> (PathBuf, PathBuf) {
    let base = std::env::var_os("FERRY_COPY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-copy"));
    let (src, dst) = (base.join("source"), base.join("objects"));
    std::fs::create_dir_all(&dst).unwrap();
    if std::fs::metadata(&src).map(|m| m.len()).ok() != Some(size) {
        let mut f = File::create(&src).unwrap();
        let mut block = vec![0u8; 1 << 20];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..size >> 20 {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    (src, dst)
}

fn bench(c: &mut Criterion) {
    let size = size();
    let (src, dst) = setup(size);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = EndpointConfig {
        name: "bench".into(),
        store: StoreConfig::Directory { path: dst.clone() },
        root: b"/".to_vec(),
        prefix: String::new(),
    };
    let target = Endpoint::open(&cfg, "user.ferry.", rt.handle().clone()).unwrap();
    let meta = ObjectMeta {
        size,
        hash: blake3::Hash::from_bytes([0; 32]),
        mode: 0o100644,
        uid: 0,
        gid: 0,
        mtime: Timestamp::default(),
        atime: Timestamp::default(),
        xattrs: Vec::new(),
        path: None,
        kind: Default::default(),
        link: None,
    };

    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Bytes(size));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("ferry_upload", |b| {
        b.iter(|| {
            let f = File::open(&src).unwrap();
            target.upload(&ObjPath::from("with-hash"), &f, meta.clone()).unwrap()
        })
    });
    g.bench_function("no_hash", |b| {
        b.iter(|| {
            let f = File::open(&src).unwrap();
            let mut out = File::create(dst.join("no-hash")).unwrap();
            let pool = PartPool::default();
            let mut off = 0;
            while off < size {
                let n = CHUNK.min(size - off);
                out.write_all(&pool.read_at(&f, off, n).unwrap()).unwrap();
                off += n;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
