//! `dynamo.tasks.recursive_navigate`: walk the given paths, apply the
//! workflow's filter rules to each entry, cut each rule's paths into batches
//! by count and bytes, and publish one child task per batch for the rule's
//! first action (the rest of its actions ride along as a Celery chain)
//! while the walk goes on.
//!
//! Children are published through a [`ChildSink`], which returns only once
//! the broker has confirmed the message, so a task whose result says it
//! spawned a child has really spawned it.

use super::celery::{Outgoing, TaskMessage, child_task};
use super::registry::Env;
use super::workflow::{self, Rule, RuleArgs, kwargs_with};
use crate::batch::Batcher;
use crate::entry::{Entry, Fields, FileType};
use crate::task::{PathObject, Summary, surrogate, write_entry};
use crate::walk::{Walk, WalkEvent, WalkOptions};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Where child tasks and streamed results go, and where a task reads
/// what others stream to it.
pub trait ChildSink {
    /// Publishes a task message to `queue`. It is confirmed by the broker
    /// before the task's own result is published.
    fn send(&mut self, queue: &str, msg: Outgoing) -> Result<(), String>;
    /// Publishes a stream message (JSON) to `queue`.
    fn stream(&mut self, queue: &str, correlation_id: &str, body: Vec<u8>) -> Result<(), String>;
    /// Declares a private queue for this task and reads from it.
    fn subscribe(&mut self, queue: &str) -> Result<Box<dyn Inbox>, String>;
}

/// Messages streamed to a task.
pub trait Inbox {
    /// The next message body, or `None` if none came within `idle`.
    fn next(&mut self, idle: std::time::Duration) -> Result<Option<Vec<u8>>, String>;
}

/// Most failed paths listed in a discovery result's details; all are counted.
pub const MAX_LISTED_FAILURES: usize = 10_000;

/// The keyword arguments of `recursive_navigate` besides `paths` and `jobid`.
#[derive(Deserialize)]
struct NavigateArgs {
    #[serde(default)]
    skip_missing: bool,
    #[serde(flatten)]
    rules: RuleArgs,
}

/// What a discovery task produced: its result object and its children.
pub struct Discovered {
    /// The result object (JSON).
    pub result: Vec<u8>,
    /// Ids of the child tasks published.
    pub children: Vec<String>,
}

