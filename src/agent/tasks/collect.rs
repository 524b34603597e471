//! A snapdiff's changes handed to the hub as events (`collect`), for a
//! bidirectional sync: the hub must see both sites' changes before it
//! applies either, so neither site routes its own through the rules.
//!
//! Events go where the task's result goes, in `EVENTS` documents of at
//! most [`EVENTS_PER_DOCUMENT`] changes, each confirmed by the broker
//! before the task's result is published: when the hub counts the result
//! it has every event. Each document names the execution (`run`) that
//! diffed, so a redelivered task's second diff never mixes with the
//! first's events.

use super::context::{ChildSink, SinkError};
use crate::agent::celery::run_hex;
use crate::entry::Fields;
use crate::snapdiff::diff::Change;
use crate::snapdiff::output::{ExtraFields, change_entry, write_change_keys};
use crate::snapdiff::run::ChangeSink;
use crate::task::write_entry;
use serde_json::value::RawValue;
use std::io;

/// Most changes one `EVENTS` document carries (about 150 bytes each).
pub const EVENTS_PER_DOCUMENT: usize = 1000;

/// The status of an events document on the results queue.
pub const EVENTS_STATUS: &str = "EVENTS";

/// What an event records of its entry: enough for the hub to tell a
/// change from the echo of its own sync (same size, mtime and mode).
pub const EVENT_FIELDS: Fields = Fields::PATH
    .with(Fields::TYPE)
    .with(Fields::SIZE)
    .with(Fields::MTIME)
    .with(Fields::MODE);

/// Sends changes to the hub as events.
pub struct Collect<'a> {
    sink: &'a mut dyn ChildSink,
    task_id: &'a str,
    /// The document's fixed head up to the events' list.
    head: String,
    root: Vec<u8>,
    /// The events not yet sent, comma-separated.
    chunk: Vec<u8>,
    in_chunk: usize,
    seq: u64,
    /// Events sent so far.
    pub events: u64,
    /// Why sending stopped (the run sees only an I/O error).
    pub failed: Option<SinkError>,
}

impl<'a> Collect<'a> {
    /// Events of task `task_id` of job `jobid` on `site`, diffed by
    /// execution `run`, for changes under the fileset's wire path `root`.
    pub fn new(
        sink: &'a mut dyn ChildSink,
        task_id: &'a str,
        jobid: Option<&RawValue>,
        site: &str,
        run: u64,
        root: Vec<u8>,
    ) -> Collect<'a> {
        let head = format!(
            "{{\"status\":\"{EVENTS_STATUS}\",\"task_id\":{},\"result\":{{\"jobid\":{},\"site\":{},\"run\":\"{}\"",
            serde_json::to_string(task_id).expect("json"),
            jobid.map_or("null", RawValue::get),
            serde_json::to_string(site).expect("json"),
            run_hex(run),
        );
        Collect {
            sink,
            task_id,
            head,
            root,
            chunk: Vec::new(),
            in_chunk: 0,
            seq: 0,
            events: 0,
            failed: None,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.in_chunk == 0 {
            return Ok(());
        }
        let mut doc = Vec::with_capacity(self.head.len() + self.chunk.len() + 32);
        doc.extend_from_slice(self.head.as_bytes());
        doc.extend_from_slice(format!(",\"seq\":{},\"events\":[", self.seq).as_bytes());
        doc.append(&mut self.chunk);
        doc.extend_from_slice(b"]}}");
        if let Err(e) = self.sink.report(self.task_id, doc) {
            let text = e.to_string();
            self.failed = Some(e);
            return Err(io::Error::other(text));
        }
        self.events += self.in_chunk as u64;
        self.seq += 1;
        self.in_chunk = 0;
        Ok(())
    }
}

impl ChangeSink for Collect<'_> {
    fn change(&mut self, c: &Change) -> io::Result<()> {
        let (e, source) = change_entry(&self.root, c);
        if self.in_chunk > 0 {
            self.chunk.push(b',');
        }
        write_entry(&e, EVENT_FIELDS, &mut self.chunk);
        self.chunk.pop();
        write_change_keys(c, source.as_deref(), ExtraFields::default(), &mut self.chunk);
        self.chunk.push(b'}');
        self.in_chunk += 1;
        if self.in_chunk >= EVENTS_PER_DOCUMENT {
            self.send()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.send()
    }
}
