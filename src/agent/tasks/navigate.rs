//! `dynamo.tasks.recursive_navigate`: walk the given paths, apply the
//! workflow's filter rules to each entry, cut each rule's paths into batches
//! by count and bytes, and publish one child task per batch for the rule's
//! first action (the rest of its actions ride along as a Celery chain)
//! while the walk goes on. When the job is cancelled the walk stops and the
//! task ends with what it published, its status saying `cancelled: true`.
//!
//! Two options change what is published:
//! - `min_age` (seconds): a file (any entry but a directory) whose
//!   contents or inode changed more recently than that is left alone and
//!   reported as aborted with the reason, so no action races a writer; the
//!   next run takes it.
//! - `dry_run`: nothing is published; the result's `status.plan` says,
//!   per rule, how many entries and bytes its actions would have taken.
//!
//! A long walk is split over the site's nodes (distributed discovery):
//! once it has walked alone for `walk_split_after`, and while its
//! discovery queue has fewer pieces waiting than consumers besides this
//! agent, it shares the directories it finds with them and sends them to
//! that queue as pieces ([`super::split`]): the same task on those
//! directories with `below: true` (walk what is below them; the parent
//! reported the directories themselves). A piece is a child of the walk
//! that sent it, so the hub counts it and its batches like any child, and
//! a piece may split again. Each directory is read by exactly one walk:
//! a directory handed over is not descended into here
//! ([`crate::walk::Handoff`]).
//! Rules, filters and batch limits travel unchanged in the piece's
//! arguments; each piece cuts its own batches, so a split walk sends at
//! most one part-filled batch per rule and piece more than one walk
//! would.

use super::context::{ChildSink, Input, SinkError, TaskEnv, TaskError, TaskOutput};
use super::publish::{BELOW, Batches, Publisher};
use super::rules::{self, BatchArgs, Rule, RuleArgs};
use super::split::Split;
use crate::config::PathMap;
use crate::entry::{Entry, Fields, FileType};
use crate::task::status::{Status, now_iso8601};
use crate::task::{PathObject, Summary, surrogate, write_entry};
use crate::walk::{Op, Walk, WalkError, WalkEvent, WalkOptions};
use serde::Deserialize;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Most failed paths listed in a discovery result's details; all are counted.
pub const MAX_LISTED_FAILURES: usize = 10_000;

/// The keyword arguments of `recursive_navigate` besides `paths` and `jobid`.
#[derive(Deserialize)]
pub struct NavigateArgs {
    /// A missing input path is passed on as a file instead of failing.
    #[serde(default)]
    pub skip_missing: bool,
    /// The workflow's rules.
    #[serde(flatten)]
    pub rules: RuleArgs,
    /// The site's batch settings, when the sender keeps them.
    #[serde(flatten)]
    pub batch: BatchArgs,
    /// Seconds since its last change below which a file is left alone.
    #[serde(default)]
    pub min_age: Option<u64>,
    /// Count what the rules would take; publish nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The paths are directories a split walk handed over: their own
    /// entries were reported by that walk, only what is below them is
    /// walked here ([`BELOW`]).
    #[serde(default)]
    pub below: bool,
}

/// What a dry run found for one rule.
#[derive(Clone, Copy, Debug, Default)]
struct Planned {
    entries: u64,
    bytes: u64,
}

/// The cut-off of `min_age`: entries changed after `since` are too young.
#[derive(Clone, Copy, Debug)]
struct MinAge {
    seconds: u64,
    since: (i64, u32),
    now: i64,
}

impl MinAge {
    fn new(seconds: u64) -> MinAge {
        let now = jiff::Timestamp::now();
        let since = now - jiff::SignedDuration::from_secs(seconds as i64);
        MinAge {
            seconds,
            since: (since.as_second(), since.subsec_nanosecond() as u32),
            now: now.as_second(),
        }
    }

    /// How many seconds ago `e` last changed, when that is too recent.
    fn too_young(&self, e: &Entry) -> Option<i64> {
        let m = e.meta.as_ref()?;
        let last = (m.mtime.sec, m.mtime.nsec).max((m.ctime.sec, m.ctime.nsec));
        (last > self.since).then(|| (self.now - last.0).max(0))
    }
}

/// A `PROGRESS` result document of task `id` (Celery's custom state: its
/// clients treat it as not ready): what the walk found so far.
fn progress_document(id: &str, jobid: Option<&serde_json::value::RawValue>, nav: &Navigation<'_>) -> Vec<u8> {
    let jobid: serde_json::Value = jobid
        .and_then(|j| serde_json::from_str(j.get()).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({
        "status": "PROGRESS", "task_id": id, "children": [], "traceback": null, "date_done": null,
        "result": {"jobid": jobid, "files": nav.files, "dirs": nav.dirs, "bytes": nav.bytes,
                   "children_sent": nav.publisher.sent()},
    }))
    .expect("json")
}

