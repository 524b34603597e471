//! Streamed per-file results: a task run with `stream_results=True` and
//! `stream_to=<queue>` sends its per-file outcomes to that queue in
//! messages of at most [`STREAM_BATCH`] paths, the last one marked, so the
//! task that asked (a snapdiff waiting for its deletes and moves) can go on
//! once every handler has reported. Both sides of the message are here.

use serde::Deserialize;

/// Per-file results per stream message.
pub const STREAM_BATCH: usize = 1000;

/// One stream message: `{"task_id", "task", "seq", "last", "paths": [...]}`,
/// `paths` being encoded path objects with their `state` and `message`,
/// separated by commas.
pub fn stream_message(task_id: &str, task: &str, seq: usize, last: bool, paths: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "{{\"task_id\":{},\"task\":{},\"seq\":{seq},\"last\":{last},\"paths\":[",
        serde_json::to_string(task_id).expect("json"),
        serde_json::to_string(task).expect("json"),
    )
    .into_bytes();
    body.extend_from_slice(paths);
    body.extend_from_slice(b"]}");
    body
}

/// What a reader of a stream needs of one message.
#[derive(Debug, Deserialize)]
pub struct StreamMessage {
    /// The handler's task id.
    pub task_id: String,
    /// The handler's last message.
    #[serde(default)]
    pub last: bool,
    /// Its paths' outcomes.
    #[serde(default)]
    pub paths: Vec<StreamedPath>,
}

/// One path's outcome in a stream message.
#[derive(Debug, Deserialize)]
pub struct StreamedPath {
    /// The per-file state (`processed`, `skipped`, `aborted`, `failures`).
    #[serde(default)]
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back() {
        let body = stream_message(
            "t1",
            "dynamo.tasks.move_paths_on_gpfs",
            2,
            true,
            br#"{"path":"/a","state":"failures"}"#,
        );
        let m: StreamMessage = serde_json::from_slice(&body).unwrap();
        assert_eq!((m.task_id.as_str(), m.last, m.paths.len()), ("t1", true, 1));
        assert_eq!(m.paths[0].state, "failures");
    }
}
