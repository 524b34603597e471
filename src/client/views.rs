//! The client's own small views of what the hub sends (a job, its
//! progress, a failed file, a client key) and of what it sends (a
//! submission). They hold only the fields the client reads; everything
//! else the hub sends is kept verbatim beside them ([`Job::raw`]), so
//! `--json` prints the hub's answer unchanged and a newer hub's extra
//! fields pass through.
//!
//! Paths travel in the crate's JSON convention for raw bytes (Python's
//! `surrogateescape`, docs/json.md): a name that is not UTF-8 reaches the
//! hub byte for byte, and comes back the same way.

use super::error::ClientError;
use crate::task::surrogate;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The job states after which nothing changes (the seed's and the hub's).
pub const FINAL_STATES: &[&str] = &["SUCCESS", "FAILURE", "CANCELLED"];

/// A job as the client reads it.
#[derive(Clone, Debug, Deserialize)]
pub struct JobView {
    /// The job's id.
    pub id: i64,
    /// `PENDING`, `STARTED`, `SUCCESS`, `FAILURE`, `DEQUEUING`,
    /// `CANCELLED` (or a state a newer hub adds).
    pub state: String,
    /// The workflow's name.
    #[serde(default)]
    pub workflow: Option<String>,
    /// The site's name.
    #[serde(default)]
    pub site: String,
    /// The queue's name.
    #[serde(default)]
    pub queue: String,
    /// Its discovery (`recursive`, `snapdiff`), or `None` when the input
    /// paths themselves were worked on.
    #[serde(default)]
    pub discovery: Option<String>,
    /// `<label> of '<first path>' on '<site>'`.
    #[serde(default, deserialize_with = "lossy_string")]
    pub friendly_name: String,
    /// When it was submitted (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// When it ended.
    #[serde(default)]
    pub completed: Option<String>,
    /// Seconds it ran (or has run so far).
    #[serde(default)]
    pub runtime: Option<f64>,
    /// While it runs, the nodes online that consume its queue (0: nothing
    /// will take its tasks until an agent of that queue comes back).
    #[serde(default)]
    pub queue_nodes_online: Option<i64>,
    /// How far it is.
    #[serde(default)]
    pub progress: Option<ProgressView>,
    /// Its file counts (ferry's hub; absent from other hubs).
    #[serde(default)]
    pub counts: Option<CountsView>,
}

impl JobView {
    /// Whether the job has ended (nothing will change any more).
    pub fn is_final(&self) -> bool {
        FINAL_STATES.contains(&self.state.as_str())
    }

    /// Whether it ended well.
    pub fn succeeded(&self) -> bool {
        self.state == "SUCCESS"
    }
}

/// A job's file counts.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CountsView {
    /// Files its discovery found.
    #[serde(default)]
    pub files_found: i64,
    /// Files done.
    #[serde(default)]
    pub processed: i64,
    /// Files that needed nothing (already done).
    #[serde(default)]
    pub skipped: i64,
    /// Files left alone for a reason that does not fail the job.
    #[serde(default)]
    pub aborted: i64,
    /// Files that failed.
    #[serde(default)]
    pub failures: i64,
    /// Tasks that failed whole.
    #[serde(default)]
    pub tasks_failed: i64,
}

/// `GET /api/jobs/{id}/progress/`, and a job's `progress`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProgressView {
    /// 0 to 100 (100 once the job has ended).
    #[serde(default)]
    pub percent: f64,
    /// The discovery has finished walking.
    #[serde(default)]
    pub dir_walk_complete: bool,
    /// Files found so far.
    #[serde(default)]
    pub files_found: i64,
    /// Files done so far (whatever their outcome).
    #[serde(default)]
    pub files_done: i64,
}

/// A job: the view the client reads, and the hub's JSON as it came.
#[derive(Debug)]
pub struct Job {
    /// The fields the client reads.
    pub view: JobView,
    /// The hub's JSON object, unchanged (for `--json`).
    pub raw: Box<RawValue>,
}

impl Job {
    /// Reads a job from the hub's JSON; `url` names the request in errors.
    pub fn from_raw(raw: Box<RawValue>, url: &str) -> Result<Job, ClientError> {
        let view = serde_json::from_str(raw.get()).map_err(|e| ClientError::BadAnswer {
            url: url.to_string(),
            reason: format!("not a job: {e}"),
        })?;
        Ok(Job { view, raw })
    }
}

/// A failed or aborted file of a job (`/api/jobstats/`).
#[derive(Clone, Debug, Deserialize)]
pub struct FileRecordView {
    /// The path, with bytes that are not UTF-8 shown as U+FFFD.
    #[serde(deserialize_with = "lossy_string")]
    pub path: String,
    /// `failures` or `aborted`.
    #[serde(default)]
    pub state: String,
    /// The errno's name (`EACCES`), when the hub could tell.
    #[serde(default)]
    pub code: Option<String>,
    /// The reasons the task gave.
    #[serde(default)]
    pub message: Value,
}

