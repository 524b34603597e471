//! Discovered paths into child tasks: batches kept per key (a rule, or a
//! rule and a change state) and published the moment one is full, each as
//! a child task of its rule's first action with the rest of the actions
//! chained behind it; and the next link of a chain after an operation.
//!
//! Published go through a [`ChildSink`], which returns only once the broker
//! has confirmed the message, so a task whose result says it spawned a
//! child has really spawned it.
//!
//! Before each child the publisher asks whether the job has been cancelled
//! ([`super::context::Cancel`]); from the first yes on it publishes
//! nothing more, so a cancelled discovery stops within one batch and its
//! `children_count` is exactly the children that went out.

use super::context::{Cancel, ChildSink, Published, SinkError, TaskEnv, TaskError};
use super::rules::Action;
use crate::agent::celery::{ChildId, Signature, TaskMessage, child_task, object_text, retry_task};
use crate::batch::{BatchLimits, Batcher};
use crate::config::queue_name;
use crate::task::ArgumentError;
use crate::task::args::kwargs_with;
use crate::task::names::function_of;
use crate::task::path_object::OrderedMap;
use serde_json::value::RawValue;

/// The keyword argument that makes a walk a piece of a split one: its
/// paths are directories whose own entries the parent walk reported, and
/// only what is below them is walked.
pub const BELOW: &str = "below";

/// Publishes the child tasks of one parent task and remembers their ids.
pub struct Publisher<'a> {
    parent: &'a TaskMessage,
    node: &'a str,
    jobid: Option<&'a RawValue>,
    sink: &'a mut dyn ChildSink,
    children: Published,
    keep_ids: bool,
    cancel: &'a Cancel,
    /// The job was found cancelled: nothing more goes out.
    cancelled: bool,
}

