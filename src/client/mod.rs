//! A client of a hub's REST API, for `ferry client` (the shape of
//! Ngenea's `ngclient`): authenticate, run the built-in workflows on
//! paths and wait for the job, manage workflows and jobs.
//!
//! It is a pure API client: it talks JSON over HTTP(S) to any hub that
//! speaks the API of docs/hub.md, with its own small views of what it
//! reads ([`views`]), and imports nothing of the hub's code, so it works
//! the same against a remote hub of another version. [`HubClient`] makes
//! the calls ([`http`]); [`wait_for_job`] follows a job to its end
//! ([`wait`]); [`ClientConfig`] reads `/etc/ferry/client.conf` and the
//! user's own file ([`config`]); every failure is a [`ClientError`] that
//! keeps the URL, the status and the hub's `detail` ([`error`]).

pub mod config;
pub mod error;
pub mod http;
pub mod views;
pub mod wait;

pub use config::ClientConfig;
pub use error::ClientError;
pub use http::{ClientOptions, Credentials, DEFAULT_BASE_URL, HubClient, JobAction, JobFilter};
pub use views::{FileRecordView, Job, JobView, ProgressView, Submission, path_literal};
pub use wait::{Seen, WaitEnd, WaitOptions, wait_for_job};
