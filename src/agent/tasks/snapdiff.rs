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
//!
//! The first phase itself goes in steps, each waited for before the next,
//! because its handlers run at once on many nodes while the diff's
//! contract (`snapdiff/diff.rs`) is an order: a directory is deleted only
//! when what was in it is deleted or moved out, and moves are staged
//! together so swaps and cycles work.
//!
//! 1. Deleted files, links and other non-directories, in batches published
//!    as they fill.
//! 2. Deleted directories that held no moved entry, one batch at a time,
//!    deepest first (the delete operation also goes deepest first within a
//!    batch).
//! 3. Every move, in one batch per rule: the two-step move makes swaps and
//!    cycles work only within a batch.
//! 4. Deleted directories that held a moved entry (now moved out), one
//!    batch at a time, deepest first; a directory that a move replaced
//!    (`rm -r d; mv e d`) is left alone.
//!
//! Steps 2 to 4 are held in a temporary file until their turn, so a run
//! that deletes or moves millions of entries does not hold them in memory.
//!
//! A run whose job is cancelled publishes nothing more, stops the diff at
//! the next batch (or stops waiting for its handlers) and rolls back, so
//! the changes it did not deliver are seen again by the next run; a cancel
//! that comes after the last child but before the rotation rolls back too.
//! The task still succeeds, its status saying `cancelled: true`.

use super::context::{ChildSink, Inbox, Input, Published, SinkError, TaskEnv, TaskError, TaskOutput};
use super::publish::{Batches, Publisher};
use super::rules::{self, BatchArgs, Rule, RuleArgs};
use crate::config::{Config, GpfsSettings};
use crate::entry::Fields;
use crate::entry::FileType;
use crate::snapdiff::diff::{Change, ChangeState};
use crate::snapdiff::output::{ExtraFields, change_entry, write_change_keys};
use crate::snapdiff::request::{RotateRequest, SnapdiffRequest};
use crate::snapdiff::run::{ChangeSink, RunEnd, SnapdiffError, rotate, snapdiff};
use crate::task::status::{Status, now_iso8601};
use crate::task::stream::StreamMessage;
use crate::task::write_entry;
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest a snapdiff waiting for its handlers goes without asking whether
/// its job was cancelled (handlers of a cancelled job never report).
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// The keyword arguments of `snapdiff`: the workflow's rules and the diff.
#[derive(Deserialize)]
pub struct SnapdiffArgs {
    /// The workflow's rules.
    #[serde(flatten)]
    pub rules: RuleArgs,
    /// The fileset and the seed's choices.
    #[serde(flatten)]
    pub request: SnapdiffRequest,
    /// The site's batch settings, when the sender keeps them.
    #[serde(flatten)]
    pub batch: BatchArgs,
}

