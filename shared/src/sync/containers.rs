//! Step 1, Container Vulnerability sync: every container matching the configured filter and
//! updated within the run's window, with its findings; records the images and QIDs it found
//! for the next steps.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Budget, Deps, Progress, SyncError, load_own_cursor, save_own_cursor};
use crate::clock::Clock;
use crate::config::{Integration, IntegrationConfig};
use crate::model::{Container, findings_of};
use crate::qualys::{ContainerQuery, ListCursor, QualysApi, QualysError};
use crate::run::{Counts, RunRecord, Window};
use crate::store::{ContainerOutcome, Store, WorkKind};

/// Where the container listing stands between invocations.
#[derive(Debug, Serialize, Deserialize)]
struct ContainersCursor {
    list: ListCursor,
}

/// Syncs pages of containers until the listing ends or the budget runs out.
pub(super) async fn sync<Q: QualysApi, S: Store, C: Clock>(
    deps: Deps<'_, Q, S, C>,
    config: &IntegrationConfig,
    run: &mut RunRecord,
    budget: &mut Budget,
) -> Result<Progress, SyncError> {
    let window = match run.window {
        Some(window) => window,
        None => *run.window.insert(window_for(deps, config, run.started_at)),
    };
    let query = ContainerQuery {
        filter: config.qql()?,
        window,
        page_size: config.page_size,
        mode: config.listing_mode,
    };
    let mut cursor =
        load_own_cursor::<_, ContainersCursor>(deps.store, Integration::Containers, &run.run_id)
            .await?
            .map(|c| c.list)
            .unwrap_or_default();
    let mut findings = run.findings.unwrap_or_default();

    loop {
        if !budget.allows_another_page() {
            run.findings = Some(findings);
            return Ok(Progress::More);
        }
        let started = Instant::now();
        let page = deps
            .qualys
            .list_containers(&query, &cursor, budget.deadline())
            .await?;
        if page.skipped_without_sha > 0 {
            warn!(
                skipped = page.skipped_without_sha,
                "Qualys listed containers without a sha; they cannot be synced"
            );
            run.counts.failed += u64::from(page.skipped_without_sha);
        }

        let outcome = sync_page(deps, &page.containers, budget.deadline(), &run.run_id).await?;
        run.counts.add(outcome.container);
        findings.add(outcome.findings);
        run.findings = Some(findings);
        budget.page_done(started);
        info!(
            run_id = %run.run_id,
            containers = page.containers.len(),
            total_fetched = run.counts.fetched,
            "container page synced"
        );

        match page.next {
            None => return Ok(Progress::Done),
            Some(next) => {
                cursor = next;
                save_own_cursor(
                    deps.store,
                    deps.clock,
                    Integration::Containers,
                    &run.run_id,
                    &ContainersCursor {
                        list: cursor.clone(),
                    },
                )
                .await?;
                deps.store.save_run(run).await?;
            }
        }
    }
}

/// `[import since (or now − 7 days), run start − margin]`; never inverted.
fn window_for<Q, S, C>(
    deps: Deps<'_, Q, S, C>,
    config: &IntegrationConfig,
    run_start: DateTime<Utc>,
) -> Window {
    let since = config.window_start(run_start);
    let margin = chrono::Duration::from_std(deps.settings.window_margin).unwrap_or_default();
    let until = (run_start - margin).max(since);
    Window { since, until }
}

/// Fetches each container's vulnerabilities (bounded concurrency), writes the container and
/// its findings, then records the page's images and QIDs as pending work. The cursor only
/// moves after all of this, so a page cut short is simply synced again.
async fn sync_page<Q: QualysApi, S: Store, C: Clock>(
    deps: Deps<'_, Q, S, C>,
    containers: &[Container],
    deadline: Instant,
    run_id: &str,
) -> Result<ContainerOutcome, SyncError> {
    // Owned items keep the stream's futures free of higher-ranked borrows, so the handler's
    // future stays `Send` for the Lambda runtime and the local endpoint.
    let results: Vec<(ContainerOutcome, BTreeSet<u32>)> = stream::iter(containers.to_vec())
        .map(|container| sync_one(deps, container, deadline))
        .buffer_unordered(deps.settings.detail_concurrency)
        .try_collect()
        .await?;

    let mut outcome = ContainerOutcome::default();
    let mut qids = BTreeSet::new();
    for (one, found) in results {
        outcome.container.add(one.container);
        outcome.findings.add(one.findings);
        qids.extend(found);
    }
    let images: BTreeSet<String> = containers
        .iter()
        .filter_map(|c| c.image_sha.clone())
        .collect();
    let images: Vec<String> = images.into_iter().collect();
    let qids: Vec<String> = qids.into_iter().map(|q| q.to_string()).collect();
    deps.store
        .add_pending(WorkKind::Image, &images, run_id)
        .await?;
    deps.store.add_pending(WorkKind::Qid, &qids, run_id).await?;
    Ok(outcome)
}

async fn sync_one<Q: QualysApi, S: Store, C: Clock>(
    deps: Deps<'_, Q, S, C>,
    container: Container,
    deadline: Instant,
) -> Result<(ContainerOutcome, BTreeSet<u32>), SyncError> {
    let vulns = match deps
        .qualys
        .container_vulnerabilities(&container.sha, deadline)
        .await
    {
        Ok(vulns) => vulns,
        Err(QualysError::Rejected { status: 404, .. }) => {
            warn!(container_sha = %container.sha, "Qualys no longer knows this container; skipped");
            let failed = Counts {
                fetched: 1,
                failed: 1,
                ..Counts::default()
            };
            return Ok((
                ContainerOutcome {
                    container: failed,
                    findings: Counts::default(),
                },
                BTreeSet::new(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let findings = findings_of(&container.sha, &vulns);
    let qids = findings.iter().map(|f| f.qid).collect();
    let outcome = deps
        .store
        .sync_container(&container, &findings, deps.clock.now())
        .await?;
    Ok((outcome, qids))
}
