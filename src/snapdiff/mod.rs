//! Snapshot-diff discovery: what was created, updated, moved and deleted in
//! a fileset since the last successful run.
//!
//! A [`manifest`] records every link of the fileset at one point in time,
//! sorted by inode; the [`diff`] merge-joins two manifests on (inode,
//! generation) and orders the changes so that applying them is safe.
//! See `docs/snapdiff.md`.

pub mod build;
pub mod codec;
pub mod diff;
pub mod extsort;
pub mod inspect;
pub mod journal;
pub mod manifest;
pub mod memory;
pub mod output;
pub mod own_xattrs;
pub mod parallel;
pub mod paths;
pub mod provider;
pub mod record;
pub mod report;
pub mod request;
pub mod run;
pub mod set;
pub mod state;
pub mod view;
