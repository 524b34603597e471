//! Fixtures shared by integration tests.

pub mod agent;
pub mod btrfs;
pub mod ops;
pub mod s3;
