//! Tests of `recursive_navigate`, each through an in-memory sink.

use super::*;
use crate::agent::celery::TaskMessage;
use crate::agent::tasks::context::memory::{self, Memory};
use crate::agent::tasks::rules::{Context, Routing, RuleSpec};
use crate::agent::tasks::{Kind, Request};
use crate::batch::BatchLimits;
use crate::task::{PathObject, TaskName, parse_paths};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
