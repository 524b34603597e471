//! `ferry agent`: the node-local daemon a hub drives over RabbitMQ.
//!
//! It consumes `<site>.<queue>#<function>` queues, decodes Celery protocol
//! v2 task messages ([`celery`]), runs the named task ([`registry`]) on a
//! blocking thread, publishes the result to the caller's `reply_to` queue
//! the way Celery's `rpc://` backend does, and only then acknowledges the
//! message. Discovery tasks publish one child task per batch while they
//! walk. See `docs/agent.md`.

pub mod broker;
pub mod celery;
pub mod discovery;
pub mod metrics;
pub mod queues;
pub mod registry;
pub mod runtime;
pub mod snapdiff;
pub mod workflow;
