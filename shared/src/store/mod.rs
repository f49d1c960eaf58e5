//! The store: configuration, run records, the work handed between steps, and the synced
//! data, behind the [`Store`] trait. [`dynamo::DynamoStore`] is the production adapter;
//! [`memory::MemoryStore`] is the in-process twin for unit tests.
//!
//! Writes are idempotent upserts that tell new, updated and unchanged apart. The store knows
//! nothing of Qualys.

pub mod dynamo;
pub mod error;
pub mod memory;
mod plan;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Integration, IntegrationConfig};
use crate::model::{Container, Finding, Image, KbEntry};
use crate::run::{Counts, RunRecord};

pub use error::StoreError;

/// Work one step hands to a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// An image sha found on a synced container; consumed by the image step.
    Image,
    /// A QID found on a synced container; consumed by the KB step.
    Qid,
}

/// What syncing one container changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerOutcome {
    /// The container record: `fetched` is 1 and exactly one of new/updated/unchanged is 1.
    pub container: Counts,
    /// Its findings: reported ones counted as new/updated/unchanged; findings that vanished
    /// (now marked fixed) and fixed findings that came back count as updated.
    pub findings: Counts,
}

/// A saved step cursor: which run it belongs to and the step's own state as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCursor {
    /// The run that saved it.
    pub run_id: String,
    /// The step's state; its shape belongs to the step.
    pub state: serde_json::Value,
    /// When it was saved.
    pub saved_at: DateTime<Utc>,
}

/// Everything qcvr keeps. Every method is safe to repeat.
pub trait Store: Send + Sync {
    /// The integration's config, `None` before the first save. Validated on read against
    /// `now` (the caller's clock).
    fn load_config(
        &self,
        integration: Integration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<IntegrationConfig>, StoreError>> + Send;

    /// Saves a config after validating it against `now`.
    fn save_config(
        &self,
        config: &IntegrationConfig,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates or replaces a run record.
    fn save_run(&self, run: &RunRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One run record.
    fn load_run(
        &self,
        integration: Integration,
        run_id: &str,
    ) -> impl Future<Output = Result<Option<RunRecord>, StoreError>> + Send;

    /// The newest `limit` run records of an integration, newest first.
    fn list_runs(
        &self,
        integration: Integration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RunRecord>, StoreError>> + Send;

    /// The cursor `run_id` saved for `integration`, if that run stopped part-way. Cursors are
    /// kept per run, so two runs at once never move each other's.
    fn load_cursor(
        &self,
        integration: Integration,
        run_id: &str,
    ) -> impl Future<Output = Result<Option<StepCursor>, StoreError>> + Send;

    /// Saves the cursor of `cursor.run_id` for `integration`.
    fn save_cursor(
        &self,
        integration: Integration,
        cursor: &StepCursor,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the cursor `run_id` saved for `integration`.
    fn clear_cursor(
        &self,
        integration: Integration,
        run_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records work for a later step (already-pending keys stay pending).
    fn add_pending(
        &self,
        kind: WorkKind,
        keys: &[String],
        run_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` pending keys, in key order.
    fn pending(
        &self,
        kind: WorkKind,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Marks keys done.
    fn remove_pending(
        &self,
        kind: WorkKind,
        keys: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Upserts a container and its current findings; stored open findings it no longer has
    /// are marked fixed at `now`, fixed ones that are reported again reopen.
    fn sync_container(
        &self,
        container: &Container,
        findings: &[Finding],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ContainerOutcome, StoreError>> + Send;

    /// Upserts images; `fetched` in the result is `images.len()`.
    fn upsert_images(
        &self,
        images: &[Image],
    ) -> impl Future<Output = Result<Counts, StoreError>> + Send;

    /// Upserts KB entries; `fetched` in the result is `entries.len()`.
    fn upsert_kb_entries(
        &self,
        entries: &[KbEntry],
    ) -> impl Future<Output = Result<Counts, StoreError>> + Send;

    /// Every stored container (reads the whole table; for tests and the operator CLI).
    fn all_containers(&self) -> impl Future<Output = Result<Vec<Container>, StoreError>> + Send;

    /// Every stored finding, open and fixed.
    fn all_findings(&self) -> impl Future<Output = Result<Vec<Finding>, StoreError>> + Send;

    /// Every stored image.
    fn all_images(&self) -> impl Future<Output = Result<Vec<Image>, StoreError>> + Send;

    /// Every stored KB entry.
    fn all_kb_entries(&self) -> impl Future<Output = Result<Vec<KbEntry>, StoreError>> + Send;
}
