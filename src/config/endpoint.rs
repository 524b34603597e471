//! `[Endpoint <name>]` sections: where a storage endpoint keeps its
//! objects (a local or NFS directory, or an S3-compatible store) and which
//! local directory maps to its keys. `crate::endpoint` opens them.

use super::ini::{ConfigError, Section, parse_bool};
use object_store::path::Path as ObjPath;
use std::fmt;
use std::path::PathBuf;

/// The keys an `[Endpoint <name>]` section may hold, for error messages.
pub const ENDPOINT_KEYS: &str =
    "type, path, root, prefix, bucket, url, region, access_key_id, secret_access_key, allow_http";

/// The longest key prefix, so that keys under it keep room for names
/// (`crate::endpoint::key` bounds whole keys to 989 bytes).
pub const PREFIX_MAX: usize = 512;

/// A storage target as configured.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// The endpoint's name (what `--endpoint` and location xattrs use).
    pub name: String,
    /// Where objects live.
    pub store: StoreConfig,
    /// The local directory whose contents map to keys (`root`, default `/`).
    pub root: Vec<u8>,
    /// The key prefix inside the store (`prefix`, default none).
    pub prefix: String,
}

/// The kind of store behind an endpoint.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// A local or NFS directory (`type = directory`, `path = ...`).
    Directory {
        /// The directory objects are written under.
        path: PathBuf,
    },
    /// An S3-compatible store (`type = s3`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The service URL (`url`); AWS when absent.
        url: Option<String>,
        /// The region (`region`), default `us-east-1`.
        region: String,
        /// Access key; the environment's `AWS_ACCESS_KEY_ID` when absent.
        access_key_id: Option<String>,
        /// Secret key; the environment's `AWS_SECRET_ACCESS_KEY` when absent.
        secret_access_key: Option<Secret>,
        /// Plain HTTP allowed (`allow_http`; implied by an `http://` url).
        allow_http: bool,
    },
}

impl StoreConfig {
    /// Whether `other` names the same store (directory, or bucket at the
    /// same service), so endpoints on both share its objects.
    pub fn same_place(&self, other: &StoreConfig) -> bool {
        match (self, other) {
            (StoreConfig::Directory { path: a }, StoreConfig::Directory { path: b }) => {
                a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
            }
            (StoreConfig::S3 { bucket: a, url: ua, .. }, StoreConfig::S3 { bucket: b, url: ub, .. }) => {
                a == b
                    && ua.as_deref().map(|u| u.trim_end_matches('/')) == ub.as_deref().map(|u| u.trim_end_matches('/'))
            }
            _ => false,
        }
    }
}

/// A credential that never appears in debug output or logs.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl EndpointConfig {
    /// Reads an `[Endpoint <name>]` section.
    pub fn from_section(name: &str, s: &mut Section<'_>) -> Result<EndpointConfig, ConfigError> {
        let kind = s.require("type", "an endpoint")?;
        let store = match kind.text.as_str() {
            "directory" => {
                let path = s.require("path", "a directory endpoint")?;
                if !path.text.starts_with('/') {
                    return Err(s.error(path.line, "`path` must be absolute"));
                }
                StoreConfig::Directory {
                    path: PathBuf::from(path.text),
                }
            }
            "s3" => {
                let bucket = s.require("bucket", "an s3 endpoint")?.text;
                let url = s.take("url").map(|v| v.text);
                let allow_http = s.take_parsed("allow_http", parse_bool)?.unwrap_or(false)
                    || url.as_deref().is_some_and(|u| u.starts_with("http://"));
                StoreConfig::S3 {
                    bucket,
                    url,
                    region: s.take("region").map_or_else(|| "us-east-1".into(), |v| v.text),
                    access_key_id: s.take("access_key_id").map(|v| v.text),
                    secret_access_key: s.take("secret_access_key").map(|v| Secret(v.text)),
                    allow_http,
                }
            }
            other => {
                return Err(s.error(kind.line, format!("`type`: expected directory or s3, found {other:?}")));
            }
        };
        let root = match s.take("root") {
            None => b"/".to_vec(),
            Some(v) if v.text.starts_with('/') => {
                let t = v.text.trim_end_matches('/');
                if t.is_empty() {
                    b"/".to_vec()
                } else {
                    t.as_bytes().to_vec()
                }
            }
            Some(v) => return Err(s.error(v.line, "`root` must be an absolute path")),
        };
        let (prefix, line) = s.take("prefix").map_or((String::new(), s.line), |v| {
            (v.text.trim_matches('/').to_string(), v.line)
        });
        if !prefix.is_empty() && ObjPath::parse(&prefix).is_err() {
            return Err(s.error(line, format!("`prefix` {prefix:?} is not a valid object key")));
        }
        if prefix.len() > PREFIX_MAX || prefix.contains('#') {
            return Err(s.error(
                line,
                format!("`prefix` must be at most {PREFIX_MAX} bytes without `#` (ferry's own names use it)"),
            ));
        }
        Ok(EndpointConfig {
            name: name.to_string(),
            store,
            root,
            prefix,
        })
    }
}
