//! `check_sync_state` (`dynamo.tasks.check_sync_state`): before an
//! updated path is sent to another site, compare it with that site's copy
//! and let it go on only as `sync_preference` says (seed 003:L12312-12320).
//!
//! The other site's attributes come from a `stat_paths` task sent to its
//! worker queue, as the seed's task does first. It is a question, not part
//! of the job: it carries no job id and no `reply_to` (the hub never sees
//! it), and it streams its per-path outcomes back to a private queue of
//! this task, the way a snapdiff's handlers report. A site that does not
//! answer within the stream timeout fails the paths with a message the
//! retry policy counts as transient, so a step with `max_tries` asks
//! again later.
//!
//! The verdict for each path, from the seed's wording:
//! - the local path is gone: `aborted` (a later run sees what happened);
//! - the other site has no such path: it goes on (there is nothing to
//!   overwrite);
//! - both are the same (type, size, modification time, mode, owner, the
//!   xattrs a copy carries, a file's link count, and for directories with
//!   `hash_includes_acl` their ACLs): nothing to do,
//!   `skipped` (`aborted` with `abort_outdated`);
//! - otherwise by `sync_preference`: `local` goes on; `newest` goes on when
//!   the local copy's modification time is not older than the other's;
//!   `ignore` (the seed's default) "always uses the other site's file
//!   version": the path stops there, `skipped` (`aborted` with
//!   `abort_outdated`).
//!
//! Only the paths that pass go on to the next step. Elsewhere a `skipped`
//! path goes on (it is already as it should be); here "skipped" means
//! there is nothing to send, so the seed's "files that do not need to be
//! executed" stop in both states (docs/decisions.md).

use super::context::{ChildSink, Input, TaskEnv, TaskError, TaskOutput};
use super::publish::Publisher;
use crate::agent::celery::root_task;
use crate::config::{Function, queue_name};
use crate::ops::OpContext;
use crate::ops::stat::stat_paths;
use crate::task::args::kwargs_with;
use crate::task::result::write_outcome;
use crate::task::{ArgumentError, FileState, Outcome, PathObject, TaskName, TaskResult};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a task waiting for the other site asks whether its job was
/// cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// The attributes that make two copies the same (those `stat_paths`
/// reports: `xattrs` is a digest of the xattrs a copy carries; `acl` only
/// for directories, and only when asked).
const SAME: [&str; 7] = ["type", "size", "mtime", "mode", "uid", "gid", "xattrs"];

/// The seed's `check_sync_state` arguments. In a workflow's actions
/// `site` and `queue` say where a step runs, so a workflow names the site
/// to compare with `compare_site` (and may name its queue with
/// `compare_queue`); a caller sending the task itself may use the seed's
/// `site`.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckSyncArgs {
    /// `newest`, `local` or `ignore` (the seed's default).
    #[serde(default)]
    pub sync_preference: Option<String>,
    /// The site to compare with.
    #[serde(default, alias = "compare_site")]
    pub site: Option<String>,
    /// Its queue that answers the `stat_paths` question (`default`).
    #[serde(default)]
    pub compare_queue: Option<String>,
    /// Paths that need nothing are `aborted` rather than `skipped`.
    #[serde(default)]
    pub abort_outdated: bool,
    /// Directories also compare their ACLs.
    #[serde(default)]
    pub hash_includes_acl: bool,
    /// Under `newest`, directories reported `updated` go by their mtime too
    /// (ferry's; a bidirectional sync sets it: a directory's newer times
    /// on either site are that site's own work). Without it, and for a
    /// directory its site created, one that differs is always sent (the
    /// other site's times are the sync's: a one-way sync's destination, a
    /// directory a move made there).
    #[serde(default)]
    pub directories_by_mtime: bool,
}

/// What `sync_preference` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preference {
    /// The newer modification time wins.
    Newest,
    /// The local copy always wins.
    Local,
    /// The other site's copy always stays.
    Ignore,
}

impl CheckSyncArgs {
    /// The preference, checked.
    pub fn preference(&self) -> Result<Preference, ArgumentError> {
        match self.sync_preference.as_deref() {
            None | Some("ignore") => Ok(Preference::Ignore),
            Some("newest") => Ok(Preference::Newest),
            Some("local") => Ok(Preference::Local),
            Some(p) => Err(ArgumentError::invalid(
                "sync_preference",
                format!("must be newest, local or ignore, not {p:?}"),
            )),
        }
    }

