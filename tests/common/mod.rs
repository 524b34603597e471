//! Fixtures shared by integration tests.

pub mod btrfs;
pub mod s3;
