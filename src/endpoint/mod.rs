//! Storage endpoints: where migrate puts file data and where recall and
//! reverse stub get it back, built on `object_store`.
//!
//! Two kinds are configured by name in `[Endpoint <name>]` sections
//! ([`crate::config::endpoint`]): a
//! local or NFS `directory`, and `s3` (any S3-compatible store). A file's
//! object key is its path relative to the endpoint's local `root`, under the
//! endpoint's `prefix` ([`key`]). Each object carries an [`ObjectMeta`] so it
//! can be restored with no local copy.
//!
//! The calls here block: operations run on plain worker threads and enter
//! the tokio runtime only for the store's requests.

pub mod key;
pub mod meta;

pub use crate::config::endpoint::{EndpointConfig, Secret, StoreConfig};
pub use key::KeyError;
pub use meta::{MetaError, ObjectMeta};

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, GetResultPayload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// Files up to this size are read whole and sent in one request; larger
/// ones are streamed in parts of 8 MiB (larger for files over 80 GB).
pub const SMALL_OBJECT: u64 = 8 << 20;

/// The part size of streamed transfers (S3 allows at most 10,000 parts, so
/// files up to 80 GB; larger parts are chosen for larger files).
const PART_SIZE: u64 = 8 << 20;

/// Parts in flight per streamed upload.
const PARTS_IN_FLIGHT: usize = 4;

/// The S3 user-metadata key that holds the [`ObjectMeta`] document.
const S3_META_KEY: &str = "ferry";

/// S3 limits user metadata to 2 KiB in all.
const S3_META_LIMIT: usize = 2000;

/// A failed request to a store.
#[derive(Debug, thiserror::Error)]
#[error("endpoint `{endpoint}`: {message}")]
pub struct EndpointError {
    /// The endpoint's name.
    pub endpoint: String,
    /// What the store said.
    pub message: String,
}

/// Why moving data to or from a store failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading or writing the local file failed.
    #[error("local I/O: {0}")]
    Local(#[from] io::Error),
    /// The store failed.
    #[error("{0}")]
    Remote(#[from] EndpointError),
    /// The data did not match what was expected (size or hash).
    #[error("{0}")]
    Mismatch(String),
}

/// What a store holds under one key.
#[derive(Debug)]
pub struct RemoteObject {
    /// Content length.
    pub size: u64,
    /// ferry's metadata; `None` for an object ferry did not write, or one
    /// whose upload was interrupted before its metadata was recorded.
    pub meta: Option<Result<ObjectMeta, MetaError>>,
}

/// An open storage endpoint.
pub struct Endpoint {
    name: String,
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    root: Vec<u8>,
    prefix: String,
    rt: Handle,
}

enum Backend {
    Directory {
        local: Arc<LocalFileSystem>,
        /// The target directory, kept open for `syncfs`.
        dir: File,
        /// The xattr holding each object's metadata document.
        meta_xattr: String,
    },
    S3,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.name)
    }
}

