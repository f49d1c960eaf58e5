//! An in-memory [`super::Store`] with the same semantics as the DynamoDB adapter: the same
//! validation, ordering, key rules and change detection (both use `super::plan`). Unit tests
//! of the sync steps run against it.
//!
//! Unlike DynamoDB it keeps long text whole: nothing here has an item size limit.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::{Integration, IntegrationConfig};
use crate::model::{Container, Finding, Image, KbEntry, Qid};
use crate::run::{Counts, RunRecord};

use super::plan::{self, Plan, Planner, StoredFinding};
use super::{ContainerOutcome, StepCursor, Store, StoreError, WorkKind};

/// Everything a [`MemoryStore`] holds, keyed as the DynamoDB tables are.
#[derive(Debug, Default)]
struct Tables {
    configs: BTreeMap<Integration, IntegrationConfig>,
    runs: BTreeMap<(Integration, String), RunRecord>,
    cursors: BTreeMap<(Integration, String), StepCursor>,
    /// (kind, stored key) → the run that added it.
    work: BTreeMap<(&'static str, String), String>,
    containers: BTreeMap<String, Container>,
    /// (container sha, finding key) → finding.
    findings: BTreeMap<(String, String), Finding>,
    images: BTreeMap<String, Image>,
    kb: BTreeMap<Qid, KbEntry>,
}

/// A [`Store`] in process memory; cheap to create, empty at start.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Stores a config without validating it, as a hand-edited table item would be.
    #[cfg(test)]
    pub(crate) async fn force_config(&self, config: IntegrationConfig) {
        self.tables
            .lock()
            .await
            .configs
            .insert(config.integration, config);
    }
}

/// The stored content hashes of the given keys.
fn stored_hashes<'a, K: Ord + 'a, T: Serialize + 'a>(
    table: &str,
    stored: &BTreeMap<K, T>,
    keys: impl Iterator<Item = (K, String)>,
) -> Result<BTreeMap<String, String>, StoreError> {
    let mut hashes = BTreeMap::new();
    for (key, name) in keys {
        if let Some(record) = stored.get(&key) {
            let hash = plan::content_hash(record, table, &name)?;
            hashes.insert(name, hash);
        }
    }
    Ok(hashes)
}

/// Plans an upsert of `records` keyed by `key` (stored key, key as text).
fn plan_upsert<K: Ord + Clone, T: Serialize + Clone>(
    table: &str,
    stored: &BTreeMap<K, T>,
    records: &[T],
    key: impl Fn(&T) -> (K, String),
) -> Result<Plan<T>, StoreError> {
    let hashes = stored_hashes(table, stored, records.iter().map(&key))?;
    let mut planner = Planner::new(hashes);
    for record in records {
        let (_, name) = key(record);
        let hash = plan::content_hash(record, table, &name)?;
        planner.offer(name, hash, record.clone());
    }
    Ok(planner.finish())
}

impl Store for MemoryStore {
    async fn load_config(
        &self,
        integration: Integration,
        now: DateTime<Utc>,
    ) -> Result<Option<IntegrationConfig>, StoreError> {
        let config = self.tables.lock().await.configs.get(&integration).cloned();
        if let Some(config) = &config {
            config.validate(now)?;
        }
        Ok(config)
    }

    async fn save_config(
        &self,
        config: &IntegrationConfig,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        config.validate(now)?;
        let mut tables = self.tables.lock().await;
        tables.configs.insert(config.integration, config.clone());
        Ok(())
    }

