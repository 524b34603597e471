//! `dynamo.tasks.snapdiff` and `dynamo.tasks.rotate_snapshot` as agent
//! tasks: a snapshot diff of one fileset whose changes go through the
//! workflow's filter rules into child tasks, batch by batch.
//!
//! Order matters when changes are applied elsewhere, so the run has two
//! phases. Deleted and moved paths come first (the diff emits them first);
//! their handlers get `stream_results=True` and `stream_to=<queue>` and
//! stream per-file results back to a queue this task reads. Only when every
//! one of them has reported its last batch (each message resets an idle
//! timeout, `snapdiff_stream_timeout`) are the created and updated batches
//! published. Then the run rotates, or rolls back if a streamed file failed
//! and `snappdiff_rotate_on_error` is false (the seed's spelling).

use super::celery::{TaskMessage, child_task};
use super::discovery::{ChildSink, Discovered, Inbox, input_paths};
use super::registry::Env;
use super::workflow::{self, Rule, RuleArgs, kwargs_with};
use crate::batch::Batcher;
use crate::entry::Fields;
use crate::snapdiff::diff::{Change, State};
use crate::snapdiff::output::{ExtraFields, change_entry, write_change_keys};
use crate::snapdiff::provider::{self, Kind, ProviderOptions};
use crate::snapdiff::run::{ChangeSink, SnapdiffOptions, rotate, snapdiff};
use crate::task::{surrogate, write_entry};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct SnapdiffArgs {
    #[serde(flatten)]
    rules: RuleArgs,
    #[serde(default)]
    skip_old_ctimes: bool,
    #[serde(default = "yes")]
    condense_moves: bool,
    #[serde(default)]
    extra_fields: Option<Vec<String>>,
    #[serde(default = "yes", alias = "snapdiff_rotate_on_error")]
    snappdiff_rotate_on_error: bool,
    #[serde(flatten)]
    fileset: FilesetArgs,
    #[serde(default)]
    hold: bool,
}

/// How to find and snapshot the fileset (ferry's own keyword arguments).
#[derive(Deserialize)]
struct FilesetArgs {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    prefix: Option<String>,
}

impl FilesetArgs {
    fn open(&self, path: &[u8], gpfs: &provider::gpfs::GpfsOptions) -> Result<Box<dyn provider::Provider>, String> {
        let kind = match self.provider.as_deref().unwrap_or("auto") {
            "auto" => Kind::Auto,
            "btrfs" => Kind::Btrfs,
            "gpfs" => Kind::Gpfs,
            "none" => Kind::None,
            other => return Err(format!("provider must be auto, btrfs, gpfs or none, not {other:?}")),
        };
        let opts = ProviderOptions {
            walk: false,
            gpfs: gpfs.clone(),
        };
        let p = Path::new(OsStr::from_bytes(path));
        provider::open(kind, p, &opts).map_err(|e| format!("{}: {e}", p.display()))
    }

    fn options(&self, env: &Env) -> SnapdiffOptions {
        let mut o = SnapdiffOptions {
            state_dir: self.state_dir.clone(),
            lock_threshold: Duration::from_secs(env.agent.lock_threshold),
            threads: env.agent.walk_threads,
            ..SnapdiffOptions::default()
        };
        if let Some(p) = &self.prefix {
            o.prefix = p.clone();
        }
        o
    }
}