/// Runs `recursive_navigate`, publishing children to `sink`.
pub fn recursive_navigate(
    input: &Input<'_>,
    args: &NavigateArgs,
    env: &TaskEnv,
    sink: &mut dyn ChildSink,
) -> Result<TaskOutput, TaskError> {
    let started = now_iso8601();
    let rules = args.rules.compile(&env.site, &env.queue)?;
    let limits = args.batch.apply(env.batch)?;
    // Sizes are needed only when batches are limited by bytes
    // (`file_batch_gb`); without that limit the walk needs no stat at all,
    // since types come from the directory entries, and runs several times
    // faster. Path objects then carry no `size`.
    let sizes = limits.max_data_bytes.is_some();
    // A dry run reports bytes; `min_age` needs the times.
    let stat = sizes || args.dry_run || args.min_age.is_some();
    let mut nav = Navigation {
        publisher: Publisher::new(input.msg, env, input.jobid, sink),
        rules: &rules,
        // Remainders go out in rule order, whichever rule matched first.
        batches: Batches::with_keys(limits, 0..rules.len()),
        matched: Vec::new(),
        fields: if sizes {
            Fields::PATH.with(Fields::SIZE)
        } else {
            Fields::PATH
        },
        files: 0,
        dirs: 0,
        bytes: 0,
        min_age: args.min_age.filter(|s| *s > 0).map(MinAge::new),
        young: 0,
        young_listed: Vec::new(),
        plan: args.dry_run.then(|| vec![Planned::default(); rules.len()]),
        paths: &env.paths,
    };
    let mut reported = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut failed = 0u64;
    let mut fail = |path: &[u8], why: String, failures: &mut Vec<u8>| {
        failed += 1;
        if (failed as usize) <= MAX_LISTED_FAILURES {
            list_path(failures, path, &why);
        }
    };

    let mut walk_roots = Vec::new();
    let mut missing = 0u64;
    // Only a missing root changes anything here; the walk stats the others.
    // A piece's roots are not looked up first: on a filesystem whose every
    // lookup is a round trip that delayed a piece of 68 roots by 180 ms of
    // its 340 (latencyfs at 2 ms; docs/benchmarks.md, "Scale-out"). The
    // walk reports those that vanished, and they are passed over below.
    let gone = if args.skip_missing && !args.below {
        vanished(&input.paths, env.walk_threads)
    } else {
        vec![false; input.paths.len()]
    };
    for (r, gone) in input.paths.iter().zip(gone) {
        match gone {
            true => {
                missing += 1;
                nav.entry(&Entry {
                    path: r.path.clone(),
                    file_type: FileType::File,
                    ino: 0,
                    parent: 0,
                    meta: None,
                    generation: None,
                })?;
            }
            _ => walk_roots.push(r.path.clone()),
        }
    }
    // A dry run's plan is one walk's; it is never split.
    let mut split = match env.walk_split_after {
        Some(after) if !args.dry_run => Some(Split::new(after)),
        _ => None,
    };
    let mut opts = WalkOptions {
        threads: env.walk_threads,
        stat,
        report_roots: !args.below,
        handoff: split.as_ref().map(Split::handoff),
        ..WalkOptions::default()
    };
    // One rule's patterns prune the walk itself, unless this site maps
    // paths: patterns name wire paths, and the walker sees local ones.
    if let [only] = &rules[..]
        && env.paths.is_empty()
    {
        opts.filter = only.filter().clone();
    }
    let mut summary = Summary::default();
    if !walk_roots.is_empty() {
        if let Some(split) = &mut split {
            split.poll(&mut nav.publisher, env)?;
        }
        let mut walk = Walk::start(walk_roots, opts).map_err(|source| TaskError::Walk {
            context: "cannot start the walk",
            source,
        })?;
        // On a slow filesystem the walk's first batch goes out with the
        // first entries that fill one at all: a full batch may need many
        // directories, each a few round trips away, and the job's first
        // operations wait for it. A piece's first batch is no job's first.
        let mut first_sent = args.below;
        while let Some(ev) = walk.next() {
            match ev {
                WalkEvent::Entries(entries) => {
                    for e in &entries {
                        nav.entry(e)?;
                    }
                    if !first_sent && walk.slow() {
                        nav.finish()?;
                        first_sent = nav.publisher.sent() > 0;
                    }
                }
                // A handed-over directory removed since: a race with a
                // user, as for any entry that vanishes during a walk.
                WalkEvent::Error(e) if args.below && vanished_root(&e, &input.paths) => {}
                WalkEvent::Error(e) => {
                    let wire = env.paths.to_wire(&e.path);
                    fail(wire.as_deref().unwrap_or(&e.path), e.to_string(), &mut failures)
                }
            }
            if let Some(split) = &mut split {
                split.poll(&mut nav.publisher, env)?;
            }
            if reported.elapsed() >= env.progress_every {
                let doc = progress_document(&input.msg.id, input.jobid, &nav);
                nav.publisher.sink().progress(&input.msg.id, doc);
                reported = std::time::Instant::now();
            }
            // Children are withheld from the first batch after a cancel
            // on; the walk stops at the end of this chunk of entries.
            if nav.publisher.cancelled() {
                walk.cancel();
                break;
            }
        }
        summary = walk.finish().map_err(|source| TaskError::Walk {
            context: "the walk failed",
            source,
        })?;
        // What the walk handed over after the last poll.
        if let Some(split) = &mut split {
            split.send(&mut nav.publisher, env)?;
        }
    }
    nav.finish()?;
    summary.files += missing;
    let cancelled = nav.publisher.was_cancelled();
    let children = nav.publisher.into_children();

    let mut counts = serde_json::to_value(summary).expect("json");
    counts["failures"] = failed.into();
    counts["aborted"] = nav.young.into();
    counts["children"] = children.count.into();
    // The hub keeps a job's walks open by these: pieces sent, less this
    // walk when it is a piece (`hub::store::results`).
    counts["pieces"] = split.as_ref().map_or(0, Split::pieces).into();
    counts["piece"] = args.below.into();
    let mut details = b"{\"failures\":[".to_vec();
    details.extend_from_slice(&failures);
    details.extend_from_slice(b"],\"aborted\":[");
    details.extend_from_slice(&nav.young_listed);
    details.extend_from_slice(b"]}");
    let mut status = Status::new(input.name.as_str());
    status
        .input_paths(&input.paths)
        .value("summary", &counts)
        .raw("details", &details)
        .string("started", &started)
        .value("has_dynamic_children", &(children.count > 0))
        .value("cancelled", &cancelled)
        .value(BELOW, &args.below);
    if let Some(plan) = &nav.plan {
        let plan: Vec<serde_json::Value> = rules
            .iter()
            .zip(plan)
            .enumerate()
            .map(|(i, (r, p))| {
                serde_json::json!({
                    "rule": i,
                    "actions": r.actions.iter().map(|a| a.task.as_str()).collect::<Vec<_>>(),
                    "entries": p.entries,
                    "bytes": p.bytes,
                })
            })
            .collect();
        status.value("dry_run", &true).value("plan", &plan);
    }
    Ok(TaskOutput {
        result: status.into_result(input.jobid, Some(&env.queue_name), b""),
        children,
    })
}

