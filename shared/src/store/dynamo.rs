//! The DynamoDB adapter of [`super::Store`].
