//! Errors of the Qualys client. Each says what the operator should do, carries no
//! credential or token, and maps to a stable `error_type` the state machine matches on.

use std::time::Duration;

/// A Qualys call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum QualysError {
    /// Qualys asked us to wait longer than the caller's deadline allows.
    #[error("Qualys rate limit: retry after {retry_after:?}; the state machine waits and retries")]
    RateLimited {
        /// How long Qualys asked to wait.
        retry_after: Duration,
    },
    /// Credentials rejected, token refused twice, permission missing or account expired.
    #[error(
        "Qualys refused the credentials ({reason}); check the secret's username, password and API permissions"
    )]
    AuthFailed {
        /// What Qualys said, without any secret.
        reason: String,
    },
    /// 5xx, connection errors or cut-off bodies that outlasted the retry budget.
    #[error(
        "Qualys is unavailable ({detail}); the state machine retries, check Qualys status if it persists"
    )]
    Transient {
        /// What failed.
        detail: String,
    },
    /// A request Qualys rejected (400, 404, ...): retrying will not help.
    #[error("Qualys rejected {endpoint}: HTTP {status} {code}: {message}")]
    Rejected {
        /// Which endpoint.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Qualys error code, if any.
        code: String,
        /// Qualys message.
        message: String,
    },
    /// A body that does not have the documented shape.
    #[error("Qualys answered {endpoint} with a body qcvr cannot read: {detail}")]
    Malformed {
        /// Which endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
    /// A request qcvr refused to send (bad page size, bad filter, bad URL).
    #[error("invalid Qualys request: {0}")]
    InvalidRequest(String),
}

impl QualysError {
    /// The stable name the state machine's `Retry` and `Catch` match on.
    pub fn error_type(&self) -> &'static str {
        match self {
            QualysError::RateLimited { .. } => "RateLimited",
            QualysError::AuthFailed { .. } => "AuthFailed",
            QualysError::Transient { .. } => "Transient",
            QualysError::Rejected { .. } | QualysError::Malformed { .. } => "QualysError",
            QualysError::InvalidRequest(_) => "InvalidConfig",
        }
    }
}

/// Why a response body could not be used; decides whether the call is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// The body ends early (cut-off transfer): retried like a 5xx.
    Truncated(String),
    /// The body is complete but not in the documented shape: not retried.
    Invalid(String),
}

impl BodyError {
    /// Classifies a serde_json error: end of input means a cut-off body.
    pub(crate) fn from_json(e: &serde_json::Error) -> BodyError {
        // serde_json's messages carry a position and the expected type, never the input.
        if e.is_eof() {
            BodyError::Truncated(format!("JSON body ends early ({e})"))
        } else {
            BodyError::Invalid(format!(
                "JSON body does not match the documented shape ({e})"
            ))
        }
    }
}