    /// The site to compare with, which must be given.
    pub fn site(&self) -> Result<&str, ArgumentError> {
        self.site
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ArgumentError::invalid("site", "the site to compare with is needed"))
    }
}

/// One copy's attributes as `stat_paths` reports them, or why there are
/// none.
type Attributes = Result<Map<String, Value>, String>;

/// Runs `check_sync_state` on the task's paths.
pub fn check_sync_state(
    input: Input<'_>,
    args: &CheckSyncArgs,
    max_tries: u32,
    env: &TaskEnv,
    ops: &OpContext,
    sink: &mut dyn ChildSink,
) -> Result<TaskOutput, TaskError> {
    let preference = args.preference()?;
    let site = args.site()?;
    let Input { msg, jobid, paths, .. } = input;
    let mut retries = super::ops::Retries::new(msg, max_tries);
    let local: Vec<Attributes> = stat_paths(ops, &paths).into_iter().map(attributes).collect();
    let remote = ask_other_site(msg.id.as_str(), site, args, env, &paths, sink)?;
    let mut result = TaskResult::new(TaskName::CheckSyncState, jobid.map(ToOwned::to_owned));
    result.set_queue(&env.queue_name);
    // Only the paths that pass go on: a path this check skips has nothing
    // to send, though a `skipped` path goes on after other steps.
    let mut go_on = Vec::new();
    for ((p, here), there) in paths.iter().zip(&local).zip(&remote) {
        // A directory its own site created is sent whatever its times
        // there: one made there by the sync (a move's parents) is newer.
        let created = p.extra.iter().any(|(k, v)| k == "state" && v.get() == "\"created\"");
        let outcome = verdict(
            here,
            there,
            preference,
            args,
            args.directories_by_mtime && !created,
            site,
        );
        tracing::debug!(
            task = %msg.id,
            path = %String::from_utf8_lossy(&p.path),
            state = outcome.state.as_str(),
            message = outcome.message.as_deref().unwrap_or(""),
            "check_sync_state"
        );
        if outcome.state == FileState::Processed {
            if !go_on.is_empty() {
                go_on.push(b',');
            }
            write_outcome(p, &outcome, false, &mut go_on);
        }
        retries.file(&mut result, p, &outcome);
    }
    let mut publisher = Publisher::new(msg, env, jobid, sink);
    retries.publish(&mut publisher, &env.queue_name)?;
    publisher.next_link(&env.site, &env.queue, &go_on)?;
    Ok(TaskOutput {
        result: result.to_json(),
        children: publisher.into_children(),
    })
}

/// A `stat_paths` outcome as attributes.
fn attributes(o: Outcome) -> Attributes {
    if o.state != FileState::Processed {
        return Err(o.message.unwrap_or_default());
    }
    Ok(o.extra
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_str(v.get()).ok().map(|v| (k, v)))
        .collect())
}

/// Sends `paths` to `site`'s `stat_paths` and collects its streamed
/// answers, one per path in order. Paths the other site did not answer
/// for in time get an `Err` the retry policy counts as transient.
fn ask_other_site(
    task_id: &str,
    site: &str,
    args: &CheckSyncArgs,
    env: &TaskEnv,
    paths: &[PathObject],
    sink: &mut dyn ChildSink,
) -> Result<Vec<Attributes>, TaskError> {
    let stream_to = format!("ferry.stream.{task_id}");
    let mut inbox = sink.subscribe(&stream_to)?;
    let mut encoded = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            encoded.push(b',');
        }
        PathObject::new(p.wire_path().to_vec()).write_json(&mut encoded);
    }
    let own = format!(
        "\"stream_results\":true,\"stream_to\":{}",
        serde_json::to_string(&stream_to).expect("json")
    );
    let kwargs = kwargs_with(&own, None, Some(&encoded));
    let question_id = uuid::Uuid::new_v4().to_string();
    let queue = queue_name(
        site,
        args.compare_queue.as_deref().unwrap_or("default"),
        Function::Worker,
    );
    let question = root_task(
        question_id.clone(),
        TaskName::StatPaths.as_str(),
        &kwargs,
        &[],
        &env.node,
    );
    sink.ask(&queue, question)?;
    let mut answers: HashMap<Vec<u8>, Attributes> = HashMap::with_capacity(paths.len());
    let mut last_news = Instant::now();
    let idle = env.stream_timeout;
    let mut done = false;
    while !done {
        let left = idle.saturating_sub(last_news.elapsed());
        let Some(body) = inbox.next(left.min(CANCEL_POLL))? else {
            if env.cancel.is_cancelled() || last_news.elapsed() >= idle {
                break;
            }
            continue;
        };
        last_news = Instant::now();
        let Ok(m) = serde_json::from_slice::<Answer>(&body) else {
            tracing::warn!(task = task_id, "ignoring a malformed stat answer");
            continue;
        };
        if m.task_id != question_id {
            continue;
        }
        done = m.last;
        for raw in m.paths {
            let Ok(p) = PathObject::parse(raw.get().as_bytes()) else {
                continue;
            };
            answers.insert(p.path.clone(), answered(&p));
        }
    }
    // "timed out" is what the retry policy counts as transient.
    let silent = format!(
        "site {site} did not answer stat_paths: timed out after {} s",
        idle.as_secs()
    );
    Ok(paths
        .iter()
        .map(|p| answers.remove(p.wire_path()).unwrap_or_else(|| Err(silent.clone())))
        .collect())
}

