//! `dynamo.tasks.snapdiff` through the agent: changes go through the
//! filter rules into child tasks; deleted and moved batches stream their
//! per-file results back before created batches are sent; the run rotates.

mod common;

use common::agent::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Reads replies into `results` (by task id) until `done` says so.
async fn collect(c: &mut Client, results: &mut HashMap<String, Value>, done: impl Fn(&HashMap<String, Value>) -> bool) {
    while !done(results) {
        let r = c.reply(Duration::from_secs(60)).await;
        results.insert(r["task_id"].as_str().unwrap().to_string(), r);
    }
}

fn children(r: &Value) -> Vec<String> {
    r["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0][0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn snapdiff_streams_deletes_and_moves_before_creates() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let data = agent.data();
    for n in ["a", "b", "c"] {
        std::fs::write(data.join(n), n.as_bytes()).unwrap();
    }
    agent.start();
    let state = agent.dir.path().join("state");
    let kwargs = json!({
        "paths": [data.to_str().unwrap()],
        "jobid": 11,
        "provider": "none",
        "state_dir": state.to_str().unwrap(),
        "filter_rules": [
            {"state": "created", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]},
            {"state": "moved", "type": "file", "action": [{"name": "dynamo.tasks.stat_paths"}]},
            {"state": "deleted", "type": "all", "action": [{"name": "dynamo.tasks.delete_paths_from_gpfs"}]},
        ],
    })
    .to_string();
    let queue = agent.queue("discovery");
    rt().block_on(async {
        let mut c = Client::connect().await;
        // First run: everything is created.
        // Children may report before their parent: keep every reply.
        let mut results = HashMap::new();
        let id = c.send_task(&queue, "dynamo.tasks.snapdiff", &kwargs).await;
        collect(&mut c, &mut results, |r| r.contains_key(&id)).await;
        let r = results[&id].clone();
        assert_eq!(r["status"], "SUCCESS", "{r}\n{}", agent.log());
        let st = &r["result"]["status"];
        // The root directory and the three files.
        assert_eq!(st["summary"]["created"], 4, "{r}");
        assert_eq!(st["snapdiff"]["outcome"], "rotated", "{r}");
        assert_eq!(st["snapdiff"]["first_run"], true, "{r}");
        assert_eq!(st["has_dynamic_children"], true);
        let kids = children(&r);
        collect(&mut c, &mut results, |r| kids.iter().all(|k| r.contains_key(k))).await;
        for k in &kids {
            assert_eq!(results[k]["status"], "SUCCESS", "{}", results[k]);
        }

        // Second run: b deleted, c moved to d, e created.
        std::fs::remove_file(data.join("b")).unwrap();
        std::fs::rename(data.join("c"), data.join("d")).unwrap();
        std::fs::write(data.join("e"), b"e").unwrap();
        let mut results = HashMap::new();
        let id = c.send_task(&queue, "dynamo.tasks.snapdiff", &kwargs).await;
        collect(&mut c, &mut results, |r| r.contains_key(&id) && r.len() >= 4).await;
        let r = &results[&id];
        assert_eq!(r["status"], "SUCCESS", "{r}");
        let st = &r["result"]["status"];
        assert_eq!(
            (
                st["summary"]["created"].as_u64(),
                st["summary"]["moved"].as_u64(),
                st["summary"]["deleted"].as_u64()
            ),
            (Some(1), Some(1), Some(1)),
            "{r}"
        );
        // The delete and move handlers streamed one path each.
        assert_eq!(st["summary"]["streamed"], 2, "{r}");
        assert_eq!(st["summary"]["streamed_failures"], 0, "{r}");
        assert_eq!(st["snapdiff"]["outcome"], "rotated", "{r}");
        let kids = children(r);
        assert_eq!(kids.len(), 3, "{r}");
        let mut by_task = HashMap::new();
        for k in &kids {
            let cr = &results[k];
            assert_eq!(cr["status"], "SUCCESS", "{cr}");
            let task = cr["result"]["status"]["task"].as_str().unwrap().to_string();
            let path = cr["result"]["status"]["input_paths"][0]["path"]
                .as_str()
                .unwrap()
                .to_string();
            by_task.insert(
                path,
                (
                    task,
                    cr["result"]["status"]["input_paths"][0]["state"].clone(),
                    k.clone(),
                ),
            );
        }
        let p = |n: &str| data.join(n).to_str().unwrap().to_string();
        assert_eq!(by_task[&p("b")].0, "dynamo.tasks.delete_paths_from_gpfs");
        assert_eq!(by_task[&p("d")].1, "moved");
        assert_eq!(by_task[&p("e")].1, "created");
        // The created batch went out only after the delete and move
        // handlers had reported.
        let log = agent.log();
        let at = |what: &str, id: &str| {
            log.lines()
                .position(|l| l.contains(what) && l.contains(id))
                .unwrap_or_else(|| panic!("no {what} {id} in\n{log}"))
        };
        let reported = at("delete and move handlers reported", &id);
        assert!(at("task started", &by_task[&p("e")].2) > reported, "{log}");
        assert!(at("task started", &by_task[&p("b")].2) < reported, "{log}");
        assert!(at("task started", &by_task[&p("d")].2) < reported, "{log}");
    });
    assert!(agent.stop().success());
}
