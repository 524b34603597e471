//! The task contract shared with hubs and Celery peers: path objects, the
//! JSON string convention for raw path bytes, and status summaries.

pub mod input;
pub mod path_object;
pub mod result;
pub mod status;
pub mod surrogate;

pub use path_object::{PathObject, PathObjectError, write_entry};
pub use result::{FileState, Outcome, TaskResult};
pub use status::{Summary, SummaryCounters};

/// Reads a task's keyword arguments (a JSON object) into `T`. Errors name
/// the argument, e.g. ``invalid argument `stub_size`: invalid type: string
/// "abc", expected u64``.
pub fn parse_kwargs<T: serde::de::DeserializeOwned>(kwargs: &str) -> Result<T, String> {
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
            format!("invalid arguments: {inner}")
        } else {
            format!("invalid argument `{path}`: {inner}")
        }
    })
}