impl Endpoint {
    /// Opens the endpoint `cfg`. `xattr_prefix` names the xattr that holds
    /// object metadata in a directory target; `rt` runs the store's requests.
    pub fn open(cfg: &EndpointConfig, xattr_prefix: &str, rt: Handle) -> Result<Endpoint, EndpointError> {
        let err = |message: String| EndpointError {
            endpoint: cfg.name.clone(),
            message,
        };
        let (store, backend): (Arc<dyn ObjectStore>, Backend) = match &cfg.store {
            StoreConfig::Directory { path } => {
                let dir = File::open(path).map_err(|e| err(format!("directory {}: {e}", path.display())))?;
                if !dir.metadata().map_err(|e| err(e.to_string()))?.is_dir() {
                    return Err(err(format!("{} is not a directory", path.display())));
                }
                let local = Arc::new(LocalFileSystem::new_with_prefix(path).map_err(|e| err(e.to_string()))?);
                let backend = Backend::Directory {
                    local: local.clone(),
                    dir,
                    meta_xattr: format!("{xattr_prefix}object"),
                };
                (local, backend)
            }
            StoreConfig::S3 {
                bucket,
                url,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
            } => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    // Client options replace the whole set, so allow_http
                    // goes after them.
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(300)),
                    )
                    .with_allow_http(*allow_http)
                    .with_retry(RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(20),
                        ..RetryConfig::default()
                    });
                if let Some(u) = url {
                    b = b.with_endpoint(u).with_virtual_hosted_style_request(false);
                }
                if let Some(k) = access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = secret_access_key {
                    b = b.with_secret_access_key(&s.0);
                }
                (Arc::new(b.build().map_err(|e| err(e.to_string()))?), Backend::S3)
            }
        };
        Ok(Endpoint {
            name: cfg.name.clone(),
            store,
            backend,
            root: cfg.root.clone(),
            prefix: cfg.prefix.clone(),
            rt,
        })
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key for the local file at `path` (absolute).
    pub fn key(&self, path: &[u8]) -> Result<ObjPath, KeyError> {
        let k = key::key_for(&self.root, &self.prefix, path)?;
        Ok(ObjPath::parse(k).expect("encoded keys are valid"))
    }

    fn err(&self, e: impl fmt::Display) -> EndpointError {
        EndpointError {
            endpoint: self.name.clone(),
            message: e.to_string(),
        }
    }

    /// What the store holds at `key`, if anything.
    pub fn head(&self, key: &ObjPath) -> Result<Option<RemoteObject>, EndpointError> {
        match &self.backend {
            Backend::Directory { local, meta_xattr, .. } => {
                let path = local.path_to_filesystem(key).map_err(|e| self.err(e))?;
                let md = match std::fs::symlink_metadata(&path) {
                    Ok(md) if md.is_file() => md,
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(self.err(format!("{}: {e}", path.display()))),
                };
                let meta = xattr::get(&path, meta_xattr)
                    .map_err(|e| self.err(format!("{}: {e}", path.display())))?
                    .map(|v| ObjectMeta::from_json(&v));
                Ok(Some(RemoteObject { size: md.len(), meta }))
            }
            Backend::S3 => {
                let opts = GetOptions {
                    head: true,
                    ..GetOptions::default()
                };
                match self.rt.block_on(self.store.get_opts(key, opts)) {
                    Ok(r) => {
                        let meta = r
                            .attributes
                            .get(&Attribute::Metadata(S3_META_KEY.into()))
                            .map(|v| ObjectMeta::from_header(v.as_ref()));
                        Ok(Some(RemoteObject {
                            size: r.meta.size,
                            meta,
                        }))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.err(e)),
                }
            }
        }
    }

    /// Copies the first `meta.size` bytes of `file` to `key`, hashing them; returns `meta` with the hash. The
    /// object is complete, with its metadata, when this returns, but only
    /// durable after [`Endpoint::sync`].
    pub fn upload(&self, key: &ObjPath, file: &File, mut meta: ObjectMeta) -> Result<ObjectMeta, TransferError> {
        (&*file).rewind()?;
        if meta.size <= SMALL_OBJECT {
            let data = read_exact(file, meta.size)?;
            meta.hash = blake3::hash(&data);
            let attrs = self.attributes(&meta)?;
            let opts = PutOptions {
                attributes: attrs,
                ..PutOptions::default()
            };
            self.rt
                .block_on(self.store.put_opts(key, PutPayload::from_bytes(data), opts))
                .map_err(|e| self.err(e))?;
        } else if matches!(self.backend, Backend::S3) {
            // S3 takes metadata when an upload starts, so hash first, then
            // send, and check that the sent bytes hash the same.
            meta.hash = hash_file(file, meta.size)?;
            (&*file).rewind()?;
            let attrs = self.attributes(&meta)?;
            let sent = self.put_streaming(key, file, meta.size, attrs)?;
            if sent != meta.hash {
                // The object's metadata names a hash its bytes do not have:
                // it must not stay.
                let _ = self.delete(key);
                return Err(TransferError::Mismatch("file changed while it was being sent".into()));
            }
        } else {
            meta.hash = self.put_streaming(key, file, meta.size, Attributes::new())?;
        }
        if let Backend::Directory { local, meta_xattr, .. } = &self.backend {
            let path = local.path_to_filesystem(key).map_err(|e| self.err(e))?;
            xattr::set(&path, meta_xattr, meta.to_json().as_bytes())
                .map_err(|e| self.err(format!("recording metadata on {}: {e}", path.display())))?;
        }
        Ok(meta)
    }

    fn attributes(&self, meta: &ObjectMeta) -> Result<Attributes, EndpointError> {
        let mut attrs = Attributes::new();
        if matches!(self.backend, Backend::S3) {
            let header = meta.to_header();
            if header.len() > S3_META_LIMIT {
                return Err(self.err(format!(
                    "the file's metadata ({} bytes encoded, mostly user xattrs) exceeds S3's {S3_META_LIMIT}-byte limit",
                    header.len()
                )));
            }
            attrs.insert(Attribute::Metadata(S3_META_KEY.into()), AttributeValue::from(header));
        }
        Ok(attrs)
    }

    fn put_streaming(
        &self,
        key: &ObjPath,
        file: &File,
        size: u64,
        attrs: Attributes,
    ) -> Result<blake3::Hash, TransferError> {
        let _rt = self.rt.enter();
        let opts = PutMultipartOptions {
            attributes: attrs,
            ..PutMultipartOptions::default()
        };
        let upload = self
            .rt
            .block_on(self.store.put_multipart_opts(key, opts))
            .map_err(|e| self.err(e))?;
        let part = part_size(size);
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part as usize);
        // Hashing runs on its own thread, beside the reads and the part
        // writes, so it adds little to the copy's wall time.
        let (to_hasher, chunks) = crossbeam_channel::bounded::<Bytes>(PARTS_IN_FLIGHT);
        std::thread::scope(|scope| {
            let hasher = scope.spawn(move || {
                let mut h = blake3::Hasher::new();
                for chunk in chunks {
                    h.update(&chunk);
                }
                h.finalize()
            });
            let mut done = 0u64;
            let pool = PartPool::default();
            let result = (|| {
                while done < size {
                    let n = part.min(size - done);
                    let chunk = pool.read(file, n)?;
                    // The hasher only stops early if it panicked.
                    let _ = to_hasher.send(chunk.clone());
                    self.rt
                        .block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT))
                        .map_err(|e| self.err(e))?;
                    writer.put(chunk);
                    done += n;
                }
                Ok::<(), TransferError>(())
            })();
            drop(to_hasher);
            let hash = hasher.join().expect("hasher thread");
            match result {
                Ok(()) => {
                    self.rt.block_on(writer.finish()).map_err(|e| self.err(e))?;
                    Ok(hash)
                }
                Err(e) => {
                    // Best effort: an abandoned upload leaves nothing visible.
                    let _ = self.rt.block_on(writer.abort());
                    Err(e)
                }
            }
        })
    }

    /// Streams the object at `key` into `sink` in order, and returns the
    /// BLAKE3 hash of everything it delivered. Fails if the object's length
    /// differs from `expected_size`.
    pub fn download(
        &self,
        key: &ObjPath,
        expected_size: u64,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<blake3::Hash, TransferError> {
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        let mut deliver = |chunk: &[u8]| -> Result<(), TransferError> {
            total += chunk.len() as u64;
            if total > expected_size {
                return Err(TransferError::Mismatch(format!(
                    "object is longer than the expected {expected_size} bytes"
                )));
            }
            hasher.update(chunk);
            sink(chunk).map_err(TransferError::Local)
        };
        let result = self.rt.block_on(self.store.get(key)).map_err(|e| self.err(e))?;
        match result.payload {
            GetResultPayload::File(mut f, path) => {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| self.err(format!("{}: {e}", path.display())))?;
                    if n == 0 {
                        break;
                    }
                    deliver(&buf[..n])?;
                }
            }
            GetResultPayload::Stream(mut s) => {
                while let Some(chunk) = self.rt.block_on(s.next()) {
                    let chunk: Bytes = chunk.map_err(|e| self.err(e))?;
                    deliver(&chunk)?;
                }
            }
        }
        if total != expected_size {
            return Err(TransferError::Mismatch(format!(
                "object has {total} bytes, expected {expected_size}"
            )));
        }
        Ok(hasher.finalize())
    }

    /// The first `len` bytes of the object at `key` (a stub's resident
    /// head); not verified, since the hash covers the whole object.
    pub fn download_head(&self, key: &ObjPath, len: u64) -> Result<Bytes, EndpointError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let bytes = self
            .rt
            .block_on(self.store.get_range(key, 0..len))
            .map_err(|e| self.err(e))?;
        if bytes.len() as u64 != len {
            return Err(self.err(format!("{key}: asked for {len} bytes, got {}", bytes.len())));
        }
        Ok(bytes)
    }

    /// Removes the object at `key`; a missing object is not an error.
    pub fn delete(&self, key: &ObjPath) -> Result<(), EndpointError> {
        match self.rt.block_on(self.store.delete(key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Makes every object written so far durable: `syncfs` on a directory
    /// target (one call for a whole batch); nothing for S3, where a
    /// completed request is already durable.
    pub fn sync(&self) -> Result<(), EndpointError> {
        match &self.backend {
            Backend::Directory { dir, .. } => crate::sys::syncfs(dir).map_err(|e| self.err(format!("syncfs: {e}"))),
            Backend::S3 => Ok(()),
        }
    }

    /// A short description for messages: `name (kind location)`.
    pub fn describe(cfg: &EndpointConfig) -> String {
        match &cfg.store {
            StoreConfig::Directory { path } => {
                format!(
                    "{} (directory {})",
                    cfg.name,
                    String::from_utf8_lossy(path.as_os_str().as_bytes())
                )
            }
            StoreConfig::S3 { bucket, url, .. } => {
                format!("{} (s3 {bucket} at {})", cfg.name, url.as_deref().unwrap_or("AWS"))
            }
        }
    }
}

/// A part size for `size` bytes that keeps S3's 10,000-part limit.
fn part_size(size: u64) -> u64 {
    PART_SIZE.max(size.div_ceil(9_000).next_multiple_of(1 << 20))
}

/// Reads exactly `n` bytes from the file's position without zero-filling a
/// buffer first; a file that ends early has shrunk while being read.
fn read_exact(file: &File, n: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?);
    fill(file, n, &mut buf)?;
    Ok(Bytes::from(buf))
}

fn fill(file: &File, n: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    file.take(n).read_to_end(buf)?;
    if (buf.len() as u64) < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while being read",
        ));
    }
    Ok(())
}

