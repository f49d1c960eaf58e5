//! Step 2, Image sync: details of the images the containers step recorded as pending (this
//! run's, plus any an earlier failed run left), page by page.

use futures::{StreamExt, TryStreamExt, stream};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Budget, Deps, Progress, SyncError};
use crate::clock::Clock;
use crate::qualys::QualysApi;
use crate::run::RunRecord;
use crate::store::{Store, WorkKind};

/// Syncs pending images until none are left or the budget runs out. The pending set is the
/// cursor: an image leaves it only once its details are stored (or Qualys has none).
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
        let shas = deps
            .store
            .pending(WorkKind::Image, deps.settings.image_page_size)
            .await?;
        if shas.is_empty() {
            return Ok(Progress::Done);
        }

        let deadline = budget.deadline();
        let fetched: Vec<_> = stream::iter(shas.clone())
            .map(|sha| async move {
                deps.qualys
                    .image(&sha, deadline)
                    .await
                    .map(|image| (sha, image))
            })
            .buffer_unordered(deps.settings.detail_concurrency)
            .try_collect()
            .await?;
        let mut images = Vec::with_capacity(fetched.len());
        for (sha, image) in fetched {
            match image {
                Some(image) => images.push(image),
                None => {
                    warn!(image_sha = %sha, "Qualys has no details for this image yet; it is synced again when a container using it changes");
                    run.counts.fetched += 1;
                    run.counts.failed += 1;
                }
            }
        }

        let counts = deps.store.upsert_images(&images).await?;
        run.counts.add(counts);
        deps.store.remove_pending(WorkKind::Image, &shas).await?;
        deps.store.save_run(run).await?;
        budget.page_done(started);
        info!(run_id = %run.run_id, images = shas.len(), total_fetched = run.counts.fetched, "image page synced");
    }
}
