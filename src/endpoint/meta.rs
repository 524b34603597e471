//! The metadata stored with every object: what a recall or a reverse stub
//! needs to rebuild the file with no local copy (size, BLAKE3 hash, mode,
//! owner, times and the file's user xattrs).
//!
//! It travels as one compact JSON document: in S3 as the user metadata
//! `x-amz-meta-ferry` (base64, because header values must be ASCII), in a
//! directory target as an xattr on the object file.

use crate::sys::Timestamp;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The current metadata document version.
const VERSION: u32 = 1;

/// The metadata of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Content length in bytes.
    pub size: u64,
    /// BLAKE3 hash of the whole content.
    pub hash: blake3::Hash,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// The file's `user.*` xattrs other than ferry's own, as (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    v: u32,
    size: u64,
    blake3: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    atime: (i64, u32),
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<(String, String)>,
}

/// Why stored metadata could not be read.
#[derive(Debug, thiserror::Error)]
#[error("object metadata is unreadable: {0}")]
pub struct MetaError(String);

impl ObjectMeta {
    /// The JSON document.
    pub fn to_json(&self) -> String {
        let doc = Doc {
            v: VERSION,
            size: self.size,
            blake3: self.hash.to_hex().to_string(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: (self.mtime.sec, self.mtime.nsec),
            atime: (self.atime.sec, self.atime.nsec),
            xattrs: self
                .xattrs
                .iter()
                .map(|(n, v)| (B64.encode(n), B64.encode(v)))
                .collect(),
        };
        serde_json::to_string(&doc).expect("metadata serializes")
    }

    /// Reads a JSON document written by [`ObjectMeta::to_json`].
    pub fn from_json(text: &[u8]) -> Result<ObjectMeta, MetaError> {
        let doc: Doc = serde_json::from_slice(text).map_err(|e| MetaError(e.to_string()))?;
        if doc.v != VERSION {
            return Err(MetaError(format!("version {} (this ferry reads {VERSION})", doc.v)));
        }
        let hash = blake3::Hash::from_hex(&doc.blake3).map_err(|e| MetaError(format!("blake3: {e}")))?;
        let ts = |(sec, nsec): (i64, u32), what: &str| {
            if nsec < 1_000_000_000 {
                Ok(Timestamp { sec, nsec })
            } else {
                Err(MetaError(format!("{what}: nanoseconds out of range")))
            }
        };
        let b64 = |s: &str| B64.decode(s).map_err(|e| MetaError(format!("xattr: {e}")));
        let xattrs = doc
            .xattrs
            .iter()
            .map(|(n, v)| Ok((b64(n)?, b64(v)?)))
            .collect::<Result<_, MetaError>>()?;
        Ok(ObjectMeta {
            size: doc.size,
            hash,
            mode: doc.mode,
            uid: doc.uid,
            gid: doc.gid,
            mtime: ts(doc.mtime, "mtime")?,
            atime: ts(doc.atime, "atime")?,
            xattrs,
        })
    }

    /// The document as an ASCII header value (base64 of the JSON).
    pub fn to_header(&self) -> String {
        B64.encode(self.to_json())
    }

    /// Reads a header value written by [`ObjectMeta::to_header`].
    pub fn from_header(value: &str) -> Result<ObjectMeta, MetaError> {
        let json = B64
            .decode(value.trim())
            .map_err(|e| MetaError(format!("base64: {e}")))?;
        ObjectMeta::from_json(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ObjectMeta {
        ObjectMeta {
            size: 5,
            hash: blake3::hash(b"hello"),
            mode: 0o100640,
            uid: 1000,
            gid: 100,
            mtime: Timestamp {
                sec: -5,
                nsec: 999_999_999,
            },
            atime: Timestamp {
                sec: 1_700_000_000,
                nsec: 1,
            },
            xattrs: vec![(b"user.a\xff".to_vec(), b"\0\x01bin".to_vec())],
        }
    }

    #[test]
    fn round_trips_through_json_and_header() {
        let m = sample();
        assert_eq!(ObjectMeta::from_json(m.to_json().as_bytes()).unwrap(), m);
        let h = m.to_header();
        assert!(h.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(ObjectMeta::from_header(&h).unwrap(), m);
    }

    #[test]
    fn rejects_damage() {
        let json = sample().to_json();
        for bad in [
            json.replace("\"v\":1", "\"v\":2"),
            json.replace("999999999", "1000000000"),
            json.replace("\"blake3\":\"", "\"blake3\":\"zz"),
            json.replace('}', ",\"extra\":1}"),
            json[..json.len() - 1].to_string(),
        ] {
            assert!(ObjectMeta::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
