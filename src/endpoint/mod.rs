//! Storage endpoints: where migrate puts file data and where recall and
//! reverse stub get it back.
//!
//! Two kinds are configured by name in `[Endpoint <name>]` sections
//! ([`crate::config::endpoint`]): a local or NFS `directory` ([`dir`]) and
//! `s3`, any S3-compatible store ([`s3`], on `object_store`). A file's
//! object key is its path relative to the endpoint's local `root`, under
//! the endpoint's `prefix`, in a layout bounded for both ([`key`]). Each
//! object carries an [`ObjectMeta`] so it can be restored with no local
//! copy, committed with the object in one step ([`meta`]), and
//! [`Endpoint::survey`] finds what interrupted writes left behind.
//!
//! The calls here block: operations run on plain worker threads and enter
//! the tokio runtime only for the store's requests.

mod dir;
pub mod key;
pub mod meta;
mod s3;
mod survey;
pub mod throttle;
mod transfer;

pub use crate::config::endpoint::{EndpointConfig, Secret, StoreConfig};
pub use key::{Key, KeyError};
pub use meta::{EntryKind, LinkId, MetaDoc, MetaError, ObjectMeta};
pub use s3::{SMALL_OBJECT, UploadPage, parse_upload_list};
pub use survey::{Leftover, LeftoverKind, Survey};
pub use transfer::{EndpointError, PartPool, RemoteObject, TransferError, hash_file};

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use throttle::Throttle;
use tokio::runtime::Handle;

/// An open storage endpoint.
pub struct Endpoint {
    name: String,
    backend: Backend,
    root: Vec<u8>,
    prefix: String,
    throttle: Option<Arc<Throttle>>,
}

enum Backend {
    Directory(dir::DirStore),
    S3(s3::S3Store),
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.name)
    }
}

impl Endpoint {
    /// Opens the endpoint `cfg`. `xattr_prefix` names the xattr that holds
    /// object metadata in a directory store; `rt` runs the store's requests.
    pub fn open(cfg: &EndpointConfig, xattr_prefix: &str, rt: Handle) -> Result<Endpoint, EndpointError> {
        let backend = match &cfg.store {
            StoreConfig::Directory { path } => {
                Backend::Directory(dir::DirStore::open(&cfg.name, path, format!("{xattr_prefix}object"))?)
            }
            s3 @ StoreConfig::S3 { .. } => Backend::S3(s3::S3Store::open(&cfg.name, s3, rt)?),
        };
        Ok(Endpoint {
            name: cfg.name.clone(),
            backend,
            root: cfg.root.clone(),
            prefix: cfg.prefix.clone(),
            throttle: None,
        })
    }

