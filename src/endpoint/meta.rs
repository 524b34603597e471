//! The metadata stored with every object: what a recall or a reverse stub
//! needs to rebuild the entry with no local copy (size, BLAKE3 hash, mode,
//! owner, times and the entry's xattrs). Besides regular files, an object
//! can record a directory or a symbolic link ([`EntryKind`]): a
//! metadata-only object with no content, so a synced tree keeps its
//! directories' metadata and its links.
//!
//! A file with several names (hard links) records its link identity
//! ([`LinkId`]), and each name whose object does not hold the data records
//! a [`EntryKind::HardLink`] to the object that does, so the destination
//! can make one inode with all the names.
//!
//! **Versions.** A file's document is version 1, as every ferry wrote it;
//! a document that records another kind of entry or a link identity is
//! version 2, so a ferry that only knows plain files refuses it
//! (`deny_unknown_fields` and the version both say so) instead of building
//! a lone file from it.
//!
//! It travels as one compact JSON document: in S3 as the user metadata
//! `x-amz-meta-ferry` (base64, because header values must be ASCII), in a
//! directory target as an xattr on the object file. A document too big for
//! that place (S3's 2 KiB of user metadata, ext4's one block for all of an
//! inode's xattrs) goes into a sidecar beside the object, and the object
//! carries a [`MetaDoc::Sidecar`] pointer naming the sidecar's length and
//! hash instead, so the object is committed with its metadata in one step
//! either way.

use crate::sys::Timestamp;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The version of a file's document (and of a sidecar pointer).
const VERSION: u32 = 1;

/// The version of a document recording a directory or a symbolic link.
const VERSION_ENTRIES: u32 = 2;

/// What kind of filesystem entry an object records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file: the object's content is the file's data.
    #[default]
    File,
    /// A directory: the object has no content, only the metadata.
    Directory,
    /// A symbolic link to this target (raw bytes); the object has no
    /// content.
    Symlink(Vec<u8>),
    /// Another name of a file with several names (a hard link) whose data
    /// is the object at this key (on the same endpoint); the object has no
    /// content, and its `hash` is the content's the data object must have.
    HardLink(String),
}

/// Which source inode a file with several names (hard links) was: names
/// with the same identity are one file and must arrive as one inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkId {
    /// The source filesystem's device, the inode number and its generation
    /// (`dev:ino:generation`, hex), so a reused inode number never matches.
    pub id: String,
    /// How many names the file had on the source.
    pub nlink: u64,
}

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
    /// The file's path relative to the endpoint's root, recorded when its
    /// key holds a hashed name ([`super::key::Key::source`]).
    pub path: Option<Vec<u8>>,
    /// What the object records: a file (its data) or a directory or a
    /// symbolic link (metadata only).
    pub kind: EntryKind,
    /// The file's link identity, when it had several names.
    pub link: Option<LinkId>,
}

/// What an object carries as its metadata: the document itself, or a
/// pointer to a sidecar that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaDoc {
    /// The whole document.
    Inline(ObjectMeta),
    /// The document is in the object's sidecar, `len` bytes whose BLAKE3
    /// hash is `hash`.
    Sidecar {
        /// The sidecar's length.
        len: u64,
        /// The hash of the sidecar's bytes.
        hash: blake3::Hash,
    },
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// `dir` or `symlink` (version 2); absent for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// A symbolic link's target, or a hard link's data key, base64
    /// (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// A hard-linked file's identity and source link count (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pointer {
    v: u32,
    sidecar: String,
    len: u64,
}

/// Why stored metadata could not be read.
#[derive(Debug, thiserror::Error)]
#[error("object metadata is unreadable: {0}")]
pub struct MetaError(String);

impl ObjectMeta {
    /// The JSON document.
    pub fn to_json(&self) -> String {
        let (kind, target) = match &self.kind {
            EntryKind::File => (None, None),
            EntryKind::Directory => (Some("dir".to_string()), None),
            EntryKind::Symlink(t) => (Some("symlink".to_string()), Some(B64.encode(t))),
            EntryKind::HardLink(k) => (Some("hardlink".to_string()), Some(B64.encode(k))),
        };
        let link = self.link.as_ref().map(|l| (l.id.clone(), l.nlink));
        let doc = Doc {
            v: if kind.is_some() || link.is_some() {
                VERSION_ENTRIES
            } else {
                VERSION
            },
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
            path: self.path.as_ref().map(|p| B64.encode(p)),
            kind,
            target,
            link,
        };
        serde_json::to_string(&doc).expect("metadata serializes")
    }

