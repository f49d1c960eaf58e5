//! An in-memory [`super::Store`] with the same semantics as the DynamoDB adapter.
