//! Per-file outcomes of an operation and the seed's result object:
//! `{jobid, paths, status: {task, input_paths, input_total, summary,
//! details, started}}`. Only `processed` and `skipped` paths appear in
//! `paths`, the list a workflow passes to its next step.

use super::status::{Status, now_rfc3339};
use super::surrogate;
use super::{PathObject, TaskName};
use std::fmt;
use std::io::{self, Write};

/// What happened to one path (the seed's per-file states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileState {
    /// Done.
    Processed,
    /// Already in the desired state; goes on to the next step.
    Skipped,
    /// Not processed and must not be processed by later steps; the job is
    /// not failed.
    Aborted,
    /// Failed, with a reason.
    Failures,
}

impl FileState {
    /// Every state, in the order results list them.
    pub const ALL: [FileState; 4] = [
        FileState::Processed,
        FileState::Skipped,
        FileState::Aborted,
        FileState::Failures,
    ];

    /// The seed's key for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Processed => "processed",
            FileState::Skipped => "skipped",
            FileState::Aborted => "aborted",
            FileState::Failures => "failures",
        }
    }

    /// Whether the path goes on to a workflow's next step.
    pub fn continues(self) -> bool {
        matches!(self, FileState::Processed | FileState::Skipped)
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one path: a state and, except for plain success, why.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The state.
    pub state: FileState,
    /// The reason, shown as the path object's `message` list.
    pub message: Option<String>,
    /// Keys added to the path object (such as `stat_paths`' attributes),
    /// as (key, JSON value).
    pub extra: Vec<(String, Box<serde_json::value::RawValue>)>,
}

impl Outcome {
    /// Success with nothing to add.
    pub fn processed() -> Outcome {
        Outcome {
            state: FileState::Processed,
            message: None,
            extra: Vec::new(),
        }
    }

    /// An outcome with a reason.
    pub fn with(state: FileState, message: impl Into<String>) -> Outcome {
        Outcome {
            state,
            message: Some(message.into()),
            extra: Vec::new(),
        }
    }

    /// Skipped because already done.
    pub fn skipped(message: impl Into<String>) -> Outcome {
        Outcome::with(FileState::Skipped, message)
    }

    /// Failed.
    pub fn failed(message: impl Into<String>) -> Outcome {
        Outcome::with(FileState::Failures, message)
    }
}

