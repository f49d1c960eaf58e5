//! qcvr: keeps Qualys Container Security data (containers, their vulnerabilities, images and
//! KnowledgeBase entries) synced into DynamoDB.
//!
//! The Lambda binaries in `functions/` are thin; everything they do lives here, generic over
//! the [`qualys::QualysApi`], [`store::Store`] and [`clock::Clock`] traits.

pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod model;
pub mod qualys;
pub mod run;
pub mod schedule;
pub mod store;
pub mod sync;