    /// Pays for every byte this endpoint sends or fetches from
    /// `throttle`, a budget the caller may share with other endpoints.
    pub fn throttle(&mut self, throttle: Arc<Throttle>) {
        match &mut self.backend {
            Backend::Directory(d) => d.throttle = Some(throttle.clone()),
            Backend::S3(s) => s.throttle = Some(throttle.clone()),
        }
        self.throttle = Some(throttle);
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint's local root (absolute path bytes).
    pub fn root(&self) -> &[u8] {
        &self.root
    }

    /// The key for the local file at `path` (absolute), with the relative
    /// path to record in the object's metadata when the key cannot give it
    /// back.
    pub fn key(&self, path: &[u8]) -> Result<(ObjPath, Option<Vec<u8>>), KeyError> {
        let k = key::key_for(&self.root, &self.prefix, path)?;
        Ok((parse_key(&k.key), k.source))
    }

    /// The key of the directory at `path`'s own object (its metadata),
    /// beside its children's keys ([`key::dir_key`]), with the relative
    /// path to record as for [`Endpoint::key`].
    /// The root itself has one too, `<prefix>/#d` (`#d` with no prefix),
    /// so a synced tree's top directory carries its mode, owner and times
    /// like any other (a name `#d` in the tree is stored as `%23d`).
    pub fn dir_key(&self, path: &[u8]) -> Result<(ObjPath, Option<Vec<u8>>), KeyError> {
        match key::key_for(&self.root, &self.prefix, path) {
            Ok(k) => Ok((parse_key(&key::dir_key(&k.key)), k.source)),
            Err(KeyError::IsRoot) => {
                let at = self.prefix.trim_end_matches('/');
                let k = if at.is_empty() { String::new() } else { format!("{at}/") };
                Ok((parse_key(&key::dir_key(&k)), None))
            }
            Err(e) => Err(e),
        }
    }

    /// The store key of `rel`, a key relative to the endpoint's prefix (as
    /// an import names objects).
    pub fn store_key(&self, rel: &str) -> Result<ObjPath, KeyError> {
        let full = if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        ObjPath::parse(&full).map_err(|e| KeyError::NotAKey {
            key: rel.to_string(),
            reason: e.to_string(),
        })
    }

    /// The path relative to the endpoint's root of the object at `key`:
    /// `recorded` when its metadata records it (a key with hashed names),
    /// else the key decoded, without the endpoint's prefix and, for a
    /// directory's object, without `#d`. `None` when `key` is not under
    /// the prefix.
    pub fn relative(&self, key: &ObjPath, recorded: Option<&[u8]>, directory: bool) -> Option<Vec<u8>> {
        if let Some(p) = recorded {
            return Some(p.to_vec());
        }
        let k = key.as_ref();
        let rel = if self.prefix.is_empty() {
            k
        } else {
            k.strip_prefix(&self.prefix)?.strip_prefix('/')?
        };
        let rel = if directory {
            rel.strip_suffix(key::DIR_SUFFIX).unwrap_or(rel)
        } else {
            rel
        };
        Some(key::decode(rel))
    }

    /// The local path (absolute) that the object at `key` stands for under
    /// the endpoint's root: [`Endpoint::relative`] joined to the root.
    pub fn local_path(&self, key: &ObjPath, recorded: Option<&[u8]>, directory: bool) -> Option<Vec<u8>> {
        let rel = self.relative(key, recorded, directory)?;
        let root = if self.root.as_slice() == b"/" {
            &b""[..]
        } else {
            self.root.as_slice()
        };
        Some([root, b"/", &rel].concat())
    }

    /// The key ferry up to 53a13dd gave `path`, when it differs from
    /// [`Endpoint::key`]'s: where a store written then holds its object.
    pub fn legacy_key(&self, path: &[u8]) -> Option<ObjPath> {
        let old = key::legacy_key_for(&self.root, &self.prefix, path).ok()?;
        let new = key::key_for(&self.root, &self.prefix, path).ok()?;
        (old != new.key).then(|| ObjPath::parse(old).ok()).flatten()
    }

    /// A new instance of `key`, for a copy that must not replace the
    /// object there.
    pub fn instance_key(&self, key: &ObjPath) -> ObjPath {
        parse_key(&key::instance_key(key.as_ref()))
    }

    /// What the store holds at `key`, if anything.
    pub fn head(&self, key: &ObjPath) -> Result<Option<RemoteObject>, EndpointError> {
        match &self.backend {
            Backend::Directory(d) => d.head(key.as_ref()),
            Backend::S3(s) => s.head(key),
        }
    }

    /// Copies the first `meta.size` bytes of `file` to `key`, hashing them;
    /// returns `meta` with the hash. With `meta.size` 0 (a directory's or a
    /// link's object) nothing is read from `file`. The object appears complete, with its
    /// metadata, in one step, and is durable after [`Endpoint::sync`].
    pub fn upload(&self, key: &ObjPath, file: &File, meta: ObjectMeta) -> Result<ObjectMeta, TransferError> {
        match &self.backend {
            Backend::Directory(d) => d.upload(key.as_ref(), file, meta),
            Backend::S3(s) => s.upload(key, file, meta),
        }
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
            if let Some(t) = &self.throttle {
                t.pay(chunk.len() as u64);
            }
            total += chunk.len() as u64;
            if total > expected_size {
                return Err(TransferError::Mismatch(format!(
                    "object is longer than the expected {expected_size} bytes"
                )));
            }
            hasher.update(chunk);
            sink(chunk).map_err(TransferError::Local)
        };
        match &self.backend {
            Backend::Directory(d) => d.download(key.as_ref(), &mut deliver)?,
            Backend::S3(s) => s.download(key, &mut deliver)?,
        }
        if total != expected_size {
            return Err(TransferError::Mismatch(format!(
                "object has {total} bytes, expected {expected_size}"
            )));
        }
        Ok(hasher.finalize())
    }

    /// One page of the object keys under `prefix` (whole components
    /// relative to the endpoint's prefix, `projects/` or `projects`; empty
    /// for all of the endpoint's),
    /// in the store's order, continuing after `page_token` (the `next` of
    /// the page before). Metadata sidecars and staging leftovers are not
    /// keys; a directory's own object (`<key>#d`) is. A page holds at most
    /// [`LIST_PAGE`] keys, so a listing of any size is streamed.
    pub fn list(&self, prefix: &str, page_token: Option<&str>) -> Result<ListPage, EndpointError> {
        let full = match (self.prefix.is_empty(), prefix.is_empty()) {
            (true, _) => prefix.to_string(),
            (false, true) => format!("{}/", self.prefix),
            (false, false) => format!("{}/{prefix}", self.prefix),
        };
        let keys = match &self.backend {
            Backend::Directory(d) => d.list(&full, page_token, LIST_PAGE)?,
            Backend::S3(s) => s.list(&full, page_token, LIST_PAGE)?,
        };
        Ok(ListPage {
            next: (keys.len() == LIST_PAGE).then(|| keys[LIST_PAGE - 1].clone()),
            // A name no object path can hold (a foreign file named `.` in a
            // directory store cannot be) is no key.
            keys: keys.iter().filter_map(|k| ObjPath::parse(k).ok()).collect(),
        })
    }