/// Runs `recursive_navigate` for `msg`, publishing children to `sink`.
pub fn recursive_navigate(msg: &TaskMessage, env: &Env, sink: &mut dyn ChildSink) -> Result<Discovered, String> {
    let started = crate::scan::now_iso8601();
    let roots = input_paths(msg)?;
    let args: NavigateArgs = msg.kwargs_as()?;
    let rules = args.rules.compile(&env.site, &env.queue)?;
    let jobid = msg.kwarg("jobid");
    // Sizes are needed only when batches are limited by bytes
    // (`file_batch_gb`); without that limit the walk needs no stat at all,
    // since types come from the directory entries, and runs several times
    // faster. Path objects then carry no `size`.
    let sizes = env.agent.batch.max_data_bytes.is_some();
    let mut run = Run {
        msg,
        env,
        sink,
        rules: &rules,
        jobid,
        batchers: rules.iter().map(|_| Batcher::new(env.agent.batch)).collect(),
        children: Vec::new(),
        matched: Vec::new(),
        fields: if sizes {
            Fields::PATH.with(Fields::SIZE)
        } else {
            Fields::PATH
        },
    };
    let mut failures = Vec::new();
    let mut failed = 0u64;
    let mut fail = |path: &[u8], why: String, failures: &mut Vec<u8>| {
        failed += 1;
        if (failed as usize) <= MAX_LISTED_FAILURES {
            if !failures.is_empty() {
                failures.push(b',');
            }
            failures.extend_from_slice(b"{\"path\":");
            surrogate::encode(path, failures);
            failures.extend_from_slice(b",\"message\":[");
            surrogate::encode(why.as_bytes(), failures);
            failures.extend_from_slice(b"]}");
        }
    };

    let mut walk_roots = Vec::new();
    let mut missing = 0u64;
    for r in &roots {
        match std::fs::symlink_metadata(OsStr::from_bytes(&r.path)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.skip_missing => {
                missing += 1;
                run.entry(&Entry {
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
    let mut opts = WalkOptions {
        threads: env.agent.walk_threads,
        stat: sizes,
        ..WalkOptions::default()
    };
    if let [only] = &rules[..] {
        opts.filter = only.filter().clone();
    }
    let mut summary = Summary::default();
    if !walk_roots.is_empty() {
        let mut walk = Walk::start(walk_roots, opts).map_err(|e| format!("cannot start the walk: {e}"))?;
        for ev in walk.by_ref() {
            match ev {
                WalkEvent::Entries(entries) => {
                    for e in &entries {
                        run.entry(e)?;
                    }
                }
                WalkEvent::Error(e) => fail(&e.path, e.to_string(), &mut failures),
            }
        }
        summary = walk.finish().map_err(|e| format!("the walk failed: {e}"))?;
    }
    run.finish()?;
    summary.files += missing;

    let mut out = Vec::with_capacity(1024 + failures.len());
    out.extend_from_slice(b"{\"jobid\":");
    out.extend_from_slice(jobid.map_or("null", RawValue::get).as_bytes());
    out.extend_from_slice(b",\"queue\":");
    surrogate::encode(env.queue_name.as_bytes(), &mut out);
    out.extend_from_slice(b",\"paths\":[],\"status\":{\"task\":\"dynamo.tasks.recursive_navigate\",\"input_paths\":[");
    for (i, r) in roots.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.write_json(&mut out);
    }
    out.extend_from_slice(format!("],\"input_total\":{},\"summary\":", roots.len()).as_bytes());
    let mut s = serde_json::to_value(summary).expect("json");
    s["failures"] = failed.into();
    s["children"] = run.children.len().into();
    out.extend_from_slice(s.to_string().as_bytes());
    out.extend_from_slice(b",\"details\":{\"failures\":[");
    out.extend_from_slice(&failures);
    out.extend_from_slice(b"]},\"started\":");
    surrogate::encode(started.as_bytes(), &mut out);
    out.extend_from_slice(format!(",\"has_dynamic_children\":{}}}}}", !run.children.is_empty()).as_bytes());
    Ok(Discovered {
        result: out,
        children: run.children,
    })
}

/// The task's `paths`, decoded.
pub fn input_paths(msg: &TaskMessage) -> Result<Vec<PathObject>, String> {
    let Some(raw) = msg.kwarg("paths") else {
        return Err("no `paths` argument".into());
    };
    let list: Vec<Box<RawValue>> =
        serde_json::from_str(raw.get()).map_err(|e| format!("`paths` must be a list: {e}"))?;
    list.iter()
        .enumerate()
        .map(|(i, p)| PathObject::parse(p.get().as_bytes()).map_err(|e| format!("paths[{i}]: {e}")))
        .collect()
}

struct Run<'a> {
    msg: &'a TaskMessage,
    env: &'a Env,
    sink: &'a mut dyn ChildSink,
    rules: &'a [Rule],
    jobid: Option<&'a RawValue>,
    batchers: Vec<Batcher<Vec<u8>>>,
    children: Vec<String>,
    matched: Vec<usize>,
    fields: Fields,
}

impl Run<'_> {
    fn entry(&mut self, e: &Entry) -> Result<(), String> {
        let mut matched = std::mem::take(&mut self.matched);
        workflow::matching(self.rules, &e.path, e.file_type, "all", &mut matched);
        if matched.is_empty() {
            self.matched = matched;
            return Ok(());
        }
        let mut obj = Vec::with_capacity(e.path.len() + 40);
        write_entry(e, self.fields, &mut obj);
        for &i in &matched {
            // One push can close two batches (the one filling, then a full
            // new one): publish every batch it hands back.
            let mut full = Vec::new();
            self.batchers[i].push(obj.clone(), e.data_size(), 0, |b| full.push(b));
            for batch in full {
                self.publish(i, batch)?;
            }
        }
        self.matched = matched;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for i in 0..self.batchers.len() {
            if let Some(batch) = self.batchers[i].flush() {
                self.publish(i, batch)?;
            }
        }
        Ok(())
    }

    fn publish(&mut self, rule: usize, batch: Vec<Vec<u8>>) -> Result<(), String> {
        let actions = &self.rules[rule].actions;
        let paths = batch.join(&b","[..]);
        let kwargs = kwargs_with(&actions[0].kwargs, self.jobid, Some(&paths));
        let chain: Vec<_> = actions[1..].iter().rev().map(|a| a.signature(self.jobid)).collect();
        let out = child_task(&actions[0].task, &kwargs, self.msg, &chain, &self.env.node);
        let id = out.id.clone();
        self.sink.send(&actions[0].queue, out)?;
        self.children.push(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::celery::{HeaderValue, Incoming, decode};
    use crate::agent::queues::AgentSettings;
    use crate::agent::workflow::{Context, Routing, RuleSpec};
    use crate::batch::BatchLimits;

    struct Memory(Vec<(String, TaskMessage)>);

    impl ChildSink for Memory {
        fn send(&mut self, queue: &str, msg: Outgoing) -> Result<(), String> {
            let m = decode(
                &Incoming {
                    headers: &msg.headers,
                    body: &msg.body,
                    ..Default::default()
                },
                usize::MAX,
            )
            .map_err(|e| e.reason)?;
            self.0.push((queue.to_string(), m));
            Ok(())
        }

        fn stream(&mut self, _: &str, _: &str, _: Vec<u8>) -> Result<(), String> {
            unreachable!("discovery does not stream")
        }

        fn subscribe(&mut self, _: &str) -> Result<Box<dyn Inbox>, String> {
            unreachable!("discovery does not subscribe")
        }
    }

    fn message(kwargs: serde_json::Value) -> TaskMessage {
        let headers = vec![
            (
                "task".into(),
                HeaderValue::Str("dynamo.tasks.recursive_navigate".into()),
            ),
            ("id".into(), HeaderValue::Str("parent".into())),
        ];
        let body = format!("[[], {kwargs}, null]");
        decode(
            &Incoming {
                headers: &headers,
                body: body.as_bytes(),
                ..Default::default()
            },
            usize::MAX,
        )
        .unwrap()
    }

    fn env() -> Env {
        Env {
            site: "s1".into(),
            queue: "default".into(),
            queue_name: "s1.default#discovery".into(),
            node: "ferry@test".into(),
            agent: AgentSettings {
                batch: BatchLimits::from_seed(3, 0.0, false),
                walk_threads: 2,
                ..AgentSettings::default()
            },
        }
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
        let mut sink = Memory(Vec::new());
        let out = recursive_navigate(&message(kwargs), &env(), &mut sink).unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.result).unwrap();
        let st = &r["status"];
        assert_eq!(r["jobid"], 5);
        assert_eq!(st["has_dynamic_children"], true);
        // 8 files on disk plus the missing one taken as a file.
        assert_eq!(st["summary"]["files"], 9, "{r}");
        assert_eq!(st["summary"]["dirs"], 2, "{r}");
        assert_eq!(out.children.len(), sink.0.len());

        let migrate: Vec<&TaskMessage> = sink
            .0
            .iter()
            .filter(|(q, _)| q == "s1.default#worker")
            .map(|(_, m)| m)
            .collect();
        let stat: Vec<&TaskMessage> = sink
            .0
            .iter()
            .filter(|(q, _)| q == "s9.default#worker")
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            migrate.len() + stat.len(),
            sink.0.len(),
            "{:?}",
            sink.0.iter().map(|x| &x.0).collect::<Vec<_>>()
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
        env.agent.batch = BatchLimits::from_seed(40, 0.000001, false);
        let kwargs = serde_json::json!({
            "paths": [dir.path().to_str().unwrap()],
            "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]}],
        });
        let mut sink = Memory(Vec::new());
        recursive_navigate(&message(kwargs), &env, &mut sink).unwrap();
        // 1,000 bytes per batch: a and b cannot share one.
        assert_eq!(
            sink.0.len(),
            2,
            "{:?}",
            sink.0
                .iter()
                .map(|(_, m)| m.kwarg("paths").unwrap().get().to_string())
                .collect::<Vec<_>>()
        );
        assert!(sink.0[0].1.kwarg("paths").unwrap().get().contains("\"size\":600"));
    }

    /// A file at least as big as the byte limit, after a partly filled
    /// batch, closes two batches in one push; both are published.
    #[test]
    fn a_push_that_closes_two_batches_publishes_both() {
        let mut env = env();
        env.agent.batch = BatchLimits::from_seed(40, 0.000001, false);
        let specs: Vec<RuleSpec> =
            serde_json::from_str(r#"[{"state":"all","type":"file","action":[{"name":"dynamo.tasks.stat_paths"}]}]"#)
                .unwrap();
        let routing = Routing {
            site: "s1".into(),
            queue: "default".into(),
        };
        let rules = workflow::compile(&specs, &Context::default(), &routing).unwrap();
        let msg = message(serde_json::json!({"paths": ["/x"]}));
        let mut sink = Memory(Vec::new());
        let mut run = Run {
            msg: &msg,
            env: &env,
            sink: &mut sink,
            rules: &rules,
            jobid: None,
            batchers: vec![Batcher::new(env.agent.batch)],
            children: Vec::new(),
            matched: Vec::new(),
            fields: Fields::PATH.with(Fields::SIZE),
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
        let batches: Vec<Vec<Vec<u8>>> = sink
            .0
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

    #[test]
    fn bad_arguments_fail_the_task() {
        let env = env();
        let mut sink = Memory(Vec::new());
        for (kwargs, why) in [
            (serde_json::json!({"filter_rules": []}), "no `paths`"),
            (serde_json::json!({"paths": ["/"]}), "no filter_rules"),
            (serde_json::json!({"paths": [5], "filter_rules": []}), "paths[0]"),
            (
                serde_json::json!({"paths": ["/"], "skip_missing": "yes", "filter_rules": []}),
                "`skip_missing`",
            ),
        ] {
            let e = recursive_navigate(&message(kwargs), &env, &mut sink).err().unwrap();
            assert!(e.contains(why), "{e}");
        }
        assert!(sink.0.is_empty());
    }
}
