//! The one error an operation as a whole can end in.

use crate::config::UnknownEndpoint;
use crate::endpoint::EndpointError;
use crate::task::ArgumentError;

/// Why an operation could not run at all (per-file problems are outcomes,
/// never errors).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The task's arguments cannot be used.
    #[error("{0}")]
    Arguments(#[from] ArgumentError),
    /// The endpoint it names is not configured on this node.
    #[error("{0}")]
    UnknownEndpoint(#[from] UnknownEndpoint),
    /// The endpoint's store could not be opened.
    #[error("{0}")]
    Endpoint(#[from] EndpointError),
}

impl OpError {
    /// Whether the endpoint is missing or unreachable (rather than the
    /// arguments being wrong).
    pub fn is_endpoint(&self) -> bool {
        matches!(self, OpError::UnknownEndpoint(_) | OpError::Endpoint(_))
    }
}
