//! A task's keyword arguments: reading them into typed requests, with
//! errors that name the argument, so a caller can tell exactly what it
//! sent wrong.

use super::{PathObject, PathObjectError};
use serde_json::value::RawValue;

/// Arguments a task cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    /// The arguments as a whole are unusable (not an object, say).
    #[error("invalid arguments: {0}")]
    Shape(String),
    /// One argument has the wrong type or value.
    #[error("invalid argument `{name}`: {message}")]
    Invalid {
        /// The argument, as a path into the arguments (`rules[0].type`).
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A required argument is absent.
    #[error("no `{0}` argument")]
    Missing(&'static str),
    /// `paths` is not a list.
    #[error("`paths` must be a list: {0}")]
    PathsNotAList(String),
    /// One of `paths` is not a path object.
    #[error("paths[{index}]: {source}")]
    Path {
        /// Its index in the list.
        index: usize,
        /// What is wrong with it.
        source: PathObjectError,
    },
}

impl ArgumentError {
    /// An error about the argument `name`.
    pub fn invalid(name: &str, message: impl Into<String>) -> ArgumentError {
        ArgumentError::Invalid {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

/// Reads a task's keyword arguments (a JSON object) into `T`. Errors name
/// the argument, e.g. ``invalid argument `stub_size`: invalid type: string
/// "abc", expected u64``.
pub fn parse_kwargs<T: serde::de::DeserializeOwned>(kwargs: &str) -> Result<T, ArgumentError> {
    let mut de = serde_json::Deserializer::from_str(kwargs);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // The position is in ferry's re-encoding, not in what was sent.
        let inner = inner
            .rfind(" at line ")
            .map_or(inner.as_str(), |i| &inner[..i])
            .to_string();
        if path == "." {
            ArgumentError::Shape(inner)
        } else {
            ArgumentError::Invalid {
                name: path,
                message: inner,
            }
        }
    })
}

/// `{<kwargs>, "jobid": .., "paths": [..]}` as one JSON object; `kwargs`
/// is an object's members without the braces (empty for none).
pub fn kwargs_with(kwargs: &str, jobid: Option<&RawValue>, paths: Option<&[u8]>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !kwargs.is_empty() {
        parts.push(kwargs.to_string());
    }
    if let Some(j) = jobid {
        parts.push(format!("\"jobid\":{}", j.get()));
    }
    if let Some(p) = paths {
        parts.push(format!("\"paths\":[{}]", String::from_utf8_lossy(p)));
    }
    format!("{{{}}}", parts.join(","))
}

/// Decodes a task's `paths` argument: a list of path objects or plain
/// path strings.
pub fn parse_paths(raw: Option<&RawValue>) -> Result<Vec<PathObject>, ArgumentError> {
    let raw = raw.ok_or(ArgumentError::Missing("paths"))?;
    let list: Vec<Box<RawValue>> =
        serde_json::from_str(raw.get()).map_err(|e| ArgumentError::PathsNotAList(e.to_string()))?;
    list.iter()
        .enumerate()
        .map(|(index, p)| PathObject::parse(p.get().as_bytes()).map_err(|source| ArgumentError::Path { index, source }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_argument() {
        #[derive(serde::Deserialize, Debug)]
        struct A {
            #[allow(dead_code)]
            stub_size: u64,
        }
        let e = parse_kwargs::<A>(r#"{"stub_size": "abc"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument `stub_size`: invalid type: string \"abc\", expected u64"
        );
        let raw = RawValue::from_string(r#"["/a", {"size": 1}]"#.into()).unwrap();
        let e = parse_paths(Some(&raw)).unwrap_err();
        assert!(e.to_string().starts_with("paths[1]: "), "{e}");
        assert_eq!(parse_paths(None).unwrap_err().to_string(), "no `paths` argument");
    }
}