    async fn save_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().await;
        tables
            .runs
            .insert((run.integration, run.run_id.clone()), run.clone());
        Ok(())
    }

    async fn load_run(
        &self,
        integration: Integration,
        run_id: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let tables = self.tables.lock().await;
        Ok(tables.runs.get(&(integration, run_id.to_owned())).cloned())
    }

    async fn list_runs(
        &self,
        integration: Integration,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let tables = self.tables.lock().await;
        let mut runs: Vec<RunRecord> = tables
            .runs
            .values()
            .filter(|r| r.integration == integration)
            .cloned()
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse(run.started_at));
        runs.truncate(limit);
        Ok(runs)
    }

    async fn load_cursor(
        &self,
        integration: Integration,
        run_id: &str,
    ) -> Result<Option<StepCursor>, StoreError> {
        let key = (integration, run_id.to_owned());
        Ok(self.tables.lock().await.cursors.get(&key).cloned())
    }

    async fn save_cursor(
        &self,
        integration: Integration,
        cursor: &StepCursor,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().await;
        tables
            .cursors
            .insert((integration, cursor.run_id.clone()), cursor.clone());
        Ok(())
    }

    async fn clear_cursor(&self, integration: Integration, run_id: &str) -> Result<(), StoreError> {
        let key = (integration, run_id.to_owned());
        self.tables.lock().await.cursors.remove(&key);
        Ok(())
    }

    async fn add_pending(
        &self,
        kind: WorkKind,
        keys: &[String],
        run_id: &str,
    ) -> Result<(), StoreError> {
        let stored: Vec<String> = keys
            .iter()
            .map(|k| plan::work_key(kind, k, "work"))
            .collect::<Result<_, _>>()?;
        let mut tables = self.tables.lock().await;
        for key in stored {
            tables
                .work
                .insert((plan::work_kind(kind), key), run_id.to_owned());
        }
        Ok(())
    }

    async fn pending(&self, kind: WorkKind, limit: usize) -> Result<Vec<String>, StoreError> {
        let tables = self.tables.lock().await;
        tables
            .work
            .keys()
            .filter(|(k, _)| *k == plan::work_kind(kind))
            .take(limit)
            .map(|(_, key)| plan::work_key_back(kind, key, "work"))
            .collect()
    }

    async fn remove_pending(&self, kind: WorkKind, keys: &[String]) -> Result<(), StoreError> {
        let stored: Vec<String> = keys
            .iter()
            .map(|k| plan::work_key(kind, k, "work"))
            .collect::<Result<_, _>>()?;
        let mut tables = self.tables.lock().await;
        for key in stored {
            tables.work.remove(&(plan::work_kind(kind), key));
        }
        Ok(())
    }

    async fn sync_container(
        &self,
        container: &Container,
        findings: &[Finding],
        now: DateTime<Utc>,
    ) -> Result<ContainerOutcome, StoreError> {
        let mut tables = self.tables.lock().await;

        let mut stored = BTreeMap::new();
        for ((sha, key), finding) in &tables.findings {
            if *sha == container.sha {
                let hash = plan::content_hash(finding, "findings", key)?;
                let finding = finding.clone();
                stored.insert(key.clone(), StoredFinding { finding, hash });
            }
        }
        let finding_plan = plan::plan_findings(&container.sha, &stored, findings, now, "findings")?;
        let container_plan = plan_upsert(
            "containers",
            &tables.containers,
            std::slice::from_ref(container),
            |c| (c.sha.clone(), c.sha.clone()),
        )?;

        for finding in finding_plan.writes {
            tables
                .findings
                .insert((finding.container_sha.clone(), finding.key()), finding);
        }
        for container in container_plan.writes {
            tables.containers.insert(container.sha.clone(), container);
        }
        Ok(ContainerOutcome {
            container: container_plan.counts,
            findings: finding_plan.counts,
        })
    }

    async fn upsert_images(&self, images: &[Image]) -> Result<Counts, StoreError> {
        let mut tables = self.tables.lock().await;
        let plan = plan_upsert("images", &tables.images, images, |i| {
            (i.sha.clone(), i.sha.clone())
        })?;
        for image in plan.writes {
            tables.images.insert(image.sha.clone(), image);
        }
        Ok(plan.counts)
    }

    async fn upsert_kb_entries(&self, entries: &[KbEntry]) -> Result<Counts, StoreError> {
        let mut tables = self.tables.lock().await;
        let plan = plan_upsert("kb", &tables.kb, entries, |e| (e.qid, e.qid.to_string()))?;
        for entry in plan.writes {
            tables.kb.insert(entry.qid, entry);
        }
        Ok(plan.counts)
    }

    async fn all_containers(&self) -> Result<Vec<Container>, StoreError> {
        Ok(self
            .tables
            .lock()
            .await
            .containers
            .values()
            .cloned()
            .collect())
    }

    async fn all_findings(&self) -> Result<Vec<Finding>, StoreError> {
        Ok(self
            .tables
            .lock()
            .await
            .findings
            .values()
            .cloned()
            .collect())
    }

    async fn all_images(&self) -> Result<Vec<Image>, StoreError> {
        Ok(self.tables.lock().await.images.values().cloned().collect())
    }

    async fn all_kb_entries(&self) -> Result<Vec<KbEntry>, StoreError> {
        Ok(self.tables.lock().await.kb.values().cloned().collect())
    }
}