impl<'a> Publisher<'a> {
    /// The children of `parent`, running in `env` (whose node sends them
    /// and whose [`Cancel`] stops them), published through `sink`, each
    /// carrying the job id `jobid`.
    pub fn new(
        parent: &'a TaskMessage,
        env: &'a TaskEnv,
        jobid: Option<&'a RawValue>,
        sink: &'a mut dyn ChildSink,
    ) -> Publisher<'a> {
        Publisher {
            parent,
            node: &env.node,
            cancel: &env.cancel,
            cancelled: false,
            jobid,
            sink,
            children: Published {
                run: ChildId::new_run(),
                ..Published::default()
            },
            keep_ids: parent.kwarg("children_in_result").is_none_or(|v| v.get() != "false"),
        }
    }

    /// Whether the parent's job has been cancelled. Asked before every
    /// child; once the answer is yes it stays yes for this task (an entry
    /// that expires meanwhile does not resume it).
    pub fn cancelled(&mut self) -> bool {
        self.cancelled = self.cancelled || self.cancel.is_cancelled();
        self.cancelled
    }

    /// Whether [`Publisher::cancelled`] has said yes: the task stopped
    /// publishing because its job was cancelled (asks nothing new).
    pub fn was_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Publishes `batch` (encoded path objects) as a task of `actions[0]`
    /// with `extra` keyword arguments (members without braces) added to
    /// its own, the other actions chained behind it; returns its id, or
    /// `None` when the job is cancelled and nothing was published.
    pub fn batch(&mut self, actions: &[Action], batch: &[Vec<u8>], extra: &str) -> Result<Option<String>, SinkError> {
        let first = &actions[0];
        let paths = batch.join(&b","[..]);
        let own = match (first.kwargs.is_empty(), extra.is_empty()) {
            (_, true) => first.kwargs.clone(),
            (true, false) => extra.to_string(),
            (false, false) => format!("{},{extra}", first.kwargs),
        };
        let kwargs = kwargs_with(&own, self.jobid, Some(&paths));
        let chain: Vec<Signature> = actions[1..].iter().rev().map(|a| a.signature(self.jobid)).collect();
        self.send(&first.task, &first.queue, &kwargs, &chain)
    }

    /// Sends the next link of the parent's chain (its last element runs
    /// first) on `paths` (encoded path objects separated by commas): the
    /// paths that go on after an operation. The link's queue is its own, or
    /// the function queue of its task on `site`'s `queue`. `None` when there
    /// is no next link, or the job is cancelled and it was not sent.
    pub fn next_link(&mut self, site: &str, queue: &str, paths: &[u8]) -> Result<Option<String>, ChainError> {
        let Some((next, rest)) = self.parent.chain.split_last() else {
            return Ok(None);
        };
        let own = next.kwargs.as_ref().map_or("{}", |k| k.get());
        let own: OrderedMap = serde_json::from_str(own).map_err(|e| ChainError::Kwargs {
            task: next.task.clone(),
            reason: e.to_string(),
        })?;
        let members = object_text(own.0.iter().filter(|(k, _)| k != "paths" && k != "jobid"));
        let own_jobid = own.0.iter().find(|(k, _)| k == "jobid").map(|(_, v)| &**v);
        let kwargs = kwargs_with(&members[1..members.len() - 1], self.jobid.or(own_jobid), Some(paths));
        let target = next
            .options
            .as_ref()
            .and_then(|o| o.queue.clone())
            .unwrap_or_else(|| queue_name(site, queue, function_of(&next.task)));
        Ok(self.send(&next.task, &target, &kwargs, rest)?)
    }

    fn send(
        &mut self,
        task: &str,
        queue: &str,
        kwargs: &str,
        chain: &[Signature],
    ) -> Result<Option<String>, SinkError> {
        let (parent, node) = (self.parent, self.node);
        self.publish(queue, |id| child_task(id, task, kwargs, parent, chain, node))
    }

    /// Publishes the message `build` makes from the next child id to
    /// `queue`, and counts it; `None` when the job is cancelled and
    /// nothing was published.
    fn publish(
        &mut self,
        queue: &str,
        build: impl FnOnce(String) -> crate::agent::celery::Outgoing,
    ) -> Result<Option<String>, SinkError> {
        if self.cancelled() {
            return Ok(None);
        }
        let id = ChildId {
            run: self.children.run,
            seq: self.children.count,
        }
        .to_uuid();
        self.sink.send(queue, build(id.clone()))?;
        self.children.count += 1;
        if self.keep_ids {
            self.children.ids.push(id.clone());
        }
        Ok(Some(id))
    }

    /// Sends the parent task again on `paths` (encoded path objects
    /// separated by commas) to `queue`, as a retry child ([`retry_task`]:
    /// one more try, not before `eta`), with the parent's own keyword
    /// arguments and chain. `None` when the job is cancelled and it was not
    /// sent.
    pub fn retry(&mut self, queue: &str, paths: &[u8], eta: jiff::Timestamp) -> Result<Option<String>, SinkError> {
        let kwargs = kwargs_with(&self.own_members(""), self.jobid, Some(paths));
        let (parent, node) = (self.parent, self.node);
        self.publish(queue, |id| retry_task(id, parent, &kwargs, &parent.chain, node, eta))
    }

    /// The parent's own keyword arguments but `paths`, `jobid` and `also`,
    /// as object members without braces.
    fn own_members(&self, also: &str) -> String {
        let members = object_text(
            self.parent
                .kwargs
                .iter()
                .filter(|(k, _)| k != "paths" && k != "jobid" && k != also),
        );
        members[1..members.len() - 1].to_string()
    }

    /// Sends a piece of the parent's walk to `queue`: the parent task
    /// again, with its own keyword arguments, on `paths` (encoded path
    /// objects separated by commas: directories the parent's walk handed
    /// over) and with `below: true`, since the parent reported the
    /// directories themselves. `None` when the job is cancelled and it was
    /// not sent.
    pub fn piece(&mut self, queue: &str, paths: &[u8]) -> Result<Option<String>, SinkError> {
        let parent = self.parent;
        let inner = self.own_members(BELOW);
        let own = match inner.is_empty() {
            true => format!("\"{BELOW}\":true"),
            false => format!("{inner},\"{BELOW}\":true"),
        };
        let kwargs = kwargs_with(&own, self.jobid, Some(paths));
        self.send(&parent.task, queue, &kwargs, &parent.chain)
    }

    /// Children published so far.
    pub fn sent(&self) -> u64 {
        self.children.count
    }

    /// Stream messages go through the same sink.
    pub fn sink(&mut self) -> &mut dyn ChildSink {
        self.sink
    }

    /// The children published.
    pub fn into_children(self) -> Published {
        self.children
    }
}

impl From<ChainError> for TaskError {
    /// A link that is not an object is the caller's argument error; a
    /// publish that failed is the broker's.
    fn from(e: ChainError) -> TaskError {
        match e {
            ChainError::Sink(s) => TaskError::Broker(s),
            kwargs => TaskError::Arguments(ArgumentError::invalid("chain", kwargs.to_string())),
        }
    }
}

