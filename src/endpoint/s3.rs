//! The S3 store: objects in a bucket (any S3-compatible server), through
//! `object_store`, with ferry's metadata as the user metadata
//! `x-amz-meta-ferry`.
//!
//! A put commits the object and its metadata together: S3 takes the
//! metadata with a single put, and with a multipart upload's first request
//! (it appears with the object when the upload completes). S3 allows 2 KiB
//! of user metadata in all, so a larger document goes first to a sidecar
//! object `<key>#m` and the object carries a pointer to it (length and
//! hash); a crash between the two leaves only a sidecar no object names.
//! A killed multipart upload leaves parts S3 keeps (and bills) until it is
//! aborted; `ferry endpoint check` lists them with `ListMultipartUploads`,
//! which `object_store` does not offer, so that request and the abort are
//! signed here with its SigV4 signer.

use super::key::{self, SIDECAR_SUFFIX};
use super::meta::{MetaDoc, MetaError, ObjectMeta};
use super::throttle::Throttle;
use super::transfer::{EndpointError, PartPool, RemoteObject, TransferError, check_range, hash_beside, read_buffer};
use crate::config::endpoint::StoreConfig;
use crate::sys::Timestamp;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector};
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, GetResultPayload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use serde::Deserialize;
use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::runtime::Handle;

/// Files up to this size are read whole and sent in one request; larger
/// ones are streamed in parts of 8 MiB (larger for files over 80 GB).
pub const SMALL_OBJECT: u64 = 8 << 20;

/// The part size of streamed transfers (S3 allows at most 10,000 parts, so
/// files up to 80 GB; larger parts are chosen for larger files).
const PART_SIZE: u64 = 8 << 20;

/// The largest object S3 copies in one `CopyObject`; larger ones are
/// copied through ferry in parts.
const COPY_MAX: u64 = 5 << 30;

/// Parts in flight per streamed upload.
const PARTS_IN_FLIGHT: usize = 4;

/// The S3 user-metadata key that holds the metadata document.
const META_KEY: &str = "ferry";

/// S3 limits user metadata to 2 KiB in all (keys and values); ferry's one
/// value stays below this.
const META_LIMIT: usize = 2000;

/// The largest object a survey reads to learn whether it is a sidecar
/// (documents are far smaller).
const SIDECAR_MAX: u64 = 64 << 20;

/// HEAD requests in flight during a survey.
const SURVEY_HEADS: usize = 16;

/// An open S3 store.
pub(super) struct S3Store {
    name: String,
    store: Arc<AmazonS3>,
    rt: Handle,
    bucket_url: String,
    region: String,
    client: HttpClient,
    /// The agent's transfer budget, if `bandwidth` caps it.
    pub(super) throttle: Option<Arc<Throttle>>,
}

/// One object or upload a survey found, by key.
#[derive(Debug)]
pub(super) struct Found {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
    pub kind: FoundKind,
}