/// Runs `dynamo.tasks.snapdiff` for `msg`.
pub fn snapdiff_task(
    msg: &TaskMessage,
    env: &Env,
    gpfs: &provider::gpfs::GpfsOptions,
    sink: &mut dyn ChildSink,
) -> Result<Discovered, String> {
    let started = crate::scan::now_iso8601();
    let roots = input_paths(msg)?;
    let [root] = &roots[..] else {
        return Err(format!(
            "snapdiff takes exactly one path (the fileset's junction), got {}",
            roots.len()
        ));
    };
    let args: SnapdiffArgs = msg.kwargs_as()?;
    let rules = args.rules.compile(&env.site, &env.queue)?;
    let extra = ExtraFields::parse(&args.extra_fields.clone().unwrap_or_default().join(","))?;
    let prov = args.fileset.open(&root.path, gpfs)?;
    let mut opts = args.fileset.options(env);
    opts.diff.condense_moves = args.condense_moves;
    opts.diff.skip_old_ctimes = args.skip_old_ctimes;
    opts.hold = true;
    let stream_to = format!("ferry.stream.{}", msg.id);
    let inbox = sink.subscribe(&stream_to)?;
    let live_root = prov.fileset().path.clone();
    let mut run = Phased {
        msg,
        env,
        sink,
        inbox,
        rules: &rules,
        jobid: msg.kwarg("jobid"),
        root: live_root.clone(),
        extra,
        stream_to,
        batchers: Vec::new(),
        children: Vec::new(),
        streaming: HashSet::new(),
        stream_failures: 0,
        streamed: 0,
        second_phase: false,
        matched: Vec::new(),
    };
    let mut log = |m: &str| tracing::info!(task = %msg.id, "{m}");
    let report = snapdiff(prov.as_ref(), &opts, &mut run, &mut log).map_err(|e| e.to_string())?;
    let (children, stream_failures, streamed) = (run.children, run.stream_failures, run.streamed);
    let mut report = report;
    if !args.hold {
        // The rotation's own report has no counts: keep the diff's.
        let rotated = rotate(
            prov.as_ref(),
            &opts,
            stream_failures == 0,
            args.snappdiff_rotate_on_error,
            &mut log,
        )
        .map_err(|e| format!("the diff was delivered but rotating failed: {e}"))?;
        report.outcome = rotated.outcome;
        report.warnings.extend(rotated.warnings);
    }
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"jobid\":");
    out.extend_from_slice(msg.kwarg("jobid").map_or("null", RawValue::get).as_bytes());
    out.extend_from_slice(b",\"queue\":");
    surrogate::encode(env.queue_name.as_bytes(), &mut out);
    out.extend_from_slice(b",\"paths\":[],\"status\":{\"task\":\"dynamo.tasks.snapdiff\",\"input_paths\":[");
    root.write_json(&mut out);
    out.extend_from_slice(b"],\"input_total\":1,\"summary\":");
    let mut s = serde_json::to_value(report.summary).expect("json");
    s["children"] = children.len().into();
    s["streamed"] = streamed.into();
    s["streamed_failures"] = stream_failures.into();
    out.extend_from_slice(s.to_string().as_bytes());
    out.extend_from_slice(b",\"details\":{},\"started\":");
    surrogate::encode(started.as_bytes(), &mut out);
    let snap = serde_json::json!({
        "snapshot": report.new_snapshot,
        "previous_snapshot": report.old_snapshot,
        "first_run": report.first_run,
        "outcome": report.outcome,
        "warnings": report.warnings,
    });
    out.extend_from_slice(
        format!(
            ",\"snapdiff\":{snap},\"has_dynamic_children\":{}}}}}",
            !children.is_empty()
        )
        .as_bytes(),
    );
    Ok(Discovered { result: out, children })
}

/// Runs `dynamo.tasks.rotate_snapshot`: ends a run held by `hold=True`,
/// rotating when `failed` is false or `snappdiff_rotate_on_error` is true,
/// otherwise rolling back.
pub fn rotate_task(msg: &TaskMessage, env: &Env, gpfs: &provider::gpfs::GpfsOptions) -> Result<Vec<u8>, String> {
    #[derive(Deserialize)]
    struct RotateArgs {
        #[serde(default)]
        failed: bool,
        #[serde(default = "yes", alias = "snapdiff_rotate_on_error")]
        snappdiff_rotate_on_error: bool,
        #[serde(flatten)]
        fileset: FilesetArgs,
    }
    let roots = input_paths(msg)?;
    let [root] = &roots[..] else {
        return Err(format!("rotate_snapshot takes exactly one path, got {}", roots.len()));
    };
    let args: RotateArgs = msg.kwargs_as()?;
    let prov = args.fileset.open(&root.path, gpfs)?;
    let opts = args.fileset.options(env);
    let mut log = |m: &str| tracing::info!(task = %msg.id, "{m}");
    let report = rotate(
        prov.as_ref(),
        &opts,
        !args.failed,
        args.snappdiff_rotate_on_error,
        &mut log,
    )
    .map_err(|e| e.to_string())?;
    let mut out = b"{\"jobid\":".to_vec();
    out.extend_from_slice(msg.kwarg("jobid").map_or("null", RawValue::get).as_bytes());
    out.extend_from_slice(b",\"paths\":[],\"status\":{\"task\":\"dynamo.tasks.rotate_snapshot\",\"input_paths\":[");
    root.write_json(&mut out);
    let snap = serde_json::json!({
        "snapshot": report.new_snapshot,
        "outcome": report.outcome,
        "warnings": report.warnings,
    });
    out.extend_from_slice(format!("],\"input_total\":1,\"snapdiff\":{snap}}}}}").as_bytes());
    Ok(out)
}

/// One stream message from a handler: `{"task_id", "last", "paths": [...]}`.
#[derive(Deserialize)]
struct StreamMessage {
    task_id: String,
    #[serde(default)]
    last: bool,
    #[serde(default)]
    paths: Vec<StreamedPath>,
}

#[derive(Deserialize)]
struct StreamedPath {
    #[serde(default)]
    state: String,
}

/// A rule (by index) and a change state: batches never mix states.
type BatchKey = (usize, State);