/// Runs `dynamo.tasks.snapdiff` (`config`: the GPFS settings and ferry's
/// xattr prefix, whose changes alone are not changes).
pub fn snapdiff_task(
    input: &Input<'_>,
    args: &SnapdiffArgs,
    env: &TaskEnv,
    config: &Config,
    sink: &mut dyn ChildSink,
) -> Result<TaskOutput, TaskError> {
    let started = now_iso8601();
    let root = input.fileset();
    let rules = args.rules.compile(&env.site, &env.queue)?;
    let limits = args.batch.apply(env.batch)?;
    let sd = &args.request;
    let prov = sd
        .fileset
        .open(Path::new(OsStr::from_bytes(&root.path)), &config.gpfs)?;
    let mut opts = sd.options(env.lock_threshold, env.walk_threads);
    opts.own_xattrs = Some(config.settings.xattr_prefix.clone());
    if sd.collect {
        return super::collect::collect_task(input, env, prov.as_ref(), &opts, sink, started);
    }
    // The task itself ends the run, after its handlers reported.
    opts.hold = true;
    let stream_to = format!("ferry.stream.{}", input.msg.id);
    let inbox = sink.subscribe(&stream_to)?;
    let mut run = Phases {
        children: Children {
            publisher: Publisher::new(input.msg, env, input.jobid, sink),
            rules: &rules,
            stream_kwargs: format!(
                "\"stream_results\":true,\"stream_to\":{}",
                serde_json::to_string(&stream_to).expect("json")
            ),
            streaming: HashSet::new(),
        },
        inbox,
        task_id: &input.msg.id,
        stream_timeout: env.stream_timeout,
        // Changes go out under the fileset's wire path.
        root: {
            let local = prov.fileset().path.clone();
            env.paths.to_wire(&local).unwrap_or(local)
        },
        extra: sd.extra_fields,
        batches: Batches::new(limits),
        held: Held::default(),
        stream_failures: 0,
        streamed: 0,
        second_phase: false,
        matched: Vec::new(),
        halt: None,
    };
    let mut log = |m: &str| tracing::info!(task = %input.msg.id, "{m}");
    let diffed = snapdiff(prov.as_ref(), &opts, &mut run, &mut log);
    let report = match diffed {
        Ok(report) => Some(report),
        Err(e) => match run.halt.take() {
            // A failure of the sink itself says more than the run's
            // wrapping of it.
            Some(Halt::Failed(e)) => return Err(e),
            // Stopped for a cancel: the run rolled back (a failure to roll
            // back is not an `Output` error, and fails the task).
            Some(Halt::Cancelled) if matches!(e, SnapdiffError::Output(_)) => None,
            _ => return Err(e.into()),
        },
    };
    let (stream_failures, streamed) = (run.stream_failures, run.streamed);
    // Asked again, not just remembered: a cancel after the last child still
    // keeps the run from rotating past changes whose tasks are revoked.
    let cancelled = run.children.publisher.cancelled();
    let children = run.children.publisher.into_children();
    let mut counts = serde_json::json!({});
    let snap = match report {
        Some(mut report) => {
            if !sd.hold {
                // The rotation's own report has no counts: keep the diff's.
                let rotated = rotate(
                    prov.as_ref(),
                    &opts,
                    stream_failures == 0 && !cancelled,
                    sd.snappdiff_rotate_on_error && !cancelled,
                    &mut log,
                )
                .map_err(TaskError::Rotate)?;
                report.outcome = rotated.outcome;
                report.warnings.extend(rotated.warnings);
            }
            counts = serde_json::to_value(report.summary).expect("json");
            report.task_status()
        }
        // The diff did not finish, so it has no counts, and the snapshot
        // it took is gone.
        None => serde_json::json!({"outcome": RunEnd::RolledBack, "warnings": []}),
    };
    counts["children"] = children.count.into();
    counts["streamed"] = streamed.into();
    counts["streamed_failures"] = stream_failures.into();
    let mut status = Status::new(input.name.as_str());
    status
        .input_paths([root])
        .value("summary", &counts)
        .raw("details", b"{}")
        .string("started", &started)
        .value("snapdiff", &snap)
        .value("has_dynamic_children", &(children.count > 0))
        .value("cancelled", &cancelled);
    Ok(TaskOutput {
        result: status.into_result(input.jobid, Some(&env.queue_name), b""),
        children,
    })
}

/// Runs `dynamo.tasks.rotate_snapshot`: ends a run held by `hold=True`,
/// rotating when `failed` is false or `snappdiff_rotate_on_error` is true,
/// otherwise rolling back.
pub fn rotate_task(
    input: &Input<'_>,
    args: &RotateRequest,
    env: &TaskEnv,
    gpfs: &GpfsSettings,
) -> Result<TaskOutput, TaskError> {
    let root = input.fileset();
    let prov = args.fileset.open(Path::new(OsStr::from_bytes(&root.path)), gpfs)?;
    let opts = args.fileset.options(env.lock_threshold, env.walk_threads);
    let mut log = |m: &str| tracing::info!(task = %input.msg.id, "{m}");
    let report = rotate(
        prov.as_ref(),
        &opts,
        !args.failed,
        args.snappdiff_rotate_on_error,
        &mut log,
    )?;
    let snap = serde_json::json!({
        "snapshot": report.new_snapshot,
        "outcome": report.outcome,
        "warnings": report.warnings,
    });
    let mut status = Status::new(input.name.as_str());
    status.input_paths([root]).value("snapdiff", &snap);
    Ok(TaskOutput {
        result: status.into_result(input.jobid, None, b""),
        children: Published::default(),
    })
}

/// Whether changes in `state` are applied in the first phase, by handlers
/// that stream their results back.
fn streams(state: ChangeState) -> bool {
    matches!(state, ChangeState::Deleted | ChangeState::Moved)
}

/// The held steps of the first phase (see the module's documentation).
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Deleted directories that held no moved entry.
    Dirs,
    /// Every move.
    Moves,
    /// Deleted directories that held a moved entry.
    Emptied,
}

