//! A snapdiff task's test fileset, shared by the tests of the snapdiff
//! and collect tasks: a plain directory (provider `none`) and its state
//! directory, run through the task as the agent would.

use crate::agent::tasks::context::memory::{Memory, env, message};
use crate::agent::tasks::snapdiff::snapdiff_task;
use crate::agent::tasks::{Kind, Request, TaskError};
use crate::config::Config;
use crate::task::TaskName;
use std::time::Duration;

/// A fileset (a plain directory, provider `none`) and its state dir.
pub(crate) struct Fileset {
    _dir: tempfile::TempDir,
    pub(crate) root: std::path::PathBuf,
    pub(crate) state: std::path::PathBuf,
}

impl Fileset {
    pub(crate) fn new(files: &[&str]) -> Fileset {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fs");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        for f in files {
            std::fs::write(root.join(f), f.as_bytes()).unwrap();
        }
        Fileset { _dir: dir, root, state }
    }

    /// Runs the task as the agent would, with every change routed to
    /// its own action and `extra` keyword arguments.
    pub(crate) fn run(&self, sink: &mut Memory, extra: serde_json::Value) -> Result<serde_json::Value, TaskError> {
        let mut kwargs = serde_json::json!({
            "paths": [self.root.to_str().unwrap()],
            "jobid": 9,
            "provider": "none",
            "state_dir": self.state.to_str().unwrap(),
            "filter_rules": [
                {"state": "deleted", "type": "all", "action": [{"name": "dynamo.tasks.delete_paths_from_gpfs"}]},
                {"state": "moved", "type": "all", "action": [{"name": "dynamo.tasks.move_paths_on_gpfs"}]},
                {"state": "created", "type": "file", "action": [{"name": "dynamo.tasks.migrate", "endpoint": "e"}]},
                {"state": "updated", "type": "file", "action": [{"name": "dynamo.tasks.migrate", "endpoint": "e"}]},
            ],
        });
        kwargs
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let msg = message(TaskName::Snapdiff, "sd-1", kwargs);
        let Request { input, kind } = Request::decode(&msg)?;
        let Kind::Snapdiff(args) = kind else {
            panic!("not a snapdiff request")
        };
        let mut env = env(2, Duration::from_millis(10));
        env.cancel = sink.cancel();
        let config = Config::parse("fixture", "[settings]\nsite = s1\n").unwrap();
        let out = snapdiff_task(&input, &args, &env, &config, sink)?;
        assert_eq!(out.children.ids.len(), sink.sent.len());
        Ok(serde_json::from_slice(&out.result).unwrap())
    }
}