    /// Reads a JSON document written by [`ObjectMeta::to_json`].
    pub fn from_json(text: &[u8]) -> Result<ObjectMeta, MetaError> {
        let doc: Doc = serde_json::from_slice(text).map_err(|e| MetaError(e.to_string()))?;
        if doc.v != VERSION && doc.v != VERSION_ENTRIES {
            return Err(MetaError(format!(
                "version {} (this ferry reads {VERSION} and {VERSION_ENTRIES})",
                doc.v
            )));
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
        let path = doc.path.as_deref().map(b64).transpose()?;
        let target = doc.target.as_deref().map(b64).transpose()?;
        let linked = doc.link.is_some();
        let kind = match (doc.v, doc.kind.as_deref(), target) {
            (VERSION, None, None) if !linked => EntryKind::File,
            (VERSION_ENTRIES, None, None) if linked => EntryKind::File,
            (VERSION_ENTRIES, Some("dir"), None) => EntryKind::Directory,
            (VERSION_ENTRIES, Some("symlink"), Some(t)) => EntryKind::Symlink(t),
            (VERSION_ENTRIES, Some("hardlink"), Some(k)) if linked => EntryKind::HardLink(
                String::from_utf8(k).map_err(|_| MetaError("hard link's data key is not UTF-8".into()))?,
            ),
            (v, kind, _) => {
                return Err(MetaError(format!("version {v} document with entry kind {kind:?}")));
            }
        };
        let link = doc.link.map(|(id, nlink)| LinkId { id, nlink });
        Ok(ObjectMeta {
            size: doc.size,
            hash,
            mode: doc.mode,
            uid: doc.uid,
            gid: doc.gid,
            mtime: ts(doc.mtime, "mtime")?,
            atime: ts(doc.atime, "atime")?,
            xattrs,
            path,
            kind,
            link,
        })
    }
}

impl MetaDoc {
    /// The pointer to a sidecar holding `doc`.
    pub fn pointer_to(doc: &[u8]) -> MetaDoc {
        MetaDoc::Sidecar {
            len: doc.len() as u64,
            hash: blake3::hash(doc),
        }
    }

    /// The JSON text of this document or pointer.
    pub fn to_json(&self) -> String {
        match self {
            MetaDoc::Inline(m) => m.to_json(),
            MetaDoc::Sidecar { len, hash } => serde_json::to_string(&Pointer {
                v: VERSION,
                sidecar: hash.to_hex().to_string(),
                len: *len,
            })
            .expect("pointer serializes"),
        }
    }

    /// Reads a document or a pointer.
    pub fn from_json(text: &[u8]) -> Result<MetaDoc, MetaError> {
        match serde_json::from_slice::<Pointer>(text) {
            Ok(p) if p.v == VERSION => Ok(MetaDoc::Sidecar {
                len: p.len,
                hash: blake3::Hash::from_hex(&p.sidecar).map_err(|e| MetaError(format!("sidecar hash: {e}")))?,
            }),
            Ok(p) => Err(MetaError(format!("version {} (this ferry reads {VERSION})", p.v))),
            Err(_) => ObjectMeta::from_json(text).map(MetaDoc::Inline),
        }
    }

    /// The document or pointer as an ASCII header value (base64 of the JSON).
    pub fn to_header(&self) -> String {
        B64.encode(self.to_json())
    }

    /// Reads a header value written by [`MetaDoc::to_header`].
    pub fn from_header(value: &str) -> Result<MetaDoc, MetaError> {
        let json = B64
            .decode(value.trim())
            .map_err(|e| MetaError(format!("base64: {e}")))?;
        MetaDoc::from_json(&json)
    }

    /// The document a sidecar holds, checked against this pointer; `self`
    /// must be a pointer.
    pub fn resolve(&self, sidecar: &[u8]) -> Result<ObjectMeta, MetaError> {
        match self {
            MetaDoc::Inline(m) => Ok(m.clone()),
            MetaDoc::Sidecar { len, hash } => {
                if sidecar.len() as u64 != *len || blake3::hash(sidecar) != *hash {
                    return Err(MetaError(format!(
                        "the metadata sidecar is not the one the object names ({} bytes, expected {len})",
                        sidecar.len()
                    )));
                }
                ObjectMeta::from_json(sidecar)
            }
        }
    }
}

impl MetaError {
    /// A metadata sidecar the object names is missing.
    pub fn missing_sidecar() -> MetaError {
        MetaError("the metadata sidecar the object names is missing".into())
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
            path: Some(b"dir/\xff\n".to_vec()),
            kind: EntryKind::File,
            link: None,
        }
    }