struct Phased<'a> {
    msg: &'a TaskMessage,
    env: &'a Env,
    sink: &'a mut dyn ChildSink,
    inbox: Box<dyn Inbox>,
    rules: &'a [Rule],
    jobid: Option<&'a RawValue>,
    root: Vec<u8>,
    extra: ExtraFields,
    stream_to: String,
    /// One batcher per (rule, state).
    batchers: Vec<(BatchKey, Batcher<Vec<u8>>)>,
    children: Vec<String>,
    streaming: HashSet<String>,
    stream_failures: u64,
    streamed: u64,
    second_phase: bool,
    matched: Vec<usize>,
}

fn streams(state: State) -> bool {
    matches!(state, State::Deleted | State::Moved)
}

impl Phased<'_> {
    fn publish(&mut self, rule: usize, state: State, batch: Vec<Vec<u8>>) -> Result<(), String> {
        let actions = &self.rules[rule].actions;
        let paths = batch.join(&b","[..]);
        let mut own = actions[0].kwargs.clone();
        if streams(state) {
            if !own.is_empty() {
                own.push(',');
            }
            own.push_str(&format!(
                "\"stream_results\":true,\"stream_to\":{}",
                serde_json::to_string(&self.stream_to).expect("json")
            ));
        }
        let kwargs = kwargs_with(&own, self.jobid, Some(&paths));
        let chain: Vec<_> = actions[1..].iter().rev().map(|a| a.signature(self.jobid)).collect();
        let out = child_task(&actions[0].task, &kwargs, self.msg, &chain, &self.env.node);
        let id = out.id.clone();
        self.sink.send(&actions[0].queue, out)?;
        if streams(state) {
            self.streaming.insert(id.clone());
        }
        self.children.push(id);
        Ok(())
    }

    fn flush(&mut self, phase_one: bool) -> Result<(), String> {
        let mut full = Vec::new();
        for ((rule, state), b) in &mut self.batchers {
            if streams(*state) == phase_one
                && let Some(batch) = b.flush()
            {
                full.push((*rule, *state, batch));
            }
        }
        for (rule, state, batch) in full {
            self.publish(rule, state, batch)?;
        }
        Ok(())
    }

    /// Waits until every streaming handler has sent its last batch.
    fn wait_for_streams(&mut self) -> Result<(), String> {
        let idle = self.env.agent.snapdiff_stream_timeout;
        let waited = self.streaming.len();
        while !self.streaming.is_empty() {
            let Some(body) = self.inbox.next(idle)? else {
                return Err(format!(
                    "no streamed results from {} delete/move task(s) for {}s (snapdiff_stream_timeout)",
                    self.streaming.len(),
                    idle.as_secs()
                ));
            };
            let m: StreamMessage = match serde_json::from_slice(&body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed stream message");
                    continue;
                }
            };
            self.streamed += m.paths.len() as u64;
            self.stream_failures += m.paths.iter().filter(|p| p.state == "failures").count() as u64;
            if m.last {
                self.streaming.remove(&m.task_id);
            }
        }
        if waited > 0 {
            tracing::info!(task = %self.msg.id, handlers = waited, paths = self.streamed, "delete and move handlers reported");
        }
        Ok(())
    }

    fn take(&mut self, c: &Change) -> Result<(), String> {
        if !streams(c.state) && !self.second_phase {
            self.flush(true)?;
            self.wait_for_streams()?;
            self.second_phase = true;
        }
        let (e, source) = change_entry(&self.root, c);
        let mut matched = std::mem::take(&mut self.matched);
        workflow::matching(self.rules, &e.path, e.file_type, c.state.as_str(), &mut matched);
        let mut obj = Vec::with_capacity(e.path.len() + 64);
        if !matched.is_empty() {
            write_entry(&e, Fields::PATH.with(Fields::SIZE), &mut obj);
            obj.pop();
            write_change_keys(c, source.as_deref(), self.extra, &mut obj);
            obj.push(b'}');
        }
        for &rule in &matched {
            let key = (rule, c.state);
            let i = match self.batchers.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    self.batchers.push((key, Batcher::new(self.env.agent.batch)));
                    self.batchers.len() - 1
                }
            };
            // One push can close two batches: publish all it hands back.
            let mut full = Vec::new();
            self.batchers[i].1.push(obj.clone(), e.data_size(), 0, |b| full.push(b));
            for batch in full {
                self.publish(rule, c.state, batch)?;
            }
        }
        self.matched = matched;
        Ok(())
    }
}

impl ChangeSink for Phased<'_> {
    fn change(&mut self, c: &Change) -> io::Result<()> {
        self.take(c).map_err(io::Error::other)
    }

    fn finish(&mut self) -> io::Result<()> {
        let all = (|| {
            if !self.second_phase {
                self.flush(true)?;
                self.wait_for_streams()?;
            }
            self.flush(false)
        })();
        all.map_err(io::Error::other)
    }
}
