//! ferry: high-throughput filesystem discovery and sync for HPC storage.
//!
//! Data flows one way through typed values and bounded channels:
//!
//! ```text
//! discovery: walk (parallel getdents64/statx) | snapdiff (snapshot → manifest → diff)
//!     → rules (include/exclude, state, type → actions)
//!     → batch (file_batch_size, file_batch_gb, dynamic sizing)
//!     → sink: stdout (output) | child tasks on RabbitMQ (agent)
//!     → ops (migrate, recall, reverse stub, move, delete, ...) with endpoint and gpfs
//!     → per-file outcomes → result objects (task) → stdout | the caller's reply queue
//! ```
//!
//! The layers, lowest first; a module imports only from layers below it:
//! [`sys`] (the only module with `unsafe`) → [`config`] → [`entry`],
//! [`rules`], [`batch`], [`task`] (the wire contract) → [`walk`] →
//! [`snapdiff`], [`endpoint`], [`gpfs`] → [`ops`] → [`agent`] → [`hub`]; the `ferry`
//! binary's `cli` sits on top and only turns flags into library requests.
//! [`scan`], [`output`] and [`progress`] are the shell's side of discovery.
//! [`client`] is the hub's REST API seen from outside (`ferry client`): it
//! talks JSON over HTTP and imports only [`config`] and [`task`].
//! See `docs/architecture.md`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod batch;
pub mod client;
pub mod config;
pub mod endpoint;
pub mod entry;
pub mod gpfs;
pub mod hub;
pub mod ops;
pub mod output;
pub mod progress;
pub mod rules;
pub mod scan;
pub mod snapdiff;
#[allow(unsafe_code)]
pub mod sys;
pub mod task;
pub mod testtree;
pub mod walk;
