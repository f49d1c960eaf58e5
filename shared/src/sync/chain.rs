//! Runs the whole chain in-process, as the state machine would: each step again while it
//! answers `more`, then the step it names as `next`. Used by the operator CLI and the tests;
//! production runs go through Step Functions.

use std::time::Duration;

use tokio::time::Instant;

use super::{Deps, StepInput, StepOutput, SyncError, run_step};
use crate::clock::Clock;
use crate::config::Integration;
use crate::qualys::QualysApi;
use crate::run::Trigger;
use crate::store::Store;

/// How long each in-process invocation may take, like a Lambda timeout.
pub const LOCAL_INVOCATION_TIME: Duration = Duration::from_secs(900);

/// Runs containers → images → KB for `run_id`; returns the last output of each step run.
/// The first error stops the chain, as the state machine's `Catch` would.
pub async fn run_chain<Q: QualysApi, S: Store, C: Clock>(
    deps: Deps<'_, Q, S, C>,
    run_id: &str,
    trigger: Trigger,
    page_budget: Option<u32>,
) -> Result<Vec<StepOutput>, SyncError> {
    let mut outputs = Vec::new();
    let mut step = Some(Integration::Containers);
    let mut input = StepInput {
        run_id: run_id.to_owned(),
        trigger,
        page_budget,
    };
    while let Some(integration) = step {
        let output = loop {
            let deadline = Instant::now() + LOCAL_INVOCATION_TIME;
            let output = run_step(integration, deps, &input, deadline).await?;
            if !output.more {
                break output;
            }
        };
        step = output.next;
        input.trigger = Trigger::Chained;
        outputs.push(output);
    }
    Ok(outputs)
}
