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

use super::context::{ChildSink, Input, Published, SinkError, TaskEnv, TaskError, TaskOutput};
use crate::agent::celery::run_hex;
use crate::entry::Fields;
use crate::snapdiff::diff::Change;
use crate::snapdiff::output::{ExtraFields, change_entry, write_change_keys};
use crate::snapdiff::provider::Provider;
use crate::snapdiff::run::{ChangeSink, SnapdiffOptions, snapdiff};
use crate::task::status::Status;
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

/// Runs a `collect` snapdiff (`dynamo.tasks.snapdiff` with `collect:
/// true`): every change goes to the hub as an event
/// ([`super::collect`]) and the run stays held for the hub's rotate.
pub fn collect_task(
    input: &Input<'_>,
    env: &TaskEnv,
    prov: &dyn Provider,
    opts: &SnapdiffOptions,
    sink: &mut dyn ChildSink,
    started: String,
) -> Result<TaskOutput, TaskError> {
    let root = {
        let local = prov.fileset().path.clone();
        env.paths.to_wire(&local).unwrap_or(local)
    };
    // The run is held for this job: a redelivered collect of the same
    // job hands the held diff over again rather than take a new snapshot
    // that the job's plan never saw.
    let mut opts = opts.clone();
    opts.owner = input.jobid.map(|j| j.get().to_string());
    let run = crate::agent::celery::ChildId::new_run();
    let mut events = Collect::new(sink, &input.msg.id, input.jobid, &env.site, run, root.clone());
    let mut log = |m: &str| tracing::info!(task = %input.msg.id, "{m}");
    let report = match snapdiff(prov, &opts, &mut events, &mut log) {
        Ok(r) => r,
        Err(e) => {
            return Err(match events.failed.take() {
                Some(lost) => lost.into(),
                None => e.into(),
            });
        }
    };
    let mut counts = serde_json::to_value(report.summary).expect("json");
    counts["events"] = events.events.into();
    let mut status = Status::new(input.name.as_str());
    status
        .input_paths([input.fileset()])
        .value("summary", &counts)
        .raw("details", b"{}")
        .string("started", &started)
        .value("snapdiff", &report.task_status());
    Ok(TaskOutput {
        result: status.into_result(input.jobid, Some(&env.queue_name), b""),
        children: Published {
            run,
            ..Published::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tasks::context::memory::Memory;
    use crate::agent::tasks::fixture::Fileset;

    /// A collecting run publishes no child: every change goes to the hub
    /// in documents of at most `EVENTS_PER_DOCUMENT`, all naming the
    /// execution the result names, and the run stays held. The same job's
    /// collect again (a redelivery) hands over the held diff again, same
    /// snapshot; another job's rolls the held run back and diffs anew.
    #[test]
    fn a_collecting_run_hands_its_changes_to_the_hub_and_stays_held() {
        let names: Vec<String> = (0..EVENTS_PER_DOCUMENT + 500).map(|i| format!("f{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let fs = Fileset::new(&names);
        let mut snapshots = Vec::new();
        for job in [9, 9, 10] {
            let mut sink = Memory::default();
            let r = fs
                .run(&mut sink, serde_json::json!({"collect": true, "jobid": job}))
                .unwrap();
            snapshots.push(r["status"]["snapdiff"]["snapshot"].clone());
            assert!(sink.sent.is_empty(), "a collect publishes no child");
            assert_eq!(r["status"]["snapdiff"]["outcome"], "held", "{r}");
            // Every file, and the fileset's root (new on a first run).
            assert_eq!(r["status"]["summary"]["events"], names.len() + 1, "{r}");
            let docs: Vec<serde_json::Value> = sink
                .reported
                .iter()
                .map(|d| serde_json::from_slice(d).unwrap())
                .collect();
            let sizes: Vec<usize> = docs
                .iter()
                .map(|d| d["result"]["events"].as_array().unwrap().len())
                .collect();
            assert_eq!(sizes, [EVENTS_PER_DOCUMENT, 501]);
            for (i, d) in docs.iter().enumerate() {
                assert_eq!(d["status"], EVENTS_STATUS);
                assert_eq!(d["task_id"], "sd-1");
                assert_eq!(d["result"]["jobid"], job);
                assert_eq!(d["result"]["seq"], i);
                assert_eq!(d["result"]["run"], docs[0]["result"]["run"]);
                let e = &d["result"]["events"][1];
                assert_eq!(e["state"], "created", "{e}");
                assert_eq!(e["type"], "file", "{e}");
                assert!(
                    e["mtime"].is_number() && e["mode"].is_number() && e["size"].is_number(),
                    "{e}"
                );
            }
        }
        assert_eq!(snapshots[0], snapshots[1], "a redelivered collect keeps its snapshot");
        assert_ne!(snapshots[1], snapshots[2], "another job's collect takes its own");
        let held = std::fs::read_dir(&fs.state).unwrap().flatten();
        assert_eq!(
            held.filter(|e| e.file_name().to_string_lossy().contains(".pending."))
                .count(),
            1
        );
    }
}