/// Deletes and moves waiting for their step, and what the later steps
/// need to know of the moves.
#[derive(Default)]
struct Held {
    dirs: Spool,
    moves: Spool,
    emptied: Spool,
    /// Every move's source: a deleted directory above one waits for the
    /// moves.
    move_sources: BTreeSet<Vec<u8>>,
    /// Every move's destination: a deleted directory at one was replaced
    /// by the move, and stays.
    move_dests: HashSet<Vec<u8>>,
}

impl Held {
    fn spool(&mut self, step: Step) -> &mut Spool {
        match step {
            Step::Dirs => &mut self.dirs,
            Step::Moves => &mut self.moves,
            Step::Emptied => &mut self.emptied,
        }
    }
}

/// Path objects held in an unnamed temporary file until their step.
#[derive(Default)]
struct Spool {
    file: Option<BufWriter<std::fs::File>>,
}

/// One held path object: its rule, file data size, path and encoding.
struct HeldObject {
    rule: usize,
    size: u64,
    path: Vec<u8>,
    obj: Vec<u8>,
}

impl Spool {
    fn push(&mut self, rule: usize, size: u64, path: &[u8], obj: &[u8]) -> io::Result<()> {
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(BufWriter::new(tempfile::tempfile()?)),
        };
        f.write_all(&(rule as u64).to_le_bytes())?;
        f.write_all(&size.to_le_bytes())?;
        for part in [path, obj] {
            f.write_all(&(part.len() as u64).to_le_bytes())?;
            f.write_all(part)?;
        }
        Ok(())
    }

    /// Hands every held object to `each`, in the order pushed, and empties
    /// the spool.
    fn drain(&mut self, mut each: impl FnMut(HeldObject) -> Result<(), Halt>) -> Result<(), Halt> {
        let Some(w) = self.file.take() else {
            return Ok(());
        };
        let mut f = w.into_inner().map_err(|e| hold(e.into_error()))?;
        f.rewind().map_err(hold)?;
        let mut r = BufReader::new(f);
        let word = |r: &mut BufReader<std::fs::File>| -> io::Result<Option<u64>> {
            let mut b = [0u8; 8];
            match r.read_exact(&mut b) {
                Ok(()) => Ok(Some(u64::from_le_bytes(b))),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
                Err(e) => Err(e),
            }
        };
        let bytes = |r: &mut BufReader<std::fs::File>| -> io::Result<Vec<u8>> {
            let n = word(r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
            let mut v = vec![0; n as usize];
            r.read_exact(&mut v)?;
            Ok(v)
        };
        while let Some(rule) = word(&mut r).map_err(hold)? {
            let size = word(&mut r)
                .map_err(hold)?
                .ok_or_else(|| hold(io::ErrorKind::UnexpectedEof.into()))?;
            let path = bytes(&mut r).map_err(hold)?;
            let obj = bytes(&mut r).map_err(hold)?;
            each(HeldObject {
                rule: rule as usize,
                size,
                path,
                obj,
            })?;
        }
        Ok(())
    }
}

/// A spool's I/O failure as a halt.
fn hold(e: io::Error) -> Halt {
    Halt::Failed(TaskError::Hold(e))
}

/// Why changes stopped going into child tasks.
enum Halt {
    /// The job was cancelled: nothing more is published, the run rolls back.
    Cancelled,
    /// A failure, with its kind (the run sees only an I/O error).
    Failed(TaskError),
}

impl From<TaskError> for Halt {
    fn from(e: TaskError) -> Halt {
        Halt::Failed(e)
    }
}

impl From<SinkError> for Halt {
    fn from(e: SinkError) -> Halt {
        Halt::Failed(e.into())
    }
}

/// A snapdiff's changes into child tasks, in two phases.
struct Phases<'a> {
    children: Children<'a>,
    /// Batches by (rule, state): a batch never mixes states. The held
    /// steps' batches are sized like them ([`Batches::like`]).
    batches: Batches<(usize, ChangeState)>,
    /// Deletes and moves waiting for their step.
    held: Held,
    inbox: Box<dyn Inbox>,
    /// This task's id, for the log.
    task_id: &'a str,
    stream_timeout: Duration,
    root: Vec<u8>,
    extra: ExtraFields,
    stream_failures: u64,
    streamed: u64,
    second_phase: bool,
    matched: Vec<usize>,
    /// Why the changes stopped, the first time they did.
    halt: Option<Halt>,
}

