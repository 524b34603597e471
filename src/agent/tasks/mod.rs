//! The tasks the agent runs, by the seed's names. A new `dynamo.tasks.*`
//! task goes here: a name in [`crate::task::TaskName`], a variant of
//! [`Kind`] with its typed arguments, and a file that runs it.
//!
//! [`run`] is called on a blocking thread with a decoded message. It reads
//! the message once into a typed [`Request`] (task, job id, paths, and the
//! task's own arguments), then dispatches. It never panics on bad input:
//! unusable arguments give a `FAILURE` result whose exception names the
//! kind of problem ([`TaskError::exception`]), and per-file problems are
//! per-file states inside a `SUCCESS` result, as the seed's hub expects.

pub mod collect;
pub mod context;
#[cfg(test)]
pub(crate) mod fixture;
pub mod navigate;
pub mod ops;
pub mod publish;
pub mod rules;
pub mod snapdiff;
pub mod split;
pub mod sync_state;

pub use context::{
    Cancel, ChildSink, EXC_MODULE, Inbox, Input, Published, QueueCounts, SinkError, TaskEnv, TaskError, TaskOutput,
};

use super::celery::{self, TaskMessage, TaskState};
use crate::ops::{OpContext, Operation};
use crate::snapdiff::request::RotateRequest;
use crate::task::{ArgumentError, PathObject, TaskName, parse_kwargs, parse_paths};

/// A task message read once: what every task takes, and its own
/// arguments.
pub struct Request<'m> {
    /// The task, job id and paths.
    pub input: Input<'m>,
    /// The task's own arguments.
    pub kind: Kind,
}

/// A task and its own arguments.
pub enum Kind {
    /// `recursive_navigate`.
    Navigate(navigate::NavigateArgs),
    /// `snapdiff`.
    Snapdiff(Box<snapdiff::SnapdiffArgs>),
    /// `rotate_snapshot`.
    Rotate(RotateRequest),
    /// `check_sync_state`, and its `max_tries` (as an operation's).
    CheckSync {
        /// Its own arguments.
        args: sync_state::CheckSyncArgs,
        /// How many times in all a path the other site did not answer for
        /// is asked about.
        max_tries: u32,
    },
    /// `browse`.
    Browse(crate::ops::browse::BrowseArgs),
    /// A file operation, and where to stream its per-file results.
    Op {
        /// The operation with its arguments.
        op: Operation,
        /// `stream_to`, when `stream_results` is true.
        stream_to: Option<String>,
        /// `max_tries`: how many times in all a file that fails in a way
        /// that may pass is tried (1, the default: no retry).
        max_tries: u32,
    },
}

