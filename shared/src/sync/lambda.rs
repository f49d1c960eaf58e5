//! The Lambda edge: turns an invocation into a step run and its error into a `Diagnostic`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use tokio::time::Instant;
use tracing::Instrument;

use super::{Deps, StepInput, StepOutput, run_step};
use crate::clock::Clock;
use crate::config::Integration;
use crate::qualys::QualysApi;
use crate::store::Store;

/// Handles one invocation of `integration`'s function.
pub async fn handle<Q: QualysApi, S: Store, C: Clock>(
    integration: Integration,
    deps: Deps<'_, Q, S, C>,
    event: LambdaEvent<StepInput>,
) -> Result<StepOutput, Diagnostic> {
    let deadline = deadline_from_context(&event.context);
    let input = event.payload;
    let span = tracing::info_span!(
        "step",
        %integration,
        run_id = %input.run_id,
        request_id = %event.context.request_id
    );
    run_step(integration, deps, &input, deadline)
        .instrument(span)
        .await
        .map_err(Diagnostic::from)
}

/// The invocation's deadline as a monotonic instant (15 minutes away when the context has
/// none, as under some local runners).
pub fn deadline_from_context(context: &Context) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let left_ms = u128::from(context.deadline).saturating_sub(now_ms);
    let left = if context.deadline == 0 {
        Duration::from_secs(900)
    } else {
        Duration::from_millis(u64::try_from(left_ms).unwrap_or(u64::MAX))
    };
    Instant::now() + left
}
