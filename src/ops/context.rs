//! What every operation needs besides its arguments: the configuration,
//! ferry's xattr names, open endpoints, the I/O runtime and progress
//! counters.

use super::OpError;
use super::xattrs::Xattrs;
use crate::config::Config;
use crate::endpoint::Endpoint;
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
        let t = Arc::new(Endpoint::open(cfg, self.xattrs.prefix(), self.handle.clone())?);
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