/// Where full batches go: a child task each; first-phase children stream
/// their results back and are waited for.
struct Children<'a> {
    publisher: Publisher<'a>,
    rules: &'a [Rule],
    /// The keyword arguments first-phase children get.
    stream_kwargs: String,
    /// First-phase children that have not sent their last stream message.
    streaming: HashSet<String>,
}

impl Children<'_> {
    fn publish(&mut self, (rule, state): (usize, ChangeState), batch: Vec<Vec<u8>>) -> Result<(), Halt> {
        let extra = if streams(state) {
            self.stream_kwargs.as_str()
        } else {
            ""
        };
        let Some(id) = self.publisher.batch(&self.rules[rule].actions, &batch, extra)? else {
            return Err(Halt::Cancelled);
        };
        if streams(state) {
            self.streaming.insert(id);
        }
        Ok(())
    }
}

impl Phases<'_> {
    fn flush(&mut self, phase_one: bool) -> Result<(), Halt> {
        let children = &mut self.children;
        self.batches
            .flush(|(_, state)| streams(*state) == phase_one, &mut |k, b| {
                children.publish(k, b)
            })
    }

    /// Waits until every streaming handler has sent its last batch, or
    /// the job is cancelled.
    fn wait_for_streams(&mut self) -> Result<(), Halt> {
        let idle = self.stream_timeout;
        let mut last_news = Instant::now();
        while !self.children.streaming.is_empty() {
            let left = idle.saturating_sub(last_news.elapsed());
            let Some(body) = self.inbox.next(left.min(CANCEL_POLL))? else {
                if self.children.publisher.cancelled() {
                    return Err(Halt::Cancelled);
                }
                if last_news.elapsed() >= idle {
                    return Err(TaskError::StreamTimeout {
                        handlers: self.children.streaming.len(),
                        seconds: idle.as_secs(),
                    }
                    .into());
                }
                continue;
            };
            last_news = Instant::now();
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
                self.children.streaming.remove(&m.task_id);
            }
        }
        Ok(())
    }

    fn take(&mut self, c: &Change) -> Result<(), Halt> {
        if !streams(c.state) && !self.second_phase {
            self.release()?;
            self.second_phase = true;
        }
        let (e, source) = change_entry(&self.root, c);
        // Which held step, if any, the change waits for.
        let step = match c.state {
            ChangeState::Moved => {
                let src = source.clone().expect("a move has a source");
                self.held.move_sources.insert(src);
                self.held.move_dests.insert(e.path.clone());
                Some(Step::Moves)
            }
            // The diff emits deepest old paths first, so every move out of
            // this directory is known by now.
            ChangeState::Deleted if e.file_type == FileType::Directory => {
                let below = [e.path.as_slice(), b"/"].concat();
                let held_a_move = self
                    .held
                    .move_sources
                    .range(below.clone()..)
                    .next()
                    .is_some_and(|s| s.starts_with(&below));
                Some(if held_a_move { Step::Emptied } else { Step::Dirs })
            }
            _ => None,
        };
        let mut matched = std::mem::take(&mut self.matched);
        rules::matching(
            self.children.rules,
            &e.path,
            e.file_type,
            c.state.as_str(),
            &mut matched,
        );
        if !matched.is_empty() {
            let mut obj = Vec::with_capacity(e.path.len() + 64);
            write_entry(&e, Fields::PATH.with(Fields::SIZE), &mut obj);
            obj.pop();
            write_change_keys(c, source.as_deref(), self.extra, &mut obj);
            obj.push(b'}');
            let children = &mut self.children;
            for &rule in &matched {
                match step {
                    Some(step) => self
                        .held
                        .spool(step)
                        .push(rule, e.data_size(), &e.path, &obj)
                        .map_err(hold)?,
                    None => self
                        .batches
                        .push((rule, c.state), obj.clone(), e.data_size(), &mut |k, b| {
                            children.publish(k, b)
                        })?,
                }
            }
        }
        self.matched = matched;
        Ok(())
    }

    /// Applies the first phase step by step (see the module's
    /// documentation): each step's handlers have all reported before the
    /// next step's batches go out.
    fn release(&mut self) -> Result<(), Halt> {
        // 1. Deleted non-directories, already going out as batches fill.
        self.flush(true)?;
        self.wait_for_streams()?;
        // 2. Deleted directories that held no moved entry.
        let mut dirs = std::mem::take(&mut self.held.dirs);
        self.one_batch_at_a_time(&mut dirs, |_| true)?;
        // 3. Every move of a rule in one batch.
        let mut moves = std::mem::take(&mut self.held.moves);
        let mut by_rule: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
        moves.drain(|h| {
            match by_rule.iter_mut().find(|(r, _)| *r == h.rule) {
                Some((_, batch)) => batch.push(h.obj),
                None => by_rule.push((h.rule, vec![h.obj])),
            }
            Ok(())
        })?;
        for (rule, batch) in by_rule {
            self.children.publish((rule, ChangeState::Moved), batch)?;
        }
        self.wait_for_streams()?;
        // 4. Deleted directories emptied by the moves, but not one that a
        // move put something else in the place of.
        let mut emptied = std::mem::take(&mut self.held.emptied);
        let replaced = std::mem::take(&mut self.held.move_dests);
        self.one_batch_at_a_time(&mut emptied, |path| !replaced.contains(path))?;
        let handlers = self.children.publisher.sent();
        if handlers > 0 {
            tracing::info!(
                task = %self.task_id,
                handlers,
                paths = self.streamed,
                "delete and move handlers reported"
            );
        }
        Ok(())
    }

    /// Publishes the deletes in `spool` that `keep` selects in batches,
    /// waiting for each batch's handler before the next goes out.
    fn one_batch_at_a_time(&mut self, spool: &mut Spool, keep: impl Fn(&[u8]) -> bool) -> Result<(), Halt> {
        let mut batches: Batches<usize> = self.batches.like();
        spool.drain(|h| {
            if keep(&h.path) {
                batches.push(h.rule, h.obj, h.size, &mut |rule, b| self.delete_and_wait(rule, b))?;
            }
            Ok(())
        })?;
        batches.flush(|_| true, &mut |rule, b| self.delete_and_wait(rule, b))
    }

    /// Publishes one batch of deletes and waits for its handler.
    fn delete_and_wait(&mut self, rule: usize, batch: Vec<Vec<u8>>) -> Result<(), Halt> {
        self.children.publish((rule, ChangeState::Deleted), batch)?;
        self.wait_for_streams()
    }

    /// Keeps the first halt with its reason and hands the run an I/O
    /// error, which stops it and rolls it back.
    fn keep(&mut self, r: Result<(), Halt>) -> io::Result<()> {
        r.map_err(|h| {
            let io = io::Error::other(match &h {
                Halt::Cancelled => "the job was cancelled".to_string(),
                Halt::Failed(e) => e.to_string(),
            });
            self.halt.get_or_insert(h);
            io
        })
    }
}