/// A streamed `stat_paths` answer.
#[derive(Deserialize)]
struct Answer {
    task_id: String,
    #[serde(default)]
    last: bool,
    #[serde(default)]
    paths: Vec<Box<RawValue>>,
}

/// The other site's answer for one path: its attributes, or why it has
/// none (`no such file or directory` when it has no such path).
fn answered(p: &PathObject) -> Attributes {
    let fields: Map<String, Value> = p
        .extra
        .iter()
        .filter_map(|(k, v)| serde_json::from_str(v.get()).ok().map(|v| (k.clone(), v)))
        .collect();
    match fields.get("state").and_then(Value::as_str) {
        Some("processed") => Ok(fields),
        _ => Err(fields
            .get("message")
            .and_then(|m| m.get(0).or(Some(m)))
            .and_then(Value::as_str)
            .unwrap_or("stat failed")
            .to_string()),
    }
}

/// Whether `path` was missing on the side that reported `why`.
fn missing(why: &str) -> bool {
    why.contains("no such file")
}

/// The outcome for one path, given both sides' attributes.
/// `dirs_by_mtime`: a directory that differs goes by its mtime too.
fn verdict(
    here: &Attributes,
    there: &Attributes,
    pref: Preference,
    args: &CheckSyncArgs,
    dirs_by_mtime: bool,
    site: &str,
) -> Outcome {
    let stop = |why: String| match args.abort_outdated {
        true => Outcome::with(FileState::Aborted, why),
        false => Outcome::skipped(why),
    };
    let here = match here {
        Ok(a) => a,
        Err(why) if missing(why) => {
            return Outcome::with(FileState::Aborted, format!("gone here before its check: {why}"));
        }
        Err(why) => return Outcome::failed(format!("stat here: {why}")),
    };
    let there = match there {
        Ok(a) => a,
        Err(why) if missing(why) => return Outcome::processed(),
        Err(why) => return Outcome::failed(format!("stat on site {site}: {why}")),
    };
    let kind = here.get("type").and_then(Value::as_str);
    let acl = args.hash_includes_acl && kind == Some("directory");
    // A file's link count too: a name linked to it since (or one built
    // apart there) is sent, so the group is whole on both sites.
    // Directories' counts differ between filesystems (btrfs keeps 1).
    let links = kind != Some("file") || here.get("nlink") == there.get("nlink");
    let same =
        SAME.iter().all(|k| here.get(*k) == there.get(*k)) && links && (!acl || here.get("acl") == there.get("acl"));
    if same {
        return stop(format!("the same on site {site}: nothing to send"));
    }
    let mtime = |a: &Map<String, Value>| a.get("mtime").and_then(Value::as_f64).unwrap_or(f64::MIN);
    // A directory's mtime there says when its entries last changed there
    // (the sync's own work among it), not that its attributes are newer:
    // under `newest` a directory that differs is sent, so one slip of its
    // times there is not kept for good.
    let directory = kind == Some("directory");
    match pref {
        Preference::Local => Outcome::processed(),
        Preference::Newest if (directory && !dirs_by_mtime) || mtime(here) >= mtime(there) => Outcome::processed(),
        Preference::Newest => stop(format!("site {site} has a newer copy (sync_preference newest)")),
        Preference::Ignore => stop(format!("site {site} keeps its copy (sync_preference ignore)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Attributes {
        Ok(v.as_object().unwrap().clone())
    }

    /// Runs the task `msg` asks for through `sink`; its result.
    fn run(msg: &crate::agent::celery::TaskMessage, env: &TaskEnv, sink: &mut dyn ChildSink) -> Value {
        let ops = OpContext::new(crate::config::Config::empty(), Some(2)).unwrap();
        let crate::agent::tasks::Request { input, kind } = crate::agent::tasks::Request::decode(msg).unwrap();
        let crate::agent::tasks::Kind::CheckSync { args, max_tries } = kind else {
            panic!("not check_sync_state")
        };
        let out = check_sync_state(input, &args, max_tries, env, &ops, sink).unwrap();
        serde_json::from_slice(&out.result).unwrap()
    }

    fn args(pref: &str, abort_outdated: bool) -> CheckSyncArgs {
        serde_json::from_value(json!({"sync_preference": pref, "compare_site": "b", "abort_outdated": abort_outdated}))
            .unwrap()
    }

    #[test]
    fn each_preference_decides_as_the_seed_says() {
        let old = attrs(json!({"type": "file", "size": 3, "mtime": 100.5, "mode": 33188, "uid": 0, "gid": 0}));
        let new = attrs(json!({"type": "file", "size": 4, "mtime": 200.25, "mode": 33188, "uid": 0, "gid": 0}));
        let gone: Attributes = Err("no such file or directory".into());
        let state = |here: &Attributes, there: &Attributes, pref: &str, abort: bool| {
            let a = args(pref, abort);
            verdict(here, there, a.preference().unwrap(), &a, false, "b").state
        };
        use FileState::*;
        for pref in ["newest", "local", "ignore"] {
            // Nothing there: always sent. The same: never.
            assert_eq!(state(&new, &gone, pref, false), Processed, "{pref}");
            assert_eq!(state(&new, &new, pref, false), Skipped, "{pref}");
            assert_eq!(state(&new, &new, pref, true), Aborted, "{pref}");
            // Gone here: aborted, whatever the preference.
            assert_eq!(state(&gone, &new, pref, false), Aborted, "{pref}");
        }
        assert_eq!(state(&new, &old, "newest", false), Processed);
        assert_eq!(state(&old, &new, "newest", false), Skipped);
        assert_eq!(state(&old, &new, "newest", true), Aborted);
        assert_eq!(state(&old, &new, "local", false), Processed);
        assert_eq!(state(&new, &old, "ignore", false), Skipped);
        // A stat that failed for another reason fails the path.
        let denied: Attributes = Err("stat: Permission denied".into());
        assert_eq!(state(&new, &denied, "local", false), Failures);
        // A directory that differs is sent under newest even when its
        // mtime there is later (the sync's own work there); ignore keeps it.
        let dir = |mtime: f64| {
            attrs(json!({"type": "directory", "size": 0, "mtime": mtime, "mode": 16877, "uid": 0, "gid": 0}))
        };
        assert_eq!(state(&dir(100.0), &dir(200.0), "newest", false), Processed);
        assert_eq!(state(&dir(100.0), &dir(100.0), "newest", false), Skipped);
        assert_eq!(state(&dir(100.0), &dir(200.0), "ignore", false), Skipped);
        // A bidirectional sync's directories go by their mtime.
        let mut by_mtime = args("newest", false);
        by_mtime.directories_by_mtime = true;
        let both_ways = |here: &Attributes, there: &Attributes| {
            verdict(here, there, Preference::Newest, &by_mtime, true, "b").state
        };
        assert_eq!(both_ways(&dir(100.0), &dir(200.0)), Skipped);
        assert_eq!(both_ways(&dir(200.0), &dir(100.0)), Processed);
    }

    /// A metadata-only change (an xattr) or a name linked since makes a
    /// file differ; a directory's link count does not (btrfs keeps 1).
    #[test]
    fn xattrs_and_a_files_link_count_make_copies_differ() {
        let file = |extra: Value| {
            let mut v = json!({"type": "file", "size": 3, "mtime": 1.0, "mode": 33188, "uid": 0, "gid": 0, "nlink": 1});
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            attrs(v)
        };
        let a = args("newest", false);
        let state =
            |here: &Attributes, there: &Attributes| verdict(here, there, a.preference().unwrap(), &a, false, "b").state;
        use FileState::*;
        assert_eq!(state(&file(json!({})), &file(json!({}))), Skipped);
        assert_eq!(state(&file(json!({"xattrs": "d1"})), &file(json!({}))), Processed);
        assert_eq!(
            state(&file(json!({"xattrs": "d1"})), &file(json!({"xattrs": "d2"}))),
            Processed
        );
        assert_eq!(
            state(&file(json!({"xattrs": "d1"})), &file(json!({"xattrs": "d1"}))),
            Skipped
        );
        assert_eq!(state(&file(json!({"nlink": 2})), &file(json!({}))), Processed);
        let dir = |nlink: u64| {
            attrs(
                json!({"type": "directory", "size": 0, "mtime": 1.0, "mode": 16877, "uid": 0, "gid": 0, "nlink": nlink}),
            )
        };
        assert_eq!(state(&dir(3), &dir(1)), Skipped);
    }

    #[test]
    fn directory_acls_count_only_when_asked() {
        let a =
            attrs(json!({"type": "directory", "size": 0, "mtime": 1.0, "mode": 16877, "uid": 0, "gid": 0, "acl": "x"}));
        let b =
            attrs(json!({"type": "directory", "size": 0, "mtime": 1.0, "mode": 16877, "uid": 0, "gid": 0, "acl": "y"}));
        let mut with = args("local", false);
        assert_eq!(
            verdict(&a, &b, Preference::Local, &with, false, "b").state,
            FileState::Skipped
        );
        with.hash_includes_acl = true;
        assert_eq!(
            verdict(&a, &b, Preference::Local, &with, false, "b").state,
            FileState::Processed
        );
    }

    /// The task through an in-memory sink whose "other site" keeps its
    /// copies in another directory: only the paths that pass go on to the
    /// next step, the question went to the other site's worker queue with
    /// no job id, and each verdict is the preference's.
    #[test]
    fn only_paths_that_pass_go_on_to_the_next_step() {
        use crate::agent::celery::{HeaderValue, Incoming, decode};
        use crate::agent::tasks::context::memory::{self, Memory};
        let here = tempfile::tempdir().unwrap();
        let there = tempfile::tempdir().unwrap();
        let write = |dir: &std::path::Path, name: &str, body: &str, mtime: u64| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(mtime))
                .unwrap();
        };
        // newer here; newer there; the same on both; only here.
        write(here.path(), "newer-here", "aaaa", 2000);
        write(there.path(), "newer-here", "aaa", 1000);
        write(here.path(), "newer-there", "bbbb", 1000);
        write(there.path(), "newer-there", "bbb", 2000);
        write(here.path(), "same", "cc", 1500);
        write(there.path(), "same", "cc", 1500);
        write(here.path(), "only-here", "d", 1500);
        let names = ["newer-here", "newer-there", "same", "only-here", "gone"];
        let paths: Vec<String> = names
            .iter()
            .map(|n| here.path().join(n).to_str().unwrap().to_string())
            .collect();
        let kwargs = json!({"paths": paths, "jobid": 7, "compare_site": "b", "sync_preference": "newest"});
        let body = format!(
            "[[], {kwargs}, {{\"chain\": [{{\"task\": \"dynamo.tasks.migrate\", \"kwargs\": {{\"premigrate\": true}}, \"options\": {{}}}}]}}]"
        );
        let headers = vec![
            (
                "task".into(),
                HeaderValue::Str(TaskName::CheckSyncState.as_str().into()),
            ),
            ("id".into(), HeaderValue::Str("check-1".into())),
        ];
        let msg = decode(
            &Incoming {
                headers: &headers,
                body: body.as_bytes(),
                ..Default::default()
            },
            usize::MAX,
        )
        .unwrap();
        let mut sink = Memory {
            other_site: Some((
                here.path().as_os_str().as_encoded_bytes().to_vec(),
                there.path().as_os_str().as_encoded_bytes().to_vec(),
            )),
            ..Memory::default()
        };
        let env = memory::env(10, Duration::from_secs(1));
        let result = run(&msg, &env, &mut sink);
        let states: Vec<(String, String)> = ["processed", "skipped", "aborted", "failures"]
            .iter()
            .flat_map(|s| {
                result["status"]["details"][s]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |p| {
                        let name = p["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
                        (name, s.to_string())
                    })
            })
            .collect();
        let state_of = |n: &str| states.iter().find(|(m, _)| m == n).map(|(_, s)| s.as_str());
        assert_eq!(state_of("newer-here"), Some("processed"), "{result}");
        assert_eq!(state_of("only-here"), Some("processed"), "{result}");
        assert_eq!(state_of("newer-there"), Some("skipped"), "{result}");
        assert_eq!(state_of("same"), Some("skipped"), "{result}");
        assert_eq!(state_of("gone"), Some("aborted"), "{result}");
        // The question: stat_paths on the other site's worker queue, no job.
        assert_eq!(sink.asked.len(), 1);
        let (queue, q) = &sink.asked[0];
        assert_eq!(queue, "b.default#worker");
        assert_eq!(q.task, TaskName::StatPaths.as_str());
        assert!(q.kwarg("jobid").is_none());
        // The next step got the two that pass, with the job id.
        assert_eq!(sink.sent.len(), 1, "one next link");
        let (queue, next) = &sink.sent[0];
        assert_eq!(queue, "s1.default#worker");
        assert_eq!(next.task, "dynamo.tasks.migrate");
        assert_eq!(next.kwarg("jobid").unwrap().get(), "7");
        let went: Vec<String> = crate::task::parse_paths(next.kwarg("paths"))
            .unwrap()
            .iter()
            .map(|p| String::from_utf8_lossy(&p.path).rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(went, ["newer-here", "only-here"]);
    }

    /// A site that never answers fails the paths as timed out (a failure
    /// the retry policy counts as transient), without waiting forever.
    #[test]
    fn a_silent_site_times_out_as_transient() {
        use crate::agent::tasks::context::memory::{self, Memory};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let p = dir.path().join("f").to_str().unwrap().to_string();
        let msg = memory::message(TaskName::CheckSyncState, "c", json!({"paths": [p], "site": "b"}));
        let mut sink = Memory::default();
        let env = memory::env(10, Duration::from_millis(50));
        let result = run(&msg, &env, &mut sink);
        let failed = &result["status"]["details"]["failures"][0];
        let why = failed["message"][0].as_str().unwrap();
        assert!(why.contains("did not answer"), "{result}");
        assert_eq!(
            crate::task::errors::category(why),
            crate::task::errors::Category::Transient
        );
        assert!(sink.sent.is_empty(), "nothing goes on");
    }

    /// With `max_tries`, a path the silent site did not answer for is not
    /// failed: it goes to a retry of this check, later, alone.
    #[test]
    fn a_silent_site_is_asked_again_with_max_tries() {
        use crate::agent::tasks::context::memory::{self, Memory};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let p = dir.path().join("f").to_str().unwrap().to_string();
        let msg = memory::message(
            TaskName::CheckSyncState,
            "c",
            json!({"paths": [p], "site": "b", "max_tries": 2}),
        );
        let mut sink = Memory::default();
        let env = memory::env(10, Duration::from_millis(50));
        let result = run(&msg, &env, &mut sink);
        assert!(
            result["status"]["details"]["failures"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{result}"
        );
        assert_eq!(sink.sent.len(), 1, "one retry");
        let (_, again) = &sink.sent[0];
        assert_eq!(again.task, TaskName::CheckSyncState.as_str());
        assert_eq!(again.retries, 1);
        assert!(again.eta.is_some(), "the retry waits");
        let went = crate::task::parse_paths(again.kwarg("paths")).unwrap();
        assert_eq!(went.len(), 1);
        assert_eq!(went[0].path, p.as_bytes());
        // The last try reports the failure.
        let mut sink = Memory::default();
        let last = run(again, &env, &mut sink);
        assert_eq!(
            last["status"]["details"]["failures"].as_array().map(Vec::len),
            Some(1),
            "{last}"
        );
        assert!(sink.sent.is_empty());
    }

    #[test]
    fn arguments_are_checked() {
        let a: CheckSyncArgs = serde_json::from_value(json!({"site": "b"})).unwrap();
        assert_eq!(a.preference().unwrap(), Preference::Ignore);
        assert_eq!(a.site().unwrap(), "b");
        let a: CheckSyncArgs = serde_json::from_value(json!({"sync_preference": "oldest"})).unwrap();
        assert!(
            a.preference()
                .unwrap_err()
                .to_string()
                .contains("newest, local or ignore")
        );
        assert!(a.site().unwrap_err().to_string().contains("site"));
    }
}