impl<'m> Request<'m> {
    /// Reads `msg`: the task name, `jobid`, `paths` and the task's own
    /// keyword arguments, each checked in the order a caller meets its
    /// errors: an operation's own arguments first, then `paths`, then the
    /// streaming arguments (before anything runs); for discovery tasks
    /// `paths` first (exactly one for a fileset task), then the rest.
    pub fn decode(msg: &'m TaskMessage) -> Result<Request<'m>, TaskError> {
        let name = TaskName::parse(&msg.task).ok_or_else(|| TaskError::NotRegistered(msg.task.clone()))?;
        let paths = || parse_paths(msg.kwarg("paths"));
        let (paths, kind) = match name {
            TaskName::RecursiveNavigate => {
                let paths = paths()?;
                (paths, Kind::Navigate(msg.kwargs_as()?))
            }
            TaskName::Snapdiff | TaskName::RotateSnapshot => {
                let paths = paths()?;
                one_path(name, &paths)?;
                let kind = if name == TaskName::Snapdiff {
                    Kind::Snapdiff(Box::new(msg.kwargs_as()?))
                } else {
                    Kind::Rotate(msg.kwargs_as()?)
                };
                (paths, kind)
            }
            TaskName::Browse => {
                let args: crate::ops::browse::BrowseArgs = msg.kwargs_as()?;
                args.check().map_err(|(name, why)| ArgumentError::invalid(name, why))?;
                let paths = paths()?;
                one_path(name, &paths)?;
                (paths, Kind::Browse(args))
            }
            TaskName::CheckSyncState => {
                let args: sync_state::CheckSyncArgs = msg.kwargs_as()?;
                args.preference()?;
                args.site()?;
                let max_tries = max_tries(&msg.kwargs_object(&["paths", "jobid"]))?;
                (paths()?, Kind::CheckSync { args, max_tries })
            }
            _ => {
                let kwargs = msg.kwargs_object(&["paths", "jobid"]);
                let op = Operation::from_task(name, &kwargs).expect("an operation's name")?;
                let paths = paths()?;
                let stream_to = stream_target(&kwargs)?;
                let max_tries = max_tries(&kwargs)?;
                (
                    paths,
                    Kind::Op {
                        op,
                        stream_to,
                        max_tries,
                    },
                )
            }
        };
        Ok(Request {
            input: Input {
                msg,
                name,
                jobid: msg.kwarg("jobid"),
                paths,
            },
            kind,
        })
    }
}

/// Where to stream per-file results: `stream_to` when `stream_results` is
/// true (`stream_to` is not read otherwise).
fn stream_target(kwargs: &str) -> Result<Option<String>, ArgumentError> {
    #[derive(serde::Deserialize)]
    struct Switch {
        #[serde(default)]
        stream_results: Option<bool>,
    }
    #[derive(serde::Deserialize)]
    struct Target {
        #[serde(default)]
        stream_to: Option<String>,
    }
    let on: Switch = parse_kwargs(kwargs)?;
    if on.stream_results != Some(true) {
        return Ok(None);
    }
    Ok(parse_kwargs::<Target>(kwargs)?.stream_to)
}

/// `max_tries`: at least 1 (the default), at most [`MAX_TRIES`].
fn max_tries(kwargs: &str) -> Result<u32, ArgumentError> {
    #[derive(serde::Deserialize)]
    struct Tries {
        #[serde(default)]
        max_tries: Option<u32>,
    }
    match parse_kwargs::<Tries>(kwargs)?.max_tries {
        None => Ok(1),
        Some(n) if (1..=MAX_TRIES).contains(&n) => Ok(n),
        Some(n) => Err(ArgumentError::invalid(
            "max_tries",
            format!("{n}: must be from 1 to {MAX_TRIES}"),
        )),
    }
}

/// The most tries a step may ask for: with the backoff's 5 minute cap, a
/// day of trying.
pub const MAX_TRIES: u32 = 300;

/// Checks that a task of one path (a fileset's junction, a directory to
/// browse) got exactly one.
fn one_path(name: TaskName, paths: &[PathObject]) -> Result<(), ArgumentError> {
    match paths.len() {
        1 => Ok(()),
        n => Err(ArgumentError::invalid(
            "paths",
            format!("{name} takes exactly one path, got {n}"),
        )),
    }
}

/// How a task ended, ready for the result document.
pub struct Finished {
    /// `SUCCESS`, `FAILURE` or `REVOKED`.
    pub state: TaskState,
    /// The result (JSON): the task's result object, or an exception document.
    pub result: Vec<u8>,
    /// A traceback-like explanation for failures.
    pub traceback: Option<String>,
    /// The child tasks published.
    pub children: Published,
}

impl Finished {
    /// A failure with `exc_type` (a Python exception name) and a message.
    pub fn failure(exc_type: &str, exc_module: &str, message: &str) -> Finished {
        Finished {
            state: TaskState::Failure,
            result: celery::exception(exc_type, exc_module, message),
            traceback: Some(format!("{exc_type}: {message}")),
            children: Published::default(),
        }
    }

    /// A task that failed with `e`.
    pub fn failed(e: &TaskError) -> Finished {
        let (exc_type, exc_module) = e.exception();
        Finished::failure(exc_type, exc_module, &e.to_string())
    }
}

/// Whether the agent runs a task called `task`.
pub fn known(task: &str) -> bool {
    TaskName::parse(task).is_some()
}

/// Runs one task.
pub fn run(msg: &TaskMessage, env: &TaskEnv, ops: &OpContext, sink: &mut dyn ChildSink) -> Finished {
    let output = Request::decode(msg).and_then(|Request { mut input, kind }| {
        if !env.paths.is_empty() {
            input.paths.iter_mut().for_each(|p| p.localise(&env.paths));
        }
        run_kind(input, kind, env, ops, sink)
    });
    match output {
        Ok(out) => Finished {
            state: TaskState::Success,
            result: out.result,
            traceback: None,
            children: out.children,
        },
        Err(e) => Finished::failed(&e),
    }
}

/// Runs a decoded task whose paths are this site's.
fn run_kind(
    input: Input<'_>,
    kind: Kind,
    env: &TaskEnv,
    ops: &OpContext,
    sink: &mut dyn ChildSink,
) -> Result<TaskOutput, TaskError> {
    match kind {
        Kind::Navigate(args) => navigate::recursive_navigate(&input, &args, env, sink),
        Kind::Snapdiff(args) => snapdiff::snapdiff_task(&input, &args, env, &ops.config, sink),
        Kind::Rotate(args) => snapdiff::rotate_task(&input, &args, env, &ops.config.gpfs),
        Kind::CheckSync { args, max_tries } => sync_state::check_sync_state(input, &args, max_tries, env, ops, sink),
        Kind::Browse(args) => {
            let p = input.fileset();
            let result = crate::ops::browse::browse(ops, &p.path, p.wire_path(), &env.site, &args).map_err(|e| {
                TaskError::Walk {
                    context: "cannot browse",
                    source: e.source,
                }
            })?;
            Ok(TaskOutput {
                result,
                children: Published::default(),
            })
        }
        Kind::Op {
            op,
            stream_to,
            max_tries,
        } => ops::run_op(input, &op, stream_to.as_deref(), max_tries, env, ops, sink),
    }
}

#[cfg(test)]
mod tests {
    use super::context::memory::{self, Memory};
    use super::*;
    use crate::config::{Config, PathMap};
    use serde_json::{Value, json};
    use std::time::Duration;

