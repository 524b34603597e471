//! What can go wrong talking to a hub, kept with what the operator needs
//! to act on it: the URL asked, the status answered, and the hub's own
//! `detail` (every error answer of the hub is `{"detail": "..."}`).

/// A request to the hub that did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("bad base URL {url:?}: {reason}")]
    BadBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client cannot be built (TLS set-up).
    #[error("cannot set up HTTPS: {0}")]
    Setup(String),
    /// No answer: no connection, a TLS handshake refused, or no answer in
    /// time.
    #[error("cannot reach the hub at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The lowest-level cause (`Connection refused (os error 111)`,
        /// `invalid peer certificate: UnknownIssuer`, ...).
        reason: String,
    },
    /// The hub answered with an error status.
    #[error("{method} {url}: {status} {}: {detail}", reason_phrase(*status))]
    Status {
        /// The request's method.
        method: String,
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The hub's `detail`, or the start of the body when it has none.
        detail: String,
    },
    /// The answer is not the JSON a hub sends.
    #[error("{url}: the answer is not what a ferry or Ngenea hub sends: {reason}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What did not fit.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status the hub answered, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether asking again later may succeed: no answer, or a hub that
    /// says it cannot answer now (502, 503, 504). Used while waiting for a
    /// job, so that a hub restart does not end the wait.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Status { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

/// The reason phrase of a status, for messages.
fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_the_url_status_and_detail() {
        let e = ClientError::Status {
            method: "GET".into(),
            url: "http://h:8000/api/jobs/".into(),
            status: 401,
            detail: "Invalid API key.".into(),
        };
        assert_eq!(
            e.to_string(),
            "GET http://h:8000/api/jobs/: 401 Unauthorized: Invalid API key."
        );
        assert_eq!(e.status(), Some(401));
        assert!(!e.is_transient());
        let busy = ClientError::Status {
            method: "GET".into(),
            url: "u".into(),
            status: 503,
            detail: "d".into(),
        };
        assert!(busy.is_transient());
    }
}