impl FileRecordView {
    /// The reasons, as one line.
    pub fn reasons(&self) -> String {
        match &self.message {
            Value::Array(a) => a
                .iter()
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("; "),
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// `POST /api/auth/token/`'s answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Tokens {
    /// The access token (a JWT, valid an hour).
    pub access: String,
    /// The refresh token.
    #[serde(default)]
    pub refresh: Option<String>,
}

/// A client key just made (`POST /api/auth/clientkeys/`).
#[derive(Debug)]
pub struct NewClientKey {
    /// The key, shown this once by the hub.
    pub api_key: String,
    /// The hub's JSON answer, unchanged.
    pub raw: Box<RawValue>,
}

/// A workflow run on paths of a site: the body of `POST
/// /api/file/workflow/`.
#[derive(Clone, Debug, Serialize)]
pub struct Submission {
    /// The workflow's name.
    pub workflow: String,
    /// The site's name.
    pub site: String,
    /// The queue; absent, the hub takes the workflow's preferred queue,
    /// else `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Absolute paths, as JSON string literals (see [`path_literal`]).
    pub paths: Vec<Box<RawValue>>,
    /// `recursive`, or `None` (sent as `null`: no discovery; the paths
    /// themselves are worked on).
    pub discovery: Option<String>,
    /// Runtime field values the workflow declares.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}

/// A path as the JSON string literal the hub reads: absolute (relative
/// paths are taken from the current directory, without resolving
/// symbolic links, since the path may name a file of another site), no
/// trailing `/`, and bytes that are not UTF-8 as `\udcXX` escapes. A
/// path with a `..` component is refused, as by the local operations:
/// what it names depends on symbolic links on the site's nodes.
pub fn path_literal(path: &Path) -> std::io::Result<Box<RawValue>> {
    if path.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "`..` components are refused (what they name depends on symbolic links on the site)",
        ));
    }
    let abs = std::path::absolute(path)?;
    let mut bytes = abs.as_os_str().as_bytes();
    while bytes.len() > 1 && bytes.ends_with(b"/") {
        bytes = &bytes[..bytes.len() - 1];
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    surrogate::encode(bytes, &mut out);
    let text = String::from_utf8(out).expect("surrogateescape output is UTF-8");
    Ok(RawValue::from_string(text).expect("surrogateescape output is a JSON string"))
}

/// Reads a JSON string that may carry `\udcXX` escapes (path bytes that
/// are not UTF-8), showing such bytes as U+FFFD; `null` reads as "".
fn lossy_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw: Box<RawValue> = Deserialize::deserialize(d)?;
    if raw.get() == "null" {
        return Ok(String::new());
    }
    surrogate::decode(raw.get())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn paths_are_absolute_without_trailing_slash_and_keep_their_bytes() {
        let p = path_literal(Path::new("/data/proj/")).unwrap();
        assert_eq!(p.get(), r#""/data/proj""#);
        let p = path_literal(Path::new(OsStr::from_bytes(b"/data/caf\xe9"))).unwrap();
        assert_eq!(p.get(), r#""/data/caf\udce9""#);
        let p = path_literal(Path::new("rel/x")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(p.get(), format!("{:?}", cwd.join("rel/x").display().to_string()));
        assert_eq!(path_literal(Path::new("/")).unwrap().get(), r#""/""#);
        assert!(path_literal(Path::new("/data/../etc")).is_err());
    }

    #[test]
    fn a_submission_sends_null_discovery_and_omits_what_is_unset() {
        let s = Submission {
            workflow: "migrate".into(),
            site: "london".into(),
            queue: None,
            paths: vec![path_literal(Path::new("/a")).unwrap()],
            discovery: None,
            fields: Map::new(),
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"workflow":"migrate","site":"london","paths":["/a"],"discovery":null}"#
        );
    }

    #[test]
    fn jobs_read_with_names_that_are_not_utf8() {
        let raw = RawValue::from_string(
            r#"{"id": 3, "state": "FAILURE", "friendly_name": "Dehydrate of '/d/\udce9' on 's'",
                "input_paths": [{"path": "/d/\udce9"}], "counts": {"processed": 2, "failures": 1}}"#
                .to_string(),
        )
        .unwrap();
        let j = Job::from_raw(raw, "u").unwrap();
        assert_eq!(j.view.friendly_name, "Dehydrate of '/d/\u{fffd}' on 's'");
        assert!(j.view.is_final() && !j.view.succeeded());
        assert_eq!(j.view.counts.unwrap().failures, 1);
        assert!(Job::from_raw(RawValue::from_string("[1]".into()).unwrap(), "u").is_err());
    }
}
