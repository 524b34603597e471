//! What BLAKE3 hashing adds to migrating a large file (goal: at most 10 %
//! wall time). Two copies of one file to a directory endpoint on the same
//! filesystem, in the same run:
//!
//! - `ferry_upload`: `Endpoint::upload`, the migrate copy path (read, hash,
//!   streamed multipart write, metadata xattr);
//! - `no_hash`: the same `object_store` multipart write with the same part
//!   size, parts in flight and reused part buffers, without hashing.
//!
//! `cargo bench --bench copy` copies a 1 GiB file (`FERRY_COPY_MIB` sets the
//! size) from the page cache, under `target/bench-copy/` (`FERRY_COPY_DIR`
//! sets another place, such as a tmpfs for the CPU ceiling). Under `cargo test`
//! it runs once on 16 MiB.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry::endpoint::{Endpoint, EndpointConfig, ObjectMeta, PartPool, StoreConfig};
use ferry::sys::Timestamp;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 4;

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
    let store = LocalFileSystem::new_with_prefix(&dst).unwrap();
    let meta = ObjectMeta {
        size,
        hash: blake3::Hash::from_bytes([0; 32]),
        mode: 0o100644,
        uid: 0,
        gid: 0,
        mtime: Timestamp::default(),
        atime: Timestamp::default(),
        xattrs: Vec::new(),
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
            let _rt = rt.enter();
            let f = File::open(&src).unwrap();
            let pool = PartPool::default();
            let upload = rt.block_on(store.put_multipart(&ObjPath::from("no-hash"))).unwrap();
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut left = size;
            while left > 0 {
                let n = (PART as u64).min(left);
                let part = pool.read(&f, n).unwrap();
                rt.block_on(w.wait_for_capacity(IN_FLIGHT)).unwrap();
                w.put(part);
                left -= n;
            }
            rt.block_on(w.finish()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