/// Writes `obj` with the outcome's `message` (a list of strings, as the
/// seed's failure entries have it) and, if `with_state`, a `state` key.
pub fn write_outcome(obj: &PathObject, outcome: &Outcome, with_state: bool, out: &mut Vec<u8>) {
    let mut o = obj.clone();
    o.extra = obj
        .extra
        .iter()
        .filter(|(k, _)| k != "message" && !(with_state && k == "state") && !outcome.extra.iter().any(|(e, _)| e == k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(outcome.extra.iter().cloned())
        .collect();
    let mut raw = Vec::new();
    if with_state {
        raw.clear();
        surrogate::encode(outcome.state.as_str().as_bytes(), &mut raw);
        o.extra.push(("state".into(), raw_value(&raw)));
    }
    if let Some(m) = &outcome.message {
        raw.clear();
        raw.push(b'[');
        surrogate::encode(m.as_bytes(), &mut raw);
        raw.push(b']');
        o.extra.push(("message".into(), raw_value(&raw)));
    }
    o.write_json(out);
}

fn raw_value(json: &[u8]) -> Box<serde_json::value::RawValue> {
    let text = String::from_utf8(json.to_vec()).expect("encoder writes UTF-8");
    serde_json::value::RawValue::from_string(text).expect("encoder writes valid JSON")
}

/// Collects outcomes into the seed's result object.
pub struct TaskResult {
    task: String,
    jobid: Option<Box<serde_json::value::RawValue>>,
    started: String,
    input: Vec<u8>,
    input_total: u64,
    paths: Vec<u8>,
    details: [Vec<u8>; 4],
    summary: [u64; 4],
    /// Paths sent to be tried again later (a retry task), with why.
    retried: Vec<u8>,
    retried_total: u64,
    queue: Option<String>,
}

impl TaskResult {
    /// Starts a result for `task`, started now.
    pub fn new(task: TaskName, jobid: Option<Box<serde_json::value::RawValue>>) -> TaskResult {
        TaskResult {
            task: task.as_str().to_string(),
            jobid,
            started: now_rfc3339(),
            input: Vec::new(),
            input_total: 0,
            paths: Vec::new(),
            details: Default::default(),
            summary: [0; 4],
            retried: Vec::new(),
            retried_total: 0,
            queue: None,
        }
    }

    /// Names the queue the task ran on (the seed's `result.queue`), for
    /// results sent back over a broker.
    pub fn set_queue(&mut self, queue: &str) {
        self.queue = Some(queue.to_string());
    }

    /// Records one input path and its outcome.
    pub fn add(&mut self, obj: &PathObject, outcome: &Outcome) {
        push_item(&mut self.input, |out| obj.write_json(out));
        self.input_total += 1;
        let i = FileState::ALL
            .iter()
            .position(|s| *s == outcome.state)
            .expect("known state");
        self.summary[i] += 1;
        push_item(&mut self.details[i], |out| write_outcome(obj, outcome, false, out));
        if outcome.state.continues() {
            push_item(&mut self.paths, |out| write_outcome(obj, outcome, false, out));
        }
    }

    /// Records one input path that failed in a way that may pass
    /// (`outcome`, a failure) and was sent to be tried again by a retry
    /// task: listed under `retried` (summary and details, present only
    /// when there are some), counted in no file state, since the retry's
    /// own result counts it.
    pub fn defer(&mut self, obj: &PathObject, outcome: &Outcome) {
        push_item(&mut self.input, |out| obj.write_json(out));
        self.input_total += 1;
        self.retried_total += 1;
        push_item(&mut self.retried, |out| write_outcome(obj, outcome, false, out));
    }

    /// The path objects that go on to the next step (`processed` and
    /// `skipped`), as JSON objects separated by commas.
    pub fn continuing(&self) -> &[u8] {
        &self.paths
    }

    /// Counts per state so far.
    pub fn count(&self, state: FileState) -> u64 {
        self.summary[FileState::ALL.iter().position(|s| *s == state).expect("known state")]
    }

    /// The result object as one line of JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut counts = Vec::with_capacity(80);
        let mut details = Vec::with_capacity(self.input.len() + 80);
        for (i, s) in FileState::ALL.iter().enumerate() {
            let sep = if i == 0 { b'{' } else { b',' };
            counts.push(sep);
            counts.extend_from_slice(format!("\"{}\":{}", s.as_str(), self.summary[i]).as_bytes());
            details.push(sep);
            details.extend_from_slice(format!("\"{}\":[", s.as_str()).as_bytes());
            details.extend_from_slice(&self.details[i]);
            details.push(b']');
        }
        if self.retried_total > 0 {
            counts.extend_from_slice(format!(",\"retried\":{}", self.retried_total).as_bytes());
            details.extend_from_slice(b",\"retried\":[");
            details.extend_from_slice(&self.retried);
            details.push(b']');
        }
        counts.push(b'}');
        details.push(b'}');
        let mut status = Status::new(&self.task);
        status
            .input_list(&self.input, self.input_total)
            .raw("summary", &counts)
            .raw("details", &details)
            .string("started", &self.started);
        status.into_result(self.jobid.as_deref(), self.queue.as_deref(), &self.paths)
    }
}

/// Where an operation's outcomes are written for the shell: the seed's
/// result object once all are in, or one JSON line per path as it
/// finishes (`state` and `message` added; memory stays bounded).
pub enum OutcomeWriter<W: Write> {
    /// The result object at the end.
    Result(Box<TaskResult>, W),
    /// One line per path.
    Lines(W),
}

impl<W: Write> OutcomeWriter<W> {
    /// Takes one path's outcome.
    pub fn add(&mut self, obj: &PathObject, outcome: &Outcome) -> io::Result<()> {
        match self {
            OutcomeWriter::Result(r, _) => {
                r.add(obj, outcome);
                Ok(())
            }
            OutcomeWriter::Lines(w) => {
                let mut line = Vec::with_capacity(128);
                write_outcome(obj, outcome, true, &mut line);
                line.push(b'\n');
                w.write_all(&line)
            }
        }
    }

    /// Writes what is left (the result object) and flushes.
    pub fn finish(self) -> io::Result<()> {
        match self {
            OutcomeWriter::Result(r, mut w) => {
                let mut json = r.to_json();
                json.push(b'\n');
                w.write_all(&json)?;
                w.flush()
            }
            OutcomeWriter::Lines(mut w) => w.flush(),
        }
    }
}

fn push_item(list: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    if !list.is_empty() {
        list.push(b',');
    }
    write(list);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_object_has_the_seed_shape() {
        let mut r = TaskResult::new(TaskName::Migrate, None);
        let ok = PathObject::parse(br#"{"path":"/a","size":3}"#).unwrap();
        let bad = PathObject::parse(br#"{"path":"/b","message":["old"]}"#).unwrap();
        r.add(&ok, &Outcome::processed());
        r.add(&bad, &Outcome::failed("no such file"));
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v["jobid"], serde_json::Value::Null);
        assert_eq!(v["paths"], serde_json::json!([{"path": "/a", "size": 3}]));
        let st = &v["status"];
        assert_eq!(st["task"], "dynamo.tasks.migrate");
        assert_eq!(st["input_total"], 2);
        assert_eq!(
            st["summary"],
            serde_json::json!({"processed":1,"skipped":0,"aborted":0,"failures":1})
        );
        assert_eq!(
            st["details"]["failures"][0]["message"],
            serde_json::json!(["no such file"])
        );
        assert_eq!(st["details"]["failures"][0]["path"], "/b");
        assert_eq!(st["input_paths"][1]["message"], serde_json::json!(["old"]));
        assert!(st["started"].as_str().unwrap().ends_with('Z'));
    }
}
