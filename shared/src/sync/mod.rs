//! The three sync steps (containers → images → KnowledgeBase) and what they share: the
//! Lambda payloads, the run-record lifecycle, the soft deadline, and the watermark commit at
//! the end of the chain.
//!
//! Each step is generic over [`QualysApi`], [`Store`] and [`Clock`]. A step works page by
//! page until it is done, its page budget is spent or its soft deadline is near; then it saves
//! its cursor and returns `more: true`, and the next invocation resumes from the cursor.
//! Everything that must survive between invocations lives in the store, never in the payload.

mod chain;
mod containers;
mod error;
mod images;
mod kb;
mod lambda;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{Integration, IntegrationConfig};
use crate::qualys::QualysApi;
use crate::run::{Counts, RunRecord, RunState, Trigger};
use crate::store::{StepCursor, Store};

pub use chain::{LOCAL_INVOCATION_TIME, run_chain};
pub use error::SyncError;
pub use lambda::{deadline_from_context, handle};

/// What the state machine (or `cargo lambda invoke`) sends to each function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    /// The chain run's id: the Step Functions execution name.
    pub run_id: String,
    /// What started the run.
    pub trigger: Trigger,
    /// Stop after this many pages or batches and return `more: true`, as if the soft
    /// deadline had come; for tests and for spreading a large backfill over invocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_budget: Option<u32>,
}

/// What each function returns: small, never a list of items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutput {
    /// The chain run's id.
    pub run_id: String,
    /// The step that ran.
    pub integration: Integration,
    /// `running` while `more` is true, then `succeeded` or `skipped`.
    pub state: RunState,
    /// True when the step stopped early and must be invoked again with the same input.
    pub more: bool,
    /// The integration to run next, `None` at the end of the chain.
    pub next: Option<Integration>,
    /// The run's counts so far.
    pub counts: Counts,
}

/// Tunables of the sync steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// Detail calls (vulnerabilities, images) in flight at once.
    pub detail_concurrency: usize,
    /// The window's upper bound is the run's start minus this, so records Qualys is still
    /// writing are left for the next run.
    pub window_margin: Duration,
    /// Time kept free before the Lambda deadline to save the cursor and answer.
    pub deadline_margin: Duration,
    /// QIDs per KnowledgeBase request.
    pub kb_batch_size: usize,
    /// Images handled per page of the image step.
    pub image_page_size: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            detail_concurrency: 8,
            window_margin: Duration::from_secs(30),
            deadline_margin: Duration::from_secs(30),
            kb_batch_size: 250,
            image_page_size: 50,
        }
    }
}

impl SyncSettings {
    /// Reads `QCVR_DETAIL_CONCURRENCY` and `QCVR_KB_BATCH_SIZE`, defaulting the rest.
    pub fn from_env() -> Result<Self, SyncError> {
        let mut settings = SyncSettings::default();
        if let Some(n) = env_number("QCVR_DETAIL_CONCURRENCY")? {
            settings.detail_concurrency = n.max(1);
        }
        if let Some(n) = env_number("QCVR_KB_BATCH_SIZE")? {
            settings.kb_batch_size = n.clamp(1, 1000);
        }
        Ok(settings)
    }
}

fn env_number(name: &str) -> Result<Option<usize>, SyncError> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(value) => value.trim().parse().map(Some).map_err(|_| {
            SyncError::Input(format!(
                "{name}={value:?} is not a whole number; fix the function's environment"
            ))
        }),
    }
}

/// What a step needs: Qualys, the store, the clock and the settings.
pub struct Deps<'a, Q, S, C> {
    /// The Qualys client.
    pub qualys: &'a Q,
    /// The store.
    pub store: &'a S,
    /// The clock.
    pub clock: &'a C,
    /// The tunables.
    pub settings: &'a SyncSettings,
}

impl<Q, S, C> Clone for Deps<'_, Q, S, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q, S, C> Copy for Deps<'_, Q, S, C> {}

/// When a step must stop: its soft deadline and its page budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    soft_deadline: Instant,
    pages_left: Option<u32>,
    longest_page: Duration,
}

impl Budget {
    /// A budget ending `margin` before `deadline`, with an optional page budget.
    pub fn new(deadline: Instant, margin: Duration, page_budget: Option<u32>) -> Self {
        let now = Instant::now();
        let soft_deadline = deadline.checked_sub(margin).unwrap_or(now).max(now);
        Budget {
            soft_deadline,
            pages_left: page_budget,
            longest_page: Duration::ZERO,
        }
    }

