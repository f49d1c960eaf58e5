//! The three sync steps and the Lambda-facing handler types.