/// What a surveyed entry is.
#[derive(Debug)]
pub(super) enum FoundKind {
    /// An object: `None` when it carries no ferry metadata at all (not
    /// written by ferry; never removed), else its metadata as committed.
    Object(Option<Result<ObjectMeta, MetaError>>),
    /// A metadata sidecar; `orphan` when no object names it.
    Sidecar { orphan: bool },
    /// A multipart upload that was started and neither completed nor
    /// aborted.
    Upload { id: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploads {
    #[serde(default, rename = "Upload")]
    uploads: Vec<UploadXml>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: Option<String>,
}

/// One page of a `ListMultipartUploads` answer.
#[derive(Debug, PartialEq, Eq)]
pub struct UploadPage {
    /// Each unfinished upload: its key, its id, and when it started (the
    /// epoch when the answer does not say or says it unreadably).
    pub uploads: Vec<(String, String, SystemTime)>,
    /// The key and upload-id markers of the next page, when there is one.
    pub next: Option<(String, String)>,
}

/// Reads one page of a `ListMultipartUploads` answer (XML from the store).
pub fn parse_upload_list(xml: &[u8]) -> Result<UploadPage, quick_xml::DeError> {
    let list: ListUploads = quick_xml::de::from_reader(xml)?;
    let uploads = list
        .uploads
        .into_iter()
        .map(|u| {
            let started = u
                .initiated
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or(SystemTime::UNIX_EPOCH, |t| system_time(t.as_second()));
            (u.key, u.upload_id, started)
        })
        .collect();
    let next = match (list.is_truncated, list.next_key_marker, list.next_upload_id_marker) {
        (true, Some(k), Some(u)) => Some((k, u)),
        _ => None,
    };
    Ok(UploadPage { uploads, next })
}

impl S3Store {
    /// Connects to the bucket `cfg` names.
    pub fn open(name: &str, cfg: &StoreConfig, rt: Handle) -> Result<S3Store, EndpointError> {
        let StoreConfig::S3 {
            bucket,
            url,
            region,
            access_key_id,
            secret_access_key,
            allow_http,
        } = cfg
        else {
            unreachable!("S3Store::open is given S3 settings");
        };
        let err = |m: String| EndpointError::new(name, m);
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(300))
            .with_allow_http(*allow_http);
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(region)
            // Client options replace the whole set, so allow_http goes
            // after them.
            .with_client_options(options.clone())
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
        let store = Arc::new(b.build().map_err(|e| err(e.to_string()))?);
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let client = {
            let _rt = rt.enter();
            ReqwestConnector::default()
                .connect(&options)
                .map_err(|e| err(e.to_string()))?
        };
        Ok(S3Store {
            name: name.to_string(),
            store,
            rt,
            bucket_url: format!("{base}/{}", encode_key(bucket)),
            region: region.clone(),
            client,
            throttle: None,
        })
    }

    fn err(&self, message: impl std::fmt::Display) -> EndpointError {
        EndpointError::new(&self.name, message.to_string())
    }

    fn sidecar_key(key: &ObjPath) -> ObjPath {
        ObjPath::parse(format!("{key}{SIDECAR_SUFFIX}")).expect("a key plus `#m` is a key")
    }

    /// The metadata header of the object at `key`, and its size.
    async fn head_raw(
        &self,
        key: &ObjPath,
    ) -> Result<Option<(u64, Option<Result<MetaDoc, MetaError>>, SystemTime)>, EndpointError> {
        let opts = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.store.get_opts(key, opts).await {
            Ok(r) => {
                let doc = r
                    .attributes
                    .get(&Attribute::Metadata(META_KEY.into()))
                    .map(|v| MetaDoc::from_header(v.as_ref()));
                Ok(Some((r.meta.size, doc, SystemTime::from(r.meta.last_modified))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn sidecar(&self, key: &ObjPath) -> Result<Option<Bytes>, EndpointError> {
        match self.store.get(&Self::sidecar_key(key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.err(e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn resolve(
        &self,
        key: &ObjPath,
        doc: Option<Result<MetaDoc, MetaError>>,
    ) -> Result<Option<Result<ObjectMeta, MetaError>>, EndpointError> {
        Ok(match doc {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(MetaDoc::Inline(m))) => Some(Ok(m)),
            Some(Ok(ptr)) => Some(match self.sidecar(key).await? {
                Some(bytes) => ptr.resolve(&bytes),
                None => Err(MetaError::missing_sidecar()),
            }),
        })
    }

    /// What the bucket holds at `key`.
    pub fn head(&self, key: &ObjPath) -> Result<Option<RemoteObject>, EndpointError> {
        self.rt.block_on(async {
            let Some((size, doc, modified)) = self.head_raw(key).await? else {
                return Ok(None);
            };
            let meta = self.resolve(key, doc).await?;
            Ok(Some(RemoteObject { size, meta, modified }))
        })
    }

    /// The attributes carrying `meta`, writing its sidecar first when the
    /// document is over S3's limit.
    fn attributes(&self, key: &ObjPath, meta: &ObjectMeta) -> Result<Attributes, EndpointError> {
        let mut header = MetaDoc::Inline(meta.clone()).to_header();
        if header.len() > META_LIMIT {
            let doc = meta.to_json();
            let ptr = MetaDoc::pointer_to(doc.as_bytes());
            self.rt
                .block_on(self.store.put(&Self::sidecar_key(key), PutPayload::from(doc)))
                .map_err(|e| self.err(format!("writing the metadata sidecar of {key}: {e}")))?;
            header = ptr.to_header();
        }
        let mut attrs = Attributes::new();
        attrs.insert(Attribute::Metadata(META_KEY.into()), AttributeValue::from(header));
        Ok(attrs)
    }

    /// Copies the first `meta.size` bytes of `file` to `key` with their
    /// hash in `meta`.
    pub fn upload(&self, key: &ObjPath, file: &File, mut meta: ObjectMeta) -> Result<ObjectMeta, TransferError> {
        let pool = PartPool::throttled(self.throttle.clone());
        if meta.size <= SMALL_OBJECT {
            let data = pool.read_at(file, 0, meta.size)?;
            meta.hash = blake3::hash(&data);
            let attrs = self.attributes(key, &meta)?;
            let opts = PutOptions {
                attributes: attrs,
                ..PutOptions::default()
            };
            self.rt
                .block_on(self.store.put_opts(key, PutPayload::from_bytes(data), opts))
                .map_err(|e| self.err(e))?;
            return Ok(meta);
        }
        // S3 takes metadata when an upload starts, so hash first, then
        // send, and check that the sent bytes hash the same.
        meta.hash = super::hash_file(file, meta.size)?;
        let attrs = self.attributes(key, &meta)?;
        let sent = self.put_streaming(key, file, meta.size, attrs, &pool)?;
        if sent != meta.hash {
            // The object's metadata names a hash its bytes do not have: it
            // must not stay.
            let _ = self.delete(key);
            return Err(TransferError::Mismatch("file changed while it was being sent".into()));
        }
        Ok(meta)
    }

    fn put_streaming(
        &self,
        key: &ObjPath,
        file: &File,
        size: u64,
        attrs: Attributes,
        pool: &PartPool,
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
        let (result, hash) = hash_beside(PARTS_IN_FLIGHT, |to_hasher| {
            let mut done = 0u64;
            while done < size {
                let n = part.min(size - done);
                let chunk = pool.read_at(file, done, n)?;
                // The hasher only stops early if it panicked.
                let _ = to_hasher.send(chunk.clone());
                self.rt
                    .block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT))
                    .map_err(|e| self.err(e))?;
                writer.put(chunk);
                done += n;
            }
            Ok::<(), TransferError>(())
        });
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
    }

    /// Streams the object at `key` to `deliver` in order.
    pub fn download(
        &self,
        key: &ObjPath,
        deliver: &mut dyn FnMut(&[u8]) -> Result<(), TransferError>,
    ) -> Result<(), TransferError> {
        let result = self.rt.block_on(self.store.get(key)).map_err(|e| self.err(e))?;
        match result.payload {
            GetResultPayload::File(mut f, path) => {
                let mut buf = read_buffer(result.meta.size);
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
        Ok(())
    }

    /// The first `len` bytes of the object at `key`.
    pub fn read_head(&self, key: &ObjPath, len: u64) -> Result<Bytes, EndpointError> {
        self.rt
            .block_on(self.store.get_range(key, 0..len))
            .map_err(|e| self.err(e))
    }

    /// Copies the object at `from` to `to` with its metadata: the sidecar
    /// first when the object points to one (a crash in between leaves a
    /// sidecar no object names, which `ferry endpoint check` removes), then
    /// the object by S3's `CopyObject`, which keeps its user metadata and
    /// makes the copy appear whole or not at all. Objects over S3's 5 GiB
    /// limit for one `CopyObject` go through ferry as a multipart upload
    /// carrying the same metadata, hashed on the way and checked against it
    /// before the upload completes. A sidecar left at `to` by an object it
    /// replaced is removed.
    pub fn copy(&self, from: &ObjPath, to: &ObjPath) -> Result<(), TransferError> {
        let (size, doc, _) = self
            .rt
            .block_on(self.head_raw(from))?
            .ok_or_else(|| self.err(format!("no object at {from}")))?;
        let pointer = matches!(doc, Some(Ok(MetaDoc::Sidecar { .. })));
        if pointer {
            self.rt
                .block_on(self.store.copy(&Self::sidecar_key(from), &Self::sidecar_key(to)))
                .map_err(|e| self.err(format!("copying the metadata sidecar of {from}: {e}")))?;
        }
        if size <= COPY_MAX {
            self.rt
                .block_on(self.store.copy(from, to))
                .map_err(|e| self.err(format!("copying {from} to {to}: {e}")))?;
        } else {
            self.copy_streaming(from, to)?;
        }
        if !pointer {
            self.remove(&Self::sidecar_key(to))?;
        }
        Ok(())
    }

    /// Copies an object too big for one `CopyObject` by reading it and
    /// uploading it again in parts, with the same metadata header.
    fn copy_streaming(&self, from: &ObjPath, to: &ObjPath) -> Result<(), TransferError> {
        let _rt = self.rt.enter();
        let got = self.rt.block_on(self.store.get(from)).map_err(|e| self.err(e))?;
        let mut attrs = Attributes::new();
        let key = Attribute::Metadata(META_KEY.into());
        let header = got.attributes.get(&key).cloned();
        let expected = match header.as_ref().map(|h| MetaDoc::from_header(h.as_ref())) {
            Some(Ok(MetaDoc::Inline(m))) => Some(m.hash),
            Some(Ok(ptr)) => match self.rt.block_on(self.sidecar(from))? {
                Some(bytes) => ptr.resolve(&bytes).ok().map(|m| m.hash),
                None => None,
            },
            _ => None,
        };
        if let Some(h) = header {
            attrs.insert(key, h);
        }
        let opts = PutMultipartOptions {
            attributes: attrs,
            ..PutMultipartOptions::default()
        };
        let upload = self
            .rt
            .block_on(self.store.put_multipart_opts(to, opts))
            .map_err(|e| self.err(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size(got.meta.size) as usize);
        let mut hasher = blake3::Hasher::new();
        let mut stream = got.into_stream();
        let sent = (|| {
            while let Some(chunk) = self.rt.block_on(stream.next()) {
                let chunk = chunk.map_err(|e| self.err(e))?;
                hasher.update(&chunk);
                self.rt
                    .block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT))
                    .map_err(|e| self.err(e))?;
                writer.write(&chunk);
            }
            match expected {
                Some(want) if want != hasher.finalize() => Err(TransferError::Mismatch(format!(
                    "object at {from} does not match its metadata (blake3 {}, recorded {})",
                    hasher.finalize().to_hex(),
                    want.to_hex()
                ))),
                _ => Ok(()),
            }
        })();
        match sent {
            Ok(()) => {
                self.rt.block_on(writer.finish()).map_err(|e| self.err(e))?;
                Ok(())
            }
            Err(e) => {
                // Best effort: an abandoned upload leaves nothing visible.
                let _ = self.rt.block_on(writer.abort());
                Err(e)
            }
        }
    }

    /// Streams bytes `start..end` of the object at `key` to `deliver` in
    /// order (one ranged GET); a range past the object's end is refused
    /// before anything is read.
    pub fn download_range(
        &self,
        key: &ObjPath,
        start: u64,
        end: u64,
        deliver: &mut dyn FnMut(&[u8]) -> Result<(), TransferError>,
    ) -> Result<(), TransferError> {
        let (size, _, _) = self
            .rt
            .block_on(self.head_raw(key))?
            .ok_or_else(|| self.err(format!("no object at {key}")))?;
        check_range(start, end, size).map_err(|m| self.err(format!("{key}: {m}")))?;
        if start == end {
            return Ok(());
        }
        let opts = GetOptions {
            range: Some((start..end).into()),
            ..GetOptions::default()
        };
        let got = self
            .rt
            .block_on(self.store.get_opts(key, opts))
            .map_err(|e| self.err(e))?;
        if got.range != (start..end) {
            return Err(self
                .err(format!(
                    "{key}: asked for bytes {start}..{end}, the store answered {:?} (the object changed?)",
                    got.range
                ))
                .into());
        }
        let mut stream = got.into_stream();
        while let Some(chunk) = self.rt.block_on(stream.next()) {
            let chunk: Bytes = chunk.map_err(|e| self.err(e))?;
            deliver(&chunk)?;
        }
        Ok(())
    }

    /// Removes the object at `key`, then its sidecar; absent is not an
    /// error.
    pub fn delete(&self, key: &ObjPath) -> Result<(), EndpointError> {
        self.remove(key)?;
        self.remove(&Self::sidecar_key(key))
    }

    /// Removes one key.
    pub fn remove(&self, key: &ObjPath) -> Result<(), EndpointError> {
        match self.rt.block_on(self.store.delete(key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Every object under `prefix` and every unfinished multipart upload,
    /// classified.
    /// Up to `limit` object keys under `prefix` after `after`, in key order
    /// (ListObjectsV2 with a start-after, one request for up to 1,000),
    /// metadata sidecars left out.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, EndpointError> {
        self.rt.block_on(async {
            let prefix = prefix.trim_end_matches('/');
            let prefix_path = (!prefix.is_empty())
                .then(|| ObjPath::parse(prefix))
                .transpose()
                .map_err(|e| self.err(e))?;
            let stream = match after {
                Some(a) => {
                    let offset = ObjPath::parse(a).map_err(|e| self.err(e))?;
                    self.store.list_with_offset(prefix_path.as_ref(), &offset)
                }
                None => self.store.list(prefix_path.as_ref()),
            };
            stream
                .map_err(|e| self.err(e))
                .try_filter(|o| futures::future::ready(!key::is_sidecar(o.location.as_ref())))
                .map_ok(|o| o.location.as_ref().to_string())
                .take(limit)
                .try_collect()
                .await
        })
    }

    pub fn survey(&self, prefix: &str, found: &mut Vec<Found>, errors: &mut Vec<EndpointError>) {
        let result = self.rt.block_on(async {
            let prefix_path = (!prefix.is_empty())
                .then(|| ObjPath::parse(prefix))
                .transpose()
                .map_err(|e| self.err(e))?;
            let listed: Vec<object_store::ObjectMeta> = self
                .store
                .list(prefix_path.as_ref())
                .try_collect()
                .await
                .map_err(|e| self.err(e))?;
            let keys: std::collections::HashSet<&str> = listed.iter().map(|o| o.location.as_ref()).collect();
            let heads = futures::stream::iter(listed.iter().filter(|o| !key::is_sidecar(o.location.as_ref())))
                .map(|o| async move {
                    let raw = self.head_raw(&o.location).await?;
                    let doc = raw.and_then(|(_, d, _)| d);
                    let is_pointer = matches!(doc, Some(Ok(MetaDoc::Sidecar { .. })));
                    let meta = self.resolve(&o.location, doc).await?;
                    Ok::<_, EndpointError>((o, is_pointer, meta))
                })
                .buffer_unordered(SURVEY_HEADS)
                .collect::<Vec<_>>()
                .await;
            let mut pointers = std::collections::HashSet::new();
            for r in heads {
                match r {
                    Ok((o, is_pointer, meta)) => {
                        if is_pointer && matches!(meta, Some(Ok(_))) {
                            pointers.insert(o.location.as_ref().to_string());
                        }
                        found.push(Found {
                            key: o.location.to_string(),
                            size: o.size,
                            modified: system_time(o.last_modified.timestamp()),
                            kind: FoundKind::Object(meta),
                        });
                    }
                    Err(e) => errors.push(e),
                }
            }
            for o in listed.iter().filter(|o| key::is_sidecar(o.location.as_ref())) {
                let object = o.location.as_ref().strip_suffix(SIDECAR_SUFFIX).unwrap_or_default();
                let orphan = !keys.contains(object) || !pointers.contains(object);
                // A bucket may be shared: an object named like a sidecar is
                // ferry's only if it holds a metadata document.
                let kind = if !orphan || (o.size <= SIDECAR_MAX && self.holds_document(&o.location).await?) {
                    FoundKind::Sidecar { orphan }
                } else {
                    FoundKind::Object(None)
                };
                found.push(Found {
                    key: o.location.to_string(),
                    size: o.size,
                    modified: system_time(o.last_modified.timestamp()),
                    kind,
                });
            }
            // Uploads are listed by a plain string prefix: `data` would
            // also match `database/…`.
            let upload_prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            self.list_uploads(&upload_prefix, found).await
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }

    /// Whether the object at `key` is a metadata document ferry wrote.
    async fn holds_document(&self, key: &ObjPath) -> Result<bool, EndpointError> {
        match self.store.get(key).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.err(e))?;
                Ok(ObjectMeta::from_json(&bytes).is_ok())
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Signs and sends one request to the bucket.
    async fn request(&self, method: http::Method, url: &str) -> Result<Bytes, EndpointError> {
        let cred = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| self.err(e))?;
        let mut req = HttpRequest::new(HttpRequestBody::empty());
        *req.method_mut() = method.clone();
        *req.uri_mut() = url.parse().map_err(|e| self.err(format!("{url}: {e}")))?;
        AwsAuthorizer::new(&cred, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| self.err(e))?;
        let resp = self
            .client
            .execute(req)
            .await
            .map_err(|e| self.err(format!("{method} {url}: {e}")))?;
        let status = resp.status();
        let body = resp.into_body().bytes().await.map_err(|e| self.err(e))?;
        if !status.is_success() {
            return Err(self.err(format!(
                "{method} {url}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            )));
        }
        Ok(body)
    }

    async fn list_uploads(&self, prefix: &str, found: &mut Vec<Found>) -> Result<(), EndpointError> {
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = format!("{}?uploads=&prefix={}", self.bucket_url, encode_query(prefix));
            if let Some((k, u)) = &markers {
                url.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode_query(k),
                    encode_query(u)
                ));
            }
            let body = self.request(http::Method::GET, &url).await?;
            let page = parse_upload_list(&body).map_err(|e| self.err(format!("ListMultipartUploads answer: {e}")))?;
            for (key, id, modified) in page.uploads {
                found.push(Found {
                    key,
                    size: 0,
                    modified,
                    kind: FoundKind::Upload { id },
                });
            }
            match page.next {
                Some(m) => markers = Some(m),
                None => return Ok(()),
            }
        }
    }

    /// Aborts the multipart upload `id` of `key`, freeing its parts.
    pub fn abort_upload(&self, key: &str, id: &str) -> Result<(), EndpointError> {
        let url = format!("{}/{}?uploadId={}", self.bucket_url, encode_key(key), encode_query(id));
        self.rt.block_on(self.request(http::Method::DELETE, &url)).map(drop)
    }
}

/// Whole seconds since the epoch (a store's dates; none before 1970).
fn system_time(secs: i64) -> SystemTime {
    Timestamp {
        sec: secs.max(0),
        nsec: 0,
    }
    .system_time()
}

/// A key for a URL path: every byte but unreserved ones and `/` as `%XX`
/// (what SigV4 signs for S3).
fn encode_key(key: &str) -> String {
    encode(key, true)
}

/// A query value: as [`encode_key`], `/` included.
fn encode_query(value: &str) -> String {
    encode(value, false)
}

fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A part size for `size` bytes that keeps S3's 10,000-part limit.
fn part_size(size: u64) -> u64 {
    PART_SIZE.max(size.div_ceil(9_000).next_multiple_of(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_signing() {
        assert_eq!(encode_key("a b/%25#m/café"), "a%20b/%2525%23m/caf%C3%A9");
        assert_eq!(encode_query("a/b"), "a%2Fb");
    }

    #[test]
    fn upload_lists_parse() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>k1</Key><UploadId>u1</UploadId><Initiated>2026-12-04T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>k2</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let l: ListUploads = quick_xml::de::from_reader(&xml[..]).unwrap();
        assert_eq!(l.uploads.len(), 2);
        assert_eq!(
            (l.uploads[0].key.as_str(), l.uploads[0].upload_id.as_str()),
            ("k1", "u1")
        );
        assert!(l.is_truncated);
        assert_eq!(l.next_key_marker.as_deref(), Some("k2"));
        let empty = parse_upload_list(
            &b"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"[..],
        )
        .unwrap();
        assert_eq!(
            empty,
            UploadPage {
                uploads: Vec::new(),
                next: None
            }
        );
        assert!(parse_upload_list(b"<ListMultipartUploadsResult><Upload><Key>k</Key>").is_err());
    }
}
