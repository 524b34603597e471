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
use crate::task::{Summary, surrogate, write_entry};
use crate::walk::{Op, Walk, WalkError, WalkEvent, WalkOptions};
use rustc_hash::FxHashSet;
use serde::Deserialize;

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

    let walk_roots: Vec<Vec<u8>> = input.paths.iter().map(|r| r.path.clone()).collect();
    let mut missing = 0u64;
    // Roots are not looked up before the walk, which stats them in
    // parallel: on a filesystem whose every lookup is a round trip, looking
    // up a piece's 68 roots one by one took 180 ms of its 340 (latencyfs at
    // 2 ms; docs/benchmarks.md, "Scale-out"). A root the walk finds missing
    // is taken as a file with `skip_missing`, and passed over by a piece.
    let roots: FxHashSet<&[u8]> = if args.below || args.skip_missing {
        input.paths.iter().map(|r| r.path.as_slice()).collect()
    } else {
        FxHashSet::default()
    };
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
                WalkEvent::Error(e) if args.below && missing_root(&e, &roots) => {}
                WalkEvent::Error(e) if args.skip_missing && missing_root(&e, &roots) => {
                    missing += 1;
                    nav.entry(&Entry {
                        path: e.path,
                        file_type: FileType::File,
                        ino: 0,
                        parent: 0,
                        meta: None,
                        generation: None,
                    })?;
                }
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

/// Whether the walk failed on one of its `roots` because it does not exist.
fn missing_root(e: &WalkError, roots: &FxHashSet<&[u8]>) -> bool {
    e.op == Op::Stat && e.errno() == Some(libc::ENOENT) && roots.contains(e.path.as_slice())
}

/// Appends `{"path": ..., "message": [why]}` to a JSON list's items.
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
#[path = "navigate_tests.rs"]
mod tests;
