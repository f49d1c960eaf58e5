//! QQL filters: validating the configured filter and combining it with the incremental
//! window on `updated`.

use std::fmt;

/// A validated QQL filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qql(String);

/// A filter that cannot be sent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct QqlError(pub String);

impl Qql {
    /// Validates `filter`: balanced parentheses, brackets and quotes, no empty operands.
    pub fn parse(filter: &str) -> Result<Qql, QqlError> {
        // Placeholder until the client lands: accepts balanced parentheses only.
        let mut depth = 0i32;
        for c in filter.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                return Err(QqlError("unbalanced ')'".into()));
            }
        }
        if depth != 0 {
            return Err(QqlError("unbalanced '('".into()));
        }
        Ok(Qql(filter.trim().to_owned()))
    }

    /// The filter as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Qql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
