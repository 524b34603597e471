//! Fixtures shared by integration tests.

pub mod btrfs;
pub mod ops;
pub mod s3;