/// One walk's routing of entries into batches and child tasks.
struct Navigation<'a> {
    publisher: Publisher<'a>,
    rules: &'a [Rule],
    batches: Batches<usize>,
    matched: Vec<usize>,
    fields: Fields,
    /// Found so far, for progress reports.
    files: u64,
    dirs: u64,
    bytes: u64,
    /// `min_age`, when set.
    min_age: Option<MinAge>,
    /// Files left alone as too young, and the first of them as JSON.
    young: u64,
    young_listed: Vec<u8>,
    /// A dry run's counts per rule (publishing nothing).
    plan: Option<Vec<Planned>>,
    /// This site's mount points of the wire paths.
    paths: &'a PathMap,
}

/// Appends `{"path": ..., "message": [why]}` to a JSON list's items.
/// Whether the walk failed on one of its `roots` because it does not exist.
fn vanished_root(e: &WalkError, roots: &[PathObject]) -> bool {
    e.op == Op::Stat && e.errno() == Some(libc::ENOENT) && roots.iter().any(|r| r.path == e.path)
}

/// Which of `paths` do not exist, looked up `threads` at a time (each
/// lookup may be a round trip to a metadata server).
fn vanished(paths: &[PathObject], threads: usize) -> Vec<bool> {
    let gone = |p: &PathObject| {
        std::fs::symlink_metadata(OsStr::from_bytes(&p.path)).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };
    let share = paths.len().div_ceil(threads.max(1)).max(1);
    if share >= paths.len() {
        return paths.iter().map(gone).collect();
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = paths
            .chunks(share)
            .map(|part| s.spawn(move || part.iter().map(gone).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("a lookup thread panicked"))
            .collect()
    })
}

fn list_path(out: &mut Vec<u8>, path: &[u8], why: &str) {
    if !out.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(b"{\"path\":");
    surrogate::encode(path, out);
    out.extend_from_slice(b",\"message\":[");
    surrogate::encode(why.as_bytes(), out);
    out.extend_from_slice(b"]}");
}