    /// The first `len` bytes of the object at `key` (a stub's resident
    /// head); not verified, since the hash covers the whole object.
    pub fn download_head(&self, key: &ObjPath, len: u64) -> Result<Bytes, EndpointError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let bytes = match &self.backend {
            Backend::Directory(d) => d.read_head(key.as_ref(), len)?,
            Backend::S3(s) => s.read_head(key, len)?,
        };
        if bytes.len() as u64 != len {
            return Err(self.err(format!("{key}: asked for {len} bytes, got {}", bytes.len())));
        }
        Ok(bytes)
    }

    /// Copies the object at `from` to `to` on this endpoint, data and
    /// metadata (a sidecar too), replacing what `to` held. The object at
    /// `to` is the old one or the whole copy, never part of either; the
    /// copy is durable after [`Endpoint::sync`]. A directory store hashes
    /// the bytes on the way and refuses an object that does not match its
    /// metadata; S3 copies on the server (see the store's `copy`).
    pub fn copy(&self, from: &ObjPath, to: &ObjPath) -> Result<(), TransferError> {
        if from == to {
            return Err(self.err(format!("cannot copy {from} onto itself")).into());
        }
        match &self.backend {
            Backend::Directory(d) => d.copy(from.as_ref(), to.as_ref()),
            Backend::S3(s) => s.copy(from, to),
        }
    }

    /// Streams bytes `start..end` of the object at `key` into `sink` in
    /// order. A range that ends past the object's end (or starts after it
    /// ends) is refused with the object's size, before anything reaches
    /// `sink`. The bytes are not verified: the object's hash covers the
    /// whole object only.
    pub fn download_range(
        &self,
        key: &ObjPath,
        start: u64,
        end: u64,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), TransferError> {
        if start > end {
            return Err(self
                .err(format!("{key}: range {start}..{end} ends before it starts"))
                .into());
        }
        let mut total = 0u64;
        let mut deliver = |chunk: &[u8]| -> Result<(), TransferError> {
            if let Some(t) = &self.throttle {
                t.pay(chunk.len() as u64);
            }
            total += chunk.len() as u64;
            if total > end - start {
                return Err(TransferError::Mismatch(format!(
                    "the store sent more than the {} bytes asked for",
                    end - start
                )));
            }
            sink(chunk).map_err(TransferError::Local)
        };
        match &self.backend {
            Backend::Directory(d) => d.download_range(key.as_ref(), start, end, &mut deliver)?,
            Backend::S3(s) => s.download_range(key, start, end, &mut deliver)?,
        }
        if total != end - start {
            return Err(TransferError::Mismatch(format!(
                "{key}: got {total} bytes of the {} asked for",
                end - start
            )));
        }
        Ok(())
    }

    fn err(&self, message: String) -> EndpointError {
        EndpointError::new(&self.name, message)
    }

    /// Removes the object at `key` and its metadata sidecar; a missing
    /// object is not an error.
    pub fn delete(&self, key: &ObjPath) -> Result<(), EndpointError> {
        match &self.backend {
            Backend::Directory(d) => d.delete(key.as_ref()),
            Backend::S3(s) => s.delete(key),
        }
    }

    /// Makes every object written so far durable: `syncfs` on a directory
    /// store (one call for a whole batch); nothing for S3, where a
    /// completed request is already durable.
    pub fn sync(&self) -> Result<(), EndpointError> {
        match &self.backend {
            Backend::Directory(d) => d.sync(),
            Backend::S3(_) => Ok(()),
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

/// The most keys one [`Endpoint::list`] page holds (S3's page).
pub const LIST_PAGE: usize = 1000;

/// One page of a listing.
#[derive(Debug)]
pub struct ListPage {
    /// The keys, in the store's order.
    pub keys: Vec<ObjPath>,
    /// The token of the next page, when there may be more.
    pub next: Option<String>,
}

/// A key made by [`key`] as an object path.
fn parse_key(key: &str) -> ObjPath {
    ObjPath::parse(key).expect("encoded keys are valid")
}