    /// A site that mounts the wire path `/wire/fs` at a directory of its
    /// own, and a wire name for each local name under it.
    fn mapped(dir: &std::path::Path) -> (TaskEnv, impl Fn(&str) -> String) {
        let mut env = memory::env(100, Duration::from_secs(1));
        env.paths = PathMap::parse(&format!("{}:/wire/fs", dir.display())).unwrap();
        (env, |rel: &str| format!("/wire/fs/{rel}"))
    }

    fn names(v: &Value, key: &str) -> Vec<String> {
        let mut n: Vec<String> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    /// A discovery given a wire path walks this site's directory, matches
    /// rules written for wire paths, and sends its children wire paths.
    #[test]
    fn a_walk_on_a_mapped_site_reads_local_paths_and_sends_wire_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keep")).unwrap();
        std::fs::write(dir.path().join("keep/a"), "a").unwrap();
        std::fs::write(dir.path().join("keep/b\nc"), "b").unwrap();
        std::fs::write(dir.path().join("drop"), "c").unwrap();
        let (env, wire) = mapped(dir.path());
        let rules = json!([{"state": "all", "type": "file", "include": ["/wire/fs/keep/*"],
                            "action": [{"name": "dynamo.tasks.stat_paths"}]}]);
        let msg = memory::message(
            TaskName::RecursiveNavigate,
            "walk",
            json!({"paths": [wire("")], "filter_rules": rules}),
        );
        let mut sink = Memory::default();
        let ops = OpContext::new(Config::empty(), Some(1)).unwrap();
        let done = run(&msg, &env, &ops, &mut sink);
        assert_eq!(done.state, crate::agent::celery::TaskState::Success);
        assert_eq!(sink.sent.len(), 1, "one batch");
        let paths: Vec<Vec<u8>> = crate::task::parse_paths(sink.sent[0].1.kwarg("paths"))
            .unwrap()
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths.len(), 2);
        for p in &paths {
            assert!(p.starts_with(b"/wire/fs/keep/"), "{}", String::from_utf8_lossy(p));
        }
    }

    /// A step given wire paths works on this site's files and names the
    /// wire paths in its result and in the next step's paths.
    #[test]
    fn an_operation_on_a_mapped_site_answers_in_wire_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "four").unwrap();
        std::fs::write(dir.path().join("old"), "x").unwrap();
        let (env, wire) = mapped(dir.path());
        let ops = OpContext::new(Config::empty(), Some(1)).unwrap();
        let body = format!(
            "[[], {}, {{\"chain\": [{{\"task\": \"dynamo.tasks.stat_paths\", \"kwargs\": {{}}, \"options\": {{}}}}]}}]",
            json!({"paths": [wire("f"), wire("missing")]})
        );
        let headers = vec![
            (
                "task".into(),
                celery::HeaderValue::Str(TaskName::StatPaths.as_str().into()),
            ),
            ("id".into(), celery::HeaderValue::Str("stat".into())),
        ];
        let msg = celery::decode(
            &celery::Incoming {
                headers: &headers,
                body: body.as_bytes(),
                ..Default::default()
            },
            usize::MAX,
        )
        .unwrap();
        let mut sink = Memory::default();
        let done = run(&msg, &env, &ops, &mut sink);
        let result: Value = serde_json::from_slice(&done.result).unwrap();
        let details = &result["status"]["details"];
        assert_eq!(names(details, "processed"), [wire("f")], "{result}");
        assert_eq!(details["processed"][0]["size"], 4, "the local file was read");
        assert_eq!(names(details, "failures"), [wire("missing")], "{result}");
        assert_eq!(names(&result["status"], "input_paths"), [wire("f"), wire("missing")]);
        let next = crate::task::parse_paths(sink.sent[0].1.kwarg("paths")).unwrap();
        assert_eq!(next[0].path, wire("f").as_bytes());

        // A move names both ends on the wire; both are this site's.
        let msg = memory::message(
            TaskName::MovePathsOnGpfs,
            "mv",
            json!({"paths": [{"path": wire("new"), "source": wire("old")}]}),
        );
        let done = run(&msg, &env, &ops, &mut Memory::default());
        let result: Value = serde_json::from_slice(&done.result).unwrap();
        assert_eq!(
            result["status"]["details"]["processed"][0]["source"],
            wire("old"),
            "{result}"
        );
        assert!(dir.path().join("new").exists() && !dir.path().join("old").exists());
    }
}
