//! What every operation needs besides its arguments: the configuration,
//! ferry's xattr names, open endpoints, the I/O runtime and progress
//! counters.

use super::OpError;
use super::xattrs::Xattrs;
use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::endpoint::throttle::Throttle;
use crate::task::{FileState, Outcome, Summary, SummaryCounters};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

/// Everything an operation needs besides its arguments.
pub struct OpContext {
    /// The configuration (endpoints, xattr prefix, how to reach GPFS).
    pub config: Config,
    /// ferry's xattr names.
    pub xattrs: Xattrs,
    /// Files worked on at once.
    pub threads: usize,
    /// Files done, bytes moved and failures so far, for progress displays.
    pub counters: Arc<SummaryCounters>,
    /// The runtime that drives the stores' I/O, when this context owns one
    /// (the command line); the agent lends its own through `handle`.
    _runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// One transfer budget for every endpoint (`bandwidth`), if capped.
    bandwidth: Option<Arc<Throttle>>,
}

impl OpContext {
    /// A context for `config`, working on `threads` files at once (the
    /// configuration's `threads` when `None`), with its own I/O runtime.
    pub fn new(config: Config, threads: Option<usize>) -> io::Result<OpContext> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-io")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self::build(config, threads, Some(runtime), handle))
    }

    /// A context whose stores' I/O runs on `handle`'s runtime (the agent's).
    /// Operations must then run outside that runtime's async tasks (on its
    /// blocking threads), since they wait for the I/O.
    pub fn with_handle(config: Config, threads: Option<usize>, handle: tokio::runtime::Handle) -> OpContext {
        Self::build(config, threads, None, handle)
    }

    fn build(
        config: Config,
        threads: Option<usize>,
        runtime: Option<tokio::runtime::Runtime>,
        handle: tokio::runtime::Handle,
    ) -> OpContext {
        OpContext {
            bandwidth: Throttle::megabits(config.settings.bandwidth).map(Arc::new),
            xattrs: Xattrs::new(&config.settings.xattr_prefix),
            threads: threads.unwrap_or(config.settings.threads).max(1),
            config,
            counters: Arc::new(SummaryCounters::default()),
            _runtime: runtime,
            handle,
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint called `name`, opened once and shared.
    pub fn endpoint(&self, name: &str) -> Result<Arc<Endpoint>, OpError> {
        let mut endpoints = self.endpoints.lock().expect("endpoint cache");
        if let Some(t) = endpoints.get(name) {
            return Ok(t.clone());
        }
        let cfg = self.config.endpoint(name)?;
        let mut t = Endpoint::open(cfg, self.xattrs.prefix(), self.handle.clone())?;
        if let Some(budget) = &self.bandwidth {
            t.throttle(budget.clone());
        }
        let t = Arc::new(t);
        endpoints.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Counts one finished file for progress displays.
    pub(crate) fn count(&self, outcome: &Outcome, bytes: u64) {
        let mut s = Summary {
            files: 1,
            ..Summary::default()
        };
        if outcome.state == FileState::Processed {
            s.add_bytes(bytes);
        }
        if outcome.state == FileState::Failures {
            s.failures = 1;
        }
        self.counters.add(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Operation;
    use crate::task::{PathObject, TaskName};
    use std::time::{Duration, Instant};

    /// With `bandwidth = 8` (1 MB/s), sending 2 MB and bringing it back
    /// cannot take less than the cap allows, less the burst it banks: the
    /// transfers paid the budget. (A lower bound: a slow machine only
    /// makes it longer.)
    #[test]
    fn bandwidth_caps_what_goes_to_and_from_an_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (data, store) = (dir.path().join("data"), dir.path().join("store"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&store).unwrap();
        let text = format!(
            "[settings]\nbandwidth = 8\n[Endpoint e]\ntype = directory\npath = {}\nroot = {}\n",
            store.display(),
            data.display()
        );
        let ctx = OpContext::new(Config::parse("t", &text).unwrap(), Some(2)).unwrap();
        let path = data.join("f");
        std::fs::write(&path, vec![7u8; 2_000_000]).unwrap();
        let paths = [PathObject::new(path.as_os_str().as_encoded_bytes().to_vec())];
        let t0 = Instant::now();
        let migrate = Operation::from_task(TaskName::Migrate, "{}").unwrap().unwrap();
        assert_eq!(migrate.run(&ctx, &paths).unwrap()[0].state, FileState::Processed);
        let sent = t0.elapsed();
        assert!(sent >= Duration::from_millis(1700), "2 MB at 1 MB/s went in {sent:?}");
        let recall = Operation::from_task(TaskName::Recall, "{}").unwrap().unwrap();
        assert_eq!(recall.run(&ctx, &paths).unwrap()[0].state, FileState::Processed);
        let both = t0.elapsed();
        assert!(both >= Duration::from_millis(3700), "4 MB at 1 MB/s went in {both:?}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 2_000_000]);
    }
}
