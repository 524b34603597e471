//! `ferry agent`: the node-local daemon a hub drives over RabbitMQ.
//!
//! It consumes `<site>.<queue>#<function>` queues, decodes Celery protocol
//! v2 task messages ([`celery`]), runs the named task ([`tasks`]) on a
//! blocking thread, publishes the result to the caller's `reply_to` queue
//! the way Celery's `rpc://` backend does, and only then acknowledges the
//! message ([`runtime`]). Discovery tasks publish one child task per batch
//! while they walk, through the broker's side of the tasks' sink
//! ([`broker`]). A hub cancels jobs over the control channel ([`control`]):
//! their tasks are answered `REVOKED` instead of running, and a running
//! discovery of one stops publishing. Around that: Celery events and heartbeats ([`events`]),
//! Prometheus metrics ([`metrics`]), redelivery bookkeeping ([`results`]),
//! systemd notification ([`systemd`]) and the scheduled clean-up of its
//! endpoints' stores ([`upkeep`]). See `docs/agent.md`.

pub mod broker;
pub mod celery;
pub mod control;
pub mod events;
mod journal;
pub mod metrics;
pub mod results;
pub mod runtime;
pub mod systemd;
pub mod tasks;
mod upkeep;

pub use runtime::{AgentError, AgentHandle, node_name, prepare, redact};