impl ChangeSink for Phases<'_> {
    fn expect(&mut self, total: u64) {
        self.batches.expect(total);
    }

    fn change(&mut self, c: &Change) -> io::Result<()> {
        let r = self.take(c);
        self.keep(r)
    }

    fn finish(&mut self) -> io::Result<()> {
        let mut all = || -> Result<(), Halt> {
            if !self.second_phase {
                self.release()?;
            }
            self.flush(false)
        };
        let r = all();
        self.keep(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tasks::context::memory::Memory;
    use crate::agent::tasks::fixture::Fileset;
    use crate::task::parse_paths;

    fn tasks(sink: &Memory) -> Vec<(String, usize)> {
        sink.sent
            .iter()
            .map(|(_, m)| (m.task.clone(), parse_paths(m.kwarg("paths")).unwrap().len()))
            .collect()
    }

    #[test]
    fn deletes_and_moves_are_handled_before_the_rest_then_the_run_rotates() {
        let fs = Fileset::new(&["a", "b", "c", "d"]);
        let mut first = Memory::default();
        let r = fs.run(&mut first, serde_json::json!({})).unwrap();
        assert_eq!(r["jobid"], 9);
        assert_eq!(r["status"]["snapdiff"]["first_run"], true);
        assert_eq!(r["status"]["snapdiff"]["outcome"], "rotated");
        // Four created files in batches of two; nothing to stream.
        assert_eq!(
            tasks(&first),
            [("dynamo.tasks.migrate".into(), 2), ("dynamo.tasks.migrate".into(), 2)]
        );
        assert_eq!(first.subscribed, ["ferry.stream.sd-1"]);

        std::fs::remove_file(fs.root.join("a")).unwrap();
        std::fs::rename(fs.root.join("b"), fs.root.join("b2")).unwrap();
        std::fs::write(fs.root.join("e"), b"new").unwrap();
        let mut second = Memory::default();
        let r = fs.run(&mut second, serde_json::json!({})).unwrap();
        let st = &r["status"];
        assert_eq!(st["snapdiff"]["outcome"], "rotated", "{r}");
        assert_eq!(st["summary"]["streamed"], 2, "{r}");
        assert_eq!(st["summary"]["streamed_failures"], 0, "{r}");
        assert_eq!(st["summary"]["children"], 4, "{r}");
        // The delete and the move first, asked to stream to this task.
        let sent = tasks(&second);
        assert_eq!(sent.len(), 4, "{sent:?}");
        let (first_phase, rest) = sent.split_at(2);
        let mut first_phase: Vec<&str> = first_phase.iter().map(|(t, _)| t.as_str()).collect();
        first_phase.sort();
        assert_eq!(
            first_phase,
            ["dynamo.tasks.delete_paths_from_gpfs", "dynamo.tasks.move_paths_on_gpfs"]
        );
        // The created file, and the moved one as a metadata-only update (a
        // rename changes the ctime, as an xattr change does).
        assert_eq!(
            rest,
            [("dynamo.tasks.migrate".into(), 1), ("dynamo.tasks.migrate".into(), 1)]
        );
        for (_, m) in &second.sent[..2] {
            assert_eq!(m.kwarg("stream_to").unwrap().get(), "\"ferry.stream.sd-1\"");
            assert_eq!(m.kwarg("jobid").unwrap().get(), "9");
        }
        assert!(second.sent[2].1.kwarg("stream_results").is_none());
        let moved = parse_paths(
            second
                .sent
                .iter()
                .find(|(_, m)| m.task.ends_with("move_paths_on_gpfs"))
                .unwrap()
                .1
                .kwarg("paths"),
        )
        .unwrap();
        assert!(moved[0].path.ends_with(b"/b2") && moved[0].source.as_ref().unwrap().ends_with(b"/b"));
    }

    /// With the seed's dynamic sizing a run's batches follow its number of
    /// changes from the first batch on: 1,200 created files go in 4
    /// batches of 250 and one of 200, where sizing by the count so far
    /// would send 25 of 40 and one of 200.
    #[test]
    fn dynamic_batches_are_sized_by_the_runs_number_of_changes() {
        let names: Vec<String> = (0..1_200).map(|i| format!("f{i}")).collect();
        let fs = Fileset::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let mut sink = Memory::default();
        let r = fs
            .run(
                &mut sink,
                serde_json::json!({"file_batch_size": 40, "enable_auto_file_batch_sizing": true}),
            )
            .unwrap();
        // The files and the fileset's root.
        assert_eq!(r["status"]["summary"]["created"], 1_201, "{r}");
        let mut want = vec![("dynamo.tasks.migrate".to_string(), 250); 4];
        want.push(("dynamo.tasks.migrate".to_string(), 200));
        assert_eq!(tasks(&sink), want);
    }

    /// The paths of each child, relative to the fileset, by task.
    fn children(fs: &Fileset, sink: &Memory) -> Vec<(String, Vec<String>)> {
        sink.sent
            .iter()
            .map(|(_, m)| {
                let task = m.task.rsplit('.').next().unwrap().to_string();
                let paths = parse_paths(m.kwarg("paths"))
                    .unwrap()
                    .iter()
                    .map(|p| {
                        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&p.path));
                        p.strip_prefix(&fs.root).unwrap().to_string_lossy().into_owned()
                    })
                    .collect();
                (task, paths)
            })
            .collect()
    }

    /// Deletes and moves go out in the steps a destination can apply in
    /// parallel: deleted files, then deleted directories (deepest first,
    /// one batch at a time), then every move in one batch (a swap and a
    /// move onto a deleted directory's name among them), then the deleted
    /// directories a move emptied, except one a move took the place of.
    #[test]
    fn deletes_and_moves_go_out_in_steps_a_destination_can_apply() {
        let fs = Fileset::new(&["p", "q"]);
        let mk = |d: &str, files: &[&str]| {
            std::fs::create_dir_all(fs.root.join(d)).unwrap();
            for f in files {
                std::fs::write(fs.root.join(d).join(f), f.as_bytes()).unwrap();
            }
        };
        mk("t/sub", &["y"]);
        mk("t", &["x"]);
        mk("m", &["keep", "z"]);
        mk("r", &["f"]);
        mk("s", &["in-s"]);
        mk("e", &["c"]);
        mk("s2", &[]);
        fs.run(&mut Memory::default(), serde_json::json!({})).unwrap();

        let at = |p: &str| fs.root.join(p);
        // A deleted tree.
        std::fs::remove_dir_all(at("t")).unwrap();
        // A deleted directory one of whose files moved out first.
        std::fs::rename(at("m/keep"), at("kept")).unwrap();
        std::fs::remove_dir_all(at("m")).unwrap();
        // A swap.
        std::fs::rename(at("p"), at("tmp")).unwrap();
        std::fs::rename(at("q"), at("p")).unwrap();
        std::fs::rename(at("tmp"), at("q")).unwrap();
        // A directory replaced by a moved one.
        std::fs::remove_dir_all(at("r")).unwrap();
        std::fs::rename(at("s"), at("r")).unwrap();
        // The same, where the deleted directory had an entry moved out.
        std::fs::rename(at("e/c"), at("c2")).unwrap();
        std::fs::remove_dir_all(at("e")).unwrap();
        std::fs::rename(at("s2"), at("e")).unwrap();

        let mut sink = Memory::default();
        let r = fs.run(&mut sink, serde_json::json!({})).unwrap();
        assert_eq!(r["status"]["snapdiff"]["outcome"], "rotated", "{r}");
        let sent = children(&fs, &sink);
        let steps: Vec<&(String, Vec<String>)> = sent.iter().take_while(|(t, _)| t != "migrate").collect();
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        // 1. Deleted files, in batches of two as they came.
        let files: Vec<String> = steps[..2]
            .iter()
            .flat_map(|(t, p)| {
                assert_eq!(t, "delete_paths_from_gpfs");
                p.clone()
            })
            .collect();
        assert_eq!(sorted(&files), ["m/z", "r/f", "t/sub/y", "t/x"]);
        // 2. Deleted directories that held no moved entry, deepest first.
        assert_eq!(steps[2].0, "delete_paths_from_gpfs");
        assert_eq!(steps[2].1[0], "t/sub");
        let dirs: Vec<String> = steps[2..4].iter().flat_map(|(_, p)| p.clone()).collect();
        assert_eq!(sorted(&dirs), ["r", "t", "t/sub"]);
        // 3. Every move in one batch, whatever the batch size.
        assert_eq!(steps[4].0, "move_paths_on_gpfs");
        assert_eq!(sorted(&steps[4].1), ["c2", "e", "kept", "p", "q", "r"]);
        // 4. The directory a move emptied; `e` was replaced by a move.
        assert_eq!(*steps[5], ("delete_paths_from_gpfs".to_string(), vec!["m".to_string()]));
        assert_eq!(steps.len(), 6, "{sent:?}");
        // Each step waited for the one before: a handler that never
        // answers stops the run after the first step.
        let fs2 = Fileset::new(&[]);
        mk2(&fs2.root);
        fs2.run(&mut Memory::default(), serde_json::json!({})).unwrap();
        std::fs::rename(fs2.root.join("d/a"), fs2.root.join("a")).unwrap();
        std::fs::remove_dir_all(fs2.root.join("d")).unwrap();
        let mut silent = Memory {
            silent: true,
            ..Memory::default()
        };
        let e = fs2.run(&mut silent, serde_json::json!({})).unwrap_err();
        assert!(matches!(e, TaskError::StreamTimeout { handlers: 1, .. }), "{e}");
        assert_eq!(
            children(&fs2, &silent),
            [("delete_paths_from_gpfs".to_string(), vec!["d/b".to_string()])]
        );
    }

    /// `d/a` and `d/b`.
    fn mk2(root: &std::path::Path) {
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/a"), b"a").unwrap();
        std::fs::write(root.join("d/b"), b"b").unwrap();
    }

    #[test]
    fn a_failed_delete_rolls_back_when_asked_and_silence_times_out() {
        let fs = Fileset::new(&["keep", "gone"]);
        fs.run(&mut Memory::default(), serde_json::json!({})).unwrap();
        std::fs::remove_file(fs.root.join("gone")).unwrap();
        let mut sink = Memory {
            fail: Some("gone".into()),
            ..Memory::default()
        };
        let r = fs
            .run(&mut sink, serde_json::json!({"snappdiff_rotate_on_error": false}))
            .unwrap();
        assert_eq!(r["status"]["summary"]["streamed_failures"], 1, "{r}");
        assert_eq!(r["status"]["snapdiff"]["outcome"], "rolled_back", "{r}");

        // Rolled back: the next run sees the delete again; its handler
        // never answers this time.
        let mut silent = Memory {
            silent: true,
            ..Memory::default()
        };
        let e = fs.run(&mut silent, serde_json::json!({})).unwrap_err();
        assert!(matches!(e, TaskError::StreamTimeout { handlers: 1, .. }), "{e}");
        assert_eq!(e.exception().0, "StreamTimeout");
        assert_eq!(tasks(&silent), [("dynamo.tasks.delete_paths_from_gpfs".into(), 1)]);
    }

    #[test]
    fn a_cancelled_run_stops_publishing_and_rolls_back() {
        let fs = Fileset::new(&["a", "b", "c", "d"]);
        // Two batches of created files; cancelled after the first.
        let mut sink = Memory {
            cancel_after: Some(1),
            ..Memory::default()
        };
        let r = fs.run(&mut sink, serde_json::json!({})).unwrap();
        let st = &r["status"];
        assert_eq!(st["cancelled"], true, "{r}");
        assert_eq!(st["summary"]["children"], 1, "{r}");
        assert_eq!(st["snapdiff"]["outcome"], "rolled_back", "{r}");
        assert_eq!(tasks(&sink), [("dynamo.tasks.migrate".into(), 2)]);

        // Cancelled after the last child, before the rotation: everything
        // went out, but the run still rolls back.
        let mut late = Memory {
            cancel_after: Some(2),
            ..Memory::default()
        };
        let r = fs.run(&mut late, serde_json::json!({})).unwrap();
        assert_eq!(r["status"]["cancelled"], true, "{r}");
        assert_eq!(r["status"]["summary"]["children"], 2, "{r}");
        // The diff ran to its end (the four files and the root); the first,
        // cancelled run had rotated nothing.
        assert_eq!(r["status"]["summary"]["created"], 5, "{r}");
        assert_eq!(r["status"]["snapdiff"]["first_run"], true, "{r}");
        assert_eq!(r["status"]["snapdiff"]["outcome"], "rolled_back", "{r}");

        // Nothing was rotated: the next run sees every file again.
        let mut next = Memory::default();
        let r = fs.run(&mut next, serde_json::json!({})).unwrap();
        assert_eq!(r["status"]["cancelled"], false, "{r}");
        assert_eq!(r["status"]["snapdiff"]["first_run"], true, "{r}");
        assert_eq!(r["status"]["snapdiff"]["outcome"], "rotated", "{r}");
        assert_eq!(tasks(&next).len(), 2);
    }

    /// Handlers of a cancelled job never report (their tasks are revoked):
    /// the run stops waiting for them instead of timing out.
    #[test]
    fn a_cancel_ends_the_wait_for_handlers() {
        let fs = Fileset::new(&["keep", "gone"]);
        fs.run(&mut Memory::default(), serde_json::json!({})).unwrap();
        std::fs::remove_file(fs.root.join("gone")).unwrap();
        let mut sink = Memory {
            silent: true,
            cancel_after: Some(1),
            ..Memory::default()
        };
        let r = fs.run(&mut sink, serde_json::json!({})).unwrap();
        assert_eq!(r["status"]["cancelled"], true, "{r}");
        assert_eq!(r["status"]["snapdiff"]["outcome"], "rolled_back", "{r}");
        assert_eq!(tasks(&sink), [("dynamo.tasks.delete_paths_from_gpfs".into(), 1)]);
        // Rolled back: the delete is seen again.
        let mut again = Memory::default();
        let r = fs.run(&mut again, serde_json::json!({})).unwrap();
        assert_eq!(r["status"]["summary"]["deleted"], 1, "{r}");
    }

    #[test]
    fn bad_requests_fail_with_their_reason() {
        let fs = Fileset::new(&[]);
        let mut sink = Memory::default();
        let two = serde_json::json!({"paths": ["/a", "/b"]});
        let e = fs.run(&mut sink, two).unwrap_err();
        assert!(e.to_string().contains("exactly one path"), "{e}");
        assert_eq!(e.exception().0, "InvalidArguments");
        let e = fs.run(&mut sink, serde_json::json!({"provider": "zfs"})).unwrap_err();
        assert!(e.to_string().contains("auto, btrfs, gpfs or none"), "{e}");
        assert!(sink.sent.is_empty());
    }
}
