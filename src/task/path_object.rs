//! Path objects: the `{"path": ..., "size": ..., ...}` dicts that discovery
//! emits and every task takes as input.

use super::surrogate::{self, DecodeError};
use crate::config::PathMap;
use crate::entry::{Entry, Fields, write_timestamp};
use serde_json::value::RawValue;
use std::fmt;

/// A path object read from outside (a task's `paths`, a JSON line on stdin).
///
/// `path` and `source` are decoded to raw bytes; every other key is kept as
/// the JSON text it arrived as, so passing an object on loses nothing.
#[derive(Clone, Debug)]
pub struct PathObject {
    /// The path, as raw bytes.
    pub path: Vec<u8>,
    /// The old path of a moved entry (move tasks), as raw bytes.
    pub source: Option<Vec<u8>>,
    /// Every other key, in order, with its undecoded JSON value.
    pub extra: Vec<(String, Box<RawValue>)>,
    /// `path` and `source` as they arrived, when [`PathObject::localise`]
    /// mapped them to this site's paths: what every output names.
    wire: Option<Box<WireNames>>,
}

/// A path object's `path` and `source` as they arrived on the wire.
type WireNames = (Vec<u8>, Option<Vec<u8>>);

/// Why a path object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathObjectError {
    /// Not valid JSON, or neither a string nor an object.
    #[error("invalid path object: {0}")]
    Json(String),
    /// An object without a `"path"` key.
    #[error("path object has no \"path\" key")]
    MissingPath,
    /// `path` or `source` is not a string.
    #[error("\"{0}\" must be a string")]
    NotAString(&'static str),
    /// `path` or `source` holds escapes that stand for no bytes.
    #[error("\"{0}\": {1}")]
    BadPath(&'static str, DecodeError),
    /// An empty path, or one with a NUL byte, which no Linux path can hold.
    #[error("\"{0}\" is empty or contains a NUL byte")]
    InvalidPath(&'static str),
}

impl PathObject {
    /// A path object with only a path.
    pub fn new(path: Vec<u8>) -> Self {
        PathObject {
            path,
            source: None,
            extra: Vec::new(),
            wire: None,
        }
    }

    /// Parses one JSON document: either a bare string (the API accepts plain
    /// paths) or an object with at least `"path"`.
    pub fn parse(json: &[u8]) -> Result<PathObject, PathObjectError> {
        let raw: &RawValue = serde_json::from_slice(json).map_err(|e| PathObjectError::Json(e.to_string()))?;
        let text = raw.get();
        if text.starts_with('"') {
            return Ok(PathObject::new(decode_path("path", raw)?));
        }
        if !text.starts_with('{') {
            return Err(PathObjectError::Json("expected a string or an object".into()));
        }
        let map: Vec<(String, Box<RawValue>)> = serde_json::from_str::<OrderedMap>(text)
            .map_err(|e| PathObjectError::Json(e.to_string()))?
            .0;
        let mut path = None;
        let mut source = None;
        let mut extra = Vec::with_capacity(map.len());
        for (k, v) in map {
            match k.as_str() {
                "path" => path = Some(decode_path("path", &v)?),
                "source" => source = Some(decode_path("source", &v)?),
                _ => extra.push((k, compact(v))),
            }
        }
        let path = path.ok_or(PathObjectError::MissingPath)?;
        Ok(PathObject {
            path,
            source,
            extra,
            wire: None,
        })
    }

    /// Turns `path` and `source` from wire paths into this site's paths
    /// (`map`, see [`crate::config::path_map`]), keeping the wire names
    /// for everything written out. Nothing changes when neither maps.
    pub fn localise(&mut self, map: &PathMap) {
        let path = map.to_local(&self.path);
        let source = self.source.as_deref().and_then(|s| map.to_local(s));
        if path.is_none() && source.is_none() {
            return;
        }
        let wire_path = match path {
            Some(local) => std::mem::replace(&mut self.path, local),
            None => self.path.clone(),
        };
        let wire_source = match source {
            Some(local) => self.source.replace(local),
            None => self.source.clone(),
        };
        self.wire = Some(Box::new((wire_path, wire_source)));
    }

    /// The path as every site names it (the wire path): `path` unless
    /// [`PathObject::localise`] mapped it.
    pub fn wire_path(&self) -> &[u8] {
        self.wire.as_ref().map_or(&self.path, |w| &w.0)
    }

    /// Writes the object as one line of JSON (without the newline), naming
    /// its wire paths.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let (path, source) = match &self.wire {
            Some(w) => (&w.0, w.1.as_ref()),
            None => (&self.path, self.source.as_ref()),
        };
        out.extend_from_slice(b"{\"path\":");
        surrogate::encode(path, out);
        if let Some(src) = source {
            out.extend_from_slice(b",\"source\":");
            surrogate::encode(src, out);
        }
        for (k, v) in &self.extra {
            out.push(b',');
            surrogate::encode(k.as_bytes(), out);
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
    }
}

/// Removes whitespace outside strings from a raw JSON value, so that an
/// object written back is always one line (a pretty-printed task payload
/// must not break JSON Lines output).
fn compact(v: Box<RawValue>) -> Box<RawValue> {
    let text = v.get();
    if !text.bytes().any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t')) {
        return v;
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            in_string = c == '"';
            out.push(c);
        }
    }
    RawValue::from_string(out).expect("removing insignificant whitespace keeps valid JSON")
}