/// Part buffers of one streamed upload, reused once a part is written, so
/// a large file costs a few buffers instead of fresh pages for every part.
#[derive(Clone, Default)]
pub struct PartPool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// A part buffer that goes back to its pool when the store drops it.
struct PooledPart {
    buf: Vec<u8>,
    pool: PartPool,
}

impl AsRef<[u8]> for PooledPart {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledPart {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.pool.0.lock().expect("part pool").push(buf);
    }
}

impl PartPool {
    /// The next `n` bytes of `file` in a pooled buffer; a file that ends
    /// early has shrunk while being read.
    pub fn read(&self, file: &File, n: u64) -> io::Result<Bytes> {
        let mut buf = self.0.lock().expect("part pool").pop().unwrap_or_default();
        buf.reserve(n as usize);
        fill(file, n, &mut buf)?;
        Ok(Bytes::from_owner(PooledPart {
            buf,
            pool: self.clone(),
        }))
    }
}

/// The BLAKE3 hash of the first `n` bytes of `file` (read from the start;
/// the file's position is left after them).
pub fn hash_file(file: &File, n: u64) -> io::Result<blake3::Hash> {
    (&*file).rewind()?;
    let mut hasher = blake3::Hasher::new();
    let copied = io::copy(&mut file.take(n), &mut hasher)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while being read",
        ));
    }
    Ok(hasher.finalize())
}
