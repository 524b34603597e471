//! ferry: high-throughput filesystem discovery and sync for HPC storage.
//!
//! Data flows one way through typed values and bounded channels:
//! [`walk`] discovers [`entry::Entry`] values (filtered by [`rules`]),
//! [`batch`] cuts them into batches, and [`output`] writes them for the
//! shell; [`scan`] ties these together for `ferry scan`. `sys` is the only
//! module with `unsafe` code. See `docs/architecture.md`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod batch;
pub mod config;
pub mod entry;
pub mod ops;
pub mod output;
pub mod progress;
pub mod rules;
pub mod scan;
pub mod snapdiff;
#[allow(unsafe_code)]
pub mod sys;
pub mod target;
pub mod task;
pub mod testtree;
pub mod walk;