    #[test]
    fn documents_written_before_entry_kinds_still_load() {
        // A document as ferry wrote it before directories and links
        // travelled (no kind, version 1).
        let old = format!(
            r#"{{"v":1,"size":5,"blake3":"{}","mode":33184,"uid":1000,"gid":100,"mtime":[-5,999999999],"atime":[1700000000,1],"xattrs":[["dXNlci5h/w==","AAFiaW4="]],"path":"ZGlyL/8K"}}"#,
            blake3::hash(b"hello").to_hex()
        );
        assert_eq!(ObjectMeta::from_json(old.as_bytes()).unwrap(), sample());
        // A file's document is still version 1, byte for byte.
        assert_eq!(sample().to_json(), old);
    }

    #[test]
    fn directories_and_links_round_trip_as_version_2() {
        for kind in [EntryKind::Directory, EntryKind::Symlink(b"../t\xff\n".to_vec())] {
            let m = ObjectMeta {
                size: 0,
                hash: blake3::hash(b""),
                kind,
                ..sample()
            };
            let json = m.to_json();
            assert!(json.starts_with(r#"{"v":2,"#), "{json}");
            assert_eq!(ObjectMeta::from_json(json.as_bytes()).unwrap(), m);
            // A version 1 document never carries a kind.
            assert!(ObjectMeta::from_json(json.replace(r#""v":2"#, r#""v":1"#).as_bytes()).is_err());
        }
        let link = ObjectMeta {
            kind: EntryKind::Symlink(b"x".to_vec()),
            ..sample()
        }
        .to_json();
        for bad in [link.replace("symlink", "fifo"), link.replace(r#","target":"eA==""#, "")] {
            assert!(ObjectMeta::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn hard_links_record_their_identity_as_version_2() {
        let id = LinkId {
            id: "803:1f:2a".into(),
            nlink: 3,
        };
        for kind in [EntryKind::File, EntryKind::HardLink("a/first".into())] {
            let m = ObjectMeta {
                kind,
                link: Some(id.clone()),
                ..sample()
            };
            let json = m.to_json();
            assert!(json.starts_with(r#"{"v":2,"#), "{json}");
            assert_eq!(ObjectMeta::from_json(json.as_bytes()).unwrap(), m);
        }
        // A hard link without an identity, or a version 1 document with
        // one, is refused.
        let linked = ObjectMeta {
            link: Some(id),
            ..sample()
        }
        .to_json();
        assert!(ObjectMeta::from_json(linked.replace(r#""v":2"#, r#""v":1"#).as_bytes()).is_err());
        let record = ObjectMeta {
            kind: EntryKind::HardLink("k".into()),
            ..sample()
        }
        .to_json();
        assert!(ObjectMeta::from_json(record.as_bytes()).is_err());
    }

    #[test]
    fn round_trips_through_json_and_header() {
        let m = sample();
        assert_eq!(ObjectMeta::from_json(m.to_json().as_bytes()).unwrap(), m);
        let doc = MetaDoc::Inline(m.clone());
        let h = doc.to_header();
        assert!(h.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(MetaDoc::from_header(&h).unwrap(), doc);
        let without_path = ObjectMeta { path: None, ..m };
        assert!(!without_path.to_json().contains("path"));
    }

    #[test]
    fn pointers_resolve_only_their_own_sidecar() {
        let json = sample().to_json();
        let ptr = MetaDoc::pointer_to(json.as_bytes());
        let back = MetaDoc::from_json(ptr.to_json().as_bytes()).unwrap();
        assert_eq!(back, ptr);
        assert!(ptr.to_json().len() < 120, "a pointer is small: {}", ptr.to_json());
        assert_eq!(back.resolve(json.as_bytes()).unwrap(), sample());
        let other = json.replace("1000", "1001");
        assert!(back.resolve(other.as_bytes()).is_err());
        assert!(back.resolve(&json.as_bytes()[1..]).is_err());
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
