//! The error of a sync step, and the stable `error_type` names the state machine's `Retry`
//! and `Catch` match on.

use crate::config::ConfigError;
use crate::qualys::QualysError;
use crate::store::StoreError;

/// Why a step stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A Qualys call failed.
    #[error(transparent)]
    Qualys(#[from] QualysError),
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The integration's config is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The invocation's input or environment is not usable.
    #[error("{0}")]
    Input(String),
}

impl SyncError {
    /// `RateLimited`, `Transient`, `AuthFailed`, `InvalidConfig`, `QualysError` or
    /// `StoreError`.
    pub fn error_type(&self) -> &'static str {
        match self {
            SyncError::Qualys(e) => e.error_type(),
            SyncError::Store(e) => e.error_type(),
            SyncError::Config(_) | SyncError::Input(_) => "InvalidConfig",
        }
    }

    /// Whether the state machine retries it (the run stays `running` meanwhile).
    pub fn is_retryable(&self) -> bool {
        matches!(self.error_type(), "RateLimited" | "Transient")
    }
}

impl From<SyncError> for lambda_runtime::Diagnostic {
    fn from(error: SyncError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}