fn decode_path(key: &'static str, v: &RawValue) -> Result<Vec<u8>, PathObjectError> {
    if !v.get().starts_with('"') {
        return Err(PathObjectError::NotAString(key));
    }
    let bytes = surrogate::decode(v.get()).map_err(|e| PathObjectError::BadPath(key, e))?;
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(PathObjectError::InvalidPath(key));
    }
    Ok(bytes)
}

/// A JSON object read as key/raw-value pairs in document order.
pub(crate) struct OrderedMap(pub(crate) Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<OrderedMap, A::Error> {
                let mut v = Vec::new();
                while let Some(pair) = m.next_entry::<String, Box<RawValue>>()? {
                    v.push(pair);
                }
                Ok(OrderedMap(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Writes an entry as a path object with the selected fields, e.g.
/// `{"path":"/a/b","type":"file","size":3,...}`. Fields the entry lacks
/// (no stat, no generation) are written as `null`.
pub fn write_entry(e: &Entry, fields: Fields, out: &mut Vec<u8>) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"path\":");
    surrogate::encode(&e.path, out);
    if fields.contains(Fields::TYPE) {
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(e.file_type.as_str().as_bytes());
        out.push(b'"');
    }
    let m = e.meta.as_ref();
    let mut int = |out: &mut Vec<u8>, f: Fields, key: &[u8], v: Option<u64>| {
        if fields.contains(f) {
            out.extend_from_slice(key);
            match v {
                Some(v) => out.extend_from_slice(num.format(v).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        }
    };
    int(out, Fields::SIZE, b",\"size\":", m.map(|m| m.size));
    for (f, key, t) in [
        (Fields::MTIME, &b",\"mtime\":"[..], m.map(|m| m.mtime)),
        (Fields::CTIME, b",\"ctime\":", m.map(|m| m.ctime)),
        (Fields::ATIME, b",\"atime\":", m.map(|m| m.atime)),
    ] {
        if fields.contains(f) {
            out.extend_from_slice(key);
            match t {
                Some(t) => write_timestamp(out, t),
                None => out.extend_from_slice(b"null"),
            }
        }
    }
    int(out, Fields::INODE, b",\"inode\":", Some(e.ino));
    int(
        out,
        Fields::GENERATION,
        b",\"generation\":",
        e.generation.map(u64::from),
    );
    int(out, Fields::MODE, b",\"mode\":", m.map(|m| u64::from(m.mode)));
    int(out, Fields::UID, b",\"uid\":", m.map(|m| u64::from(m.uid)));
    int(out, Fields::GID, b",\"gid\":", m.map(|m| u64::from(m.gid)));
    int(out, Fields::NLINK, b",\"nlink\":", m.map(|m| m.nlink));
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::FileType;

    #[test]
    fn parses_strings_and_objects_losslessly() {
        let p = PathObject::parse(br#""/a/\udcfe""#).unwrap();
        assert_eq!(p.path, b"/a/\xfe");
        let line = br#"{"path":"/x\ny","size":15,"source":"/old","message":["why"]}"#;
        let p = PathObject::parse(line).unwrap();
        assert_eq!(p.path, b"/x\ny");
        assert_eq!(p.source.as_deref(), Some(&b"/old"[..]));
        let mut out = Vec::new();
        p.write_json(&mut out);
        assert_eq!(out, br#"{"path":"/x\ny","source":"/old","size":15,"message":["why"]}"#);
    }

    #[test]
    fn rejects_bad_objects_with_reasons() {
        for (input, want) in [
            (&br#"{"size":1}"#[..], "no \"path\""),
            (br#"{"path":3}"#, "must be a string"),
            (br#"{"path":"\udc01"}"#, "lone surrogate"),
            (br#"{"path":""}"#, "empty"),
            (br#"{"path":"a\u0000b"}"#, "NUL"),
            (br#"[1]"#, "string or an object"),
            (br#"{"path":"a""#, "invalid path object"),
        ] {
            let err = PathObject::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn entry_json_has_selected_fields() {
        let e = Entry {
            path: b"/t/\xff".to_vec(),
            file_type: FileType::File,
            ino: 7,
            meta: None,
            generation: None,
            parent: 0,
        };
        let mut out = Vec::new();
        write_entry(&e, Fields::parse("type,size,inode").unwrap(), &mut out);
        assert_eq!(out, br#"{"path":"/t/\udcff","type":"file","size":null,"inode":7}"#);
    }
}