    /// The instant Qualys calls must not wait past.
    pub fn deadline(&self) -> Instant {
        self.soft_deadline
    }

    /// Whether another page fits: pages left, and time for one more page as long as the
    /// longest one so far.
    fn allows_another_page(&self) -> bool {
        if self.pages_left == Some(0) {
            return false;
        }
        Instant::now() + self.longest_page < self.soft_deadline
    }

    /// Records that a page started at `started` has finished.
    fn page_done(&mut self, started: Instant) {
        self.longest_page = self.longest_page.max(started.elapsed());
        if let Some(pages) = self.pages_left.as_mut() {
            *pages = pages.saturating_sub(1);
        }
    }
}

/// How a step's work ended in this invocation.
enum Progress {
    /// Everything was synced.
    Done,
    /// The budget ran out; the cursor is saved.
    More,
}

/// Runs one invocation of `integration`'s step for `input`.
pub async fn run_step<Q, S, C>(
    integration: Integration,
    deps: Deps<'_, Q, S, C>,
    input: &StepInput,
    deadline: Instant,
) -> Result<StepOutput, SyncError>
where
    Q: QualysApi,
    S: Store,
    C: Clock,
{
    validate_run_id(&input.run_id)?;
    let now = deps.clock.now();
    let mut run = match deps.store.load_run(integration, &input.run_id).await? {
        Some(run) => run,
        None => RunRecord::start(&input.run_id, integration, input.trigger, now),
    };
    let config = match load_or_seed_config(deps.store, integration, now).await {
        Ok(config) => config,
        Err(error) => return Err(record_failure(deps, run, error).await),
    };
    if matches!(run.state, RunState::Succeeded | RunState::Skipped) {
        // A retry after the watermark write failed lands here: finishing again is safe.
        finish_chain_if_last(deps, &config, &run).await?;
        info!(run_id = %run.run_id, %integration, "step already finished; nothing to do");
        return Ok(output(&run, false, config.next_integration));
    }
    run.invocations += 1;
    run.state = RunState::Running;
    info!(run_id = %run.run_id, %integration, invocation = run.invocations, "step started");

    if !config.active {
        run.state = RunState::Skipped;
        run.ended_at = Some(now);
        run.error = Some(format!(
            "{integration} is inactive: set active = true in its config to sync it"
        ));
        deps.store.save_run(&run).await?;
        finish_chain_if_last(deps, &config, &run).await?;
        info!(run_id = %run.run_id, %integration, "inactive integration skipped");
        return Ok(output(&run, false, config.next_integration));
    }

    let mut budget = Budget::new(deadline, deps.settings.deadline_margin, input.page_budget);
    let progress = match integration {
        Integration::Containers => containers::sync(deps, &config, &mut run, &mut budget).await,
        Integration::Images => images::sync(deps, &mut run, &mut budget).await,
        Integration::Kb => kb::sync(deps, &mut run, &mut budget).await,
    };
    let progress = match progress {
        Ok(progress) => progress,
        Err(error) => return Err(record_failure(deps, run, error).await),
    };

    match progress {
        Progress::More => {
            deps.store.save_run(&run).await?;
            info!(run_id = %run.run_id, %integration, counts = ?run.counts, "step paused; invoke again to resume");
            Ok(output(&run, true, config.next_integration))
        }
        Progress::Done => {
            run.state = RunState::Succeeded;
            // An error of an attempt the state machine retried no longer describes the run.
            run.error_type = None;
            run.error = failed_note(integration, run.counts.failed);
            run.ended_at = Some(deps.clock.now());
            deps.store.save_run(&run).await?;
            deps.store.clear_cursor(integration, &run.run_id).await?;
            finish_chain_if_last(deps, &config, &run).await?;
            info!(run_id = %run.run_id, %integration, counts = ?run.counts, "step succeeded");
            Ok(output(&run, false, config.next_integration))
        }
    }
}

/// Why a succeeded run counts failed items, for the person reading the run record.
fn failed_note(integration: Integration, failed: u64) -> Option<String> {
    let why = match integration {
        Integration::Containers => {
            "containers were listed without a sha or were gone before their vulnerabilities were read"
        }
        Integration::Images => {
            "images have no scan data in Qualys yet; they come back when a container using them changes"
        }
        Integration::Kb => "QIDs are not in the Qualys KnowledgeBase",
    };
    (failed > 0).then(|| format!("{failed} {why}"))
}

