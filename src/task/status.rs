//! The seed's status object and the crate's clock.
//!
//! Every task and command reports in the seed's shape: a status object
//! `{"task", "input_paths", "input_total", "summary", "details", "started",
//! ...}`, which tasks wrap in a result object `{"jobid", "queue", "paths",
//! "status"}` (the `paths` being those that go on to the workflow's next
//! step). [`Status`] is the only writer of both, so the shape is written
//! once; callers add their keys in the order they want them to appear.
//!
//! Times are UTC. [`now_iso8601`] is the seed's `started` format (Python's
//! `isoformat()`, `+00:00`, microseconds); [`now_rfc3339`] is RFC 3339 with
//! `Z` and full precision, which per-file operation results carry.

use super::PathObject;
use super::surrogate;
use serde::Serialize;
use serde_json::value::RawValue;

/// A status object being written, key by key.
#[derive(Debug)]
pub struct Status {
    out: Vec<u8>,
}

impl Status {
    /// Starts the status object of `task` (a seed task name, or `scan`,
    /// `snapdiff` for the command line's reports).
    pub fn new(task: &str) -> Status {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"task\":");
        surrogate::encode(task.as_bytes(), &mut out);
        Status { out }
    }

    /// `input_paths` as path objects, and `input_total`.
    pub fn input_paths<'a>(&mut self, paths: impl IntoIterator<Item = &'a PathObject>) -> &mut Status {
        let mut list = Vec::new();
        let mut n = 0u64;
        for p in paths {
            if n > 0 {
                list.push(b',');
            }
            p.write_json(&mut list);
            n += 1;
        }
        self.input_list(&list, n)
    }

    /// `input_paths` as plain path strings (raw bytes), and `input_total`.
    pub fn input_raw_paths(&mut self, paths: &[Vec<u8>]) -> &mut Status {
        let mut list = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            surrogate::encode(p, &mut list);
        }
        self.input_list(&list, paths.len() as u64)
    }

    /// `input_paths` from an already encoded list of JSON values separated
    /// by commas, and `input_total`.
    pub fn input_list(&mut self, list: &[u8], total: u64) -> &mut Status {
        self.out.extend_from_slice(b",\"input_paths\":[");
        self.out.extend_from_slice(list);
        self.out.extend_from_slice(b"],\"input_total\":");
        self.out.extend_from_slice(itoa::Buffer::new().format(total).as_bytes());
        self
    }

    /// A key with an already encoded JSON value.
    pub fn raw(&mut self, key: &str, json: &[u8]) -> &mut Status {
        self.key(key);
        self.out.extend_from_slice(json);
        self
    }

    /// A key with a value serialized as JSON.
    pub fn value(&mut self, key: &str, value: &impl Serialize) -> &mut Status {
        self.key(key);
        serde_json::to_writer(&mut self.out, value).expect("serializing to memory");
        self
    }

    /// A key with a string value (raw bytes, surrogate-escaped as needed).
    pub fn string(&mut self, key: &str, value: &str) -> &mut Status {
        self.key(key);
        surrogate::encode(value.as_bytes(), &mut self.out);
        self
    }

    /// Every field of `value` (which must serialize to a JSON object), in
    /// its own order, as keys of the status.
    pub fn fields(&mut self, value: &impl Serialize) -> &mut Status {
        let body = serde_json::to_vec(value).expect("serializing to memory");
        assert!(body.first() == Some(&b'{'), "status fields come from a JSON object");
        if body.len() > 2 {
            self.out.push(b',');
            self.out.extend_from_slice(&body[1..body.len() - 1]);
        }
        self
    }

    fn key(&mut self, key: &str) {
        self.out.push(b',');
        surrogate::encode(key.as_bytes(), &mut self.out);
        self.out.push(b':');
    }

    /// The status object alone (the command line's reports).
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }

    /// The result object a task returns: `jobid` (the job's id as it was
    /// sent, or null), `queue` when the task ran on one, `paths` (encoded
    /// path objects separated by commas: those that go on to the next
    /// step), and this status.
    pub fn into_result(self, jobid: Option<&RawValue>, queue: Option<&str>, paths: &[u8]) -> Vec<u8> {
        let status = self.finish();
        let mut out = Vec::with_capacity(status.len() + paths.len() + 128);
        out.extend_from_slice(b"{\"jobid\":");
        out.extend_from_slice(jobid.map_or("null", RawValue::get).as_bytes());
        if let Some(q) = queue {
            out.extend_from_slice(b",\"queue\":");
            surrogate::encode(q.as_bytes(), &mut out);
        }
        out.extend_from_slice(b",\"paths\":[");
        out.extend_from_slice(paths);
        out.extend_from_slice(b"],\"status\":");
        out.extend_from_slice(&status);
        out.push(b'}');
        out
    }
}

/// The current time as `2023-04-25T14:56:31.253043+00:00`, the seed's
/// `started` format made timezone-aware.
pub fn now_iso8601() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// The current time in RFC 3339 with `Z` and nanoseconds, as operation
/// results report when they started.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_seed_shape_in_the_callers_order() {
        let mut s = Status::new("dynamo.tasks.x");
        s.input_raw_paths(&[b"/a\xff".to_vec()])
            .value("summary", &serde_json::json!({"files": 1}))
            .string("started", "t");
        let jobid = RawValue::from_string("7".into()).unwrap();
        let out = s.into_result(Some(&jobid), Some("s.default#worker"), b"{\"path\":\"/a\"}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"jobid":7,"queue":"s.default#worker","paths":[{"path":"/a"}],"status":{"task":"dynamo.tasks.x","input_paths":["/a\udcff"],"input_total":1,"summary":{"files":1},"started":"t"}}"#
        );
        let mut s = Status::new("scan");
        s.fields(&serde_json::json!({"b": 1, "a": 2}));
        assert_eq!(s.finish(), br#"{"task":"scan","a":2,"b":1}"#);
    }
}
