//! Errors of the store, each with the stable `error_type` the state machine matches on.

use crate::config::ConfigError;

/// A store operation that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A stored or submitted config is not valid.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// A table is missing: the stack is not deployed or the table prefix is wrong.
    #[error(
        "DynamoDB table {table} does not exist: deploy the stack (locally: `qcvr setup`) or fix \
         QCVR_TABLE_PREFIX"
    )]
    MissingTable {
        /// The table name.
        table: String,
    },
    /// DynamoDB throttled or failed after retries; retrying later is safe.
    #[error("DynamoDB {operation} on {table} failed: {source}; the state machine retries")]
    Unavailable {
        /// The API call.
        operation: &'static str,
        /// The table name.
        table: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An item that does not have the shape qcvr writes.
    #[error("item {key} in {table} cannot be read: {detail}; fix or delete the item")]
    Corrupt {
        /// The table name.
        table: String,
        /// The item's key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

impl StoreError {
    /// The stable name the state machine's `Retry` and `Catch` match on.
    pub fn error_type(&self) -> &'static str {
        match self {
            StoreError::InvalidConfig(_) => "InvalidConfig",
            StoreError::MissingTable { .. } => "InvalidConfig",
            StoreError::Unavailable { .. } => "Transient",
            StoreError::Corrupt { .. } => "StoreError",
        }
    }
}