fn output(run: &RunRecord, more: bool, next: Option<Integration>) -> StepOutput {
    StepOutput {
        run_id: run.run_id.clone(),
        integration: run.integration,
        state: run.state,
        more,
        next: if more { None } else { next },
        counts: run.counts,
    }
}

/// Step Functions execution names: 1 to 80 characters, no whitespace or wildcards.
fn validate_run_id(run_id: &str) -> Result<(), SyncError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 80
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(SyncError::Input(format!(
            "run_id {run_id:?} is not usable: give 1 to 80 characters of letters, digits, - _ . :"
        )))
    }
}

/// Loads an integration's config, saving the defaults on first use.
pub async fn load_or_seed_config<S: Store>(
    store: &S,
    integration: Integration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IntegrationConfig, SyncError> {
    if let Some(config) = store.load_config(integration, now).await? {
        return Ok(config);
    }
    let config = IntegrationConfig::default_for(integration);
    store.save_config(&config, now).await?;
    info!(%integration, "config seeded with defaults");
    Ok(config)
}

/// Records a failed invocation. Retryable errors leave the run `running` (the state machine
/// retries and the cursor resumes); the rest mark it failed. Either way the watermark stays.
async fn record_failure<Q, S: Store, C: Clock>(
    deps: Deps<'_, Q, S, C>,
    mut run: RunRecord,
    error: SyncError,
) -> SyncError {
    let error_type = error.error_type();
    run.error_type = Some(error_type.to_owned());
    run.error = Some(error.to_string());
    if !error.is_retryable() {
        run.state = RunState::Failed;
        run.ended_at = Some(deps.clock.now());
    }
    warn!(run_id = %run.run_id, integration = %run.integration, error_type, error = %error, "step failed");
    if let Err(store_error) = deps.store.save_run(&run).await {
        warn!(run_id = %run.run_id, error = %store_error, "could not record the failure in the run record");
    }
    error
}

/// At the end of the chain, moves the containers watermark to the upper bound of the window
/// this run covered. It runs only after every step of the chain succeeded (or was skipped),
/// so nothing the run found can be lost.
async fn finish_chain_if_last<Q, S: Store, C: Clock>(
    deps: Deps<'_, Q, S, C>,
    config: &IntegrationConfig,
    run: &RunRecord,
) -> Result<(), SyncError> {
    if config.next_integration.is_some() {
        return Ok(());
    }
    let containers_run = if run.integration == Integration::Containers {
        Some(run.clone())
    } else {
        deps.store
            .load_run(Integration::Containers, &run.run_id)
            .await?
    };
    let Some(window) = containers_run
        .filter(|r| r.state == RunState::Succeeded)
        .and_then(|r| r.window)
    else {
        return Ok(());
    };
    let now = deps.clock.now();
    let mut containers = load_or_seed_config(deps.store, Integration::Containers, now).await?;
    if containers
        .import_since
        .is_some_and(|since| since >= window.until)
    {
        return Ok(());
    }
    containers.import_since = Some(window.until);
    deps.store.save_config(&containers, now).await?;
    info!(run_id = %run.run_id, watermark = %window.until, "chain complete; import_since moved");
    Ok(())
}

/// Reads this run's cursor of `integration`, if an earlier invocation saved one.
async fn load_own_cursor<S: Store, T: serde::de::DeserializeOwned>(
    store: &S,
    integration: Integration,
    run_id: &str,
) -> Result<Option<T>, SyncError> {
    let Some(cursor) = store.load_cursor(integration, run_id).await? else {
        return Ok(None);
    };
    serde_json::from_value(cursor.state).map(Some).map_err(|e| {
        SyncError::Input(format!(
            "the saved {integration} cursor cannot be read ({e}); delete it from the work table to restart the step"
        ))
    })
}

async fn save_own_cursor<S: Store, C: Clock, T: Serialize>(
    store: &S,
    clock: &C,
    integration: Integration,
    run_id: &str,
    state: &T,
) -> Result<(), SyncError> {
    let state = serde_json::to_value(state)
        .map_err(|e| SyncError::Input(format!("the {integration} cursor cannot be saved: {e}")))?;
    let cursor = StepCursor {
        run_id: run_id.to_owned(),
        state,
        saved_at: clock.now(),
    };
    store.save_cursor(integration, &cursor).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
