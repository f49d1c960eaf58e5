//! Step 3, KnowledgeBase sync: the KB entries of the QIDs the containers step recorded as
//! pending (this run's, plus any an earlier failed run left), in batches.

use std::collections::BTreeSet;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Budget, Deps, Progress, SyncError};
use crate::clock::Clock;
use crate::model::Qid;
use crate::qualys::QualysApi;
use crate::run::RunRecord;
use crate::store::{Store, WorkKind};

/// Syncs pending QIDs batch by batch until none are left or the budget runs out. A QID leaves
/// the pending set only once its entry is stored (or Qualys does not know it).
pub(super) async fn sync<Q: QualysApi, S: Store, C: Clock>(
    deps: Deps<'_, Q, S, C>,
    run: &mut RunRecord,
    budget: &mut Budget,
) -> Result<Progress, SyncError> {
    loop {
        if !budget.allows_another_page() {
            return Ok(Progress::More);
        }
        let started = Instant::now();
        let keys = deps
            .store
            .pending(WorkKind::Qid, deps.settings.kb_batch_size)
            .await?;
        if keys.is_empty() {
            return Ok(Progress::Done);
        }

        // The store hands QIDs back in decimal and refuses anything else when work is added.
        let qids: BTreeSet<Qid> = keys.iter().filter_map(|key| key.parse().ok()).collect();
        let qids: Vec<Qid> = qids.into_iter().collect();
        let entries = deps.qualys.knowledge_base(&qids, budget.deadline()).await?;

        let known: BTreeSet<Qid> = entries.iter().map(|e| e.qid).collect();
        let unknown = qids.iter().filter(|q| !known.contains(q)).count() as u64;
        if unknown > 0 {
            warn!(
                unknown,
                "Qualys returned no KnowledgeBase entry for some QIDs"
            );
        }
        let counts = deps.store.upsert_kb_entries(&entries).await?;
        run.counts.add(counts);
        run.counts.fetched += unknown;
        run.counts.failed += unknown;
        deps.store.remove_pending(WorkKind::Qid, &keys).await?;
        deps.store.save_run(run).await?;
        budget.page_done(started);
        info!(run_id = %run.run_id, qids = qids.len(), total_fetched = run.counts.fetched, "KnowledgeBase batch synced");
    }
}