impl Navigation<'_> {
    /// Takes one walked entry: counted, matched against the rules and
    /// batched under its wire path.
    fn entry(&mut self, e: &Entry) -> Result<(), SinkError> {
        let mapped;
        let e = match self.paths.to_wire(&e.path) {
            Some(path) => {
                mapped = Entry { path, ..e.clone() };
                &mapped
            }
            None => e,
        };
        match e.file_type {
            FileType::File => {
                self.files += 1;
                self.bytes += e.data_size();
            }
            FileType::Directory => self.dirs += 1,
            _ => {}
        }
        if let Some(m) = &self.min_age
            && e.file_type != FileType::Directory
            && let Some(age) = m.too_young(e)
        {
            self.young += 1;
            if self.young as usize <= MAX_LISTED_FAILURES {
                let why = format!(
                    "changed {age} s ago, less than the workflow's min_age of {} s: left alone so as not to race a writer",
                    m.seconds
                );
                list_path(&mut self.young_listed, &e.path, &why);
            }
            return Ok(());
        }
        let mut matched = std::mem::take(&mut self.matched);
        rules::matching(self.rules, &e.path, e.file_type, "all", &mut matched);
        if let Some(plan) = &mut self.plan {
            for &i in &matched {
                plan[i].entries += 1;
                plan[i].bytes += e.data_size();
            }
        } else if !matched.is_empty() {
            let mut obj = Vec::with_capacity(e.path.len() + 40);
            write_entry(e, self.fields, &mut obj);
            let (rules, publisher) = (self.rules, &mut self.publisher);
            let mut publish =
                |rule: usize, batch: Vec<Vec<u8>>| publisher.batch(&rules[rule].actions, &batch, "").map(drop);
            for &i in &matched {
                self.batches.push(i, obj.clone(), e.data_size(), &mut publish)?;
            }
        }
        self.matched = matched;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        let (rules, publisher) = (self.rules, &mut self.publisher);
        self.batches.flush(|_| true, &mut |rule, batch| {
            publisher.batch(&rules[rule].actions, &batch, "").map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::celery::TaskMessage;
    use crate::agent::tasks::context::memory::{self, Memory};
    use crate::agent::tasks::rules::{Context, Routing, RuleSpec};
    use crate::agent::tasks::{Kind, Request};
    use crate::batch::BatchLimits;
    use crate::task::{PathObject, TaskName, parse_paths};
    use std::os::unix::ffi::OsStringExt;
    use std::time::Duration;

    fn input_paths(m: &TaskMessage) -> Result<Vec<PathObject>, crate::task::ArgumentError> {
        parse_paths(m.kwarg("paths"))
    }

    /// Runs the task as the agent would: decoded once, then dispatched.
    fn navigate(msg: &TaskMessage, env: &TaskEnv, sink: &mut Memory) -> Result<TaskOutput, TaskError> {
        let Request { input, kind } = Request::decode(msg)?;
        let Kind::Navigate(args) = kind else {
            panic!("not a navigate request")
        };
        recursive_navigate(&input, &args, env, sink)
    }

    fn message(kwargs: serde_json::Value) -> TaskMessage {
        memory::message(TaskName::RecursiveNavigate, "parent", kwargs)
    }

    fn env() -> TaskEnv {
        memory::env(3, Duration::from_secs(1))
    }

    #[test]
    fn a_walk_reports_its_progress_while_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..4 {
            let sub = dir.path().join(format!("d{d}"));
            std::fs::create_dir(&sub).unwrap();
            for i in 0..5 {
                std::fs::write(sub.join(format!("f{i}")), b"xy").unwrap();
            }
        }
        let kwargs = serde_json::json!({
            "paths": [dir.path().to_str().unwrap()], "jobid": 7, "file_batch_gb": 1,
            "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
        });
        let mut sink = Memory::default();
        let mut env = env();
        env.progress_every = Duration::ZERO;
        let out = navigate(&message(kwargs), &env, &mut sink).unwrap();
        assert!(!sink.progress.is_empty(), "no report");
        let reports: Vec<serde_json::Value> = sink
            .progress
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        for r in &reports {
            assert_eq!(
                (r["status"].as_str(), r["task_id"].as_str()),
                (Some("PROGRESS"), Some("parent")),
                "{r}"
            );
            assert_eq!(r["result"]["jobid"], 7, "{r}");
        }
        // Counts only grow, and never past the walk's.
        let files: Vec<u64> = reports.iter().map(|r| r["result"]["files"].as_u64().unwrap()).collect();
        assert!(files.windows(2).all(|w| w[0] <= w[1]), "{files:?}");
        assert!(*files.last().unwrap() <= 20);
        let last = &reports.last().unwrap()["result"];
        assert_eq!(
            last["bytes"].as_u64().unwrap(),
            last["files"].as_u64().unwrap() * 2,
            "{last}"
        );
        assert!(last["children_sent"].as_u64().unwrap() <= out.children.count);
    }

    #[test]
    fn child_ids_can_be_left_out_of_the_result() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..7 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        for (keep, ids) in [(serde_json::json!(true), 3), (serde_json::json!(false), 0)] {
            let kwargs = serde_json::json!({
                "paths": [dir.path().to_str().unwrap()],
                "children_in_result": keep,
                "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
            });
            let mut sink = Memory::default();
            let out = navigate(&message(kwargs), &env(), &mut sink).unwrap();
            assert_eq!(sink.sent.len(), 3, "batches of 3");
            assert_eq!((out.children.ids.len(), out.children.count), (ids, 3), "keep {keep}");
            let r: serde_json::Value = serde_json::from_slice(&out.result).unwrap();
            assert_eq!(r["status"]["has_dynamic_children"], true, "{r}");
            assert_eq!(r["status"]["cancelled"], false, "{r}");
        }
    }

    #[test]
    fn a_cancelled_job_publishes_nothing_more_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..30 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let kwargs = serde_json::json!({
            "paths": [dir.path().to_str().unwrap()],
            "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
        });
        // Ten batches of 3 to send; the job is cancelled once two went out.
        let mut sink = Memory {
            cancel_after: Some(2),
            ..Memory::default()
        };
        let mut env = env();
        env.cancel = sink.cancel();
        let out = navigate(&message(kwargs), &env, &mut sink).unwrap();
        assert_eq!(sink.sent.len(), 2);
        assert_eq!((out.children.count, out.children.ids.len()), (2, 2));
        let r: serde_json::Value = serde_json::from_slice(&out.result).unwrap();
        assert_eq!(r["status"]["cancelled"], true, "{r}");
        assert_eq!(r["status"]["summary"]["children"], 2, "{r}");
    }

    #[test]
    fn batch_settings_in_the_arguments_override_the_agents() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let run = |extra: serde_json::Value| {
            let mut kwargs = serde_json::json!({
                "paths": [dir.path().to_str().unwrap()],
                "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
            });
            kwargs
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let mut sink = Memory::default();
            navigate(&message(kwargs), &env(), &mut sink).map(|_| {
                sink.sent
                    .iter()
                    .map(|(_, m)| input_paths(m).unwrap().len())
                    .collect::<Vec<_>>()
            })
        };
        // The agent's own: batches of 3.
        assert_eq!(run(serde_json::json!({})).unwrap(), [3, 3, 3, 1]);
        // The sender's: batches of 4, without dynamic sizing.
        let four = serde_json::json!({"file_batch_size": 4, "enable_auto_file_batch_sizing": false});
        assert_eq!(run(four).unwrap(), [4, 4, 2]);
        // A byte limit of 2 bytes: sizes are read, two 1-byte files a batch.
        let bytes = serde_json::json!({"file_batch_size": 100, "file_batch_gb": 0.000000002});
        assert_eq!(run(bytes).unwrap(), [2, 2, 2, 2, 2]);
        for bad in [
            serde_json::json!({"file_batch_size": 0}),
            serde_json::json!({"file_batch_gb": -1.0}),
            serde_json::json!({"file_batch_size": "ten"}),
        ] {
            let e = run(bad.clone()).unwrap_err();
            assert_eq!(e.exception().0, "InvalidArguments", "{bad}: {e}");
        }
    }

    /// Runs `first` and every piece it (or a piece) sends, as the site's
    /// other agents would; returns each walk's result and every batch.
    fn split_walk(first: TaskMessage, consumers: u32) -> (Vec<serde_json::Value>, Vec<TaskMessage>) {
        let mut env = env();
        env.walk_split_after = Some(Duration::ZERO);
        let (mut results, mut batches, mut todo) = (Vec::new(), Vec::new(), vec![first]);
        while let Some(msg) = todo.pop() {
            let mut sink = Memory {
                queue: Some(crate::agent::tasks::QueueCounts { messages: 0, consumers }),
                ..Memory::default()
            };
            let out = navigate(&msg, &env, &mut sink).unwrap();
            results.push(serde_json::from_slice(&out.result).unwrap());
            for (queue, m) in sink.sent {
                match m.task.as_str() {
                    "dynamo.tasks.recursive_navigate" => {
                        assert_eq!(queue, "s1.default#discovery");
                        assert_eq!(m.kwarg("below").map(|v| v.get()), Some("true"));
                        todo.push(m)
                    }
                    _ => batches.push(m),
                }
            }
        }
        (results, batches)
    }

    #[test]
    fn a_split_walk_reads_every_directory_once_and_batches_every_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let mut files = Vec::new();
        let mut dirs = 1;
        for a in 0..8 {
            for b in 0..8 {
                let d = root.join(format!("d{a}")).join(format!("e{b}"));
                std::fs::create_dir_all(&d).unwrap();
                dirs += 1 + (b == 0) as u64;
                for name in [b"f\nnewline".as_slice(), b"g\xff", b"h"] {
                    let p = d.join(OsStr::from_bytes(name));
                    std::fs::write(&p, b"x").unwrap();
                    files.push(p.into_os_string().into_vec());
                }
            }
        }
        std::fs::create_dir(root.join("d0/empty")).unwrap();
        dirs += 1;
        let kwargs = serde_json::json!({
            "paths": [root.to_str().unwrap()], "jobid": 3,
            "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
        });
        let (results, batches) = split_walk(message(kwargs.clone()), 4);
        assert!(results.len() > 1, "the walk was not split");
        let mut batched: Vec<Vec<u8>> = batches
            .iter()
            .flat_map(|m| input_paths(m).unwrap().into_iter().map(|p| p.path))
            .collect();
        batched.sort();
        files.sort();
        assert_eq!(batched, files, "each file in exactly one batch");
        let sum = |key: &str| -> u64 {
            results
                .iter()
                .map(|r| r["status"]["summary"][key].as_u64().unwrap())
                .sum()
        };
        assert_eq!(
            (sum("files"), sum("dirs"), sum("empty_dirs")),
            (files.len() as u64, dirs, 1)
        );
        // Every walk but the first is a piece, announced by its parent,
        // and each says it is one.
        assert_eq!(sum("pieces") as usize, results.len() - 1);
        let pieces = results.iter().filter(|r| r["status"]["below"] == true).count();
        let said = results
            .iter()
            .filter(|r| r["status"]["summary"]["piece"] == true)
            .count();
        assert_eq!((pieces, said), (results.len() - 1, results.len() - 1));
        // What the hub keeps open (pieces, less one per piece) is zero.
        assert_eq!(sum("pieces") as usize, said);
        for b in &batches {
            assert_eq!(b.kwarg("jobid").map(|v| v.get()), Some("3"));
        }
        // With no other consumer on the queue, the same walk stays whole.
        let (results, _) = split_walk(message(kwargs), 1);
        assert_eq!(results.len(), 1);
    }

    #[test]
    fn a_piece_passes_over_a_root_removed_since_it_was_handed_over_and_a_walk_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, gone, b) = (dir.path().join("a"), dir.path().join("gone"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
        }
        let roots: Vec<&str> = [&a, &gone, &b].iter().map(|p| p.to_str().unwrap()).collect();
        let run = |below: bool| {
            let kwargs = serde_json::json!({
                "paths": roots, "below": below,
                "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
            });
            let mut sink = Memory::default();
            let out = navigate(&message(kwargs), &env(), &mut sink).unwrap();
            let r: serde_json::Value = serde_json::from_slice(&out.result).unwrap();
            let mut batched: Vec<Vec<u8>> = sink
                .sent
                .iter()
                .flat_map(|(_, m)| input_paths(m).unwrap().into_iter().map(|p| p.path))
                .collect();
            batched.sort();
            (r, batched)
        };
        let files = vec![
            a.join("f").into_os_string().into_vec(),
            b.join("f").into_os_string().into_vec(),
        ];
        // The piece is not told apart from a walk by a lookup of its roots
        // before it starts: the walk's own error for the root is dropped.
        let (r, batched) = run(true);
        assert_eq!(r["status"]["summary"]["failures"], 0, "{r}");
        assert_eq!(batched, files);
        // A walk that was sent the same paths reports the missing one.
        let (r, batched) = run(false);
        assert_eq!(r["status"]["summary"]["failures"], 1, "{r}");
        assert!(r.to_string().contains("gone"), "{r}");
        assert_eq!(batched, files);
    }

    #[test]
    fn batches_rules_chains_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for i in 0..7 {
            std::fs::write(d.join(format!("f{i}")), b"x").unwrap();
        }
        std::fs::write(d.join("sub/skip.tmp"), b"x").unwrap();
        let missing = d.join("gone");
        let kwargs = serde_json::json!({
            "paths": [d.to_str().unwrap(), missing.to_str().unwrap()],
            "jobid": 5,
            "skip_missing": true,
            "fields": {"ep": "archive"},
            "filter_rules": [
                {"state": "all", "type": "file", "exclude": ["*.tmp"], "action": [
                    {"name": "dynamo.tasks.migrate", "endpoint": "*ep"},
                    {"name": "dynamo.tasks.recall", "queue": "q2"}]},
                {"state": "all", "type": "directory", "action": [{"name": "dynamo.tasks.stat_paths", "site": "s9"}]},
            ],
        });
        let mut sink = Memory::default();
        let out = navigate(&message(kwargs), &env(), &mut sink).unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.result).unwrap();
        let st = &r["status"];
        assert_eq!(r["jobid"], 5);
        assert_eq!(st["has_dynamic_children"], true);
        // 8 files on disk plus the missing one taken as a file.
        assert_eq!(st["summary"]["files"], 9, "{r}");
        assert_eq!(st["summary"]["dirs"], 2, "{r}");
        assert_eq!(out.children.ids.len(), sink.sent.len());
        assert_eq!(out.children.count, sink.sent.len() as u64);

        let migrate: Vec<&TaskMessage> = sink
            .sent
            .iter()
            .filter(|(q, _)| q == "s1.default#worker")
            .map(|(_, m)| m)
            .collect();
        let stat: Vec<&TaskMessage> = sink
            .sent
            .iter()
            .filter(|(q, _)| q == "s9.default#worker")
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            migrate.len() + stat.len(),
            sink.sent.len(),
            "{:?}",
            sink.sent.iter().map(|x| &x.0).collect::<Vec<_>>()
        );
        // 7 files + the missing one, 3 per batch; the .tmp file is excluded.
        let mut files = Vec::new();
        for m in &migrate {
            assert_eq!(m.task, "dynamo.tasks.migrate");
            assert_eq!(m.parent_id.as_deref(), Some("parent"));
            assert_eq!(m.kwarg("endpoint").unwrap().get(), "\"archive\"");
            assert_eq!(m.kwarg("jobid").unwrap().get(), "5");
            assert_eq!(m.chain.len(), 1);
            assert_eq!(m.chain[0].task, "dynamo.tasks.recall");
            assert_eq!(
                m.chain[0].options.as_ref().unwrap().queue.as_deref(),
                Some("s1.q2#worker")
            );
            let paths = input_paths(m).unwrap();
            assert!(paths.len() <= 3);
            files.extend(paths.into_iter().map(|p| p.path));
        }
        files.sort();
        assert_eq!(files.len(), 8, "{files:?}");
        assert!(files.iter().all(|f| !f.ends_with(b".tmp")));
        assert!(files.contains(&missing.to_str().unwrap().as_bytes().to_vec()));
        let dirs: usize = stat.iter().map(|m| input_paths(m).unwrap().len()).sum();
        assert_eq!(dirs, 2);
        // No byte limit: the walk did not stat, and path objects have no size.
        assert!(!migrate[0].kwarg("paths").unwrap().get().contains("size"));
    }

    #[test]
    fn a_byte_limit_reads_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [("a", 600usize), ("b", 600), ("c", 10)] {
            std::fs::write(dir.path().join(name), vec![b'x'; len]).unwrap();
        }
        let mut env = env();
        env.batch = BatchLimits::from_seed(40, 0.000001, false);
        let kwargs = serde_json::json!({
            "paths": [dir.path().to_str().unwrap()],
            "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
        });
        let mut sink = Memory::default();
        navigate(&message(kwargs), &env, &mut sink).unwrap();
        // 1,000 bytes per batch: a and b cannot share one.
        assert_eq!(
            sink.sent.len(),
            2,
            "{:?}",
            sink.sent
                .iter()
                .map(|(_, m)| m.kwarg("paths").unwrap().get().to_string())
                .collect::<Vec<_>>()
        );
        assert!(sink.sent[0].1.kwarg("paths").unwrap().get().contains("\"size\":600"));
    }

    /// A file at least as big as the byte limit, after a partly filled
    /// batch, closes two batches in one push; both are published.
    #[test]
    fn a_push_that_closes_two_batches_publishes_both() {
        let mut env = env();
        env.batch = BatchLimits::from_seed(40, 0.000001, false);
        let specs: Vec<RuleSpec> =
            serde_json::from_str(r#"[{"state":"all","type":"file","action":[{"name":"dynamo.tasks.stat_paths"}]}]"#)
                .unwrap();
        let routing = Routing {
            site: "s1".into(),
            queue: "default".into(),
        };
        let rules = rules::compile(&specs, &Context::default(), &routing).unwrap();
        let msg = message(serde_json::json!({"paths": ["/x"]}));
        let mut sink = Memory::default();
        let mut run = Navigation {
            publisher: Publisher::new(&msg, &env, None, &mut sink),
            rules: &rules,
            batches: Batches::new(env.batch),
            matched: Vec::new(),
            fields: Fields::PATH.with(Fields::SIZE),
            files: 0,
            dirs: 0,
            bytes: 0,
            min_age: None,
            young: 0,
            young_listed: Vec::new(),
            plan: None,
            paths: &env.paths,
        };
        for (name, size) in [("/x/small", 10), ("/x/huge", 3_000_000_000u64), ("/x/last", 10)] {
            let meta = crate::sys::FileStat {
                size,
                mode: libc::S_IFREG | 0o644,
                ..Default::default()
            };
            run.entry(&Entry {
                path: name.as_bytes().to_vec(),
                file_type: FileType::File,
                ino: 1,
                parent: 0,
                meta: Some(meta),
                generation: None,
            })
            .unwrap();
        }
        run.finish().unwrap();
        drop(run);
        let batches: Vec<Vec<Vec<u8>>> = sink
            .sent
            .iter()
            .map(|(_, m)| input_paths(m).unwrap().into_iter().map(|p| p.path).collect())
            .collect();
        assert_eq!(
            batches,
            [
                vec![b"/x/small".to_vec()],
                vec![b"/x/huge".to_vec()],
                vec![b"/x/last".to_vec()]
            ]
        );
    }

    /// The walk meets the root directory before any file, but the last,
    /// partly filled batches are published in rule order.
    #[test]
    fn remainders_are_published_in_rule_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let kwargs = serde_json::json!({
            "paths": [dir.path().to_str().unwrap()],
            "filter_rules": [
                {"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.migrate", "endpoint": "e"}]},
                {"state": "all", "type": "directory", "action": [{"name": "dynamo.tasks.stat_paths"}]},
            ],
        });
        let mut sink = Memory::default();
        navigate(&message(kwargs), &env(), &mut sink).unwrap();
        let order: Vec<&str> = sink.sent.iter().map(|(_, m)| m.task.as_str()).collect();
        assert_eq!(order, ["dynamo.tasks.migrate", "dynamo.tasks.stat_paths"]);
    }

    #[test]
    fn bad_arguments_fail_the_task() {
        let env = env();
        let mut sink = Memory::default();
        for (kwargs, why) in [
            (serde_json::json!({"filter_rules": []}), "no `paths`"),
            (serde_json::json!({"paths": ["/"]}), "no filter_rules"),
            (serde_json::json!({"paths": [5], "filter_rules": []}), "paths[0]"),
            (
                serde_json::json!({"paths": ["/"], "skip_missing": "yes", "filter_rules": []}),
                "`skip_missing`",
            ),
        ] {
            let e = navigate(&message(kwargs), &env, &mut sink).err().unwrap().to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(sink.sent.is_empty());
    }

    #[test]
    fn a_dry_run_counts_each_rules_entries_and_bytes_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6 {
            std::fs::write(dir.path().join(format!("f{i}.big")), vec![b'x'; 1000 + i]).unwrap();
            std::fs::write(dir.path().join(format!("f{i}.txt")), b"abc").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let kwargs = serde_json::json!({
            "paths": [dir.path().to_str().unwrap()], "dry_run": true,
            "filter_rules": [
                {"state": "all", "type": "file", "include": ["*.big"], "action": [{"name": "dynamo.tasks.migrate"}, {"name": "dynamo.tasks.stat_paths"}]},
                {"state": "all", "type": "all", "action": [{"name": "dynamo.tasks.stat_paths"}]},
            ],
        });
        let mut sink = Memory::default();
        let out = navigate(&message(kwargs), &env(), &mut sink).unwrap();
        assert!(sink.sent.is_empty(), "a dry run published {} tasks", sink.sent.len());
        let r: serde_json::Value = serde_json::from_slice(&out.result).unwrap();
        let st = &r["status"];
        assert_eq!(st["dry_run"], true, "{r}");
        assert_eq!(
            st["plan"],
            serde_json::json!([
                {"rule": 0, "actions": ["dynamo.tasks.migrate", "dynamo.tasks.stat_paths"], "entries": 6, "bytes": 6015},
                // Every entry: 12 files, `sub` and the root directory.
                {"rule": 1, "actions": ["dynamo.tasks.stat_paths"], "entries": 14, "bytes": 6033},
            ]),
            "{r}"
        );
        assert_eq!(st["summary"]["children"], 0, "{r}");
    }

    #[test]
    fn files_changed_within_min_age_are_left_alone_and_reported_as_aborted() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        // Fresh files are all too young for a minute.
        let run = |min_age: u64| {
            let kwargs = serde_json::json!({
                "paths": [dir.path().to_str().unwrap()], "min_age": min_age,
                "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
            });
            let mut sink = Memory::default();
            let out = navigate(&message(kwargs), &env(), &mut sink).unwrap();
            let sent: usize = sink.sent.iter().map(|(_, m)| input_paths(m).unwrap().len()).sum();
            let r: serde_json::Value = serde_json::from_slice(&out.result).unwrap();
            (sent, r)
        };
        let (sent, r) = run(60);
        assert_eq!(sent, 0, "{r}");
        let st = &r["status"];
        assert_eq!(st["summary"]["aborted"], 5, "{r}");
        let listed = st["details"]["aborted"].as_array().unwrap();
        assert_eq!(listed.len(), 5, "{r}");
        let why = listed[0]["message"][0].as_str().unwrap();
        assert!(why.contains("less than the workflow's min_age of 60 s"), "{why}");
        // Backdated contents do not help: the inode changed (ctime) too.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("f0"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(run(60).1["status"]["summary"]["aborted"], 5);
        // Files that settled for longer than min_age go through.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        std::fs::write(dir.path().join("f4"), b"again").unwrap();
        let (sent, r) = run(2);
        assert_eq!(sent, 4, "{r}");
        let listed = r["status"]["details"]["aborted"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{r}");
        assert!(listed[0]["path"].as_str().unwrap().ends_with("/f4"), "{r}");
        // Without min_age nothing is aborted.
        let (sent, r) = run(0);
        assert_eq!((sent, &r["status"]["summary"]["aborted"]), (5, &serde_json::json!(0)));
    }
}
