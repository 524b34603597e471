//! The files a job keeps a row for (`jobstats`): read from a result's
//! file lists, and written by the ingest, one row per job and path.
//! Which states get rows is the job's `record_files`
//! ([`super::workflows::RecordFiles`]).

use super::batch;
use super::{Engine, StoreError, db};
use crate::task::errors::error_code;
use rustc_hash::FxHashMap;
use sqlx::Row;

/// A file a task reported, with its state: the hub keeps a row for it
/// if its job's `record_files` asks for that state.
#[derive(Clone, Debug, PartialEq)]
pub struct FileFailure {
    /// The path as JSON string text (surrogate escapes kept).
    pub path: String,
    /// `failures`, `aborted`, `processed` or `skipped`.
    pub state: &'static str,
    /// The error's name, when the message names one (`EACCES`).
    pub code: Option<String>,
    /// The message as JSON text.
    pub message: String,
}

/// Reads one entry of a result's file list in `state` (an object with
/// `path`, and `message`, a list of strings) as a row; `None` for an
/// entry of another shape.
pub fn reported_file(raw: &str, state: &'static str) -> Option<FileFailure> {
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        #[serde(borrow)]
        path: &'a serde_json::value::RawValue,
        #[serde(borrow, default)]
        message: Option<&'a serde_json::value::RawValue>,
    }
    let f: Entry = serde_json::from_str(raw).ok()?;
    let message = f.message.map_or("[]".to_string(), |m| m.get().to_string());
    let text: String = serde_json::from_str::<Vec<String>>(&message)
        .map(|v| v.join("; "))
        .unwrap_or_default();
    Some(FileFailure {
        path: f.path.get().to_string(),
        state,
        code: error_code(&text),
        message,
    })
}

/// The files of a result's processed and skipped lists
/// ([`super::results::Finished::completed_lists`]) whose state `keeps`
/// accepts, as rows; a list of another state is not read, and entries of
/// another shape, or a list that is not one, are passed over.
pub fn completed_files(lists: &[(&'static str, String)], keeps: impl Fn(&str) -> bool) -> Vec<FileFailure> {
    let mut out = Vec::new();
    for (state, text) in lists.iter().filter(|(state, _)| keeps(state)) {
        let Ok(list) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) else {
            continue;
        };
        out.extend(list.iter().filter_map(|raw| reported_file(raw.get(), state)));
    }
    out
}

/// Files the files their jobs record (one row per job and path: the last
/// report wins), in multi-row upserts.
pub(super) async fn write_failures(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    engine: Engine,
    order: &[(i64, &str)],
    failed: &FxHashMap<(i64, &str), (&FileFailure, &str)>,
    at: i64,
) -> Result<(), StoreError> {
    for chunk in order.chunks(batch::CHUNK) {
        let sql = format!(
            "INSERT INTO jobstats (job_id, path, state, code, message, task_id, at, reason) VALUES {}
             ON CONFLICT (job_id, path) DO UPDATE SET state = excluded.state, code = excluded.code,
               message = excluded.message, task_id = excluded.task_id, at = excluded.at, reason = excluded.reason",
            batch::tuples(engine, chunk.len(), 8)
        );
        let mut q = batch::statement(&sql, chunk.len());
        for key in chunk {
            let (f, task) = failed[key];
            q = q
                .bind(key.0)
                .bind(&f.path)
                .bind(f.state)
                .bind(&f.code)
                .bind(&f.message)
                .bind(task)
                .bind(at)
                .bind(reason(f));
        }
        q.execute(&mut **tx).await.map_err(db("record failed files"))?;
    }
    Ok(())
}

/// What a failed file's message says, with its path and numbers taken
/// out ([`crate::task::errors::normalise`]): the failure roll-up groups
/// by it. The message is a JSON list of lines, the path a JSON string.
fn reason(f: &FileFailure) -> String {
    let text = serde_json::from_str::<Vec<String>>(&f.message)
        .map(|v| v.join("; "))
        .unwrap_or_else(|_| f.message.clone());
    let path = serde_json::from_str::<String>(&f.path).unwrap_or_default();
    crate::task::errors::normalise(&text, &path)
}

/// The columns a [`FileRecord`] is read from.
pub(super) const FILE_COLUMNS: &str = "id, job_id, path, state, code, message, task_id";

/// A `jobstats` row as a [`FileRecord`].
pub(super) fn file_record(r: &sqlx::any::AnyRow) -> Result<FileRecord, StoreError> {
    Ok(FileRecord {
        id: r.get("id"),
        job_id: r.get("job_id"),
        path: r.get("path"),
        state: r.get("state"),
        code: r.get("code"),
        message: r.get("message"),
        task_id: r.get("task_id"),
    })
}

/// One file's record in a job (failures and aborts by default).
#[derive(Clone, Debug)]
pub struct FileRecord {
    /// Row id.
    pub id: i64,
    /// Its job.
    pub job_id: i64,
    /// The path, as JSON string text (surrogate escapes kept).
    pub path: String,
    /// `failures`, `aborted`, ...
    pub state: String,
    /// The error's name (`EACCES`), when known.
    pub code: Option<String>,
    /// The message, as JSON text (the seed's list of strings).
    pub message: String,
    /// The task that reported it.
    pub task_id: String,
}
