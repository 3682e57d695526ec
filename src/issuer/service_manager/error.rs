//! Why a Service Manager call failed: a stable kind (logs, metrics), the URL, and Service
//! Manager's own words; whether the call may be retried.

/// Why a Service Manager call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmErrorKind {
    /// The service key is unusable (missing fields, bad PEM).
    AccessKey,
    /// No token for the Service Manager client, or SM refused the token.
    Auth,
    NotFound,
    Conflict,
    /// 422 `ConcurrentOperation`, still after the retries.
    Concurrent,
    RateLimited,
    /// 400 and other client errors: SM refused the request.
    Rejected,
    ServerError,
    Timeout,
    Connect,
    /// A response certrot cannot use (not JSON, missing fields, oversize).
    BadResponse,
    /// The asynchronous operation ended `failed`, or did not end before the deadline.
    OperationFailed,
}

impl SmErrorKind {
    /// Stable label (logs, metrics, CLI summary).
    pub fn label(self) -> &'static str {
        match self {
            SmErrorKind::AccessKey => "sm-access-key",
            SmErrorKind::Auth => "sm-unauthorized",
            SmErrorKind::NotFound => "sm-not-found",
            SmErrorKind::Conflict => "sm-conflict",
            SmErrorKind::Concurrent => "sm-concurrent-operation",
            SmErrorKind::RateLimited => "sm-rate-limited",
            SmErrorKind::Rejected => "sm-rejected",
            SmErrorKind::ServerError => "sm-server-error",
            SmErrorKind::Timeout => "sm-timeout",
            SmErrorKind::Connect => "sm-connect",
            SmErrorKind::BadResponse => "sm-bad-response",
            SmErrorKind::OperationFailed => "sm-operation-failed",
        }
    }

    pub(super) fn retryable(self) -> bool {
        matches!(
            self,
            SmErrorKind::Concurrent
                | SmErrorKind::RateLimited
                | SmErrorKind::ServerError
                | SmErrorKind::Timeout
                | SmErrorKind::Connect
        )
    }
}

/// A failed Service Manager call: kind, the URL (never a secret), and a plain message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", kind.label(), url)]
pub struct SmError {
    pub kind: SmErrorKind,
    pub url: String,
    pub message: String,
}

pub(super) fn err(kind: SmErrorKind, url: &str, message: impl Into<String>) -> SmError {
    SmError {
        kind,
        url: url.to_string(),
        message: message.into(),
    }
}