/// Why the next link of a chain could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The link's own keyword arguments are not an object.
    #[error("chain link {task}: kwargs: {reason}")]
    Kwargs {
        /// The link's task.
        task: String,
        /// The JSON error.
        reason: String,
    },
    /// Publishing failed.
    #[error("{0}")]
    Sink(#[from] SinkError),
}

/// Open batches by key, each handed to `publish` as soon as it is full.
pub struct Batches<K> {
    limits: BatchLimits,
    open: Vec<(K, Batcher<Vec<u8>>)>,
    /// The run's known total, for every batcher ([`Batcher::expect`]).
    expected: u64,
}

impl<K: Copy + PartialEq> Batches<K> {
    /// No open batches yet; each new key gets a batcher with `limits`.
    pub fn new(limits: BatchLimits) -> Batches<K> {
        Batches {
            limits,
            open: Vec::new(),
            expected: 0,
        }
    }

    /// Empty batches for `keys`, in this order, which is the order
    /// [`Batches::flush`] publishes their remainders in.
    pub fn with_keys(limits: BatchLimits, keys: impl IntoIterator<Item = K>) -> Batches<K> {
        Batches {
            limits,
            open: keys.into_iter().map(|k| (k, Batcher::new(limits))).collect(),
            expected: 0,
        }
    }

    /// Empty batches of another key with these limits and this expected
    /// total: a later step of the same run, sized as this one.
    pub fn like<J>(&self) -> Batches<J> {
        Batches {
            limits: self.limits,
            open: Vec::new(),
            expected: self.expected,
        }
    }

    /// Sizes every batch, open or to come, for a run of at least `total`
    /// paths ([`Batcher::expect`]).
    pub fn expect(&mut self, total: u64) {
        self.expected = self.expected.max(total);
        for (_, b) in &mut self.open {
            b.expect(total);
        }
    }

    /// Adds one encoded path object of `size` bytes of file data to the
    /// batch of `key`. One push can close two batches (the one filling,
    /// then a full new one, for a file at least as big as the data limit):
    /// every batch it hands back is published.
    pub fn push<E>(
        &mut self,
        key: K,
        obj: Vec<u8>,
        size: u64,
        publish: &mut impl FnMut(K, Vec<Vec<u8>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let i = match self.open.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let mut b = Batcher::new(self.limits);
                b.expect(self.expected);
                self.open.push((key, b));
                self.open.len() - 1
            }
        };
        let mut full = Vec::new();
        self.open[i].1.push(obj, size, 0, |b| full.push(b));
        for batch in full {
            publish(key, batch)?;
        }
        Ok(())
    }

    /// Publishes what is left in the batches whose key `which` selects,
    /// in the order of their keys (given, or as they first came).
    pub fn flush<E>(
        &mut self,
        which: impl Fn(&K) -> bool,
        publish: &mut impl FnMut(K, Vec<Vec<u8>>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = Vec::new();
        for (k, b) in &mut self.open {
            if which(k)
                && let Some(batch) = b.flush()
            {
                rest.push((*k, batch));
            }
        }
        for (k, batch) in rest {
            publish(k, batch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::celery::{HeaderValue, Incoming, decode};
    use crate::agent::tasks::context::memory::{self, Memory};
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    #[test]
    fn a_cancelled_job_sends_no_next_link() {
        let headers = vec![
            ("task".into(), HeaderValue::Str("dynamo.tasks.stat_paths".into())),
            ("id".into(), HeaderValue::Str("op-1".into())),
        ];
        let body = br#"[[], {"paths": ["/a"]}, {"chain": [{"task": "dynamo.tasks.recall", "kwargs": {}}]}]"#;
        let incoming = Incoming {
            headers: &headers,
            body,
            ..Default::default()
        };
        let msg = decode(&incoming, usize::MAX).unwrap();
        for cancelled in [false, true] {
            let mut sink = Memory::default();
            sink.cancelled.store(cancelled, Relaxed);
            let mut env = memory::env(3, Duration::from_secs(1));
            env.cancel = sink.cancel();
            let mut publisher = Publisher::new(&msg, &env, None, &mut sink);
            let link = publisher.next_link("s1", "default", br#"{"path":"/a"}"#).unwrap();
            assert_eq!(link.is_some(), !cancelled);
            assert_eq!(publisher.was_cancelled(), cancelled);
            assert_eq!(publisher.into_children().count, u64::from(!cancelled));
            let sent: Vec<&str> = sink.sent.iter().map(|(q, _)| q.as_str()).collect();
            let want: &[&str] = if cancelled { &[] } else { &["s1.default#worker"] };
            assert_eq!(sent, want, "cancelled: {cancelled}");
        }
    }
}
